//! virtio-blk backed by a raw file: read, write, flush and get-id
//! requests from descriptor chains, a read-only option, and the device id
//! (the volume id) the guest sees as the disk's serial.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, GuestMemoryMmap};

use super::device::{UsedQueues, VirtioDevice, VIRTIO_F_VERSION_1};

/// The virtio device id of a block device.
pub const VIRTIO_ID_BLOCK: u32 = 2;
/// Feature bits (virtio spec 5.2.3).
pub const VIRTIO_BLK_F_RO: u32 = 5;
pub const VIRTIO_BLK_F_FLUSH: u32 = 9;

/// Request types (virtio spec 5.2.6).
pub const VIRTIO_BLK_T_IN: u32 = 0;
pub const VIRTIO_BLK_T_OUT: u32 = 1;
pub const VIRTIO_BLK_T_FLUSH: u32 = 4;
pub const VIRTIO_BLK_T_GET_ID: u32 = 8;
/// Request status values.
pub const VIRTIO_BLK_S_OK: u8 = 0;
pub const VIRTIO_BLK_S_IOERR: u8 = 1;
pub const VIRTIO_BLK_S_UNSUPP: u8 = 2;

pub const SECTOR_SIZE: u64 = 512;

/// Guest data is copied through a buffer of at most this many bytes,
/// whatever length a descriptor claims.
const COPY_CHUNK: usize = 64 * 1024;

/// Refuses a segment whose guest range is not all guest memory, before
/// any of it is copied.
fn check_guest_range<M: GuestMemory>(
    mem: &M,
    s: &Segment,
    access: vm_memory::Permissions,
) -> Result<(), u8> {
    if s.len == 0 {
        return Ok(());
    }
    s.addr
        .checked_add(u64::from(s.len) - 1)
        .ok_or(VIRTIO_BLK_S_IOERR)?;
    if mem.check_range(s.addr, s.len as usize, access) {
        Ok(())
    } else {
        Err(VIRTIO_BLK_S_IOERR)
    }
}
/// Length of the device id returned by GET_ID.
pub const DEVICE_ID_LEN: usize = 20;

/// What the device did, for tests and operators.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BlockMetrics {
    pub reads: u64,
    pub writes: u64,
    pub flushes: u64,
    pub get_ids: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Requests answered with IOERR or UNSUPP.
    pub failed: u64,
    /// Chains too malformed to carry a status.
    pub malformed: u64,
}

/// A virtio block device over a raw file.
pub struct Block {
    /// None for an empty hot-plug slot (capacity 0).
    file: Option<File>,
    path: Option<std::path::PathBuf>,
    read_only: bool,
    capacity_sectors: u64,
    id: [u8; DEVICE_ID_LEN],
    pub metrics: BlockMetrics,
}

struct Segment {
    addr: GuestAddress,
    len: u32,
    writable: bool,
}

