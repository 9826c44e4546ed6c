//! A running VM as its instance process sees it: the VMM's control
//! connection, the console hub, the stop and pause state, what the VM was
//! started with; and what each control command does to it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use super::command::ControlCommand;
use super::console_log_path;
use super::locks::VolumeLock;
use crate::backend::qmp::QmpClient;
use crate::backend::{Backend, DeviceGeneration};
use crate::console_hub::ConsoleHub;
use crate::store::{HostStore, InstanceState};
use crate::HostError;

/// How long a graceful stop may take before the VMM is stopped hard.
const GRACEFUL_STOP: Duration = Duration::from_secs(10);

/// How long the VMM has to end after it is told to stop before it is
/// killed (SIGKILL): a stop never depends on the VMM answering.
const QUIT_GRACE: Duration = Duration::from_secs(3);

/// The longest a VM stays paused for a copy whose command died.
const PAUSE_LIMIT: Duration = Duration::from_secs(600);

pub(super) struct Shared {
    pub(super) data_dir: PathBuf,
    pub(super) id: String,
    pub(super) dir: PathBuf,
    pub(super) console: Arc<ConsoleHub>,
    pub(super) control: Mutex<Option<QmpClient>>,
    pub(super) stop_reason: Mutex<Option<String>>,
    pub(super) exited: AtomicBool,
    /// Counts pauses and resumes (a pause's watchdog acts only if nothing
    /// happened since).
    pub(super) pauses: std::sync::atomic::AtomicU64,
    /// The VMM process, and whether it has been reaped (its pid may then
    /// belong to another process: never signalled after that).
    pub(super) vmm_pid: u32,
    pub(super) reaped: Mutex<bool>,
    pub(super) guest_shutdown: AtomicBool,
    pub(super) generation: DeviceGeneration,
    pub(super) backend: Backend,
    /// Why the VMM said the VM ended (its SHUTDOWN event).
    pub(super) end_reason: Mutex<Option<String>>,
    /// Hot-plugged volumes: volume id -> (port slot, lock).
    pub(super) hotplugged: Mutex<std::collections::HashMap<String, (u32, VolumeLock)>>,
    /// Volumes the VM was started with (they cannot be hot-unplugged).
    pub(super) boot_volumes: std::collections::HashSet<String>,
    /// Network interfaces the VM was started with (neither).
    pub(super) boot_nics: std::collections::HashSet<String>,
    /// Hot-plugged network interfaces: interface id -> port slot.
    pub(super) hot_nics: Mutex<std::collections::HashMap<String, u32>>,
    pub(super) deleted_devices: (Mutex<std::collections::HashSet<String>>, std::sync::Condvar),
    /// What this VMM boots, read from the root volume at the start.
    pub(super) boot_plan: crate::boot_plan::BootPlan,
    pub(super) root_volume: PathBuf,
    /// Set when a guest reset found other boot files on the root volume.
    pub(super) restart: Mutex<Option<String>>,
    /// When the status query in flight was sent ([`Shared::vm_health`]).
    pub(super) probe: Mutex<Option<std::time::Instant>>,
}

impl Shared {
    pub(super) fn store(&self) -> Result<HostStore, HostError> {
        HostStore::open(&self.data_dir)
    }

    pub(super) fn qmp(
        &self,
        command: &str,
        args: serde_json::Value,
    ) -> Result<serde_json::Value, HostError> {
        let mut guard = self.control.lock().unwrap();
        let client = guard
            .as_mut()
            .ok_or_else(|| HostError::Vmm("the VMM control connection is not ready".into()))?;
        client
            .execute(command, args)
            .map_err(|e| HostError::Vmm(e.to_string()))
    }

    /// A QMP command with a file descriptor passed along (SCM_RIGHTS).
    pub(super) fn qmp_with_fd(
        &self,
        command: &str,
        args: serde_json::Value,
        fd: std::os::fd::BorrowedFd<'_>,
    ) -> Result<serde_json::Value, HostError> {
        let mut guard = self.control.lock().unwrap();
        let client = guard
            .as_mut()
            .ok_or_else(|| HostError::Vmm("the VMM control connection is not ready".into()))?;
        client
            .execute_with_fd(command, args, fd)
            .map_err(|e| HostError::Vmm(e.to_string()))
    }

