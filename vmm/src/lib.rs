//! drydock's embedded host: guest images built from Debian packages,
//! instances run by a VMM backend, volumes, images and regions.
//!
//! - [`image`] builds guest images (kernel, initramfs, root volume).
//! - [`host`] is the control plane: instances, volumes, images, regions,
//!   and the supervisor process that runs each instance.
//! - [`backend`] describes a VM ([`backend::VmSpec`]) and runs it (QEMU).
//! - [`probe`] tells which kind of KVM this machine has.
//! - [`vstate`] and [`devices`] are drydock's own KVM VMM (vCPUs, memory,
//!   port I/O bus, 8250 UART, i8042), tested today with tiny guests.

pub mod arch;
pub mod backend;
pub mod devices;
pub mod host;
pub mod image;
pub mod machine;
pub mod probe;
pub mod vstate;
