//! The Intel MultiProcessor table (MP spec 1.4): how a kernel built without
//! ACPI finds its vCPUs, the IOAPIC and which IOAPIC pin each ISA interrupt
//! arrives on. Written at the start of the EBDA, where Linux scans for the
//! `_MP_` floating pointer. A kernel with ACPI reads the MADT instead and
//! ignores this table, so every VM gets both.
//!
//! The interrupt entries route ISA IRQ n to IOAPIC pin n for every pin
//! (the UART's 4 and the virtio devices' 5..23), which is what lets such a
//! kernel use the `virtio_mmio.device=SIZE@ADDR:IRQ` devices of its
//! command line: their IRQ numbers are those pins.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{APIC_START, EBDA_START, IOAPIC_START, LAST_DEVICE_IRQ};
use crate::error::VmError;

const FLOATING_POINTER_LEN: usize = 16;
const HEADER_LEN: usize = 44;
const PROCESSOR_LEN: usize = 20;
const ENTRY_LEN: usize = 8;
/// The EBDA area the kernel scans (its first KiB).
const AREA_LEN: usize = 1024;

const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;

const INTERRUPT_INT: u8 = 0;
const INTERRUPT_NMI: u8 = 1;
const INTERRUPT_EXTINT: u8 = 3;

const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BOOTSTRAP: u8 = 2;
/// Family 6 in the processor signature; FPU and APIC in the feature flags.
const CPU_SIGNATURE: u32 = 0x600;
const CPU_FEATURES: u32 = (1 << 9) | 1;
const ISA_BUS: u8 = 0;

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

