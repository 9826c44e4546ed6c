//! drydock's VMM on this machine's /dev/kvm with tiny real-mode guests
//! assembled here: serial output and input, port and MMIO exits, an
//! i8042 reset, a vCPU that halts.

use std::io::Write;
use std::sync::{Arc, Mutex};

use drydock_vmm::devices::bus::PioBus;
use drydock_vmm::devices::legacy::i8042::{I8042, I8042_BASE};
use drydock_vmm::devices::legacy::serial::{SerialDevice, COM1};
use drydock_vmm::vstate::vcpu::{ExitReason, MmioHandler, Vcpu};
use drydock_vmm::vstate::vm::Vm;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

const ENTRY: u16 = 0x1000;
const MEM: usize = 0x8000;

/// Console output shared with the test.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Default)]
struct RecordingMmio {
    reads: Vec<u64>,
    writes: Vec<(u64, Vec<u8>)>,
    answer: u8,
}

impl MmioHandler for RecordingMmio {
    fn read(&mut self, addr: u64, data: &mut [u8]) {
        self.reads.push(addr);
        data.fill(self.answer);
    }
    fn write(&mut self, addr: u64, data: &[u8]) {
        self.writes.push((addr, data.to_vec()));
    }
}

struct Machine {
    vm: Vm,
    vcpu: Vcpu,
    bus: PioBus,
    sink: Sink,
}

fn machine(code: &[u8], input: &[u8]) -> Machine {
    let vm = Vm::new(MEM).expect("KVM works on this machine (/dev/kvm)");
    vm.memory
        .write_slice(code, GuestAddress(u64::from(ENTRY)))
        .unwrap();
    let vcpu = Vcpu::new(&vm, 0).unwrap();
    vcpu.set_real_mode_entry(ENTRY).unwrap();
    let sink = Sink::default();
    let mut serial = SerialDevice::new(EventFd::new(0).unwrap(), sink.clone());
    if !input.is_empty() {
        serial.enqueue_input(input).unwrap();
    }
    let mut bus = PioBus::default();
    bus.insert(COM1, 8, Box::new(serial));
    bus.insert(I8042_BASE, 5, Box::new(I8042::default()));
    Machine {
        vm,
        vcpu,
        bus,
        sink,
    }
}

#[test]
fn a_guest_writes_to_the_serial_port_and_halts() {
    #[rustfmt::skip]
    let code = [
        0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xb0, b'H',       // mov al, 'H'
        0xee,             // out dx, al
        0xb0, b'i',       // mov al, 'i'
        0xee,             // out dx, al
        0xf4,             // hlt
    ];
    let mut m = machine(&code, b"");
    let reason = m
        .vcpu
        .run(&mut m.bus, &mut RecordingMmio::default())
        .unwrap();
    assert_eq!(reason, ExitReason::Halted);
    assert_eq!(m.sink.0.lock().unwrap().as_slice(), b"Hi");
    assert_eq!(m.bus.unclaimed, 0);
    drop(m.vm);
}

#[test]
fn a_guest_reads_serial_input_when_the_line_status_says_so() {
    #[rustfmt::skip]
    let code = [
        0xba, 0xfd, 0x03, // mov dx, 0x3fd (line status)
        0xec,             // wait: in al, dx
        0xa8, 0x01,       // test al, 1 (data ready)
        0x74, 0xfb,       // jz wait
        0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xec,             // in al, dx
        0x04, 0x01,       // add al, 1
        0xee,             // out dx, al
        0xf4,             // hlt
    ];
    let mut m = machine(&code, b"A");
    let reason = m
        .vcpu
        .run(&mut m.bus, &mut RecordingMmio::default())
        .unwrap();
    assert_eq!(reason, ExitReason::Halted);
    assert_eq!(
        m.sink.0.lock().unwrap().as_slice(),
        b"B",
        "the guest read 'A' and wrote 'B'"
    );
}

#[test]
fn accesses_outside_memory_exit_as_mmio_and_unclaimed_ports_are_counted() {
    #[rustfmt::skip]
    let code = [
        0xb0, 0x5a,       // mov al, 0x5a
        0xa2, 0x00, 0x90, // mov [0x9000], al   (beyond the 32 KiB of memory)
        0xa0, 0x10, 0x90, // mov al, [0x9010]
        0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xee,             // out dx, al         (what the MMIO read returned)
        0xe6, 0x80,       // out 0x80, al       (no device there)
        0xf4,             // hlt
    ];
    let mut m = machine(&code, b"");
    let mut mmio = RecordingMmio {
        answer: b'M',
        ..Default::default()
    };
    let reason = m.vcpu.run(&mut m.bus, &mut mmio).unwrap();
    assert_eq!(reason, ExitReason::Halted);
    assert_eq!(mmio.writes, vec![(0x9000, vec![0x5a])]);
    assert_eq!(mmio.reads, vec![0x9010]);
    assert_eq!(m.sink.0.lock().unwrap().as_slice(), b"M");
    assert_eq!(m.bus.unclaimed, 1);
}

#[test]
fn the_i8042_reset_command_resets_the_machine() {
    #[rustfmt::skip]
    let code = [
        0xb0, 0xfe,       // mov al, 0xfe
        0xe6, 0x64,       // out 0x64, al
        0xf4,             // hlt (never reached)
    ];
    let mut m = machine(&code, b"");
    let reason = m
        .vcpu
        .run(&mut m.bus, &mut RecordingMmio::default())
        .unwrap();
    assert_eq!(reason, ExitReason::Reset);
}
