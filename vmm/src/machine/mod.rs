//! drydock's own microVM: one Linux guest on KVM with an 8250 console,
//! ACPI power-off/reset, virtio-mmio disks (boot disks plus empty slots
//! for hot attach) described in the DSDT, 1..N vCPUs, and reboots that
//! rebuild the VM in place.
//!
//! [`Machine::run`] drives boots until the guest powers off or the VMM is
//! told to stop; [`MachineHandle`] is what the control socket
//! ([`control`]) uses while it runs: status, pause/resume, stop, reboot,
//! break, attach/detach disk. Every boot is reported as an event.

pub mod control;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;

use crate::arch::{acpi, boot, layout, regs};
use crate::backend::DeviceGeneration;
use crate::devices::bus::{PioBus, SharedPio};
use crate::devices::legacy::i8042::{I8042, I8042_BASE};
use crate::devices::legacy::power::{PowerControl, POWER_BASE, POWER_LEN};
use crate::devices::legacy::serial::{SerialDevice, COM1};
use crate::devices::pci::{HostBridge, PciBus, PciConfigPorts, PciFunction};
use crate::devices::virtio::block::Block;
use crate::devices::virtio::mmio::{MmioBlock, MMIO_WINDOW};
use crate::devices::virtio::pci::{PciBlock, BAR0_SIZE};
use crate::devices::virtio::BlockDevice;
use crate::vstate::vcpu::{ExitReason, MmioHandler, Vcpu};
use crate::vstate::vm::Vm;
use crate::vstate::VmError;

/// A disk given to the guest at boot.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct MachineDisk {
    pub path: PathBuf,
    pub serial: String,
    pub read_only: bool,
}

/// What to boot.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct MachineConfig {
    pub vcpus: u8,
    pub memory_mib: u32,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub disks: Vec<MachineDisk>,
    /// Empty disk slots for hot attach.
    pub hotplug_slots: u32,
    /// How disks reach the guest: virtio-mmio or virtio-pci.
    #[serde(default = "mmio_generation")]
    pub generation: DeviceGeneration,
}

fn mmio_generation() -> DeviceGeneration {
    DeviceGeneration::Mmio
}

/// How the VM ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MachineEnd {
    /// The guest powered off (ACPI S5).
    GuestPowerOff,
    /// The VMM was told to stop.
    Stopped,
    /// KVM could not go on; the registers at the time.
    InternalError { detail: String },
}

/// Something the control layer is told about.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum MachineEvent {
    /// A boot started (number, and why the previous one ended).
    Boot { number: u32, cause: String },
    /// The VM ended.
    End { end: MachineEnd },
}

#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    #[error("{0}")]
    Invalid(String),
    #[error("disk {path}: {source}")]
    Disk {
        path: String,
        source: std::io::Error,
    },
}

/// Where the guest's console output goes.
pub type ConsoleSink = Box<dyn Write + Send>;

type Serial = SerialDevice<ConsoleSink>;

/// What a vCPU thread tells the machine.
enum VcpuReport {
    Ended(u8, Result<ExitReason, VmError>),
}

/// State shared between the run loop, the vCPU threads and the control
/// socket.
pub struct MachineHandle {
    config: MachineConfig,
    serial: Arc<Mutex<Serial>>,
    /// The virtio devices of the current boot (boot disks, then slots).
    devices: Mutex<Vec<Arc<Mutex<dyn BlockDevice>>>>,
    stop_requested: AtomicBool,
    reboot_requested: AtomicBool,
    paused: (Mutex<bool>, Condvar),
    parked: AtomicU32,
    running_vcpus: AtomicU32,
    vcpu_threads: Mutex<Vec<libc::pthread_t>>,
    /// A vCPU ended this boot: the others must stop too.
    boot_ending: AtomicBool,
    boots: AtomicU32,
    pub exits: AtomicU64,
    /// When vCPU 0 first entered the guest (µs since the Unix epoch).
    pub first_entry_unix_us: AtomicU64,
    events: Mutex<Vec<mpsc::Sender<MachineEvent>>>,
    input: Mutex<std::collections::VecDeque<u8>>,
    input_ready: Condvar,
}

/// Status for `status` on the control socket.
#[derive(Debug, serde::Serialize)]
pub struct MachineStatus {
    pub state: &'static str,
    pub boots: u32,
    pub vcpus: u8,
    pub memory_mib: u32,
    pub exits: u64,
    /// When vCPU 0 first entered the guest (µs since the Unix epoch).
    pub first_entry_unix_us: u64,
    pub disks: Vec<DiskStatus>,
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

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN() + 1
}

