//! The control side of a running machine: state shared by the run loop,
//! the vCPU threads and the control socket — status, pause/resume, stop,
//! reboot, serial input and break, hot attach/detach of disks.

/// The most console input queued for the guest (bytes).
pub const MAX_INPUT_QUEUE: usize = 64 * 1024;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;

use super::{ConsoleSink, MachineConfig, MachineDisk, MachineError, MachineEvent, Serial};
use crate::devices::legacy::serial::SerialDevice;
use crate::devices::virtio::net::NetMetrics;
use crate::devices::virtio::{BlockDevice, NetDevice};
use crate::vstate::VmError;

/// State shared between the run loop, the vCPU threads and the control
/// socket.
pub struct MachineHandle {
    pub(super) config: MachineConfig,
    pub(super) serial: Arc<Mutex<Serial>>,
    /// The virtio devices of the current boot (boot disks, then slots).
    pub(super) devices: Mutex<Vec<Arc<Mutex<dyn BlockDevice>>>>,
    /// The network cards of the current boot.
    pub(super) cards: Mutex<Vec<Arc<Mutex<dyn NetDevice>>>>,
    pub(super) stop_requested: AtomicBool,
    pub(super) reboot_requested: AtomicBool,
    pub(super) paused: (Mutex<bool>, Condvar),
    pub(super) parked: AtomicU32,
    pub(super) running_vcpus: AtomicU32,
    /// Where each vCPU of the current boot is (in the guest or an exit).
    pub(super) vcpu_progress: Mutex<Vec<Arc<crate::vstate::vcpu::VcpuProgress>>>,
    pub(super) vcpu_threads: Mutex<Vec<libc::pthread_t>>,
    /// A vCPU ended this boot: the others must stop too.
    pub(super) boot_ending: AtomicBool,
    pub(super) boots: AtomicU32,
    pub exits: AtomicU64,
    /// When vCPU 0 first entered the guest (µs since the Unix epoch).
    pub first_entry_unix_us: AtomicU64,
    pub(super) events: Mutex<Vec<mpsc::Sender<MachineEvent>>>,
    pub(super) input: Mutex<std::collections::VecDeque<u8>>,
    // (bounded by MAX_INPUT_QUEUE)
    pub(super) input_ready: Condvar,
}

/// Status for `status` on the control socket.
#[derive(Debug, serde::Serialize)]
pub struct MachineStatus {
    pub state: &'static str,
    pub boots: u32,
    pub vcpus: u8,
    pub memory_mib: u32,
    pub exits: u64,
    /// vCPU threads of this boot still running.
    pub vcpus_running: u32,
    /// vCPUs held up in the VMM: handling one exit for longer than
    /// [`HELD_AFTER`] (a device that does not return). Empty when all
    /// make progress.
    pub held_vcpus: Vec<HeldVcpu>,
    /// When vCPU 0 first entered the guest (µs since the Unix epoch).
    pub first_entry_unix_us: u64,
    pub disks: Vec<DiskStatus>,
    /// Network cards (this boot's traffic).
    pub nics: Vec<NicStatus>,
}

/// An exit handled for longer than this holds its vCPU up.
pub const HELD_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug, serde::Serialize)]
pub struct HeldVcpu {
    pub vcpu: u8,
    /// How long it has been in its current exit.
    pub in_exit_ms: u64,
}

#[derive(Debug, serde::Serialize)]
pub struct NicStatus {
    pub mac: String,
    #[serde(flatten)]
    pub metrics: NetMetrics,
}

#[derive(Debug, serde::Serialize)]
pub struct DiskStatus {
    pub slot: usize,
    pub serial: String,
    pub path: Option<PathBuf>,
    pub capacity_bytes: u64,
    pub hotplug: bool,
    pub reads: u64,
    pub writes: u64,
}

/// The result of detaching a disk.
#[derive(Debug, serde::Serialize)]
pub struct Detached {
    pub serial: String,
    pub path: PathBuf,
    /// The ext file system on it said "mounted" when it was taken away:
    /// the guest was still using it.
    pub was_mounted: bool,
}

