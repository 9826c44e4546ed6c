//! What a guest kernel is and what it supports, read from the kernel files
//! themselves: the release from the bzImage header, the build
//! configuration from Debian's `config-<release>` file or from the
//! configuration a kernel built with `CONFIG_IKCONFIG` carries inside
//! itself (gzip between `IKCFG_ST` and `IKCFG_ED`).

use std::io::Read;

use serde::{Deserialize, Serialize};

use super::vmlinux::find;

const BZIMAGE_MAGIC_OFFSET: usize = 0x202;
const BZIMAGE_VERSION_PTR: usize = 0x20e;
const IKCONFIG_START: &[u8] = b"IKCFG_ST";
const IKCONFIG_END: &[u8] = b"IKCFG_ED";

fn yes() -> bool {
    true
}

/// What drydock needs to know about a kernel to boot it well.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelFeatures {
    /// `virtio_mmio.device=SIZE@ADDR:IRQ` on the command line is understood
    /// (`CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES`); otherwise the disks are
    /// announced in the ACPI DSDT only.
    #[serde(default)]
    pub virtio_mmio_cmdline: bool,
    /// Built with ACPI (`CONFIG_ACPI`): devices come from the DSDT, CPUs
    /// and interrupt routing from the MADT, power-off through the FADT.
    /// Without it the kernel reads the MP table and takes its disks from
    /// the command line, and cannot power the VM off.
    #[serde(default = "yes")]
    pub acpi: bool,
    /// The drivers both device generations need are built in, so the
    /// initramfs loads no modules.
    #[serde(default)]
    pub builtin_virtio: bool,
}

impl Default for KernelFeatures {
    /// A distribution kernel: ACPI, virtio as modules.
    fn default() -> Self {
        Self {
            virtio_mmio_cmdline: false,
            acpi: true,
            builtin_virtio: false,
        }
    }
}

impl KernelFeatures {
    /// Whether drydock's VMM must put the virtio-mmio disks on the command
    /// line: only for a kernel without ACPI. With ACPI the interrupts are
    /// routed through ACPI (hardware-reduced: no legacy IRQ numbers), so
    /// the DSDT is the one place that works.
    pub fn virtio_mmio_on_cmdline(&self) -> bool {
        !self.acpi && self.virtio_mmio_cmdline
    }

    /// Why drydock cannot tell this kernel where its disks are, if so.
    pub fn unusable(&self) -> Option<&'static str> {
        if !self.acpi && !self.virtio_mmio_cmdline {
            return Some("it has neither ACPI (CONFIG_ACPI, for the DSDT) nor virtio-mmio devices on the command line (CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES)");
        }
        if !self.builtin_virtio {
            return Some("its virtio drivers are not built in (CONFIG_VIRTIO_MMIO=y, CONFIG_VIRTIO_PCI=y, CONFIG_VIRTIO_BLK=y)");
        }
        None
    }

    /// Reads the features from a kernel configuration (`.config` text).
    pub fn from_config(config: &str) -> Self {
        let value = |name: &str| {
            config.lines().find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix('='))
                    .map(str::trim)
            })
        };
        let on = |name: &str| matches!(value(name), Some("y") | Some("m"));
        let builtin = |name: &str| value(name) == Some("y");
        Self {
            virtio_mmio_cmdline: on("CONFIG_VIRTIO_MMIO")
                && on("CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES"),
            acpi: builtin("CONFIG_ACPI"),
            builtin_virtio: [
                "CONFIG_VIRTIO_MMIO",
                "CONFIG_VIRTIO_PCI",
                "CONFIG_VIRTIO_BLK",
            ]
            .iter()
            .all(|n| builtin(n)),
        }
    }
}

/// Whether `bytes` is a bzImage (the `HdrS` boot protocol header).
pub fn is_bzimage(bytes: &[u8]) -> bool {
    bytes.get(BZIMAGE_MAGIC_OFFSET..BZIMAGE_MAGIC_OFFSET + 4) == Some(b"HdrS")
}

/// The kernel release (`uname -r`) from a bzImage's version string.
pub fn bzimage_release(bytes: &[u8]) -> Option<String> {
    if !is_bzimage(bytes) {
        return None;
    }
    let ptr = bytes.get(BZIMAGE_VERSION_PTR..BZIMAGE_VERSION_PTR + 2)?;
    let offset = u16::from_le_bytes([ptr[0], ptr[1]]) as usize + 0x200;
    let text = bytes.get(offset..)?;
    let end = text.iter().position(|&b| b == 0)?;
    let version = std::str::from_utf8(&text[..end]).ok()?;
    version.split_whitespace().next().map(str::to_string)
}