    /// Kills the VMM process (SIGKILL) unless it has already ended.
    pub(super) fn kill_vmm(&self) {
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
    pub(super) fn quit_or_kill(self: &Arc<Self>) {
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
    pub(super) fn vmm_resume(&self) -> Result<serde_json::Value, HostError> {
        match self.backend {
            Backend::Drydock => self.qmp("resume", json!({})),
            Backend::Qemu(_) => self.qmp("cont", json!({})),
        }
    }

    /// Ends the VMM at once.
    pub(super) fn vmm_quit(&self) -> Result<serde_json::Value, HostError> {
        match self.backend {
            Backend::Drydock => self.qmp("stop", json!({})),
            Backend::Qemu(_) => self.qmp("quit", json!({})),
        }
    }

    /// Resets the VM.
    pub(super) fn vmm_reset(&self) -> Result<serde_json::Value, HostError> {
        match self.backend {
            Backend::Drydock => self.qmp("reboot", json!({})),
            Backend::Qemu(_) => self.qmp("system_reset", json!({})),
        }
    }

    /// A break condition on the serial line.
    pub(super) fn vmm_break(&self) -> Result<serde_json::Value, HostError> {
        match self.backend {
            Backend::Drydock => self.qmp("send-break", json!({})),
            Backend::Qemu(_) => self.qmp("chardev-send-break", json!({ "id": "console" })),
        }
    }

    /// Sends a magic SysRq key over the serial line (break, then the key).
    pub(super) fn sysrq(&self, key: u8) -> Result<(), HostError> {
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
    pub(super) fn reboot_from_volume(self: &Arc<Self>) -> bool {
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

    pub(super) fn new_boot(&self) -> Result<(), HostError> {
        let boot = self.store()?.count_boot(&self.id)?;
        let path = console_log_path(&self.dir, boot);
        let file = std::fs::File::create(&path).map_err(|e| HostError::io("create", &path, e))?;
        self.console.new_boot(boot, file, path);
        Ok(())
    }

    pub(super) fn handle(self: &Arc<Self>, command: ControlCommand) -> Result<String, HostError> {
        match command {
            ControlCommand::Stop => {
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
            ControlCommand::StopForce => {
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
            ControlCommand::Reboot => {
                for key in [b's', b'u'] {
                    self.sysrq(key)?;
                }
                self.vmm_reset()?;
                Ok("rebooting".into())
            }
            ControlCommand::Status => Ok(format!(
                "running pid {} backend {}",
                std::process::id(),
                self.backend.name()
            )),
            ControlCommand::Health => {
                Ok(serde_json::to_string(&self.vm_health()?).expect("a health report serializes"))
            }
            ControlCommand::Tail => {
                let text = String::from_utf8_lossy(&self.console.tail()).into_owned();
                Ok(serde_json::to_string(&text).expect("a string serializes"))
            }
            ControlCommand::Sysrq(key) => {
                self.sysrq(key)?;
                Ok(format!("sysrq {} sent", key as char))
            }
            ControlCommand::Break => {
                self.vmm_break()?;
                Ok("break sent".into())
            }
            ControlCommand::Pause => {
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
            ControlCommand::Resume => {
                self.pauses.fetch_add(1, Ordering::SeqCst);
                self.vmm_resume()?;
                tracing::info!(instance = %self.id, "resumed");
                Ok("resumed".into())
            }
            ControlCommand::Attach(vol) => self.hot_attach(&vol),
            ControlCommand::Detach(vol) => self.hot_detach(&vol),
            ControlCommand::AttachNic(eni) => self.hot_attach_nic(&eni),
            ControlCommand::DetachNic(eni) => self.hot_detach_nic(&eni),
        }
    }
}
