//! Booting what the root volume holds: at every start the host reads the
//! boot configuration ([`super::boot_config`]), the kernel and the initrd
//! out of the ext4 root volume — a raw image file, read with `ext4-view`,
//! without mounting it and without privileges — checks them, and keeps
//! the files the VMM loads in a cache keyed by their content (SHA-256), so
//! the uncompressed kernel (PVH entry) is extracted once per kernel, not
//! at every start.
//!
//! The rule: the `DEFAULT` entry boots; when its kernel or initrd is
//! missing, too large, or not what it says it is (a kernel that is neither
//! a whole bzImage nor an ELF, an initrd that is not a cpio archive with an
//! `/init`, or a compressed one), the `FALLBACK` entry boots instead, and
//! the console says why. An entry whose last boot failed in the guest (a
//! kernel panic before the root volume's init ran, seen on the console by
//! the instance process) is tried after the other one at the next start.
//! When no entry can be booted the start fails like a real machine's:
//! the reason is on the console and in the instance's state reason.
//!
//! Everything read is hostile (the guest owns its volume): sizes are
//! bounded before anything is read into memory, paths stay under /boot,
//! and a damaged file system is an error, never a panic.

mod cache;
mod checks;
mod ext4_read;
mod memo;

pub use cache::KernelBoot;
use cache::*;
pub use checks::{check_initrd, check_kernel, has_pvh_note};
pub use ext4_read::FileStamp;
use ext4_read::*;
use memo::*;
pub use memo::{BootMemo, MEMO_FILE};

use std::path::{Path, PathBuf};

use ext4_view::Ext4;

use crate::boot_config::{BootConfig, BootEntry, CONFIG_PATH, MAX_CONFIG_BYTES};
use crate::KernelFeatures;

/// The largest kernel read from a volume.
pub const MAX_KERNEL_BYTES: u64 = 64 << 20;
/// The largest initrd read from a volume.
pub const MAX_INITRD_BYTES: u64 = 256 << 20;

/// Why a volume cannot be booted; the text is what the console and the
/// state reason show.
#[derive(Debug, thiserror::Error)]
pub enum BootFailure {
    #[error("unreadable file system on the root volume ({detail}); it is not ext4 or it is damaged: attach it to a rescue instance and run e2fsck")]
    Unreadable { detail: String },
    #[error("no boot configuration: {CONFIG_PATH} is not on the root volume ({detail}); write one (DEFAULT, LABEL, KERNEL, INITRD, APPEND) from a rescue instance")]
    NoConfig { detail: String },
    #[error("bad boot configuration: {0}")]
    BadConfig(String),
    #[error("no bootable entry in {CONFIG_PATH}: {}", .0.join("; "))]
    NoBootableEntry(Vec<String>),
    #[error("cannot keep boot files in {path}: {source}")]
    Cache {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What to boot, from the volume.
#[derive(Debug, Clone)]
pub struct VolumeBoot {
    /// The entry booted.
    pub label: String,
    /// The kernel file the VMM loads (in the cache).
    pub kernel: PathBuf,
    /// The initrd file the VMM loads (in the cache).
    pub initrd: PathBuf,
    /// The entry's `APPEND`.
    pub append: String,
    /// Why entries before this one were not booted (for the console).
    pub skipped: Vec<String>,
    /// What the kernel says of itself (its embedded configuration), when
    /// it carries one.
    pub features: Option<KernelFeatures>,
    /// What was read, for the next start.
    pub memo: BootMemo,
}

/// An entry whose boot failed in the guest, with the files it booted: it
/// is tried last for as long as its kernel and initrd are those files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedMark {
    pub label: String,
    /// Cache file names (content digests) of its kernel and initrd.
    pub kernel: String,
    pub initrd: String,
}

impl FailedMark {
    /// Reads a mark as [`FailedMark::save`] left it (bounded, lenient).
    pub fn parse(text: &str) -> Option<Self> {
        let mut lines = text
            .lines()
            .map(|l| l.trim().chars().take(256).collect::<String>());
        let (label, kernel, initrd) = (lines.next()?, lines.next()?, lines.next()?);
        (!label.is_empty()).then_some(Self {
            label,
            kernel,
            initrd,
        })
    }

    /// The mark of entry `label` booted with these kernel and initrd
    /// files (cache files, named by their content digests).
    pub fn new(label: &str, kernel: &Path, initrd: &Path) -> Self {
        let name = |p: &Path| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        Self {
            label: label.to_string(),
            kernel: name(kernel),
            initrd: name(initrd),
        }
    }

