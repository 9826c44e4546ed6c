//! Access tokens for `drydock serve`'s HTTP API: each acts as the OS
//! account that created it. Only a SHA-256 of the token is stored.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{now_ms, Journal, JournalError};

/// A token as listed (never the token itself).
#[derive(Debug, Clone, Serialize)]
pub struct TokenRecord {
    pub id: String,
    pub account: String,
    pub uid: u32,
    pub label: String,
    pub created_at: i64,
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
    ) -> Result<(String, String), JournalError> {
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
        self.conn.execute(
            "INSERT INTO tokens (id, digest, account, uid, label, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![id, digest(&token), account, uid, label, now_ms()],
        )?;
        Ok((id, token))
    }

    /// The account a token acts as.
    pub fn token_account(&self, token: &str) -> Result<Option<(String, u32)>, JournalError> {
        Ok(self
            .conn
            .query_row(
                "SELECT account, uid FROM tokens WHERE digest = ?1",
                [digest(token)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Tokens of an account (all accounts when None).
    pub fn tokens(&self, account: Option<&str>) -> Result<Vec<TokenRecord>, JournalError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, account, uid, label, created_at FROM tokens
             WHERE ?1 IS NULL OR account = ?1 ORDER BY created_at",
        )?;
        let rows = stmt
            .query_map([account], |r| {
                Ok(TokenRecord {
                    id: r.get(0)?,
                    account: r.get(1)?,
                    uid: r.get(2)?,
                    label: r.get(3)?,
                    created_at: r.get(4)?,
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
        let (id, token) = j.create_token("alice", 1001, "laptop").unwrap();
        assert_eq!(
            j.token_account(&token).unwrap(),
            Some(("alice".into(), 1001))
        );
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
}
