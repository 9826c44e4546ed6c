//! virtio devices of drydock's own VMM.

pub mod block;
pub mod mmio;
