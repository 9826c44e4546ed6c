//! virtio-blk over PCI (virtio 1.x "modern"): the virtio capabilities
//! (common, notify, ISR, device configuration) in BAR0, and MSI-X for
//! interrupts, delivered with KVM_SIGNAL_MSI. A guest without the
//! `virtio_pci` driver does not see these disks.

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use super::block::Block;
use super::mmio::{
    QUEUE_MAX, STATUS_DRIVER_OK, STATUS_FEATURES_OK, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO,
    VIRTIO_F_VERSION_1,
};
use crate::devices::pci::{ConfigSpace, PciFunction};

pub const VIRTIO_PCI_VENDOR: u16 = 0x1af4;
/// 0x1040 + the virtio device id (2, block).
pub const VIRTIO_PCI_BLOCK: u16 = 0x1042;
/// Size of BAR0.
pub const BAR0_SIZE: u64 = 0x4000;

const COMMON: u64 = 0x0000;
const ISR: u64 = 0x1000;
const DEVICE: u64 = 0x2000;
const NOTIFY: u64 = 0x3000;
const MSIX_TABLE: u64 = 0x3800;
const MSIX_PBA: u64 = 0x3c00;
const MSIX_VECTORS: usize = 2;
const NO_VECTOR: u16 = 0xffff;

/// Sends one MSI (address low, address high, data).
pub type MsiSender = Arc<dyn Fn(u32, u32, u32) + Send + Sync>;

#[derive(Clone, Copy, Default)]
struct MsixEntry {
    addr_lo: u32,
    addr_hi: u32,
    data: u32,
    masked: bool,
}

/// A virtio-blk PCI function.
pub struct PciBlock {
    pub block: Block,
    config: ConfigSpace,
    queue: Queue,
    memory: GuestMemoryMmap,
    msi: MsiSender,
    status: u8,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u16,
    isr: u8,
    config_generation: u8,
    msix_config: u16,
    queue_vector: u16,
    msix: [MsixEntry; MSIX_VECTORS],
    /// The Pending Bit Array: an interrupt of a masked vector (or while the
    /// function is masked) waits here and is sent on unmask.
    pending: [bool; MSIX_VECTORS],
    msix_cap: u8,
    pub interrupts: u64,
}

fn virtio_cap(cfg_type: u8, offset: u64, length: u32, extra: &[u8]) -> Vec<u8> {
    // cap_len, cfg_type, bar, id, padding[2], offset, length (+ extra)
    let mut b = vec![(16 + extra.len()) as u8, cfg_type, 0, 0, 0, 0];
    b.extend_from_slice(&(offset as u32).to_le_bytes());
    b.extend_from_slice(&length.to_le_bytes());
    b.extend_from_slice(extra);
    b
}

impl PciBlock {
    pub fn new(block: Block, memory: GuestMemoryMmap, msi: MsiSender, bar0: u64) -> Self {
        let mut config = ConfigSpace::new(
            VIRTIO_PCI_VENDOR,
            VIRTIO_PCI_BLOCK,
            0x01_80_00,
            1,
            (VIRTIO_PCI_VENDOR, 0x40),
        );
        config.set_bar0(bar0, BAR0_SIZE);
        let mut at = 0x40;
        at = config.add_capability(at, 0x09, &virtio_cap(1, COMMON, 0x38, &[]));
        at = config.add_capability(at, 0x09, &virtio_cap(2, NOTIFY, 4, &0u32.to_le_bytes()));
        at = config.add_capability(at, 0x09, &virtio_cap(3, ISR, 1, &[]));
        at = config.add_capability(at, 0x09, &virtio_cap(4, DEVICE, 0x100, &[]));
        let msix_cap = at;
        let mut msix = Vec::new();
        msix.extend_from_slice(&((MSIX_VECTORS - 1) as u16).to_le_bytes());
        msix.extend_from_slice(&(MSIX_TABLE as u32).to_le_bytes());
        msix.extend_from_slice(&(MSIX_PBA as u32).to_le_bytes());
        config.add_capability(at, 0x11, &msix);
        Self {
            block,
            config,
            queue: Queue::new(QUEUE_MAX).expect("256 is a valid queue size"),
            memory,
            msi,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            isr: 0,
            config_generation: 0,
            msix_config: NO_VECTOR,
            queue_vector: NO_VECTOR,
            msix: [MsixEntry::default(); MSIX_VECTORS],
            pending: [false; MSIX_VECTORS],
            msix_cap,
            interrupts: 0,
        }
    }

