//! The web console and HTTP API of `drydock serve` (axum). Every request
//! acts as an OS account: over TCP the one a token was created by
//! (`drydock tokens create`), sent as `Authorization: Bearer …` or the
//! cookie the login form sets; over the Unix socket the peer's account
//! (SO_PEERCRED), which must be allowed on the data directory's sockets.
//! Changes over TCP also need the `X-Drydock: 1` header, which a page of
//! another site cannot send (no cross-site request forgery).

mod api;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::serve::IncomingStream;
use axum::{Form, Json, Router};
use drydock_runtime::identity::Identity;
use drydock_runtime::journal::TokenAuth;
use drydock_runtime::Journal;
use serde::Deserialize;

const PAGE: &str = include_str!("console.html");
const COOKIE: &str = "drydock_token";

/// What every request needs: where the state is.
#[derive(Clone)]
pub struct WebState {
    pub data_dir: PathBuf,
    pub region: String,
    pub profile: String,
    /// What the serve loop reports about itself (`/api/serve`).
    pub serve: Arc<Mutex<serde_json::Value>>,
}

impl WebState {
    fn journal(&self) -> Result<Journal, ApiError> {
        Journal::open(&self.data_dir).map_err(|e| ApiError::internal(e.to_string()))
    }
}

/// An error as the API returns it: a status and a message.
pub struct ApiError(StatusCode, String);

impl ApiError {
    fn internal(m: impl Into<String>) -> Self {
        Self(StatusCode::INTERNAL_SERVER_ERROR, m.into())
    }
    fn bad(m: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, m.into())
    }
    fn not_found(m: impl Into<String>) -> Self {
        Self(StatusCode::NOT_FOUND, m.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<drydock_runtime::JournalError> for ApiError {
    fn from(e: drydock_runtime::JournalError) -> Self {
        use drydock_runtime::JournalError as J;
        match e {
            J::UnknownExecution(_) => Self::not_found(e.to_string()),
            J::Conflict(_) | J::AmbiguousExecution { .. } => {
                Self(StatusCode::CONFLICT, e.to_string())
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

/// The account a request acts as.
pub struct Caller(pub Identity);

/// The peer of a connection to the Unix socket (its uid, or None when
/// the kernel could not say).
#[derive(Clone, Copy, Debug)]
pub struct UnixPeer(Option<u32>);

impl Connected<IncomingStream<'_, tokio::net::UnixListener>> for UnixPeer {
    fn connect_info(stream: IncomingStream<'_, tokio::net::UnixListener>) -> Self {
        UnixPeer(stream.io().peer_cred().ok().map(|c| c.uid()))
    }
}

fn token_of(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(t) = v.strip_prefix("Bearer ") {
            return Some(t.trim().to_string());
        }
    }
    let cookies = headers.get(header::COOKIE)?.to_str().ok()?;
    cookies.split(';').find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == COOKIE).then(|| v.to_string())
    })
}

impl FromRequestParts<WebState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, ApiError> {
        let unauthorized = || {
            ApiError(
                StatusCode::UNAUTHORIZED,
                "sign in with a token from `drydock tokens create`".into(),
            )
        };
        if let Some(ConnectInfo(UnixPeer(uid))) = parts.extensions.get::<ConnectInfo<UnixPeer>>() {
            let Some(uid) = *uid else {
                return Err(ApiError(
                    StatusCode::FORBIDDEN,
                    "the socket peer's credentials could not be read".into(),
                ));
            };
            if !drydock_runtime::access::peer_allowed(uid) {
                return Err(ApiError(
                    StatusCode::FORBIDDEN,
                    format!(
                        "{} may not use this serve: it belongs to {}",
                        Identity::of_uid(uid).name,
                        Identity::current().name
                    ),
                ));
            }
            return Ok(Caller(Identity::of_uid(uid)));
        }
        let token = token_of(&parts.headers).ok_or_else(unauthorized)?;
        let (name, uid) = match state.journal()?.authenticate_token(&token)? {
            TokenAuth::Valid { account, uid } => (account, uid),
            TokenAuth::Expired { id, expired_at } => {
                return Err(ApiError(StatusCode::UNAUTHORIZED, expired(&id, expired_at)))
            }
            TokenAuth::Unknown => return Err(unauthorized()),
        };
        if parts.method != axum::http::Method::GET
            && parts.headers.get("x-drydock").and_then(|v| v.to_str().ok()) != Some("1")
        {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                "changes need the X-Drydock: 1 header".into(),
            ));
        }
        Ok(Caller(Identity { uid, name }))
    }
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

/// The refusal of an expired token: which one, since when, and the fix.
fn expired(id: &str, expired_at: i64) -> String {
    format!(
        "token {id} expired at {}; create a new one with `drydock tokens create --expires 90d` (and revoke this one with `drydock tokens revoke {id}`)",
        drydock_runtime::display::timestamp(expired_at)
    )
}

async fn login(State(state): State<WebState>, Form(form): Form<LoginForm>) -> Response {
    let token = form.token.trim().to_string();
    let auth = state
        .journal()
        .ok()
        .and_then(|j| j.authenticate_token(&token).ok())
        .unwrap_or(TokenAuth::Unknown);
    if let TokenAuth::Expired { id, expired_at } = &auth {
        return (
            StatusCode::UNAUTHORIZED,
            Html(format!(
                "{}; <a href=\"/\">back</a>",
                expired(id, *expired_at).replace('<', "&lt;")
            )),
        )
            .into_response();
    }
    if !matches!(auth, TokenAuth::Valid { .. })
        || !token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return (
            StatusCode::UNAUTHORIZED,
            Html("unknown token; <a href=\"/\">back</a>".to_string()),
        )
            .into_response();
    }
    (
        [(
            header::SET_COOKIE,
            format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"),
        )],
        Redirect::to("/"),
    )
        .into_response()
}

async fn logout() -> Response {
    (
        [(
            header::SET_COOKIE,
            format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
        )],
        Redirect::to("/"),
    )
        .into_response()
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline' 'self'; style-src 'unsafe-inline' 'self'",
            ),
        ],
        PAGE,
    )
        .into_response()
}

/// The router of the web console and API.
pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/api/whoami", get(api::whoami))
        .route("/api/serve", get(api::serve))
        .route("/api/executions", get(api::executions))
        .route("/api/executions/{id}", get(api::execution))
        .route("/api/executions/{id}/stream", get(api::stream))
        .route("/api/executions/{id}/decision", post(api::decide))
        .route("/api/approvals", get(api::approvals))
        .route("/api/schedules", get(api::schedules))
        .route("/api/windows", get(api::windows))
        .route("/api/calendars", get(api::calendars))
        .route("/api/instances", get(api::instances))
        .route("/api/instances/{id}/console", get(api::console))
        .with_state(state)
}
