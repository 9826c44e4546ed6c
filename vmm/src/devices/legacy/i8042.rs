//! The i8042 keyboard controller, only so the guest can reset the machine
//! (command 0xFE to port 0x64), as Firecracker keeps it.

use crate::devices::bus::{BusAction, PioDevice};

/// Base port of the controller (data at 0x60, command/status at 0x64).
pub const I8042_BASE: u16 = 0x60;
const COMMAND_OFFSET: u16 = 4;
const CMD_RESET_CPU: u8 = 0xfe;

/// The controller.
#[derive(Default)]
pub struct I8042 {
    pub resets: u64,
}

impl PioDevice for I8042 {
    fn read(&mut self, _offset: u16, data: &mut [u8]) {
        // Status: output buffer empty, input buffer empty.
        data.fill(0);
    }

    fn write(&mut self, offset: u16, data: &[u8]) -> Option<BusAction> {
        if offset == COMMAND_OFFSET && data.first() == Some(&CMD_RESET_CPU) {
            self.resets += 1;
            return Some(BusAction::Reset);
        }
        None
    }
}
