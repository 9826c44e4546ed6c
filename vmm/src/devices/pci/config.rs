//! A type-0 PCI configuration space: identity, command/status, one 64-bit
//! memory BAR (BAR0) with the sizing protocol, a capability list, and the
//! host bridge that makes Linux trust configuration mechanism #1.

use super::PciFunction;

const COMMAND: u16 = 0x04;
const COMMAND_MEMORY: u32 = 0x2;
const BAR0: u16 = 0x10;
const BAR0_HIGH: u16 = 0x14;
const BAR_MEM64: u32 = 0x4;
const STATUS_CAP_LIST: u32 = 0x10 << 16;

/// 256 bytes of configuration space.
pub struct ConfigSpace {
    regs: [u32; 64],
    /// Size of BAR0 (a power of two), 0 for none.
    bar0_size: u64,
}

impl ConfigSpace {
    /// Identity: vendor/device, class (base, sub, prog-if), revision,
    /// subsystem vendor/id.
    pub fn new(vendor: u16, device: u16, class: u32, revision: u8, subsystem: (u16, u16)) -> Self {
        let mut regs = [0u32; 64];
        regs[0] = u32::from(vendor) | (u32::from(device) << 16);
        regs[2] = (class << 8) | u32::from(revision);
        regs[11] = u32::from(subsystem.0) | (u32::from(subsystem.1) << 16);
        Self { regs, bar0_size: 0 }
    }

    /// BAR0: 64-bit memory of `size` bytes at `addr`.
    pub fn set_bar0(&mut self, addr: u64, size: u64) {
        assert!(size.is_power_of_two() && addr % size == 0);
        self.bar0_size = size;
        self.regs[(BAR0 / 4) as usize] = (addr as u32 & !0xf) | BAR_MEM64;
        self.regs[(BAR0_HIGH / 4) as usize] = (addr >> 32) as u32;
    }

    /// Where BAR0 is now (the guest may move it).
    pub fn bar0(&self) -> Option<(u64, u64)> {
        if self.bar0_size == 0 {
            return None;
        }
        let lo = u64::from(self.regs[(BAR0 / 4) as usize] & !0xf);
        let hi = u64::from(self.regs[(BAR0_HIGH / 4) as usize]);
        Some(((hi << 32) | lo, self.bar0_size))
    }

    pub fn memory_enabled(&self) -> bool {
        self.regs[(COMMAND / 4) as usize] & COMMAND_MEMORY != 0
    }

    /// Appends a capability (`bytes` without its first two bytes: id and
    /// next are filled in) at `offset`; returns the next free offset.
    pub fn add_capability(&mut self, offset: u8, id: u8, body: &[u8]) -> u8 {
        let ptr = 0x34;
        // Walk to the end of the list.
        let mut at = self.byte(ptr);
        let mut last = ptr;
        while at != 0 {
            last = at + 1;
            at = self.byte(at + 1);
        }
        self.set_byte(last, offset);
        self.set_byte(offset, id);
        self.set_byte(offset + 1, 0);
        for (i, b) in body.iter().enumerate() {
            self.set_byte(offset + 2 + i as u8, *b);
        }
        self.regs[1] |= STATUS_CAP_LIST;
        let end = offset as usize + 2 + body.len();
        ((end + 3) & !3) as u8
    }

    pub fn byte(&self, off: u8) -> u8 {
        self.regs[(off / 4) as usize].to_le_bytes()[(off % 4) as usize]
    }

    pub fn set_byte(&mut self, off: u8, v: u8) {
        let mut b = self.regs[(off / 4) as usize].to_le_bytes();
        b[(off % 4) as usize] = v;
        self.regs[(off / 4) as usize] = u32::from_le_bytes(b);
    }

    /// A dword read at `reg` (dword aligned).
    pub fn read(&self, reg: u16) -> u32 {
        self.regs
            .get((reg / 4) as usize)
            .copied()
            .unwrap_or(0xffff_ffff)
    }

