//! drydock's own microVM: one Linux guest on KVM with an 8250 console,
//! ACPI power-off/reset, virtio disks (boot disks plus empty slots for hot
//! attach) and network cards (over TAPs the host passes open) on
//! virtio-mmio (described in the DSDT or on the command line) or
//! virtio-pci, 1..N vCPUs, and reboots that rebuild the VM in place.
//!
//! [`Machine::run`] drives boots until the guest powers off or the VMM is
//! told to stop; [`MachineHandle`] is what the control socket
//! ([`control`]) uses while it runs: status, pause/resume, stop, reboot,
//! break, attach/detach disk. Every boot is reported as an event.

mod backend_watch;
mod boot_files;
pub mod control;
mod handle;
pub mod seccomp;

use handle::{kick_handler, kick_signal};
pub use handle::{Detached, DiskStatus, MachineHandle, MachineStatus};

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vmm_sys_util::eventfd::EventFd;

use crate::arch::{acpi, boot, layout, mptable, regs};
use crate::devices::bus::{PioBus, SharedPio};
use crate::devices::legacy::i8042::{I8042, I8042_BASE};
use crate::devices::legacy::power::{PowerControl, POWER_BASE, POWER_LEN};
use crate::devices::legacy::serial::{SerialDevice, COM1};
use crate::devices::pci::{HostBridge, PciBus, PciConfigPorts, PciFunction};
use crate::devices::virtio::block::Block;
use crate::devices::virtio::device::BackendInput;
use crate::devices::virtio::mmio::{MmioBlock, MmioNet, MmioRegisters, MMIO_WINDOW};
use crate::devices::virtio::net::Net;
use crate::devices::virtio::pci::{PciBlock, PciNet, BAR0_SIZE};
use crate::devices::virtio::{BlockDevice, NetDevice};
use crate::spec::DeviceGeneration;
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

/// A network card given to the guest: its MAC address and the TAP the
/// VMM inherited as descriptor `tap_fd`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct MachineNic {
    pub mac: [u8; 6],
    pub tap_fd: i32,
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
    /// Network cards, after the disks on the bus.
    #[serde(default)]
    pub nics: Vec<MachineNic>,
    /// How disks reach the guest: virtio-mmio or virtio-pci.
    #[serde(default = "mmio_generation")]
    pub generation: DeviceGeneration,
    /// Announce the virtio-mmio disks on the kernel command line
    /// (`virtio_mmio.device=SIZE@ADDR:IRQ`) instead of in the DSDT, for
    /// kernels built with `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES`.
    #[serde(default)]
    pub virtio_mmio_cmdline: bool,
    /// Seccomp filters per thread kind ([`seccomp`]): the VMM process's
    /// filter before the first boot, the vCPU filter on each vCPU thread.
    #[serde(default = "seccomp_on")]
    pub seccomp: bool,
    /// TEST HOOK ONLY: vCPU 0 makes a system call its filter forbids as
    /// soon as its filter is on, so a test sees the VMM die of it.
    #[serde(default)]
    pub test_hook_forbidden_syscall_in_vcpu: bool,
    /// TEST HOOK ONLY: once vCPU 0 has entered the guest, the main thread
    /// opens the kernel file by path again, which the VMM filter forbids.
    #[serde(default)]
    pub test_hook_open_after_boot: bool,
}

fn seccomp_on() -> bool {
    true
}

fn mmio_generation() -> DeviceGeneration {
    DeviceGeneration::Mmio
}

/// A network card's backend, the card's wake descriptor and its
/// transport: what a backend watcher needs.
type Watched = (
    Arc<std::fs::File>,
    Arc<EventFd>,
    Arc<Mutex<dyn BackendInput>>,
);

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

/// The guest's MMIO space: virtio-mmio windows in order, and PCI BARs.
#[derive(Default, Clone)]
struct GuestMmio {
    virtio: Vec<Arc<Mutex<dyn MmioRegisters>>>,
    pci: PciBus,
}

