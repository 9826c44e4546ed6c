//! The host's state in SQLite: regions' instances, volumes and images.
//! Every change is a transaction; several drydock processes share the file.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use super::HostError;

/// EC2's instance states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceState {
    Pending,
    Running,
    Stopping,
    Stopped,
    ShuttingDown,
    Terminated,
}

impl InstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::ShuttingDown => "shutting-down",
            Self::Terminated => "terminated",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "pending" => Self::Pending,
            "running" => Self::Running,
            "stopping" => Self::Stopping,
            "shutting-down" => Self::ShuttingDown,
            "terminated" => Self::Terminated,
            _ => Self::Stopped,
        }
    }

    /// States in which a VMM process should exist.
    pub fn has_process(self) -> bool {
        matches!(
            self,
            Self::Pending | Self::Running | Self::Stopping | Self::ShuttingDown
        )
    }
}

impl std::fmt::Display for InstanceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What becomes of an instance that was running when its host went down
/// (`--after-host-failure`): EC2 without automatic recovery leaves it
/// stopped; `start` has `drydock host recover` (and `drydock serve` on
/// start) start it again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AfterHostFailure {
    #[default]
    Stop,
    Start,
}

impl AfterHostFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Start => "start",
        }
    }

    /// `stop` or `start`.
    pub fn parse(s: &str) -> Result<Self, HostError> {
        match s {
            "stop" => Ok(Self::Stop),
            "start" => Ok(Self::Start),
            other => Err(HostError::Invalid(format!(
                "after-host-failure must be `stop` or `start`, not {other:?}"
            ))),
        }
    }
}

/// Instance configuration delivered on the config disk. Its own
/// serialization (the host database) holds everything; listings show
/// [`InstanceConfig::summary`], which leaves the secrets out.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct InstanceConfig {
    pub hostname: String,
    pub root_password_hash: Option<String>,
    pub authorized_keys: Vec<String>,
    pub user_data: Option<String>,
}

impl InstanceConfig {
    /// What listings and descriptions show: the hostname and public keys,
    /// whether a root password is set (`"set"` / `"not set"`, never its
    /// hash), and the user-data's size and SHA-256 (never its text: it
    /// often carries credentials).
    pub fn summary(&self) -> serde_json::Value {
        use sha2::Digest;
        let user_data = self.user_data.as_ref().map(|u| {
            let digest = sha2::Sha256::digest(u.as_bytes());
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            serde_json::json!({ "bytes": u.len(), "sha256": hex })
        });
        serde_json::json!({
            "hostname": self.hostname,
            "root_password": if self.root_password_hash.is_some() { "set" } else { "not set" },
            "authorized_keys": self.authorized_keys,
            "user_data": user_data,
        })
    }
}

fn serialize_config_summary<S: serde::Serializer>(
    config: &InstanceConfig,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    config.summary().serialize(serializer)
}

/// One instance as stored.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceRecord {
    pub id: String,
    pub region: String,
    pub instance_type: String,
    pub image_id: String,
    pub state: InstanceState,
    pub state_reason: String,
    pub root_volume: String,
    pub supervisor_pid: Option<u32>,
    #[serde(skip)]
    pub supervisor_token: Option<String>,
    pub boots: u32,
    /// Serialized as [`InstanceConfig::summary`]: no password hash, no
    /// user-data.
    #[serde(serialize_with = "serialize_config_summary")]
    pub config: InstanceConfig,
    pub created_at: i64,
    /// When the instance entered its current state (ms since the epoch).
    pub state_since: i64,
    /// What a host outage leaves it as.
    pub after_host_failure: AfterHostFailure,
}

