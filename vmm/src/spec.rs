//! What a virtual machine is made of, independent of the program that
//! runs it: the VM spec the host writes and a VMM (drydock's own, or
//! QEMU through the host's backend) runs. It lives low in the tree so the
//! VMM's machine never depends on the host's backends.

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

/// A network interface: a TAP device the VMM inherits as a descriptor
/// (the host makes it inside the VPC's namespace and passes it open).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicSpec {
    /// The guest's MAC address, `02:…`.
    pub mac: String,
    /// The TAP's descriptor number in the VMM process.
    pub tap_fd: i32,
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
    /// Network interfaces, primary first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nics: Vec<NicSpec>,
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
            nics: vec![],
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
}
