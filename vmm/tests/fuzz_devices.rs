//! Property tests of what drydock's VMM parses from the guest: virtio
//! descriptor chains fed to virtio-blk and to virtio-net (with arbitrary
//! frames arriving from its backend), virtio-mmio register accesses, PCI
//! configuration space and BAR accesses (with BAR sizing), and the kernel,
//! initrd and boot-params loaders given arbitrary bytes. Nothing may panic,
//! overflow, or allocate a buffer of a size the guest (or the image) chose:
//! a counting global allocator fails a case whose largest single allocation
//! is above [`ALLOC_LIMIT`].
//!
//! CI runs 256 cases of each; `scripts/fuzz [CASES]` runs them long.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use drydock_vmm::arch::boot::{load_initrd, load_kernel, write_boot_params};
use drydock_vmm::devices::bus::PioDevice;
use drydock_vmm::devices::pci::{HostBridge, PciBus, PciConfigPorts, PciFunction};
use drydock_vmm::devices::virtio::block::{Block, SECTOR_SIZE};
use drydock_vmm::devices::virtio::device::{BackendInput, VirtioDevice};
use drydock_vmm::devices::virtio::mmio::{reg, MmioBlock, MmioRegisters};
use drydock_vmm::devices::virtio::net::{Net, MAX_FRAME, NET_HDR_LEN};
use drydock_vmm::devices::virtio::pci::{MsiSender, PciBlock, BAR0_SIZE};
use proptest::prelude::*;
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

// ---------------------------------------------------------------------------
// The largest single heap allocation of this thread, per case.

/// No buffer may be larger than this, whatever the guest asks for (the
/// block device copies through 64 KiB; a loader's headers are small).
const ALLOC_LIMIT: usize = 1 << 20;

struct Tracking;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|m| {
        if size > m.get() {
            m.set(size)
        }
    });
}

// SAFETY: every method forwards to the system allocator with the same
// arguments; `note` only updates a thread-local counter and never allocates.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller upholds `alloc`'s contract, passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: `ptr` was allocated by `System` (every allocation goes
        // through this type) with `layout`, as the caller guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// Runs `f`; returns its result and the largest allocation it made.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|m| m.set(0));
    let out = f();
    (out, LARGEST.with(|m| m.get()))
}

// ---------------------------------------------------------------------------
// Shared fixtures.

const MEM_SIZE: u64 = 1 << 20;
const HDR: u64 = 0x10_000;
const DATA: u64 = 0x20_000;
const STATUS: u64 = 0x30_000;
const DISK_SIZE: u64 = 64 * 1024;

fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

/// A 64 KiB disk of this thread (tests run on parallel threads).
fn disk(name: &str) -> PathBuf {
    let path = scratch().join(format!("{name}-{:?}.raw", std::thread::current().id()));
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap();
    f.set_len(DISK_SIZE).unwrap();
    path
}

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap()
}

/// Fills `len` bytes at `at` with a cheap pseudo-random stream from `seed`.
fn scribble(mem: &GuestMemoryMmap, at: u64, len: usize, seed: u64) {
    let mut x = seed | 1;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    mem.write_slice(&bytes, GuestAddress(at)).unwrap();
}

/// Guest addresses: the fixture's buffers, anywhere in memory, across its
/// end, and anywhere at all (including where `addr + len` wraps).
fn guest_addr() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => prop::sample::select(vec![HDR, DATA, STATUS, DATA + 512, DATA + 0x8000]),
        2 => 0..MEM_SIZE,
        1 => (MEM_SIZE - 64)..(MEM_SIZE + 64),
        1 => any::<u64>(),
        1 => (u64::MAX - 4096)..=u64::MAX,
    ]
}

fn desc_len() -> impl Strategy<Value = u32> {
    prop_oneof![
        3 => prop::sample::select(vec![0u32, 1, 16, 512, 1024, 4096]),
        2 => (1u32..16).prop_map(|s| s * 512),
        2 => 0u32..8192,
        1 => any::<u32>(),
        1 => (u32::MAX - 64)..=u32::MAX,
    ]
}

#[derive(Debug, Clone)]
struct Desc {
    addr: u64,
    len: u32,
    /// NEXT = 1, WRITE = 2, INDIRECT = 4 (and any other bits).
    flags: u16,
    next: u16,
}

fn desc() -> impl Strategy<Value = Desc> {
    (
        guest_addr(),
        desc_len(),
        prop_oneof![4 => 0u16..8, 1 => any::<u16>()],
        prop_oneof![4 => 0u16..16, 1 => any::<u16>()],
    )
        .prop_map(|(addr, len, flags, next)| Desc {
            addr,
            len,
            flags,
            next,
        })
}