/// The kernel release from an uncompressed kernel: the `Linux version X`
/// banner.
pub fn elf_release(elf: &[u8]) -> Option<String> {
    const BANNER: &[u8] = b"Linux version ";
    let at = find(elf, BANNER)? + BANNER.len();
    let rest = &elf[at..];
    let end = rest.iter().position(|&b| b == b' ' || b == 0)?;
    std::str::from_utf8(&rest[..end]).ok().map(str::to_string)
}

/// The largest embedded configuration read (a distribution's `.config`
/// is about 250 KiB): a gzip "bomb" between the markers stops here.
pub const MAX_CONFIG: u64 = 4 << 20;

/// The configuration embedded in an uncompressed kernel (`CONFIG_IKCONFIG`),
/// if it inflates to valid text of at most [`MAX_CONFIG`] bytes.
pub fn embedded_config(elf: &[u8]) -> Option<String> {
    let start = find(elf, IKCONFIG_START)? + IKCONFIG_START.len();
    let len = find(&elf[start..], IKCONFIG_END)?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(&elf[start..start + len])
        .take(MAX_CONFIG + 1)
        .read_to_string(&mut text)
        .ok()?;
    (text.len() as u64 <= MAX_CONFIG).then_some(text)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn features_follow_the_configuration() {
        let debian = "CONFIG_ACPI=y\nCONFIG_VIRTIO_MMIO=m\n# CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES is not set\nCONFIG_VIRTIO_PCI=m\nCONFIG_VIRTIO_BLK=m\n";
        let features = KernelFeatures::from_config(debian);
        assert_eq!(features, KernelFeatures::default());
        assert!(!features.virtio_mmio_on_cmdline());
        assert!(features.unusable().unwrap().contains("not built in"));
        let minimal = "# CONFIG_ACPI is not set\nCONFIG_VIRTIO_MMIO=y\nCONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y\nCONFIG_VIRTIO_PCI=y\nCONFIG_VIRTIO_BLK=y\n";
        let features = KernelFeatures::from_config(minimal);
        assert_eq!(
            features,
            KernelFeatures {
                virtio_mmio_cmdline: true,
                acpi: false,
                builtin_virtio: true
            }
        );
        assert!(features.virtio_mmio_on_cmdline());
        assert_eq!(features.unusable(), None);
        // With ACPI the DSDT carries the disks even if the command line could.
        let both = format!("CONFIG_ACPI=y\n{minimal}");
        assert!(!KernelFeatures::from_config(&both).virtio_mmio_on_cmdline());
        // Neither way to find the disks.
        let neither = "CONFIG_VIRTIO_MMIO=y\nCONFIG_VIRTIO_PCI=y\nCONFIG_VIRTIO_BLK=y\n";
        assert!(KernelFeatures::from_config(neither)
            .unusable()
            .unwrap()
            .contains("neither ACPI"));
        // A name that merely starts like another does not count.
        let prefix = "CONFIG_VIRTIO_MMIO_X=y\nCONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y\n";
        assert!(!KernelFeatures::from_config(prefix).virtio_mmio_cmdline);
    }

    #[test]
    fn release_from_a_bzimage_header() {
        let mut image = vec![0u8; 0x1000];
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x20e..0x210].copy_from_slice(&0x300u16.to_le_bytes());
        let version = b"6.1.192 (builder@lab) #1 SMP\0";
        image[0x500..0x500 + version.len()].copy_from_slice(version);
        assert!(is_bzimage(&image));
        assert_eq!(bzimage_release(&image).as_deref(), Some("6.1.192"));
        assert_eq!(bzimage_release(b"not a kernel"), None);
    }

    #[test]
    fn embedded_configuration_and_banner() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"CONFIG_VIRTIO_MMIO=y\nCONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y\n")
            .unwrap();
        let mut elf = b"\x7fELF....Linux version 6.1.7-tiny (x@y) #1\0....IKCFG_ST".to_vec();
        elf.extend(gz.finish().unwrap());
        elf.extend(b"IKCFG_ED....");
        let config = embedded_config(&elf).unwrap();
        assert!(KernelFeatures::from_config(&config).virtio_mmio_cmdline);
        assert_eq!(elf_release(&elf).as_deref(), Some("6.1.7-tiny"));
        assert_eq!(embedded_config(b"no configuration"), None);
    }

    #[test]
    fn an_embedded_configuration_bomb_is_refused() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let line = b"CONFIG_X=y\n".repeat(1 << 16);
        for _ in 0..(MAX_CONFIG as usize / line.len() + 1) {
            gz.write_all(&line).unwrap();
        }
        let gz = gz.finish().unwrap();
        assert!(gz.len() < 64 << 10, "{} bytes", gz.len());
        let mut elf = b"\x7fELF IKCFG_ST".to_vec();
        elf.extend(gz);
        elf.extend(b"IKCFG_ED");
        assert_eq!(embedded_config(&elf), None);
    }
}
