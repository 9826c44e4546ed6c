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
mod driver_volumes;
pub mod extents;
pub mod faults;
mod images;
pub mod journal_replay;
pub mod store;
pub mod supervisor;
pub mod tags;
pub mod types;
pub mod volume_files;
mod volumes;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use supervisor::ControlCommand;

pub use client_tokens::{ClientToken, CreatedKind, CreatedRecord};
pub use store::{
    parse_tag_filter, AfterHostFailure, HostStore, ImageRecord, InstanceConfig, InstanceRecord,
    InstanceState, SnapshotRecord, TagKind, Tags, VolumeKind, VolumeRecord,
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

/// Runs instance processes as `drydock --data-dir DIR instance-supervisor ID`
/// with the drydock binary named by `DRYDOCK_BIN`, else this program.
pub fn drydock_supervisor(data_dir: &Path) -> SupervisorCommand {
    let exe = std::env::var_os("DRYDOCK_BIN")
        .map(PathBuf::from)
        .or_else(|| std::env::current_exe().ok())
        .unwrap_or_else(|| PathBuf::from("drydock"));
    let data_dir = data_dir.to_path_buf();
    Arc::new(move |id: &str| {
        let mut cmd = Command::new(&exe);
        cmd.arg("--data-dir")
            .arg(&data_dir)
            .arg("instance-supervisor")
            .arg(id);
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
    /// Makes the launch idempotent: a launch with a token used before
    /// returns (and, if it was cut off, finishes) that launch's instance.
    pub client_token: Option<ClientToken>,
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

    /// Launches a new instance and waits until it runs.
    ///
    /// With a client token, safe to call again after a crash at any point:
    /// the instance id and its root volume's id are recorded with the token
    /// before anything is made, the instance's record, its root volume, its
    /// tags and the token's completion are written in one transaction, and
    /// a call with a token used before returns that instance — started if
    /// the first call died before it ran (see [`Host::start`]).
    pub fn launch(&self, req: &LaunchRequest) -> Result<InstanceRecord, HostError> {
        let itype = instance_type(&req.instance_type).map_err(HostError::Invalid)?;
        for (k, v) in &req.tags {
            store::check_tag(k, v)?;
        }
        let mut store = self.store()?;
        let image = store.image(&req.image_id)?;
        let image = self.in_region(&req.image_id, &image.region.clone(), image)?;
        if !image.launchable_by(&self.profile) {
            return Err(HostError::Conflict(format!(
                "profile {} may not launch image {} (owned by {}, private); its owner can share it with `drydock image modify {} --add-profile {}`",
                self.profile, image.id, image.owner, image.id, self.profile
            )));
        }
        // What identifies the request (no secrets: whether a password is
        // set, the user-data's digest).
        let request = serde_json::json!({
            "region": self.region,
            "image": image.id,
            "type": itype.name,
            "config": req.config.summary(),
            "root_delete_on_termination": req.root_delete_on_termination,
            "tags": req.tags,
        });
        let root_candidate = new_id("vol");
        let creation = store.begin_creation(
            req.client_token.as_ref(),
            client_tokens::CreatedKind::Instance,
            &request,
            &serde_json::json!({ "root_volume": root_candidate }),
        )?;
        drop(store);
        let (id, vol_id) = match creation {
            client_tokens::Creation::Done { id, .. } => {
                tracing::info!(instance = %id, "launch already made this instance (client token); making sure it runs");
                return self.launched(&id);
            }
            client_tokens::Creation::Fresh { id } => (id, root_candidate),
            client_tokens::Creation::Unfinished { id, detail } => {
                let vol = detail
                    .get("root_volume")
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
                    .unwrap_or(root_candidate);
                tracing::warn!(instance = %id, "finishing a launch cut off before its instance was recorded");
                (id, vol)
            }
        };
        std::fs::create_dir_all(self.volumes_dir())
            .map_err(|e| HostError::io("create", &self.volumes_dir(), e))?;
        let vol_path = self.volumes_dir().join(format!("{vol_id}.raw"));
        extents::copy_allocated(&image.root_template, &vol_path)
            .map_err(|e| HostError::io("create root volume", &vol_path, e))?;
        let size_mib = std::fs::metadata(&vol_path)
            .map(|m| m.len() / (1 << 20))
            .unwrap_or(0);
        let mut config = req.config.clone();
        if config.hostname.is_empty() {
            config.hostname = id.clone();
        }
        let rec = InstanceRecord {
            id: id.clone(),
            region: self.region.clone(),
            instance_type: itype.name.to_string(),
            image_id: image.id.clone(),
            state: InstanceState::Pending,
            state_reason: "launching".into(),
            root_volume: vol_id.clone(),
            supervisor_pid: None,
            supervisor_token: None,
            boots: 0,
            config,
            created_at: now_ms(),
            state_since: now_ms(),
            after_host_failure: req.after_host_failure,
        };
        let root = VolumeRecord {
            id: vol_id,
            region: self.region.clone(),
            size_mib,
            kind: VolumeKind::Network,
            path: vol_path,
            attached_to: Some(id.clone()),
            attach_index: Some(0),
            delete_on_termination: req.root_delete_on_termination,
            created_at: now_ms(),
        };
        // The launching command owns the start: one that dies before the
        // instance process runs leaves it to be taken over (Host::start).
        let me = RunnerIdentity::current();
        let owner = format!("{}:{}", me.pid, me.token);
        self.store()?.commit_creation(
            req.client_token.as_ref(),
            Some((TagKind::Instance, &id, &req.tags)),
            |tx| {
                store::insert_volume(tx, &root)?;
                store::insert_instance(tx, &rec)?;
                tx.execute(
                    "UPDATE instances SET op_owner = ?2 WHERE id = ?1",
                    rusqlite::params![id, owner],
                )?;
                Ok(())
            },
        )?;
        self.spawn_supervisor(&id)?;
        self.wait_for(&id, START_TIMEOUT, |i| i.state != InstanceState::Pending)?;
        self.running_or_error(&id, " was launched but")
    }

    /// A launched instance, started if its launch was cut off before it ran.
    fn launched(&self, id: &str) -> Result<InstanceRecord, HostError> {
        let rec = self.store()?.instance(id)?;
        match rec.state {
            InstanceState::Pending | InstanceState::Stopped => self.start(id),
            _ => Ok(rec),
        }
    }

    /// The instance's record if it runs, else an error naming its state,
    /// the reason and where its log is.
    fn running_or_error(&self, id: &str, what: &str) -> Result<InstanceRecord, HostError> {
        let rec = self.store()?.instance(id)?;
        if rec.state != InstanceState::Running {
            return Err(HostError::Vmm(format!(
                "instance {id}{what} did not start: it is {} ({}); see {}",
                rec.state,
                rec.state_reason,
                self.instance_dir(id).join("supervisor.log").display()
            )));
        }
        Ok(rec)
    }

    /// Starts a stopped instance and waits until it runs.
    ///
    /// Safe to run again after a crash at any point, and against other
    /// commands at once: the start is claimed in the host store (only one
    /// command wins; a concurrent one is told another start is under way),
    /// and a start whose command died is finished — its instance process
    /// waited for if it runs, started again if it never did — saying so in
    /// the log and the state reason.
    pub fn start(&self, id: &str) -> Result<InstanceRecord, HostError> {
        let me = RunnerIdentity::current();
        let me_text = format!("{}:{}", me.pid, me.token);
        let mut store = self.store()?;
        let i = store.instance(id)?;
        let i = self.in_region(id, &i.region.clone(), i)?;
        match i.state {
            InstanceState::Running => return Ok(i),
            InstanceState::Stopped => {
                if !store
                    .attached(id)?
                    .iter()
                    .any(|v| v.attach_index == Some(0))
                {
                    return Err(HostError::Conflict(format!(
                        "instance {id} has no root volume; attach one with `drydock volume attach VOLUME {id} --root`"
                    )));
                }
                if !store.claim_start(id, &me_text)? {
                    return Err(self.start_conflict(id));
                }
                drop(store);
                self.spawn_supervisor(id)?;
            }
            InstanceState::Pending => {
                let owner = store.op_owner(id)?;
                let owner_alive = owner
                    .as_deref()
                    .and_then(parse_owner)
                    .is_some_and(|o| o.is_alive());
                if owner_alive {
                    return Err(self.start_conflict(id));
                }
                // A start cut short: finish it.
                let running = supervisor::instance_process_running(&self.instance_dir(id));
                let found = if running {
                    "found a start cut short whose instance process runs; waiting for it"
                } else {
                    "found a start cut short before its instance process ran; starting it again"
                };
                tracing::warn!(instance = id, "{found}");
                if !store.take_over_start(
                    id,
                    owner.as_deref(),
                    &me_text,
                    &format!("starting ({found})"),
                )? {
                    return Err(self.start_conflict(id));
                }
                drop(store);
                if !running {
                    self.spawn_supervisor(id)?;
                }
            }
            other => {
                return Err(HostError::Conflict(format!(
                    "instance {id} is {other}; only a stopped instance can be started"
                )))
            }
        }
        self.wait_for(id, START_TIMEOUT, |i| i.state != InstanceState::Pending)?;
        self.running_or_error(id, "")
    }

    fn start_conflict(&self, id: &str) -> HostError {
        HostError::Conflict(format!(
            "instance {id} is already being started by another command; wait for it (`drydock instances`)"
        ))
    }

    /// Stops a running instance: the guest syncs and powers off (or, with
    /// `force`, the VMM is stopped at once). Waits until it is stopped.
    pub fn stop(&self, id: &str, force: bool) -> Result<InstanceRecord, HostError> {
        let store = self.store()?;
        let i = store.instance(id)?;
        let i = self.in_region(id, &i.region.clone(), i)?;
        drop(store);
        match i.state {
            InstanceState::Stopped => return Ok(i),
            InstanceState::Running | InstanceState::Pending | InstanceState::Stopping => {}
            other => {
                return Err(HostError::Conflict(format!(
                    "instance {id} is {other}; it cannot be stopped"
                )))
            }
        }
        let command = if force {
            ControlCommand::StopForce
        } else {
            ControlCommand::Stop
        };
        supervisor::send_control(&self.instance_dir(id), &command)?;
        self.wait_for(id, STOP_TIMEOUT, |i| i.state == InstanceState::Stopped)?;
        self.store()?.instance(id)
    }

    /// Reboots a running instance in place: same VMM, same volumes.
    pub fn reboot(&self, id: &str) -> Result<InstanceRecord, HostError> {
        let store = self.store()?;
        let i = store.instance(id)?;
        let i = self.in_region(id, &i.region.clone(), i)?;
        if i.state != InstanceState::Running {
            return Err(HostError::Conflict(format!(
                "instance {id} is {}; only a running instance can be rebooted",
                i.state
            )));
        }
        let boots = i.boots;
        drop(store);
        supervisor::send_control(&self.instance_dir(id), &ControlCommand::Reboot)?;
        self.wait_for(id, START_TIMEOUT, |i| {
            i.boots > boots || i.state != InstanceState::Running
        })?;
        self.store()?.instance(id)
    }

    /// Terminates an instance: stops it, deletes the volumes marked
    /// DeleteOnTermination, detaches the others.
    pub fn terminate(&self, id: &str) -> Result<InstanceRecord, HostError> {
        let i = self.store()?.instance(id)?;
        let i = self.in_region(id, &i.region.clone(), i)?;
        if i.state == InstanceState::Terminated {
            return Ok(i);
        }
        if i.state.has_process() {
            self.stop(id, true)?;
        }
        let mut store = self.store()?;
        store.set_state(id, InstanceState::ShuttingDown, "terminating")?;
        for v in store.attached(id)? {
            if v.delete_on_termination || v.kind == VolumeKind::InstanceStore {
                match std::fs::remove_file(&v.path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(HostError::io("delete volume file", &v.path, e)),
                }
                store.delete_volume_row(&v.id)?;
            } else {
                store.detach_volume(&v.id)?;
            }
        }
        store.set_state(id, InstanceState::Terminated, "terminated by user")?;
        store.instance(id)
    }

    /// Changes the type of a stopped instance.
    pub fn modify_type(&self, id: &str, new_type: &str) -> Result<InstanceRecord, HostError> {
        let t = instance_type(new_type).map_err(HostError::Invalid)?;
        let mut store = self.store()?;
        let i = store.instance(id)?;
        let i = self.in_region(id, &i.region.clone(), i)?;
        if i.state != InstanceState::Stopped {
            return Err(HostError::Conflict(format!(
                "instance {id} is {}; stop it first (`drydock instance stop {id}`), then change its type",
                i.state
            )));
        }
        store.set_instance_type(id, t.name)?;
        store.instance(id)
    }

    /// Sets what a host outage leaves the instance as.
    pub fn set_after_host_failure(
        &self,
        id: &str,
        policy: AfterHostFailure,
    ) -> Result<InstanceRecord, HostError> {
        let mut store = self.store()?;
        let i = store.instance(id)?;
        self.in_region(id, &i.region.clone(), ())?;
        store.set_after_host_failure(id, policy)?;
        store.instance(id)
    }

    /// The console output of one boot (the latest by default), optionally
    /// only its last `tail` lines.
    pub fn console_output(
        &self,
        id: &str,
        boot: Option<u32>,
        tail: Option<usize>,
    ) -> Result<String, HostError> {
        let i = self.store()?.instance(id)?;
        let i = self.in_region(id, &i.region.clone(), i)?;
        let last_lines = |text: &str, n: usize| {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n") + "\n"
        };
        // The latest lines of a running instance come from the in-memory
        // tail its process keeps; everything else from the boot's log file.
        if let (None, Some(n), true) = (boot, tail, i.state == InstanceState::Running) {
            if let Ok(reply) =
                supervisor::send_control(&self.instance_dir(id), &ControlCommand::Tail)
            {
                if let Ok(text) = serde_json::from_str::<String>(&reply) {
                    return Ok(last_lines(&text, n));
                }
            }
        }
        let boot = boot.unwrap_or(i.boots);
        if boot == 0 {
            return Ok(String::new());
        }
        let path = supervisor::console_log_path(&self.instance_dir(id), boot);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(HostError::NotFound(format!(
                    "instance {id} has no console log for boot {boot} (it has booted {} times)",
                    i.boots
                )))
            }
            Err(e) => return Err(HostError::io("read", &path, e)),
        };
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Ok(match tail {
            Some(n) => last_lines(&text, n),
            None => text,
        })
    }

    /// Output of one boot (latest by default) from byte `offset`, GCE
    /// style: returns (start, next offset, bytes). Nothing is lost between
    /// two calls that chain `next` into `offset`.
    pub fn console_since(
        &self,
        id: &str,
        boot: Option<u32>,
        offset: u64,
    ) -> Result<(u64, u64, Vec<u8>), HostError> {
        use std::os::unix::fs::FileExt;
        let i = self.store()?.instance(id)?;
        let i = self.in_region(id, &i.region.clone(), i)?;
        let boot = boot.unwrap_or(i.boots);
        let path = supervisor::console_log_path(&self.instance_dir(id), boot);
        let f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((offset, offset, Vec::new()))
            }
            Err(e) => return Err(HostError::io("open", &path, e)),
        };
        let len = f
            .metadata()
            .map_err(|e| HostError::io("stat", &path, e))?
            .len();
        let start = offset.min(len);
        let mut buf = vec![0u8; (len - start).min(16 << 20) as usize];
        f.read_exact_at(&mut buf, start)
            .map_err(|e| HostError::io("read", &path, e))?;
        Ok((start, start + buf.len() as u64, buf))
    }

    fn spawn_supervisor(&self, id: &str) -> Result<(), HostError> {
        let dir = self.instance_dir(id);
        std::fs::create_dir_all(&dir).map_err(|e| HostError::io("create", &dir, e))?;
        let log = dir.join("supervisor.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| HostError::io("open", &log, e))?;
        let err_file = log_file
            .try_clone()
            .map_err(|e| HostError::io("open", &log, e))?;
        let mut cmd = (self.supervisor)(id);
        cmd.stdin(Stdio::null()).stdout(log_file).stderr(err_file);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .map_err(|e| HostError::Vmm(format!("cannot start the instance process: {e}")))?;
        // The supervisor outlives this command; it is reaped by init.
        std::mem::forget(child);
        Ok(())
    }

    fn wait_for(
        &self,
        id: &str,
        timeout: Duration,
        done: impl Fn(&InstanceRecord) -> bool,
    ) -> Result<(), HostError> {
        let start = Instant::now();
        loop {
            let i = self.store()?.instance(id)?;
            if done(&i) {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(HostError::Vmm(format!(
                    "instance {id} is still {} after {}s ({}); see {}",
                    i.state,
                    timeout.as_secs(),
                    i.state_reason,
                    self.instance_dir(id).join("supervisor.log").display()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
