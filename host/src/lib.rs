//! The host control plane: instances with EC2's lifecycle, their volumes,
//! images and regions, kept in SQLite. Each running instance is its own
//! supervisor process (see [`supervisor`]) that outlives the command that
//! started it.

pub mod backend;
pub mod boot_plan;
pub mod client_tokens;
mod config_disk;
pub mod console_client;
pub mod console_hub;
mod console_log;
mod driver_volumes;
pub mod extents;
pub mod faults;
pub mod health;
mod host_keys;
mod images;
mod instances;
pub mod journal_replay;
pub mod network;
pub mod network_interfaces;
mod security_groups;
pub mod store;
pub mod supervisor;
pub mod tags;
pub mod types;
pub mod volume_files;
mod volumes;
mod vpcs;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use supervisor::ControlCommand;

pub use client_tokens::{ClientToken, CreatedKind, CreatedRecord};
pub use store::{
    parse_tag_filter, AfterHostFailure, Direction, GroupRecord, HostStore, ImageRecord,
    InstanceConfig, InstanceRecord, InstanceState, Peer, Protocol, RuleRecord, RuleSpec,
    SnapshotRecord, StoredStatus, SubnetKind, SubnetRecord, TagKind, Tags, VolumeKind,
    VolumeRecord, VpcRecord,
};
pub use types::{instance_type, InstanceType, INSTANCE_TYPES};

use drydock_images::{BuiltImage, ImageError};

use drydock_runtime::runner::RunnerIdentity;
use store::{new_id, now_ms};

/// `pid:token` as recorded for the command that owns an operation.
fn parse_owner(text: &str) -> Option<RunnerIdentity> {
    let (pid, token) = text.split_once(':')?;
    Some(RunnerIdentity {
        pid: pid.parse().ok()?,
        token: token.to_string(),
    })
}

/// Errors from the host, named for the failure.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// Bad input: the message says what to fix.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// The resource is in a state that does not allow this.
    #[error("{0}")]
    Conflict(String),
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("host database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("{0}")]
    Vmm(String),
    /// The journal (the event stream's database) failed.
    #[error("journal error: {0}")]
    Journal(String),
}

impl HostError {
    pub(crate) fn io(what: &str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            what: what.to_string(),
            path: path.to_path_buf(),
            source,
        }
    }

    /// Whether this is the user's input to fix (exit code 2).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Self::Invalid(_) | Self::NotFound(_) | Self::Conflict(_)
        )
    }
}

/// The regions this host offers.
pub const REGIONS: &[&str] = &["region-a", "region-b"];

/// Checks a region name.
pub fn check_region(region: &str) -> Result<(), HostError> {
    if REGIONS.contains(&region) {
        Ok(())
    } else {
        Err(HostError::Invalid(format!(
            "unknown region `{region}`; regions: {}",
            REGIONS.join(", ")
        )))
    }
}

/// Builds the command that runs an instance's supervisor.
pub type SupervisorCommand = Arc<dyn Fn(&str) -> Command + Send + Sync>;

/// Runs instance processes as `drydock-instance --data-dir DIR --instance
/// ID` (with this process's sharing policy: `--group`, `--owner`). The
/// program is `DRYDOCK_INSTANCE`, else `drydock-instance` beside the
/// drydock binary named by `DRYDOCK_BIN`, else beside this program (where
/// `cargo build` and an install put it).
pub fn instance_program(data_dir: &Path) -> SupervisorCommand {
    let exe = std::env::var_os("DRYDOCK_INSTANCE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("DRYDOCK_BIN")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .or_else(|| std::env::current_exe().ok())
                .and_then(|bin| bin.parent().map(|d| d.join("drydock-instance")))
        })
        .unwrap_or_else(|| PathBuf::from("drydock-instance"));
    let data_dir = data_dir.to_path_buf();
    let sharing = drydock_runtime::access::sharing();
    Arc::new(move |id: &str| {
        let mut cmd = Command::new(&exe);
        cmd.arg("--data-dir")
            .arg(&data_dir)
            .arg("--instance")
            .arg(id);
        if let Some(group) = &sharing.group {
            cmd.arg("--group").arg(group);
        }
        if let Some(owner) = sharing.owner {
            cmd.arg("--owner").arg(owner.to_string());
        }
        cmd
    })
}

