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

use std::io::Write;
use std::path::{Path, PathBuf};

use ext4_view::Ext4;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::boot_config::{BootConfig, BootEntry, CONFIG_PATH, MAX_CONFIG_BYTES};
use crate::{kernel, vmlinux, KernelFeatures};

/// The largest kernel read from a volume.
pub const MAX_KERNEL_BYTES: u64 = 64 << 20;
/// The largest initrd read from a volume.
pub const MAX_INITRD_BYTES: u64 = 256 << 20;
/// Boot files kept in the cache (kernels and initrds together); the least
/// recently used go first.
const CACHE_KEEP: usize = 48;

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

/// How the kernel read from the volume is given to the VMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelBoot {
    /// A bzImage whose payload is an ELF with a PVH entry is booted as that
    /// ELF (no decompression under emulation); anything else as given.
    PreferPvh,
    /// As given (a kernel of the operator's own, booted the way it was
    /// built to be).
    AsGiven,
}

impl KernelBoot {
    fn tag(self) -> &'static str {
        match self {
            Self::PreferPvh => "kernel-pvh",
            Self::AsGiven => "kernel-given",
        }
    }
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

enum ReadError {
    Missing(String),
    Bad(String),
    Io(String),
}

fn classify(path: &str, e: ext4_view::Ext4Error) -> ReadError {
    use ext4_view::Ext4Error as E;
    match e {
        E::NotFound => ReadError::Missing(format!("{path}: not found")),
        E::NotADirectory | E::IsADirectory | E::IsASpecialFile | E::NotAbsolute => {
            ReadError::Bad(format!("{path}: not a regular file ({e})"))
        }
        other => ReadError::Io(format!("{path}: {other}")),
    }
}

/// Reads a regular file (symlinks followed inside the volume) of at most
/// `max` bytes.
fn read_file(fs: &Ext4, path: &str, max: u64) -> Result<Vec<u8>, ReadError> {
    let meta = fs.metadata(path).map_err(|e| classify(path, e))?;
    if meta.len() > max {
        return Err(ReadError::Bad(format!(
            "{path} is {} MiB, more than the {} MiB drydock reads",
            meta.len() >> 20,
            max >> 20
        )));
    }
    fs.read(path).map_err(|e| classify(path, e))
}

enum EntryError {
    /// This entry cannot boot; another may.
    Unusable(String),
    /// Nothing can boot (the host cannot keep the files).
    Fatal(BootFailure),
}

/// A file's identity on the volume: what says it has not changed since
/// it was read (a guest that forges it fools only itself: the memo is the
/// instance's own, or the image build's, whose files are the pristine ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    size: u64,
    mtime: (i64, u32),
    crtime: Option<(i64, u32)>,
}

/// What the host already read from a volume: (how, path) -> the file the
/// VMM loads, while the volume's file keeps its [`FileStamp`]. A start
/// then reads only the boot configuration and a few inodes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BootMemo {
    #[serde(default)]
    files: std::collections::BTreeMap<String, MemoEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MemoEntry {
    stamp: FileStamp,
    file: PathBuf,
    #[serde(default)]
    features: Option<KernelFeatures>,
}

/// The largest memo file read.
const MAX_MEMO_BYTES: u64 = 256 << 10;
/// Where an instance keeps its memo, and an image build its seed.
pub const MEMO_FILE: &str = "boot-memo.json";

impl BootMemo {
    /// Adds `other`'s entries, replacing this memo's for the same files.
    pub fn extend(&mut self, other: BootMemo) {
        self.files.extend(other.files);
    }

    /// Reads a memo file; a missing, oversized or damaged one is empty.
    pub fn load(path: &Path) -> Self {
        match std::fs::metadata(path) {
            Ok(m) if m.len() <= MAX_MEMO_BYTES => std::fs::read(path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default(),
            _ => Self::default(),
        }
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        write_atomic(path, &serde_json::to_vec(self).expect("a memo serializes"))
    }

    /// How many files it knows.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    fn key(kind: &str, path: &str) -> String {
        format!("{kind}:{path}")
    }

    fn hit(&self, key: &str, stamp: &FileStamp) -> Option<&MemoEntry> {
        self.files
            .get(key)
            .filter(|e| e.stamp == *stamp && e.file.is_file())
    }

