//! Idempotent creation (EC2's `ClientToken` on RunInstances, CreateVolume,
//! CreateSnapshot, CreateImage, CopyImage).
//!
//! A create call may carry a client token. The first call with a token
//! records it, with the id the new resource will have, *before* anything
//! is made (state `creating`); the resource's record, its tags and the
//! token's state `created` are then written in one transaction. A later
//! call with the same token — the same runbook step run again after its
//! runner died, or a retried CLI command — gets the resource the first
//! call made (or finishes making it, under the same id and file names, when
//! the first call died half way). A token used for another kind of
//! resource, or (for tokens the caller chose) with other parameters, is
//! refused, as EC2 refuses an `IdempotentParameterMismatch`.

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::Serialize;

use super::store::{new_id, now_ms, HostStore, TagKind, Tags};
use super::HostError;

/// Longest client token accepted (EC2 allows 64; a derived token names an
/// execution, a step path and a call, so a little more).
pub const MAX_TOKEN: usize = 256;

/// A client token and who made the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientToken {
    pub token: String,
    /// The execution whose step made the call, for derived tokens.
    pub execution: Option<String>,
    /// The journal path of that step.
    pub step_path: Option<String>,
}

impl ClientToken {
    /// A token the caller chose (`--client-token`): checked for shape.
    pub fn given(token: &str) -> Result<Self, HostError> {
        if token.is_empty()
            || token.len() > MAX_TOKEN
            || !token.chars().all(|c| c.is_ascii_graphic())
        {
            return Err(HostError::Invalid(format!(
                "client token {token:?} must be 1 to {MAX_TOKEN} printable ASCII characters without spaces"
            )));
        }
        Ok(Self {
            token: token.to_string(),
            execution: None,
            step_path: None,
        })
    }

    /// A token derived from an execution's call site.
    pub fn of_call(token: &str, execution: &str, step_path: &str) -> Self {
        Self {
            token: token.to_string(),
            execution: Some(execution.to_string()),
            step_path: Some(step_path.to_string()),
        }
    }
}

/// What kind of resource a token created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CreatedKind {
    Instance,
    Volume,
    Snapshot,
    Image,
}

impl CreatedKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Instance => "instance",
            Self::Volume => "volume",
            Self::Snapshot => "snapshot",
            Self::Image => "image",
        }
    }

    fn id_prefix(self) -> &'static str {
        match self {
            Self::Instance => "i",
            Self::Volume => "vol",
            Self::Snapshot => "snap",
            Self::Image => "img",
        }
    }
}

/// Where a create call stands.
#[derive(Debug, Clone)]
pub(crate) enum Creation {
    /// Nothing was made under this token (or there is no token): make the
    /// resource with this id.
    Fresh { id: String },
    /// A call with this token died half way: make the resource again under
    /// the same id (its files are overwritten); `detail` is what the first
    /// call recorded before acting.
    Unfinished {
        id: String,
        detail: serde_json::Value,
    },
    /// The resource was made: return it.
    Done {
        id: String,
        detail: serde_json::Value,
    },
}

impl Creation {
    pub(crate) fn id(&self) -> &str {
        match self {
            Self::Fresh { id } | Self::Unfinished { id, .. } | Self::Done { id, .. } => id,
        }
    }
}

/// A token as recorded, for reports of what executions created.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedRecord {
    pub token: String,
    pub kind: CreatedKind,
    pub resource: String,
    pub created: bool,
    pub execution: Option<String>,
    pub step_path: Option<String>,
    pub created_at: i64,
}

