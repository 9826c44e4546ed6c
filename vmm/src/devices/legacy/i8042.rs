//! The i8042 keyboard controller: there so the guest can reset the machine
//! (command 0xFE to port 0x64), as Firecracker keeps it, and complete
//! enough that a kernel probing it does not wait for answers that never
//! come: the configuration byte reads back (command 0x20) and writes
//! (0x60), the self-tests pass (0xAA, 0xAB), the output port reads and
//! writes (0xD0, 0xD1), and there is no mouse port (0xA9 reports it
//! broken). No keyboard is attached: keyboard commands get no answer.
//! (A kernel without ACPI probes the controller directly; without these
//! answers its probe times out, over a second of boot.)

use crate::devices::bus::{BusAction, PioDevice};

/// Base port of the controller (data at 0x60, command/status at 0x64).
pub const I8042_BASE: u16 = 0x60;
const DATA_OFFSET: u16 = 0;
const COMMAND_OFFSET: u16 = 4;

const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_TEST_AUX: u8 = 0xa9;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_TEST_KBD: u8 = 0xab;
const CMD_READ_OUTPUT_PORT: u8 = 0xd0;
const CMD_WRITE_OUTPUT_PORT: u8 = 0xd1;
const CMD_RESET_CPU: u8 = 0xfe;

const SELF_TEST_PASSED: u8 = 0x55;
const PORT_TEST_PASSED: u8 = 0x00;
/// "Clock line stuck low": the answer for a port with nothing behind it.
const PORT_TEST_FAILED: u8 = 0x01;

/// Status register bits.
const STATUS_OUTPUT_FULL: u8 = 0x01;
const STATUS_SYSTEM_FLAG: u8 = 0x04;
const STATUS_LAST_WAS_COMMAND: u8 = 0x08;

/// Configuration byte at power-on: keyboard interrupt on, system flag,
/// translation.
const CTR_DEFAULT: u8 = 0x45;
/// Output port at power-on: A20 enabled, reset line not asserted.
const OUTPUT_PORT_DEFAULT: u8 = 0x03;

/// What the next byte on the data port is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataFor {
    Keyboard,
    Configuration,
    OutputPort,
}

/// The controller.
pub struct I8042 {
    pub resets: u64,
    configuration: u8,
    output_port: u8,
    output: Option<u8>,
    data_for: DataFor,
    last_was_command: bool,
}

impl Default for I8042 {
    fn default() -> Self {
        Self {
            resets: 0,
            configuration: CTR_DEFAULT,
            output_port: OUTPUT_PORT_DEFAULT,
            output: None,
            data_for: DataFor::Keyboard,
            last_was_command: false,
        }
    }
}

impl I8042 {
    fn status(&self) -> u8 {
        let mut s = STATUS_SYSTEM_FLAG;
        if self.output.is_some() {
            s |= STATUS_OUTPUT_FULL;
        }
        if self.last_was_command {
            s |= STATUS_LAST_WAS_COMMAND;
        }
        s
    }

    fn command(&mut self, cmd: u8) -> Option<BusAction> {
        self.last_was_command = true;
        self.data_for = DataFor::Keyboard;
        match cmd {
            CMD_READ_CTR => self.output = Some(self.configuration),
            CMD_WRITE_CTR => self.data_for = DataFor::Configuration,
            CMD_SELF_TEST => self.output = Some(SELF_TEST_PASSED),
            CMD_TEST_KBD => self.output = Some(PORT_TEST_PASSED),
            CMD_TEST_AUX => self.output = Some(PORT_TEST_FAILED),
            CMD_READ_OUTPUT_PORT => self.output = Some(self.output_port),
            CMD_WRITE_OUTPUT_PORT => self.data_for = DataFor::OutputPort,
            CMD_RESET_CPU => {
                self.resets += 1;
                return Some(BusAction::Reset);
            }
            // Enable/disable ports and the rest: accepted, nothing to do.
            _ => {}
        }
        None
    }

    fn data(&mut self, byte: u8) -> Option<BusAction> {
        self.last_was_command = false;
        match std::mem::replace(&mut self.data_for, DataFor::Keyboard) {
            DataFor::Configuration => self.configuration = byte,
            DataFor::OutputPort => {
                self.output_port = byte;
                // Bit 0 low pulls the CPU's reset line.
                if byte & 1 == 0 {
                    self.resets += 1;
                    return Some(BusAction::Reset);
                }
            }
            DataFor::Keyboard => {} // no keyboard attached
        }
        None
    }
}

impl PioDevice for I8042 {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        let value = match offset {
            DATA_OFFSET => self.output.take().unwrap_or(0),
            COMMAND_OFFSET => self.status(),
            _ => 0xff,
        };
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, offset: u16, data: &[u8]) -> Option<BusAction> {
        let &byte = data.first()?;
        match offset {
            COMMAND_OFFSET => self.command(byte),
            DATA_OFFSET => self.data(byte),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(dev: &mut I8042, cmd: u8) -> Option<BusAction> {
        dev.write(COMMAND_OFFSET, &[cmd])
    }

    fn read_data(dev: &mut I8042) -> Option<u8> {
        let mut s = [0u8];
        dev.read(COMMAND_OFFSET, &mut s);
        if s[0] & STATUS_OUTPUT_FULL == 0 {
            return None;
        }
        let mut d = [0u8];
        dev.read(DATA_OFFSET, &mut d);
        Some(d[0])
    }

    #[test]
    fn configuration_byte_reads_back_what_was_written() {
        let mut dev = I8042::default();
        assert_eq!(read_data(&mut dev), None, "nothing to read at power-on");
        command(&mut dev, CMD_READ_CTR);
        assert_eq!(read_data(&mut dev), Some(CTR_DEFAULT));
        assert_eq!(read_data(&mut dev), None, "a byte is read once");
        command(&mut dev, CMD_WRITE_CTR);
        assert_eq!(dev.write(DATA_OFFSET, &[0x30]), None);
        command(&mut dev, CMD_READ_CTR);
        assert_eq!(read_data(&mut dev), Some(0x30));
    }

    #[test]
    fn self_tests_pass_and_there_is_no_mouse() {
        let mut dev = I8042::default();
        command(&mut dev, CMD_SELF_TEST);
        assert_eq!(read_data(&mut dev), Some(SELF_TEST_PASSED));
        command(&mut dev, CMD_TEST_KBD);
        assert_eq!(read_data(&mut dev), Some(PORT_TEST_PASSED));
        command(&mut dev, CMD_TEST_AUX);
        assert_eq!(read_data(&mut dev), Some(PORT_TEST_FAILED));
        // Keyboard commands get no answer: no keyboard.
        assert_eq!(dev.write(DATA_OFFSET, &[0xf2]), None);
        assert_eq!(read_data(&mut dev), None);
    }

    #[test]
    fn reset_by_command_or_by_the_output_port() {
        let mut dev = I8042::default();
        assert_eq!(command(&mut dev, CMD_RESET_CPU), Some(BusAction::Reset));
        command(&mut dev, CMD_READ_OUTPUT_PORT);
        assert_eq!(read_data(&mut dev), Some(OUTPUT_PORT_DEFAULT));
        command(&mut dev, CMD_WRITE_OUTPUT_PORT);
        assert_eq!(
            dev.write(DATA_OFFSET, &[0x03]),
            None,
            "reset line kept high"
        );
        command(&mut dev, CMD_WRITE_OUTPUT_PORT);
        assert_eq!(dev.write(DATA_OFFSET, &[0x02]), Some(BusAction::Reset));
        assert_eq!(dev.resets, 2);
    }
}
