//! virtio devices of drydock's own VMM: the device side (block, network)
//! apart from the transports (virtio-mmio, virtio-pci) that carry any of
//! them.

pub mod block;
pub mod device;
pub mod mmio;
pub mod net;
pub mod pci;
pub mod tap;

/// A virtio block device on either transport, as the VMM's control side
/// sees it: its disk, and the configuration-change notification.
pub trait BlockDevice: Send {
    fn block(&mut self) -> &mut block::Block;
    fn config_changed(&mut self);
}

impl BlockDevice for mmio::MmioBlock {
    fn block(&mut self) -> &mut block::Block {
        &mut self.device
    }
    fn config_changed(&mut self) {
        mmio::MmioBlock::config_changed(self)
    }
}

impl BlockDevice for pci::PciBlock {
    fn block(&mut self) -> &mut block::Block {
        &mut self.device
    }
    fn config_changed(&mut self) {
        pci::PciBlock::config_changed(self)
    }
}

/// A virtio network card on either transport, as the VMM's control side
/// sees it.
pub trait NetDevice: Send {
    fn net(&self) -> &net::Net;
}

impl NetDevice for mmio::MmioNet {
    fn net(&self) -> &net::Net {
        &self.device
    }
}

impl NetDevice for pci::PciNet {
    fn net(&self) -> &net::Net {
        &self.device
    }
}