pub(super) extern "C" fn kick_handler(
    _: libc::c_int,
    _: *mut libc::siginfo_t,
    _: *mut libc::c_void,
) {
}

pub(super) fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN() + 1
}

impl MachineHandle {
    pub(super) fn new(
        config: MachineConfig,
        console: ConsoleSink,
    ) -> Result<Arc<Self>, MachineError> {
        let serial_irq = EventFd::new(libc::EFD_NONBLOCK)
            .map_err(|e| VmError::Setup(format!("serial interrupt: {e}")))?;
        Ok(Arc::new(Self {
            config,
            serial: Arc::new(Mutex::new(SerialDevice::new(serial_irq, console))),
            devices: Mutex::new(Vec::new()),
            cards: Mutex::new(Vec::new()),
            stop_requested: AtomicBool::new(false),
            reboot_requested: AtomicBool::new(false),
            paused: (Mutex::new(false), Condvar::new()),
            parked: AtomicU32::new(0),
            running_vcpus: AtomicU32::new(0),
            vcpu_progress: Mutex::new(Vec::new()),
            vcpu_threads: Mutex::new(Vec::new()),
            boot_ending: AtomicBool::new(false),
            boots: AtomicU32::new(0),
            exits: AtomicU64::new(0),
            first_entry_unix_us: AtomicU64::new(0),
            events: Mutex::new(Vec::new()),
            input: Mutex::new(Default::default()),
            input_ready: Condvar::new(),
        }))
    }

    /// Receives every event from now on.
    pub fn subscribe(&self) -> mpsc::Receiver<MachineEvent> {
        let (tx, rx) = mpsc::channel();
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(tx);
        rx
    }

    pub(super) fn emit(&self, event: MachineEvent) {
        tracing::info!(?event, "machine event");
        self.events
            .lock()
            .unwrap()
            .retain(|tx| tx.send(event.clone()).is_ok());
    }

