//! Cost of a port-I/O exit round trip on this machine's /dev/kvm: a tiny
//! real-mode guest runs `out` in a loop; each one exits to drydock's VMM
//! and back.
//!
//! Run with `cargo bench --bench kvm_exits`.

use std::time::Instant;

use drydock_vmm::devices::bus::PioBus;
use drydock_vmm::vstate::vcpu::{ExitReason, MmioHandler, Vcpu};
use drydock_vmm::vstate::vm::Vm;
use vm_memory::{Bytes, GuestAddress};

struct NoMmio;

impl MmioHandler for NoMmio {
    fn read(&mut self, _addr: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&mut self, _addr: u64, _data: &[u8]) {}
}

fn main() {
    println!(
        "drydock VMM on /dev/kvm ({:?})",
        drydock_vmm::probe::probe_kvm()
    );
    for outs in [10_000u16, 50_000] {
        let [lo, hi] = outs.to_le_bytes();
        #[rustfmt::skip]
        let code = [
            0xb9, lo, hi,     // mov cx, outs
            0xba, 0x80, 0x00, // mov dx, 0x80
            0xee,             // again: out dx, al
            0xe2, 0xfd,       // loop again
            0xf4,             // hlt
        ];
        let vm = Vm::new(0x8000).expect("KVM");
        vm.memory.write_slice(&code, GuestAddress(0x1000)).unwrap();
        let mut vcpu = Vcpu::new(&vm, 0).unwrap();
        vcpu.set_real_mode_entry(0x1000).unwrap();
        let mut bus = PioBus::default();
        let start = Instant::now();
        let reason = vcpu.run(&mut bus, &mut NoMmio).unwrap();
        let elapsed = start.elapsed();
        assert_eq!(reason, ExitReason::Halted);
        assert_eq!(bus.unclaimed, u64::from(outs));
        println!(
            "{:<44} {:>8.2} µs",
            format!("port-I/O exit round trip ({outs} exits)"),
            elapsed.as_secs_f64() * 1e6 / f64::from(outs)
        );
    }
}
