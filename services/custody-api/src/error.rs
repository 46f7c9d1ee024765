use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use custody_core::{ErrorCode, HasErrorCode};
use serde::Serialize;
use utoipa::ToSchema;

/// An error answer: the shared error code as HTTP status, and a JSON body
/// `{"error": {"code": "not_found", "message": "evidence … does not exist"}}`.
/// Internal errors are logged in full and answered without details.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
}

/// The body of every error answer (4xx and 5xx).
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

/// What went wrong.
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorDetail<'a> {
    /// The error code shared with gRPC; the HTTP status follows from it.
    #[schema(schema_with = error_codes)]
    code: &'a str,
    /// What was wrong and what was expected, for people. An internal error says only that the server
    /// log has the details.
    message: &'a str,
}

/// The `code` values: every [`ErrorCode`], by its JSON name.
fn error_codes() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(ErrorCode::ALL.map(ErrorCode::as_str)))
        .build()
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
            Json(ErrorBody {
                error: ErrorDetail {
                    code: self.code.as_str(),
                    message,
                },
            }),
        )
            .into_response()
    }
}
