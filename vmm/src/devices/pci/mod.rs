//! PCI for drydock's VMM: configuration mechanism #1 (ports 0xcf8/0xcfc)
//! over one bus of functions, a host bridge, and BAR-mapped MMIO.

pub mod config;

use std::sync::{Arc, Mutex};

use crate::devices::bus::{BusAction, PioDevice};
pub use config::{ConfigSpace, HostBridge};

/// One PCI function: its configuration space and its BAR0 registers.
pub trait PciFunction: Send {
    fn config(&mut self) -> &mut ConfigSpace;
    /// Access at `offset` into BAR0.
    fn bar_read(&mut self, offset: u64, data: &mut [u8]);
    fn bar_write(&mut self, offset: u64, data: &[u8]);
}

/// Bus 0: function 0 of each slot.
#[derive(Default, Clone)]
pub struct PciBus {
    pub slots: Vec<Arc<Mutex<dyn PciFunction>>>,
}

impl PciBus {
    /// The function whose BAR0 covers `addr`, and the offset in it.
    pub fn find_bar(&self, addr: u64) -> Option<(Arc<Mutex<dyn PciFunction>>, u64)> {
        for f in &self.slots {
            let mut g = f.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let cfg = g.config();
            if let Some((base, size)) = cfg.bar0() {
                // The guest programs `base`: no `base + size` (it may wrap).
                if let Some(offset) = addr.checked_sub(base).filter(|o| *o < size) {
                    if cfg.memory_enabled() {
                        return Some((f.clone(), offset));
                    }
                }
            }
        }
        None
    }
}

/// The configuration-mechanism #1 ports: address at 0xcf8, data at 0xcfc.
pub struct PciConfigPorts {
    bus: PciBus,
    address: u32,
}

impl PciConfigPorts {
    pub fn new(bus: PciBus) -> Self {
        Self { bus, address: 0 }
    }

    fn target(&self) -> Option<(Arc<Mutex<dyn PciFunction>>, u16)> {
        if self.address & 0x8000_0000 == 0 {
            return None;
        }
        let bus = (self.address >> 16) & 0xff;
        let slot = ((self.address >> 11) & 0x1f) as usize;
        let function = (self.address >> 8) & 0x7;
        let reg = (self.address & 0xfc) as u16;
        if bus != 0 || function != 0 {
            return None;
        }
        self.bus.slots.get(slot).map(|f| (f.clone(), reg))
    }
}

impl PioDevice for PciConfigPorts {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        if offset < 4 {
            let v = self.address.to_le_bytes();
            for (i, b) in data.iter_mut().enumerate() {
                *b = v.get(offset as usize + i).copied().unwrap_or(0xff);
            }
            return;
        }
        let v = match self.target() {
            Some((f, reg)) => f
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .config()
                .read(reg),
            None => 0xffff_ffff,
        };
        let bytes = v.to_le_bytes();
        let start = usize::from(offset - 4);
        for (i, b) in data.iter_mut().enumerate() {
            *b = start
                .checked_add(i)
                .and_then(|at| bytes.get(at))
                .copied()
                .unwrap_or(0xff);
        }
    }

    fn write(&mut self, offset: u16, data: &[u8]) -> Option<BusAction> {
        if offset < 4 {
            let mut v = self.address.to_le_bytes();
            for (i, b) in data.iter().enumerate() {
                if let Some(slot) = v.get_mut(offset as usize + i) {
                    *slot = *b;
                }
            }
            self.address = u32::from_le_bytes(v);
            return None;
        }
        // The data port is 4 bytes wide: an offset beyond it (which the
        // port bus does not send) is ignored, never added into a register.
        let within = offset.checked_sub(4).filter(|o| *o < 4)?;
        if let Some((f, reg)) = self.target() {
            f.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .config()
                .write_bytes(reg + within, data);
        }
        None
    }
}