impl InstanceRecord {
    fn from_row(r: &Row) -> rusqlite::Result<Self> {
        let state: String = r.get("state")?;
        let config: String = r.get("config")?;
        Ok(Self {
            id: r.get("id")?,
            region: r.get("region")?,
            instance_type: r.get("instance_type")?,
            image_id: r.get("image_id")?,
            state: InstanceState::parse(&state),
            state_reason: r.get("state_reason")?,
            root_volume: r.get("root_volume")?,
            supervisor_pid: r.get("supervisor_pid")?,
            supervisor_token: r.get("supervisor_token")?,
            boots: r.get("boots")?,
            config: serde_json::from_str(&config).unwrap_or_default(),
            created_at: r.get("created_at")?,
            state_since: r.get("state_since")?,
            after_host_failure: match r.get::<_, String>("after_host_failure")?.as_str() {
                "start" => AfterHostFailure::Start,
                _ => AfterHostFailure::Stop,
            },
        })
    }
}

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

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS instances (
    id TEXT PRIMARY KEY, region TEXT NOT NULL, instance_type TEXT NOT NULL, image_id TEXT NOT NULL,
    state TEXT NOT NULL, state_reason TEXT NOT NULL DEFAULT '', root_volume TEXT NOT NULL,
    supervisor_pid INTEGER, supervisor_token TEXT, boots INTEGER NOT NULL DEFAULT 0,
    config TEXT NOT NULL, created_at INTEGER NOT NULL, state_since INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS volumes (
    id TEXT PRIMARY KEY, region TEXT NOT NULL, size_mib INTEGER NOT NULL, kind TEXT NOT NULL,
    path TEXT NOT NULL, attached_to TEXT, attach_index INTEGER,
    delete_on_termination INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshots (
    id TEXT PRIMARY KEY, region TEXT NOT NULL, volume_id TEXT NOT NULL, size_mib INTEGER NOT NULL,
    path TEXT NOT NULL, bytes INTEGER NOT NULL, created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY, region TEXT NOT NULL, name TEXT NOT NULL, boot_dir TEXT NOT NULL,
    root_template TEXT NOT NULL, drivers TEXT NOT NULL, created_at INTEGER NOT NULL,
    owner TEXT NOT NULL, public INTEGER NOT NULL DEFAULT 0, shared_with TEXT NOT NULL DEFAULT '[]',
    owns_root INTEGER NOT NULL DEFAULT 0, source TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS tags (
    kind TEXT NOT NULL, resource TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (resource, key)
);
"#;

/// The open host database.
pub struct HostStore {
    pub(crate) conn: Connection,
}

pub(crate) use drydock_runtime::ids::now_ms;

/// Adds a column that older host databases lack.
pub(crate) fn add_column(
    c: &Connection,
    table: &str,
    column: &str,
    decl: &str,
) -> rusqlite::Result<()> {
    let has: bool = c
        .prepare(&format!(
            "SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"
        ))?
        .exists([column])?;
    if !has {
        c.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
    }
    Ok(())
}

pub use drydock_runtime::ids::new_id;

impl HostStore {
    /// Opens (creating) the host database in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, HostError> {
        std::fs::create_dir_all(data_dir).map_err(|e| HostError::io("create", data_dir, e))?;
        let conn =
            drydock_runtime::sqlite::open_shared(&data_dir.join("host.sqlite3"), "FULL", |c| {
                c.execute_batch(SCHEMA)?;
                c.execute_batch(super::client_tokens::SCHEMA)?;
                add_column(c, "instances", "op_owner", "TEXT")?;
                add_column(
                    c,
                    "instances",
                    "after_host_failure",
                    "TEXT NOT NULL DEFAULT 'stop'",
                )
            })?;
        Ok(Self { conn })
    }

    pub fn instance(&self, id: &str) -> Result<InstanceRecord, HostError> {
        self.conn
            .query_row(
                "SELECT * FROM instances WHERE id = ?1",
                [id],
                InstanceRecord::from_row,
            )
            .optional()?
            .ok_or_else(|| {
                HostError::NotFound(format!(
                    "no instance `{id}`; list them with `drydock instances --all-regions`"
                ))
            })
    }

    pub fn instances(&self, region: Option<&str>) -> Result<Vec<InstanceRecord>, HostError> {
        let mut stmt = self.conn.prepare(
            "SELECT * FROM instances WHERE (?1 IS NULL OR region = ?1) ORDER BY created_at, id",
        )?;
        let rows = stmt.query_map(params![region], InstanceRecord::from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn insert_instance(&mut self, i: &InstanceRecord) -> Result<(), HostError> {
        insert_instance(&self.conn, i)
    }
}

pub(crate) fn insert_instance(conn: &Connection, i: &InstanceRecord) -> Result<(), HostError> {
    {
        conn.execute(
            "INSERT INTO instances (id, region, instance_type, image_id, state, state_reason, root_volume, config, created_at, after_host_failure)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                i.id,
                i.region,
                i.instance_type,
                i.image_id,
                i.state.as_str(),
                i.state_reason,
                i.root_volume,
                serde_json::to_string(&i.config).unwrap_or_default(),
                i.created_at,
                i.after_host_failure.as_str()
            ],
        )?;
        Ok(())
    }
}

impl HostStore {
    /// Sets an instance's state and the reason for it.
    pub fn set_state(
        &mut self,
        id: &str,
        state: InstanceState,
        reason: &str,
    ) -> Result<(), HostError> {
        self.conn.execute(
            "UPDATE instances SET state = ?2, state_reason = ?3, state_since = ?4 WHERE id = ?1",
            params![id, state.as_str(), reason, now_ms()],
        )?;
        Ok(())
    }

    /// Records the supervisor process of a running instance (or clears it).
    pub fn set_supervisor(
        &mut self,
        id: &str,
        pid: Option<u32>,
        token: Option<&str>,
    ) -> Result<(), HostError> {
        self.conn.execute(
            "UPDATE instances SET supervisor_pid = ?2, supervisor_token = ?3 WHERE id = ?1",
            params![id, pid, token],
        )?;
        Ok(())
    }

    /// Counts a boot and returns its number.
    pub fn count_boot(&mut self, id: &str) -> Result<u32, HostError> {
        self.conn
            .execute("UPDATE instances SET boots = boots + 1 WHERE id = ?1", [id])?;
        Ok(self
            .conn
            .query_row("SELECT boots FROM instances WHERE id = ?1", [id], |r| {
                r.get(0)
            })?)
    }

    pub fn set_after_host_failure(
        &mut self,
        id: &str,
        policy: AfterHostFailure,
    ) -> Result<(), HostError> {
        self.conn.execute(
            "UPDATE instances SET after_host_failure = ?2 WHERE id = ?1",
            params![id, policy.as_str()],
        )?;
        Ok(())
    }

    pub fn set_instance_type(&mut self, id: &str, instance_type: &str) -> Result<(), HostError> {
        self.conn.execute(
            "UPDATE instances SET instance_type = ?2 WHERE id = ?1",
            params![id, instance_type],
        )?;
        Ok(())
    }

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
    /// Records a new instance and its root volume in one transaction.
    pub fn insert_instance_with_root(
        &mut self,
        i: &InstanceRecord,
        root: &VolumeRecord,
    ) -> Result<(), HostError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        insert_volume(&tx, root)?;
        insert_instance(&tx, i)?;
        tx.commit()?;
        Ok(())
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

pub(crate) fn insert_snapshot(conn: &Connection, s: &SnapshotRecord) -> Result<(), HostError> {
    conn.execute(
            "INSERT INTO snapshots (id, region, volume_id, size_mib, path, bytes, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![s.id, s.region, s.volume_id, s.size_mib as i64, s.path.to_string_lossy(), s.bytes as i64, s.created_at],
        )?;
    Ok(())
}

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

impl HostStore {
    /// Claims the start of a stopped instance for `owner` (`pid:token` of
    /// the command): only one command wins; the others get `false`.
    pub fn claim_start(&mut self, id: &str, owner: &str) -> Result<bool, HostError> {
        let n = self.conn.execute(
            "UPDATE instances SET state = 'pending', state_reason = 'starting', state_since = ?3,
                 op_owner = ?2
             WHERE id = ?1 AND state = 'stopped'",
            params![id, owner, now_ms()],
        )?;
        Ok(n == 1)
    }

    /// Takes over a start left by `dead_owner` (a command that died in the
    /// middle of it); `false` when someone else took it first.
    pub fn take_over_start(
        &mut self,
        id: &str,
        dead_owner: Option<&str>,
        owner: &str,
        reason: &str,
    ) -> Result<bool, HostError> {
        let n = self.conn.execute(
            "UPDATE instances SET op_owner = ?3, state_reason = ?4
             WHERE id = ?1 AND state = 'pending' AND op_owner IS ?2",
            params![id, dead_owner, owner, reason],
        )?;
        Ok(n == 1)
    }

    /// Who started the instance's current operation (`pid:token`).
    pub fn op_owner(&self, id: &str) -> Result<Option<String>, HostError> {
        Ok(self
            .conn
            .query_row("SELECT op_owner FROM instances WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?
            .flatten())
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