/// A request the way a driver builds it (header, data, status) with
/// guest-chosen data addresses and lengths, sometimes one field broken.
fn well_formed_chain(kind: u32) -> impl Strategy<Value = Vec<Desc>> {
    (
        prop::collection::vec(
            (
                prop_oneof![4 => (0u64..64).prop_map(|k| DATA + 512 * k), 1 => guest_addr()],
                prop_oneof![4 => (1u32..16).prop_map(|s| s * 512), 1 => desc_len()],
                prop::bool::weighted(0.9),
            ),
            0..4,
        ),
        prop_oneof![6 => Just(kind == 0 || kind == 8), 1 => any::<bool>()],
        prop_oneof![3 => Just(None), 1 => (0usize..6, desc())
            .prop_map(Some)],
    )
        .prop_map(|(data, write, broken)| {
            let mut chain = vec![Desc {
                addr: HDR,
                len: 16,
                flags: 0,
                next: 0,
            }];
            for (addr, len, follow_kind) in data {
                let w = if follow_kind { write } else { !write };
                chain.push(Desc {
                    addr,
                    len,
                    flags: if w { 2 } else { 0 },
                    next: 0,
                });
            }
            chain.push(Desc {
                addr: STATUS,
                len: 1,
                flags: 2,
                next: 0,
            });
            let n = chain.len();
            for (i, d) in chain.iter_mut().enumerate() {
                if i + 1 < n {
                    d.flags |= 1;
                    d.next = (i + 1) as u16;
                }
            }
            if let Some((at, d)) = broken {
                let at = at % n;
                chain[at] = d;
            }
            chain
        })
}

/// Where a chain lives: the descriptor table itself, or an indirect table
/// one descriptor of the queue points at.
const INDIRECT_TABLE: u64 = 0x40_000;

fn descriptor_table() -> impl Strategy<Value = (Vec<Desc>, bool, u32)> {
    request_kind().prop_flat_map(|kind| {
        prop_oneof![
            1 => prop::collection::vec(desc(), 1..16).prop_map(move |d| (d, false, kind)),
            2 => (well_formed_chain(kind), prop::bool::weighted(0.25))
                .prop_map(move |(d, indirect)| (d, indirect, kind)),
        ]
    })
}

fn request_kind() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => prop::sample::select(vec![0u32, 1, 4, 8]),
        1 => any::<u32>(),
    ]
}

fn sector() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => 0u64..(DISK_SIZE / SECTOR_SIZE + 2),
        1 => any::<u64>(),
        1 => (u64::MAX / SECTOR_SIZE - 2)..=(u64::MAX / SECTOR_SIZE + 2),
    ]
}

// ---------------------------------------------------------------------------
// Register accesses.

#[derive(Debug, Clone)]
enum Access {
    Read { offset: u64, len: usize },
    Write { offset: u64, data: Vec<u8> },
}

fn access(offset: impl Strategy<Value = u64> + Clone) -> impl Strategy<Value = Access> {
    prop_oneof![
        (offset.clone(), 0usize..=8).prop_map(|(offset, len)| Access::Read { offset, len }),
        (offset, prop::collection::vec(any::<u8>(), 0..=8))
            .prop_map(|(offset, data)| Access::Write { offset, data }),
    ]
}

/// Values a driver would write mixed with arbitrary ones.
fn register_write(offset: impl Strategy<Value = u64>) -> impl Strategy<Value = Access> {
    (
        offset,
        prop_oneof![
            3 => prop::sample::select(vec![0u32, 1, 2, 3, 0xb, 0xf, 0x10, 0x1000, 0x2000, 0x3000, 256, 0xffff_ffff]),
            1 => any::<u32>(),
        ],
    )
        .prop_map(|(offset, v)| Access::Write {
            offset,
            data: v.to_le_bytes().to_vec(),
        })
}

const MMIO_REGS: [u64; 24] = [
    reg::MAGIC,
    reg::VERSION,
    reg::DEVICE_ID,
    reg::VENDOR_ID,
    reg::DEVICE_FEATURES,
    reg::DEVICE_FEATURES_SEL,
    reg::DRIVER_FEATURES,
    reg::DRIVER_FEATURES_SEL,
    reg::QUEUE_SEL,
    reg::QUEUE_NUM_MAX,
    reg::QUEUE_NUM,
    reg::QUEUE_READY,
    reg::QUEUE_NOTIFY,
    reg::INTERRUPT_STATUS,
    reg::INTERRUPT_ACK,
    reg::STATUS,
    reg::QUEUE_DESC_LOW,
    reg::QUEUE_DESC_HIGH,
    reg::QUEUE_DRIVER_LOW,
    reg::QUEUE_DRIVER_HIGH,
    reg::QUEUE_DEVICE_LOW,
    reg::QUEUE_DEVICE_HIGH,
    reg::CONFIG_GENERATION,
    reg::CONFIG,
];

fn mmio_offset() -> impl Strategy<Value = u64> + Clone {
    prop_oneof![
        4 => prop::sample::select(MMIO_REGS.to_vec()),
        2 => 0u64..0x1000,
        1 => any::<u64>(),
        1 => (u64::MAX - 16)..=u64::MAX,
    ]
}

