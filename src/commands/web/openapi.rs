//! The OpenAPI document of the API: its frame here (title, the token
//! security scheme), its paths from the routes themselves (see
//! `routes()` in the parent module), served at `/api/openapi.json`.
//! Each operation's security requirement names the token scope it needs.

use std::sync::Arc;

use axum::{Extension, Json};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi as Document;
use utoipa::{Modify, OpenApi};

use super::auth::Caller;
use super::error::ErrorBody;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "drydock serve",
        description = "The HTTP API of `drydock serve`'s web console. Over TCP every call needs a token from `drydock tokens create --scope SCOPE` (sent as `Authorization: Bearer …`, or the cookie the sign-in form sets); each operation's security requirement names the scope it needs (`read` is in every scope, `admin` covers all). Calls that change something also need the header `X-Drydock: 1`. Over the Unix socket DATA_DIR/serve.sock the caller's own account acts, with every right."
    ),
    components(schemas(ErrorBody)),
    modifiers(&Security),
    tags(
        (name = "console", description = "The page, signing in, this document"),
        (name = "executions", description = "Executions, approvals and runs"),
        (name = "runbooks", description = "The runbook catalogue and run forms"),
        (name = "schedules", description = "Schedules, maintenance windows and change calendars"),
        (name = "instances", description = "Instances and their consoles"),
    )
)]
pub struct Doc;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token from `drydock tokens create --scope SCOPE`; the requirement of each operation lists the scope it needs",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                super::auth::COOKIE,
                "The same token, as the sign-in form sets it",
            ))),
        );
    }
}

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "console",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of this API", body = serde_json::Value),
        (status = 401, description = "No valid token", body = ErrorBody),
    ),
    security(("token" = ["read"]), ("cookie" = ["read"])))]
pub async fn document(_: Caller, Extension(doc): Extension<Arc<Document>>) -> Json<Document> {
    Json((*doc).clone())
}
