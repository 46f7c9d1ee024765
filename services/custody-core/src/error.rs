//! One error code for every transport. HTTP and gRPC map the same [`ErrorCode`] to their own status, so a
//! refused upload answers the same way over REST and over gRPC.

use std::fmt;

/// The kind of failure, independent of transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request is malformed: a field is missing, out of its range or unparsable.
    InvalidArgument,
    /// The named thing does not exist.
    NotFound,
    /// The thing existed and was removed on purpose (evidence bytes deleted when their retention ended);
    /// its record remains.
    Gone,
    /// The thing already exists and may not be created again.
    AlreadyExists,
    /// The request is well formed but the current state does not allow it (e.g. a write at the wrong
    /// offset, a commit before all bytes arrived).
    FailedPrecondition,
    /// A position or length lies beyond the declared end.
    OutOfRange,
    /// A concurrent request holds the resource; retry after re-reading its state.
    Aborted,
    /// The received bytes do not match their declared integrity value.
    IntegrityMismatch,
    /// Storage is full or a configured quota is reached.
    ResourceExhausted,
    /// The caller has not proven who it is.
    Unauthenticated,
    /// The caller is known but may not do this.
    PermissionDenied,
    /// A backend (database, object store) is unreachable; retrying later may work.
    Unavailable,
    /// A bug or an unexpected backend failure. Logged in full, answered opaquely.
    Internal,
}

impl ErrorCode {
    /// Every code, for documentation (the OpenAPI error schema lists their names) and tests.
    pub const ALL: [ErrorCode; 13] = [
        Self::InvalidArgument,
        Self::NotFound,
        Self::Gone,
        Self::AlreadyExists,
        Self::FailedPrecondition,
        Self::OutOfRange,
        Self::Aborted,
        Self::IntegrityMismatch,
        Self::ResourceExhausted,
        Self::Unauthenticated,
        Self::PermissionDenied,
        Self::Unavailable,
        Self::Internal,
    ];

    /// The HTTP status code for this error.
    pub fn http_status(self) -> u16 {
        match self {
            Self::InvalidArgument => 400,
            Self::Unauthenticated => 401,
            Self::PermissionDenied => 403,
            Self::NotFound => 404,
            Self::Gone => 410,
            Self::AlreadyExists | Self::FailedPrecondition | Self::Aborted => 409,
            Self::OutOfRange => 416,
            Self::IntegrityMismatch => 422,
            Self::Internal => 500,
            Self::Unavailable => 503,
            Self::ResourceExhausted => 507,
        }
    }

    /// The gRPC status code number (google.rpc.Code) for this error.
    pub fn grpc_code(self) -> i32 {
        match self {
            Self::InvalidArgument => 3,
            // gRPC has no "gone"; the bytes are not found, and the message says why.
            Self::NotFound | Self::Gone => 5,
            Self::AlreadyExists => 6,
            Self::PermissionDenied => 7,
            Self::ResourceExhausted => 8,
            Self::FailedPrecondition => 9,
            Self::Aborted => 10,
            Self::OutOfRange => 11,
            Self::Internal => 13,
            Self::Unavailable => 14,
            Self::IntegrityMismatch => 15,
            Self::Unauthenticated => 16,
        }
    }

    /// A stable snake_case name used in JSON error bodies and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArgument => "invalid_argument",
            Self::NotFound => "not_found",
            Self::Gone => "gone",
            Self::AlreadyExists => "already_exists",
            Self::FailedPrecondition => "failed_precondition",
            Self::OutOfRange => "out_of_range",
            Self::Aborted => "aborted",
            Self::IntegrityMismatch => "integrity_mismatch",
            Self::ResourceExhausted => "resource_exhausted",
            Self::Unauthenticated => "unauthenticated",
            Self::PermissionDenied => "permission_denied",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Implemented by every layer's error enum so that transports map errors in one place.
pub trait HasErrorCode {
    fn code(&self) -> ErrorCode;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_map_to_4xx_and_server_errors_to_5xx() {
        let client = [
            ErrorCode::InvalidArgument,
            ErrorCode::NotFound,
            ErrorCode::Gone,
            ErrorCode::FailedPrecondition,
            ErrorCode::OutOfRange,
            ErrorCode::IntegrityMismatch,
        ];
        for c in client {
            assert!((400..500).contains(&c.http_status()), "{c}");
        }
        for c in [
            ErrorCode::Internal,
            ErrorCode::Unavailable,
            ErrorCode::ResourceExhausted,
        ] {
            assert!(c.http_status() >= 500, "{c}");
        }
    }

    #[test]
    fn no_error_maps_to_grpc_ok_or_unknown() {
        for c in ErrorCode::ALL {
            assert!(c.grpc_code() > 2, "{c}");
        }
    }

    #[test]
    fn all_lists_every_code_once() {
        let names: std::collections::BTreeSet<_> =
            ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), ErrorCode::ALL.len());
        // A new variant stops this match from compiling: add it here and to ALL.
        for c in ErrorCode::ALL {
            match c {
                ErrorCode::InvalidArgument
                | ErrorCode::NotFound
                | ErrorCode::Gone
                | ErrorCode::AlreadyExists
                | ErrorCode::FailedPrecondition
                | ErrorCode::OutOfRange
                | ErrorCode::Aborted
                | ErrorCode::IntegrityMismatch
                | ErrorCode::ResourceExhausted
                | ErrorCode::Unauthenticated
                | ErrorCode::PermissionDenied
                | ErrorCode::Unavailable
                | ErrorCode::Internal => {}
            }
        }
    }
}
