//! Custody's wire contracts: the `custody.v1` protobuf packages and the tonic client and server code
//! generated from them. This is the only crate with generated code. It owns no behaviour and must never
//! import domain crates: conversion between these messages and domain types happens at the gRPC edge
//! (`custody-grpc`) and in clients such as the docking-station agent.

#![allow(clippy::all, missing_debug_implementations)]

/// Version 1 of the Custody API.
pub mod v1 {
    tonic::include_proto!("custody.v1");
}

/// Largest message either side sends or accepts: a write chunk of up to a few MiB plus framing.
pub const MAX_MESSAGE_BYTES: usize = 8 << 20;