/// What to launch.
#[derive(Debug, Clone)]
pub struct LaunchRequest {
    pub image_id: String,
    pub instance_type: String,
    pub config: InstanceConfig,
    pub root_delete_on_termination: bool,
    /// Tags written with the instance's record, in the same transaction.
    pub tags: Tags,
    /// What a host outage leaves the instance as.
    pub after_host_failure: AfterHostFailure,
    /// Started again by `drydock serve` when its system check fails (its
    /// VMM died, the host went down), within the serve's limit.
    pub auto_recovery: bool,
    /// Makes the launch idempotent: a launch with a token used before
    /// returns (and, if it was cut off, finishes) that launch's instance.
    pub client_token: Option<ClientToken>,
    /// The subnet of the instance's primary interface; the region's
    /// default subnet when not given.
    pub subnet_id: Option<String>,
    /// The security groups of its interface (of the subnet's VPC); the
    /// VPC's default group when empty.
    pub security_group_ids: Vec<String>,
    /// Whether it gets a network interface (making one needs
    /// CAP_NET_ADMIN); without one, only its serial console reaches it.
    pub network: bool,
}

/// The state reason of an instance whose process was found gone (a crash
/// of its VMM, or the host went down).
pub const RECONCILE_REASON: &str = "instance process exited unexpectedly (found by reconcile)";

/// The host, seen from one region.
pub struct Host {
    pub(crate) data_dir: PathBuf,
    region: String,
    profile: String,
    supervisor: SupervisorCommand,
}

const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

impl Host {
    /// Opens the host for `region` and reconciles instance states with the
    /// processes actually running.
    pub fn open(
        data_dir: &Path,
        region: &str,
        profile: &str,
        supervisor: SupervisorCommand,
    ) -> Result<Self, HostError> {
        check_region(region)?;
        if profile.is_empty()
            || !profile
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(HostError::Invalid(format!(
                "profile name {profile:?} must be letters, digits, `-` or `_`"
            )));
        }
        // State written by older versions of drydock (no modes set: 0755
        // directories, 0644 volumes) is tightened once.
        drydock_runtime::private::tighten_data_dir(data_dir);
        let host = Self {
            data_dir: data_dir.to_path_buf(),
            region: region.to_string(),
            profile: profile.to_string(),
            supervisor,
        };
        host.reconcile()?;
        Ok(host)
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// The profile acting (owner of images it registers or creates).
    pub fn profile(&self) -> &str {
        &self.profile
    }

    pub fn store(&self) -> Result<HostStore, HostError> {
        HostStore::open(&self.data_dir)
    }

    /// Where an instance's files and sockets live.
    pub fn instance_dir(&self, id: &str) -> PathBuf {
        self.data_dir.join("instances").join(id)
    }

    pub(crate) fn volumes_dir(&self) -> PathBuf {
        self.data_dir.join("volumes")
    }

    /// Marks instances whose supervisor is gone as stopped, with the reason.
    pub fn reconcile(&self) -> Result<Vec<String>, HostError> {
        let mut store = self.store()?;
        let mut fixed = Vec::new();
        for i in store.instances(None)? {
            if !i.state.has_process() {
                continue;
            }
            let alive = supervisor::identity(&i).is_some_and(|s| s.is_alive());
            // A process being started has not recorded itself yet: give it time.
            let starting =
                i.supervisor_pid.is_none() && now_ms() - i.state_since.max(i.created_at) < 30_000;
            if !alive && !starting {
                let reason = RECONCILE_REASON;
                store.set_state(&i.id, InstanceState::Stopped, reason)?;
                store.set_supervisor(&i.id, None, None)?;
                fixed.push(i.id);
            }
        }
        Ok(fixed)
    }

    /// Registers a built image in this region (once per build and region).
    pub fn register_image(&self, built: &BuiltImage, name: &str) -> Result<ImageRecord, HostError> {
        let mut store = self.store()?;
        if let Some(existing) = store.images(Some(&self.region))?.into_iter().find(|i| {
            i.boot_dir == built.dir && i.name == name && i.owner == self.profile && !i.owns_root
        }) {
            return Ok(existing);
        }
        let rec = ImageRecord {
            id: new_id("img"),
            region: self.region.clone(),
            name: name.to_string(),
            boot_dir: built.dir.clone(),
            root_template: built.root(),
            drivers: built.manifest.load_order.clone(),
            created_at: now_ms(),
            owner: self.profile.clone(),
            public: false,
            shared_with: Vec::new(),
            owns_root: false,
            source: format!("build {}", built.manifest.key),
        };
        store.insert_image(&rec)?;
        Ok(rec)
    }

    /// Finds a resource id in this region, or says which region has it.
    pub fn in_region<T>(&self, id: &str, region: &str, found: T) -> Result<T, HostError> {
        if region == self.region {
            Ok(found)
        } else {
            Err(HostError::NotFound(format!(
                "`{id}` is in {region}, not in {} (use --region {region})",
                self.region
            )))
        }
    }
}
