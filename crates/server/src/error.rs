//! OpenAI-shaped HTTP errors. This is the only place that knows HTTP statuses: every other
//! crate's error is mapped here, exhaustively, with a stable `type` and `code`.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use shovel_core::BackendError;

/// An error as the API returns it: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable message.
    pub message: String,
    /// OpenAI error type (`invalid_request_error`, `server_error`, ...).
    pub kind: &'static str,
    /// The request field at fault.
    pub param: Option<String>,
    /// Machine-readable code.
    pub code: Option<&'static str>,
    /// Seconds to wait before retrying (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// A 400 naming the offending field.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::BAD_REQUEST, message: message.into(), kind: "invalid_request_error", param: Some(param.into()), code: Some("invalid_value"), retry_after: None }
    }

    /// A 400 for a request the server understood but does not support yet.
    pub fn unsupported(param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError { code: Some("unsupported_parameter"), ..ApiError::invalid(param, message) }
    }

    /// A 413 for a body or file over the limit.
    pub fn too_large(param: Option<&str>, message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::PAYLOAD_TOO_LARGE, message: message.into(), kind: "invalid_request_error", param: param.map(str::to_owned), code: Some("request_too_large"), retry_after: None }
    }

    /// A 404 for an unknown route or resource.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::NOT_FOUND, message: message.into(), kind: "invalid_request_error", param: None, code: Some("not_found"), retry_after: None }
    }

    /// A 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::UNAUTHORIZED, message: message.into(), kind: "invalid_request_error", param: None, code: Some("invalid_api_key"), retry_after: None }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        let message = e.to_string();
        match e {
            BackendError::ModelNotFound { .. } => {
                ApiError { status: StatusCode::NOT_FOUND, message, kind: "invalid_request_error", param: Some("model".into()), code: Some("model_not_found"), retry_after: None }
            }
            BackendError::Unsupported { param, .. } => ApiError { param, code: Some("unsupported"), ..ApiError::invalid("", message) },
            BackendError::InvalidParam { param, .. } => ApiError::invalid(&param, message),
            BackendError::ContextOverflow { .. } => ApiError { code: Some("context_length_exceeded"), ..ApiError::invalid("messages", message) },
            BackendError::EmptyPrompt => ApiError::invalid("messages", message),
            BackendError::Overloaded => ApiError { status: StatusCode::TOO_MANY_REQUESTS, message, kind: "rate_limit_error", param: None, code: Some("overloaded"), retry_after: Some(1) },
            BackendError::LoadFailed { .. } => {
                tracing::error!(error = %message, "model load failed");
                ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message, kind: "server_error", param: Some("model".into()), code: Some("model_load_failed"), retry_after: None }
            }
            BackendError::Internal(detail) | BackendError::ConstraintFailed(detail) => {
                tracing::error!(%detail, "internal error");
                ApiError {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    message: "The server had an error while processing your request.".into(),
                    kind: "server_error",
                    param: None,
                    code: None,
                    retry_after: None,
                }
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, s.into());
        }
        resp
    }
}