    /// Kicks every vCPU out of KVM_RUN until they notice.
    pub(super) fn kick_all(&self) {
        for t in self
            .vcpu_threads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            // The thread ids belong to vCPU threads of this boot, which are
            // joined only after `vcpu_threads` is cleared, and the signal
            // has a no-op handler installed.
            // SAFETY: see above.
            unsafe {
                libc::pthread_kill(*t, kick_signal());
            }
        }
    }

    /// Stops the VM (the run loop returns `Stopped`).
    pub fn stop(&self) {
        self.stop_requested.store(true, Ordering::SeqCst);
        self.resume();
        self.kick_all();
    }

    /// Resets the guest (a new boot of the same machine).
    pub fn reboot(&self) {
        self.reboot_requested.store(true, Ordering::SeqCst);
        self.resume();
        self.kick_all();
    }

    /// Pauses every vCPU; returns once they are parked (or after 5 s).
    pub fn pause(&self) -> Result<(), String> {
        *self
            .paused
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let running = self.running_vcpus.load(Ordering::SeqCst);
            if self.parked.load(Ordering::SeqCst) >= running {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("the vCPUs did not stop within 5 s".into());
            }
            self.kick_all();
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn resume(&self) {
        *self
            .paused
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = false;
        self.paused.1.notify_all();
    }

    pub fn is_paused(&self) -> bool {
        *self
            .paused
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues bytes for the guest's serial input. The queue holds at most
    /// [`MAX_INPUT_QUEUE`] bytes: beyond it the caller waits (the console
    /// reader then stops reading stdin, and the pipe pushes back on the
    /// supervisor, whose own queue is bounded) up to `wait`, and the bytes
    /// that did not fit are dropped; returns how many were queued.
    pub fn console_input_within(&self, bytes: &[u8], wait: Duration) -> usize {
        let deadline = Instant::now() + wait;
        let mut queued = 0;
        let mut q = self.input.lock().unwrap_or_else(|e| e.into_inner());
        while queued < bytes.len() {
            let room = MAX_INPUT_QUEUE.saturating_sub(q.len());
            if room == 0 {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                q = self
                    .input_ready
                    .wait_timeout(q, left.min(Duration::from_millis(100)))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                continue;
            }
            let n = room.min(bytes.len() - queued);
            q.extend(&bytes[queued..queued + n]);
            queued += n;
            self.input_ready.notify_all();
        }
        queued
    }

    /// Queues bytes for the guest's serial input, waiting while the queue
    /// is full (see [`Self::console_input_within`]).
    pub fn console_input(&self, bytes: &[u8]) {
        let n = self.console_input_within(bytes, Duration::from_secs(3600));
        if n < bytes.len() {
            tracing::warn!("{} bytes of console input dropped", bytes.len() - n);
        }
    }

    /// Sends a serial break (for magic SysRq), waiting for the FIFO to drain.
    pub fn send_break(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            if self
                .serial
                .lock()
                .unwrap()
                .send_break()
                .map_err(|e| e.to_string())?
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("the guest is not reading its serial input".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn status(&self) -> MachineStatus {
        let boot_disks = self.config.disks.len();
        let disks = self
            .devices
            .lock()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(slot, d)| {
                let mut d = d.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                DiskStatus {
                    slot,
                    serial: d.block().serial(),
                    path: d.block().path().map(Path::to_path_buf),
                    capacity_bytes: d.block().capacity_sectors() * 512,
                    hotplug: slot >= boot_disks,
                    reads: d.block().metrics.reads,
                    writes: d.block().metrics.writes,
                }
            })
            .collect();
        let nics = self
            .cards
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|c| {
                let c = c.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let m = c.net().mac();
                NicStatus {
                    mac: format!(
                        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                        m[0], m[1], m[2], m[3], m[4], m[5]
                    ),
                    metrics: c.net().metrics.clone(),
                }
            })
            .collect();
        MachineStatus {
            state: if self.is_paused() {
                "paused"
            } else {
                "running"
            },
            boots: self.boots.load(Ordering::SeqCst),
            vcpus: self.config.vcpus,
            memory_mib: self.config.memory_mib,
            exits: self.exits.load(Ordering::SeqCst),
            vcpus_running: self.running_vcpus.load(Ordering::SeqCst),
            held_vcpus: self
                .vcpu_progress
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .enumerate()
                .filter_map(|(id, p)| {
                    let held = p.in_exit_for().filter(|d| *d > HELD_AFTER)?;
                    Some(HeldVcpu {
                        vcpu: id as u8,
                        in_exit_ms: held.as_millis() as u64,
                    })
                })
                .collect(),
            first_entry_unix_us: self.first_entry_unix_us.load(Ordering::SeqCst),
            disks,
            nics,
        }
    }

    /// Puts a disk, already opened as `file` (readable, and writable
    /// unless `disk.read_only`), into the first empty hot-plug slot; the
    /// guest sees it appear. Returns the slot.
    pub fn attach_disk(&self, disk: &MachineDisk, file: std::fs::File) -> Result<usize, String> {
        let devices = self
            .devices
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if devices.iter().any(|d| {
            d.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .block()
                .serial()
                == disk.serial
        }) {
            return Err(format!("a disk with serial {} is attached", disk.serial));
        }
        let boot_disks = self.config.disks.len();
        for (slot, dev) in devices.iter().enumerate().skip(boot_disks) {
            let mut d = dev
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if d.block().path().is_none() {
                d.block()
                    .insert_file(file, &disk.path, disk.read_only, &disk.serial)
                    .map_err(|e| format!("cannot open {}: {e}", disk.path.display()))?;
                d.config_changed();
                return Ok(slot);
            }
        }
        Err(format!(
            "no free hot-plug slot ({} in use)",
            self.config.hotplug_slots
        ))
    }

    /// Takes the disk with `serial` away from the guest.
    pub fn detach_disk(&self, serial: &str) -> Result<Detached, String> {
        let devices = self
            .devices
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for dev in devices.iter() {
            let mut d = dev
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if d.block().path().is_some() && d.block().serial() == serial {
                let path = d.block().path().map(Path::to_path_buf).unwrap_or_default();
                let was_mounted = d.block().ext_fs_mounted().unwrap_or(false);
                d.block().eject();
                d.config_changed();
                return Ok(Detached {
                    serial: serial.to_string(),
                    path,
                    was_mounted,
                });
            }
        }
        Err(format!("no disk with serial {serial} is attached"))
    }
}
