//! Reading files off a guest's ext4 root volume (untrusted): sizes
//! bounded before anything is read, errors sorted into "missing", "bad"
//! and "cannot read", a file's stamp (size and times) without its bytes.

use ext4_view::Ext4;

use serde::{Deserialize, Serialize};

pub(super) enum ReadError {
    Missing(String),
    Bad(String),
    Io(String),
}

pub(super) fn classify(path: &str, e: ext4_view::Ext4Error) -> ReadError {
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
pub(super) fn read_file(fs: &Ext4, path: &str, max: u64) -> Result<Vec<u8>, ReadError> {
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

pub(super) fn stamp(fs: &Ext4, path: &str, max: u64) -> Result<FileStamp, ReadError> {
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

/// A file's identity on the volume: what says it has not changed since
/// it was read (a guest that forges it fools only itself: the memo is the
/// instance's own, or the image build's, whose files are the pristine ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    size: u64,
    mtime: (i64, u32),
    crtime: Option<(i64, u32)>,
}
