use custody_core::{ErrorCode, EvidenceId, HasErrorCode, UploadId, UploadState, WriteRefusal};
use custody_store::StoreError;

/// Errors of the intake. Messages name what was wrong and what was expected; transports map them through
/// [`HasErrorCode`].
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("station {0} is not registered")]
    UnknownStation(custody_core::StationId),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("upload {0} does not exist")]
    UnknownUpload(UploadId),
    #[error("evidence {0} does not exist")]
    UnknownEvidence(EvidenceId),
    #[error(
        "the bytes of evidence {id} were deleted at {at} when its retention ended ({reason}); its record and ledger history remain"
    )]
    Deleted {
        id: EvidenceId,
        at: custody_core::Timestamp,
        reason: String,
    },
    #[error("upload {id} is {state}{}; {}", failure.as_deref().map(|f| format!(" ({f})")).unwrap_or_default(), advice(*state))]
    NotOpen {
        id: UploadId,
        state: UploadState,
        failure: Option<String>,
    },
    #[error("upload {id}: {refusal} (committed size {committed})")]
    Refused {
        id: UploadId,
        refusal: WriteRefusal,
        committed: u64,
    },
    #[error(
        "upload {id} is incomplete: {committed} of {size} bytes committed; write the rest before committing"
    )]
    Incomplete {
        id: UploadId,
        committed: u64,
        size: u64,
    },
    #[error("upload {0} is being written or committed by another request; query it and retry")]
    Busy(UploadId),
    #[error(
        "{what} of the received bytes is {computed}, but {declared} was declared; nothing was stored as evidence"
    )]
    Integrity {
        what: &'static str,
        declared: String,
        computed: String,
    },
    #[error(
        "evidence {evidence} is committed, but the ledger has not yet signed a checkpoint covering it \
         after {waited:?}; retry Commit for the receipt"
    )]
    LedgerBehind {
        evidence: EvidenceId,
        waited: std::time::Duration,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl HasErrorCode for IngestError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Self::UnknownUpload(_) | Self::UnknownEvidence(_) | Self::UnknownStation(_) => {
                ErrorCode::NotFound
            }
            Self::Deleted { .. } => ErrorCode::Gone,
            Self::Unauthenticated(_) => ErrorCode::Unauthenticated,
            Self::PermissionDenied(_) => ErrorCode::PermissionDenied,
            Self::NotOpen { .. } | Self::Incomplete { .. } => ErrorCode::FailedPrecondition,
            Self::Refused { refusal, .. } => match refusal {
                WriteRefusal::NegativeOffset { .. } => ErrorCode::InvalidArgument,
                WriteRefusal::WrongOffset { .. } => ErrorCode::FailedPrecondition,
                WriteRefusal::PastDeclaredSize { .. } => ErrorCode::OutOfRange,
            },
            Self::Busy(_) => ErrorCode::Aborted,
            Self::Integrity { .. } => ErrorCode::IntegrityMismatch,
            Self::LedgerBehind { .. } => ErrorCode::Unavailable,
            Self::Store(e) => e.code(),
            Self::Internal(_) => ErrorCode::Internal,
        }
    }
}

/// What a client should do with an upload that no longer takes bytes.
fn advice(state: UploadState) -> &'static str {
    match state {
        UploadState::Committing | UploadState::Committed => "call Commit for its receipt",
        UploadState::Open | UploadState::Failed | UploadState::Expired => "begin a new upload",
    }
}