impl Block {
    /// Opens `path`; `serial` becomes the device id (truncated to 20 bytes).
    pub fn open(path: &Path, read_only: bool, serial: &str) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)?;
        Self::from_file(file, path, read_only, serial)
    }

    /// A device over a file already opened (readable, and writable unless
    /// `read_only`) from `path`.
    pub fn from_file(
        file: File,
        path: &Path,
        read_only: bool,
        serial: &str,
    ) -> std::io::Result<Self> {
        let capacity_sectors = file.metadata()?.len() / SECTOR_SIZE;
        let mut id = [0u8; DEVICE_ID_LEN];
        let n = serial.len().min(DEVICE_ID_LEN);
        id[..n].copy_from_slice(&serial.as_bytes()[..n]);
        Ok(Self {
            file: Some(file),
            path: Some(path.to_path_buf()),
            read_only,
            capacity_sectors,
            id,
            metrics: BlockMetrics::default(),
        })
    }

    /// An empty slot a disk can be inserted into while the guest runs; the
    /// guest sees a disk of capacity 0 until then.
    pub fn empty_slot() -> Self {
        Self {
            file: None,
            path: None,
            read_only: false,
            capacity_sectors: 0,
            id: [0u8; DEVICE_ID_LEN],
            metrics: BlockMetrics::default(),
        }
    }

    /// Puts a backing file into an empty slot (the caller then raises a
    /// configuration-change interrupt so the guest sees the new capacity).
    pub fn insert(&mut self, path: &Path, read_only: bool, serial: &str) -> std::io::Result<()> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(!(read_only || self.read_only))
            .open(path)?;
        self.insert_file(file, path, read_only, serial)
    }

    /// Puts a file already opened from `path` into an empty slot (opened
    /// writable unless `read_only`).
    pub fn insert_file(
        &mut self,
        file: File,
        path: &Path,
        read_only: bool,
        serial: &str,
    ) -> std::io::Result<()> {
        if let Some(p) = &self.path {
            return Err(std::io::Error::other(format!(
                "the slot already holds {}",
                p.display()
            )));
        }
        let slot_read_only = self.read_only;
        *self = Self::from_file(file, path, read_only || slot_read_only, serial)?;
        Ok(())
    }

    /// Empties the slot; returns the file it held.
    pub fn eject(&mut self) -> Option<std::path::PathBuf> {
        let path = self.path.take();
        let metrics = std::mem::take(&mut self.metrics);
        *self = Self::empty_slot();
        self.metrics = metrics;
        path
    }

    /// Whether the ext2/3/4 file system on the disk says it is mounted
    /// (journal recovery needed, or not marked clean), read through the
    /// open file (the VMM opens nothing by path under its filter). `None`
    /// for an empty slot or a disk without an ext file system.
    pub fn ext_fs_mounted(&self) -> Option<bool> {
        let file = self.file.as_ref()?;
        let mut sb = [0u8; 1024];
        file.read_exact_at(&mut sb, 1024).ok()?;
        if u16::from_le_bytes([sb[0x38], sb[0x39]]) != 0xEF53 {
            return None;
        }
        let state = u16::from_le_bytes([sb[0x3A], sb[0x3B]]);
        let incompat = u32::from_le_bytes([sb[0x60], sb[0x61], sb[0x62], sb[0x63]]);
        const VALID_FS: u16 = 0x1;
        const INCOMPAT_RECOVER: u32 = 0x4;
        Some(incompat & INCOMPAT_RECOVER != 0 || state & VALID_FS == 0)
    }

    /// The backing file, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The device id (serial) as text.
    pub fn serial(&self) -> String {
        let end = self
            .id
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(DEVICE_ID_LEN);
        String::from_utf8_lossy(&self.id[..end]).into_owned()
    }

    /// Disk size in 512-byte sectors (the config space `capacity`).
    pub fn capacity_sectors(&self) -> u64 {
        self.capacity_sectors
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Handles every available request; returns whether the guest must be
    /// interrupted.
    pub fn process_queue<M: GuestMemory>(
        &mut self,
        mem: &M,
        queue: &mut Queue,
    ) -> Result<bool, virtio_queue::Error> {
        let mut used_any = false;
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let written = self.execute(mem, chain);
            queue.add_used(mem, head, written)?;
            used_any = true;
        }
        if !used_any {
            return Ok(false);
        }
        queue.needs_notification(mem)
    }

    /// Runs one request; returns the bytes written into guest memory.
    fn execute<M: GuestMemory>(&mut self, mem: &M, chain: DescriptorChain<&M>) -> u32 {
        let segments: Vec<Segment> = chain
            .map(|d| Segment {
                addr: d.addr(),
                len: d.len(),
                writable: d.is_write_only(),
            })
            .collect();
        // Header first (device-readable, 16 bytes), status last (device-writable).
        let (Some(header), Some(status)) = (segments.first(), segments.last()) else {
            self.metrics.malformed += 1;
            return 0;
        };
        if segments.len() < 2
            || header.writable
            || header.len < 16
            || !status.writable
            || status.len < 1
        {
            self.metrics.malformed += 1;
            return 0;
        }
        let (Ok(kind), Ok(sector)) = (
            mem.read_obj::<u32>(header.addr),
            mem.read_obj::<u64>(GuestAddress(header.addr.0.wrapping_add(8))),
        ) else {
            self.metrics.malformed += 1;
            return 0;
        };
        let data = &segments[1..segments.len() - 1];
        let (code, written) =
            match self.request(mem, u32::from_le(kind), u64::from_le(sector), data) {
                Ok(written) => (VIRTIO_BLK_S_OK, written),
                Err(code) => {
                    self.metrics.failed += 1;
                    (code, 0)
                }
            };
        if mem.write_obj(code, status.addr).is_err() {
            self.metrics.malformed += 1;
            return written;
        }
        written.saturating_add(1)
    }

    fn request<M: GuestMemory>(
        &mut self,
        mem: &M,
        kind: u32,
        sector: u64,
        data: &[Segment],
    ) -> Result<u32, u8> {
        let total: u64 = data.iter().map(|s| u64::from(s.len)).sum();
        // The used length is a u32 and counts the status byte too.
        if total >= u64::from(u32::MAX) {
            return Err(VIRTIO_BLK_S_IOERR);
        }
        let in_range = |total: u64| {
            sector
                .checked_mul(SECTOR_SIZE)
                .and_then(|start| start.checked_add(total))
                .is_some_and(|end| end <= self.capacity_sectors * SECTOR_SIZE)
        };
        match kind {
            VIRTIO_BLK_T_IN => {
                if !in_range(total) || data.iter().any(|s| !s.writable) {
                    return Err(VIRTIO_BLK_S_IOERR);
                }
                let file = self.file.as_ref().ok_or(VIRTIO_BLK_S_IOERR)?;
                let mut offset = sector * SECTOR_SIZE;
                let mut buf = vec![0u8; COPY_CHUNK.min(total as usize)];
                for s in data {
                    check_guest_range(mem, s, vm_memory::Permissions::Write)?;
                    let mut done = 0u64;
                    while done < u64::from(s.len) {
                        let n = (u64::from(s.len) - done).min(buf.len() as u64) as usize;
                        file.read_exact_at(&mut buf[..n], offset + done)
                            .map_err(|_| VIRTIO_BLK_S_IOERR)?;
                        let at = s.addr.checked_add(done).ok_or(VIRTIO_BLK_S_IOERR)?;
                        mem.write_slice(&buf[..n], at)
                            .map_err(|_| VIRTIO_BLK_S_IOERR)?;
                        done += n as u64;
                    }
                    offset += u64::from(s.len);
                }
                self.metrics.reads += 1;
                self.metrics.bytes_read += total;
                Ok(total as u32)
            }
            VIRTIO_BLK_T_OUT => {
                if self.read_only || !in_range(total) || data.iter().any(|s| s.writable) {
                    return Err(VIRTIO_BLK_S_IOERR);
                }
                let file = self.file.as_ref().ok_or(VIRTIO_BLK_S_IOERR)?;
                let mut offset = sector * SECTOR_SIZE;
                let mut buf = vec![0u8; COPY_CHUNK.min(total as usize)];
                for s in data {
                    check_guest_range(mem, s, vm_memory::Permissions::Read)?;
                    let mut done = 0u64;
                    while done < u64::from(s.len) {
                        let n = (u64::from(s.len) - done).min(buf.len() as u64) as usize;
                        let at = s.addr.checked_add(done).ok_or(VIRTIO_BLK_S_IOERR)?;
                        mem.read_slice(&mut buf[..n], at)
                            .map_err(|_| VIRTIO_BLK_S_IOERR)?;
                        file.write_all_at(&buf[..n], offset + done)
                            .map_err(|_| VIRTIO_BLK_S_IOERR)?;
                        done += n as u64;
                    }
                    offset += u64::from(s.len);
                }
                self.metrics.writes += 1;
                self.metrics.bytes_written += total;
                Ok(0)
            }
            VIRTIO_BLK_T_FLUSH => {
                if let (false, Some(file)) = (self.read_only, &self.file) {
                    file.sync_data().map_err(|_| VIRTIO_BLK_S_IOERR)?;
                }
                self.metrics.flushes += 1;
                Ok(0)
            }
            VIRTIO_BLK_T_GET_ID => {
                let Some(s) = data.first().filter(|s| s.writable) else {
                    return Err(VIRTIO_BLK_S_IOERR);
                };
                let n = (s.len as usize).min(DEVICE_ID_LEN);
                mem.write_slice(&self.id[..n], s.addr)
                    .map_err(|_| VIRTIO_BLK_S_IOERR)?;
                self.metrics.get_ids += 1;
                Ok(n as u32)
            }
            _ => Err(VIRTIO_BLK_S_UNSUPP),
        }
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn features(&self) -> u64 {
        let mut f = (1u64 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_BLK_F_FLUSH);
        if self.read_only() {
            f |= 1 << VIRTIO_BLK_F_RO;
        }
        f
    }

    fn queue_count(&self) -> usize {
        1
    }

    /// The configuration space: the capacity in sectors (a u64) first.
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::device::read_config_bytes(&self.capacity_sectors().to_le_bytes(), offset, data);
    }

    fn queue_notify(
        &mut self,
        index: usize,
        mem: &GuestMemoryMmap,
        queues: &mut [Queue],
    ) -> Result<UsedQueues, String> {
        let Some(q) = queues.get_mut(index).filter(|_| index == 0) else {
            return Ok(0);
        };
        match self.process_queue(mem, q) {
            Ok(true) => Ok(1),
            Ok(false) => Ok(0),
            Err(e) => Err(format!("virtio-blk queue error: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_bindings::bindings::virtio_ring::VRING_DESC_F_WRITE;
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestMemoryMmap;

    const HDR: u64 = 0x10_000;
    const DATA: u64 = 0x20_000;
    const STATUS: u64 = 0x30_000;

    fn desc(addr: u64, len: u32, write: bool) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(
            addr,
            len,
            if write { VRING_DESC_F_WRITE as u16 } else { 0 },
            0,
        ))
    }

    fn header(mem: &GuestMemoryMmap, kind: u32, sector: u64) {
        mem.write_obj(kind.to_le(), GuestAddress(HDR)).unwrap();
        mem.write_obj(0u32, GuestAddress(HDR + 4)).unwrap();
        mem.write_obj(sector.to_le(), GuestAddress(HDR + 8))
            .unwrap();
    }

    struct Rig {
        mem: GuestMemoryMmap,
        _dir: tempfile::TempDir,
        block: Block,
    }

    fn rig(read_only: bool) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        std::fs::File::create(&path)
            .unwrap()
            .set_len(64 * 1024)
            .unwrap();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let block = Block::open(&path, read_only, "vol-0123456789abcdef0123").unwrap();
        Rig {
            mem,
            _dir: dir,
            block,
        }
    }

    /// Sends one chain; returns (status byte, used length, notify).
    fn send(r: &mut Rig, descs: &[RawDescriptor]) -> (u8, u32, bool) {
        let mock = MockSplitQueue::new(&r.mem, 16);
        mock.build_desc_chain(descs).unwrap();
        let mut q: Queue = mock.create_queue().unwrap();
        let notify = r.block.process_queue(&r.mem, &mut q).unwrap();
        let used_len = mock.used().ring().ref_at(0).unwrap().load().len();
        (
            r.mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(),
            used_len,
            notify,
        )
    }

    #[test]
    fn an_ext_superblock_says_mounted_through_the_open_file() {
        use std::os::unix::fs::FileExt;
        let r = rig(false);
        assert_eq!(r.block.ext_fs_mounted(), None, "no file system");
        assert_eq!(Block::empty_slot().ext_fs_mounted(), None);
        let path = r._dir.path().join("disk.raw");
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&0xEF53u16.to_le_bytes(), 1024 + 0x38)
            .unwrap();
        // Marked clean: not mounted.
        f.write_all_at(&1u16.to_le_bytes(), 1024 + 0x3A).unwrap();
        // The path is gone: the device reads its own open file.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(r.block.ext_fs_mounted(), Some(false));
        f.write_all_at(&0u16.to_le_bytes(), 1024 + 0x3A).unwrap();
        assert_eq!(r.block.ext_fs_mounted(), Some(true));
        f.write_all_at(&1u16.to_le_bytes(), 1024 + 0x3A).unwrap();
        f.write_all_at(&4u32.to_le_bytes(), 1024 + 0x60).unwrap();
        assert_eq!(r.block.ext_fs_mounted(), Some(true), "journal to recover");
    }

    #[test]
    fn a_huge_descriptor_outside_guest_memory_fails_without_allocating_it() {
        let mut r = rig(false);
        // A disk large enough that a 4 GiB request is in range.
        let path = r._dir.path().join("big.raw");
        std::fs::File::create(&path)
            .unwrap()
            .set_len(8 << 30)
            .unwrap();
        r.block = Block::open(&path, false, "vol-big").unwrap();
        for kind in [VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT] {
            header(&r.mem, kind, 0);
            r.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
            let start = std::time::Instant::now();
            let (status, used, _) = send(
                &mut r,
                &[
                    desc(HDR, 16, false),
                    desc(0x8000_0000, u32::MAX - 15, kind == VIRTIO_BLK_T_IN),
                    desc(STATUS, 1, true),
                ],
            );
            // Refused (by the queue's chain walk or the device), never run.
            assert_ne!(status, VIRTIO_BLK_S_OK);
            assert!(used <= 1);
            assert!(start.elapsed() < std::time::Duration::from_secs(1));
        }
        // Two segments whose lengths add up beyond a u32: refused, no
        // truncated used length.
        header(&r.mem, VIRTIO_BLK_T_IN, 0);
        let (status, used, _) = send(
            &mut r,
            &[
                desc(HDR, 16, false),
                desc(DATA, u32::MAX / 2 + 1, true),
                desc(DATA, u32::MAX / 2 + 1, true),
                desc(STATUS, 1, true),
            ],
        );
        assert_ne!(status, VIRTIO_BLK_S_OK);
        assert!(used <= 1);
    }

    #[test]
    fn write_then_read_back_through_descriptor_chains() {
        let mut r = rig(false);
        r.mem
            .write_slice(&[0xab; 1024], GuestAddress(DATA))
            .unwrap();
        header(&r.mem, VIRTIO_BLK_T_OUT, 4);
        let (status, used, notify) = send(
            &mut r,
            &[
                desc(HDR, 16, false),
                desc(DATA, 1024, false),
                desc(STATUS, 1, true),
            ],
        );
        assert_eq!((status, used, notify), (VIRTIO_BLK_S_OK, 1, true));
        r.mem.write_slice(&[0u8; 1024], GuestAddress(DATA)).unwrap();
        header(&r.mem, VIRTIO_BLK_T_IN, 4);
        let (status, used, _) = send(
            &mut r,
            &[
                desc(HDR, 16, false),
                desc(DATA, 512, true),
                desc(DATA + 512, 512, true),
                desc(STATUS, 1, true),
            ],
        );
        assert_eq!((status, used), (VIRTIO_BLK_S_OK, 1025));
        let mut back = [0u8; 1024];
        r.mem.read_slice(&mut back, GuestAddress(DATA)).unwrap();
        assert!(back.iter().all(|b| *b == 0xab));
        assert_eq!(r.block.metrics.bytes_written, 1024);
        assert_eq!(r.block.metrics.reads, 1);
    }

    #[test]
    fn flush_and_get_id() {
        let mut r = rig(false);
        header(&r.mem, VIRTIO_BLK_T_FLUSH, 0);
        assert_eq!(
            send(&mut r, &[desc(HDR, 16, false), desc(STATUS, 1, true)]).0,
            VIRTIO_BLK_S_OK
        );
        header(&r.mem, VIRTIO_BLK_T_GET_ID, 0);
        let (status, used, _) = send(
            &mut r,
            &[
                desc(HDR, 16, false),
                desc(DATA, 20, true),
                desc(STATUS, 1, true),
            ],
        );
        assert_eq!((status, used), (VIRTIO_BLK_S_OK, 21));
        let mut id = [0u8; 20];
        r.mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
        assert_eq!(&id, b"vol-0123456789abcdef");
        assert_eq!((r.block.metrics.flushes, r.block.metrics.get_ids), (1, 1));
    }

    #[test]
    fn out_of_range_sectors_read_only_writes_and_unknown_types_fail_cleanly() {
        let mut r = rig(false);
        header(&r.mem, VIRTIO_BLK_T_IN, 127);
        let (status, used, _) = send(
            &mut r,
            &[
                desc(HDR, 16, false),
                desc(DATA, 1024, true),
                desc(STATUS, 1, true),
            ],
        );
        assert_eq!(
            (status, used),
            (VIRTIO_BLK_S_IOERR, 1),
            "sector 127 + 2 sectors is past 128"
        );
        header(&r.mem, VIRTIO_BLK_T_IN, u64::MAX / 256);
        assert_eq!(
            send(
                &mut r,
                &[
                    desc(HDR, 16, false),
                    desc(DATA, 512, true),
                    desc(STATUS, 1, true)
                ]
            )
            .0,
            VIRTIO_BLK_S_IOERR
        );
        header(&r.mem, 99, 0);
        assert_eq!(
            send(&mut r, &[desc(HDR, 16, false), desc(STATUS, 1, true)]).0,
            VIRTIO_BLK_S_UNSUPP
        );
        let mut ro = rig(true);
        header(&ro.mem, VIRTIO_BLK_T_OUT, 0);
        assert_eq!(
            send(
                &mut ro,
                &[
                    desc(HDR, 16, false),
                    desc(DATA, 512, false),
                    desc(STATUS, 1, true)
                ]
            )
            .0,
            VIRTIO_BLK_S_IOERR
        );
        assert_eq!(ro.block.metrics.failed, 1);
    }

    #[test]
    fn malformed_chains_are_counted_and_never_write_guest_memory() {
        let mut r = rig(false);
        r.mem.write_obj(0xeeu8, GuestAddress(STATUS)).unwrap();
        header(&r.mem, VIRTIO_BLK_T_IN, 0);
        // No status descriptor; then a header the device may write; then data the wrong way round.
        send(&mut r, &[desc(HDR, 16, false)]);
        send(&mut r, &[desc(HDR, 16, true), desc(STATUS, 1, true)]);
        let (status, _, _) = send(
            &mut r,
            &[
                desc(HDR, 16, false),
                desc(DATA, 512, false),
                desc(STATUS, 1, true),
            ],
        );
        assert_eq!(r.block.metrics.malformed, 2);
        assert_eq!(
            status, VIRTIO_BLK_S_IOERR,
            "a read into device-readable buffers is refused"
        );
        assert_eq!(r.block.metrics.bytes_read, 0);
    }
}
