//! Access tokens for `drydock serve`'s HTTP API: each acts as the OS
//! account that created it, within its scope, until it expires. Only a
//! SHA-256 of the token is stored, with its scope, when it expires and
//! when it was last used.

use std::time::Duration;

use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{now_ms, Journal, JournalError};

/// How long a token lives unless `tokens create --expires` says otherwise.
pub const TOKEN_LIFETIME_DEFAULT: Duration = Duration::from_secs(90 * 86400);
/// The longest lifetime a token may be given: a bearer token that never
/// expires is a standing credential nobody remembers to revoke.
pub const TOKEN_LIFETIME_MAX: Duration = Duration::from_secs(366 * 86400);

/// What a token may do besides reading. Every scope may read what the
/// console shows; `admin` may do everything. Tokens made before scopes
/// existed (journal schema 13 and older) could read and approve, and keep
/// exactly that: they are `approve` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenScope {
    /// Read executions, approvals, schedules, instances, runbooks.
    Read,
    /// Read, and approve or reject.
    Approve,
    /// Read, and start, cancel and resume executions.
    Run,
    /// Read, and use instances' consoles.
    Console,
    /// Everything.
    Admin,
}

impl TokenScope {
    /// Every scope, in the order `tokens create --help` lists them.
    pub const ALL: [TokenScope; 5] = [
        Self::Read,
        Self::Approve,
        Self::Run,
        Self::Console,
        Self::Admin,
    ];

    /// Its name, as `--scope` takes it and the journal stores it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Approve => "approve",
            Self::Run => "run",
            Self::Console => "console",
            Self::Admin => "admin",
        }
    }

    /// The scope of a name; None for an unknown one.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether a token of this scope may do what `needed` allows: `admin`
    /// may do everything, every scope may read, others only their own.
    pub fn allows(self, needed: TokenScope) -> bool {
        self == Self::Admin || needed == Self::Read || self == needed
    }
}

impl std::fmt::Display for TokenScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A scope as stored: an unknown name (written by a newer drydock) is
/// taken as the least, `read`.
fn stored_scope(text: &str) -> TokenScope {
    TokenScope::parse(text).unwrap_or(TokenScope::Read)
}

/// A token as listed (never the token itself).
#[derive(Debug, Clone, Serialize)]
pub struct TokenRecord {
    pub id: String,
    pub account: String,
    pub uid: u32,
    pub label: String,
    /// What it may do besides reading.
    pub scope: TokenScope,
    pub created_at: i64,
    /// When it stops being accepted (None only for a token of an older
    /// journal not yet migrated; migration gives every token one).
    pub expires_at: Option<i64>,
    /// When it was last accepted (None: never used).
    pub last_used_at: Option<i64>,
    /// Whether it has expired.
    pub expired: bool,
}

/// What a presented token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenAuth {
    /// A valid token: the account it acts as and what it may do (its use
    /// is recorded).
    Valid {
        account: String,
        uid: u32,
        scope: TokenScope,
    },
    /// A known token whose lifetime ended.
    Expired { id: String, expired_at: i64 },
    /// No such token (never made, or revoked).
    Unknown,
}

