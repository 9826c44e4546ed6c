//! The 8250 UART at 0x3f8 (vm-superio), its output to any writer and its
//! input from the host; interrupts go through an EventFd (irqfd).

use std::io::Write;

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::devices::bus::{BusAction, PioDevice};

/// Base port of the first UART.
pub const COM1: u16 = 0x3f8;

/// Raises the UART's interrupt by writing its EventFd.
pub struct EventFdTrigger(pub EventFd);

impl Trigger for EventFdTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> Result<(), Self::E> {
        self.0.write(1)
    }
}

/// The UART with counters of what crossed it.
pub struct SerialDevice<W: Write + Send> {
    uart: Serial<EventFdTrigger, NoEvents, W>,
    pub bytes_out: u64,
    pub bytes_in: u64,
    /// A break condition is at the head of the receive FIFO: the line
    /// status shows BI until the guest reads that (NUL) character.
    break_pending: bool,
}

const LSR: u16 = 5;
const LSR_BREAK_INTERRUPT: u8 = 0x10;
const LSR_DATA_READY: u8 = 0x01;

impl<W: Write + Send> SerialDevice<W> {
    pub fn new(interrupt: EventFd, out: W) -> Self {
        Self {
            uart: Serial::new(EventFdTrigger(interrupt), out),
            bytes_out: 0,
            bytes_in: 0,
            break_pending: false,
        }
    }

    /// Sends a break (what precedes a magic SysRq key on a serial line).
    /// Only when nothing is waiting in the FIFO, so the break is what the
    /// guest reads next; returns whether it was queued.
    pub fn send_break(&mut self) -> std::io::Result<bool> {
        let mut lsr = [0u8];
        self.read_lsr_raw(&mut lsr);
        if lsr[0] & LSR_DATA_READY != 0 || self.break_pending {
            return Ok(false);
        }
        self.break_pending = true;
        self.enqueue_input(&[0])?;
        self.bytes_in -= 1;
        Ok(true)
    }

    fn read_lsr_raw(&mut self, out: &mut [u8; 1]) {
        out[0] = self.uart.read(LSR as u8);
    }

    /// Queues host bytes as guest input; returns how many fit in the FIFO.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = self
            .uart
            .enqueue_raw_bytes(bytes)
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        self.bytes_in += n as u64;
        Ok(n)
    }

    /// A second handle on the interrupt EventFd (to register as an irqfd).
    pub fn interrupt_evt(&self) -> std::io::Result<EventFd> {
        self.uart.interrupt_evt().0.try_clone()
    }

    pub fn output(&self) -> &W {
        self.uart.writer()
    }
}

impl<W: Write + Send> PioDevice for SerialDevice<W> {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        if let Some(first) = data.first_mut() {
            *first = self.uart.read(offset as u8);
            if self.break_pending {
                if offset == LSR && *first & LSR_DATA_READY != 0 {
                    *first |= LSR_BREAK_INTERRUPT;
                } else if offset == 0 {
                    self.break_pending = false;
                }
            }
        }
    }

    fn write(&mut self, offset: u16, data: &[u8]) -> Option<BusAction> {
        if let Some(&value) = data.first() {
            if offset == 0 {
                self.bytes_out += 1;
            }
            let _ = self.uart.write(offset as u8, value);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THR: u16 = 0;
    const IER: u16 = 1;

    #[test]
    fn registers_output_input_and_interrupts() {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut dev = SerialDevice::new(irq.try_clone().unwrap(), Vec::new());
        let mut lsr = [0u8];
        dev.read(LSR, &mut lsr);
        assert_eq!(lsr[0] & 0x60, 0x60, "transmitter empty at reset");
        assert_eq!(lsr[0] & 0x01, 0, "no data ready");
        dev.write(THR, b"o");
        dev.write(THR, b"k");
        assert_eq!(dev.output().as_slice(), b"ok");
        assert_eq!(dev.bytes_out, 2);

        // Received-data interrupts enabled: input raises the interrupt line.
        dev.write(IER, &[0x01]);
        assert_eq!(dev.enqueue_input(b"x").unwrap(), 1);
        assert_eq!(irq.read().unwrap(), 1, "the guest was interrupted");
        dev.read(LSR, &mut lsr);
        assert_eq!(lsr[0] & 0x01, 1, "data ready");
        let mut rbr = [0u8];
        dev.read(THR, &mut rbr);
        assert_eq!(rbr[0], b'x');
        dev.read(LSR, &mut lsr);
        assert_eq!(lsr[0] & 0x01, 0, "drained");

        // A break reads as a NUL with BI in the line status, once.
        assert!(dev.send_break().unwrap());
        dev.read(LSR, &mut lsr);
        assert_eq!(lsr[0] & 0x11, 0x11, "data ready with break");
        dev.read(THR, &mut rbr);
        assert_eq!(rbr[0], 0);
        dev.enqueue_input(b"s").unwrap();
        dev.read(LSR, &mut lsr);
        assert_eq!(lsr[0] & 0x11, 0x01, "the next character is plain data");
    }
}
