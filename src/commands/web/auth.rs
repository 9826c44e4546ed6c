//! Who a request acts as, and whether it may do what it asks. Over TCP a
//! request carries a token (`Authorization: Bearer …` or the sign-in
//! cookie) and acts as the account that created it, within the token's
//! scope; over the Unix socket it acts as the peer's account (SO_PEERCRED)
//! with every right, as that account has at the command line. Each
//! handler names the scope it needs in its type: `Caller<Runs>` cannot be
//! reached with a `read` token.

use std::marker::PhantomData;

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::serve::IncomingStream;
use drydock_runtime::identity::Identity;
use drydock_runtime::journal::{TokenAuth, TokenScope};

use super::error::ApiError;
use super::WebState;

/// The cookie the sign-in form sets.
pub const COOKIE: &str = "drydock_token";

/// The scope a handler needs.
pub trait Need: Send + Sync + 'static {
    const SCOPE: TokenScope;
}

/// Reading: every token may.
pub struct Reads;
/// Approving and rejecting.
pub struct Approves;
/// Starting, cancelling and resuming executions.
pub struct Runs;
/// Instances' consoles.
pub struct Consoles;

impl Need for Reads {
    const SCOPE: TokenScope = TokenScope::Read;
}
impl Need for Approves {
    const SCOPE: TokenScope = TokenScope::Approve;
}
impl Need for Runs {
    const SCOPE: TokenScope = TokenScope::Run;
}
impl Need for Consoles {
    const SCOPE: TokenScope = TokenScope::Console;
}

/// The account a request acts as, once it is known to be allowed what
/// `N` needs.
pub struct Caller<N: Need = Reads> {
    pub who: Identity,
    need: PhantomData<N>,
}

/// The peer of a connection to the Unix socket (its uid, or None when
/// the kernel could not say).
#[derive(Clone, Copy, Debug)]
pub struct UnixPeer(Option<u32>);

impl Connected<IncomingStream<'_, tokio::net::UnixListener>> for UnixPeer {
    fn connect_info(stream: IncomingStream<'_, tokio::net::UnixListener>) -> Self {
        UnixPeer(stream.io().peer_cred().ok().map(|c| c.uid()))
    }
}

/// The token a request carries: the bearer header, else the cookie.
pub fn token_of(headers: &HeaderMap) -> Option<String> {
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

/// The refusal of an expired token: which one, since when, and the fix.
pub fn expired(id: &str, expired_at: i64) -> String {
    format!(
        "token {id} expired at {}; create a new one with `drydock tokens create --expires 90d` (and revoke this one with `drydock tokens revoke {id}`)",
        drydock_runtime::display::timestamp(expired_at)
    )
}

/// The refusal of a token whose scope does not cover the call.
fn out_of_scope(parts: &Parts, has: TokenScope, needed: TokenScope) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::FORBIDDEN,
        format!(
            "{} {} needs a token with scope {needed} (or admin); this one has scope {has}. Create one with `drydock tokens create --scope {needed}`",
            parts.method,
            parts.uri.path()
        ),
    );
    e.body.needed_scope = Some(needed.to_string());
    e.body.token_scope = Some(has.to_string());
    e
}

impl<N: Need> FromRequestParts<WebState> for Caller<N> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, ApiError> {
        let unauthorized = || {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "sign in with a token from `drydock tokens create`",
            )
        };
        if let Some(ConnectInfo(UnixPeer(uid))) = parts.extensions.get::<ConnectInfo<UnixPeer>>() {
            let Some(uid) = *uid else {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "the socket peer's credentials could not be read",
                ));
            };
            if !drydock_runtime::access::peer_allowed(uid) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!(
                        "{} may not use this serve: it belongs to {}",
                        Identity::of_uid(uid).name,
                        Identity::current().name
                    ),
                ));
            }
            // The account itself, as at the command line: every scope.
            return Ok(Caller {
                who: Identity::of_uid(uid),
                need: PhantomData,
            });
        }
        let token = token_of(&parts.headers).ok_or_else(unauthorized)?;
        let (name, uid, scope) = match state.journal()?.authenticate_token(&token)? {
            TokenAuth::Valid {
                account,
                uid,
                scope,
            } => (account, uid, scope),
            TokenAuth::Expired { id, expired_at } => {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    expired(&id, expired_at),
                ))
            }
            TokenAuth::Unknown => return Err(unauthorized()),
        };
        if !scope.allows(N::SCOPE) {
            return Err(out_of_scope(parts, scope, N::SCOPE));
        }
        if parts.method != Method::GET
            && parts.headers.get("x-drydock").and_then(|v| v.to_str().ok()) != Some("1")
        {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "changes need the X-Drydock: 1 header",
            ));
        }
        Ok(Caller {
            who: Identity { uid, name },
            need: PhantomData,
        })
    }
}
