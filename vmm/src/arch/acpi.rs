//! ACPI tables (hardware-reduced, built with the `acpi_tables` crate):
//! the MADT lists the vCPUs' local APICs and the IOAPIC, the FADT points
//! at the sleep-control and reset registers the guest powers off and
//! resets through, and the DSDT says which value means "soft off" (`_S5`).
//! Everything goes in the BIOS area where the kernel also scans for the RSDP.

use acpi_tables::{aml, fadt, gas, madt, rsdp::Rsdp, sdt::Sdt, xsdt::XSDT, Aml};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::*;
use crate::error::VmError;

const OEM_ID: [u8; 6] = *b"DRYDCK";
const OEM_TABLE_ID: [u8; 8] = *b"DRYDOCKV";
const OEM_REVISION: u32 = 1;
/// The sleep type the guest writes for S5 (soft off).
pub const S5_SLEEP_TYPE: u8 = 5;

fn bytes_of(table: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    table.to_aml_bytes(&mut v);
    v
}

/// A virtio-mmio device window and its interrupt, as the DSDT describes it.
#[derive(Debug, Clone, Copy)]
pub struct MmioDeviceInfo {
    pub addr: u64,
    pub len: u32,
    pub irq: u32,
}

/// One virtio-mmio device (`LNRO0005`, the id Linux's virtio_mmio driver
/// matches) with its register window and edge-triggered interrupt.
fn virtio_mmio_device(index: usize, dev: &MmioDeviceInfo) -> Vec<u8> {
    let name = format!("V{index:03X}");
    let mem = aml::Memory32Fixed::new(true, dev.addr as u32, dev.len);
    let irq = aml::Interrupt::new(true, true, false, false, dev.irq);
    let crs = aml::ResourceTemplate::new(vec![&mem, &irq]);
    let hid = aml::Name::new("_HID".into(), &"LNRO0005");
    let uid = aml::Name::new("_UID".into(), &(index as u8));
    let cca = aml::Name::new("_CCA".into(), &aml::ONE);
    let crs = aml::Name::new("_CRS".into(), &crs);
    bytes_of(&aml::Device::new(
        name.as_str().into(),
        vec![&hid, &uid, &cca, &crs],
    ))
}

/// The first UART (`PNP0501`): hardware-reduced ACPI has no legacy PIC,
/// so Linux maps no ISA interrupt on its own; the UART's IRQ must be
/// described for its driver to get one.
fn com1_device() -> Vec<u8> {
    let irq = aml::Interrupt::new(true, true, false, false, SERIAL_IRQ);
    let io = aml::IO::new(0x3f8, 0x3f8, 0, 8);
    let crs = aml::ResourceTemplate::new(vec![&irq, &io]);
    let hid = aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0501"));
    let uid = aml::Name::new("_UID".into(), &aml::ZERO);
    let crs = aml::Name::new("_CRS".into(), &crs);
    bytes_of(&aml::Device::new("COM1".into(), vec![&hid, &uid, &crs]))
}

/// The PCI root bridge (bus 0, configuration mechanism #1 at 0xcf8, the
/// memory window BARs live in). Devices use MSI-X, so no `_PRT`.
fn pci_root() -> Vec<u8> {
    let bus = aml::AddressSpace::new_bus_number(0u16, 0u16);
    let cfg = aml::IO::new(0xcf8, 0xcf8, 1, 8);
    let io_low = aml::AddressSpace::new_io(0u16, 0x0cf7u16, None);
    let io_high = aml::AddressSpace::new_io(0x0d00u16, 0xffffu16, None);
    let mem = aml::AddressSpace::new_memory(
        aml::AddressSpaceCacheable::NotCacheable,
        true,
        PCI_MMIO_START as u32,
        (PCI_MMIO_START + PCI_MMIO_SIZE - 1) as u32,
        None,
    );
    let crs = aml::ResourceTemplate::new(vec![&bus, &cfg, &io_low, &io_high, &mem]);
    let hid = aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0A08"));
    let cid = aml::Name::new("_CID".into(), &aml::EISAName::new("PNP0A03"));
    let uid = aml::Name::new("_UID".into(), &aml::ZERO);
    let seg = aml::Name::new("_SEG".into(), &aml::ZERO);
    let bbn = aml::Name::new("_BBN".into(), &aml::ZERO);
    let crs = aml::Name::new("_CRS".into(), &crs);
    bytes_of(&aml::Device::new(
        "PCI0".into(),
        vec![&hid, &cid, &uid, &seg, &bbn, &crs],
    ))
}

/// The DSDT: the UART, the virtio-mmio devices under `\_SB` (Debian's kernel has
/// no `virtio_mmio.device=` command-line support, so ACPI is how it finds
/// them, as with QEMU's microvm) and the `_S5_` package (power off).
fn dsdt(mmio: &[MmioDeviceInfo], pci: bool) -> Vec<u8> {
    let mut table = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    let devices: Vec<Vec<u8>> = mmio
        .iter()
        .enumerate()
        .map(|(i, d)| virtio_mmio_device(i, d))
        .collect();
    let mut raw: Vec<u8> = [com1_device(), devices.concat()].concat();
    if pci {
        raw.extend(pci_root());
    }
    table.append_slice(&aml::Scope::raw("\\_SB_".into(), raw));
    let s5 = aml::Name::new(
        "_S5_".into(),
        &aml::Package::new(vec![&S5_SLEEP_TYPE, &aml::ZERO, &aml::ZERO, &aml::ZERO]),
    );
    table.append_slice(&bytes_of(&s5));
    table.as_slice().to_vec()
}