    fn device_features(&self) -> u64 {
        let mut f = (1u64 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_BLK_F_FLUSH);
        if self.block.read_only() {
            f |= 1 << VIRTIO_BLK_F_RO;
        }
        f
    }

    fn msix_control(&self) -> u16 {
        u16::from_le_bytes([
            self.config.byte(self.msix_cap + 2),
            self.config.byte(self.msix_cap + 3),
        ])
    }

    fn interrupt(&mut self, vector: u16, isr_bit: u8) {
        self.isr |= isr_bit;
        let control = self.msix_control();
        if control & 0x8000 == 0 || vector == NO_VECTOR {
            return;
        }
        let function_masked = control & 0x4000 != 0;
        let Some(e) = self.msix.get(vector as usize).copied() else {
            return;
        };
        if e.masked || function_masked {
            self.pending[vector as usize] = true;
            return;
        }
        self.interrupts += 1;
        (self.msi)(e.addr_lo, e.addr_hi, e.data);
    }

    /// Sends the interrupts the PBA holds for vectors no longer masked.
    fn deliver_pending(&mut self) {
        if !self.pending.iter().any(|p| *p) {
            return;
        }
        let control = self.msix_control();
        if control & 0x8000 == 0 || control & 0x4000 != 0 {
            return;
        }
        for v in 0..MSIX_VECTORS {
            let e = self.msix[v];
            if self.pending[v] && !e.masked {
                self.pending[v] = false;
                self.interrupts += 1;
                (self.msi)(e.addr_lo, e.addr_hi, e.data);
            }
        }
    }

    /// The capacity changed (a disk went into or out of this slot).
    pub fn config_changed(&mut self) {
        self.config_generation = self.config_generation.wrapping_add(1);
        if self.status & STATUS_DRIVER_OK as u8 != 0 {
            self.interrupt(self.msix_config, 2);
        }
    }

    fn reset(&mut self) {
        self.queue.reset();
        self.status = 0;
        self.driver_features = 0;
        self.isr = 0;
        self.queue_sel = 0;
        self.msix_config = NO_VECTOR;
        self.queue_vector = NO_VECTOR;
    }

    fn notify(&mut self) {
        if self.status & STATUS_DRIVER_OK as u8 == 0
            || !self.queue.ready()
            || !self.queue.is_valid(&self.memory)
        {
            return;
        }
        match self.block.process_queue(&self.memory, &mut self.queue) {
            Ok(true) => self.interrupt(self.queue_vector, 1),
            Ok(false) => {}
            Err(e) => {
                tracing::error!("virtio-blk queue error: {e}; the device needs a reset");
                self.status |= 0x40;
                self.interrupt(self.msix_config, 2);
            }
        }
    }

