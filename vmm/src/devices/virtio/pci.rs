//! The virtio-pci transport (virtio 1.x "modern") for any
//! [`VirtioDevice`]: the virtio capabilities (common, notify, ISR, device
//! configuration) in BAR0, and MSI-X for interrupts — one vector for
//! configuration changes and one per queue — delivered with
//! KVM_SIGNAL_MSI. A guest without the `virtio_pci` driver does not see
//! these devices.

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use super::block::Block;
use super::device::{BackendInput, UsedQueues, VirtioDevice};
use super::mmio::{QUEUE_MAX, STATUS_DRIVER_OK, STATUS_FEATURES_OK, STATUS_NEEDS_RESET};
use super::net::Net;
use crate::devices::pci::{ConfigSpace, PciFunction};

pub const VIRTIO_PCI_VENDOR: u16 = 0x1af4;
/// 0x1040 + the virtio device id (2, block).
pub const VIRTIO_PCI_BLOCK: u16 = 0x1042;
/// 0x1040 + the virtio device id (1, network).
pub const VIRTIO_PCI_NET: u16 = 0x1041;
/// Size of BAR0.
pub const BAR0_SIZE: u64 = 0x4000;

const COMMON: u64 = 0x0000;
const ISR: u64 = 0x1000;
const DEVICE: u64 = 0x2000;
const NOTIFY: u64 = 0x3000;
const MSIX_TABLE: u64 = 0x3800;
const MSIX_PBA: u64 = 0x3c00;
/// Room in BAR0 for MSI-X table entries (16 bytes each).
const MSIX_MAX_VECTORS: usize = ((MSIX_PBA - MSIX_TABLE) / 16) as usize;
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

/// A virtio PCI function.
pub struct PciTransport<D: VirtioDevice> {
    pub device: D,
    config: ConfigSpace,
    queues: Vec<Queue>,
    /// The MSI-X vector of each queue.
    queue_vectors: Vec<u16>,
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
    msix: Vec<MsixEntry>,
    /// The Pending Bit Array: an interrupt of a masked vector (or while the
    /// function is masked) waits here and is sent on unmask.
    pending: Vec<bool>,
    msix_cap: u8,
    pub interrupts: u64,
}

/// A block device on virtio-pci.
pub type PciBlock = PciTransport<Block>;
/// A network card on virtio-pci.
pub type PciNet = PciTransport<Net>;

fn virtio_cap(cfg_type: u8, offset: u64, length: u32, extra: &[u8]) -> Vec<u8> {
    // cap_len, cfg_type, bar, id, padding[2], offset, length (+ extra)
    let mut b = vec![(16 + extra.len()) as u8, cfg_type, 0, 0, 0, 0];
    b.extend_from_slice(&(offset as u32).to_le_bytes());
    b.extend_from_slice(&length.to_le_bytes());
    b.extend_from_slice(extra);
    b
}

/// The PCI class code of a virtio device type.
fn class_code(device_type: u32) -> u32 {
    match device_type {
        1 => 0x02_00_00, // network controller, Ethernet
        2 => 0x01_80_00, // mass storage, other
        _ => 0xff_00_00,
    }
}

impl<D: VirtioDevice> PciTransport<D> {
    pub fn new(device: D, memory: GuestMemoryMmap, msi: MsiSender, bar0: u64) -> Self {
        let device_type = device.device_type();
        let mut config = ConfigSpace::new(
            VIRTIO_PCI_VENDOR,
            0x1040 + device_type as u16,
            class_code(device_type),
            1,
            (VIRTIO_PCI_VENDOR, 0x40),
        );
        config.set_bar0(bar0, BAR0_SIZE);
        let mut at = 0x40;
        at = config.add_capability(at, 0x09, &virtio_cap(1, COMMON, 0x38, &[]));
        // notify_off_multiplier 0: every queue is notified at the same
        // address, with its index as the value written.
        at = config.add_capability(at, 0x09, &virtio_cap(2, NOTIFY, 4, &0u32.to_le_bytes()));
        at = config.add_capability(at, 0x09, &virtio_cap(3, ISR, 1, &[]));
        at = config.add_capability(at, 0x09, &virtio_cap(4, DEVICE, 0x100, &[]));
        let msix_cap = at;
        let queue_count = device.queue_count();
        let vectors = (1 + queue_count).min(MSIX_MAX_VECTORS);
        let mut msix = Vec::new();
        msix.extend_from_slice(&((vectors - 1) as u16).to_le_bytes());
        msix.extend_from_slice(&(MSIX_TABLE as u32).to_le_bytes());
        msix.extend_from_slice(&(MSIX_PBA as u32).to_le_bytes());
        config.add_capability(at, 0x11, &msix);
        Self {
            device,
            config,
            queues: (0..queue_count)
                .map(|_| Queue::new(QUEUE_MAX).expect("256 is a valid queue size"))
                .collect(),
            queue_vectors: vec![NO_VECTOR; queue_count],
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
            msix: vec![MsixEntry::default(); vectors],
            pending: vec![false; vectors],
            msix_cap,
            interrupts: 0,
        }
    }

