//! The API's one error type: every failure is an RFC 9457 problem document
//! with a stable `type`. Internal errors are logged, never shown.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::engine::marketplace::PluginError;
use crate::engine::{EngineError, Problem};
use crate::oci::OciError;

/// Base of every problem `type` URI.
const TYPE_BASE: &str = "https://weft.dev/problems/";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or invalid credentials: {0}")]
    Unauthorized(String),
    #[error("this key lacks the scope {0:?}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A request with the `Idempotency-Key` of another still in flight.
    #[error("a request with Idempotency-Key {0:?} is still in flight; retry shortly")]
    IdempotencyInFlight(String),
    /// A start refused by the workflow's overlap control; names the run in
    /// the way.
    #[error("{message}")]
    Overlap { message: String, run_id: String },
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// A multipart field that takes the assembled JSON past `limit`.
    #[error("field {field:?} takes the run's input past the {limit}-byte JSON limit")]
    FieldTooLarge { field: String, limit: usize },
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    QuotaExceeded(String),
    #[error("too many requests; retry after {retry_after} s")]
    TooManyRequests { retry_after: u64 },
    /// The tenant has as many runs waiting to start as it may.
    #[error("{message}")]
    Backlog { message: String, retry_after: u64 },
    #[error("{0}")]
    Unprocessable(String),
    /// Refused by the operator's configuration (e.g. a registry not in
    /// `--oci-allow`), whatever the key's scopes.
    #[error("{0}")]
    NotAllowed(String),
    /// Something other than the request body is too large (a pulled
    /// component); the message names it and the limit.
    #[error("{0}")]
    TooLarge(String),
    /// An upstream server (an OCI registry) failed or sent content that
    /// does not match its digest.
    #[error("{0}")]
    BadGateway(String),
    #[error("the workflow definition is invalid")]
    InvalidDefinition(Vec<Problem>),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::NotAllowed(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::Conflict(_) | Self::Overlap { .. } | Self::IdempotencyInFlight(_) => {
                StatusCode::CONFLICT
            }
            Self::PayloadTooLarge(_) | Self::FieldTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unsupported(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooManyRequests { .. } | Self::Backlog { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::QuotaExceeded(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unprocessable(_) | Self::InvalidDefinition(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable last segment of the problem `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad-request",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotAllowed(_) => "not-allowed",
            Self::TooLarge(_) => "payload-too-large",
            Self::BadGateway(_) => "bad-gateway",
            Self::NotFound(_) => "not-found",
            Self::Conflict(_) => "conflict",
            Self::IdempotencyInFlight(_) => "idempotency-in-flight",
            Self::Overlap { .. } => "run-overlap",
            Self::PayloadTooLarge(_) | Self::FieldTooLarge { .. } => "payload-too-large",
            Self::Unsupported(_) => "unsupported-media-type",
            Self::TooManyRequests { .. } => "rate-limited",
            Self::Backlog { .. } => "backlog-full",
            Self::QuotaExceeded(_) => "quota-exceeded",
            Self::Unprocessable(_) => "validation-failed",
            Self::InvalidDefinition(_) => "invalid-definition",
            Self::Internal(_) => "internal",
        }
    }

    pub fn body(&self) -> Value {
        let status = self.status();
        let mut body = json!({
            "type": format!("{TYPE_BASE}{}", self.kind()),
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": self.to_string(),
        });
        if let Self::InvalidDefinition(problems) = self {
            let detail: Vec<String> = problems.iter().map(ToString::to_string).collect();
            body["detail"] = json!(detail.join("; "));
            body["errors"] = json!(problems);
        }
        if let Self::Overlap { run_id, .. } = self {
            body["run_id"] = json!(run_id);
        }
        if let Self::FieldTooLarge { field, .. } = self {
            body["field"] = json!(field);
        }
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(message) = &self {
            tracing::error!(%message, "internal error");
        }
        let retry_after = match &self {
            Self::TooManyRequests { retry_after } | Self::Backlog { retry_after, .. } => {
                Some(*retry_after)
            }
            Self::IdempotencyInFlight(_) => Some(1),
            _ => None,
        };
        let mut response = (self.status(), Json(self.body())).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::NotFound(what) => Self::NotFound(what),
            EngineError::Conflict(m) => Self::Conflict(m),
            EngineError::Overlap { message, run_id } => Self::Overlap { message, run_id },
            EngineError::Backlog {
                message,
                retry_after,
            } => Self::Backlog {
                message,
                retry_after,
            },
            EngineError::InvalidDefinition(problems) => Self::InvalidDefinition(problems),
            EngineError::InvalidInput(m) => Self::Unprocessable(m),
            EngineError::Busy(m) => Self::Conflict(m),
            EngineError::Db(e) => Self::Internal(e.to_string()),
        }
    }
}

impl From<PluginError> for ApiError {
    fn from(e: PluginError) -> Self {
        match e {
            PluginError::NotAComponent(m) => Self::BadRequest(m),
            PluginError::Invalid(m) => Self::Unprocessable(m),
            PluginError::Conflict(m) => Self::Conflict(m),
            PluginError::QuotaExceeded(m) => Self::QuotaExceeded(m),
            PluginError::NotFound(what) => Self::NotFound(what),
            PluginError::Runtime(m) => Self::Internal(m),
            PluginError::RegistryNotAllowed(m) => Self::NotAllowed(m),
            PluginError::Oci(e) => match e {
                OciError::InvalidReference(_) => Self::BadRequest(e.to_string()),
                OciError::NotFound(_) | OciError::Unauthorized(_) | OciError::NotWasm(_) => {
                    Self::Unprocessable(e.to_string())
                }
                OciError::TooLarge { .. } => Self::TooLarge(e.to_string()),
                OciError::DigestMismatch(_) | OciError::Registry { .. } => {
                    Self::BadGateway(e.to_string())
                }
                OciError::Credentials(_) => Self::Internal(e.to_string()),
            },
            PluginError::Db(e) => Self::Internal(e.to_string()),
        }
    }
}

impl From<crate::db::DbError> for ApiError {
    fn from(e: crate::db::DbError) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::JsonRejection) -> Self {
        use axum::extract::rejection::JsonRejection as R;
        match rejection {
            R::MissingJsonContentType(_) => Self::Unsupported(
                "send the body as JSON with content-type: application/json".into(),
            ),
            R::JsonSyntaxError(e) => Self::BadRequest(format!("malformed JSON: {}", e.body_text())),
            R::JsonDataError(e) => Self::Unprocessable(e.body_text()),
            R::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::PayloadTooLarge(super::MAX_BODY_BYTES)
            }
            other => Self::BadRequest(other.body_text()),
        }
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::QueryRejection) -> Self {
        Self::BadRequest(rejection.body_text())
    }
}

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::PathRejection) -> Self {
        Self::BadRequest(rejection.body_text())
    }
}