impl GuestMmio {
    fn find(&self, addr: u64) -> Option<(&Arc<Mutex<dyn MmioRegisters>>, u64)> {
        let off = addr.checked_sub(layout::VIRTIO_MMIO_START)?;
        let index = (off / MMIO_WINDOW) as usize;
        self.virtio.get(index).map(|d| (d, off % MMIO_WINDOW))
    }
}

impl MmioHandler for GuestMmio {
    fn read(&mut self, addr: u64, data: &mut [u8]) {
        if let Some((d, off)) = self.find(addr) {
            return d
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .read(off, data);
        }
        match self.pci.find_bar(addr) {
            Some((f, off)) => f
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .bar_read(off, data),
            None => data.fill(0xff),
        }
    }

    fn write(&mut self, addr: u64, data: &[u8]) {
        if let Some((d, off)) = self.find(addr) {
            return d
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .write(off, data);
        }
        if let Some((f, off)) = self.pci.find_bar(addr) {
            f.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .bar_write(off, data)
        }
    }
}

/// `count` virtio-mmio devices: one page each from the MMIO gap, one IRQ
/// each from the first device IRQ on.
fn mmio_devices(count: usize) -> Vec<acpi::MmioDeviceInfo> {
    (0..count)
        .map(|i| acpi::MmioDeviceInfo {
            addr: layout::VIRTIO_MMIO_START + i as u64 * MMIO_WINDOW,
            len: MMIO_WINDOW as u32,
            irq: layout::FIRST_DEVICE_IRQ + i as u32,
        })
        .collect()
}

/// Where the guest learns of its virtio-mmio devices: the DSDT (returned
/// for the ACPI tables) or the command line (`virtio_mmio.device=`, one per
/// device, in slot order so the guest numbers them as the VMM does).
fn announce_mmio(
    devices: Vec<acpi::MmioDeviceInfo>,
    cmdline: &str,
    on_cmdline: bool,
) -> (Vec<acpi::MmioDeviceInfo>, String) {
    if !on_cmdline {
        return (devices, cmdline.to_string());
    }
    let mut line = cmdline.to_string();
    for d in &devices {
        line.push_str(&format!(
            " virtio_mmio.device={:#x}@{:#x}:{}",
            d.len, d.addr, d.irq
        ));
    }
    (Vec::new(), line)
}

/// The machine: configuration plus the state that lives across boots.
pub struct Machine {
    handle: Arc<MachineHandle>,
    /// Disks between boots (boot disks, then slots).
    blocks: Vec<Block>,
    /// Network cards' TAPs and MAC addresses, kept across boots.
    nics: Vec<(Arc<std::fs::File>, [u8; 6])>,
    /// `/dev/kvm`, kernel and initrd, opened once: every boot reads them
    /// again through these descriptors, never by path.
    files: boot_files::BootFiles,
}

impl Machine {
    /// Checks the configuration and opens everything the machine will use:
    /// `/dev/kvm`, the kernel, the initrd and the disks (after this, the
    /// machine opens no file by path; hot-attached disks come open).
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
        let devices = config.disks.len() + config.hotplug_slots as usize + config.nics.len();
        let max = (layout::LAST_DEVICE_IRQ - layout::FIRST_DEVICE_IRQ + 1) as usize;
        if devices > max {
            return Err(MachineError::Invalid(format!(
                "{devices} disks, slots and network cards asked for; at most {max}"
            )));
        }
        let mut nics = Vec::new();
        for (i, nic) in config.nics.iter().enumerate() {
            if config.nics[..i].iter().any(|n| n.tap_fd == nic.tap_fd) {
                return Err(MachineError::Invalid(format!(
                    "two network cards name TAP descriptor {}: give each its own",
                    nic.tap_fd
                )));
            }
            if nic.mac[0] & 1 != 0 {
                return Err(MachineError::Invalid(format!(
                    "network card {i}: a multicast MAC address cannot be a card's; use a unicast one (like 02:…)"
                )));
            }
            let tap = crate::devices::virtio::tap::inherited_tap(nic.tap_fd)
                .map_err(|e| MachineError::Invalid(format!("network card {i}: {e}")))?;
            nics.push((Arc::new(tap), nic.mac));
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
        let files = boot_files::BootFiles::open(&config.kernel, config.initrd.as_deref())?;
        // The handler does nothing; it only exists so the signal
        // interrupts KVM_RUN instead of killing the process.
        vmm_sys_util::signal::register_signal_handler(kick_signal(), kick_handler).map_err(
            |e| MachineError::Invalid(format!("cannot install the vCPU kick signal: {e}")),
        )?;
        Ok(Self {
            handle: MachineHandle::new(config, console)?,
            blocks,
            nics,
            files,
        })
    }

