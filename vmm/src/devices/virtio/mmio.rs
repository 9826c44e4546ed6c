//! The virtio-mmio transport (virtio 1.x, "version 2" registers) for any
//! [`VirtioDevice`]: feature negotiation, the device's queues, notifications
//! that run the device, and an interrupt through an EventFd (irqfd).
//! Devices are announced in the DSDT or on the kernel command line
//! (`virtio_mmio.device=4K@0xd0000000:5`).

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::block::Block;
use super::device::{BackendInput, UsedQueues, VirtioDevice};
use super::net::Net;

pub use super::block::{VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_ID_BLOCK};
pub use super::device::VIRTIO_F_VERSION_1;

pub const MMIO_MAGIC: u32 = 0x7472_6976; // "virt"
pub const MMIO_VERSION: u32 = 2;
pub const VENDOR_ID: u32 = 0x4452_5944; // "DYRD"
pub const QUEUE_MAX: u16 = 256;
/// Size of one device's register window.
pub const MMIO_WINDOW: u64 = 0x1000;

/// Device status bits.
pub const STATUS_ACKNOWLEDGE: u32 = 1;
pub const STATUS_DRIVER: u32 = 2;
pub const STATUS_DRIVER_OK: u32 = 4;
pub const STATUS_FEATURES_OK: u32 = 8;
pub const STATUS_NEEDS_RESET: u32 = 0x40;
pub const STATUS_FAILED: u32 = 0x80;

/// Register offsets.
pub mod reg {
    pub const MAGIC: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

/// The register window of one virtio-mmio device, as the guest's MMIO
/// exits reach it.
pub trait MmioRegisters: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A virtio device behind virtio-mmio registers.
pub struct MmioTransport<D: VirtioDevice> {
    pub device: D,
    queues: Vec<Queue>,
    memory: GuestMemoryMmap,
    irq: EventFd,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    interrupt_status: u32,
    config_generation: u32,
    /// Interrupts raised so far.
    pub interrupts: u64,
    /// Notifications the driver sent.
    pub notifications: u64,
}

/// A block device on virtio-mmio.
pub type MmioBlock = MmioTransport<Block>;
/// A network card on virtio-mmio.
pub type MmioNet = MmioTransport<Net>;

impl<D: VirtioDevice> MmioTransport<D> {
    pub fn new(device: D, memory: GuestMemoryMmap, irq: EventFd) -> Self {
        let queues = (0..device.queue_count())
            .map(|_| Queue::new(QUEUE_MAX).expect("256 is a valid queue size"))
            .collect();
        Self {
            device,
            queues,
            memory,
            irq,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            interrupt_status: 0,
            config_generation: 0,
            interrupts: 0,
            notifications: 0,
        }
    }

    fn device_features(&self) -> u64 {
        self.device.features()
    }

    /// The device status the driver wrote.
    pub fn status(&self) -> u32 {
        self.status
    }

    fn live(&self) -> bool {
        self.status & STATUS_DRIVER_OK != 0 && self.status & STATUS_NEEDS_RESET == 0
    }

    fn reset(&mut self) {
        for q in &mut self.queues {
            q.reset();
        }
        self.device.reset();
        self.status = 0;
        self.driver_features = 0;
        self.interrupt_status = 0;
        self.queue_sel = 0;
    }

