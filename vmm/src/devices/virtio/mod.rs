//! virtio devices of drydock's own VMM.

pub mod block;
pub mod mmio;
pub mod pci;

/// A virtio block device on either transport, as the VMM's control side
/// sees it: its disk, and the configuration-change notification.
pub trait BlockDevice: Send {
    fn block(&mut self) -> &mut block::Block;
    fn config_changed(&mut self);
}

impl BlockDevice for mmio::MmioBlock {
    fn block(&mut self) -> &mut block::Block {
        &mut self.block
    }
    fn config_changed(&mut self) {
        mmio::MmioBlock::config_changed(self)
    }
}

impl BlockDevice for pci::PciBlock {
    fn block(&mut self) -> &mut block::Block {
        &mut self.block
    }
    fn config_changed(&mut self) {
        pci::PciBlock::config_changed(self)
    }
}
