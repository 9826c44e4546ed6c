//! Volumes as stored, and attaching them: an attachment is claimed in one
//! transaction, so parallel attaches never share an index or a volume.

use std::path::PathBuf;

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use super::HostStore;
use crate::HostError;

/// What kind of storage a volume is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VolumeKind {
    /// Survives stop/start; can be detached and attached elsewhere.
    Network,
    /// Tied to the host the instance runs on: wiped at stop, never detached.
    InstanceStore,
}

/// One volume as stored.
#[derive(Debug, Clone, Serialize)]
pub struct VolumeRecord {
    pub id: String,
    pub region: String,
    pub size_mib: u64,
    pub kind: VolumeKind,
    pub path: PathBuf,
    pub attached_to: Option<String>,
    /// 0 is the root volume.
    pub attach_index: Option<u32>,
    pub delete_on_termination: bool,
    pub created_at: i64,
}

impl VolumeRecord {
    fn from_row(r: &Row) -> rusqlite::Result<Self> {
        let kind: String = r.get("kind")?;
        let path: String = r.get("path")?;
        Ok(Self {
            id: r.get("id")?,
            region: r.get("region")?,
            size_mib: r.get::<_, i64>("size_mib")? as u64,
            kind: if kind == "instance-store" {
                VolumeKind::InstanceStore
            } else {
                VolumeKind::Network
            },
            path: PathBuf::from(path),
            attached_to: r.get("attached_to")?,
            attach_index: r.get("attach_index")?,
            delete_on_termination: r.get("delete_on_termination")?,
            created_at: r.get("created_at")?,
        })
    }
}

pub(crate) fn insert_volume(conn: &Connection, v: &VolumeRecord) -> Result<(), HostError> {
    {
        conn.execute(
            "INSERT INTO volumes (id, region, size_mib, kind, path, attached_to, attach_index, delete_on_termination, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                v.id,
                v.region,
                v.size_mib as i64,
                match v.kind {
                    VolumeKind::Network => "network",
                    VolumeKind::InstanceStore => "instance-store",
                },
                v.path.to_string_lossy(),
                v.attached_to,
                v.attach_index,
                v.delete_on_termination,
                v.created_at
            ],
        )?;
        Ok(())
    }
}

impl HostStore {
    pub fn volume(&self, id: &str) -> Result<VolumeRecord, HostError> {
        self.conn
            .query_row(
                "SELECT * FROM volumes WHERE id = ?1",
                [id],
                VolumeRecord::from_row,
            )
            .optional()?
            .ok_or_else(|| {
                HostError::NotFound(format!(
                    "no volume `{id}`; list them with `drydock volumes`"
                ))
            })
    }

    pub fn volumes(&self, region: Option<&str>) -> Result<Vec<VolumeRecord>, HostError> {
        let mut stmt = self.conn.prepare(
            "SELECT * FROM volumes WHERE (?1 IS NULL OR region = ?1) ORDER BY created_at, id",
        )?;
        let rows = stmt.query_map(params![region], VolumeRecord::from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Volumes attached to an instance, root first.
    pub fn attached(&self, instance: &str) -> Result<Vec<VolumeRecord>, HostError> {
        let mut stmt = self
            .conn
            .prepare("SELECT * FROM volumes WHERE attached_to = ?1 ORDER BY attach_index")?;
        let rows = stmt.query_map([instance], VolumeRecord::from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn insert_volume(&mut self, v: &VolumeRecord) -> Result<(), HostError> {
        insert_volume(&self.conn, v)
    }

    /// Marks a volume detached.
    pub fn detach_volume(&mut self, id: &str) -> Result<(), HostError> {
        self.conn.execute(
            "UPDATE volumes SET attached_to = NULL, attach_index = NULL WHERE id = ?1",
            [id],
        )?;
        Ok(())
    }

    pub fn delete_volume_row(&mut self, id: &str) -> Result<(), HostError> {
        self.conn
            .execute("DELETE FROM volumes WHERE id = ?1", [id])?;
        self.delete_tags(id)
    }

    pub fn set_root_volume(&mut self, instance: &str, volume: &str) -> Result<(), HostError> {
        self.conn.execute(
            "UPDATE instances SET root_volume = ?2 WHERE id = ?1",
            params![instance, volume],
        )?;
        Ok(())
    }

    /// Records where a volume is attached (or that it is detached).
    pub fn set_attachment(
        &mut self,
        id: &str,
        instance: Option<&str>,
        index: Option<u32>,
    ) -> Result<(), HostError> {
        self.conn.execute(
            "UPDATE volumes SET attached_to = ?2, attach_index = ?3 WHERE id = ?1",
            params![id, instance, index],
        )?;
        Ok(())
    }

    pub fn set_delete_on_termination(&mut self, id: &str, delete: bool) -> Result<(), HostError> {
        self.conn.execute(
            "UPDATE volumes SET delete_on_termination = ?2 WHERE id = ?1",
            params![id, delete],
        )?;
        Ok(())
    }

    /// Attaches a volume in one transaction: refused if it is attached to
    /// another instance (or, as root, if the instance has a root). The
    /// index is chosen in the same transaction, so parallel attaches never
    /// share one. Attaching where it already is returns its index.
    pub fn claim_attachment(
        &mut self,
        vol_id: &str,
        instance: &str,
        as_root: bool,
    ) -> Result<u32, HostError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let (attached_to, index): (Option<String>, Option<u32>) = tx.query_row(
            "SELECT attached_to, attach_index FROM volumes WHERE id = ?1",
            [vol_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        match attached_to.as_deref() {
            Some(i) if i == instance && (index == Some(0)) == as_root => {
                return Ok(index.unwrap_or_default());
            }
            Some(other) => {
                return Err(HostError::Conflict(format!(
                    "volume {vol_id} is attached to {other}; detach it first (`drydock volume detach {vol_id}`)"
                )))
            }
            None => {}
        }
        let indexes: Vec<u32> = {
            let mut stmt = tx.prepare(
                "SELECT attach_index FROM volumes WHERE attached_to = ?1 AND attach_index IS NOT NULL",
            )?;
            let rows = stmt.query_map([instance], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        let index = if as_root {
            if indexes.contains(&0) {
                let root: String = tx.query_row(
                    "SELECT id FROM volumes WHERE attached_to = ?1 AND attach_index = 0",
                    [instance],
                    |r| r.get(0),
                )?;
                return Err(HostError::Conflict(format!(
                    "instance {instance} already has root volume {root}; detach it first"
                )));
            }
            0
        } else {
            indexes
                .iter()
                .copied()
                .filter(|i| *i < 100)
                .max()
                .unwrap_or(1)
                + 1
        };
        tx.execute(
            "UPDATE volumes SET attached_to = ?2, attach_index = ?3 WHERE id = ?1",
            params![vol_id, instance, index],
        )?;
        if as_root {
            tx.execute(
                "UPDATE instances SET root_volume = ?2 WHERE id = ?1",
                params![instance, vol_id],
            )?;
        }
        tx.commit()?;
        Ok(index)
    }
}