    fn device_features(&self) -> u64 {
        self.device.features()
    }

    fn live(&self) -> bool {
        self.status & STATUS_DRIVER_OK as u8 != 0 && self.status & STATUS_NEEDS_RESET as u8 == 0
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
        for v in 0..self.msix.len() {
            let e = self.msix[v];
            if self.pending[v] && !e.masked {
                self.pending[v] = false;
                self.interrupts += 1;
                (self.msi)(e.addr_lo, e.addr_hi, e.data);
            }
        }
    }

    /// The configuration changed (a disk went into or out of this slot).
    pub fn config_changed(&mut self) {
        self.config_generation = self.config_generation.wrapping_add(1);
        if self.status & STATUS_DRIVER_OK as u8 != 0 {
            self.interrupt(self.msix_config, 2);
        }
    }

    fn reset(&mut self) {
        for q in &mut self.queues {
            q.reset();
        }
        self.device.reset();
        self.status = 0;
        self.driver_features = 0;
        self.isr = 0;
        self.queue_sel = 0;
        self.msix_config = NO_VECTOR;
        self.queue_vectors.fill(NO_VECTOR);
    }

    /// Interrupts the driver for each queue that got used buffers (one
    /// message per distinct vector), or marks the device as needing a
    /// reset.
    fn after_work(&mut self, r: Result<UsedQueues, String>) {
        match r {
            Ok(used) => {
                let mut sent: Vec<u16> = Vec::new();
                for (i, vector) in self.queue_vectors.clone().into_iter().enumerate() {
                    if i < 32 && used & (1 << i) != 0 && !sent.contains(&vector) {
                        sent.push(vector);
                        self.interrupt(vector, 1);
                    }
                }
            }
            Err(e) => {
                tracing::error!(
                    "virtio device {}: {e}; it needs a reset",
                    self.device.device_type()
                );
                self.status |= STATUS_NEEDS_RESET as u8;
                self.interrupt(self.msix_config, 2);
            }
        }
    }

    fn notify(&mut self, queue: u64) {
        let index = queue as usize;
        let Some(q) = self.queues.get(index) else {
            return;
        };
        if !self.live() || !q.ready() || !q.is_valid(&self.memory) {
            return;
        }
        let r = self
            .device
            .queue_notify(index, &self.memory, &mut self.queues);
        self.after_work(r);
    }

    fn common_read(&mut self, off: u64) -> u64 {
        let sel = self.queue_sel as usize;
        let q = self.queues.get(sel);
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
            0x12 => self.queues.len() as u64,
            0x14 => u64::from(self.status),
            0x15 => u64::from(self.config_generation),
            0x16 => u64::from(self.queue_sel),
            0x18 => q.map_or(0, |q| u64::from(q.size())),
            0x1a => u64::from(self.queue_vectors.get(sel).copied().unwrap_or(NO_VECTOR)),
            0x1c => u64::from(q.is_some_and(|q| q.ready())),
            0x1e => 0,
            0x20 => q.map_or(0, |q| q.desc_table()),
            0x28 => q.map_or(0, |q| q.avail_ring()),
            0x30 => q.map_or(0, |q| q.used_ring()),
            _ => 0,
        }
    }

    fn common_write(&mut self, off: u64, v: u64) {
        let lo = Some(v as u32);
        let hi = Some((v >> 32) as u32);
        let sel = self.queue_sel as usize;
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
            // A vector the table does not have reads back as NO_VECTOR
            // (the driver checks, and falls back to fewer vectors).
            0x10 => self.msix_config = self.vector_or_none(v as u16),
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
            0x1a => {
                let vector = self.vector_or_none(v as u16);
                if let Some(slot) = self.queue_vectors.get_mut(sel) {
                    *slot = vector;
                }
            }
            _ => {
                let Some(q) = self.queues.get_mut(sel) else {
                    return;
                };
                match off {
                    0x18 => q.set_size(v as u16),
                    0x1c => q.set_ready(v == 1),
                    0x20 => q.set_desc_table_address(lo, hi),
                    0x24 => q.set_desc_table_address(None, lo),
                    0x28 => q.set_avail_ring_address(lo, hi),
                    0x2c => q.set_avail_ring_address(None, lo),
                    0x30 => q.set_used_ring_address(lo, hi),
                    0x34 => q.set_used_ring_address(None, lo),
                    _ => {}
                }
            }
        }
    }

    fn vector_or_none(&self, v: u16) -> u16 {
        if (v as usize) < self.msix.len() {
            v
        } else {
            NO_VECTOR
        }
    }

    fn msix_table_end(&self) -> u64 {
        MSIX_TABLE + 16 * self.msix.len() as u64
    }
}

fn to_u64(data: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = data.len().min(8);
    b[..n].copy_from_slice(&data[..n]);
    u64::from_le_bytes(b)
}