impl HostStore {
    /// Starts a create call of `kind` whose parameters are `request` (no
    /// secrets in it: only its SHA-256 is kept). `detail` is recorded for a
    /// call that has to be finished later.
    pub(crate) fn begin_creation(
        &mut self,
        token: Option<&ClientToken>,
        kind: CreatedKind,
        request: &serde_json::Value,
        detail: &serde_json::Value,
    ) -> Result<Creation, HostError> {
        let Some(token) = token else {
            return Ok(Creation::Fresh {
                id: new_id(kind.id_prefix()),
            });
        };
        let request_sha = drydock_runtime::executor::source_digest(&request.to_string());
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let found: Option<(String, String, String, String, String)> = tx
            .query_row(
                "SELECT kind, resource, request_sha256, state, detail FROM client_tokens WHERE token = ?1",
                [&token.token],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        if let Some((found_kind, resource, sha, state, found_detail)) = found {
            if found_kind != kind.as_str() {
                return Err(HostError::Conflict(format!(
                    "client token {} was used to create {found_kind} {resource}, not a{} {}; use another token",
                    token.token,
                    if kind == CreatedKind::Instance || kind == CreatedKind::Image { "n" } else { "" },
                    kind.as_str()
                )));
            }
            if sha != request_sha {
                if token.execution.is_none() {
                    return Err(HostError::Conflict(format!(
                        "client token {} was used to create {resource} with other parameters; use another token for a different request",
                        token.token
                    )));
                }
                // The same step of the same execution made this call with
                // other values (a name with a time in it, say): the step is
                // being run again, and what it made the first time is what
                // it gets.
                tracing::warn!(
                    token = %token.token,
                    resource = %resource,
                    "a step run again created {resource} with other parameters the first time; returning it"
                );
            }
            let detail = serde_json::from_str(&found_detail).unwrap_or_default();
            return Ok(if state == "created" {
                Creation::Done {
                    id: resource,
                    detail,
                }
            } else {
                Creation::Unfinished {
                    id: resource,
                    detail,
                }
            });
        }
        let id = new_id(kind.id_prefix());
        tx.execute(
            "INSERT INTO client_tokens (token, kind, resource, request_sha256, state, detail, execution, step_path, created_at)
             VALUES (?1, ?2, ?3, ?4, 'creating', ?5, ?6, ?7, ?8)",
            params![
                token.token,
                kind.as_str(),
                id,
                request_sha,
                detail.to_string(),
                token.execution,
                token.step_path,
                now_ms()
            ],
        )?;
        tx.commit()?;
        Ok(Creation::Fresh { id })
    }

    /// Writes a made resource's record, its tags and (with a token) the
    /// token's `created` state in one transaction: there is no moment in
    /// which the resource exists without its tags or its token.
    pub(crate) fn commit_creation(
        &mut self,
        token: Option<&ClientToken>,
        tags: Option<(TagKind, &str, &Tags)>,
        insert: impl FnOnce(&Connection) -> Result<(), HostError>,
    ) -> Result<(), HostError> {
        if let Some((_, _, tags)) = tags {
            for (k, v) in tags {
                super::store::check_tag(k, v)?;
            }
            if tags.len() > super::store::MAX_TAGS {
                return Err(HostError::Invalid(format!(
                    "{} tags given; at most {} are allowed",
                    tags.len(),
                    super::store::MAX_TAGS
                )));
            }
        }
        let tx: Transaction = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        insert(&tx)?;
        if let Some((kind, resource, tags)) = tags {
            for (k, v) in tags {
                tx.execute(
                    "INSERT INTO tags (kind, resource, key, value) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (resource, key) DO UPDATE SET value = excluded.value",
                    params![kind.as_str(), resource, k, v],
                )?;
            }
        }
        if let Some(t) = token {
            tx.execute(
                "UPDATE client_tokens SET state = 'created' WHERE token = ?1",
                [&t.token],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Every create call recorded with a token made by an execution.
    pub fn created_by_executions(&self) -> Result<Vec<CreatedRecord>, HostError> {
        let mut stmt = self.conn.prepare(
            "SELECT token, kind, resource, state, execution, step_path, created_at FROM client_tokens
             WHERE execution IS NOT NULL ORDER BY created_at",
        )?;
        let rows = stmt.query_map([], |r| {
            let kind: String = r.get(1)?;
            let state: String = r.get(3)?;
            Ok(CreatedRecord {
                token: r.get(0)?,
                kind: match kind.as_str() {
                    "instance" => CreatedKind::Instance,
                    "snapshot" => CreatedKind::Snapshot,
                    "image" => CreatedKind::Image,
                    _ => CreatedKind::Volume,
                },
                resource: r.get(2)?,
                created: state == "created",
                execution: r.get(4)?,
                step_path: r.get(5)?,
                created_at: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_token_returns_what_it_created_and_refuses_other_uses() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = HostStore::open(dir.path()).unwrap();
        let none = json!({});
        let t = ClientToken::given("abc").unwrap();
        let req = json!({ "size": 1 });
        let first = store
            .begin_creation(Some(&t), CreatedKind::Volume, &req, &none)
            .unwrap();
        let Creation::Fresh { id } = first else {
            panic!("first use is fresh: {first:?}")
        };
        assert!(id.starts_with("vol-"));
        // Died before committing: the same id again, to be finished.
        let again = store
            .begin_creation(Some(&t), CreatedKind::Volume, &req, &none)
            .unwrap();
        assert!(matches!(&again, Creation::Unfinished { id: i, .. } if *i == id));
        let mut tags = Tags::new();
        tags.insert("role".into(), "scratch".into());
        store
            .commit_creation(Some(&t), Some((TagKind::Volume, &id, &tags)), |_| Ok(()))
            .unwrap();
        assert_eq!(store.tags(&id).unwrap(), tags);
        let done = store
            .begin_creation(Some(&t), CreatedKind::Volume, &req, &none)
            .unwrap();
        assert!(matches!(&done, Creation::Done { id: i, .. } if *i == id));
        // Another kind, or other parameters under a chosen token: refused.
        let e = store
            .begin_creation(Some(&t), CreatedKind::Instance, &req, &none)
            .unwrap_err();
        assert!(e.to_string().contains("not an instance"), "{e}");
        let e = store
            .begin_creation(Some(&t), CreatedKind::Volume, &json!({ "size": 2 }), &none)
            .unwrap_err();
        assert!(e.to_string().contains("other parameters"), "{e}");
        // A derived token with other parameters gets what the step made.
        let d = ClientToken::of_call("ex-1/2/g0/volume#1", "ex-1", "2");
        store
            .begin_creation(Some(&d), CreatedKind::Volume, &req, &none)
            .unwrap();
        let other = store
            .begin_creation(Some(&d), CreatedKind::Volume, &json!({ "size": 9 }), &none)
            .unwrap();
        assert!(matches!(other, Creation::Unfinished { .. }));
        let recorded = store.created_by_executions().unwrap();
        assert_eq!(recorded.len(), 1);
        assert_eq!(recorded[0].execution.as_deref(), Some("ex-1"));
        // No token: always fresh.
        let a = store
            .begin_creation(None, CreatedKind::Volume, &req, &none)
            .unwrap();
        let b = store
            .begin_creation(None, CreatedKind::Volume, &req, &none)
            .unwrap();
        assert_ne!(a.id(), b.id());
    }

    #[test]
    fn chosen_tokens_are_checked() {
        assert!(ClientToken::given("").is_err());
        assert!(ClientToken::given("a b").is_err());
        assert!(ClientToken::given(&"x".repeat(MAX_TOKEN + 1)).is_err());
        assert!(ClientToken::given("my-token_1").is_ok());
    }
}
