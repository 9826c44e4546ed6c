//! Instances as stored: EC2's states, the after-host-failure policy, the
//! configuration handed in on the config disk, and the claims that keep
//! two commands from starting one instance at once.

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use super::volumes::{insert_volume, VolumeRecord};
use super::{now_ms, HostStore};
use crate::HostError;

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
    /// The metadata service answers requests without a session token
    /// (IMDSv1, EC2's `HttpTokens=optional`); off by default.
    #[serde(default)]
    pub imds_v1: bool,
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
            "imds_v1": self.imds_v1,
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
    /// Started again by `drydock serve` when its system check fails.
    pub auto_recovery: bool,
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
            auto_recovery: r.get("auto_recovery")?,
        })
    }
}

pub(crate) fn insert_instance(conn: &Connection, i: &InstanceRecord) -> Result<(), HostError> {
    {
        conn.execute(
            "INSERT INTO instances (id, region, instance_type, image_id, state, state_reason, root_volume, config, created_at, after_host_failure, auto_recovery)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
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
                i.after_host_failure.as_str(),
                i.auto_recovery
            ],
        )?;
        Ok(())
    }
}

impl HostStore {
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

    /// Sets an instance's state and the reason for it.
    pub fn set_state(
        &mut self,
        id: &str,
        state: InstanceState,
        reason: &str,
    ) -> Result<(), HostError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "UPDATE instances SET state = ?2, state_reason = ?3, state_since = ?4 WHERE id = ?1",
            params![id, state.as_str(), reason, now_ms()],
        )?;
        if n > 0 {
            super::queue_state_event(&tx, id, state.as_str(), reason)?;
        }
        tx.commit()?;
        if n > 0 {
            self.flush_events_or_warn();
        }
        Ok(())
    }

    /// Marks an instance terminated and frees its network interfaces'
    /// addresses, in one transaction.
    pub fn mark_terminated(&mut self, id: &str, reason: &str) -> Result<(), HostError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE instances SET state = 'terminated', state_reason = ?2, state_since = ?3 WHERE id = ?1",
            params![id, reason, now_ms()],
        )?;
        super::delete_interfaces(&tx, id)?;
        super::queue_state_event(&tx, id, "terminated", reason)?;
        tx.commit()?;
        self.flush_events_or_warn();
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

    /// Claims the start of a stopped instance for `owner` (`pid:token` of
    /// the command): only one command wins; the others get `false`.
    pub fn claim_start(&mut self, id: &str, owner: &str) -> Result<bool, HostError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "UPDATE instances SET state = 'pending', state_reason = 'starting', state_since = ?3,
                 op_owner = ?2
             WHERE id = ?1 AND state = 'stopped'",
            params![id, owner, now_ms()],
        )?;
        if n == 1 {
            super::queue_state_event(&tx, id, "pending", "starting")?;
        }
        tx.commit()?;
        if n == 1 {
            self.flush_events_or_warn();
        }
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
}