fn w32(dev: &mut MmioBlock, off: u64, v: u32) {
    dev.write(off, &v.to_le_bytes());
}

/// Brings a device to DRIVER_OK with its queue at 0x1000/0x2000/0x3000.
fn mmio_driver_ok(dev: &mut MmioBlock, size: u16) {
    w32(dev, reg::STATUS, 1 | 2);
    w32(dev, reg::DRIVER_FEATURES_SEL, 1);
    w32(dev, reg::DRIVER_FEATURES, 1);
    w32(dev, reg::STATUS, 1 | 2 | 8);
    w32(dev, reg::QUEUE_SEL, 0);
    w32(dev, reg::QUEUE_NUM, u32::from(size));
    w32(dev, reg::QUEUE_DESC_LOW, 0x1000);
    w32(dev, reg::QUEUE_DRIVER_LOW, 0x2000);
    w32(dev, reg::QUEUE_DEVICE_LOW, 0x3000);
    w32(dev, reg::QUEUE_READY, 1);
    w32(dev, reg::STATUS, 1 | 2 | 8 | 4);
}

// ---------------------------------------------------------------------------
// PCI.

#[derive(Debug, Clone)]
enum PciOp {
    /// A dword to 0xcf8: enable bit, bus, slot, function, register.
    Address(u32),
    /// An access to the configuration ports (0xcf8..0xd00).
    Port(Access),
    /// An MMIO access routed through the bus's BAR decode.
    Bar(Access),
}

fn cfg_address() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => (0u32..4, 0u32..0x100).prop_map(|(slot, reg)| 0x8000_0000 | (slot << 11) | reg),
        1 => any::<u32>(),
    ]
}

fn bar_offset() -> impl Strategy<Value = u64> + Clone {
    prop_oneof![
        4 => (0u64..BAR0_SIZE).prop_map(|o| 0xe000_0000 + o),
        2 => prop::sample::select(vec![0u64, 0x14, 0x1c, 0x3000, 0x3800, 0x380c, 0x3810, 0x381c, 0x3c00])
            .prop_map(|o| 0xe000_0000 + o),
        1 => any::<u64>(),
        1 => (u64::MAX - 16)..=u64::MAX,
    ]
}

fn pci_op() -> impl Strategy<Value = PciOp> {
    prop_oneof![
        2 => cfg_address().prop_map(PciOp::Address),
        1 => access(prop_oneof![
            4 => 0u64..8,
            1 => any::<u16>().prop_map(u64::from),
            1 => (u64::from(u16::MAX) - 8)..=u64::from(u16::MAX),
        ]).prop_map(PciOp::Port),
        // BAR0 moves and sizing: whole dwords to BAR0 (0x10) and BAR0_HIGH (0x14).
        1 => register_write(prop::sample::select(vec![4u64])).prop_map(PciOp::Port),
        2 => access(bar_offset()).prop_map(PciOp::Bar),
        1 => register_write(bar_offset()).prop_map(PciOp::Bar),
    ]
}

fn pio(dev: &mut dyn PioDevice, a: &Access) {
    match a {
        Access::Read { offset, len } => {
            let mut b = vec![0u8; *len];
            dev.read(*offset as u16, &mut b);
        }
        Access::Write { offset, data } => {
            let _ = dev.write(*offset as u16, data);
        }
    }
}

// ---------------------------------------------------------------------------
// Kernel images.

