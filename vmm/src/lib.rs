//! drydock's embedded host: guest images built from Debian packages,
//! instances run by a VMM backend, volumes, images and regions.
//!
//! - [`image`] builds guest images (kernel, initramfs, root volume), on
//!   Debian's cloud kernel or a kernel of one's own.
//! - [`host`] is the control plane: instances, volumes, images, regions,
//!   and the supervisor process that runs each instance.
//! - [`backend`] describes a VM ([`backend::VmSpec`]), chooses drydock's
//!   own VMM or QEMU by probing, and builds QEMU's command line.
//! - [`probe`] tells which kind of KVM this machine has.
//! - drydock's own KVM VMM: [`arch`] (layout, kernel loading, ACPI and MP
//!   tables, CPUID, registers), [`vstate`] (VM, memory, vCPUs), [`devices`]
//!   (port bus, 8250 UART, i8042, ACPI power, PCI, virtio-blk over
//!   virtio-mmio and PCI) and [`machine`] (the VM, its vCPU threads and the
//!   one-process-per-VM control socket).
//! - [`private`] keeps files and sockets private: socket modes, peer
//!   checks, narrowing modes the umask does not cover.

pub mod arch;
pub mod backend;
pub mod devices;
pub mod host;
pub mod image;
pub mod machine;
pub mod private;
pub mod probe;
pub mod vstate;
