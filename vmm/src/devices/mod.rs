//! Devices of drydock's own VMM, one per file.

pub mod bus;
pub mod legacy;
pub mod pci;
pub mod virtio;