/// An ELF64 header and program headers with arbitrary fields, then
/// arbitrary bytes (notes, segments).
fn elf_image() -> impl Strategy<Value = Vec<u8>> {
    let phdr = (
        prop_oneof![3 => Just(1u32), 2 => Just(4u32), 1 => any::<u32>()],
        prop_oneof![3 => 0u64..0x2000, 1 => any::<u64>()],
        prop_oneof![
            3 => 0x10_0000u64..0x40_0000,
            1 => any::<u64>()
        ],
        prop_oneof![3 => 0u64..0x2000, 1 => any::<u64>()],
        prop_oneof![3 => 0u64..0x2000, 1 => any::<u64>()],
    );
    (
        prop_oneof![3 => Just(62u16), 1 => any::<u16>()],
        any::<u64>(),
        prop_oneof![3 => Just(64u64), 1 => any::<u64>()],
        prop_oneof![3 => Just(56u16), 1 => any::<u16>()],
        prop_oneof![3 => 0u16..6, 1 => any::<u16>()],
        prop::collection::vec(phdr, 0..6),
        prop::collection::vec(any::<u8>(), 0..2048),
    )
        .prop_map(|(machine, entry, phoff, phentsize, phnum, phdrs, tail)| {
            let mut b = vec![0u8; 64];
            b[..4].copy_from_slice(b"\x7fELF");
            b[4] = 2; // 64-bit
            b[5] = 1; // little-endian
            b[6] = 1;
            b[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
            b[18..20].copy_from_slice(&machine.to_le_bytes());
            b[20..24].copy_from_slice(&1u32.to_le_bytes());
            b[24..32].copy_from_slice(&entry.to_le_bytes());
            b[32..40].copy_from_slice(&phoff.to_le_bytes());
            b[52..54].copy_from_slice(&64u16.to_le_bytes());
            b[54..56].copy_from_slice(&phentsize.to_le_bytes());
            b[56..58].copy_from_slice(&phnum.to_le_bytes());
            for (p_type, offset, paddr, filesz, memsz) in phdrs {
                let mut p = vec![0u8; 56];
                p[..4].copy_from_slice(&p_type.to_le_bytes());
                p[8..16].copy_from_slice(&offset.to_le_bytes());
                p[16..24].copy_from_slice(&paddr.to_le_bytes());
                p[24..32].copy_from_slice(&paddr.to_le_bytes());
                p[32..40].copy_from_slice(&filesz.to_le_bytes());
                p[40..48].copy_from_slice(&memsz.to_le_bytes());
                b.extend(p);
            }
            b.extend(tail);
            b
        })
}

/// A bzImage boot sector and setup header with arbitrary fields, then an
/// arbitrary payload.
fn bzimage() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![3 => 0u8..8, 1 => any::<u8>()],
        prop_oneof![3 => 0x200u16..0x210, 1 => any::<u16>()],
        prop_oneof![3 => Just(1u8), 1 => any::<u8>()],
        prop_oneof![3 => 0x10_0000u32..0x20_0000, 1 => any::<u32>()],
        any::<u32>(),
        prop::collection::vec(any::<u8>(), 0..0x3000),
    )
        .prop_map(|(setup_sects, version, loadflags, code32, syssize, tail)| {
            let mut b = vec![0u8; 0x400];
            b[0x1f1] = setup_sects;
            b[0x1f4..0x1f8].copy_from_slice(&syssize.to_le_bytes());
            b[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
            b[0x202..0x206].copy_from_slice(b"HdrS");
            b[0x206..0x208].copy_from_slice(&version.to_le_bytes());
            b[0x211] = loadflags;
            b[0x214..0x218].copy_from_slice(&code32.to_le_bytes());
            b.extend(tail);
            b
        })
}

fn kernel_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..4096),
        2 => elf_image(),
        2 => bzimage(),
    ]
}

fn write_file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch().join(format!("{name}-{:?}", std::thread::current().id()));
    std::fs::write(&path, bytes).unwrap();
    path
}

/// One end of a non-blocking SOCK_SEQPACKET pair as a network card's
/// backend (it keeps frame boundaries as a TAP does), and the other.
fn wire() -> (std::fs::File, std::fs::File) {
    use std::os::fd::FromRawFd;
    let mut fds = [0i32; 2];
    // SAFETY: socketpair writes two descriptors into `fds`.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(rc, 0);
    // SAFETY: both descriptors were just made and are owned here only.
    unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    }
}

/// Stores `descs` as a queue's descriptor table (or as an indirect table
/// its first descriptor points at) and `heads` in its avail ring.
fn fill_queue(
    mem: &GuestMemoryMmap,
    mock: &MockSplitQueue<GuestMemoryMmap>,
    descs: &[Desc],
    indirect: bool,
    indirect_at: u64,
    heads: &[u16],
) {
    let raw = |d: &Desc| RawDescriptor::from(SplitDescriptor::new(d.addr, d.len, d.flags, d.next));
    if indirect {
        for (i, d) in descs.iter().enumerate() {
            mem.write_obj(raw(d), GuestAddress(indirect_at + 16 * i as u64))
                .unwrap();
        }
        let table = Desc {
            addr: indirect_at,
            len: 16 * descs.len() as u32,
            flags: 4,
            next: 0,
        };
        mock.desc_table().store(0, raw(&table)).unwrap();
    } else {
        for (i, d) in descs.iter().enumerate() {
            mock.desc_table().store(i as u16, raw(d)).unwrap();
        }
    }
    for (i, h) in heads.iter().enumerate() {
        mock.avail().ring().ref_at(i).unwrap().store(u16::to_le(*h));
    }
    mock.avail().idx().store(u16::to_le(heads.len() as u16));
}

// ---------------------------------------------------------------------------

