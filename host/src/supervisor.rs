//! The process that runs one instance. It starts the VMM, keeps every
//! byte of the serial console in a log file per boot, serves a control
//! socket (stop, reboot) and records how the VM ended: guest power-off,
//! stop by the user, or an unexpected VMM exit. The VMM dies with it.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drydock_runtime::runner::RunnerIdentity;
use serde_json::json;

use super::config_disk::write_config_disk;
use super::console_hub::ConsoleHub;
use super::store::{
    new_id, now_ms, HostStore, InstanceRecord, InstanceState, VolumeKind, VolumeRecord,
};
use super::{instance_type, HostError};
use crate::backend::qmp::QmpClient;
use crate::backend::{
    choose_backend, qemu, tcg_clock_params, Accel, Backend, DeviceGeneration, DiskSpec, VmSpec,
    VmmPrograms,
};

/// How long a graceful stop may take before the VMM is stopped hard.
const GRACEFUL_STOP: Duration = Duration::from_secs(10);

/// How long the VMM has to end after it is told to stop before it is
/// killed (SIGKILL): a stop never depends on the VMM answering.
const QUIT_GRACE: Duration = Duration::from_secs(3);

/// The longest a VM stays paused for a copy whose command died.
const PAUSE_LIMIT: Duration = Duration::from_secs(600);

/// Control connections served at once; more are refused.
const MAX_CONTROL_CLIENTS: usize = 32;

/// The longest control command line accepted.
const MAX_CONTROL_LINE: u64 = 4096;

/// The supervisor process recorded for an instance.
pub fn identity(i: &InstanceRecord) -> Option<RunnerIdentity> {
    Some(RunnerIdentity {
        pid: i.supervisor_pid?,
        token: i.supervisor_token.clone()?,
    })
}

/// The console log of boot number `boot`.
pub fn console_log_path(instance_dir: &Path, boot: u32) -> PathBuf {
    instance_dir
        .join("console")
        .join(format!("boot-{boot:04}.log"))
}

/// Sends one command to an instance's supervisor and returns its reply.
pub fn send_control(instance_dir: &Path, command: &str) -> Result<String, HostError> {
    let path = instance_dir.join("control.sock");
    let mut stream = UnixStream::connect(&path).map_err(|e| {
        HostError::Vmm(format!(
            "cannot reach the instance process at {}: {e}",
            path.display()
        ))
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok();
    stream
        .write_all(format!("{command}\n").as_bytes())
        .map_err(|e| HostError::io("write to", &path, e))?;
    let mut reply = String::new();
    BufReader::new(stream)
        .read_line(&mut reply)
        .map_err(|e| HostError::io("read from", &path, e))?;
    let reply = reply.trim().to_string();
    match reply.strip_prefix("error: ") {
        Some(e) => Err(HostError::Vmm(e.to_string())),
        None => Ok(reply),
    }
}

/// The lock an instance's supervisor holds for its whole life: at most one
/// supervisor runs an instance, and a command can tell whether one runs.
fn instance_lock_path(instance_dir: &Path) -> PathBuf {
    instance_dir.join("supervisor.lock")
}

/// Takes the instance lock; `None` if another process holds it.
fn lock_instance(instance_dir: &Path) -> Result<Option<std::fs::File>, HostError> {
    use std::os::fd::AsRawFd;
    std::fs::create_dir_all(instance_dir).map_err(|e| HostError::io("create", instance_dir, e))?;
    let path = instance_lock_path(instance_dir);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| HostError::io("open", &path, e))?;
    // SAFETY: flock on a file descriptor we own; no memory is shared.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    Ok((rc == 0).then_some(file))
}

/// Whether an instance process (supervisor) runs the instance now.
pub fn instance_process_running(instance_dir: &Path) -> bool {
    match lock_instance(instance_dir) {
        Ok(Some(_released_on_drop)) => false,
        Ok(None) => true,
        Err(_) => false,
    }
}

/// Holds an exclusive lock on a volume file while a VM uses it, so no
/// other VM (or drydock) can attach it at the same time.
pub struct VolumeLock {
    _file: std::fs::File,
}

impl VolumeLock {
    /// Locks `path`, or says which volume is in use.
    pub fn acquire(path: &Path, volume: &str) -> Result<Self, HostError> {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .open(path)
            .map_err(|e| HostError::io("open", path, e))?;
        // SAFETY: flock on a file descriptor we own; no memory is shared.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(HostError::Conflict(format!(
                "volume {volume} is in use by another virtual machine (its file {} is locked)",
                path.display()
            )));
        }
        Ok(Self { _file: file })
    }
}

