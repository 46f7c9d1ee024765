//! Custody's wire contracts: the `custody.v1` protobuf packages and the tonic client and server code
//! generated from them. This is the only crate with generated code. It owns no behaviour and must never
//! import domain crates: conversion between these messages and domain types happens at the gRPC edge
//! (`custody-grpc`) and in clients such as the docking-station agent.

#![allow(clippy::all, missing_debug_implementations)]

/// Version 1 of the Custody API.
pub mod v1 {
    tonic::include_proto!("custody.v1");
}
