//! Snapshots as stored.

use std::path::PathBuf;

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use super::HostStore;
use crate::HostError;

/// One snapshot as stored.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotRecord {
    pub id: String,
    pub region: String,
    pub volume_id: String,
    pub size_mib: u64,
    pub path: PathBuf,
    /// Bytes of data the snapshot holds (its allocated extents).
    pub bytes: u64,
    pub created_at: i64,
}

impl SnapshotRecord {
    fn from_row(r: &Row) -> rusqlite::Result<Self> {
        let path: String = r.get("path")?;
        Ok(Self {
            id: r.get("id")?,
            region: r.get("region")?,
            volume_id: r.get("volume_id")?,
            size_mib: r.get::<_, i64>("size_mib")? as u64,
            path: path.into(),
            bytes: r.get::<_, i64>("bytes")? as u64,
            created_at: r.get("created_at")?,
        })
    }
}

pub(crate) fn insert_snapshot(conn: &Connection, s: &SnapshotRecord) -> Result<(), HostError> {
    conn.execute(
            "INSERT INTO snapshots (id, region, volume_id, size_mib, path, bytes, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![s.id, s.region, s.volume_id, s.size_mib as i64, s.path.to_string_lossy(), s.bytes as i64, s.created_at],
        )?;
    Ok(())
}

impl HostStore {
    pub fn snapshot(&self, id: &str) -> Result<SnapshotRecord, HostError> {
        self.conn
            .query_row(
                "SELECT * FROM snapshots WHERE id = ?1",
                [id],
                SnapshotRecord::from_row,
            )
            .optional()?
            .ok_or_else(|| {
                HostError::NotFound(format!(
                    "no snapshot `{id}`; list them with `drydock snapshots`"
                ))
            })
    }

    pub fn snapshots(&self, region: Option<&str>) -> Result<Vec<SnapshotRecord>, HostError> {
        let mut stmt = self.conn.prepare(
            "SELECT * FROM snapshots WHERE (?1 IS NULL OR region = ?1) ORDER BY created_at, id",
        )?;
        let rows = stmt.query_map(params![region], SnapshotRecord::from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn insert_snapshot(&mut self, s: &SnapshotRecord) -> Result<(), HostError> {
        insert_snapshot(&self.conn, s)
    }

    pub fn delete_snapshot_row(&mut self, id: &str) -> Result<(), HostError> {
        self.conn
            .execute("DELETE FROM snapshots WHERE id = ?1", [id])?;
        Ok(())
    }
}
