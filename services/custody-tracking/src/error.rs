use custody_core::{ErrorCode, HasErrorCode};
use custody_store::StoreError;

/// Errors of the telemetry services. Each names what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum TrackingError {
    /// A payload or request that can never be taken as it is (malformed JSON, wrong device id).
    #[error("invalid: {0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0} not found")]
    NotFound(String),
    /// The position writer is stopping or its database is unreachable: try again later.
    #[error("telemetry storage unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl HasErrorCode for TrackingError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Self::Unauthenticated(_) => ErrorCode::Unauthenticated,
            Self::PermissionDenied(_) => ErrorCode::PermissionDenied,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Store(e) => e.code(),
        }
    }
}