    fn common_read(&mut self, off: u64) -> u64 {
        let q0 = self.queue_sel == 0;
        match off {
            0x00 => u64::from(self.device_features_sel),
            0x04 => match self.device_features_sel {
                0 => self.device_features() & 0xffff_ffff,
                1 => self.device_features() >> 32,
                _ => 0,
            },
            0x08 => u64::from(self.driver_features_sel),
            0x0c => match self.driver_features_sel {
                0 => self.driver_features & 0xffff_ffff,
                1 => self.driver_features >> 32,
                _ => 0,
            },
            0x10 => u64::from(self.msix_config),
            0x12 => 1,
            0x14 => u64::from(self.status),
            0x15 => u64::from(self.config_generation),
            0x16 => u64::from(self.queue_sel),
            0x18 if q0 => u64::from(self.queue.size()),
            0x18 => 0,
            0x1a if q0 => u64::from(self.queue_vector),
            0x1a => u64::from(NO_VECTOR),
            0x1c => u64::from(q0 && self.queue.ready()),
            0x1e => 0,
            0x20 if q0 => self.queue.desc_table(),
            0x28 if q0 => self.queue.avail_ring(),
            0x30 if q0 => self.queue.used_ring(),
            _ => 0,
        }
    }

    fn common_write(&mut self, off: u64, v: u64) {
        let q0 = self.queue_sel == 0;
        let lo = Some(v as u32);
        let hi = Some((v >> 32) as u32);
        match off {
            0x00 => self.device_features_sel = v as u32,
            0x08 => self.driver_features_sel = v as u32,
            0x0c => match self.driver_features_sel {
                0 => {
                    self.driver_features = (self.driver_features & !0xffff_ffff) | (v & 0xffff_ffff)
                }
                1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (v << 32),
                _ => {}
            },
            0x10 => self.msix_config = v as u16,
            0x14 => {
                let v = v as u8;
                if v == 0 {
                    self.reset();
                } else if v & STATUS_FEATURES_OK as u8 != 0
                    && self.status & STATUS_FEATURES_OK as u8 == 0
                    && self.driver_features & !self.device_features() != 0
                {
                    self.status = v & !(STATUS_FEATURES_OK as u8);
                } else {
                    self.status = v;
                }
            }
            0x16 => self.queue_sel = v as u16,
            0x18 if q0 => self.queue.set_size(v as u16),
            0x1a if q0 => self.queue_vector = v as u16,
            0x1c if q0 => self.queue.set_ready(v == 1),
            0x20 if q0 => self.queue.set_desc_table_address(lo, hi),
            0x24 if q0 => self.queue.set_desc_table_address(None, lo),
            0x28 if q0 => self.queue.set_avail_ring_address(lo, hi),
            0x2c if q0 => self.queue.set_avail_ring_address(None, lo),
            0x30 if q0 => self.queue.set_used_ring_address(lo, hi),
            0x34 if q0 => self.queue.set_used_ring_address(None, lo),
            _ => {}
        }
    }
}

fn to_u64(data: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = data.len().min(8);
    b[..n].copy_from_slice(&data[..n]);
    u64::from_le_bytes(b)
}

impl PciFunction for PciBlock {
    fn config(&mut self) -> &mut ConfigSpace {
        &mut self.config
    }

    fn bar_read(&mut self, offset: u64, data: &mut [u8]) {
        let v: u64 = match offset {
            o if o < ISR => self.common_read(o),
            ISR => {
                let v = self.isr;
                self.isr = 0;
                u64::from(v)
            }
            o if (DEVICE..DEVICE + 0x100).contains(&o) => {
                let cap = self.block.capacity_sectors().to_le_bytes();
                let start = (o - DEVICE) as usize;
                let mut b = [0u8; 8];
                for (i, x) in b.iter_mut().enumerate().take(data.len()) {
                    *x = cap.get(start + i).copied().unwrap_or(0);
                }
                u64::from_le_bytes(b)
            }
            o if (MSIX_PBA..MSIX_PBA + 8).contains(&o) => {
                let bits = self
                    .pending
                    .iter()
                    .enumerate()
                    .fold(0u64, |acc, (i, p)| acc | (u64::from(*p) << i));
                bits >> ((o - MSIX_PBA) * 8)
            }
            o if (MSIX_TABLE..MSIX_TABLE + 16 * MSIX_VECTORS as u64).contains(&o) => {
                let e = self.msix[((o - MSIX_TABLE) / 16) as usize];
                match (o - MSIX_TABLE) % 16 {
                    0 => u64::from(e.addr_lo),
                    4 => u64::from(e.addr_hi),
                    8 => u64::from(e.data),
                    12 => u64::from(e.masked),
                    _ => 0,
                }
            }
            _ => 0,
        };
        let bytes = v.to_le_bytes();
        let n = data.len().min(8);
        data[..n].copy_from_slice(&bytes[..n]);
    }