impl<D: VirtioDevice> PciFunction for PciTransport<D> {
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
                let mut b = [0u8; 8];
                let n = data.len().min(8);
                self.device.read_config(o - DEVICE, &mut b[..n]);
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
            o if (MSIX_TABLE..self.msix_table_end()).contains(&o) => {
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
            // The value written is the queue's index (16 bits).
            o if (NOTIFY..NOTIFY + 4).contains(&o) => self.notify(v & 0xffff),
            o if (MSIX_TABLE..self.msix_table_end()).contains(&o) => {
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

impl<D: VirtioDevice> BackendInput for PciTransport<D> {
    fn wants_backend_input(&self) -> bool {
        self.device.wants_backend_input()
    }

    fn backend_input(&mut self) {
        let live = self.live();
        let r = self
            .device
            .backend_input(live, &self.memory, &mut self.queues);
        self.after_work(r);
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

#[cfg(test)]
mod net_tests {
    use super::*;
    use crate::devices::bus::PioDevice;
    use crate::devices::pci::{PciBus, PciConfigPorts};
    use crate::devices::virtio::net::tests::wire;
    use std::io::Write;
    use std::sync::Mutex;
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestAddress;
    use vmm_sys_util::eventfd::EventFd;

    fn cfg_read(ports: &mut PciConfigPorts, reg: u32) -> u32 {
        ports.write(0, &(0x8000_0000 | reg).to_le_bytes());
        let mut b = [0u8; 4];
        ports.read(4, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn a_network_card_on_pci_has_two_queues_and_a_vector_each() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let (card, wire) = wire();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let s2 = sent.clone();
        let msi: MsiSender = Arc::new(move |_, _, data| s2.lock().unwrap().push(data));
        let wake = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let dev = Arc::new(Mutex::new(PciNet::new(
            Net::new(Arc::new(card), [2, 0, 0, 0, 0, 2], wake),
            mem.clone(),
            msi,
            0xe000_0000,
        )));
        let mut ports = PciConfigPorts::new(PciBus {
            slots: vec![dev.clone()],
        });
        assert_eq!(cfg_read(&mut ports, 0), 0x1041_1af4, "virtio-net, modern");
        assert_eq!(
            cfg_read(&mut ports, 8) >> 8,
            0x02_00_00,
            "Ethernet controller"
        );
        let mut d = dev.lock().unwrap();
        let mut n = [0u8; 2];
        d.bar_read(COMMON + 0x12, &mut n);
        assert_eq!(u16::from_le_bytes(n), 2, "num_queues");
        let msix_cap = d.msix_cap;
        assert_eq!(
            u16::from_le_bytes([d.config.byte(msix_cap + 2), d.config.byte(msix_cap + 3)]) & 0x7ff,
            2,
            "three MSI-X vectors: configuration, receive, transmit"
        );
        // Vectors 0 (config), 1 (rx), 2 (tx), each with its own data.
        for v in 0..3u64 {
            d.bar_write(MSIX_TABLE + 16 * v, &0xfee0_0000u32.to_le_bytes());
            d.bar_write(MSIX_TABLE + 16 * v + 8, &(0x40 + v as u32).to_le_bytes());
        }
        d.config()
            .write_bytes(u16::from(msix_cap) + 2, &0x8000u16.to_le_bytes());
        let rx = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
        for (q, vector) in [(0u16, 1u16), (1, 2)] {
            d.bar_write(COMMON + 0x16, &q.to_le_bytes());
            d.bar_write(COMMON + 0x1a, &vector.to_le_bytes());
            d.bar_write(COMMON + 0x18, &16u16.to_le_bytes());
        }
        d.bar_write(COMMON + 0x16, &0u16.to_le_bytes());
        d.bar_write(COMMON + 0x20, &rx.desc_table_addr().0.to_le_bytes());
        d.bar_write(COMMON + 0x28, &rx.avail_addr().0.to_le_bytes());
        d.bar_write(COMMON + 0x30, &rx.used_addr().0.to_le_bytes());
        d.bar_write(COMMON + 0x1c, &1u16.to_le_bytes());
        let mut v = [0u8; 2];
        d.bar_read(COMMON + 0x1a, &mut v);
        assert_eq!(u16::from_le_bytes(v), 1, "queue 0's vector reads back");
        d.bar_write(
            COMMON + 0x14,
            &[(STATUS_DRIVER_OK | STATUS_FEATURES_OK) as u8 | 3],
        );
        rx.add_desc_chains(
            &[RawDescriptor::from(SplitDescriptor::new(
                0x30_000,
                1526,
                virtio_bindings::bindings::virtio_ring::VRING_DESC_F_WRITE as u16,
                0,
            ))],
            0,
        )
        .unwrap();
        // A notify write carries the queue's index.
        d.bar_write(NOTIFY, &0u16.to_le_bytes());
        (&wire).write_all(&[0x11; 64]).unwrap();
        BackendInput::backend_input(&mut *d);
        assert_eq!(
            *sent.lock().unwrap(),
            vec![0x41],
            "the receive queue's vector"
        );
        assert_eq!(d.device.metrics.rx_frames, 1);
    }
}