    /// Writes the mark to `path` (atomically: a crash leaves the old mark
    /// or the new one).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        write_atomic(
            path,
            format!("{}\n{}\n{}\n", self.label, self.kernel, self.initrd).as_bytes(),
        )
    }

    fn matches(&self, label: &str, kernel: &Path, initrd: &Path) -> bool {
        let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
        self.label == label
            && name(kernel).as_deref() == Some(self.kernel.as_str())
            && name(initrd).as_deref() == Some(self.initrd.as_str())
    }
}

/// Reads what to boot from the ext4 root volume `volume`. `failed` names
/// an entry whose last boot failed in the guest: while its files are the
/// same it is tried only when nothing else boots.
pub fn read_boot(
    volume: &Path,
    cache: &Path,
    how: KernelBoot,
    failed: Option<&FailedMark>,
    memo: &BootMemo,
) -> Result<VolumeBoot, BootFailure> {
    let fs = Ext4::load_from_path(volume).map_err(|e| BootFailure::Unreadable {
        detail: e.to_string(),
    })?;
    let text = read_file(&fs, CONFIG_PATH, MAX_CONFIG_BYTES).map_err(|e| match e {
        ReadError::Missing(detail) => BootFailure::NoConfig { detail },
        ReadError::Bad(detail) => BootFailure::BadConfig(format!("{CONFIG_PATH}: {detail}")),
        ReadError::Io(detail) => BootFailure::Unreadable { detail },
    })?;
    let text = String::from_utf8(text)
        .map_err(|_| BootFailure::BadConfig(format!("{CONFIG_PATH} is not UTF-8 text")))?;
    let config = BootConfig::parse(&text).map_err(BootFailure::BadConfig)?;
    let mut skipped = Vec::new();
    let mut last_resort = None;
    let mut used = BootMemo::default();
    for entry in config.boot_order() {
        match boot_entry(&fs, entry, cache, how, memo, &mut used) {
            Ok((kernel, initrd, features)) => {
                let boot = VolumeBoot {
                    label: entry.label.clone(),
                    kernel,
                    initrd,
                    append: entry.append.clone(),
                    skipped: Vec::new(),
                    features,
                    memo: BootMemo::default(),
                };
                if failed.is_some_and(|f| f.matches(&entry.label, &boot.kernel, &boot.initrd)) {
                    skipped.push(format!(
                        "entry `{}` failed in the guest at its last boot (a kernel panic before the root volume's init; see the previous boot's console) and is unchanged",
                        entry.label
                    ));
                    last_resort.get_or_insert(boot);
                    continue;
                }
                prune(cache, &[&boot.kernel, &boot.initrd]);
                return Ok(VolumeBoot {
                    skipped,
                    memo: used,
                    ..boot
                });
            }
            Err(EntryError::Unusable(why)) => {
                skipped.push(format!("entry `{}`: {why}", entry.label))
            }
            Err(EntryError::Fatal(f)) => return Err(f),
        }
    }
    match last_resort {
        // Nothing else boots: the failed entry again, as a machine would.
        Some(boot) => {
            prune(cache, &[&boot.kernel, &boot.initrd]);
            skipped.push(format!(
                "booting `{}` again: no other entry boots",
                boot.label
            ));
            Ok(VolumeBoot {
                skipped,
                memo: used,
                ..boot
            })
        }
        None => Err(BootFailure::NoBootableEntry(skipped)),
    }
}

enum EntryError {
    /// This entry cannot boot; another may.
    Unusable(String),
    /// Nothing can boot (the host cannot keep the files).
    Fatal(BootFailure),
}