fn digest(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Journal {
    /// Creates a token acting as `account` within `scope`; returns (id,
    /// token). The token is shown once: only its digest is kept.
    pub fn create_token(
        &mut self,
        account: &str,
        uid: u32,
        label: &str,
        lifetime: Duration,
        scope: TokenScope,
    ) -> Result<(String, String), JournalError> {
        if lifetime.is_zero() || lifetime > TOKEN_LIFETIME_MAX {
            return Err(JournalError::Conflict(format!(
                "a token lives more than 0 and at most {} days",
                TOKEN_LIFETIME_MAX.as_secs() / 86400
            )));
        }
        use base64::Engine as _;
        let mut raw = [0u8; 32];
        getrandom::getrandom(&mut raw).map_err(|e| {
            JournalError::Conflict(format!("the system's random source failed: {e}"))
        })?;
        let token = format!(
            "ddt_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        );
        let id = crate::ids::new_id("tok");
        let now = now_ms();
        self.conn.execute(
            "INSERT INTO tokens (id, digest, account, uid, label, created_at, expires_at, scope)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                id,
                digest(&token),
                account,
                uid,
                label,
                now,
                now + lifetime.as_millis() as i64,
                scope.as_str()
            ],
        )?;
        Ok((id, token))
    }

    /// Checks a presented token: the account it acts as when valid (and
    /// records this use), or why it is not accepted. Every place that
    /// accepts a token goes through here.
    pub fn authenticate_token(&self, token: &str) -> Result<TokenAuth, JournalError> {
        let row: Option<(String, String, u32, Option<i64>, String)> = self
            .conn
            .query_row(
                "SELECT id, account, uid, expires_at, scope FROM tokens WHERE digest = ?1",
                [digest(token)],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        let Some((id, account, uid, expires_at, scope)) = row else {
            return Ok(TokenAuth::Unknown);
        };
        let now = now_ms();
        // A token without an expiry (not migrated) is not accepted either.
        let expired_at = expires_at.unwrap_or(i64::MIN);
        if now >= expired_at {
            return Ok(TokenAuth::Expired {
                id,
                expired_at: expires_at.unwrap_or(0),
            });
        }
        self.conn.execute(
            "UPDATE tokens SET last_used_at = ?1 WHERE id = ?2",
            params![now, id],
        )?;
        Ok(TokenAuth::Valid {
            account,
            uid,
            scope: stored_scope(&scope),
        })
    }

    /// The account a valid token acts as (None when unknown or expired);
    /// records the use.
    pub fn token_account(&self, token: &str) -> Result<Option<(String, u32)>, JournalError> {
        Ok(match self.authenticate_token(token)? {
            TokenAuth::Valid { account, uid, .. } => Some((account, uid)),
            _ => None,
        })
    }

    /// Tokens of an account (all accounts when None).
    pub fn tokens(&self, account: Option<&str>) -> Result<Vec<TokenRecord>, JournalError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, account, uid, label, created_at, expires_at, last_used_at, scope FROM tokens
             WHERE ?1 IS NULL OR account = ?1 ORDER BY created_at",
        )?;
        let now = now_ms();
        let rows = stmt
            .query_map([account], |r| {
                let expires_at: Option<i64> = r.get(5)?;
                Ok(TokenRecord {
                    id: r.get(0)?,
                    account: r.get(1)?,
                    uid: r.get(2)?,
                    label: r.get(3)?,
                    scope: stored_scope(&r.get::<_, String>(7)?),
                    created_at: r.get(4)?,
                    expires_at,
                    last_used_at: r.get(6)?,
                    expired: expires_at.is_none_or(|e| now >= e),
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Revokes a token; only its account (or root) may.
    pub fn revoke_token(
        &mut self,
        id: &str,
        by: &crate::identity::Identity,
    ) -> Result<(), JournalError> {
        let n = self.conn.execute(
            "DELETE FROM tokens WHERE id = ?1 AND (account = ?2 OR ?3)",
            params![id, by.name, by.is_root()],
        )?;
        if n == 0 {
            return Err(JournalError::Conflict(format!(
                "no token {} of yours; list them with `drydock tokens`",
                crate::display::sanitize(id)
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_acts_as_its_account_and_only_its_digest_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        let (id, token) = j
            .create_token(
                "alice",
                1001,
                "laptop",
                TOKEN_LIFETIME_DEFAULT,
                TokenScope::Read,
            )
            .unwrap();
        assert_eq!(j.tokens(None).unwrap()[0].last_used_at, None);
        assert_eq!(
            j.token_account(&token).unwrap(),
            Some(("alice".into(), 1001))
        );
        assert!(j.tokens(None).unwrap()[0].last_used_at.is_some());
        assert_eq!(j.token_account("ddt_forged").unwrap(), None);
        let bytes = std::fs::read(dir.path().join("journal.sqlite3")).unwrap();
        assert!(!bytes.windows(token.len()).any(|w| w == token.as_bytes()));
        let bob = crate::identity::Identity {
            uid: 1002,
            name: "bob".into(),
        };
        assert!(j.revoke_token(&id, &bob).is_err());
        let alice = crate::identity::Identity {
            uid: 1001,
            name: "alice".into(),
        };
        j.revoke_token(&id, &alice).unwrap();
        assert_eq!(j.token_account(&token).unwrap(), None);
    }

    #[test]
    fn an_expired_token_is_refused_saying_so() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        assert!(j
            .create_token(
                "alice",
                1001,
                "",
                Duration::from_secs(400 * 86400),
                TokenScope::Admin,
            )
            .is_err());
        let (id, token) = j
            .create_token(
                "alice",
                1001,
                "",
                Duration::from_millis(1),
                TokenScope::Admin,
            )
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        match j.authenticate_token(&token).unwrap() {
            TokenAuth::Expired { id: got, .. } => assert_eq!(got, id),
            other => panic!("{other:?}"),
        }
        assert_eq!(j.token_account(&token).unwrap(), None);
        let listed = &j.tokens(None).unwrap()[0];
        assert!(listed.expired && listed.last_used_at.is_none());
    }

    #[test]
    fn a_token_keeps_its_scope_and_only_admin_goes_beyond_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        for scope in TokenScope::ALL {
            let (_, token) = j
                .create_token("alice", 1001, "", TOKEN_LIFETIME_DEFAULT, scope)
                .unwrap();
            match j.authenticate_token(&token).unwrap() {
                TokenAuth::Valid { scope: got, .. } => assert_eq!(got, scope),
                other => panic!("{other:?}"),
            }
            assert_eq!(TokenScope::parse(scope.as_str()), Some(scope));
            // Every scope reads; admin does everything; others their own.
            assert!(scope.allows(TokenScope::Read));
            for needed in TokenScope::ALL {
                let expect =
                    scope == TokenScope::Admin || needed == TokenScope::Read || needed == scope;
                assert_eq!(scope.allows(needed), expect, "{scope} → {needed}");
            }
        }
        let listed: Vec<TokenScope> = j.tokens(None).unwrap().iter().map(|t| t.scope).collect();
        assert_eq!(listed, TokenScope::ALL.to_vec());
        assert!(!TokenScope::Read.allows(TokenScope::Approve));
        assert!(!TokenScope::Approve.allows(TokenScope::Run));
        assert!(!TokenScope::Run.allows(TokenScope::Console));
        assert_eq!(TokenScope::parse("root"), None);
        assert_eq!(stored_scope("from-the-future"), TokenScope::Read);
    }
}