    fn selected(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// Tells the driver the configuration changed: a new generation and a
    /// configuration-change interrupt.
    pub fn config_changed(&mut self) {
        self.config_generation = self.config_generation.wrapping_add(1);
        if self.status & STATUS_DRIVER_OK != 0 {
            self.interrupt_status |= 2;
            self.interrupts += 1;
            let _ = self.irq.write(1);
        }
    }

    /// Interrupts the driver for used buffers, or marks the device as
    /// needing a reset.
    fn after_work(&mut self, r: Result<UsedQueues, String>) {
        match r {
            Ok(0) => {}
            Ok(_) => {
                self.interrupt_status |= 1; // used buffer notification
                self.interrupts += 1;
                let _ = self.irq.write(1);
            }
            Err(e) => {
                tracing::error!(
                    "virtio device {}: {e}; it needs a reset",
                    self.device.device_type()
                );
                self.status |= STATUS_NEEDS_RESET;
                self.interrupt_status |= 2; // configuration change
                let _ = self.irq.write(1);
            }
        }
    }

    fn notify(&mut self, queue: u32) {
        self.notifications += 1;
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
}

impl<D: VirtioDevice> MmioRegisters for MmioTransport<D> {
    /// A 32-bit register read (config space may be read in smaller pieces).
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= reg::CONFIG {
            self.device.read_config(offset - reg::CONFIG, data);
            return;
        }
        let v: u32 = match offset {
            reg::MAGIC => MMIO_MAGIC,
            reg::VERSION => MMIO_VERSION,
            reg::DEVICE_ID => self.device.device_type(),
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device_features() as u32,
                1 => (self.device_features() >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => self
                .queues
                .get(self.queue_sel as usize)
                .map_or(0, |_| u32::from(QUEUE_MAX)),
            reg::QUEUE_READY => u32::from(
                self.queues
                    .get(self.queue_sel as usize)
                    .is_some_and(|q| q.ready()),
            ),
            reg::INTERRUPT_STATUS => self.interrupt_status,
            reg::STATUS => self.status,
            reg::CONFIG_GENERATION => self.config_generation,
            _ => 0,
        };
        let bytes = v.to_le_bytes();
        let n = data.len().min(4);
        data[..n].copy_from_slice(&bytes[..n]);
    }

    /// A 32-bit register write.
    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut raw = [0u8; 4];
        let n = data.len().min(4);
        raw[..n].copy_from_slice(&data[..n]);
        let v = u32::from_le_bytes(raw);
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = v,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            reg::DRIVER_FEATURES => match self.driver_features_sel {
                0 => self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(v),
                1 => {
                    self.driver_features =
                        (self.driver_features & 0xffff_ffff) | (u64::from(v) << 32)
                }
                _ => {}
            },
            reg::QUEUE_SEL => self.queue_sel = v,
            reg::QUEUE_NUM => {
                if let Some(q) = self.selected() {
                    q.set_size(v as u16)
                }
            }
            reg::QUEUE_READY => {
                if let Some(q) = self.selected() {
                    q.set_ready(v == 1)
                }
            }
            reg::QUEUE_DESC_LOW => {
                if let Some(q) = self.selected() {
                    q.set_desc_table_address(Some(v), None)
                }
            }
            reg::QUEUE_DESC_HIGH => {
                if let Some(q) = self.selected() {
                    q.set_desc_table_address(None, Some(v))
                }
            }
            reg::QUEUE_DRIVER_LOW => {
                if let Some(q) = self.selected() {
                    q.set_avail_ring_address(Some(v), None)
                }
            }
            reg::QUEUE_DRIVER_HIGH => {
                if let Some(q) = self.selected() {
                    q.set_avail_ring_address(None, Some(v))
                }
            }
            reg::QUEUE_DEVICE_LOW => {
                if let Some(q) = self.selected() {
                    q.set_used_ring_address(Some(v), None)
                }
            }
            reg::QUEUE_DEVICE_HIGH => {
                if let Some(q) = self.selected() {
                    q.set_used_ring_address(None, Some(v))
                }
            }
            reg::QUEUE_NOTIFY => self.notify(v),
            reg::INTERRUPT_ACK => self.interrupt_status &= !v,
            reg::STATUS => {
                if v == 0 {
                    self.reset();
                } else if v & STATUS_FEATURES_OK != 0 && self.status & STATUS_FEATURES_OK == 0 {
                    // Only features the device offered may be accepted.
                    if self.driver_features & !self.device_features() != 0 {
                        self.status = v & !STATUS_FEATURES_OK;
                        return;
                    }
                    self.status = v;
                } else {
                    self.status = v;
                }
            }
            _ => {}
        }
    }
}

impl<D: VirtioDevice> BackendInput for MmioTransport<D> {
    fn wants_backend_input(&self) -> bool {
        self.device.wants_backend_input()
    }

