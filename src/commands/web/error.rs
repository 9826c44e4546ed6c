//! An error as the API returns it: a status and a JSON body naming what
//! went wrong — for a scope refusal, the scope needed; for parameters,
//! the message of each field.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error the API returns.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong and how to fix it, in a sentence.
    pub error: String,
    /// A token's scope refused the call: the scope it needs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needed_scope: Option<String>,
    /// The scope of the token the call was made with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_scope: Option<String>,
    /// Parameters that are not valid: each one's problem, by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<BTreeMap<String, String>>,
}

/// An error of the API: its status and body.
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                error: message.into(),
                needed_scope: None,
                token_scope: None,
                fields: None,
            },
        }
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, m)
    }
    pub fn bad(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, m)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<drydock_runtime::JournalError> for ApiError {
    fn from(e: drydock_runtime::JournalError) -> Self {
        use drydock_runtime::JournalError as J;
        match e {
            J::UnknownExecution(_) => Self::not_found(e.to_string()),
            J::Conflict(_) | J::AmbiguousExecution { .. } => {
                Self::new(StatusCode::CONFLICT, e.to_string())
            }
            other => Self::internal(other.to_string()),
        }
    }
}

impl From<drydock_ops::OpsError> for ApiError {
    fn from(e: drydock_ops::OpsError) -> Self {
        use drydock_ops::OpsError as O;
        match e {
            O::Usage(m) => Self::bad(m),
            O::Journal(j) => j.into(),
            O::Host(h) => Self::bad(h.to_string()),
        }
    }
}