proptest! {
    /// Arbitrary descriptor tables on both queues of virtio-net (any
    /// address, length, direction, loops, indirect tables) while arbitrary
    /// frames (empty, runts, jumbo) arrive from its backend: nothing
    /// panics, no allocation follows a guest-chosen length, no used length
    /// claims more than a header and the largest frame.
    #[test]
    fn network_chains_and_frames_never_panic_nor_allocate_what_the_guest_asks(
        rx_descs in prop::collection::vec(desc(), 1..16),
        tx_descs in prop::collection::vec(desc(), 1..16),
        rx_indirect in prop::bool::weighted(0.2),
        tx_indirect in prop::bool::weighted(0.2),
        heads in prop::collection::vec(prop_oneof![4 => 0u16..16, 1 => any::<u16>()], 1..4),
        frames in prop::collection::vec(
            prop_oneof![4 => 0usize..1600, 1 => 1600usize..70_000],
            0..6,
        ),
        seed in any::<u64>(),
        live in prop::bool::weighted(0.9),
    ) {
        let mem = memory();
        scribble(&mem, DATA, 0x10_000, seed);
        let (card, wire) = wire();
        let wake = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let mut net = Net::new(Arc::new(card), [2, 0, 0, 0, 0, 9], wake);
        let rx = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
        let tx = MockSplitQueue::create(&mem, GuestAddress(0x5000), 16);
        fill_queue(&mem, &rx, &rx_descs, rx_indirect, INDIRECT_TABLE, &heads);
        fill_queue(&mem, &tx, &tx_descs, tx_indirect, INDIRECT_TABLE + 0x1000, &heads);
        for len in &frames {
            // A frame the wire cannot carry is simply not sent.
            let _ = std::io::Write::write(&mut &wire, &vec![0xa5u8; *len]);
        }
        let mut queues: Vec<Queue> = vec![rx.create_queue().unwrap(), tx.create_queue().unwrap()];
        let ((), largest) = largest_allocation(|| {
            let _ = net.queue_notify(1, &mem, &mut queues);
            let _ = net.backend_input(live, &mem, &mut queues);
            let _ = net.queue_notify(0, &mem, &mut queues);
            let _ = net.queue_notify(7, &mem, &mut queues);
        });
        prop_assert!(largest <= ALLOC_LIMIT, "allocated {largest} bytes");
        for (mock, name) in [(&rx, "rx"), (&tx, "tx")] {
            let used = mock.used().idx().load();
            for i in 0..usize::from(used.min(16)) {
                let len = mock.used().ring().ref_at(i).unwrap().load().len();
                prop_assert!(len as usize <= NET_HDR_LEN + MAX_FRAME, "{name} used length {len}");
            }
        }
        let m = &net.metrics;
        prop_assert!(m.rx_frames + m.rx_dropped <= frames.len() as u64 + 1);
        prop_assert!(m.tx_frames <= 16);
    }

    /// The same card behind its virtio-mmio registers, driven by arbitrary
    /// register accesses while frames arrive.
    #[test]
    fn network_card_mmio_registers_never_panic(
        set_up in any::<bool>(),
        seed in any::<u64>(),
        ops in prop::collection::vec(
            prop_oneof![2 => access(mmio_offset()), 2 => register_write(mmio_offset())],
            0..48,
        ),
        frames in prop::collection::vec(0usize..2000, 0..4),
    ) {
        let mem = memory();
        scribble(&mem, 0x1000, 0x3000, seed);
        let (card, wire) = wire();
        let wake = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut dev = drydock_vmm::devices::virtio::mmio::MmioNet::new(
            Net::new(Arc::new(card), [2, 0, 0, 0, 0, 8], wake),
            mem.clone(),
            irq,
        );
        let ((), largest) = largest_allocation(|| {
            if set_up {
                for (off, v) in [(reg::STATUS, 3u32), (reg::DRIVER_FEATURES_SEL, 1), (reg::DRIVER_FEATURES, 1), (reg::STATUS, 0xb)] {
                    dev.write(off, &v.to_le_bytes());
                }
                for q in 0..2u32 {
                    for (off, v) in [(reg::QUEUE_SEL, q), (reg::QUEUE_NUM, 16), (reg::QUEUE_DESC_LOW, 0x1000 + q * 0x800), (reg::QUEUE_DRIVER_LOW, 0x2000 + q * 0x800), (reg::QUEUE_DEVICE_LOW, 0x3000 + q * 0x800), (reg::QUEUE_READY, 1)] {
                        dev.write(off, &v.to_le_bytes());
                    }
                }
                dev.write(reg::STATUS, &0xfu32.to_le_bytes());
            }
            for (i, op) in ops.iter().enumerate() {
                if let Some(len) = frames.get(i) {
                    let _ = std::io::Write::write(&mut &wire, &vec![0x3cu8; *len]);
                    BackendInput::backend_input(&mut dev);
                }
                match op {
                    Access::Read { offset, len } => {
                        let mut b = vec![0u8; *len];
                        dev.read(*offset, &mut b);
                    }
                    Access::Write { offset, data } => dev.write(*offset, data),
                }
            }
            dev.write(reg::QUEUE_NOTIFY, &1u32.to_le_bytes());
            dev.write(reg::QUEUE_NOTIFY, &0u32.to_le_bytes());
        });
        prop_assert!(largest <= ALLOC_LIMIT, "allocated {largest} bytes");
        let mut id = [0u8; 4];
        dev.read(reg::DEVICE_ID, &mut id);
        prop_assert_eq!(u32::from_le_bytes(id), 1);
        let _ = dev.device.device_type();
    }

    /// Arbitrary descriptor tables (chains, loops, indirect tables, any
    /// address and length) and avail rings fed to virtio-blk.
    #[test]
    fn descriptor_chains_never_panic_nor_allocate_what_the_guest_asks(
        (descs, indirect, kind) in descriptor_table(),
        heads in prop_oneof![
            2 => Just(vec![0u16]),
            1 => prop::collection::vec(prop_oneof![4 => 0u16..16, 1 => any::<u16>()], 1..4),
        ],
        avail_idx in prop_oneof![4 => Just(None), 1 => any::<u16>().prop_map(Some)],
        sector in sector(),
        seed in any::<u64>(),
        read_only in prop::bool::weighted(0.2),
    ) {
        let mem = memory();
        // Whatever an indirect descriptor points at in the data buffer.
        scribble(&mem, DATA, 4096, seed);
        mem.write_obj(kind.to_le(), GuestAddress(HDR)).unwrap();
        mem.write_obj(sector.to_le(), GuestAddress(HDR + 8)).unwrap();
        let path = disk("chains");
        let mut block = Block::open(&path, read_only, "vol-fuzz").unwrap();
        let mock = MockSplitQueue::new(&mem, 16);
        let raw = |d: &Desc| RawDescriptor::from(SplitDescriptor::new(d.addr, d.len, d.flags, d.next));
        if indirect {
            for (i, d) in descs.iter().enumerate() {
                mem.write_obj(raw(d), GuestAddress(INDIRECT_TABLE + 16 * i as u64)).unwrap();
            }
            let table = Desc { addr: INDIRECT_TABLE, len: 16 * descs.len() as u32, flags: 4, next: 0 };
            mock.desc_table().store(0, raw(&table)).unwrap();
        } else {
            for (i, d) in descs.iter().enumerate() {
                mock.desc_table().store(i as u16, raw(d)).unwrap();
            }
        }
        for (i, h) in heads.iter().enumerate() {
            mock.avail().ring().ref_at(i).unwrap().store(u16::to_le(*h));
        }
        mock.avail().idx().store(u16::to_le(avail_idx.unwrap_or(heads.len() as u16)));
        let mut queue: Queue = mock.create_queue().unwrap();
        let (result, largest) = largest_allocation(|| block.process_queue(&mem, &mut queue));
        let _ = result;
        prop_assert!(largest <= ALLOC_LIMIT, "allocated {largest} bytes");
        // Used lengths never exceed what one request can move.
        let used = mock.used().idx().load();
        for i in 0..usize::from(used.min(16)) {
            let len = mock.used().ring().ref_at(i).unwrap().load().len();
            prop_assert!(u64::from(len) <= DISK_SIZE + 1 || len <= 21, "used length {len}");
        }
        // Nothing written beyond the disk's end.
        prop_assert_eq!(std::fs::metadata(&path).unwrap().len(), DISK_SIZE);
        prop_assert!(block.metrics.bytes_read <= DISK_SIZE * 16);
    }

    /// Arbitrary virtio-mmio register reads and writes (queue set-up,
    /// notifications, status changes, config space), with or without a
    /// driver that reached DRIVER_OK over a queue of pseudo-random bytes.
    #[test]
    fn mmio_registers_never_panic(
        set_up in any::<bool>(),
        size in prop_oneof![Just(16u16), Just(256), any::<u16>()],
        seed in any::<u64>(),
        ops in prop::collection::vec(
            prop_oneof![2 => access(mmio_offset()), 2 => register_write(mmio_offset())],
            0..48,
        ),
    ) {
        let mem = memory();
        scribble(&mem, 0x1000, 0x3000, seed);
        let path = disk("mmio");
        let block = Block::open(&path, false, "vol-mmio").unwrap();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut dev = MmioBlock::new(block, mem.clone(), irq);
        let ((), largest) = largest_allocation(|| {
            if set_up {
                mmio_driver_ok(&mut dev, size);
            }
            for op in &ops {
                match op {
                    Access::Read { offset, len } => {
                        let mut b = vec![0u8; *len];
                        dev.read(*offset, &mut b);
                    }
                    Access::Write { offset, data } => dev.write(*offset, data),
                }
            }
            w32(&mut dev, reg::QUEUE_NOTIFY, 0);
        });
        prop_assert!(largest <= ALLOC_LIMIT, "allocated {largest} bytes");
        prop_assert_eq!(std::fs::metadata(&path).unwrap().len(), DISK_SIZE);
        let mut magic = [0u8; 4];
        dev.read(reg::MAGIC, &mut magic);
        prop_assert_eq!(u32::from_le_bytes(magic), 0x7472_6976);
    }

    /// Arbitrary configuration-mechanism #1 accesses (any slot, register,
    /// width and offset), BAR0 moves and sizing, and MMIO accesses routed by
    /// the bus's BAR decode into virtio-pci (common config, notify, ISR,
    /// device config, MSI-X table and PBA).
    #[test]
    fn pci_config_space_and_bars_never_panic(
        seed in any::<u64>(),
        ops in prop::collection::vec(pci_op(), 0..64),
    ) {
        let mem = memory();
        scribble(&mem, 0, 0x4000, seed);
        let path = disk("pci");
        let msi: MsiSender = Arc::new(|_, _, _| {});
        let blk = Arc::new(Mutex::new(PciBlock::new(
            Block::open(&path, false, "vol-pci").unwrap(),
            mem.clone(),
            msi.clone(),
            0xe000_0000,
        )));
        let empty = Arc::new(Mutex::new(PciBlock::new(
            Block::empty_slot(),
            mem,
            msi,
            0xe000_4000,
        )));
        let bus = PciBus {
            slots: vec![Arc::new(Mutex::new(HostBridge::default())), blk, empty],
        };
        let mut ports = PciConfigPorts::new(bus.clone());
        let ((), largest) = largest_allocation(|| {
            for op in &ops {
                match op {
                    PciOp::Address(a) => {
                        let _ = ports.write(0, &a.to_le_bytes());
                    }
                    PciOp::Port(a) => pio(&mut ports, a),
                    PciOp::Bar(a) => {
                        let addr = match a {
                            Access::Read { offset, .. } | Access::Write { offset, .. } => *offset,
                        };
                        let Some((f, off)) = bus.find_bar(addr) else { continue };
                        let mut f = f.lock().unwrap();
                        match a {
                            Access::Read { len, .. } => {
                                let mut b = vec![0u8; *len];
                                f.bar_read(off, &mut b);
                            }
                            Access::Write { data, .. } => f.bar_write(off, data),
                        }
                    }
                }
            }
        });
        prop_assert!(largest <= ALLOC_LIMIT, "allocated {largest} bytes");
        prop_assert_eq!(std::fs::metadata(&path).unwrap().len(), DISK_SIZE);
        // Wherever the guest moved the BARs, each stays aligned to its size
        // and sizing still reports it.
        for slot in &bus.slots[1..] {
            let mut f = slot.lock().unwrap();
            let cfg = f.config();
            let (base, size) = cfg.bar0().unwrap();
            prop_assert_eq!(size, BAR0_SIZE);
            prop_assert_eq!(base % size, 0);
            cfg.write_bytes(0x10, &0xffff_ffffu32.to_le_bytes());
            prop_assert_eq!(cfg.read(0x10) & !0xf, !(BAR0_SIZE as u32 - 1));
        }
    }

    /// Direct writes to a configuration space at any offset and width.
    #[test]
    fn config_space_writes_at_any_offset_never_panic(
        writes in prop::collection::vec((any::<u16>(), prop::collection::vec(any::<u8>(), 0..=8)), 0..32),
        reads in prop::collection::vec(any::<u16>(), 0..16),
    ) {
        let mut bridge = HostBridge::default();
        let cfg = bridge.config();
        for (off, data) in &writes {
            cfg.write_bytes(*off, data);
        }
        for r in &reads {
            let _ = cfg.read(*r);
        }
        prop_assert_eq!(cfg.read(0), 0x29c0_8086, "identity is read-only");
    }

    /// The kernel loaders (ELF, then bzImage) and the zero page given
    /// arbitrary or half-valid images: an error or a load, never a panic
    /// nor a buffer of a size the image chose.
    #[test]
    fn kernel_loaders_and_boot_params_never_panic(
        image in kernel_bytes(),
        cmdline in "\\PC{0,64}",
        long_cmdline in any::<bool>(),
        initrd in prop_oneof![Just(None), any::<(u64, u64)>().prop_map(Some)],
        rsdp in any::<u64>(),
    ) {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
        let path = write_file("kernel", &image);
        let file = std::fs::File::open(&path).unwrap();
        let (loaded, largest) = largest_allocation(|| load_kernel(&mem, &file, &path));
        prop_assert!(largest <= ALLOC_LIMIT, "allocated {largest} bytes");
        let header = loaded.ok().and_then(|(_, h)| h);
        let cmdline = if long_cmdline { cmdline.repeat(100) } else { cmdline };
        let ((), largest) = largest_allocation(|| {
            let _ = write_boot_params(&mem, &cmdline, header, initrd, rsdp);
        });
        prop_assert!(largest <= ALLOC_LIMIT.max(cmdline.len() + 1), "allocated {largest} bytes");
    }
}

