//! Images as stored, with who may launch them.

use std::path::PathBuf;

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use super::HostStore;
use crate::HostError;

/// One image as stored.
#[derive(Debug, Clone, Serialize)]
pub struct ImageRecord {
    pub id: String,
    pub region: String,
    pub name: String,
    /// Directory holding vmlinuz, initramfs.cpio and manifest.json.
    pub boot_dir: PathBuf,
    /// The root volume template new instances copy.
    pub root_template: PathBuf,
    pub drivers: Vec<String>,
    pub created_at: i64,
    /// The profile that owns it.
    pub owner: String,
    /// Launchable by every profile.
    pub public: bool,
    /// Other profiles allowed to launch it.
    pub shared_with: Vec<String>,
    /// Whether the root template file belongs to this image alone (created
    /// or copied images) rather than to a shared build.
    pub owns_root: bool,
    /// The image or instance it was made from.
    pub source: String,
}

impl ImageRecord {
    /// Whether `profile` may launch it.
    pub fn launchable_by(&self, profile: &str) -> bool {
        self.public || self.owner == profile || self.shared_with.iter().any(|p| p == profile)
    }

    fn from_row(r: &Row) -> rusqlite::Result<Self> {
        let drivers: String = r.get("drivers")?;
        let boot_dir: String = r.get("boot_dir")?;
        let root: String = r.get("root_template")?;
        Ok(Self {
            id: r.get("id")?,
            region: r.get("region")?,
            name: r.get("name")?,
            boot_dir: boot_dir.into(),
            root_template: root.into(),
            drivers: serde_json::from_str(&drivers).unwrap_or_default(),
            created_at: r.get("created_at")?,
            owner: r.get("owner")?,
            public: r.get("public")?,
            shared_with: serde_json::from_str(&r.get::<_, String>("shared_with")?)
                .unwrap_or_default(),
            owns_root: r.get("owns_root")?,
            source: r.get("source")?,
        })
    }
}

pub(crate) fn insert_image(conn: &Connection, i: &ImageRecord) -> Result<(), HostError> {
    conn.execute(
        "INSERT INTO images (id, region, name, boot_dir, root_template, drivers, created_at,
                owner, public, shared_with, owns_root, source)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            i.id,
            i.region,
            i.name,
            i.boot_dir.to_string_lossy(),
            i.root_template.to_string_lossy(),
            serde_json::to_string(&i.drivers).unwrap_or_default(),
            i.created_at,
            i.owner,
            i.public,
            serde_json::to_string(&i.shared_with).unwrap_or_default(),
            i.owns_root,
            i.source
        ],
    )?;
    Ok(())
}

impl HostStore {
    pub fn image(&self, id: &str) -> Result<ImageRecord, HostError> {
        self.conn
            .query_row(
                "SELECT * FROM images WHERE id = ?1",
                [id],
                ImageRecord::from_row,
            )
            .optional()?
            .ok_or_else(|| {
                HostError::NotFound(format!("no image `{id}`; list them with `drydock images`"))
            })
    }

    pub fn images(&self, region: Option<&str>) -> Result<Vec<ImageRecord>, HostError> {
        let mut stmt = self.conn.prepare(
            "SELECT * FROM images WHERE (?1 IS NULL OR region = ?1) ORDER BY created_at, id",
        )?;
        let rows = stmt.query_map(params![region], ImageRecord::from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn insert_image(&mut self, i: &ImageRecord) -> Result<(), HostError> {
        insert_image(&self.conn, i)
    }

    /// Sets who may launch an image.
    pub fn set_image_permissions(
        &mut self,
        id: &str,
        public: bool,
        shared_with: &[String],
    ) -> Result<(), HostError> {
        self.conn.execute(
            "UPDATE images SET public = ?2, shared_with = ?3 WHERE id = ?1",
            params![
                id,
                public,
                serde_json::to_string(shared_with).unwrap_or_default()
            ],
        )?;
        Ok(())
    }

    pub fn delete_image_row(&mut self, id: &str) -> Result<(), HostError> {
        self.conn
            .execute("DELETE FROM images WHERE id = ?1", [id])?;
        Ok(())
    }
}