struct Shared {
    data_dir: PathBuf,
    id: String,
    dir: PathBuf,
    console: Arc<ConsoleHub>,
    control: Mutex<Option<QmpClient>>,
    stop_reason: Mutex<Option<String>>,
    exited: AtomicBool,
    /// Counts pauses and resumes (a pause's watchdog acts only if nothing
    /// happened since).
    pauses: std::sync::atomic::AtomicU64,
    /// The VMM process, and whether it has been reaped (its pid may then
    /// belong to another process: never signalled after that).
    vmm_pid: u32,
    reaped: Mutex<bool>,
    guest_shutdown: AtomicBool,
    generation: DeviceGeneration,
    backend: Backend,
    /// Why the VMM said the VM ended (its SHUTDOWN event).
    end_reason: Mutex<Option<String>>,
    /// Hot-plugged volumes: volume id -> (port slot, lock).
    hotplugged: Mutex<std::collections::HashMap<String, (u32, VolumeLock)>>,
    /// Volumes the VM was started with (they cannot be hot-unplugged).
    boot_volumes: std::collections::HashSet<String>,
    deleted_devices: (Mutex<std::collections::HashSet<String>>, std::sync::Condvar),
    /// What this VMM boots, read from the root volume at the start.
    boot_plan: crate::boot_plan::BootPlan,
    root_volume: PathBuf,
    /// Set when a guest reset found other boot files on the root volume.
    restart: Mutex<Option<String>>,
}

impl Shared {
    fn store(&self) -> Result<HostStore, HostError> {
        HostStore::open(&self.data_dir)
    }

    fn qmp(&self, command: &str, args: serde_json::Value) -> Result<serde_json::Value, HostError> {
        let mut guard = self.control.lock().unwrap();
        let client = guard
            .as_mut()
            .ok_or_else(|| HostError::Vmm("the VMM control connection is not ready".into()))?;
        client
            .execute(command, args)
            .map_err(|e| HostError::Vmm(e.to_string()))
    }

    /// Kills the VMM process (SIGKILL) unless it has already ended.
    fn kill_vmm(&self) {
        let reaped = self.reaped.lock().unwrap_or_else(|e| e.into_inner());
        if !*reaped {
            tracing::warn!(pid = self.vmm_pid, "killing the VMM");
            // Checked under the lock the reaper takes: still our unreaped child.
            // SAFETY: kill(2) with a pid of our own unreaped child cannot name another process; no memory is touched.
            unsafe {
                libc::kill(self.vmm_pid as libc::pid_t, libc::SIGKILL);
            }
        }
    }

