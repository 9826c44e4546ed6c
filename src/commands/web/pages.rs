//! The console page, and signing in and out (the cookie that carries the
//! token for the page's own calls).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use drydock_runtime::journal::TokenAuth;
use serde::Deserialize;
use utoipa::ToSchema;

use super::auth::{expired, COOKIE};
use super::WebState;

const PAGE: &str = include_str!("console.html");

/// The sign-in form.
#[derive(Deserialize, ToSchema)]
pub struct LoginForm {
    /// A token from `drydock tokens create`.
    token: String,
}

/// Signs in: sets the cookie the page's calls carry, and goes to the page.
#[utoipa::path(post, path = "/login", tag = "console",
    request_body(content = LoginForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Signed in: the cookie is set; back to the page"),
        (status = 401, description = "An unknown or expired token", content_type = "text/html", body = String),
    ),
    security(()))]
pub async fn login(State(state): State<WebState>, Form(form): Form<LoginForm>) -> Response {
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

/// Signs out: clears the cookie.
#[utoipa::path(post, path = "/logout", tag = "console",
    responses((status = 303, description = "Signed out; back to the page")),
    security(()))]
pub async fn logout() -> Response {
    (
        [(
            header::SET_COOKIE,
            format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
        )],
        Redirect::to("/"),
    )
        .into_response()
}

/// The web console: one page that signs in and calls this API.
#[utoipa::path(get, path = "/", tag = "console",
    responses((status = 200, description = "The console page", content_type = "text/html", body = String)),
    security(()))]
pub async fn page() -> Response {
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
