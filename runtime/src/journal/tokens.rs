//! Access tokens for `drydock serve`'s HTTP API: each acts as the OS
//! account that created it until it expires. Only a SHA-256 of the token
//! is stored, with when it expires and when it was last used.

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

/// A token as listed (never the token itself).
#[derive(Debug, Clone, Serialize)]
pub struct TokenRecord {
    pub id: String,
    pub account: String,
    pub uid: u32,
    pub label: String,
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
    /// A valid token: the account it acts as (its use is recorded).
    Valid { account: String, uid: u32 },
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
    /// Creates a token acting as `account`; returns (id, token). The token
    /// is shown once: only its digest is kept.
    pub fn create_token(
        &mut self,
        account: &str,
        uid: u32,
        label: &str,
        lifetime: Duration,
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
            "INSERT INTO tokens (id, digest, account, uid, label, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                id,
                digest(&token),
                account,
                uid,
                label,
                now,
                now + lifetime.as_millis() as i64
            ],
        )?;
        Ok((id, token))
    }

    /// Checks a presented token: the account it acts as when valid (and
    /// records this use), or why it is not accepted. Every place that
    /// accepts a token goes through here.
    pub fn authenticate_token(&self, token: &str) -> Result<TokenAuth, JournalError> {
        let row: Option<(String, String, u32, Option<i64>)> = self
            .conn
            .query_row(
                "SELECT id, account, uid, expires_at FROM tokens WHERE digest = ?1",
                [digest(token)],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let Some((id, account, uid, expires_at)) = row else {
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
        Ok(TokenAuth::Valid { account, uid })
    }

    /// The account a valid token acts as (None when unknown or expired);
    /// records the use.
    pub fn token_account(&self, token: &str) -> Result<Option<(String, u32)>, JournalError> {
        Ok(match self.authenticate_token(token)? {
            TokenAuth::Valid { account, uid } => Some((account, uid)),
            _ => None,
        })
    }

    /// Tokens of an account (all accounts when None).
    pub fn tokens(&self, account: Option<&str>) -> Result<Vec<TokenRecord>, JournalError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, account, uid, label, created_at, expires_at, last_used_at FROM tokens
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
            .create_token("alice", 1001, "laptop", TOKEN_LIFETIME_DEFAULT)
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
            .create_token("alice", 1001, "", Duration::from_secs(400 * 86400))
            .is_err());
        let (id, token) = j
            .create_token("alice", 1001, "", Duration::from_millis(1))
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
}
