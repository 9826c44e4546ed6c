//! A vCPU and its run loop: port I/O goes to the device bus, MMIO to a
//! handler, and the loop ends with the reason the guest stopped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvm_ioctls::{VcpuExit, VcpuFd};

use super::vm::Vm;
use super::{kvm_err, VmError};
use crate::devices::bus::{BusAction, PioBus};

/// Why a vCPU stopped running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest executed HLT with nothing to wake it.
    Halted,
    /// The guest asked for a reset (i8042 0xFE).
    Reset,
    /// A triple fault or similar: KVM_EXIT_SHUTDOWN.
    Shutdown,
    /// The guest wrote "soft off" to the ACPI sleep control register.
    PowerOff,
    /// The VMM interrupted the vCPU (a signal kicked it out of KVM_RUN).
    Interrupted,
    /// KVM could not continue; the registers at the time.
    InternalError(String),
}

/// Handles guest accesses to addresses no memory backs.
pub trait MmioHandler {
    fn read(&mut self, addr: u64, data: &mut [u8]);
    fn write(&mut self, addr: u64, data: &[u8]);
}

/// Where a vCPU is: in the guest, or in the VMM handling an exit since
/// when. A status query reads it to tell a vCPU held up in the VMM (a
/// device that never returns) from one at work; two relaxed stores per
/// exit.
#[derive(Debug)]
pub struct VcpuProgress {
    base: Instant,
    /// 0 in the guest; else 1 + ms from `base` when the exit began.
    in_exit_since: AtomicU64,
}

impl VcpuProgress {
    pub fn new(base: Instant) -> Self {
        Self {
            base,
            in_exit_since: AtomicU64::new(0),
        }
    }

    fn enter_guest(&self) {
        self.in_exit_since.store(0, Ordering::Relaxed);
    }

    fn begin_exit(&self) {
        let now = self.base.elapsed().as_millis() as u64 + 1;
        self.in_exit_since.store(now, Ordering::Relaxed);
    }

    /// How long the vCPU has been handling its current exit (`None` while
    /// it runs the guest).
    pub fn in_exit_for(&self) -> Option<Duration> {
        match self.in_exit_since.load(Ordering::Relaxed) {
            0 => None,
            since => Some(
                self.base
                    .elapsed()
                    .saturating_sub(Duration::from_millis(since - 1)),
            ),
        }
    }
}

/// One vCPU.
pub struct Vcpu {
    pub fd: VcpuFd,
    /// How many exits the last `run` handled.
    pub exits: u64,
    /// Where it is, for status queries.
    pub progress: Option<Arc<VcpuProgress>>,
}

impl Vcpu {
    pub fn new(vm: &Vm, id: u64) -> Result<Self, VmError> {
        Ok(Self {
            fd: vm.fd.create_vcpu(id).map_err(kvm_err("create vCPU"))?,
            exits: 0,
            progress: None,
        })
    }

    /// Starts in 16-bit real mode at `0:ip`.
    pub fn set_real_mode_entry(&self, ip: u16) -> Result<(), VmError> {
        let mut sregs = self
            .fd
            .get_sregs()
            .map_err(kvm_err("get special registers"))?;
        sregs.cs.base = 0;
        sregs.cs.selector = 0;
        for seg in [&mut sregs.ds, &mut sregs.es, &mut sregs.ss] {
            seg.base = 0;
            seg.selector = 0;
        }
        self.fd
            .set_sregs(&sregs)
            .map_err(kvm_err("set special registers"))?;
        let mut regs = self.fd.get_regs().map_err(kvm_err("get registers"))?;
        regs.rip = u64::from(ip);
        regs.rflags = 0x2;
        regs.rsp = 0x0ff0;
        self.fd.set_regs(&regs).map_err(kvm_err("set registers"))?;
        Ok(())
    }

    /// Sets everything a vCPU needs to enter a Linux kernel at `entry`
    /// (64-bit boot protocol): CPUID, MSRs, FPU, registers, local APIC.
    pub fn configure_linux(&self, vm: &Vm, id: u8, count: u8, entry: u64) -> Result<(), VmError> {
        use crate::arch::{cpuid, regs};
        let mut ids = vm
            .kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("get supported CPUID"))?;
        cpuid::normalize(&mut ids, id, count);
        self.fd.set_cpuid2(&ids).map_err(kvm_err("set CPUID"))?;
        regs::setup_msrs(&self.fd)?;
        regs::setup_regs(&self.fd, entry)?;
        regs::setup_fpu(&self.fd)?;
        regs::setup_sregs(&self.fd)?;
        regs::setup_lint(&self.fd)
    }

    /// The registers, for reports of internal errors.
    pub fn registers(&self) -> String {
        match self.fd.get_regs() {
            Ok(r) => format!(
                "rip={:#x} rsp={:#x} rax={:#x} rflags={:#x}",
                r.rip, r.rsp, r.rax, r.rflags
            ),
            Err(e) => format!("registers unavailable: {e}"),
        }
    }

    /// Runs until the guest halts, resets, shuts down or fails.
    pub fn run(
        &mut self,
        bus: &mut PioBus,
        mmio: &mut dyn MmioHandler,
    ) -> Result<ExitReason, VmError> {
        self.exits = 0;
        let progress = self.progress.clone();
        // Back in the VMM's loop (paused, or ending the boot) is not an
        // exit held up in a device.
        struct OutOfRun<'a>(Option<&'a VcpuProgress>);
        impl Drop for OutOfRun<'_> {
            fn drop(&mut self) {
                if let Some(p) = self.0 {
                    p.enter_guest();
                }
            }
        }
        let _out = OutOfRun(progress.as_deref());
        loop {
            if let Some(p) = &progress {
                p.enter_guest();
            }
            let ran = self.fd.run();
            if let Some(p) = &progress {
                p.begin_exit();
            }
            let exit = match ran {
                Ok(exit) => exit,
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    self.fd.set_kvm_immediate_exit(0);
                    return Ok(ExitReason::Interrupted);
                }
                Err(e) => return Err(kvm_err("run vCPU")(e)),
            };
            self.exits += 1;
            match exit {
                VcpuExit::IoOut(port, data) => match bus.write(port, data) {
                    Some(BusAction::Reset) => return Ok(ExitReason::Reset),
                    Some(BusAction::PowerOff) => return Ok(ExitReason::PowerOff),
                    None => {}
                },
                VcpuExit::IoIn(port, data) => bus.read(port, data),
                VcpuExit::MmioRead(addr, data) => mmio.read(addr, data),
                VcpuExit::MmioWrite(addr, data) => mmio.write(addr, data),
                VcpuExit::Hlt => return Ok(ExitReason::Halted),
                VcpuExit::Shutdown => return Ok(ExitReason::Shutdown),
                VcpuExit::InternalError | VcpuExit::FailEntry(..) => {
                    return Ok(ExitReason::InternalError(self.registers()))
                }
                other => {
                    let what = format!("unexpected exit {other:?}");
                    return Ok(ExitReason::InternalError(format!(
                        "{what}; {}",
                        self.registers()
                    )));
                }
            }
        }
    }
}

#[cfg(test)]
mod progress_tests {
    use super::*;

    #[test]
    fn progress_tells_an_exit_held_up_from_the_guest_at_work() {
        let p = VcpuProgress::new(Instant::now());
        assert_eq!(p.in_exit_for(), None);
        p.begin_exit();
        std::thread::sleep(Duration::from_millis(30));
        let held = p.in_exit_for().unwrap();
        assert!(held >= Duration::from_millis(25), "{held:?}");
        p.enter_guest();
        assert_eq!(p.in_exit_for(), None);
    }
}