    pub fn handle(&self) -> Arc<MachineHandle> {
        self.handle.clone()
    }

    /// Where the virtio devices are (one page each, from the MMIO gap).
    fn mmio_layout(&self) -> Vec<acpi::MmioDeviceInfo> {
        let count = match self.handle.config.generation {
            DeviceGeneration::Mmio => self.blocks.len() + self.nics.len(),
            DeviceGeneration::Pci => 0,
        };
        mmio_devices(count)
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
        let vm = Vm::for_linux_with_kvm(self.files.kvm()?, (cfg.memory_mib as usize) << 20)?;
        let (entry, setup_header) = self.files.load_kernel(&vm.memory)?;
        let initrd = self.files.load_initrd(&vm.memory)?;
        let pci = cfg.generation == DeviceGeneration::Pci;
        let (in_dsdt, cmdline) =
            announce_mmio(self.mmio_layout(), &cfg.cmdline, cfg.virtio_mmio_cmdline);
        let rsdp = acpi::write_acpi_tables(&vm.memory, cfg.vcpus, &in_dsdt, pci)?;
        // For kernels without ACPI (their devices come on the command line).
        mptable::write(&vm.memory, cfg.vcpus)?;
        regs::write_boot_tables(&vm.memory)?;
        boot::write_boot_params(&vm.memory, &cmdline, setup_header, initrd, rsdp)?;
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
        let mut cards: Vec<Arc<Mutex<dyn NetDevice>>> = Vec::new();
        // Each card's backend, watched by a thread of its own for frames.
        let mut watched: Vec<Watched> = Vec::new();
        let mut guest_mmio = GuestMmio::default();
        let new_card =
            |tap: &Arc<std::fs::File>, mac: [u8; 6]| -> Result<(Net, Arc<EventFd>), MachineError> {
                let wake = Arc::new(
                    EventFd::new(libc::EFD_NONBLOCK).map_err(|e| VmError::Memory(e.to_string()))?,
                );
                Ok((Net::new(tap.clone(), mac, wake.clone()), wake))
            };
        match cfg.generation {
            DeviceGeneration::Mmio => {
                let irq_for = |i: usize| -> Result<EventFd, MachineError> {
                    let irq = EventFd::new(libc::EFD_NONBLOCK)
                        .map_err(|e| VmError::Memory(e.to_string()))?;
                    vm.fd
                        .register_irqfd(&irq, layout::FIRST_DEVICE_IRQ + i as u32)
                        .map_err(crate::vstate::kvm_err("register a virtio irqfd"))?;
                    Ok(irq)
                };
                for block in std::mem::take(&mut self.blocks) {
                    let irq = irq_for(guest_mmio.virtio.len())?;
                    let dev = Arc::new(Mutex::new(MmioBlock::new(block, vm.memory.clone(), irq)));
                    guest_mmio.virtio.push(dev.clone());
                    devices.push(dev);
                }
                for (tap, mac) in &self.nics {
                    let irq = irq_for(guest_mmio.virtio.len())?;
                    let (net, wake) = new_card(tap, *mac)?;
                    let dev = Arc::new(Mutex::new(MmioNet::new(net, vm.memory.clone(), irq)));
                    guest_mmio.virtio.push(dev.clone());
                    cards.push(dev.clone());
                    watched.push((tap.clone(), wake, dev));
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
                let mut functions = 0u64;
                let mut next_bar0 = || {
                    functions += 1;
                    layout::PCI_MMIO_START + (functions - 1) * BAR0_SIZE
                };
                for block in std::mem::take(&mut self.blocks) {
                    let dev = Arc::new(Mutex::new(PciBlock::new(
                        block,
                        vm.memory.clone(),
                        msi.clone(),
                        next_bar0(),
                    )));
                    guest_mmio.pci.slots.push(dev.clone());
                    devices.push(dev);
                }
                for (tap, mac) in &self.nics {
                    let (net, wake) = new_card(tap, *mac)?;
                    let dev = Arc::new(Mutex::new(PciNet::new(
                        net,
                        vm.memory.clone(),
                        msi.clone(),
                        next_bar0(),
                    )));
                    guest_mmio.pci.slots.push(dev.clone());
                    cards.push(dev.clone());
                    watched.push((tap.clone(), wake, dev));
                }
            }
        }
        let mut watchers = Vec::new();
        for (i, (tap, wake, transport)) in watched.into_iter().enumerate() {
            watchers.push(
                backend_watch::BackendWatcher::spawn(i, tap, wake, transport)
                    .map_err(|e| VmError::Setup(format!("cannot start a network thread: {e}")))?,
            );
        }
        let pci_ports = Arc::new(Mutex::new(PciConfigPorts::new(guest_mmio.pci.clone())));
        *h.devices
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = devices.clone();
        *h.cards
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = cards;
        let power = Arc::new(Mutex::new(PowerControl::default()));
        let i8042 = Arc::new(Mutex::new(I8042::default()));

        h.reboot_requested.store(false, Ordering::SeqCst);
        h.boot_ending.store(false, Ordering::SeqCst);
        h.parked.store(0, Ordering::SeqCst);
        let (tx, rx) = mpsc::channel::<VcpuReport>();
        let mut threads = Vec::new();
        let base = std::time::Instant::now();
        let mut progress = h
            .vcpu_progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        progress.clear();
        for id in 0..cfg.vcpus {
            let mut vcpu = Vcpu::new(&vm, u64::from(id))?;
            let p = Arc::new(crate::vstate::vcpu::VcpuProgress::new(base));
            progress.push(p.clone());
            vcpu.progress = Some(p);
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
            let filter = cfg.seccomp;
            let forbidden_syscall_hook = cfg.test_hook_forbidden_syscall_in_vcpu && id == 0;
            h.running_vcpus.fetch_add(1, Ordering::SeqCst);
            let t = std::thread::Builder::new()
                .name(format!("vcpu{id}"))
                .spawn(move || {
                    let _vm = vm2;
                    if filter {
                        if let Err(e) = seccomp::install(seccomp::ThreadKind::Vcpu) {
                            h2.running_vcpus.fetch_sub(1, Ordering::SeqCst);
                            let _ = tx.send(VcpuReport::Ended(id, Err(VmError::Setup(e))));
                            return;
                        }
                    }
                    if forbidden_syscall_hook {
                        seccomp::test_hook_forbidden_syscall();
                    }
                    // A panic (a device bug a guest found) ends this boot
                    // as an internal error with what panicked, instead of
                    // leaving the guest running with a dead CPU.
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        vcpu_loop(&h2, id, vcpu, &mut bus, &mut mmio)
                    }))
                    .unwrap_or_else(|panic| {
                        let what = panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "a panic".into());
                        tracing::error!("vCPU {id} panicked: {what}");
                        Err(VmError::Setup(format!("panicked: {what}")))
                    });
                    h2.running_vcpus.fetch_sub(1, Ordering::SeqCst);
                    let _ = tx.send(VcpuReport::Ended(id, r));
                })
                .map_err(|e| VmError::Setup(format!("cannot start a vCPU thread: {e}")))?;
            h.vcpu_threads
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(t.as_pthread_t_compat());
            threads.push(t);
        }
        drop(progress);
        drop(tx);
        let input = spawn_input_pump(h.clone());
        if cfg.test_hook_open_after_boot {
            test_hook_open_after_boot(&h);
        }

        // The first vCPU to end decides what happens to the machine. A kick
        // sent just before a vCPU thread re-enters KVM_RUN is lost, and an
        // idle guest may not exit again for a long time: while a stop or
        // reboot is pending, kick again until a vCPU reports.
        let VcpuReport::Ended(id, first) = loop {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(report) => break report,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if h.stop_requested.load(Ordering::SeqCst)
                        || h.reboot_requested.load(Ordering::SeqCst)
                    {
                        h.kick_all();
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(
                        VmError::Setup("every vCPU thread ended without a report".into()).into(),
                    )
                }
            }
        };
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
        h.vcpu_threads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        input.store(true, Ordering::SeqCst);
        h.input_ready.notify_all();
        for w in watchers {
            w.stop();
        }
        h.cards
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();

        // Disks carry over to the next boot.
        let devices = std::mem::take(
            &mut *h
                .devices
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        self.blocks = devices
            .into_iter()
            .map(|d| {
                let mut d = d.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
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
            let mut paused = h
                .paused
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
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

/// TEST HOOK ONLY (`MachineConfig::test_hook_open_after_boot`): waits
/// until vCPU 0 has entered the guest, then opens the kernel by path from
/// the main thread. Under the VMM filter the process dies of SIGSYS here;
/// without it the open succeeds and is logged.
fn test_hook_open_after_boot(h: &MachineHandle) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while h.first_entry_unix_us.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    // (It entered KVM_RUN; give it time to run its first instructions.)
    std::thread::sleep(Duration::from_millis(500));
    match std::fs::File::open(&h.config.kernel) {
        Ok(_) => tracing::warn!(
            "test hook: opened {} after boot (no filter)",
            h.config.kernel.display()
        ),
        Err(e) => tracing::warn!("test hook: open after boot failed: {e}"),
    }
}

/// Feeds queued console input into the UART as its FIFO drains; returns
/// the flag that ends it.
fn spawn_input_pump(h: Arc<MachineHandle>) -> Arc<AtomicBool> {
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    std::thread::spawn(move || loop {
        let mut q = h
            .input
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
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
        let n = h
            .serial
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .enqueue_input(&chunk)
            .unwrap_or(0);
        if n > 0 {
            h.input
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .drain(..n);
            // Room again for a writer waiting on a full queue.
            h.input_ready.notify_all();
        } else {
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mmio_devices_go_to_the_dsdt_or_the_command_line() {
        let (dsdt, line) = announce_mmio(mmio_devices(2), "console=ttyS0", false);
        assert_eq!(dsdt.len(), 2);
        assert_eq!(line, "console=ttyS0");

        let (dsdt, line) = announce_mmio(mmio_devices(2), "console=ttyS0", true);
        assert!(
            dsdt.is_empty(),
            "a device announced twice would be probed twice"
        );
        assert_eq!(
            line,
            format!(
                "console=ttyS0 virtio_mmio.device={:#x}@0xd0000000:{} virtio_mmio.device={:#x}@{:#x}:{}",
                MMIO_WINDOW,
                layout::FIRST_DEVICE_IRQ,
                MMIO_WINDOW,
                0xd000_0000u64 + MMIO_WINDOW,
                layout::FIRST_DEVICE_IRQ + 1
            )
        );
    }
}
