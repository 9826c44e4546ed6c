//! VMM backends: what a virtual machine is made of, independent of the
//! program that runs it. QEMU is the first backend; drydock's own KVM VMM
//! plugs in behind the same [`VmSpec`].

pub mod qemu;
pub mod qmp;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How disks and other devices reach the guest; each generation needs its
/// own guest driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceGeneration {
    /// virtio over MMIO, announced on the kernel command line (`virtio_mmio`).
    Mmio,
    /// virtio over PCI (`virtio_pci`).
    Pci,
}

impl DeviceGeneration {
    /// The guest driver that generation's disks need besides `virtio_blk`.
    pub fn transport_driver(self) -> &'static str {
        match self {
            Self::Mmio => "virtio_mmio",
            Self::Pci => "virtio_pci",
        }
    }
}

/// How guest instructions are executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Accel {
    /// Hardware KVM.
    Kvm,
    /// QEMU's software emulation.
    Tcg,
}

/// A disk as the guest sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiskSpec {
    pub path: PathBuf,
    /// The virtio serial: the volume id, so the guest can find it by name.
    pub serial: String,
    pub read_only: bool,
    /// QEMU new generation: the hot-plug port a data disk is plugged into
    /// at start (so that it can be unplugged while the VM runs, like one
    /// hot-plugged later), and its device id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hotplug: Option<HotplugPlace>,
}

/// Where a disk sits on a hot-plug port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HotplugPlace {
    pub port: String,
    pub device_id: String,
}

/// Everything needed to start one virtual machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmSpec {
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub generation: DeviceGeneration,
    pub accel: Accel,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub cmdline: String,
    /// The kernel takes `virtio_mmio.device=` on its command line: drydock's
    /// VMM announces its virtio-mmio disks there instead of in the DSDT.
    #[serde(default)]
    pub virtio_mmio_cmdline: bool,
    pub disks: Vec<DiskSpec>,
    /// Command socket of the VMM (QMP for QEMU).
    pub control_socket: PathBuf,
    /// A second socket on which the VMM reports events (QMP for QEMU).
    pub event_socket: PathBuf,
    /// The only directory from which drydock's VMM attaches disks while
    /// the VM runs (`attach-disk`): the host store's volumes. Without it,
    /// `attach-disk` is refused.
    #[serde(default)]
    pub volumes_dir: Option<PathBuf>,
    /// drydock's VMM runs under its seccomp filters (`vmm/src/machine/
    /// seccomp.rs`). The host decides and writes it here
    /// ([`seccomp_from_env`]: on unless the operator's
    /// `DRYDOCK_VMM_SECCOMP` says off); a spec without the field (one
    /// written by hand or by `drydock vmm-bench`) gets the same default in
    /// the VMM process. QEMU ignores it.
    #[serde(default = "seccomp_from_env")]
    pub seccomp: bool,
}

/// Whether drydock's VMM should run under its seccomp filters: yes, unless
/// `DRYDOCK_VMM_SECCOMP` says off (`0`, `off`, `false`, `no`) — the
/// operator's escape hatch while a filter misses a call. The host copies
/// the answer into the VM spec, where it can be seen.
pub fn seccomp_from_env() -> bool {
    seccomp_wanted(std::env::var("DRYDOCK_VMM_SECCOMP").ok().as_deref())
}

fn seccomp_wanted(env: Option<&str>) -> bool {
    !matches!(
        env.map(|v| v.trim().to_ascii_lowercase()).as_deref(),
        Some("0" | "off" | "false" | "no")
    )
}

/// The program that runs a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// drydock's own KVM VMM (`drydock vmm`), on hardware-backed KVM.
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
    if crate::probe::own_vmm_usable() {
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
    match crate::probe::probe_kvm() {
        crate::probe::KvmKind::Hardware => Accel::Kvm,
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
    fn seccomp_is_a_visible_spec_field_on_unless_said_off() {
        for (env, want) in [
            (None, true),
            (Some(""), true),
            (Some("on"), true),
            (Some("1"), true),
            (Some("off"), false),
            (Some(" OFF\n"), false),
            (Some("0"), false),
            (Some("false"), false),
            (Some("no"), false),
        ] {
            assert_eq!(seccomp_wanted(env), want, "{env:?}");
        }
        let spec = VmSpec {
            name: "i-1".into(),
            vcpus: 1,
            memory_mib: 128,
            generation: DeviceGeneration::Mmio,
            accel: Accel::Kvm,
            kernel: "/k".into(),
            initramfs: "/i".into(),
            cmdline: String::new(),
            virtio_mmio_cmdline: false,
            disks: vec![],
            control_socket: "/c".into(),
            event_socket: "/e".into(),
            volumes_dir: None,
            seccomp: false,
        };
        let text = serde_json::to_string_pretty(&spec).unwrap();
        assert!(text.contains("\"seccomp\": false"), "{text}");
        let back: VmSpec = serde_json::from_str(&text).unwrap();
        assert!(!back.seccomp);
        // A spec that does not say: the VMM process's default.
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v.as_object_mut().unwrap().remove("seccomp");
        let back: VmSpec = serde_json::from_value(v).unwrap();
        assert_eq!(back.seccomp, seccomp_from_env());
    }

    #[test]
    fn the_host_tsc_frequency_is_plausible() {
        let khz = host_tsc_khz().expect("x86_64 hosts have a TSC");
        assert!((500_000..10_000_000).contains(&khz), "{khz} kHz");
        assert!(tcg_clock_params().starts_with("tsc_early_khz="));
    }
}
