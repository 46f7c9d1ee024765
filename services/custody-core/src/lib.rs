//! The domain of Custody: identifiers, evidence and upload declarations, content hashing (streaming
//! SHA-256 and SM3), the rules an upload must follow, and the error codes every transport shares.
//!
//! Architecture invariant: this crate does no IO and imports no tokio, sqlx, axum, tonic, object_store or
//! ffmpeg. Everything here is plain data and pure functions, unit-tested in place. Types are parsed, not
//! validated: a `DeviceId` or `Sha256` that exists is valid, so code further in never re-checks it.

pub mod access;
pub mod case;
pub mod coverage;
pub mod credential;
pub mod error;
pub mod evidence;
pub mod geo;
pub mod hash;
pub mod ids;
pub mod ledger;
pub mod live;
pub mod media;
pub mod position;
pub mod recorder;
pub mod request;
pub mod retention;
pub mod sm2note;
pub mod station;
pub mod time;
pub mod track;
pub mod upload;

pub use case::{CaseNo, CaseStatus, Procedure, TransitionError, check_transition};
pub use credential::{DeviceCredential, StationCredential};
pub use error::{ErrorCode, HasErrorCode};
pub use evidence::{
    Attribution, AttributionSource, Deletion, Evidence, EvidenceFilter, FileName, Importance,
    LegalHold, MediaType, RetentionMarks, content_path,
};
pub use hash::{ContentHasher, Digests, HashAlgorithm, ParseDigestError, Sha256, Sm3};
pub use ids::{
    AlarmId, BadgeNo, CaseId, DeviceId, EvidenceId, FenceId, IdError, RequestId, StationId, StepId,
    UploadId,
};
pub use position::Position;
pub use time::Timestamp;
pub use upload::{Upload, UploadDeclaration, UploadState, WriteRefusal, check_write};