impl MachineHandle {
    fn new(config: MachineConfig, console: ConsoleSink) -> Result<Arc<Self>, MachineError> {
        let serial_irq = EventFd::new(libc::EFD_NONBLOCK)
            .map_err(|e| VmError::Setup(format!("serial interrupt: {e}")))?;
        Ok(Arc::new(Self {
            config,
            serial: Arc::new(Mutex::new(SerialDevice::new(serial_irq, console))),
            devices: Mutex::new(Vec::new()),
            stop_requested: AtomicBool::new(false),
            reboot_requested: AtomicBool::new(false),
            paused: (Mutex::new(false), Condvar::new()),
            parked: AtomicU32::new(0),
            running_vcpus: AtomicU32::new(0),
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
        self.events.lock().unwrap().push(tx);
        rx
    }

    fn emit(&self, event: MachineEvent) {
        tracing::info!(?event, "machine event");
        self.events
            .lock()
            .unwrap()
            .retain(|tx| tx.send(event.clone()).is_ok());
    }

    /// Kicks every vCPU out of KVM_RUN until they notice.
    fn kick_all(&self) {
        for t in self.vcpu_threads.lock().unwrap().iter() {
            // SAFETY: the thread ids belong to vCPU threads of this boot,
            // which are joined only after `vcpu_threads` is cleared; the
            // signal has a no-op handler installed.
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
        *self.paused.0.lock().unwrap() = true;
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
        *self.paused.0.lock().unwrap() = false;
        self.paused.1.notify_all();
    }

    pub fn is_paused(&self) -> bool {
        *self.paused.0.lock().unwrap()
    }

    /// Queues bytes for the guest's serial input.
    pub fn console_input(&self, bytes: &[u8]) {
        self.input.lock().unwrap().extend(bytes);
        self.input_ready.notify_all();
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
                let mut d = d.lock().unwrap();
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
            first_entry_unix_us: self.first_entry_unix_us.load(Ordering::SeqCst),
            disks,
        }
    }

    /// Puts a disk into the first empty hot-plug slot; the guest sees it
    /// appear. Returns the slot.
    pub fn attach_disk(&self, disk: &MachineDisk) -> Result<usize, String> {
        let devices = self.devices.lock().unwrap();
        if devices
            .iter()
            .any(|d| d.lock().unwrap().block().serial() == disk.serial)
        {
            return Err(format!("a disk with serial {} is attached", disk.serial));
        }
        let boot_disks = self.config.disks.len();
        for (slot, dev) in devices.iter().enumerate().skip(boot_disks) {
            let mut d = dev.lock().unwrap();
            if d.block().path().is_none() {
                d.block()
                    .insert(&disk.path, disk.read_only, &disk.serial)
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
        let devices = self.devices.lock().unwrap();
        for dev in devices.iter() {
            let mut d = dev.lock().unwrap();
            if d.block().path().is_some() && d.block().serial() == serial {
                let path = d.block().path().map(Path::to_path_buf).unwrap_or_default();
                let was_mounted = crate::host::extents::ext_fs_mounted(&path)
                    .ok()
                    .flatten()
                    .unwrap_or(false);
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

/// The guest's MMIO space: virtio-mmio windows in order, and PCI BARs.
#[derive(Default, Clone)]
struct GuestMmio {
    virtio: Vec<Arc<Mutex<MmioBlock>>>,
    pci: PciBus,
}

impl GuestMmio {
    fn find(&self, addr: u64) -> Option<(&Arc<Mutex<MmioBlock>>, u64)> {
        let off = addr.checked_sub(layout::VIRTIO_MMIO_START)?;
        let index = (off / MMIO_WINDOW) as usize;
        self.virtio.get(index).map(|d| (d, off % MMIO_WINDOW))
    }
}

impl MmioHandler for GuestMmio {
    fn read(&mut self, addr: u64, data: &mut [u8]) {
        if let Some((d, off)) = self.find(addr) {
            return d.lock().unwrap().read(off, data);
        }
        match self.pci.find_bar(addr) {
            Some((f, off)) => f.lock().unwrap().bar_read(off, data),
            None => data.fill(0xff),
        }
    }

    fn write(&mut self, addr: u64, data: &[u8]) {
        if let Some((d, off)) = self.find(addr) {
            return d.lock().unwrap().write(off, data);
        }
        if let Some((f, off)) = self.pci.find_bar(addr) {
            f.lock().unwrap().bar_write(off, data)
        }
    }
}

/// The machine: configuration plus the state that lives across boots.
pub struct Machine {
    handle: Arc<MachineHandle>,
    /// Disks between boots (boot disks, then slots).
    blocks: Vec<Block>,
}

impl Machine {
    /// Checks the configuration and opens the disks.
    pub fn new(config: MachineConfig, console: ConsoleSink) -> Result<Self, MachineError> {
        if config.vcpus == 0 || config.vcpus > 32 {
            return Err(MachineError::Invalid(format!(
                "{} vCPUs asked for; choose 1 to 32",
                config.vcpus
            )));
        }
        if config.memory_mib < 32 {
            return Err(MachineError::Invalid(format!(
                "{} MiB of memory is too little for Linux; give at least 32",
                config.memory_mib
            )));
        }
        let devices = config.disks.len() + config.hotplug_slots as usize;
        let max = (layout::LAST_DEVICE_IRQ - layout::FIRST_DEVICE_IRQ + 1) as usize;
        if devices > max {
            return Err(MachineError::Invalid(format!(
                "{devices} disks and slots asked for; at most {max}"
            )));
        }
        let mut blocks = Vec::new();
        for d in &config.disks {
            blocks.push(
                Block::open(&d.path, d.read_only, &d.serial).map_err(|source| {
                    MachineError::Disk {
                        path: d.path.display().to_string(),
                        source,
                    }
                })?,
            );
        }
        for _ in 0..config.hotplug_slots {
            blocks.push(Block::empty_slot());
        }
        // The handler does nothing; it only exists so the signal
        // interrupts KVM_RUN instead of killing the process.
        vmm_sys_util::signal::register_signal_handler(kick_signal(), kick_handler).map_err(
            |e| MachineError::Invalid(format!("cannot install the vCPU kick signal: {e}")),
        )?;
        Ok(Self {
            handle: MachineHandle::new(config, console)?,
            blocks,
        })
    }

    pub fn handle(&self) -> Arc<MachineHandle> {
        self.handle.clone()
    }

    /// Where the virtio devices are (one page each, from the MMIO gap).
    fn mmio_layout(&self) -> Vec<acpi::MmioDeviceInfo> {
        let count = match self.handle.config.generation {
            DeviceGeneration::Mmio => self.blocks.len(),
            DeviceGeneration::Pci => 0,
        };
        (0..count)
            .map(|i| acpi::MmioDeviceInfo {
                addr: layout::VIRTIO_MMIO_START + i as u64 * MMIO_WINDOW,
                len: MMIO_WINDOW as u32,
                irq: layout::FIRST_DEVICE_IRQ + i as u32,
            })
            .collect()
    }

    /// Boots and reboots until the guest powers off or the VMM is stopped.
    pub fn run(&mut self) -> Result<MachineEnd, MachineError> {
        let mut cause = "start".to_string();
        loop {
            let number = self.handle.boots.fetch_add(1, Ordering::SeqCst) + 1;
            self.handle.emit(MachineEvent::Boot {
                number,
                cause: cause.clone(),
            });
            let outcome = self.boot_once();
            let end = match outcome {
                Ok(BootOutcome::Reboot(why)) => {
                    cause = why;
                    continue;
                }
                Ok(BootOutcome::End(end)) => end,
                Err(e) => MachineEnd::InternalError {
                    detail: e.to_string(),
                },
            };
            self.handle.emit(MachineEvent::End { end: end.clone() });
            return Ok(end);
        }
    }

    fn boot_once(&mut self) -> Result<BootOutcome, MachineError> {
        let h = self.handle.clone();
        let cfg = &h.config;
        let vm = Vm::new_for_linux((cfg.memory_mib as usize) << 20)?;
        let (entry, setup_header) = boot::load_kernel(&vm.memory, &cfg.kernel)?;
        let initrd = match &cfg.initrd {
            Some(p) => Some(boot::load_initrd(&vm.memory, p)?),
            None => None,
        };
        let pci = cfg.generation == DeviceGeneration::Pci;
        let rsdp = acpi::write_acpi_tables(&vm.memory, cfg.vcpus, &self.mmio_layout(), pci)?;
        regs::write_boot_tables(&vm.memory)?;
        boot::write_boot_params(&vm.memory, &cfg.cmdline, setup_header, initrd, rsdp)?;
        tracing::debug!(format = ?entry.format, entry = entry.entry.0, "kernel loaded");

        // Interrupts: the UART on IRQ 4, each virtio device on its own.
        let serial_irq = h
            .serial
            .lock()
            .unwrap()
            .interrupt_evt()
            .map_err(|e| VmError::Memory(e.to_string()))?;
        vm.fd
            .register_irqfd(&serial_irq, layout::SERIAL_IRQ)
            .map_err(crate::vstate::kvm_err("register the serial irqfd"))?;
        let vm = Arc::new(vm);
        let mut devices: Vec<Arc<Mutex<dyn BlockDevice>>> = Vec::new();
        let mut guest_mmio = GuestMmio::default();
        match cfg.generation {
            DeviceGeneration::Mmio => {
                for (i, block) in std::mem::take(&mut self.blocks).into_iter().enumerate() {
                    let irq = EventFd::new(libc::EFD_NONBLOCK)
                        .map_err(|e| VmError::Memory(e.to_string()))?;
                    vm.fd
                        .register_irqfd(&irq, layout::FIRST_DEVICE_IRQ + i as u32)
                        .map_err(crate::vstate::kvm_err("register a virtio irqfd"))?;
                    let dev = Arc::new(Mutex::new(MmioBlock::new(block, vm.memory.clone(), irq)));
                    guest_mmio.virtio.push(dev.clone());
                    devices.push(dev);
                }
            }
            DeviceGeneration::Pci => {
                let host: Arc<Mutex<dyn PciFunction>> = Arc::new(Mutex::new(HostBridge::default()));
                guest_mmio.pci.slots.push(host);
                let weak = Arc::downgrade(&vm);
                let msi: crate::devices::virtio::pci::MsiSender =
                    Arc::new(move |addr_lo, addr_hi, data| {
                        if let Some(vm) = weak.upgrade() {
                            let msi = kvm_bindings::kvm_msi {
                                address_lo: addr_lo,
                                address_hi: addr_hi,
                                data,
                                ..Default::default()
                            };
                            if let Err(e) = vm.fd.signal_msi(msi) {
                                tracing::warn!("MSI not delivered: {e}");
                            }
                        }
                    });
                for (i, block) in std::mem::take(&mut self.blocks).into_iter().enumerate() {
                    let bar0 = layout::PCI_MMIO_START + i as u64 * BAR0_SIZE;
                    let dev = Arc::new(Mutex::new(PciBlock::new(
                        block,
                        vm.memory.clone(),
                        msi.clone(),
                        bar0,
                    )));
                    guest_mmio.pci.slots.push(dev.clone());
                    devices.push(dev);
                }
            }
        }
        let pci_ports = Arc::new(Mutex::new(PciConfigPorts::new(guest_mmio.pci.clone())));
        *h.devices.lock().unwrap() = devices.clone();
        let power = Arc::new(Mutex::new(PowerControl::default()));
        let i8042 = Arc::new(Mutex::new(I8042::default()));

        h.reboot_requested.store(false, Ordering::SeqCst);
        h.boot_ending.store(false, Ordering::SeqCst);
        h.parked.store(0, Ordering::SeqCst);
        let (tx, rx) = mpsc::channel::<VcpuReport>();
        let mut threads = Vec::new();
        for id in 0..cfg.vcpus {
            let vcpu = Vcpu::new(&vm, u64::from(id))?;
            vcpu.configure_linux(&vm, id, cfg.vcpus, entry.entry.0)?;
            let mut bus = PioBus::default();
            bus.insert(COM1, 8, Box::new(SharedPio(h.serial.clone())));
            bus.insert(I8042_BASE, 5, Box::new(SharedPio(i8042.clone())));
            bus.insert(POWER_BASE, POWER_LEN, Box::new(SharedPio(power.clone())));
            if pci {
                bus.insert(
                    layout::PCI_CONFIG_PORT,
                    8,
                    Box::new(SharedPio(pci_ports.clone())),
                );
            }
            let mut mmio = guest_mmio.clone();
            let tx = tx.clone();
            let h2 = h.clone();
            let vm2 = vm.clone();
            h.running_vcpus.fetch_add(1, Ordering::SeqCst);
            let t = std::thread::Builder::new()
                .name(format!("vcpu{id}"))
                .spawn(move || {
                    let _vm = vm2;
                    let r = vcpu_loop(&h2, id, vcpu, &mut bus, &mut mmio);
                    h2.running_vcpus.fetch_sub(1, Ordering::SeqCst);
                    let _ = tx.send(VcpuReport::Ended(id, r));
                })
                .map_err(|e| VmError::Setup(format!("cannot start a vCPU thread: {e}")))?;
            h.vcpu_threads.lock().unwrap().push(t.as_pthread_t_compat());
            threads.push(t);
        }
        drop(tx);
        let input = spawn_input_pump(h.clone());

        // The first vCPU to end decides what happens to the machine.
        let VcpuReport::Ended(id, first) = rx
            .recv()
            .map_err(|_| VmError::Setup("every vCPU thread ended without a report".into()))?;
        h.boot_ending.store(true, Ordering::SeqCst);
        h.kick_all();
        let mut kicks = 0;
        for t in threads {
            while !t.is_finished() {
                kicks += 1;
                if kicks % 2 == 0 {
                    h.kick_all();
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            let _ = t.join();
        }
        h.vcpu_threads.lock().unwrap().clear();
        input.store(true, Ordering::SeqCst);
        h.input_ready.notify_all();

        // Disks carry over to the next boot.
        let devices = std::mem::take(&mut *h.devices.lock().unwrap());
        self.blocks = devices
            .into_iter()
            .map(|d| {
                let mut d = d.lock().unwrap();
                std::mem::replace(d.block(), Block::empty_slot())
            })
            .collect();

        let stop = h.stop_requested.load(Ordering::SeqCst);
        let reboot = h.reboot_requested.load(Ordering::SeqCst);
        Ok(match first {
            _ if stop => BootOutcome::End(MachineEnd::Stopped),
            _ if reboot => BootOutcome::Reboot("reboot requested".into()),
            Ok(ExitReason::PowerOff) => BootOutcome::End(MachineEnd::GuestPowerOff),
            Ok(ExitReason::Reset) => BootOutcome::Reboot("guest reset".into()),
            Ok(ExitReason::Shutdown) => BootOutcome::Reboot("triple fault".into()),
            Ok(ExitReason::Halted) => BootOutcome::End(MachineEnd::InternalError {
                detail: format!("vCPU {id} halted with interrupts off"),
            }),
            Ok(ExitReason::InternalError(regs)) => BootOutcome::End(MachineEnd::InternalError {
                detail: format!("vCPU {id}: KVM internal error; {regs}"),
            }),
            Ok(ExitReason::Interrupted) => BootOutcome::End(MachineEnd::InternalError {
                detail: format!("vCPU {id} was interrupted with nothing asked"),
            }),
            Err(e) => BootOutcome::End(MachineEnd::InternalError {
                detail: format!("vCPU {id}: {e}"),
            }),
        })
    }
}

enum BootOutcome {
    Reboot(String),
    End(MachineEnd),
}

trait PthreadId {
    fn as_pthread_t_compat(&self) -> libc::pthread_t;
}

impl<T> PthreadId for std::thread::JoinHandle<T> {
    fn as_pthread_t_compat(&self) -> libc::pthread_t {
        use std::os::unix::thread::JoinHandleExt;
        self.as_pthread_t() as libc::pthread_t
    }
}

/// Runs one vCPU until something ends the boot.
fn vcpu_loop(
    h: &MachineHandle,
    id: u8,
    mut vcpu: Vcpu,
    bus: &mut PioBus,
    mmio: &mut GuestMmio,
) -> Result<ExitReason, VmError> {
    loop {
        if h.stop_requested.load(Ordering::SeqCst)
            || h.reboot_requested.load(Ordering::SeqCst)
            || h.boot_ending.load(Ordering::SeqCst)
        {
            return Ok(ExitReason::Interrupted);
        }
        {
            let mut paused = h.paused.0.lock().unwrap();
            if *paused {
                h.parked.fetch_add(1, Ordering::SeqCst);
                while *paused {
                    paused = h.paused.1.wait(paused).unwrap();
                }
                h.parked.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
        }
        if id == 0 && h.first_entry_unix_us.load(Ordering::SeqCst) == 0 {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(1);
            h.first_entry_unix_us.store(now, Ordering::SeqCst);
        }
        let r = vcpu.run(bus, mmio);
        h.exits.fetch_add(vcpu.exits, Ordering::Relaxed);
        match r {
            Ok(ExitReason::Interrupted) => continue,
            other => return other,
        }
    }
}

/// Feeds queued console input into the UART as its FIFO drains; returns
/// the flag that ends it.
fn spawn_input_pump(h: Arc<MachineHandle>) -> Arc<AtomicBool> {
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    std::thread::spawn(move || loop {
        let mut q = h.input.lock().unwrap();
        while q.is_empty() && !d.load(Ordering::SeqCst) {
            q = h
                .input_ready
                .wait_timeout(q, Duration::from_millis(200))
                .unwrap()
                .0;
        }
        if d.load(Ordering::SeqCst) {
            return;
        }
        let chunk: Vec<u8> = q.iter().copied().take(64).collect();
        drop(q);
        let n = h.serial.lock().unwrap().enqueue_input(&chunk).unwrap_or(0);
        if n > 0 {
            h.input.lock().unwrap().drain(..n);
        } else {
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    done
}