    fn bar_write(&mut self, offset: u64, data: &[u8]) {
        let v = to_u64(data);
        match offset {
            o if o < ISR => self.common_write(o, v),
            o if (NOTIFY..NOTIFY + 4).contains(&o) => self.notify(),
            o if (MSIX_TABLE..MSIX_TABLE + 16 * MSIX_VECTORS as u64).contains(&o) => {
                let e = &mut self.msix[((o - MSIX_TABLE) / 16) as usize];
                match (o - MSIX_TABLE) % 16 {
                    0 => {
                        e.addr_lo = v as u32;
                        if data.len() == 8 {
                            e.addr_hi = (v >> 32) as u32;
                        }
                    }
                    4 => e.addr_hi = v as u32,
                    8 => e.data = v as u32,
                    12 => e.masked = v & 1 != 0,
                    _ => {}
                }
            }
            _ => {}
        }
        // An unmask (of the vector, or of the whole function in the
        // config space before this access) delivers what was pending.
        self.deliver_pending();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::bus::PioDevice;
    use crate::devices::pci::{HostBridge, PciBus, PciConfigPorts};
    use std::sync::Mutex;
    use vm_memory::GuestAddress;

    fn cfg_read(ports: &mut PciConfigPorts, slot: u32, reg: u32) -> u32 {
        ports.write(0, &(0x8000_0000 | (slot << 11) | reg).to_le_bytes());
        let mut b = [0u8; 4];
        ports.read(4, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn the_guest_finds_a_virtio_blk_function_with_its_capabilities_and_msix() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("d.raw");
        std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let s2 = sent.clone();
        let msi: MsiSender = Arc::new(move |lo, hi, data| {
            s2.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((lo, hi, data))
        });
        let blk = Arc::new(Mutex::new(PciBlock::new(
            Block::open(&disk, false, "vol-pci").unwrap(),
            mem,
            msi,
            0xe000_0000,
        )));
        let bus = PciBus {
            slots: vec![Arc::new(Mutex::new(HostBridge::default())), blk.clone()],
        };
        let mut ports = PciConfigPorts::new(bus.clone());
        // Configuration mechanism #1 reads back the address register.
        ports.write(0, &0x8000_0000u32.to_le_bytes());
        let mut a = [0u8; 4];
        ports.read(0, &mut a);
        assert_eq!(u32::from_le_bytes(a), 0x8000_0000);
        assert_eq!(
            cfg_read(&mut ports, 0, 8) >> 16,
            0x0600,
            "host bridge class"
        );
        assert_eq!(cfg_read(&mut ports, 1, 0), 0x1042_1af4);
        assert_eq!(cfg_read(&mut ports, 5, 0), 0xffff_ffff, "empty slot");
        // Walk the capabilities: four virtio ones, then MSI-X.
        let mut at = cfg_read(&mut ports, 1, 0x34) & 0xff;
        let mut kinds = Vec::new();
        while at != 0 {
            let dw = cfg_read(&mut ports, 1, at & !3);
            kinds.push((dw & 0xff, (dw >> 24) & 0xff));
            at = (dw >> 8) & 0xff;
        }
        assert_eq!(kinds, vec![(9, 1), (9, 2), (9, 3), (9, 4), (0x11, 0)]);

        // Enable memory decoding, then the BAR answers.
        ports.write(0, &(0x8000_0000u32 | (1 << 11) | 4).to_le_bytes());
        ports.write(4, &[0x06, 0]);
        let (f, off) = bus.find_bar(0xe000_0000 + DEVICE).expect("BAR0 decodes");
        let mut cap = [0u8; 8];
        f.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .bar_read(off, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), 2048, "capacity in sectors");

        // MSI-X: program vector 0, enable, the config change sends it.
        let mut b = blk
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        b.bar_write(MSIX_TABLE, &0xfee0_0000u32.to_le_bytes());
        b.bar_write(MSIX_TABLE + 8, &0x41u32.to_le_bytes());
        b.bar_write(COMMON + 0x10, &0u16.to_le_bytes());
        b.bar_write(COMMON + 0x14, &[STATUS_DRIVER_OK as u8]);
        let cap_at = b.msix_cap;
        b.config()
            .write_bytes(u16::from(cap_at) + 2, &0x8000u16.to_le_bytes());
        b.config_changed();
        assert_eq!(
            *sent
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            vec![(0xfee0_0000, 0, 0x41)]
        );
        let mut isr = [0u8];
        b.bar_read(ISR, &mut isr);
        assert_eq!(isr[0], 2, "configuration change, cleared by the read");
        b.bar_read(ISR, &mut isr);
        assert_eq!(isr[0], 0);

        // A masked vector's interrupt is latched in the PBA, not lost, and
        // sent when the vector is unmasked.
        b.bar_write(MSIX_TABLE + 12, &1u32.to_le_bytes());
        b.config_changed();
        assert_eq!(sent.lock().unwrap().len(), 1, "masked: not sent");
        let mut pba = [0u8; 8];
        b.bar_read(MSIX_PBA, &mut pba);
        assert_eq!(u64::from_le_bytes(pba), 1, "pending bit of vector 0");
        b.bar_write(MSIX_TABLE + 12, &0u32.to_le_bytes());
        assert_eq!(sent.lock().unwrap().len(), 2, "sent on unmask");
        b.bar_read(MSIX_PBA, &mut pba);
        assert_eq!(u64::from_le_bytes(pba), 0);
        // The same with the whole function masked.
        b.config()
            .write_bytes(u16::from(cap_at) + 2, &0xc000u16.to_le_bytes());
        b.config_changed();
        assert_eq!(sent.lock().unwrap().len(), 2);
        b.config()
            .write_bytes(u16::from(cap_at) + 2, &0x8000u16.to_le_bytes());
        b.bar_read(ISR, &mut isr);
        b.bar_write(NOTIFY + 8, &[0]);
        assert_eq!(
            sent.lock().unwrap().len(),
            3,
            "sent once the function is unmasked"
        );
    }

    #[test]
    fn a_bar_programmed_at_the_top_of_the_address_space_does_not_overflow() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("d.raw");
        std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let msi: MsiSender = Arc::new(|_, _, _| {});
        let blk = Arc::new(Mutex::new(PciBlock::new(
            Block::open(&disk, false, "vol-pci").unwrap(),
            mem,
            msi,
            0xe000_0000,
        )));
        let bus = PciBus {
            slots: vec![blk.clone()],
        };
        let mut ports = PciConfigPorts::new(bus.clone());
        ports.write(0, &0x8000_0010u32.to_le_bytes());
        ports.write(4, &0xffff_ffffu32.to_le_bytes());
        ports.write(0, &0x8000_0014u32.to_le_bytes());
        ports.write(4, &0xffff_ffffu32.to_le_bytes());
        ports.write(0, &0x8000_0004u32.to_le_bytes());
        ports.write(4, &[0x06, 0]);
        // Never panics; the top of the space decodes to the BAR's last bytes only.
        assert!(bus.find_bar(u64::MAX).is_some());
        assert!(bus.find_bar(0).is_none());
        assert!(bus.find_bar(0xe000_0000).is_none());
    }
}