fn io_register(port: u16) -> gas::GAS {
    gas::GAS::new(
        gas::AddressSpace::SystemIo,
        8,
        0,
        gas::AccessSize::ByteAccess,
        u64::from(port),
    )
}

fn fadt(dsdt_addr: u64) -> Vec<u8> {
    let mut b = fadt::FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .flag(fadt::Flags::HwReducedAcpi)
        .flag(fadt::Flags::ResetRegSup)
        .flag(fadt::Flags::PwrButton)
        .flag(fadt::Flags::SlpButton);
    b.sleep_control_reg = io_register(ACPI_SLEEP_CONTROL_PORT);
    b.sleep_status_reg = io_register(ACPI_SLEEP_STATUS_PORT);
    b.reset_reg = io_register(ACPI_RESET_PORT);
    b.reset_value = ACPI_RESET_VALUE;
    // No VGA, no CMOS RTC, no legacy 8042 described (the controller is
    // still there for `reboot=k`).
    const IAPC_VGA_NOT_PRESENT: u16 = 1 << 2;
    const IAPC_CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;
    b.iapc_boot_arch = (IAPC_VGA_NOT_PRESENT | IAPC_CMOS_RTC_NOT_PRESENT).into();
    b.hypervisor_vendor_identity = u64::from_le_bytes(*b"DRYDOCK\0").into();
    bytes_of(&b.finalize())
}

fn madt(vcpus: u8) -> Vec<u8> {
    let mut m = madt::MADT::new(
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
        madt::LocalInterruptController::Address(APIC_START),
    );
    for id in 0..vcpus {
        m.add_structure(madt::ProcessorLocalApic::new(
            id,
            id,
            madt::EnabledStatus::Enabled,
        ));
    }
    m.add_structure(madt::IoApic::new(0, IOAPIC_START, 0));
    bytes_of(&m)
}

fn align16(x: u64) -> u64 {
    (x + 15) & !15
}

/// Writes every table; returns the RSDP's address.
pub fn write_acpi_tables(
    mem: &GuestMemoryMmap,
    vcpus: u8,
    mmio: &[MmioDeviceInfo],
    pci: bool,
) -> Result<u64, VmError> {
    let rsdp_addr = ACPI_START;
    let mut next = align16(rsdp_addr + Rsdp::len() as u64);
    let mut place = |bytes: &[u8]| -> Result<u64, VmError> {
        let at = next;
        if at + bytes.len() as u64 > ACPI_END {
            return Err(VmError::Setup("ACPI tables do not fit below 1 MiB".into()));
        }
        mem.write_slice(bytes, GuestAddress(at))
            .map_err(|e| VmError::Memory(e.to_string()))?;
        next = align16(at + bytes.len() as u64);
        Ok(at)
    };
    let dsdt_addr = place(&dsdt(mmio, pci))?;
    let fadt_addr = place(&fadt(dsdt_addr))?;
    let madt_addr = place(&madt(vcpus))?;
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    let xsdt_addr = place(&bytes_of(&xsdt))?;
    mem.write_slice(
        &bytes_of(&Rsdp::new(OEM_ID, xsdt_addr)),
        GuestAddress(rsdp_addr),
    )
    .map_err(|e| VmError::Memory(e.to_string()))?;
    Ok(rsdp_addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum_ok(bytes: &[u8]) -> bool {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)) == 0
    }

    #[test]
    fn tables_are_linked_and_checksummed() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap();
        let dev = MmioDeviceInfo {
            addr: 0xd000_0000,
            len: 0x1000,
            irq: 5,
        };
        let rsdp = write_acpi_tables(&mem, 2, &[dev, dev], true).unwrap();
        let mut r = [0u8; 36];
        mem.read_slice(&mut r, GuestAddress(rsdp)).unwrap();
        assert_eq!(&r[..8], b"RSD PTR ");
        assert!(checksum_ok(&r[..20]) && checksum_ok(&r));
        let xsdt = u64::from_le_bytes(r[24..32].try_into().unwrap());
        let read_table = |addr: u64| {
            let mut hdr = [0u8; 8];
            mem.read_slice(&mut hdr, GuestAddress(addr)).unwrap();
            let len = u32::from_le_bytes(hdr[4..8].try_into().unwrap()) as usize;
            let mut t = vec![0u8; len];
            mem.read_slice(&mut t, GuestAddress(addr)).unwrap();
            assert!(checksum_ok(&t), "{:?} checksum", &t[..4]);
            t
        };
        let x = read_table(xsdt);
        let fadt = read_table(u64::from_le_bytes(x[36..44].try_into().unwrap()));
        let madt = read_table(u64::from_le_bytes(x[44..52].try_into().unwrap()));
        assert_eq!(&fadt[..4], b"FACP");
        assert_eq!(&madt[..4], b"APIC");
        // Two local APICs (8 bytes each) and one IOAPIC (12) after 44 bytes.
        assert_eq!(madt.len(), 44 + 2 * 8 + 12);
        let dsdt = read_table(u64::from_le_bytes(fadt[140..148].try_into().unwrap()));
        assert!(dsdt.windows(4).any(|w| w == b"_S5_"));
        assert!(dsdt.windows(8).any(|w| w == b"LNRO0005"));
        assert!(dsdt.windows(4).any(|w| w == b"V001"), "second device");
        assert!(dsdt.windows(4).any(|w| w == b"COM1"), "the UART");
        assert!(dsdt.windows(4).any(|w| w == b"PCI0"), "the PCI root");
    }
}
