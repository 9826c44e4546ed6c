//! virtio-net over a TAP device (or any descriptor that reads and writes
//! one Ethernet frame per call): frames the guest sends go out through
//! the backend, frames the backend has go into the guest's receive
//! buffers. No offloads are offered: every frame is a plain Ethernet
//! frame behind a zeroed virtio-net header.
//!
//! What the guest hands over is checked like the block device's requests:
//! a chain's lengths are summed with overflow checks and bounded before
//! anything is copied, copies go through buffers of the device's own size,
//! a descriptor outside guest memory fails the frame (counted), and
//! nothing the guest says sizes an allocation.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::sync::Arc;

use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::device::{UsedQueues, VirtioDevice, VIRTIO_F_VERSION_1};

/// The virtio device id of a network card.
pub const VIRTIO_ID_NET: u32 = 1;
/// Feature bits (virtio spec 5.1.3).
pub const VIRTIO_NET_F_MAC: u32 = 5;
pub const VIRTIO_NET_F_STATUS: u32 = 16;
/// `status` in the configuration space: the link is up.
pub const VIRTIO_NET_S_LINK_UP: u16 = 1;

/// The virtio-net header in front of every frame (with VERSION_1 it
/// always carries `num_buffers`): 12 bytes.
pub const NET_HDR_LEN: usize = 12;
/// The largest frame taken from either side: an Ethernet frame of the
/// largest MTU a TAP allows, with a VLAN tag.
pub const MAX_FRAME: usize = 65_535 + 14 + 4;
/// The smallest frame: an Ethernet header.
pub const MIN_FRAME: usize = 14;
/// Frames moved per call before the queue lock is given back.
const BATCH: usize = 64;
/// Frames sent per transmit notification at most: a guest refilling the
/// ring from another vCPU does not hold the card (and receive) for ever;
/// what is left goes at its next notification.
const TX_BATCH: usize = 256;

/// Queue indexes.
pub const RX_QUEUE: usize = 0;
pub const TX_QUEUE: usize = 1;

/// What the card did, for tests and operators.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NetMetrics {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Frames from the backend dropped: the driver was not ready, or the
    /// receive buffer was too small for them.
    pub rx_dropped: u64,
    /// Frames from the guest the backend did not take.
    pub tx_dropped: u64,
    /// Chains that were not a frame (too short, too long, the wrong
    /// direction, outside guest memory).
    pub malformed: u64,
}

/// A virtio network card.
pub struct Net {
    backend: Arc<File>,
    mac: [u8; 6],
    /// A frame read from the backend that found no receive buffer yet.
    held: Option<Vec<u8>>,
    /// Told when the card can take backend input again after holding a
    /// frame (the thread that watches the backend waits on it then).
    wake: Arc<EventFd>,
    /// The backend failed with something other than "nothing to read":
    /// it is no longer watched.
    backend_failed: bool,
    /// Where frames are read from the backend (one buffer, reused).
    scratch: Vec<u8>,
    pub metrics: NetMetrics,
}