/// The table for `vcpus` vCPUs, to be placed at `at`: the floating pointer
/// followed by the configuration table.
pub fn build(vcpus: u8, at: u64) -> Vec<u8> {
    let ioapic_id = vcpus; // after the local APIC ids 0..vcpus
    let mut entries: Vec<u8> = Vec::new();
    let mut count: u16 = 0;
    for cpu in 0..vcpus {
        let flags = CPU_ENABLED | if cpu == 0 { CPU_BOOTSTRAP } else { 0 };
        entries.extend([ENTRY_PROCESSOR, cpu, APIC_VERSION, flags]);
        entries.extend(CPU_SIGNATURE.to_le_bytes());
        entries.extend(CPU_FEATURES.to_le_bytes());
        entries.extend([0u8; 8]);
        count += 1;
    }
    entries.extend([ENTRY_BUS, ISA_BUS]);
    entries.extend(*b"ISA   ");
    count += 1;
    entries.extend([ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend(IOAPIC_START.to_le_bytes());
    count += 1;
    for irq in 0..=LAST_DEVICE_IRQ as u8 {
        // Type, type of interrupt, flags (conforming polarity and
        // trigger), source bus and IRQ, destination IOAPIC and pin.
        entries.extend([
            ENTRY_IO_INTERRUPT,
            INTERRUPT_INT,
            0,
            0,
            ISA_BUS,
            irq,
            ioapic_id,
            irq,
        ]);
        count += 1;
    }
    for (lint, kind) in [(0u8, INTERRUPT_EXTINT), (1, INTERRUPT_NMI)] {
        // Every local APIC (0xff): LINT0 takes the PIC's ExtINT, LINT1 NMI.
        entries.extend([ENTRY_LOCAL_INTERRUPT, kind, 0, 0, ISA_BUS, 0, 0xff, lint]);
        count += 1;
    }

    debug_assert_eq!(
        entries.len(),
        vcpus as usize * PROCESSOR_LEN + (count - u16::from(vcpus)) as usize * ENTRY_LEN
    );
    let table_len = HEADER_LEN + entries.len();
    let mut table = Vec::with_capacity(table_len);
    table.extend(*b"PCMP");
    table.extend((table_len as u16).to_le_bytes());
    table.push(4); // spec revision 1.4
    table.push(0); // checksum, below
    table.extend(*b"DRYDOCK ");
    table.extend(*b"VMM         ");
    table.extend(0u32.to_le_bytes()); // no OEM table
    table.extend(0u16.to_le_bytes());
    table.extend(count.to_le_bytes());
    table.extend(APIC_START.to_le_bytes());
    table.extend([0u8; 4]); // no extended table
    table.extend(entries);
    table[7] = checksum(&table);

    let mut out = Vec::with_capacity(FLOATING_POINTER_LEN + table_len);
    out.extend(*b"_MP_");
    out.extend(((at + FLOATING_POINTER_LEN as u64) as u32).to_le_bytes());
    out.push(1); // length in 16-byte units
    out.push(4); // spec revision 1.4
    out.push(0); // checksum, below
    out.extend([0u8; 5]); // a configuration table follows; no IMCR
    out[10] = checksum(&out);
    out.extend(table);
    out
}

/// Writes the table for `vcpus` vCPUs at the start of the EBDA.
pub fn write(mem: &GuestMemoryMmap, vcpus: u8) -> Result<(), VmError> {
    let bytes = build(vcpus, EBDA_START);
    if bytes.len() > AREA_LEN {
        return Err(VmError::Setup(format!(
            "the MP table for {vcpus} vCPUs ({} bytes) does not fit the EBDA's first KiB",
            bytes.len()
        )));
    }
    mem.write_slice(&bytes, GuestAddress(EBDA_START))
        .map_err(|e| VmError::Memory(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sums_to_zero(bytes: &[u8]) -> bool {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)) == 0
    }

    #[test]
    fn floating_pointer_and_table_are_linked_and_checksummed() {
        let t = build(2, EBDA_START);
        assert_eq!(&t[..4], b"_MP_");
        assert!(sums_to_zero(&t[..16]));
        let table_at = u32::from_le_bytes(t[4..8].try_into().unwrap()) as u64;
        assert_eq!(table_at, EBDA_START + 16);
        let table = &t[16..];
        assert_eq!(&table[..4], b"PCMP");
        let len = u16::from_le_bytes([table[4], table[5]]) as usize;
        assert_eq!(len, table.len());
        assert!(sums_to_zero(table));
        assert_eq!(
            u32::from_le_bytes(table[36..40].try_into().unwrap()),
            APIC_START
        );
    }

    #[test]
    fn entries_list_the_vcpus_the_ioapic_and_every_pin() {
        let t = build(3, EBDA_START);
        let table = &t[16..];
        let count = u16::from_le_bytes([table[34], table[35]]) as usize;
        let mut at = HEADER_LEN;
        let (mut cpus, mut bsp, mut pins, mut ioapics, mut locals) = (0, 0, vec![], 0, 0);
        for _ in 0..count {
            match table[at] {
                ENTRY_PROCESSOR => {
                    cpus += 1;
                    if table[at + 3] & CPU_BOOTSTRAP != 0 {
                        bsp += 1;
                    }
                    at += PROCESSOR_LEN;
                    continue;
                }
                ENTRY_IOAPIC => {
                    ioapics += 1;
                    assert_eq!(table[at + 1], 3, "the IOAPIC id follows the vCPUs'");
                }
                ENTRY_IO_INTERRUPT => {
                    assert_eq!(table[at + 5], table[at + 7], "ISA IRQ n arrives on pin n");
                    pins.push(table[at + 7]);
                }
                ENTRY_LOCAL_INTERRUPT => locals += 1,
                ENTRY_BUS => assert_eq!(&table[at + 2..at + 8], b"ISA   "),
                other => panic!("unexpected entry type {other}"),
            }
            at += ENTRY_LEN;
        }
        assert_eq!(at, table.len());
        assert_eq!((cpus, bsp, ioapics, locals), (3, 1, 1, 2));
        assert_eq!(pins, (0..=LAST_DEVICE_IRQ as u8).collect::<Vec<_>>());
    }

    #[test]
    fn thirty_two_vcpus_fit_the_ebda() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        write(&mem, 32).unwrap();
        let mut sig = [0u8; 4];
        mem.read_slice(&mut sig, GuestAddress(EBDA_START)).unwrap();
        assert_eq!(&sig, b"_MP_");
    }
}