    /// A guest write of 1, 2 or 4 bytes at `off`: only the command
    /// register, BAR0, the interrupt line and capability registers the
    /// owner marked writable change.
    pub fn write_bytes(&mut self, off: u16, data: &[u8]) {
        let reg = off & !3;
        let mut v = self.read(reg).to_le_bytes();
        for (i, b) in data.iter().enumerate() {
            if let Some(slot) = v.get_mut((off % 4) as usize + i) {
                *slot = *b;
            }
        }
        let v = u32::from_le_bytes(v);
        match reg {
            COMMAND => {
                let old = self.regs[1];
                self.regs[1] = (old & 0xffff_0000) | (v & 0x0000_0507);
            }
            BAR0 if self.bar0_size > 0 => {
                let mask = !((self.bar0_size as u32).wrapping_sub(1)) & !0xf;
                self.regs[(BAR0 / 4) as usize] = (v & mask) | BAR_MEM64;
            }
            BAR0_HIGH if self.bar0_size > 0 => self.regs[(BAR0_HIGH / 4) as usize] = v,
            0x3c => {
                // Interrupt line is scratch for the OS; the pin is read-only.
                let old = self.regs[15];
                self.regs[15] = (old & !0xff) | (v & 0xff);
            }
            _ if reg >= 0x40 => {
                if let Some(r) = self.regs.get_mut((reg / 4) as usize) {
                    *r = v;
                }
            }
            _ => {}
        }
    }
}

/// The host bridge at 00:00.0 (Linux checks for one before it uses
/// configuration mechanism #1).
pub struct HostBridge {
    config: ConfigSpace,
}

impl Default for HostBridge {
    fn default() -> Self {
        Self {
            config: ConfigSpace::new(0x8086, 0x29c0, 0x06_00_00, 0, (0x1af4, 0x1100)),
        }
    }
}

impl PciFunction for HostBridge {
    fn config(&mut self) -> &mut ConfigSpace {
        &mut self.config
    }
    fn bar_read(&mut self, _: u64, data: &mut [u8]) {
        data.fill(0xff)
    }
    fn bar_write(&mut self, _: u64, _: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar0_sizing_reports_the_size_and_keeps_the_type() {
        let mut c = ConfigSpace::new(0x1af4, 0x1042, 0x01_00_00, 1, (0x1af4, 2));
        c.set_bar0(0xe000_0000, 0x4000);
        c.write_bytes(BAR0, &0xffff_ffffu32.to_le_bytes());
        c.write_bytes(BAR0_HIGH, &0xffff_ffffu32.to_le_bytes());
        let lo = c.read(BAR0);
        let hi = c.read(BAR0_HIGH);
        let size = !((u64::from(hi) << 32) | u64::from(lo & !0xf)) + 1;
        assert_eq!(size, 0x4000);
        assert_eq!(lo & 0x7, BAR_MEM64);
        c.write_bytes(BAR0, &0xe000_4000u32.to_le_bytes());
        c.write_bytes(BAR0_HIGH, &0u32.to_le_bytes());
        assert_eq!(c.bar0(), Some((0xe000_4000, 0x4000)));
        assert!(!c.memory_enabled());
        c.write_bytes(COMMAND, &[0x6]);
        assert!(c.memory_enabled());
        assert_eq!(c.read(0) & 0xffff, 0x1af4, "vendor is read-only");
        c.write_bytes(0, &[0, 0, 0, 0]);
        assert_eq!(c.read(0) & 0xffff, 0x1af4);
    }

    #[test]
    fn capabilities_chain_from_the_pointer() {
        let mut c = ConfigSpace::new(0x1af4, 0x1042, 0x01_00_00, 1, (0x1af4, 2));
        let next = c.add_capability(0x40, 0x09, &[14, 1]);
        let _ = c.add_capability(next, 0x11, &[0, 0]);
        assert_eq!(c.byte(0x34), 0x40);
        assert_eq!(c.byte(0x41), next);
        assert_eq!(c.byte(next), 0x11);
        assert_eq!(c.byte(next + 1), 0);
        assert_ne!(c.read(0x04) & STATUS_CAP_LIST, 0);
    }
}
