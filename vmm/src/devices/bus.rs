//! The port I/O bus: ranges of ports mapped to devices.

/// Something a device asks the VMM to do after a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusAction {
    Reset,
    PowerOff,
}

/// A device on the port I/O bus; offsets are relative to its base port.
pub trait PioDevice: Send {
    fn read(&mut self, offset: u16, data: &mut [u8]);
    fn write(&mut self, offset: u16, data: &[u8]) -> Option<BusAction>;
}

/// Port ranges and their devices.
#[derive(Default)]
pub struct PioBus {
    devices: Vec<(u16, u16, Box<dyn PioDevice>)>,
    /// Accesses no device claimed (reads return 0xff).
    pub unclaimed: u64,
}

impl PioBus {
    /// Maps `len` ports from `base` to `device`.
    pub fn insert(&mut self, base: u16, len: u16, device: Box<dyn PioDevice>) {
        self.devices.push((base, len, device));
    }

    fn find(&mut self, port: u16) -> Option<(u16, &mut Box<dyn PioDevice>)> {
        self.devices
            .iter_mut()
            .find(|(base, len, _)| port >= *base && port < base + len)
            .map(|(base, _, d)| (port - *base, d))
    }

    pub fn read(&mut self, port: u16, data: &mut [u8]) {
        match self.find(port) {
            Some((offset, d)) => d.read(offset, data),
            None => {
                self.unclaimed += 1;
                data.fill(0xff);
            }
        }
    }

    pub fn write(&mut self, port: u16, data: &[u8]) -> Option<BusAction> {
        match self.find(port) {
            Some((offset, d)) => d.write(offset, data),
            None => {
                self.unclaimed += 1;
                None
            }
        }
    }
}

/// A device shared by every vCPU thread: each thread's bus holds a clone
/// and accesses are serialised by the mutex.
pub struct SharedPio<T: PioDevice>(pub std::sync::Arc<std::sync::Mutex<T>>);

impl<T: PioDevice> PioDevice for SharedPio<T> {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .read(offset, data)
    }

    fn write(&mut self, offset: u16, data: &[u8]) -> Option<BusAction> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .write(offset, data)
    }
}
