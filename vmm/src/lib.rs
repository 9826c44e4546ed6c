//! drydock's embedded host: guest images built from Debian packages,
//! instances run by a VMM backend, volumes, images and regions.
//!
//! - [`image`] builds guest images (kernel, initramfs, root volume).
//! - [`probe`] tells which kind of KVM this machine has.

pub mod image;
pub mod probe;
