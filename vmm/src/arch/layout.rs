//! Where things live in guest physical memory (the same choices as
//! Firecracker, so the numbers are familiar to anyone who knows it).

/// GDT and IDT used for the 64-bit entry.
pub const BOOT_GDT_START: u64 = 0x500;
pub const BOOT_IDT_START: u64 = 0x520;
/// The zero page (`struct boot_params`) the kernel finds in %rsi.
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Identity page tables covering the first GiB with 2 MiB pages.
pub const PML4_START: u64 = 0x9000;
pub const PDPTE_START: u64 = 0xa000;
pub const PDE_START: u64 = 0xb000;
/// The kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
pub const CMDLINE_MAX_SIZE: usize = 4096;
/// End of conventional memory (the EBDA starts here).
pub const EBDA_START: u64 = 0x9fc00;
/// ACPI tables, in the BIOS area the kernel scans for the RSDP.
pub const ACPI_START: u64 = 0xe0000;
pub const ACPI_END: u64 = 0x100000;
/// Memory above 1 MiB: where the kernel is loaded.
pub const HIGH_MEMORY_START: u64 = 0x100000;
/// Guest RAM below 4 GiB stops here; devices live above.
pub const MMIO_GAP_START: u64 = 0xd000_0000;
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// virtio-mmio device windows, one page each.
pub const VIRTIO_MMIO_START: u64 = MMIO_GAP_START;
/// The in-kernel IOAPIC and local APIC (KVM's defaults).
pub const IOAPIC_START: u32 = 0xfec0_0000;
pub const APIC_START: u32 = 0xfee0_0000;
/// KVM's TSS and identity-map pages, just below the IOAPIC region's end.
pub const KVM_IDENTITY_MAP_START: u64 = 0xfffb_c000;
pub const KVM_TSS_START: usize = 0xfffb_d000;
/// Legacy IRQ of the first UART.
pub const SERIAL_IRQ: u32 = 4;
/// IRQs given to virtio devices, in order (IOAPIC pins 5..23).
pub const FIRST_DEVICE_IRQ: u32 = 5;
pub const LAST_DEVICE_IRQ: u32 = 23;
/// Ports of the ACPI sleep control / status and reset registers
/// (hardware-reduced ACPI: the guest powers off and resets through them).
pub const ACPI_SLEEP_CONTROL_PORT: u16 = 0x3c0;
pub const ACPI_SLEEP_STATUS_PORT: u16 = 0x3c1;
pub const ACPI_RESET_PORT: u16 = 0x3c2;
pub const ACPI_RESET_VALUE: u8 = 0x1;
/// PCI configuration mechanism #1.
pub const PCI_CONFIG_PORT: u16 = 0xcf8;
/// Where PCI BARs are placed.
pub const PCI_MMIO_START: u64 = 0xe000_0000;
pub const PCI_MMIO_SIZE: u64 = 0x1000_0000 - 0x0100_0000;

/// Guest RAM ranges for `size` bytes of memory: below the MMIO gap, and
/// the rest above 4 GiB.
pub fn ram_ranges(size: u64) -> Vec<(u64, u64)> {
    if size <= MMIO_GAP_START {
        vec![(0, size)]
    } else {
        vec![(0, MMIO_GAP_START), (MMIO_GAP_END, size - MMIO_GAP_START)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_above_the_gap_moves_past_4_gib() {
        assert_eq!(ram_ranges(256 << 20), vec![(0, 256 << 20)]);
        let big = ram_ranges(4 << 30);
        assert_eq!(big[0], (0, MMIO_GAP_START));
        assert_eq!(big[1].0, 1 << 32);
        assert_eq!(big[0].1 + big[1].1, 4 << 30);
    }
}