impl Net {
    /// A card with `mac` over `backend`, which must be non-blocking and
    /// give one frame per read. `wake` is written when the card wants
    /// backend input again.
    pub fn new(backend: Arc<File>, mac: [u8; 6], wake: Arc<EventFd>) -> Self {
        Self {
            backend,
            mac,
            held: None,
            wake,
            backend_failed: false,
            scratch: vec![0u8; MAX_FRAME],
            metrics: NetMetrics::default(),
        }
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Reads one frame from the backend; `None` when it has none (or
    /// failed, which is logged once and ends watching it).
    fn read_backend(&mut self) -> Option<Vec<u8>> {
        if self.backend_failed {
            return None;
        }
        loop {
            match (&*self.backend).read(&mut self.scratch) {
                Ok(n) if n >= MIN_FRAME => return Some(self.scratch[..n].to_vec()),
                Ok(0) => {
                    tracing::error!("the network backend was closed: no more frames for the guest");
                    self.backend_failed = true;
                    return None;
                }
                Ok(_) => self.metrics.rx_dropped += 1,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::error!(
                        "the network backend failed: {e}; no more frames for the guest"
                    );
                    self.backend_failed = true;
                    return None;
                }
            }
        }
    }

    /// Moves frames from the backend (a held one first) into receive
    /// buffers until either runs out; a frame without a buffer is held.
    fn receive(&mut self, mem: &GuestMemoryMmap, rx: &mut Queue) -> Result<bool, String> {
        let mut used = false;
        for _ in 0..BATCH {
            let frame = match self.held.take() {
                Some(f) => f,
                None => match self.read_backend() {
                    Some(f) => f,
                    None => break,
                },
            };
            let Some(chain) = rx.pop_descriptor_chain(mem) else {
                self.held = Some(frame);
                break;
            };
            let head = chain.head_index();
            let written = match write_frame(mem, chain, &frame) {
                Ok(n) => {
                    self.metrics.rx_frames += 1;
                    self.metrics.rx_bytes += frame.len() as u64;
                    n
                }
                Err(Malformed::TooSmall) => {
                    self.metrics.rx_dropped += 1;
                    0
                }
                Err(Malformed::Chain) => {
                    self.metrics.malformed += 1;
                    0
                }
            };
            rx.add_used(mem, head, written)
                .map_err(|e| format!("virtio-net receive queue: {e}"))?;
            used = true;
        }
        Ok(used && rx.needs_notification(mem).unwrap_or(true))
    }

    /// Sends every frame the guest made available.
    fn transmit(&mut self, mem: &GuestMemoryMmap, tx: &mut Queue) -> Result<bool, String> {
        let mut used = false;
        let mut buf = Vec::new();
        for _ in 0..TX_BATCH {
            let Some(chain) = tx.pop_descriptor_chain(mem) else {
                break;
            };
            let head = chain.head_index();
            match read_frame(mem, chain, &mut buf) {
                Ok(()) => {
                    let frame = &buf[NET_HDR_LEN..];
                    match (&*self.backend).write(frame) {
                        Ok(n) if n == frame.len() => {
                            self.metrics.tx_frames += 1;
                            self.metrics.tx_bytes += n as u64;
                        }
                        // A full backend queue drops the frame, as a
                        // busy wire would; TCP sends it again.
                        Ok(_) | Err(_) => self.metrics.tx_dropped += 1,
                    }
                }
                Err(_) => self.metrics.malformed += 1,
            }
            tx.add_used(mem, head, 0)
                .map_err(|e| format!("virtio-net transmit queue: {e}"))?;
            used = true;
        }
        Ok(used && tx.needs_notification(mem).unwrap_or(true))
    }

    /// The card holds no frame any more: the backend is watched again.
    fn unheld(&mut self, was_held: bool) {
        if was_held && self.held.is_none() {
            let _ = self.wake.write(1);
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Malformed {
    /// The chain's buffers are not a receive buffer (or outside memory).
    Chain,
    /// The buffers are fine but the frame does not fit in them.
    TooSmall,
}

/// The device-writable buffers of a receive chain, in order, after
/// checking each lies in guest memory; their total length (bounded).
fn writable_segments<M: GuestMemory>(
    mem: &M,
    chain: DescriptorChain<&M>,
) -> Result<(Vec<(GuestAddress, usize)>, usize), Malformed> {
    let mut segs = Vec::new();
    let mut total = 0usize;
    for d in chain {
        if !d.is_write_only() {
            return Err(Malformed::Chain);
        }
        let len = d.len() as usize;
        if len == 0 {
            continue;
        }
        if !mem.check_range(d.addr(), len, vm_memory::Permissions::Write) {
            return Err(Malformed::Chain);
        }
        // Only what a frame can fill counts.
        let take = len.min((NET_HDR_LEN + MAX_FRAME).saturating_sub(total));
        if take > 0 {
            segs.push((d.addr(), take));
            total += take;
        }
    }
    Ok((segs, total))
}

/// Writes a zeroed header (one buffer) and `frame` into a receive chain;
/// returns the bytes written.
fn write_frame<M: GuestMemory>(
    mem: &M,
    chain: DescriptorChain<&M>,
    frame: &[u8],
) -> Result<u32, Malformed> {
    let (segs, total) = writable_segments(mem, chain)?;
    let len = NET_HDR_LEN + frame.len();
    if total < len {
        return Err(Malformed::TooSmall);
    }
    let mut header = [0u8; NET_HDR_LEN];
    header[10..12].copy_from_slice(&1u16.to_le_bytes()); // num_buffers
    let mut data = header.iter().chain(frame.iter()).copied();
    let mut left = len;
    let mut piece = Vec::new();
    for (addr, seg_len) in segs {
        if left == 0 {
            break;
        }
        let n = seg_len.min(left);
        piece.clear();
        piece.extend(data.by_ref().take(n));
        mem.write_slice(&piece, addr)
            .map_err(|_| Malformed::Chain)?;
        left -= n;
    }
    Ok(len as u32)
}

/// Reads a transmit chain (header and frame, device-readable buffers
/// only) into `buf`, bounded by the largest frame.
fn read_frame<M: GuestMemory>(
    mem: &M,
    chain: DescriptorChain<&M>,
    buf: &mut Vec<u8>,
) -> Result<(), Malformed> {
    buf.clear();
    let mut total = 0usize;
    let mut segs = Vec::new();
    for d in chain {
        if d.is_write_only() {
            return Err(Malformed::Chain);
        }
        total = total
            .checked_add(d.len() as usize)
            .filter(|t| *t <= NET_HDR_LEN + MAX_FRAME)
            .ok_or(Malformed::Chain)?;
        segs.push((d.addr(), d.len() as usize));
    }
    if total < NET_HDR_LEN + MIN_FRAME {
        return Err(Malformed::Chain);
    }
    buf.resize(total, 0);
    let mut at = 0;
    for (addr, len) in segs {
        mem.read_slice(&mut buf[at..at + len], addr)
            .map_err(|_| Malformed::Chain)?;
        at += len;
    }
    Ok(())
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn features(&self) -> u64 {
        (1u64 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_NET_F_MAC) | (1 << VIRTIO_NET_F_STATUS)
    }

    fn queue_count(&self) -> usize {
        2
    }

    /// `mac` (6 bytes), then `status` (a u16: the link is up).
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut config = [0u8; 8];
        config[..6].copy_from_slice(&self.mac);
        config[6..8].copy_from_slice(&VIRTIO_NET_S_LINK_UP.to_le_bytes());
        super::device::read_config_bytes(&config, offset, data);
    }

    fn queue_notify(
        &mut self,
        index: usize,
        mem: &GuestMemoryMmap,
        queues: &mut [Queue],
    ) -> Result<UsedQueues, String> {
        match index {
            // New receive buffers: what was waiting for them goes in.
            RX_QUEUE => {
                let was_held = self.held.is_some();
                let Some(rx) = queues.get_mut(RX_QUEUE) else {
                    return Ok(0);
                };
                let used = self.receive(mem, rx)?;
                self.unheld(was_held);
                Ok(u32::from(used) << RX_QUEUE)
            }
            TX_QUEUE => {
                let Some(tx) = queues.get_mut(TX_QUEUE) else {
                    return Ok(0);
                };
                Ok(u32::from(self.transmit(mem, tx)?) << TX_QUEUE)
            }
            _ => Ok(0),
        }
    }

    fn wants_backend_input(&self) -> bool {
        self.held.is_none() && !self.backend_failed
    }

    fn backend_input(
        &mut self,
        live: bool,
        mem: &GuestMemoryMmap,
        queues: &mut [Queue],
    ) -> Result<UsedQueues, String> {
        let rx = queues
            .get_mut(RX_QUEUE)
            .filter(|q| live && q.ready() && q.is_valid(mem));
        let Some(rx) = rx else {
            // No driver to take them: dropped, so the backend does not
            // stay readable for ever.
            for _ in 0..BATCH {
                if self.read_backend().is_none() {
                    break;
                }
                self.metrics.rx_dropped += 1;
            }
            return Ok(0);
        };
        Ok(u32::from(self.receive(mem, rx)?) << RX_QUEUE)
    }

    fn reset(&mut self) {
        let was_held = self.held.take().is_some();
        if was_held {
            self.metrics.rx_dropped += 1;
        }
        self.unheld(was_held);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::fd::FromRawFd;
    use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;

    /// A backend that keeps frame boundaries as a TAP does: one end of a
    /// non-blocking SOCK_SEQPACKET pair (the test holds the other end, the
    /// wire).
    pub(crate) fn wire() -> (File, File) {
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
        unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
    }

    const MAC: [u8; 6] = [0x02, 0, 0x0a, 1, 1, 4];

    struct Rig {
        net: Net,
        mem: GuestMemoryMmap,
        wire: File,
        wake: Arc<EventFd>,
    }

    fn rig() -> Rig {
        let (card, wire) = wire();
        let wake = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        Rig {
            net: Net::new(Arc::new(card), MAC, wake.clone()),
            mem,
            wire,
            wake,
        }
    }

    fn frame(len: usize, fill: u8) -> Vec<u8> {
        let mut f = vec![fill; len];
        f[..6].copy_from_slice(&MAC);
        f
    }

    /// A mock queue and where its next chain goes in the table.
    struct Table<'a> {
        q: MockSplitQueue<'a, GuestMemoryMmap>,
        next: u16,
    }

    impl<'a> Table<'a> {
        fn new(mem: &'a GuestMemoryMmap) -> Self {
            Self {
                q: MockSplitQueue::new(mem, 16),
                next: 0,
            }
        }

        /// Adds one chain (address, length, device-writable) after the
        /// ones already in the table.
        fn add(&mut self, descs: &[(u64, u32, bool)]) {
            let offset = self.next;
            let raw: Vec<RawDescriptor> = descs
                .iter()
                .enumerate()
                .map(|(i, (a, l, w))| {
                    let last = i + 1 == descs.len();
                    let mut flags = if *w { VRING_DESC_F_WRITE as u16 } else { 0 };
                    if !last {
                        flags |= VRING_DESC_F_NEXT as u16;
                    }
                    let next = if last { 0 } else { offset + i as u16 + 1 };
                    RawDescriptor::from(SplitDescriptor::new(*a, *l, flags, next))
                })
                .collect();
            self.q.add_desc_chains(&raw, offset).unwrap();
            self.next += descs.len() as u16;
        }
    }

    #[test]
    fn configuration_space_and_features_say_mac_and_link_up() {
        let r = rig();
        assert_eq!(r.net.device_type(), 1);
        assert_eq!(r.net.queue_count(), 2);
        let f = r.net.features();
        assert_ne!(f & (1 << VIRTIO_NET_F_MAC), 0);
        assert_ne!(f & (1 << VIRTIO_F_VERSION_1), 0);
        let mut c = [0u8; 8];
        r.net.read_config(0, &mut c);
        assert_eq!(&c[..6], &MAC);
        assert_eq!(u16::from_le_bytes([c[6], c[7]]), VIRTIO_NET_S_LINK_UP);
        let mut past = [0xffu8; 4];
        r.net.read_config(u64::MAX, &mut past);
        assert_eq!(past, [0; 4]);
    }

    #[test]
    fn a_frame_the_guest_sends_leaves_on_the_wire_without_its_header() {
        let mut r = rig();
        let mut mock = Table::new(&r.mem);
        let f = frame(100, 7);
        r.mem
            .write_slice(&[0u8; NET_HDR_LEN], GuestAddress(0x10_000))
            .unwrap();
        r.mem.write_slice(&f, GuestAddress(0x20_000)).unwrap();
        // Header and frame in two buffers, as Linux sends them.
        mock.add(&[(0x10_000, 12, false), (0x20_000, 100, false)]);
        let mut queues = vec![Queue::new(256).unwrap(), mock.q.create_queue().unwrap()];
        let used = r.net.queue_notify(TX_QUEUE, &r.mem, &mut queues).unwrap();
        assert_eq!(used, 1 << TX_QUEUE);
        let mut got = vec![0u8; 2000];
        let n = (&r.wire).read(&mut got).unwrap();
        assert_eq!(&got[..n], &f[..]);
        assert_eq!(r.net.metrics.tx_frames, 1);
        assert_eq!(r.net.metrics.tx_bytes, 100);
        assert_eq!(mock.q.used().idx().load(), 1);
    }

    #[test]
    fn a_frame_on_the_wire_reaches_a_receive_buffer_behind_a_header() {
        let mut r = rig();
        let mut mock = Table::new(&r.mem);
        mock.add(&[(0x30_000, 1526, true)]);
        let mut queues = vec![mock.q.create_queue().unwrap(), Queue::new(256).unwrap()];
        let f = frame(60, 9);
        (&r.wire).write_all(&f).unwrap();
        assert!(r.net.wants_backend_input());
        let used = r.net.backend_input(true, &r.mem, &mut queues).unwrap();
        assert_eq!(used, 1 << RX_QUEUE);
        let mut hdr = [0u8; NET_HDR_LEN];
        r.mem.read_slice(&mut hdr, GuestAddress(0x30_000)).unwrap();
        assert_eq!(u16::from_le_bytes([hdr[10], hdr[11]]), 1, "num_buffers");
        assert!(hdr[..10].iter().all(|b| *b == 0));
        let mut back = vec![0u8; 60];
        r.mem
            .read_slice(&mut back, GuestAddress(0x30_000 + 12))
            .unwrap();
        assert_eq!(back, f);
        let u = mock.q.used().ring().ref_at(0).unwrap().load();
        assert_eq!(u.len(), 72);
        assert_eq!(r.net.metrics.rx_frames, 1);
    }

    #[test]
    fn without_buffers_a_frame_is_held_until_the_guest_gives_some() {
        let mut r = rig();
        let mut mock = Table::new(&r.mem);
        let mut queues = vec![mock.q.create_queue().unwrap(), Queue::new(256).unwrap()];
        (&r.wire).write_all(&frame(60, 1)).unwrap();
        (&r.wire).write_all(&frame(61, 2)).unwrap();
        assert_eq!(r.net.backend_input(true, &r.mem, &mut queues).unwrap(), 0);
        assert!(
            !r.net.wants_backend_input(),
            "holding a frame: the TAP is not watched"
        );
        assert!(r.wake.read().is_err(), "nothing to wake yet");
        // The guest adds two buffers and notifies the receive queue.
        mock.add(&[(0x30_000, 1526, true)]);
        mock.add(&[(0x40_000, 1526, true)]);
        let used = r.net.queue_notify(RX_QUEUE, &r.mem, &mut queues).unwrap();
        assert_eq!(used, 1);
        assert_eq!(r.net.metrics.rx_frames, 2, "the held frame and the next");
        assert!(r.net.wants_backend_input());
        assert_eq!(r.wake.read().unwrap(), 1, "the watcher is woken");
    }

    #[test]
    fn frames_are_dropped_while_no_driver_is_ready() {
        let mut r = rig();
        let mut queues = vec![Queue::new(256).unwrap(), Queue::new(256).unwrap()];
        for _ in 0..3 {
            (&r.wire).write_all(&frame(60, 1)).unwrap();
        }
        assert_eq!(r.net.backend_input(false, &r.mem, &mut queues).unwrap(), 0);
        assert_eq!(r.net.metrics.rx_dropped, 3);
        let mut b = [0u8; 1];
        assert!(
            (&r.net.backend.as_ref().try_clone().unwrap())
                .read(&mut b)
                .is_err(),
            "drained"
        );
    }

    #[test]
    fn malformed_chains_are_counted_and_the_guest_gets_nothing_it_did_not_offer() {
        let mut r = rig();
        let mut mock = Table::new(&r.mem);
        // Transmit: a write-only buffer; a frame shorter than an Ethernet
        // header; a buffer outside guest memory; a length that overflows.
        mock.add(&[(0x10_000, 12, false), (0x20_000, 100, true)]);
        mock.add(&[(0x10_000, 12, false), (0x20_000, 13, false)]);
        mock.add(&[(0x10_000, 12, false), (0xffff_f000, 100, false)]);
        mock.add(&[(0x10_000, 12, false), (0x20_000, u32::MAX, false)]);
        let mut queues = vec![Queue::new(256).unwrap(), mock.q.create_queue().unwrap()];
        r.net.queue_notify(TX_QUEUE, &r.mem, &mut queues).unwrap();
        assert_eq!(r.net.metrics.malformed, 4);
        assert_eq!(r.net.metrics.tx_frames, 0);
        let mut b = [0u8; 64];
        assert!((&r.wire).read(&mut b).is_err(), "nothing sent");
        assert_eq!(mock.q.used().idx().load(), 4, "every chain given back");

        // Receive: a read-only buffer; one outside memory; one too small.
        let mut mock = Table::new(&r.mem);
        mock.add(&[(0x30_000, 1526, false)]);
        mock.add(&[(0xffff_0000, 1526, true)]);
        mock.add(&[(0x30_000, 20, true)]);
        let mut queues = vec![mock.q.create_queue().unwrap(), Queue::new(256).unwrap()];
        for _ in 0..3 {
            (&r.wire).write_all(&frame(60, 3)).unwrap();
        }
        r.net.backend_input(true, &r.mem, &mut queues).unwrap();
        assert_eq!(r.net.metrics.malformed, 6);
        assert_eq!(r.net.metrics.rx_dropped, 1, "too small for the frame");
        assert_eq!(r.net.metrics.rx_frames, 0);
        let mut untouched = [0u8; 20];
        r.mem
            .read_slice(&mut untouched, GuestAddress(0x30_000))
            .unwrap();
        assert_eq!(
            untouched, [0u8; 20],
            "nothing written into a read-only buffer"
        );
    }

    #[test]
    fn a_reset_drops_the_held_frame_and_watches_the_backend_again() {
        let mut r = rig();
        let mock = Table::new(&r.mem);
        let mut queues = vec![mock.q.create_queue().unwrap(), Queue::new(256).unwrap()];
        (&r.wire).write_all(&frame(60, 1)).unwrap();
        r.net.backend_input(true, &r.mem, &mut queues).unwrap();
        assert!(!r.net.wants_backend_input());
        r.net.reset();
        assert!(r.net.wants_backend_input());
        assert_eq!(r.net.metrics.rx_dropped, 1);
        assert_eq!(r.wake.read().unwrap(), 1);
    }

    #[test]
    fn a_closed_backend_is_no_longer_watched() {
        let mut r = rig();
        let mut queues = vec![Queue::new(256).unwrap(), Queue::new(256).unwrap()];
        drop(std::mem::replace(
            &mut r.wire,
            tempfile::tempfile().unwrap(),
        ));
        r.net.backend_input(false, &r.mem, &mut queues).unwrap();
        assert!(!r.net.wants_backend_input());
    }
}