    /// The memo an image build leaves next to its files: the pristine
    /// boot files of its root volume `root` are the build's own (the
    /// kernel at `kernel_path` as each [`KernelBoot`] loads it, every
    /// initrd path the build's `initrd`).
    pub fn for_image(
        root: &Path,
        kernel_path: &str,
        kernels: &[(KernelBoot, PathBuf)],
        initrd_paths: &[&str],
        initrd: &Path,
    ) -> Result<Self, String> {
        let fs = Ext4::load_from_path(root).map_err(|e| e.to_string())?;
        let stamp_of = |p: &str| {
            stamp(&fs, p, u64::MAX).map_err(|e| match e {
                ReadError::Missing(d) | ReadError::Bad(d) | ReadError::Io(d) => d,
            })
        };
        let mut memo = Self::default();
        let kstamp = stamp_of(kernel_path)?;
        for (how, file) in kernels {
            memo.files.insert(
                Self::key(how.tag(), kernel_path),
                MemoEntry {
                    stamp: kstamp,
                    file: file.clone(),
                    features: None,
                },
            );
        }
        for p in initrd_paths {
            memo.files.insert(
                Self::key("initrd", p),
                MemoEntry {
                    stamp: stamp_of(p)?,
                    file: initrd.to_path_buf(),
                    features: None,
                },
            );
        }
        Ok(memo)
    }
}

