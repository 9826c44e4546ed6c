//! The web console and HTTP API of `drydock serve` (axum). Every request
//! acts as an OS account ([`auth`]): over TCP the one a token was created
//! by, within the token's scope; over the Unix socket the peer's account.
//! Changes over TCP also need the `X-Drydock: 1` header, which a page of
//! another site cannot send (no cross-site request forgery).
//!
//! Every route is registered through utoipa's router, so the OpenAPI
//! document served at `/api/openapi.json` ([`openapi`]) is made from the
//! same definitions the server routes by and cannot leave one out.
//!
//! - [`auth`]: who a request acts as, and the scope each handler needs.
//! - [`api`]: what the console reads, and approving.
//! - [`runs`]: the runbook catalogue, starting, cancelling and resuming.
//! - [`pages`]: the page itself, signing in and out.

mod api;
pub mod auth;
mod error;
mod openapi;
mod pages;
mod runs;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::{Extension, Router};
use drydock_runtime::Journal;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::UnixPeer;
pub use error::ApiError;

use super::Context;

/// What every request needs: where the state is.
#[derive(Clone)]
pub struct WebState {
    pub data_dir: PathBuf,
    pub region: String,
    pub profile: String,
    /// What the serve loop reports about itself (`/api/serve`).
    pub serve: Arc<Mutex<serde_json::Value>>,
    /// The runbook catalogue and executor `drydock run` uses, and where
    /// background runners are started from.
    pub ctx: Arc<Context>,
}

impl WebState {
    fn journal(&self) -> Result<Journal, ApiError> {
        Journal::open(&self.data_dir).map_err(|e| ApiError::internal(e.to_string()))
    }
}

/// Every route, each with its OpenAPI description.
fn routes() -> OpenApiRouter<WebState> {
    OpenApiRouter::with_openapi(openapi::Doc::openapi())
        .routes(routes!(pages::page))
        .routes(routes!(pages::login))
        .routes(routes!(pages::logout))
        .routes(routes!(openapi::document))
        .routes(routes!(api::whoami))
        .routes(routes!(api::serve))
        .routes(routes!(api::executions))
        .routes(routes!(api::execution))
        .routes(routes!(api::stream))
        .routes(routes!(api::decide))
        .routes(routes!(api::approvals))
        .routes(routes!(api::schedules))
        .routes(routes!(api::windows))
        .routes(routes!(api::calendars))
        .routes(routes!(api::instances))
        .routes(routes!(api::console))
        .routes(routes!(runs::runbooks))
        .routes(routes!(runs::runbook))
        .routes(routes!(runs::start))
        .routes(routes!(runs::cancel))
        .routes(routes!(runs::resume))
}

/// The router of the web console and API, with the OpenAPI document made
/// from its routes.
pub fn router(state: WebState) -> Router {
    let (router, doc) = routes().split_for_parts();
    router.layer(Extension(Arc::new(doc))).with_state(state)
}