/// The kernel and initrd of `entry`, from the memo when their stamps are
/// unchanged, else read, checked and cached (and noted in `used`).
fn boot_entry(
    fs: &Ext4,
    entry: &BootEntry,
    cache: &Path,
    how: KernelBoot,
    memo: &BootMemo,
    used: &mut BootMemo,
) -> Result<(PathBuf, PathBuf, Option<KernelFeatures>), EntryError> {
    let unusable = |why: String| EntryError::Unusable(why);
    let as_unusable = |e: ReadError| match e {
        ReadError::Missing(d) | ReadError::Bad(d) | ReadError::Io(d) => unusable(d),
    };
    let kernel_path = entry
        .kernel
        .as_deref()
        .ok_or_else(|| unusable("no KERNEL line".into()))?;
    let initrd_path = entry.initrd.as_deref().ok_or_else(|| {
        unusable("no INITRD line (drydock's guests boot through an initramfs)".into())
    })?;
    let fatal = |path: &Path, source| {
        EntryError::Fatal(BootFailure::Cache {
            path: path.to_path_buf(),
            source,
        })
    };
    let ensure_cache = || -> Result<(), EntryError> {
        std::fs::create_dir_all(cache).map_err(|e| fatal(cache, e))?;
        let _ = drydock_runtime::private::tighten(cache);
        Ok(())
    };

    let kernel_key = BootMemo::key(how.tag(), kernel_path);
    let kernel_stamp = stamp(fs, kernel_path, MAX_KERNEL_BYTES).map_err(as_unusable)?;
    let (kernel, features) = match memo.hit(&kernel_key, &kernel_stamp) {
        Some(e) => (e.file.clone(), e.features.clone()),
        None => {
            let bytes = read_file(fs, kernel_path, MAX_KERNEL_BYTES).map_err(as_unusable)?;
            check_kernel(&bytes).map_err(|why| unusable(format!("kernel {kernel_path}: {why}")))?;
            ensure_cache()?;
            cached_kernel(cache, &bytes, how).map_err(|(p, e)| fatal(&p, e))?
        }
    };
    let initrd_key = BootMemo::key("initrd", initrd_path);
    let initrd_stamp = stamp(fs, initrd_path, MAX_INITRD_BYTES).map_err(as_unusable)?;
    let initrd = match memo.hit(&initrd_key, &initrd_stamp) {
        Some(e) => e.file.clone(),
        None => {
            let bytes = read_file(fs, initrd_path, MAX_INITRD_BYTES).map_err(as_unusable)?;
            check_initrd(&bytes).map_err(|why| unusable(format!("initrd {initrd_path}: {why}")))?;
            ensure_cache()?;
            let file = cache.join(format!("initrd-{}", hex_digest(&bytes)));
            if !file.exists() {
                write_atomic(&file, &bytes).map_err(|e| fatal(&file, e))?;
            }
            file
        }
    };
    used.files.insert(
        kernel_key,
        MemoEntry {
            stamp: kernel_stamp,
            file: kernel.clone(),
            features: features.clone(),
        },
    );
    used.files.insert(
        initrd_key,
        MemoEntry {
            stamp: initrd_stamp,
            file: initrd.clone(),
            features: None,
        },
    );
    Ok((kernel, initrd, features))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CpioWriter, EntryKind};

    fn cpio(with_init: bool) -> Vec<u8> {
        let mut w = CpioWriter::new(Vec::new());
        w.add("bin", 0o755, EntryKind::Dir).unwrap();
        if with_init {
            w.add("init", 0o755, EntryKind::File(b"#!/bin/sh\n"))
                .unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn initrds_are_checked_entry_by_entry() {
        check_initrd(&cpio(true)).unwrap();
        assert!(check_initrd(&cpio(false)).unwrap_err().contains("no init"));
        let mut cut = cpio(true);
        cut.truncate(200);
        assert!(check_initrd(&cut).unwrap_err().contains("truncated"));
        assert!(check_initrd(&[0u8; 4096]).unwrap_err().contains("no init"));
        assert!(check_initrd(b"garbage")
            .unwrap_err()
            .contains("not an initramfs"));
        check_initrd(&[0x1f, 0x8b, 8, 0]).unwrap();
        // A header claiming a huge size does not overflow.
        let mut huge = cpio(true);
        huge[54..62].copy_from_slice(b"ffffffff");
        assert!(check_initrd(&huge).is_err());
    }

    #[test]
    fn a_failed_mark_reads_back_and_matches_only_its_files() {
        let mark = FailedMark::parse("linux\nkernel-a\ninitrd-b\n").unwrap();
        assert!(mark.matches("linux", Path::new("/c/kernel-a"), Path::new("/c/initrd-b")));
        assert!(!mark.matches("linux", Path::new("/c/kernel-a"), Path::new("/c/initrd-c")));
        assert!(FailedMark::parse("").is_none());
        let dir = tempfile::tempdir().unwrap();
        let m = FailedMark::new("linux", Path::new("/c/kernel-a"), Path::new("/c/initrd-b"));
        m.save(&dir.path().join("mark")).unwrap();
        let back = std::fs::read_to_string(dir.path().join("mark")).unwrap();
        assert_eq!(FailedMark::parse(&back), Some(mark));
    }

    #[test]
    fn kernels_must_be_whole() {
        assert!(check_kernel(b"hello").unwrap_err().contains("not a kernel"));
        let mut bz = vec![0u8; 4096];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        bz[0x1f1] = 1;
        bz[0x1f4..0x1f8].copy_from_slice(&1000u32.to_le_bytes());
        assert!(check_kernel(&bz).unwrap_err().contains("truncated bzImage"));
        bz.resize(1024 + 16000, 0);
        check_kernel(&bz).unwrap();
        assert!(!has_pvh_note(&bz));
        assert!(!has_pvh_note(b"\x7fELF\x02"));
    }
}
