//! VMM backends: which program runs a VM described by a
//! [`drydock_vmm::spec::VmSpec`]. QEMU is one backend; drydock's own KVM VMM
//! (the `drydock-vmm` binary) the other.

pub mod qemu;
pub mod qmp;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use drydock_vmm::spec::{
    seccomp_from_env, Accel, DeviceGeneration, DiskSpec, HotplugPlace, NicSpec, VmSpec,
};

/// The programs the host starts to run VMs, passed in by whoever runs the
/// instance process (the `drydock` CLI finds them beside itself): the host
/// never guesses its own command lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmmPrograms {
    /// drydock's own VMM, the `drydock-vmm` binary.
    pub drydock_vmm: PathBuf,
}

impl VmmPrograms {
    /// `DRYDOCK_VMM`, else `drydock-vmm` beside this program (where
    /// `cargo build` and an install put it).
    pub fn from_env() -> Self {
        let drydock_vmm = std::env::var_os("DRYDOCK_VMM")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::current_exe()
                    .ok()
                    .and_then(|exe| exe.parent().map(|d| d.join("drydock-vmm")))
            })
            .unwrap_or_else(|| "drydock-vmm".into());
        Self { drydock_vmm }
    }
}

/// The program that runs a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// drydock's own KVM VMM (`drydock-vmm`), on hardware-backed KVM.
    Drydock,
    /// QEMU with the given accelerator.
    Qemu(Accel),
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Self::Drydock => "drydock-kvm",
            Self::Qemu(Accel::Kvm) => "qemu-kvm",
            Self::Qemu(Accel::Tcg) => "qemu-tcg",
        }
    }
}

/// Chooses the backend: drydock's own VMM where KVM is hardware-backed and
/// a test guest runs (it has both device generations, virtio-mmio and
/// virtio-pci), QEMU otherwise. `DRYDOCK_BACKEND=drydock|qemu` overrides
/// (QEMU then still picks its accelerator by probing or `DRYDOCK_ACCEL`).
pub fn choose_backend() -> Result<Backend, String> {
    match std::env::var("DRYDOCK_BACKEND").as_deref() {
        Ok("drydock") => return Ok(Backend::Drydock),
        Ok("qemu") => return Ok(Backend::Qemu(choose_accel())),
        Ok("") | Err(_) => {}
        Ok(other) => {
            return Err(format!(
                "DRYDOCK_BACKEND={other} is not a backend; use drydock or qemu"
            ))
        }
    }
    if drydock_vmm::probe::own_vmm_usable() {
        Ok(Backend::Drydock)
    } else {
        Ok(Backend::Qemu(choose_accel()))
    }
}

/// Chooses the accelerator by probing: hardware KVM when the machine has
/// it, software emulation otherwise. `DRYDOCK_ACCEL=kvm|tcg` overrides.
pub fn choose_accel() -> Accel {
    match std::env::var("DRYDOCK_ACCEL").as_deref() {
        Ok("kvm") => return Accel::Kvm,
        Ok("tcg") => return Accel::Tcg,
        _ => {}
    }
    match drydock_vmm::probe::probe_kvm() {
        drydock_vmm::probe::KvmKind::Hardware => Accel::Kvm,
        _ => Accel::Tcg,
    }
}

/// Kernel parameters that keep a guest's clock working under software
/// emulation: the early TSC calibration fails when the host is busy (the
/// guest then hangs at boot), so the guest is told the TSC frequency,
/// which under TCG is the host's.
pub fn tcg_clock_params() -> String {
    match host_tsc_khz() {
        Some(khz) => format!("tsc_early_khz={khz} tsc=reliable"),
        None => String::new(),
    }
}

/// The host's TSC frequency in kHz: from sysfs when the kernel exports it,
/// else measured against the monotonic clock.
pub fn host_tsc_khz() -> Option<u64> {
    if let Ok(s) = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/tsc_freq_khz") {
        if let Ok(khz) = s.trim().parse() {
            return Some(khz);
        }
    }
    measure_tsc_khz()
}

#[cfg(target_arch = "x86_64")]
fn measure_tsc_khz() -> Option<u64> {
    use std::time::{Duration, Instant};
    let mut best: Option<u64> = None;
    for _ in 0..3 {
        let t0 = Instant::now();
        // SAFETY: rdtsc reads the time-stamp counter; it has no memory effects.
        let c0 = unsafe { core::arch::x86_64::_rdtsc() };
        std::thread::sleep(Duration::from_millis(20));
        // SAFETY: as above.
        let c1 = unsafe { core::arch::x86_64::_rdtsc() };
        let ns = t0.elapsed().as_nanos() as u64;
        if ns == 0 || c1 <= c0 {
            continue;
        }
        let khz = (c1 - c0) * 1_000_000 / ns;
        // The shortest-looking measurement was least disturbed by preemption.
        best = Some(best.map_or(khz, |b: u64| b.min(khz)));
    }
    best
}

#[cfg(not(target_arch = "x86_64"))]
fn measure_tsc_khz() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_tsc_frequency_is_plausible() {
        let khz = host_tsc_khz().expect("x86_64 hosts have a TSC");
        assert!((500_000..10_000_000).contains(&khz), "{khz} kHz");
        assert!(tcg_clock_params().starts_with("tsc_early_khz="));
    }
}
