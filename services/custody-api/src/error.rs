use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use custody_core::{ErrorCode, HasErrorCode};
use serde::Serialize;

/// An error answer: the shared error code as HTTP status, and a JSON body
/// `{"error": {"code": "not_found", "message": "evidence … does not exist"}}`.
/// Internal errors are logged in full and answered without details.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }
}

impl<E: HasErrorCode + std::fmt::Display> From<E> for ApiError {
    fn from(e: E) -> Self {
        Self {
            code: e.code(),
            message: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = if self.code == ErrorCode::Internal {
            tracing::error!(error = %self.message, "internal error answering an http request");
            "internal error; the server log has the details"
        } else {
            &self.message
        };
        (
            status,
            Json(Body {
                error: Inner {
                    code: self.code.as_str(),
                    message,
                },
            }),
        )
            .into_response()
    }
}
