//! drydock's own KVM VMM — only the VMM: it runs one guest described by a
//! [`spec::VmSpec`] and knows nothing of instances, volumes or runbooks
//! (those are the host's, `drydock-host`). The `drydock-vmm` binary
//! (`src/main.rs`) is this crate as a process.
//!
//! - [`spec`] what a VM is made of (disks, device generation, sockets);
//!   written by the host, read by the VMM.
//! - [`arch`] x86_64 layout, kernel loading, ACPI and MP tables, CPUID,
//!   registers.
//! - [`vstate`] the KVM VM, its memory and vCPUs; [`error`] the error
//!   both it and [`arch`] report.
//! - [`devices`] port bus, 8250 UART, i8042, ACPI power, PCI, virtio-blk
//!   over virtio-mmio and virtio-pci.
//! - [`machine`] the VM with its vCPU threads, the control socket and its
//!   protocol, and the seccomp filters.
//! - [`probe`] tells which kind of KVM this machine has.

pub mod arch;
pub mod devices;
pub mod error;
pub mod machine;
pub mod probe;
pub mod spec;
pub mod vstate;
