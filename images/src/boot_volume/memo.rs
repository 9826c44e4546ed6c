//! What the host already read from a volume (the boot memo): a start
//! reads only the boot configuration and a few inodes while the files
//! keep their stamps.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use ext4_view::Ext4;

use super::cache::{write_atomic, KernelBoot};
use super::ext4_read::{stamp, FileStamp, ReadError};
use crate::KernelFeatures;

/// What the host already read from a volume: (how, path) -> the file the
/// VMM loads, while the volume's file keeps its [`FileStamp`]. A start
/// then reads only the boot configuration and a few inodes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BootMemo {
    #[serde(default)]
    pub(super) files: std::collections::BTreeMap<String, MemoEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct MemoEntry {
    pub(super) stamp: FileStamp,
    pub(super) file: PathBuf,
    #[serde(default)]
    pub(super) features: Option<KernelFeatures>,
}

/// The largest memo file read.
pub(super) const MAX_MEMO_BYTES: u64 = 256 << 10;

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

    pub(super) fn key(kind: &str, path: &str) -> String {
        format!("{kind}:{path}")
    }

    pub(super) fn hit(&self, key: &str, stamp: &FileStamp) -> Option<&MemoEntry> {
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
