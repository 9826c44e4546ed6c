//! What a virtio device is to its transport (virtio-mmio or virtio-pci):
//! its type, features, queues and configuration space, what it does when
//! the driver notifies a queue, and — for a device with a backend that
//! produces input (the network's TAP) — what it does when that backend
//! has something for the guest.

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

/// virtio 1.x ("modern") devices only.
pub const VIRTIO_F_VERSION_1: u32 = 32;

/// The queues (bit per queue index) that got used buffers the driver must
/// be interrupted for.
pub type UsedQueues = u32;

/// The device side of a virtio device, independent of its transport.
pub trait VirtioDevice: Send {
    /// The virtio device id (1 network card, 2 block device).
    fn device_type(&self) -> u32;
    /// The feature bits offered (VIRTIO_F_VERSION_1 among them).
    fn features(&self) -> u64;
    /// How many virtqueues the device has.
    fn queue_count(&self) -> usize;
    /// Reads the device-specific configuration space at `offset`; bytes
    /// past its end read as 0.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// The driver notified queue `index` (a live driver, a valid queue):
    /// handle what it made available. An error means the device needs a
    /// reset.
    fn queue_notify(
        &mut self,
        index: usize,
        mem: &GuestMemoryMmap,
        queues: &mut [Queue],
    ) -> Result<UsedQueues, String>;
    /// Whether the device waits for input from its backend right now (a
    /// device that cannot take any, e.g. with a frame held for lack of
    /// buffers, says no and its backend is not watched).
    fn wants_backend_input(&self) -> bool {
        false
    }
    /// Its backend has input: with `live` (the driver set DRIVER_OK) it
    /// goes into the queues; otherwise it is dropped, as a card whose
    /// driver is not loaded drops what arrives.
    fn backend_input(
        &mut self,
        _live: bool,
        _mem: &GuestMemoryMmap,
        _queues: &mut [Queue],
    ) -> Result<UsedQueues, String> {
        Ok(0)
    }
    /// The driver reset the device (its queues are reset by the transport).
    fn reset(&mut self) {}
}

/// Copies `config` (a device's configuration space) from `offset` into
/// `data`; bytes past its end (or at an offset no device has) read as 0.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(i))
            .and_then(|at| config.get(at))
            .copied()
            .unwrap_or(0);
    }
}

/// A transport seen from the thread that waits on its device's backend.
pub trait BackendInput: Send {
    /// See [`VirtioDevice::wants_backend_input`].
    fn wants_backend_input(&self) -> bool;
    /// Hands the backend's input to the device and interrupts the guest
    /// for the queues it filled.
    fn backend_input(&mut self);
}