    fn backend_input(&mut self) {
        let live = self.live();
        let r = self
            .device
            .backend_input(live, &self.memory, &mut self.queues);
        self.after_work(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_bindings::bindings::virtio_ring::VRING_DESC_F_WRITE;
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    fn w(dev: &mut MmioBlock, off: u64, v: u32) {
        dev.write(off, &v.to_le_bytes());
    }

    fn r(dev: &mut MmioBlock, off: u64) -> u32 {
        let mut b = [0u8; 4];
        dev.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn device(read_only: bool) -> (MmioBlock, GuestMemoryMmap, EventFd, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        std::fs::File::create(&path)
            .unwrap()
            .set_len(8 * 512)
            .unwrap();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let dev = MmioBlock::new(
            Block::open(&path, read_only, "vol-x").unwrap(),
            mem.clone(),
            irq.try_clone().unwrap(),
        );
        (dev, mem, irq, dir)
    }

    #[test]
    fn identity_features_and_config_space() {
        let (mut d, _, _, _dir) = device(true);
        assert_eq!(r(&mut d, reg::MAGIC), MMIO_MAGIC);
        assert_eq!(r(&mut d, reg::VERSION), 2);
        assert_eq!(r(&mut d, reg::DEVICE_ID), VIRTIO_ID_BLOCK);
        w(&mut d, reg::DEVICE_FEATURES_SEL, 0);
        assert_ne!(
            r(&mut d, reg::DEVICE_FEATURES) & (1 << VIRTIO_BLK_F_RO),
            0,
            "read-only is offered"
        );
        w(&mut d, reg::DEVICE_FEATURES_SEL, 1);
        assert_eq!(r(&mut d, reg::DEVICE_FEATURES), 1, "VERSION_1");
        assert_eq!(r(&mut d, reg::CONFIG), 8, "capacity in sectors");
        // A driver asking for a feature that was not offered is refused.
        w(&mut d, reg::STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        w(&mut d, reg::DRIVER_FEATURES_SEL, 0);
        w(&mut d, reg::DRIVER_FEATURES, 1 << 3);
        w(
            &mut d,
            reg::STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        assert_eq!(r(&mut d, reg::STATUS) & STATUS_FEATURES_OK, 0);
    }

    #[test]
    fn a_notification_runs_the_queue_and_raises_the_interrupt_once_ready() {
        let (mut d, mem, irq, _dir) = device(false);
        let mock = MockSplitQueue::new(&mem, 16);
        let hdr = 0x10_000u64;
        mem.write_obj(1u32, GuestAddress(hdr)).unwrap(); // OUT
        mem.write_obj(0u64, GuestAddress(hdr + 8)).unwrap();
        mem.write_slice(&[7u8; 512], GuestAddress(0x20_000))
            .unwrap();
        let descs = [
            RawDescriptor::from(SplitDescriptor::new(hdr, 16, 0, 0)),
            RawDescriptor::from(SplitDescriptor::new(0x20_000, 512, 0, 0)),
            RawDescriptor::from(SplitDescriptor::new(
                0x30_000,
                1,
                VRING_DESC_F_WRITE as u16,
                0,
            )),
        ];
        mock.build_desc_chain(&descs).unwrap();

        // Before DRIVER_OK a notification does nothing.
        w(&mut d, reg::QUEUE_NOTIFY, 0);
        assert_eq!(d.interrupts, 0);

        w(&mut d, reg::STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        w(&mut d, reg::DRIVER_FEATURES_SEL, 1);
        w(&mut d, reg::DRIVER_FEATURES, 1);
        w(
            &mut d,
            reg::STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        assert_ne!(r(&mut d, reg::STATUS) & STATUS_FEATURES_OK, 0);
        w(&mut d, reg::QUEUE_SEL, 0);
        assert_eq!(r(&mut d, reg::QUEUE_NUM_MAX), u32::from(QUEUE_MAX));
        w(&mut d, reg::QUEUE_NUM, 16);
        for (lo, hi, addr) in [
            (
                reg::QUEUE_DESC_LOW,
                reg::QUEUE_DESC_HIGH,
                mock.desc_table_addr().0,
            ),
            (
                reg::QUEUE_DRIVER_LOW,
                reg::QUEUE_DRIVER_HIGH,
                mock.avail_addr().0,
            ),
            (
                reg::QUEUE_DEVICE_LOW,
                reg::QUEUE_DEVICE_HIGH,
                mock.used_addr().0,
            ),
        ] {
            w(&mut d, lo, addr as u32);
            w(&mut d, hi, (addr >> 32) as u32);
        }
        w(&mut d, reg::QUEUE_READY, 1);
        w(
            &mut d,
            reg::STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
        );

        w(&mut d, reg::QUEUE_NOTIFY, 0);
        assert_eq!(d.interrupts, 1);
        assert_eq!(irq.read().unwrap(), 1, "the irqfd fired");
        assert_eq!(r(&mut d, reg::INTERRUPT_STATUS), 1);
        assert_eq!(
            mem.read_obj::<u8>(GuestAddress(0x30_000)).unwrap(),
            0,
            "status OK"
        );
        assert_eq!(d.device.metrics.writes, 1);
        w(&mut d, reg::INTERRUPT_ACK, 1);
        assert_eq!(r(&mut d, reg::INTERRUPT_STATUS), 0);

        // Nothing new: a second notification raises no interrupt.
        w(&mut d, reg::QUEUE_NOTIFY, 0);
        assert_eq!(d.interrupts, 1);
        assert_eq!(d.notifications, 3);

        // Writing 0 to STATUS resets the device.
        w(&mut d, reg::STATUS, 0);
        assert_eq!(r(&mut d, reg::QUEUE_READY), 0);
    }
}

#[cfg(test)]
mod slot_tests {
    use super::*;
    use vm_memory::GuestAddress;

    #[test]
    fn an_empty_slot_gets_a_disk_and_loses_it_with_config_change_interrupts() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("d.raw");
        std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut d = MmioBlock::new(Block::empty_slot(), mem, irq.try_clone().unwrap());
        let cap = |d: &mut MmioBlock| {
            let mut b = [0u8; 8];
            d.read(reg::CONFIG, &mut b);
            u64::from_le_bytes(b)
        };
        let generation = |d: &mut MmioBlock| {
            let mut b = [0u8; 4];
            d.read(reg::CONFIG_GENERATION, &mut b);
            u32::from_le_bytes(b)
        };
        assert_eq!(cap(&mut d), 0, "empty slot");
        d.write(
            reg::STATUS,
            &(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK)
                .to_le_bytes(),
        );
        d.device.insert(&disk, false, "vol-hot").unwrap();
        d.config_changed();
        assert_eq!(cap(&mut d), 2048);
        assert_eq!(generation(&mut d), 1);
        assert_eq!(irq.read().unwrap(), 1);
        let mut isr = [0u8; 4];
        d.read(reg::INTERRUPT_STATUS, &mut isr);
        assert_eq!(isr[0] & 2, 2, "configuration change");
        assert_eq!(d.device.serial(), "vol-hot");
        assert!(d.device.insert(&disk, false, "again").is_err(), "slot busy");

        assert_eq!(d.device.eject().as_deref(), Some(disk.as_path()));
        d.config_changed();
        assert_eq!(cap(&mut d), 0);
        assert_eq!(generation(&mut d), 2);
        assert_eq!(d.device.path(), None);
    }
}

#[cfg(test)]
mod net_tests {
    use super::*;
    use crate::devices::virtio::net::tests::wire;
    use std::io::{Read, Write};
    use std::sync::Arc;
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    fn w(dev: &mut MmioNet, off: u64, v: u32) {
        dev.write(off, &v.to_le_bytes());
    }

    fn r(dev: &mut MmioNet, off: u64) -> u32 {
        let mut b = [0u8; 4];
        dev.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn set_queue(dev: &mut MmioNet, index: u32, mock: &MockSplitQueue<GuestMemoryMmap>) {
        w(dev, reg::QUEUE_SEL, index);
        assert_eq!(r(dev, reg::QUEUE_NUM_MAX), u32::from(QUEUE_MAX));
        w(dev, reg::QUEUE_NUM, 16);
        for (lo, hi, addr) in [
            (
                reg::QUEUE_DESC_LOW,
                reg::QUEUE_DESC_HIGH,
                mock.desc_table_addr().0,
            ),
            (
                reg::QUEUE_DRIVER_LOW,
                reg::QUEUE_DRIVER_HIGH,
                mock.avail_addr().0,
            ),
            (
                reg::QUEUE_DEVICE_LOW,
                reg::QUEUE_DEVICE_HIGH,
                mock.used_addr().0,
            ),
        ] {
            w(dev, lo, addr as u32);
            w(dev, hi, (addr >> 32) as u32);
        }
        w(dev, reg::QUEUE_READY, 1);
    }

    #[test]
    fn a_network_card_on_mmio_sends_and_receives_through_its_two_queues() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let (card, wire) = wire();
        let wake = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let net = Net::new(Arc::new(card), [2, 0, 0, 0, 0, 1], wake);
        let mut d = MmioNet::new(net, mem.clone(), irq.try_clone().unwrap());
        assert_eq!(r(&mut d, reg::DEVICE_ID), 1);
        let mut mac = [0u8; 6];
        d.read(reg::CONFIG, &mut mac);
        assert_eq!(mac, [2, 0, 0, 0, 0, 1]);
        w(&mut d, reg::QUEUE_SEL, 2);
        assert_eq!(r(&mut d, reg::QUEUE_NUM_MAX), 0, "no third queue");

        // Two queues in separate parts of memory.
        let rx = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
        let tx = MockSplitQueue::create(&mem, GuestAddress(0x8000), 16);
        w(&mut d, reg::STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        w(&mut d, reg::DRIVER_FEATURES_SEL, 1);
        w(&mut d, reg::DRIVER_FEATURES, 1);
        w(
            &mut d,
            reg::STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        set_queue(&mut d, 0, &rx);
        set_queue(&mut d, 1, &tx);
        w(
            &mut d,
            reg::STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
        );

        // Transmit: header + 60-byte frame in one buffer.
        let mut frame = vec![0u8; 12 + 60];
        frame[12..18].copy_from_slice(&[0xff; 6]);
        mem.write_slice(&frame, GuestAddress(0x20_000)).unwrap();
        tx.add_desc_chains(
            &[RawDescriptor::from(SplitDescriptor::new(
                0x20_000, 72, 0, 0,
            ))],
            0,
        )
        .unwrap();
        w(&mut d, reg::QUEUE_NOTIFY, 1);
        let mut got = [0u8; 128];
        assert_eq!((&wire).read(&mut got).unwrap(), 60);
        assert_eq!(irq.read().unwrap(), 1);
        assert_eq!(r(&mut d, reg::INTERRUPT_STATUS) & 1, 1);
        w(&mut d, reg::INTERRUPT_ACK, 1);

        // Receive: a buffer posted, a frame on the wire, the watcher's call.
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
        w(&mut d, reg::QUEUE_NOTIFY, 0);
        (&wire).write_all(&[0x5a; 64]).unwrap();
        assert!(BackendInput::wants_backend_input(&d));
        BackendInput::backend_input(&mut d);
        assert_eq!(irq.read().unwrap(), 1);
        assert_eq!(d.device.metrics.rx_frames, 1);
        assert_eq!(
            mem.read_obj::<u8>(GuestAddress(0x30_000 + 12)).unwrap(),
            0x5a
        );

        // After a reset, frames are dropped, not delivered.
        w(&mut d, reg::STATUS, 0);
        (&wire).write_all(&[0x5a; 64]).unwrap();
        BackendInput::backend_input(&mut d);
        assert_eq!(d.device.metrics.rx_dropped, 1);
    }
}