    /// Tells the VMM to quit and kills it if it has not ended within
    /// [`QUIT_GRACE`] (a VMM that does not answer is still stopped).
    fn quit_or_kill(self: &Arc<Self>) {
        let me = self.clone();
        std::thread::spawn(move || {
            if let Err(e) = me.vmm_quit() {
                tracing::warn!("the VMM did not take the stop command: {e}");
            }
        });
        let deadline = std::time::Instant::now() + QUIT_GRACE;
        while std::time::Instant::now() < deadline {
            if *self.reaped.lock().unwrap_or_else(|e| e.into_inner()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill_vmm();
    }

    /// Lets a paused VM run again.
    fn vmm_resume(&self) -> Result<serde_json::Value, HostError> {
        match self.backend {
            Backend::Drydock => self.qmp("resume", json!({})),
            Backend::Qemu(_) => self.qmp("cont", json!({})),
        }
    }

    /// Ends the VMM at once.
    fn vmm_quit(&self) -> Result<serde_json::Value, HostError> {
        match self.backend {
            Backend::Drydock => self.qmp("stop", json!({})),
            Backend::Qemu(_) => self.qmp("quit", json!({})),
        }
    }

    /// Resets the VM.
    fn vmm_reset(&self) -> Result<serde_json::Value, HostError> {
        match self.backend {
            Backend::Drydock => self.qmp("reboot", json!({})),
            Backend::Qemu(_) => self.qmp("system_reset", json!({})),
        }
    }

    /// A break condition on the serial line.
    fn vmm_break(&self) -> Result<serde_json::Value, HostError> {
        match self.backend {
            Backend::Drydock => self.qmp("send-break", json!({})),
            Backend::Qemu(_) => self.qmp("chardev-send-break", json!({ "id": "console" })),
        }
    }

    /// Sends a magic SysRq key over the serial line (break, then the key).
    fn sysrq(&self, key: u8) -> Result<(), HostError> {
        self.vmm_break()?;
        std::thread::sleep(Duration::from_millis(50));
        self.console
            .input(&[key])
            .map_err(|e| HostError::Vmm(e.to_string()))?;
        std::thread::sleep(Duration::from_millis(150));
        Ok(())
    }

    /// At a guest reset the host reads the root volume again, as firmware
    /// would. A boot that panicked before the root volume's init marks its
    /// entry failed (the next boot tries the fallback first); when the
    /// volume now says to boot other files than this VMM loaded (a new
    /// initramfs, another entry, another APPEND), the VMM ends and the
    /// instance process starts it again with them. Returns whether it
    /// does; otherwise the guest's reset goes on in the same VMM.
    fn reboot_from_volume(self: &Arc<Self>) -> bool {
        use crate::boot_plan;
        if self.boot_plan.label.is_none() || self.stop_reason.lock().unwrap().is_some() {
            return false;
        }
        // The last lines of the boot that ended reach the hub first.
        std::thread::sleep(Duration::from_millis(100));
        let console = String::from_utf8_lossy(&self.console.tail()).into_owned();
        if boot_plan::failed_in_guest(&console) {
            if let Err(e) = boot_plan::mark_failed(&self.dir, &self.boot_plan) {
                tracing::warn!("cannot record the failed boot: {e}");
            }
        }
        let image_dir = match self
            .store()
            .and_then(|s| s.instance(&self.id).and_then(|i| s.image(&i.image_id)))
        {
            Ok(image) => image.boot_dir,
            Err(e) => {
                tracing::warn!("cannot read the instance's image at reset: {e}");
                return false;
            }
        };
        let why = match boot_plan::plan(&self.data_dir, &self.dir, &image_dir, &self.root_volume) {
            Ok(next)
                if next.kernel == self.boot_plan.kernel
                    && next.initrd == self.boot_plan.initrd
                    && next.append == self.boot_plan.append =>
            {
                return false
            }
            Ok(next) => format!(
                "the root volume now boots entry `{}`",
                next.label.unwrap_or_default()
            ),
            // The next start says why on the console and in the state.
            Err(e) => format!("{e}"),
        };
        *self.restart.lock().unwrap() = Some(why);
        let me = self.clone();
        std::thread::spawn(move || me.quit_or_kill());
        true
    }

    fn new_boot(&self) -> Result<(), HostError> {
        let boot = self.store()?.count_boot(&self.id)?;
        let path = console_log_path(&self.dir, boot);
        let file = std::fs::File::create(&path).map_err(|e| HostError::io("create", &path, e))?;
        self.console.new_boot(boot, file, path);
        Ok(())
    }

    fn handle(self: &Arc<Self>, command: &str) -> Result<String, HostError> {
        match command {
            "stop" => {
                self.stop_reason
                    .lock()
                    .unwrap()
                    .get_or_insert_with(|| "stopped by user".into());
                self.store()?
                    .set_state(&self.id, InstanceState::Stopping, "stopping")?;
                // The deadline is armed before anything is asked of the
                // guest: whatever the guest or the console do, the VMM ends.
                let me = self.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(GRACEFUL_STOP);
                    if !me.exited.load(Ordering::SeqCst) {
                        tracing::warn!("guest did not power off in time; stopping the VMM");
                        me.quit_or_kill();
                    }
                });
                // Sync, remount read-only, power off: a clean stop with no guest agent.
                for key in [b's', b'u', b'o'] {
                    if let Err(e) = self.sysrq(key) {
                        tracing::warn!("sysrq {}: {e}", key as char);
                    }
                }
                Ok("stopping".into())
            }
            "stop-force" => {
                self.stop_reason
                    .lock()
                    .unwrap()
                    .get_or_insert_with(|| "stopped by user (forced)".into());
                self.store()?
                    .set_state(&self.id, InstanceState::Stopping, "stopping (forced)")?;
                let me = self.clone();
                std::thread::spawn(move || me.quit_or_kill());
                Ok("stopping".into())
            }
            "reboot" => {
                for key in [b's', b'u'] {
                    self.sysrq(key)?;
                }
                self.vmm_reset()?;
                Ok("rebooting".into())
            }
            "status" => Ok(format!(
                "running pid {} backend {}",
                std::process::id(),
                self.backend.name()
            )),
            "tail" => {
                let text = String::from_utf8_lossy(&self.console.tail()).into_owned();
                Ok(serde_json::to_string(&text).expect("a string serializes"))
            }
            cmd if cmd.starts_with("sysrq ") => {
                let key = cmd.as_bytes()[6..]
                    .first()
                    .copied()
                    .filter(|k| k.is_ascii_alphanumeric());
                let key = key
                    .ok_or_else(|| HostError::Invalid("sysrq needs one letter or digit".into()))?;
                self.sysrq(key)?;
                Ok(format!("sysrq {} sent", key as char))
            }
            "break" => {
                self.vmm_break()?;
                Ok("break sent".into())
            }
            "pause" => {
                // A consistent point for a copy of the disks: the vCPUs
                // (drydock) or the whole VM with its I/O drained (QEMU's
                // stop). Resumed by `resume`, or after PAUSE_LIMIT if the
                // command that paused died.
                match self.backend {
                    Backend::Drydock => self.qmp("pause", json!({}))?,
                    Backend::Qemu(_) => self.qmp("stop", json!({}))?,
                };
                let generation = self.pauses.fetch_add(1, Ordering::SeqCst) + 1;
                tracing::info!(instance = %self.id, "paused");
                let me = self.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(PAUSE_LIMIT);
                    if me.pauses.load(Ordering::SeqCst) == generation
                        && !me.exited.load(Ordering::SeqCst)
                    {
                        tracing::warn!("paused for {PAUSE_LIMIT:?} without a resume; resuming");
                        let _ = me.vmm_resume();
                    }
                });
                Ok("paused".into())
            }
            "resume" => {
                self.pauses.fetch_add(1, Ordering::SeqCst);
                self.vmm_resume()?;
                tracing::info!(instance = %self.id, "resumed");
                Ok("resumed".into())
            }
            other => match other.split_once(' ') {
                Some(("attach", vol)) => self.hot_attach(vol.trim()),
                Some(("detach", vol)) => self.hot_detach(vol.trim()),
                _ => Err(HostError::Invalid(format!(
                    "unknown control command `{other}`"
                ))),
            },
        }
    }
}

