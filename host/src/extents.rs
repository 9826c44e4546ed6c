//! Copies of volume files that read and write only allocated extents
//! (SEEK_DATA / SEEK_HOLE), so a large, mostly empty volume copies in
//! proportion to what was written to it.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

fn seek(file: &File, offset: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    // SAFETY: lseek on a descriptor we own; it only moves the file offset.
    let r = unsafe { libc::lseek(file.as_raw_fd(), offset as libc::off_t, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENXIO) {
            return Ok(None);
        }
        return Err(e);
    }
    Ok(Some(r as u64))
}

/// Copies `from` to `to` (created, same length, holes kept). Returns the
/// number of bytes actually copied.
pub fn copy_allocated(from: &Path, to: &Path) -> io::Result<u64> {
    let src = File::open(from)?;
    let len = src.metadata()?.len();
    let tmp = to.with_extension("partial");
    let dst = File::create(&tmp)?;
    dst.set_len(len)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut copied = 0u64;
    let mut pos = 0u64;
    while pos < len {
        let Some(data) = seek(&src, pos, libc::SEEK_DATA)? else {
            break;
        };
        let hole = seek(&src, data, libc::SEEK_HOLE)?.unwrap_or(len).min(len);
        let mut at = data;
        while at < hole {
            let n = ((hole - at) as usize).min(buf.len());
            src.read_exact_at(&mut buf[..n], at)?;
            // Skip blocks that are allocated but zero: they stay holes.
            if buf[..n].iter().any(|b| *b != 0) {
                dst.write_all_at(&buf[..n], at)?;
                copied += n as u64;
            }
            at += n as u64;
        }
        pos = hole;
    }
    dst.sync_all()?;
    std::fs::rename(&tmp, to)?;
    Ok(copied)
}

/// Whether the ext2/3/4 file system on a volume file says it is mounted
/// (journal recovery needed, or not marked clean). `None` when the volume
/// holds no ext file system.
pub fn ext_fs_mounted(path: &Path) -> io::Result<Option<bool>> {
    let file = File::open(path)?;
    let mut sb = [0u8; 1024];
    if file.read_exact_at(&mut sb, 1024).is_err() {
        return Ok(None);
    }
    let magic = u16::from_le_bytes([sb[0x38], sb[0x39]]);
    if magic != 0xEF53 {
        return Ok(None);
    }
    let state = u16::from_le_bytes([sb[0x3A], sb[0x3B]]);
    let incompat = u32::from_le_bytes([sb[0x60], sb[0x61], sb[0x62], sb[0x63]]);
    const VALID_FS: u16 = 0x1;
    const INCOMPAT_RECOVER: u32 = 0x4;
    Ok(Some(
        incompat & INCOMPAT_RECOVER != 0 || state & VALID_FS == 0,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_data_and_keeps_holes() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.raw");
        let f = File::create(&a).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(b"hello", 10 << 20).unwrap();
        f.write_all_at(b"world", 50 << 20).unwrap();
        drop(f);
        let b = dir.path().join("b.raw");
        let copied = copy_allocated(&a, &b).unwrap();
        assert!(
            copied <= 2 << 20,
            "only the written extents are copied ({copied} bytes)"
        );
        let g = File::open(&b).unwrap();
        assert_eq!(g.metadata().unwrap().len(), 64 << 20);
        let mut buf = [0u8; 5];
        g.read_exact_at(&mut buf, 50 << 20).unwrap();
        assert_eq!(&buf, b"world");
        g.read_exact_at(&mut buf, 10 << 20).unwrap();
        assert_eq!(&buf, b"hello");
    }

    #[test]
    fn a_fresh_ext4_is_not_mounted_and_other_data_is_not_ext() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("fs.ext4");
        let tree = dir.path().join("tree");
        std::fs::create_dir(&tree).unwrap();
        drydock_images::make_ext4(&tree, "data", 8, &img).unwrap();
        assert_eq!(ext_fs_mounted(&img).unwrap(), Some(false));
        let raw = dir.path().join("raw");
        File::create(&raw).unwrap().set_len(1 << 20).unwrap();
        assert_eq!(ext_fs_mounted(&raw).unwrap(), None);
    }
}
