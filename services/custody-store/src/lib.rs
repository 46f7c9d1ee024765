//! Custody's persistence adapters. [`Metadata`] keeps rows (uploads, evidence, the ledger, docking stations, telemetry, media jobs, people and cases, access requests, retention marks and tombstones) in SQLite or PostgreSQL
//! behind one API, with migrations per backend embedded and run at start-up. [`Blobs`] keeps bytes in an
//! object store (local disk or any S3-compatible server) and gives uploads a resumable, durable staging
//! area on both.
//!
//! This crate owns SQL and object-store keys; nothing above it touches either. It must never import
//! transport crates (axum, tonic, rumqttc) or know about requests.

mod blobs;
mod cases;
mod error;
mod ledger;
mod media;
mod meta;
mod people;
mod requests;
mod retention;
mod stations;
mod telemetry;
#[cfg(feature = "test-support")]
pub mod testing;

pub use blobs::{BlobConfig, Blobs, Checkpoint, StagedWriter, hash_file};
pub use cases::{
    CaseCursor, CaseRecord, ExplanationRecord, FootageRecord, LinkRecord, StatusChange, StepPlace,
    StepRecord,
};
pub use error::StoreError;
pub use ledger::{
    IntegrationBatch, LedgerState, PendingEvent, PendingRow, SequencerLock, StoredCheckpoint,
    StoredEntry,
};
pub use media::{DerivedRecord, EvidenceMedia, JobCounts, JobStatus, MediaJob, ProbeOutcome};
pub use meta::{Backend, CommitOutcome, EvidencePage, Metadata, PageCursor};
pub use people::{AuditRecord, CheckoutRecord, OfficerRecord, UserRecord};
pub use requests::{Decision, RequestCursor, RequestFilter, RequestRecord};
pub use retention::{MarkOutcome, RetentionCandidate, TombstoneGuard};
pub use stations::{StationRecord, StationSecret};
pub use telemetry::{AlarmCursor, DeviceRecord, PositionsPurged, TelemetryWrite};