fn stamp(fs: &Ext4, path: &str, max: u64) -> Result<FileStamp, ReadError> {
    let meta = fs.metadata(path).map_err(|e| classify(path, e))?;
    if meta.is_dir() || !meta.file_type().is_regular_file() {
        return Err(ReadError::Bad(format!("{path}: not a regular file")));
    }
    if meta.len() > max {
        return Err(ReadError::Bad(format!(
            "{path} is {} MiB, more than the {} MiB drydock reads",
            meta.len() >> 20,
            max >> 20
        )));
    }
    let t = |t: ext4_view::Timestamp| (t.seconds(), t.nanoseconds());
    Ok(FileStamp {
        size: meta.len(),
        mtime: t(meta.modified()),
        crtime: meta.created().map(t),
    })
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

fn hex_digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What the cache knows of a kernel, written last (its presence says the
/// kernel file next to it is complete).
#[derive(Serialize, Deserialize)]
struct KernelInfo {
    file: String,
    features: Option<KernelFeatures>,
}

fn cached_kernel(
    cache: &Path,
    bytes: &[u8],
    how: KernelBoot,
) -> Result<(PathBuf, Option<KernelFeatures>), (PathBuf, std::io::Error)> {
    let key = format!("{}-{}", how.tag(), hex_digest(bytes));
    let info_path = cache.join(format!("{key}.json"));
    if let Ok(text) = std::fs::read(&info_path) {
        if let Ok(info) = serde_json::from_slice::<KernelInfo>(&text) {
            let file = cache.join(&info.file);
            if file.exists() && !info.file.contains('/') {
                touch(&info_path);
                return Ok((file, info.features));
            }
        }
    }
    let elf = if bytes.starts_with(b"\x7fELF") {
        None
    } else {
        vmlinux::extract(bytes).ok()
    };
    let features = elf
        .as_deref()
        .or(bytes.starts_with(b"\x7fELF").then_some(bytes))
        .and_then(kernel::embedded_config)
        .map(|c| KernelFeatures::from_config(&c));
    let (file, data) = match (&elf, how) {
        (Some(elf), KernelBoot::PreferPvh) if has_pvh_note(elf) => {
            (format!("{key}.vmlinux"), &elf[..])
        }
        _ => (format!("{key}.boot"), bytes),
    };
    let path = cache.join(&file);
    write_atomic(&path, data).map_err(|e| (path.clone(), e))?;
    let info = serde_json::to_vec(&KernelInfo {
        file,
        features: features.clone(),
    })
    .expect("kernel info serializes");
    write_atomic(&info_path, &info).map_err(|e| (info_path.clone(), e))?;
    Ok((path, features))
}

fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new().prefix(".part-").tempfile_in(dir)?;
    tmp.write_all(data)?;
    tmp.as_file().sync_data()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

fn touch(path: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(path) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

/// Keeps the cache bounded: the least recently used files beyond
/// [`CACHE_KEEP`] go (a guest rewriting its initrd at every boot does not
/// fill the host's disk). Files the VMM already opened stay readable.
fn prune(cache: &Path, in_use: &[&Path]) {
    for p in in_use.iter().filter(|p| p.starts_with(cache)) {
        touch(p);
    }
    let Ok(dir) = std::fs::read_dir(cache) else {
        return;
    };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = dir
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if files.len() <= CACHE_KEEP {
        return;
    }
    files.sort();
    let excess = files.len() - CACHE_KEEP;
    for (_, p) in files.into_iter().take(excess) {
        if !in_use.contains(&p.as_path()) {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A kernel the VMMs can load: a whole bzImage (its header's payload size
/// fits the file) or an ELF.
pub fn check_kernel(bytes: &[u8]) -> Result<(), String> {
    if bytes.starts_with(b"\x7fELF") {
        return if bytes.len() >= 64 && bytes[4] == 2 {
            Ok(())
        } else {
            Err("a truncated or 32-bit ELF file".into())
        };
    }
    if !kernel::is_bzimage(bytes) {
        return Err("not a kernel (neither a bzImage nor an ELF vmlinux)".into());
    }
    // setup_sects at 0x1f1 (0 means 4), syssize (16-byte units) at 0x1f4.
    let setup_sects = match bytes[0x1f1] {
        0 => 4,
        n => n as u64,
    };
    let syssize = u32::from_le_bytes([bytes[0x1f4], bytes[0x1f5], bytes[0x1f6], bytes[0x1f7]]);
    let need = (setup_sects + 1) * 512 + syssize as u64 * 16;
    if (bytes.len() as u64) < need {
        return Err(format!(
            "a truncated bzImage ({} bytes; its header says {need})",
            bytes.len()
        ));
    }
    Ok(())
}

/// An initrd the kernel can unpack: a `newc` cpio archive holding `init`
/// (walked entry by entry), or a compressed one (its magic number; the
/// kernel checks the rest).
pub fn check_initrd(bytes: &[u8]) -> Result<(), String> {
    const COMPRESSED: &[(&[u8], &str)] = &[
        (&[0x1f, 0x8b], "gzip"),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0], "xz"),
        (&[0x28, 0xb5, 0x2f, 0xfd], "zstd"),
        (&[0x02, 0x21, 0x4c, 0x18], "lz4"),
        (b"BZh", "bzip2"),
        (&[0x5d, 0, 0], "lzma"),
    ];
    let mut at = 0usize;
    let mut has_init = false;
    loop {
        // Archives may follow each other, padded with zeros.
        while at < bytes.len() && bytes[at] == 0 {
            at += 1;
        }
        let rest = &bytes[at..];
        if rest.is_empty() {
            break;
        }
        if COMPRESSED.iter().any(|(m, _)| rest.starts_with(m)) {
            return Ok(());
        }
        if !(rest.starts_with(b"070701") || rest.starts_with(b"070702")) {
            return Err(if at == 0 {
                "not an initramfs (neither a newc cpio archive nor a compressed one)".into()
            } else {
                format!("damaged cpio archive at byte {at}")
            });
        }
        at = walk_cpio(bytes, at, &mut has_init)?;
    }
    if has_init {
        Ok(())
    } else {
        Err("the cpio archive has no init (the kernel would panic)".into())
    }
}

/// Walks one newc archive from `start` to just past its trailer (read
/// with [`crate::cpio::entries`], the one cpio reader).
fn walk_cpio(bytes: &[u8], start: usize, has_init: &mut bool) -> Result<usize, String> {
    for entry in crate::cpio::entries(bytes, start) {
        let e = entry?;
        if e.is_trailer() {
            return Ok(e.next);
        }
        let name = e.name.strip_prefix(b"./").unwrap_or(e.name);
        // A regular file or a symbolic link named init.
        if name == b"init" && (e.is_file() || e.is_symlink()) && !e.data.is_empty() {
            *has_init = true;
        }
    }
    Err(format!(
        "truncated cpio archive at byte {start} (no trailer)"
    ))
}

/// Whether an ELF kernel carries a PVH entry (the `Xen` note of type
/// `XEN_ELFNOTE_PHYS32_ENTRY`), read through its program headers.
pub fn has_pvh_note(elf: &[u8]) -> bool {
    const PT_NOTE: u32 = 4;
    const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    if !elf.starts_with(b"\x7fELF") || elf.get(4) != Some(&2) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    for i in 0..phnum as u64 {
        let Some(ph) = phoff
            .checked_add(i * phentsize as u64)
            .and_then(|p| usize::try_from(p).ok())
        else {
            return false;
        };
        if u32_at(ph) != Some(PT_NOTE) {
            continue;
        }
        let (Some(off), Some(size)) = (u64_at(ph + 8), u64_at(ph + 32)) else {
            return false;
        };
        let (Ok(off), Ok(size)) = (usize::try_from(off), usize::try_from(size)) else {
            continue;
        };
        let Some(notes) = off.checked_add(size).and_then(|end| elf.get(off..end)) else {
            continue;
        };
        let mut n = 0usize;
        while n + 12 <= notes.len() {
            let rd = |o: usize| u32::from_le_bytes(notes[o..o + 4].try_into().expect("4 bytes"));
            let (namesz, descsz, kind) = (rd(n) as usize, rd(n + 4) as usize, rd(n + 8));
            let name_end = n + 12 + namesz;
            if notes.get(n + 12..name_end) == Some(b"Xen\0") && kind == XEN_ELFNOTE_PHYS32_ENTRY {
                return true;
            }
            let Some(next) = namesz
                .checked_add(3)
                .map(|v| v & !3)
                .and_then(|v| descsz.checked_add(3).map(|d| v + (d & !3)))
                .and_then(|v| v.checked_add(n + 12))
            else {
                break;
            };
            n = next;
        }
    }
    false
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