impl Shared {
    fn hot_attach(&self, vol_id: &str) -> Result<String, HostError> {
        // Asked again (a command re-run after a crash): already done.
        if self.boot_volumes.contains(vol_id)
            || self.hotplugged.lock().unwrap().contains_key(vol_id)
        {
            return Ok(format!("attached {vol_id} (it already was)"));
        }
        if self.backend == Backend::Drydock {
            return self.drydock_attach(vol_id);
        }
        if self.generation != DeviceGeneration::Pci {
            return Err(HostError::Conflict(format!(
                "instance {} is of an old-generation type (virtio-mmio) whose disks cannot change while it runs; stop it, attach, start",
                self.id
            )));
        }
        let vol = self.store()?.volume(vol_id)?;
        let mut plugged = self.hotplugged.lock().unwrap();
        let used: Vec<u32> = plugged.values().map(|(s, _)| *s).collect();
        let slot = (0..qemu::HOTPLUG_SLOTS)
            .find(|s| !used.contains(s))
            .ok_or_else(|| {
                HostError::Conflict(format!(
                    "instance {} has no free hot-plug slot ({} in use)",
                    self.id,
                    qemu::HOTPLUG_SLOTS
                ))
            })?;
        let lock = VolumeLock::acquire(&vol.path, &vol.id)?;
        let disk = DiskSpec {
            path: vol.path.clone(),
            serial: vol.id.clone(),
            read_only: false,
            hotplug: None,
        };
        for (cmd, args) in
            qemu::hotplug_commands(&disk, &device_id(&vol.id), &qemu::hotplug_port(slot))
        {
            self.qmp(cmd, args)?;
        }
        plugged.insert(vol.id.clone(), (slot, lock));
        Ok(format!("attached {}", vol.id))
    }

    /// drydock's VMM: the volume goes into an empty disk slot.
    fn drydock_attach(&self, vol_id: &str) -> Result<String, HostError> {
        let vol = self.store()?.volume(vol_id)?;
        let lock = VolumeLock::acquire(&vol.path, &vol.id)?;
        let reply = self.drydock_attach_disk(&absolute(&vol.path), &vol.id)?;
        let slot = reply["slot"].as_u64().unwrap_or_default() as u32;
        self.hotplugged
            .lock()
            .unwrap()
            .insert(vol.id.clone(), (slot, lock));
        Ok(format!("attached {}", vol.id))
    }

    /// drydock's VMM opens no file by path under its seccomp filter: the
    /// supervisor opens the volume and passes it with `attach-disk`
    /// (SCM_RIGHTS); the VMM checks it is that file of the volumes
    /// directory.
    fn drydock_attach_disk(
        &self,
        path: &Path,
        serial: &str,
    ) -> Result<serde_json::Value, HostError> {
        let file = drydock_vmm::machine::control::open_volume_for_attach(path, false)
            .map_err(|e| HostError::io("open", path, e))?;
        let mut guard = self.control.lock().unwrap();
        let client = guard
            .as_mut()
            .ok_or_else(|| HostError::Vmm("the VMM control connection is not ready".into()))?;
        client
            .execute_with_fd(
                "attach-disk",
                json!({ "path": path, "serial": serial, "read_only": false }),
                std::os::fd::AsFd::as_fd(&file),
            )
            .map_err(|e| HostError::Vmm(e.to_string()))
    }

    fn hot_detach(&self, vol_id: &str) -> Result<String, HostError> {
        let dev = device_id(vol_id);
        if !self.hotplugged.lock().unwrap().contains_key(vol_id) {
            if self.boot_volumes.contains(vol_id) {
                return Err(HostError::Conflict(format!(
                    "volume {vol_id} was attached before {} started; stop the instance to detach it",
                    self.id
                )));
            }
            // Not in this VM (detached already, by a command cut short
            // before it recorded it, or never plugged): nothing to do.
            return Ok(format!("detached {vol_id} (it was not in the VM)"));
        }
        if self.backend == Backend::Drydock {
            let reply = self.qmp("detach-disk", json!({ "serial": vol_id }))?;
            self.hotplugged.lock().unwrap().remove(vol_id);
            return Ok(if reply["was_mounted"].as_bool().unwrap_or(false) {
                format!("detached {vol_id} (the guest still had its file system mounted)")
            } else {
                format!("detached {vol_id}")
            });
        }
        // A detach whose command was cut short may still be under way in
        // another thread here (the guest releasing the disk, or QEMU done
        // with it and its event being handled): QEMU then says the device
        // is not found or already being unplugged, and this call waits for
        // that detach to finish instead of failing.
        match self.qmp("device_del", json!({ "id": dev })) {
            Ok(_) => {}
            Err(e)
                if e.to_string().contains("not found")
                    || e.to_string().contains("process of unplug") =>
            {
                tracing::warn!(instance = %self.id, "{vol_id}: finishing a detach cut short");
            }
            Err(e) => return Err(e),
        }
        let (set, cond) = &self.deleted_devices;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut deleted = set.lock().unwrap();
        while !deleted.contains(&dev) {
            // Another thread (the detach cut short) took the guest's
            // release and finished.
            if !self.hotplugged.lock().unwrap().contains_key(vol_id) {
                return Ok(format!("detached {vol_id} (a detach cut short finished)"));
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(HostError::Vmm(format!(
                    "the guest did not release {vol_id} within 20 s; it may still be using it"
                )));
            }
            deleted = cond
                .wait_timeout(deleted, left.min(Duration::from_millis(100)))
                .unwrap()
                .0;
        }
        deleted.remove(&dev);
        drop(deleted);
        self.qmp(
            "blockdev-del",
            json!({ "node-name": format!("node-{dev}") }),
        )?;
        self.hotplugged.lock().unwrap().remove(vol_id);
        Ok(format!("detached {vol_id}"))
    }
}

