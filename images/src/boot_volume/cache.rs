//! The boot cache: the files the VMM loads, named by their content
//! (SHA-256), the uncompressed kernel extracted once per kernel, the
//! least recently used pruned.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::checks::has_pvh_note;
use crate::{kernel, vmlinux, KernelFeatures};

/// Boot files kept in the cache (kernels and initrds together); the least
/// recently used go first.
pub(super) const CACHE_KEEP: usize = 48;

pub(super) fn hex_digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What the cache knows of a kernel, written last (its presence says the
/// kernel file next to it is complete).
#[derive(Serialize, Deserialize)]
pub(super) struct KernelInfo {
    file: String,
    features: Option<KernelFeatures>,
}

pub(super) fn cached_kernel(
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

pub(super) fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new().prefix(".part-").tempfile_in(dir)?;
    tmp.write_all(data)?;
    tmp.as_file().sync_data()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

pub(super) fn touch(path: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(path) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

/// Keeps the cache bounded: the least recently used files beyond
/// [`CACHE_KEEP`] go (a guest rewriting its initrd at every boot does not
/// fill the host's disk). Files the VMM already opened stay readable.
pub(super) fn prune(cache: &Path, in_use: &[&Path]) {
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
    pub(super) fn tag(self) -> &'static str {
        match self {
            Self::PreferPvh => "kernel-pvh",
            Self::AsGiven => "kernel-given",
        }
    }
}
