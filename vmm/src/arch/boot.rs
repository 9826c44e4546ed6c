//! Loading a Linux kernel the way its boot protocol asks: the kernel
//! (an uncompressed ELF `vmlinux`, or a `bzImage`) above 1 MiB, the initrd
//! at the top of low memory, the command line, and the zero page with the
//! e820 memory map and the ACPI RSDP address.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::Path;

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::{self, KernelLoader};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::layout::*;

/// What the vCPU needs to enter the kernel.
#[derive(Debug, Clone, Copy)]
pub struct KernelEntry {
    /// The 64-bit entry point.
    pub entry: GuestAddress,
    /// The kernel's image format, for logs and figures.
    pub format: KernelFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelFormat {
    Elf,
    BzImage,
}

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is neither an ELF vmlinux nor a bzImage ({elf}; {bz})")]
    Kernel {
        path: String,
        elf: String,
        bz: String,
    },
    #[error("initrd {path}: {detail}")]
    Initrd { path: String, detail: String },
    #[error("kernel command line: {0}")]
    Cmdline(String),
    #[error("guest memory: {0}")]
    Memory(String),
}

const E820_RAM: u32 = 1;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x0100_0000;
/// The 64-bit entry of a bzImage is 0x200 bytes into its protected-mode part.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;

/// Loads the kernel from `kernel` (an open file, read from its start; a
/// duplicate descriptor, so the caller's offset does not matter and a VMM
/// under its seccomp filter can load it again at every boot): an ELF first
/// (the faster boot: nothing to decompress), else a bzImage. `name` is for
/// errors. The one kernel loader: production and the fuzzer run it.
pub fn load_kernel(
    mem: &GuestMemoryMmap,
    kernel: &File,
    name: &Path,
) -> Result<(KernelEntry, Option<loader::bootparam::setup_header>), BootError> {
    let from_start = || {
        let err = |source: std::io::Error| BootError::Open {
            path: name.display().to_string(),
            source,
        };
        let mut f = kernel.try_clone().map_err(err)?;
        f.seek(SeekFrom::Start(0)).map_err(err)?;
        Ok::<_, BootError>(f)
    };
    let high = Some(GuestAddress(HIGH_MEMORY_START));
    match loader::Elf::load(mem, None, &mut from_start()?, high) {
        Ok(r) => Ok((
            KernelEntry {
                entry: r.kernel_load,
                format: KernelFormat::Elf,
            },
            None,
        )),
        Err(elf_err) => {
            let bz =
                loader::BzImage::load(mem, None, &mut from_start()?, high).map_err(|bz_err| {
                    BootError::Kernel {
                        path: name.display().to_string(),
                        elf: elf_err.to_string(),
                        bz: bz_err.to_string(),
                    }
                })?;
            Ok((
                KernelEntry {
                    entry: r_entry(bz.kernel_load),
                    format: KernelFormat::BzImage,
                },
                bz.setup_header,
            ))
        }
    }
}

fn r_entry(load: GuestAddress) -> GuestAddress {
    load.unchecked_add(BZIMAGE_64BIT_ENTRY_OFFSET)
}

/// The end of RAM below the MMIO gap.
fn low_memory_end(mem: &GuestMemoryMmap) -> u64 {
    mem.last_addr().raw_value().min(MMIO_GAP_START - 1) + 1
}

/// Places the initrd (the open file `initrd`, read from its start) at the
/// top of low memory (page aligned); returns its address and size. `name`
/// is for errors.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    initrd: &File,
    name: &Path,
) -> Result<(u64, u64), BootError> {
    let err = |detail: String| BootError::Initrd {
        path: name.display().to_string(),
        detail,
    };
    let mut file = initrd.try_clone().map_err(|e| err(e.to_string()))?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| err(e.to_string()))?;
    let size = file.metadata().map_err(|e| err(e.to_string()))?.len();
    let top = low_memory_end(mem);
    let addr = top
        .checked_sub(size)
        .filter(|a| *a > HIGH_MEMORY_START)
        .ok_or_else(|| err(format!("{size} bytes do not fit in guest memory")))?
        & !0xfff;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, size as usize)
        .map_err(|e| err(e.to_string()))?;
    Ok((addr, size))
}

/// Writes the command line and the zero page.
pub fn write_boot_params(
    mem: &GuestMemoryMmap,
    cmdline: &str,
    setup_header: Option<loader::bootparam::setup_header>,
    initrd: Option<(u64, u64)>,
    rsdp: u64,
) -> Result<(), BootError> {
    if cmdline.len() + 1 > CMDLINE_MAX_SIZE {
        return Err(BootError::Cmdline(format!(
            "{} bytes, more than the {CMDLINE_MAX_SIZE} this VMM reserves",
            cmdline.len()
        )));
    }
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(CMDLINE_START))
        .map_err(|e| BootError::Memory(e.to_string()))?;

    let mut params = boot_params::default();
    if let Some(hdr) = setup_header {
        params.hdr = hdr;
    } else {
        params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
        params.hdr.header = KERNEL_HDR_MAGIC;
        params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline.len() as u32;
    if let Some((addr, size)) = initrd {
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    params.acpi_rsdp_addr = rsdp;

    let mut entries = vec![(0u64, EBDA_START)];
    for region in mem.iter() {
        use vm_memory::GuestMemoryRegion;
        let start = region.start_addr().raw_value();
        let end = start + region.len();
        let start = start.max(HIGH_MEMORY_START);
        if end > start {
            entries.push((start, end - start));
        }
    }
    for (i, (addr, size)) in entries.iter().enumerate() {
        params.e820_table[i] = boot_e820_entry {
            addr: *addr,
            size: *size,
            r#type: E820_RAM,
        };
    }
    params.e820_entries = entries.len() as u8;
    mem.write_obj(params, GuestAddress(ZERO_PAGE_START))
        .map_err(|e| BootError::Memory(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_params_carry_the_memory_map_command_line_and_initrd() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let initrd = dir.path().join("initrd");
        std::fs::write(&initrd, vec![7u8; 10_000]).unwrap();
        let (addr, size) = load_initrd(&mem, &File::open(&initrd).unwrap(), &initrd).unwrap();
        assert_eq!(size, 10_000);
        assert_eq!(addr % 4096, 0);
        assert!(addr + size <= 64 << 20);
        write_boot_params(&mem, "console=ttyS0", None, Some((addr, size)), 0xe0000).unwrap();
        let p: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        assert_eq!({ p.hdr.boot_flag }, 0xaa55);
        assert_eq!({ p.hdr.ramdisk_image }, addr as u32);
        assert_eq!({ p.e820_entries }, 2);
        assert_eq!({ p.e820_table[1].addr }, HIGH_MEMORY_START);
        assert_eq!({ p.e820_table[1].size }, (64 << 20) - HIGH_MEMORY_START);
        assert_eq!({ p.acpi_rsdp_addr }, 0xe0000);
        let mut cmd = [0u8; 14];
        mem.read_slice(&mut cmd, GuestAddress(CMDLINE_START))
            .unwrap();
        assert_eq!(&cmd, b"console=ttyS0\0");
    }

    #[test]
    fn a_file_that_is_no_kernel_is_refused_by_name() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk");
        std::fs::write(&junk, vec![0u8; 8192]).unwrap();
        let err = load_kernel(&mem, &File::open(&junk).unwrap(), &junk)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("neither an ELF vmlinux nor a bzImage"),
            "{err}"
        );
    }
}