fn unsafe_zeroed_siginfo() -> libc::siginfo_t {
    // SAFETY: siginfo_t is a plain C struct for which all zero bytes is a
    // valid value.
    unsafe { std::mem::zeroed() }
}

/// `path` made absolute against the working directory (a relative
/// `--data-dir`): drydock's VMM attaches only absolute paths.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn device_id(vol_id: &str) -> String {
    format!("disk-{vol_id}")
}

fn serve_control(shared: Arc<Shared>, listener: UnixListener) {
    let clients = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
        if clients.fetch_add(1, Ordering::SeqCst) >= MAX_CONTROL_CLIENTS {
            clients.fetch_sub(1, Ordering::SeqCst);
            let _ = (&stream).write_all(
                format!("error: too many control connections ({MAX_CONTROL_CLIENTS}); try again\n")
                    .as_bytes(),
            );
            continue;
        }
        let shared = shared.clone();
        let clients = clients.clone();
        std::thread::spawn(move || {
            control_session(&shared, &stream);
            clients.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

fn control_session(shared: &Arc<Shared>, stream: &UnixStream) {
    if drydock_runtime::private::admit("control", stream, |why| format!("error: {why}")).is_none() {
        return;
    }
    let mut line = String::new();
    let mut reader = BufReader::new(stream).take(MAX_CONTROL_LINE);
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let reply = if !line.ends_with('\n') {
        format!("error: a control command is one line of at most {MAX_CONTROL_LINE} bytes")
    } else {
        match shared.handle(line.trim()) {
            Ok(r) => r,
            Err(e) => format!("error: {e}"),
        }
    };
    let _ = (&*stream).write_all(format!("{reply}\n").as_bytes());
}

/// Runs instance `id` until its VM ends, then records why.
pub fn supervise(data_dir: &Path, id: &str, programs: &VmmPrograms) -> Result<(), HostError> {
    // Nothing is touched before the instance lock is held: a second
    // supervisor (two starts at once) leaves the first one's VM, volumes
    // and state alone.
    let dir = data_dir.join("instances").join(id);
    let Some(_instance_lock) = lock_instance(&dir)? else {
        tracing::warn!(
            instance = id,
            "another instance process runs this instance; leaving"
        );
        return Err(HostError::Conflict(format!(
            "instance {id} is already run by another instance process"
        )));
    };
    let mut store = HostStore::open(data_dir)?;
    let inst = store.instance(id)?;
    if inst.state != InstanceState::Pending {
        return Err(HostError::Conflict(format!(
            "instance {id} is {}, not pending: nothing to start",
            inst.state
        )));
    }
    let me = RunnerIdentity::current();
    store.set_supervisor(id, Some(me.pid), Some(&me.token))?;
    let result = loop {
        match run_vm(data_dir, &inst, programs) {
            // The guest reset and its volume says to boot other files: a
            // new VMM boots them (see `Shared::reboot_from_volume`).
            Ok(Ended::Restart(why)) => {
                tracing::info!(instance = id, "restarting the VMM: {why}");
                HostStore::open(data_dir)?.set_state(
                    id,
                    InstanceState::Pending,
                    &format!("rebooting: {why}"),
                )?;
            }
            Ok(Ended::Stopped(reason)) => break Ok(reason),
            Err(e) => break Err(e),
        }
    };
    let mut store = HostStore::open(data_dir)?;
    let reason = match &result {
        Ok(reason) => reason.clone(),
        Err(e) => format!("could not run: {e}"),
    };
    store.set_state(id, InstanceState::Stopped, &reason)?;
    store.set_supervisor(id, None, None)?;
    // Instance-store volumes are wiped at stop.
    for v in store.attached(id)? {
        if v.kind == VolumeKind::InstanceStore {
            let _ = std::fs::remove_file(&v.path);
        }
    }
    result.map(|_| ())
}

/// How one VMM run ended.
enum Ended {
    /// The instance stopped, for this reason.
    Stopped(String),
    /// A guest reset found other boot files on the root volume: run again.
    Restart(String),
}

/// A start whose root volume cannot be booted ends as a real machine's
/// would: the reason on this boot's console and in the state reason.
fn boot_failed(
    store: &mut HostStore,
    dir: &Path,
    id: &str,
    e: &drydock_images::boot_volume::BootFailure,
) -> Result<Ended, HostError> {
    let boot = store.count_boot(id)?;
    let path = console_log_path(dir, boot);
    std::fs::write(&path, format!("drydock boot: {e}\r\n"))
        .map_err(|err| HostError::io("write", &path, err))?;
    tracing::warn!(instance = id, "boot failed: {e}");
    Ok(Ended::Stopped(format!("boot failed: {e}")))
}

fn run_vm(
    data_dir: &Path,
    inst: &InstanceRecord,
    programs: &VmmPrograms,
) -> Result<Ended, HostError> {
    let id = &inst.id;
    let dir = data_dir.join("instances").join(id);
    std::fs::create_dir_all(dir.join("console")).map_err(|e| HostError::io("create", &dir, e))?;
    // An instance directory of an older drydock may be open to others.
    drydock_runtime::private::tighten_tree(&dir);
    let itype = instance_type(&inst.instance_type).map_err(HostError::Invalid)?;
    let mut store = HostStore::open(data_dir)?;
    let image = store.image(&inst.image_id)?;

    let config_disk = dir.join("config.ext4");
    write_config_disk(inst, &config_disk)?;
    if itype.instance_store_mib > 0
        && !store
            .attached(id)?
            .iter()
            .any(|v| v.kind == VolumeKind::InstanceStore)
    {
        store.insert_volume(&VolumeRecord {
            id: new_id("vol"),
            region: inst.region.clone(),
            size_mib: itype.instance_store_mib,
            kind: VolumeKind::InstanceStore,
            path: dir.join("instance-store.raw"),
            attached_to: Some(id.clone()),
            attach_index: Some(100),
            delete_on_termination: true,
            created_at: now_ms(),
        })?;
    }
    // Chosen before the disks: on QEMU's new generation, data volumes go
    // onto hot-plug ports at start, so that they can be detached while the
    // instance runs (after a restart, as if hot-plugged).
    let backend = choose_backend().map_err(HostError::Invalid)?;
    let ports_at_start =
        matches!(backend, Backend::Qemu(_)) && itype.generation == DeviceGeneration::Pci;
    let mut disks = Vec::new();
    let mut locks = Vec::new();
    let mut boot_volumes = std::collections::HashSet::new();
    let mut plugged_at_start = std::collections::HashMap::new();
    for v in store.attached(id)? {
        if v.kind == VolumeKind::InstanceStore {
            // Created empty at every start.
            let _ = std::fs::remove_file(&v.path);
            let f =
                std::fs::File::create(&v.path).map_err(|e| HostError::io("create", &v.path, e))?;
            f.set_len(v.size_mib << 20)
                .map_err(|e| HostError::io("size", &v.path, e))?;
        }
        let lock = VolumeLock::acquire(&v.path, &v.id)?;
        let slot = (ports_at_start && v.kind == VolumeKind::Network && v.attach_index != Some(0))
            .then_some(plugged_at_start.len() as u32)
            .filter(|s| *s < qemu::HOTPLUG_SLOTS);
        let hotplug = match slot {
            Some(slot) => {
                plugged_at_start.insert(v.id.clone(), (slot, lock));
                Some(crate::backend::HotplugPlace {
                    port: qemu::hotplug_port(slot),
                    device_id: device_id(&v.id),
                })
            }
            None => {
                boot_volumes.insert(v.id.clone());
                locks.push(lock);
                None
            }
        };
        disks.push(DiskSpec {
            path: v.path.clone(),
            serial: v.id.clone(),
            read_only: false,
            hotplug,
        });
    }
    disks.insert(
        1.min(disks.len()),
        DiskSpec {
            path: config_disk,
            serial: "cidata".into(),
            read_only: true,
            hotplug: None,
        },
    );
    // What the root volume says to boot, read at every start.
    let root_path = store.volume(&inst.root_volume)?.path;
    // An unclean stop leaves a journal to replay before the host reads the
    // boot files (the guest's kernel would replay it at mount anyway).
    let replayed = match super::journal_replay::replay_if_needed(&root_path) {
        Ok(replayed) => replayed,
        Err(e) => {
            tracing::warn!("{e}");
            false
        }
    };
    let mut boot_plan = match crate::boot_plan::plan(data_dir, &dir, &image.boot_dir, &root_path) {
        Ok(plan) => plan,
        Err(e) => return boot_failed(&mut store, &dir, id, &e),
    };
    if replayed {
        boot_plan.console.insert_str(
            0,
            "drydock boot: replayed the root volume's journal (its last stop was unclean)\r\n",
        );
    }
    let control_socket = dir.join("qmp.sock");
    let event_socket = dir.join("qmp-events.sock");
    for s in [
        &control_socket,
        &event_socket,
        &dir.join("control.sock"),
        &dir.join("console.sock"),
    ] {
        let _ = std::fs::remove_file(s);
    }
    let accel = match backend {
        Backend::Drydock => Accel::Kvm,
        Backend::Qemu(accel) => accel,
    };
    // drydock's VMM resets through the ACPI reset register; QEMU's microvm
    // by triple fault.
    let reboot = if backend == Backend::Drydock {
        "a"
    } else {
        "t"
    };
    // The platform's part; the boot entry's APPEND (`quiet
    // cryptomgr.notests` in drydock's images) comes last.
    let mut cmdline = format!(
        "console=ttyS0 root=serial:{} reboot={reboot} panic=-1 sysrq_always_enabled",
        inst.root_volume
    );
    if backend == Backend::Drydock {
        // drydock's i8042 has no keyboard or mouse behind it: a kernel that
        // probes it (one without ACPI) skips the mouse port and keyboard
        // control instead of waiting for answers (as with Firecracker).
        cmdline.push_str(" i8042.noaux i8042.nomux i8042.dumbkbd");
    }
    if backend == Backend::Drydock && itype.generation == DeviceGeneration::Mmio {
        // No PCI bus on the old generation: do not probe for one.
        cmdline.push_str(" pci=off");
    }
    if accel == Accel::Tcg {
        cmdline = format!("{cmdline} {}", tcg_clock_params());
    }
    if !boot_plan.append.is_empty() {
        cmdline = format!("{cmdline} {}", boot_plan.append);
    }
    let spec = VmSpec {
        name: id.clone(),
        vcpus: itype.vcpus,
        memory_mib: itype.memory_mib,
        generation: itype.generation,
        accel,
        // From the host's boot cache: the uncompressed ELF (PVH entry)
        // of the volume's kernel when it has one, its initrd.
        kernel: boot_plan.kernel.clone(),
        initramfs: boot_plan.initrd.clone(),
        cmdline,
        virtio_mmio_cmdline: boot_plan.virtio_mmio_cmdline,
        disks,
        control_socket: control_socket.clone(),
        event_socket: event_socket.clone(),
        // drydock's VMM attaches (while the VM runs) only files in here.
        volumes_dir: Some(absolute(&data_dir.join("volumes"))),
        // The host decides (the operator's DRYDOCK_VMM_SECCOMP=off turns
        // it off), and the spec file shows it.
        seccomp: crate::backend::seccomp_from_env(),
    };
    // Appended to, never truncated: the log of a VMM that crashed is the
    // evidence the next start must not erase.
    let vmm_log = dir.join("vmm.log");
    let mut vmm_err = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&vmm_log)
        .map_err(|e| HostError::io("open", &vmm_log, e))?;
    let _ = writeln!(
        vmm_err,
        "drydock: start at {}, backend {}",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
        backend.name()
    );
    let mut cmd = match backend {
        Backend::Drydock => {
            let spec_path = dir.join("vm-spec.json");
            let text = serde_json::to_vec_pretty(&spec).expect("a VM spec serializes");
            std::fs::write(&spec_path, text).map_err(|e| HostError::io("write", &spec_path, e))?;
            let exe = &programs.drydock_vmm;
            if !exe.is_file() {
                return Err(HostError::Vmm(format!(
                    "drydock's VMM {} is missing: build it (`cargo build`, which builds \
                     drydock-vmm beside drydock) or name it with DRYDOCK_VMM",
                    exe.display()
                )));
            }
            let mut cmd = std::process::Command::new(exe);
            cmd.arg("--spec").arg(&spec_path);
            cmd
        }
        Backend::Qemu(_) => qemu::command(&spec),
    };
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(vmm_err);
    // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag on the child; it is
    // async-signal-safe and touches no memory of the parent.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    tracing::info!(instance = %id, "starting VMM: {:?}", cmd);
    let mut child = cmd.spawn().map_err(|e| {
        HostError::Vmm(format!(
            "cannot start the {} VMM ({:?}): {e}",
            backend.name(),
            cmd.get_program()
        ))
    })?;
    let boot = store.count_boot(id)?;
    let log_path = console_log_path(&dir, boot);
    let log =
        std::fs::File::create(&log_path).map_err(|e| HostError::io("create", &log_path, e))?;
    let shared = Arc::new(Shared {
        data_dir: data_dir.to_path_buf(),
        id: id.clone(),
        dir: dir.clone(),
        console: Arc::new(ConsoleHub::new(
            log,
            log_path.clone(),
            boot,
            child.stdin.take(),
        )),
        control: Mutex::new(None),
        stop_reason: Mutex::new(None),
        exited: AtomicBool::new(false),
        pauses: std::sync::atomic::AtomicU64::new(0),
        vmm_pid: child.id(),
        reaped: Mutex::new(false),
        guest_shutdown: AtomicBool::new(false),
        generation: itype.generation,
        backend,
        end_reason: Mutex::new(None),
        hotplugged: Mutex::new(plugged_at_start),
        boot_volumes,
        deleted_devices: (
            Mutex::new(std::collections::HashSet::new()),
            std::sync::Condvar::new(),
        ),
        boot_plan: boot_plan.clone(),
        root_volume: root_path.clone(),
        restart: Mutex::new(None),
    });

    shared.console.output(boot_plan.console.as_bytes());
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let pump = {
        let shared = shared.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                shared.console.output(&buf[..n]);
            }
        })
    };
    match QmpClient::connect(&control_socket, Duration::from_secs(20)) {
        Ok(c) => {
            *shared.control.lock().unwrap() = Some(c);
            // QEMU creates its QMP sockets itself (with the umask's mode)
            // and cannot check peers: only this account may connect. Its
            // monitor serves one client at a time, and this supervisor
            // holds both connections for the life of the VM.
            for s in [&control_socket, &event_socket] {
                if let Err(e) = std::fs::set_permissions(s, std::fs::Permissions::from_mode(0o600))
                {
                    tracing::debug!("cannot narrow {}: {e}", s.display());
                }
            }
        }
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(HostError::Vmm(format!(
                "the VMM did not open its control socket: {e}; see {}",
                vmm_log.display()
            )));
        }
    }
    let event_reader = {
        let shared = shared.clone();
        std::thread::spawn(move || {
            let Ok(mut events) = QmpClient::connect(&event_socket, Duration::from_secs(20)) else {
                return;
            };
            // Events come whenever the VM does something: no read deadline.
            let _ = events.set_read_timeout(None);
            while let Ok(msg) = events.read_message() {
                match msg.get("event").and_then(|e| e.as_str()) {
                    Some("RESET") => {
                        if shared.reboot_from_volume() {
                            continue;
                        }
                        if let Err(e) = shared.new_boot() {
                            tracing::error!("cannot start a new console log: {e}");
                        }
                    }
                    Some("DEVICE_DELETED") => {
                        if let Some(dev) = msg["data"]["device"].as_str() {
                            let (set, cond) = &shared.deleted_devices;
                            set.lock().unwrap().insert(dev.to_string());
                            cond.notify_all();
                        }
                    }
                    Some("SHUTDOWN") => {
                        let guest = msg["data"]["guest"].as_bool().unwrap_or(false);
                        shared.guest_shutdown.store(guest, Ordering::SeqCst);
                        if let Some(reason) = msg["data"]["reason"].as_str() {
                            *shared.end_reason.lock().unwrap() = Some(reason.to_string());
                        }
                    }
                    _ => {}
                }
            }
        })
    };
    // The console and control sockets: the owner, root and the sharing
    // group, each connection checked against its peer's credentials.
    let console_path = dir.join("console.sock");
    let console_listener = drydock_runtime::private::listen(
        &console_path,
        drydock_runtime::private::shared_socket_mode(),
    )
    .map_err(|e| HostError::io("listen on", &console_path, e))?;
    {
        let hub = shared.console.clone();
        std::thread::spawn(move || hub.serve(console_listener));
    }
    let control_path = dir.join("control.sock");
    let listener = drydock_runtime::private::listen(
        &control_path,
        drydock_runtime::private::shared_socket_mode(),
    )
    .map_err(|e| HostError::io("listen on", &control_path, e))?;
    {
        let shared = shared.clone();
        std::thread::spawn(move || serve_control(shared, listener));
    }
    HostStore::open(data_dir)?.set_state(id, InstanceState::Running, "")?;

    let status = {
        // Wait without reaping, then reap under the lock `kill_vmm` takes.
        let mut info: libc::siginfo_t = unsafe_zeroed_siginfo();
        // SAFETY: waitid on our own child with WNOWAIT leaves it unreaped;
        // `info` is a valid, writable siginfo_t.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                child.id() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        let mut reaped = shared.reaped.lock().unwrap_or_else(|e| e.into_inner());
        if rc != 0 {
            tracing::warn!("waitid: {}", std::io::Error::last_os_error());
        }
        let status = child.wait().map_err(|e| HostError::Vmm(e.to_string()))?;
        *reaped = true;
        status
    };
    // The VMM's last events (why it ended) arrive before its socket closes.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while !event_reader.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(locks);
    shared.exited.store(true, Ordering::SeqCst);
    let _ = pump.join();
    let _ = std::fs::remove_file(dir.join("control.sock"));
    let _ = std::fs::remove_file(dir.join("console.sock"));
    let requested = shared.stop_reason.lock().unwrap().clone();
    if requested.is_none() {
        if let Some(why) = shared.restart.lock().unwrap().take() {
            return Ok(Ended::Restart(why));
        }
    }
    Ok(Ended::Stopped(match requested {
        Some(reason) => reason,
        None if status.success() && shared.guest_shutdown.load(Ordering::SeqCst) => {
            "guest powered off".to_string()
        }
        None if status.success() => "VMM exited".to_string(),
        None => {
            let said = shared.end_reason.lock().unwrap().clone();
            format!(
                "VMM exited unexpectedly ({status}{}); see {}",
                said.map(|r| format!(": {r}")).unwrap_or_default(),
                vmm_log.display()
            )
        }
    }))
}
