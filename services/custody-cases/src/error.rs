use custody_core::{ErrorCode, HasErrorCode};
use custody_store::StoreError;

/// Errors of people and cases. Messages name what was wrong and what was expected; transports map them
/// through [`HasErrorCode`].
#[derive(Debug, thiserror::Error)]
pub enum CasesError {
    #[error("{0}")]
    InvalidArgument(String),
    /// No valid session, or a wrong password.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is known but its roles do not allow this.
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0} does not exist")]
    NotFound(String),
    /// The request is well formed but the case's state forbids it (a skipped status, unexplained gaps).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The evidence's bytes were deleted when its retention ended; the message says when and why.
    #[error("{0}")]
    Gone(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl HasErrorCode for CasesError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Self::Unauthenticated(_) => ErrorCode::Unauthenticated,
            Self::PermissionDenied(_) => ErrorCode::PermissionDenied,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            Self::Gone(_) => ErrorCode::Gone,
            Self::Store(e) => e.code(),
            Self::Internal(_) => ErrorCode::Internal,
        }
    }
}