/// The longest file the scratch directory's file system accepts (ext4
/// with 4 KiB blocks: 16 TiB less a block; tmpfs, xfs, btrfs: more), found
/// by bisection with `set_len` on a sparse file.
fn largest_file_len() -> u64 {
    static MAX: OnceLock<u64> = OnceLock::new();
    *MAX.get_or_init(|| {
        let path = scratch().join("probe-largest-len");
        let f = std::fs::File::create(&path).unwrap();
        // set_len takes at most i64::MAX: 1 << 63 is always refused.
        let (mut ok, mut refused) = (0u64, 1u64 << 63);
        while refused - ok > 1 {
            let mid = ok + (refused - ok) / 2;
            if f.set_len(mid).is_ok() {
                ok = mid;
            } else {
                refused = mid;
            }
        }
        drop(f);
        std::fs::remove_file(&path).unwrap();
        assert!(
            ok >= 1 << 33,
            "the scratch file system takes files of at most {ok} bytes"
        );
        ok
    })
}

/// Initrds of any size the file system takes (sparse files): placed below
/// the MMIO gap above 1 MiB, or refused. Every case is exercised (a size
/// the file system refuses is a failure of the test, not a skipped case),
/// and the cases are counted: some fit, some are refused, some are beyond
/// 4 GiB (a u32 would wrap there).
#[test]
fn initrds_of_any_size_fit_or_are_refused() {
    use proptest::test_runner::{Config, TestRunner};
    let max = largest_file_len();
    let config = Config::default();
    let cases = config.cases;
    let mut runner = TestRunner::new(config);
    let (exercised, fit, refused, beyond_4g) = (
        Cell::new(0u32),
        Cell::new(0u32),
        Cell::new(0u32),
        Cell::new(0u32),
    );
    let sizes = prop_oneof![
        2 => 0u64..(6 << 20),
        1 => any::<u32>().prop_map(u64::from),
        1 => (1u64 << 32)..=max,
    ];
    runner
        .run(&sizes, |size| {
            let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
            let path = scratch().join(format!("initrd-{:?}", std::thread::current().id()));
            let f = std::fs::File::create(&path).unwrap();
            f.set_len(size).map_err(|e| {
                TestCaseError::fail(format!("set_len({size}) within {max} failed: {e}"))
            })?;
            drop(f);
            let file = std::fs::File::open(&path).unwrap();
            let (r, largest) = largest_allocation(|| load_initrd(&mem, &file, &path));
            prop_assert!(largest <= ALLOC_LIMIT, "allocated {largest} bytes");
            exercised.set(exercised.get() + 1);
            if size > u64::from(u32::MAX) {
                beyond_4g.set(beyond_4g.get() + 1);
            }
            match r {
                Ok((addr, len)) => {
                    fit.set(fit.get() + 1);
                    prop_assert_eq!(len, size);
                    prop_assert!(addr >= 0x10_0000 && addr % 4096 == 0);
                    prop_assert!(addr + len <= 4 << 20);
                }
                Err(_) => {
                    refused.set(refused.get() + 1);
                    prop_assert!(size >= (3 << 20), "{size} bytes fit below 4 MiB");
                }
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    // Passing cases run once each (shrinking happens only on failure).
    assert_eq!(exercised.get(), cases, "every case exercised the loader");
    if cases >= 64 {
        assert!(
            fit.get() > 0 && refused.get() > 0 && beyond_4g.get() > 0,
            "fit {}, refused {}, beyond 4 GiB {} of {cases}",
            fit.get(),
            refused.get(),
            beyond_4g.get()
        );
    }
}

// ---------------------------------------------------------------------------
// Regressions: crashes the properties above found, kept as plain tests.

mod regressions {
    use super::*;

    /// `PciConfigPorts::write` added the port offset into the register
    /// (`reg + (offset - 4)`): an offset past the 4-byte data port overflowed a
    /// u16 (found by `pci_config_space_and_bars_never_panic`).
    #[test]
    fn a_config_data_write_past_the_data_port_is_ignored() {
        let mem = memory();
        let path = disk("regress-pci");
        let msi: MsiSender = Arc::new(|_, _, _| {});
        let blk = Arc::new(Mutex::new(PciBlock::new(
            Block::open(&path, false, "vol-pci").unwrap(),
            mem,
            msi,
            0xe000_0000,
        )));
        let bus = PciBus {
            slots: vec![Arc::new(Mutex::new(HostBridge::default())), blk],
        };
        let mut ports = PciConfigPorts::new(bus);
        let _ = ports.write(0, &(0x8000_0000u32 | (1 << 11) | 0x0c).to_le_bytes());
        let _ = ports.write(u16::MAX - 7, &[]);
        let _ = ports.write(u16::MAX, &[0xff; 4]);
        let mut b = [0u8; 4];
        ports.read(u16::MAX, &mut b);
        assert_eq!(b, [0xff; 4]);
        // The register the address port selects is unchanged.
        let _ = ports.write(0, &(0x8000_0000u32 | (1 << 11)).to_le_bytes());
        ports.read(4, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0x1042_1af4);
    }
}
