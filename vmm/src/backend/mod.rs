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
    pub disks: Vec<DiskSpec>,
    /// Command socket of the VMM (QMP for QEMU).
    pub control_socket: PathBuf,
    /// A second socket on which the VMM reports events (QMP for QEMU).
    pub event_socket: PathBuf,
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
