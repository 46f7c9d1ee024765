use custody_core::{ErrorCode, HasErrorCode};

/// Turns a layer's error into a gRPC status: the shared error code, and the error's own message. An
/// internal error is logged in full and answered opaquely, so that no backend detail leaks to clients.
pub fn to_status<E: HasErrorCode + std::fmt::Display>(err: E) -> tonic::Status {
    let code = err.code();
    let message = if code == ErrorCode::Internal {
        tracing::error!(error = %err, "internal error answering a grpc request");
        "internal error; the server log has the details".to_string()
    } else {
        err.to_string()
    };
    tonic::Status::new(tonic::Code::from_i32(code.grpc_code()), message)
}

/// A request field that could not be parsed.
pub(crate) fn invalid(msg: impl Into<String>) -> tonic::Status {
    tonic::Status::invalid_argument(msg.into())
}
