//! The hardware-reduced ACPI registers the guest powers off and resets
//! through: the sleep control register (writing SLP_EN with sleep type
//! S5 is "power off"), the sleep status register, and the reset register
//! named in the FADT.

use crate::arch::acpi::S5_SLEEP_TYPE;
use crate::arch::layout::{
    ACPI_RESET_PORT, ACPI_RESET_VALUE, ACPI_SLEEP_CONTROL_PORT, ACPI_SLEEP_STATUS_PORT,
};
use crate::devices::bus::{BusAction, PioDevice};

/// Base port and length of the three registers.
pub const POWER_BASE: u16 = ACPI_SLEEP_CONTROL_PORT;
pub const POWER_LEN: u16 = 3;

const SLEEP_ENABLE: u8 = 1 << 5;
const SLEEP_TYPE_SHIFT: u8 = 2;
const SLEEP_TYPE_MASK: u8 = 0x7;
/// "Woken" in the sleep status register: the guest's wait loop ends.
const WAKE_STATUS: u8 = 1 << 7;

/// The registers.
#[derive(Default)]
pub struct PowerControl {
    pub power_offs: u64,
    pub resets: u64,
}

impl PioDevice for PowerControl {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        data.fill(0);
        if offset == ACPI_SLEEP_STATUS_PORT - POWER_BASE {
            if let Some(b) = data.first_mut() {
                *b = WAKE_STATUS;
            }
        }
    }

    fn write(&mut self, offset: u16, data: &[u8]) -> Option<BusAction> {
        let v = *data.first()?;
        match offset + POWER_BASE {
            ACPI_SLEEP_CONTROL_PORT
                if v & SLEEP_ENABLE != 0
                    && (v >> SLEEP_TYPE_SHIFT) & SLEEP_TYPE_MASK == S5_SLEEP_TYPE =>
            {
                self.power_offs += 1;
                Some(BusAction::PowerOff)
            }
            ACPI_RESET_PORT if v == ACPI_RESET_VALUE => {
                self.resets += 1;
                Some(BusAction::Reset)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s5_with_sleep_enable_powers_off_and_the_reset_value_resets() {
        let mut p = PowerControl::default();
        let ctl = ACPI_SLEEP_CONTROL_PORT - POWER_BASE;
        assert_eq!(p.write(ctl, &[5 << 2]), None, "no SLP_EN");
        assert_eq!(p.write(ctl, &[(3 << 2) | 0x20]), None, "S3 is not off");
        assert_eq!(p.write(ctl, &[(5 << 2) | 0x20]), Some(BusAction::PowerOff));
        assert_eq!(
            p.write(ACPI_RESET_PORT - POWER_BASE, &[ACPI_RESET_VALUE]),
            Some(BusAction::Reset)
        );
        let mut st = [0u8];
        p.read(ACPI_SLEEP_STATUS_PORT - POWER_BASE, &mut st);
        assert_eq!(st[0], WAKE_STATUS);
    }
}
