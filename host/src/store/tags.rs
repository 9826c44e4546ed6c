//! Tags (EC2's limits and filters) on instances, volumes, snapshots and
//! images.

use rusqlite::params;
use serde::Serialize;

use super::HostStore;
use crate::HostError;

/// What a tag is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TagKind {
    Instance,
    Volume,
}

impl TagKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Instance => "instance",
            Self::Volume => "volume",
        }
    }

    /// The kind a resource id names (`i-…`, `vol-…`).
    pub fn of_id(id: &str) -> Option<Self> {
        if id.starts_with("i-") {
            Some(Self::Instance)
        } else if id.starts_with("vol-") {
            Some(Self::Volume)
        } else {
            None
        }
    }
}

/// Tags of one resource, by key.
pub type Tags = std::collections::BTreeMap<String, String>;

/// EC2's limits: 50 tags per resource, keys up to 128 characters, values
/// up to 256.
pub const MAX_TAGS: usize = 50;
pub const MAX_TAG_KEY: usize = 128;
pub const MAX_TAG_VALUE: usize = 256;

/// Checks one tag key and value.
pub fn check_tag(key: &str, value: &str) -> Result<(), HostError> {
    if key.is_empty() || key.chars().count() > MAX_TAG_KEY {
        return Err(HostError::Invalid(format!(
            "tag key {key:?} must be 1 to {MAX_TAG_KEY} characters"
        )));
    }
    if key.contains('=') || key.chars().any(char::is_control) {
        return Err(HostError::Invalid(format!(
            "tag key {key:?} must not contain `=` or control characters"
        )));
    }
    if value.chars().count() > MAX_TAG_VALUE || value.chars().any(char::is_control) {
        return Err(HostError::Invalid(format!(
            "the value of tag `{key}` must be at most {MAX_TAG_VALUE} characters, without control characters"
        )));
    }
    Ok(())
}

/// A listing filter `tag:KEY=VALUE` (or `tag:KEY`, any value; the
/// `tag:` prefix is optional): the key and the value wanted.
pub fn parse_tag_filter(filter: &str) -> Result<(String, Option<String>), HostError> {
    let body = filter.strip_prefix("tag:").unwrap_or(filter);
    let (key, value) = match body.split_once('=') {
        Some((k, v)) => (k, Some(v.to_string())),
        None => (body, None),
    };
    check_tag(key, value.as_deref().unwrap_or(""))?;
    Ok((key.to_string(), value))
}

impl HostStore {
    /// The tags of one resource.
    pub fn tags(&self, resource: &str) -> Result<Tags, HostError> {
        let mut stmt = self
            .conn
            .prepare("SELECT key, value FROM tags WHERE resource = ?1 ORDER BY key")?;
        let rows = stmt.query_map([resource], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Tags of every resource of a kind, by resource id.
    pub fn all_tags(
        &self,
        kind: TagKind,
    ) -> Result<std::collections::HashMap<String, Tags>, HostError> {
        let mut stmt = self
            .conn
            .prepare("SELECT resource, key, value FROM tags WHERE kind = ?1")?;
        let mut out: std::collections::HashMap<String, Tags> = Default::default();
        let rows = stmt.query_map([kind.as_str()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        for row in rows {
            let (res, k, v) = row?;
            out.entry(res).or_default().insert(k, v);
        }
        Ok(out)
    }

    /// Adds or replaces tags in one transaction; refuses going beyond
    /// [`MAX_TAGS`]. Returns the resource's tags after the change.
    pub fn set_tags(
        &mut self,
        kind: TagKind,
        resource: &str,
        tags: &Tags,
    ) -> Result<Tags, HostError> {
        for (k, v) in tags {
            check_tag(k, v)?;
        }
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for (k, v) in tags {
            tx.execute(
                "INSERT INTO tags (kind, resource, key, value) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (resource, key) DO UPDATE SET value = excluded.value",
                params![kind.as_str(), resource, k, v],
            )?;
        }
        let count: i64 = tx.query_row(
            "SELECT COUNT(*) FROM tags WHERE resource = ?1",
            [resource],
            |r| r.get(0),
        )?;
        if count as usize > MAX_TAGS {
            return Err(HostError::Invalid(format!(
                "{resource} would have {count} tags; at most {MAX_TAGS} are allowed"
            )));
        }
        tx.commit()?;
        self.tags(resource)
    }

    /// Removes one tag (nothing if it is not there); returns the tags left.
    pub fn remove_tag(&mut self, resource: &str, key: &str) -> Result<Tags, HostError> {
        self.conn.execute(
            "DELETE FROM tags WHERE resource = ?1 AND key = ?2",
            params![resource, key],
        )?;
        self.tags(resource)
    }

    /// Forgets every tag of a resource (it was deleted).
    pub fn delete_tags(&mut self, resource: &str) -> Result<(), HostError> {
        self.conn
            .execute("DELETE FROM tags WHERE resource = ?1", [resource])?;
        Ok(())
    }

    /// Ids of the resources of `kind` that have tag `key` (with `value`,
    /// when given).
    pub fn tagged(
        &self,
        kind: TagKind,
        key: &str,
        value: Option<&str>,
    ) -> Result<Vec<String>, HostError> {
        let mut stmt = self.conn.prepare(
            "SELECT resource FROM tags WHERE kind = ?1 AND key = ?2 AND (?3 IS NULL OR value = ?3)
             ORDER BY resource",
        )?;
        let rows = stmt.query_map(params![kind.as_str(), key, value], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
