//! A writer for the `newc` cpio format the kernel unpacks as an initramfs.

use std::io::{self, Write};

/// What an archive entry is.
pub enum EntryKind<'a> {
    Dir,
    File(&'a [u8]),
    Symlink(&'a str),
    /// A character device (for /dev/console before devtmpfs is mounted).
    CharDevice {
        major: u32,
        minor: u32,
    },
}

/// Streams entries into a `newc` archive.
pub struct CpioWriter<W: Write> {
    out: W,
    ino: u32,
    written: u64,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            ino: 1,
            written: 0,
        }
    }

    fn raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad4(&mut self) -> io::Result<()> {
        let pad = (4 - (self.written % 4) as usize) % 4;
        self.raw(&[0u8; 3][..pad])
    }

    /// Adds one entry. `path` is relative (`bin/busybox`), `mode` holds the
    /// permission bits.
    pub fn add(&mut self, path: &str, mode: u32, kind: EntryKind<'_>) -> io::Result<()> {
        let (type_bits, data, rdev): (u32, &[u8], (u32, u32)) = match kind {
            EntryKind::Dir => (0o040000, &[], (0, 0)),
            EntryKind::File(d) => (0o100000, d, (0, 0)),
            EntryKind::Symlink(t) => (0o120000, t.as_bytes(), (0, 0)),
            EntryKind::CharDevice { major, minor } => (0o020000, &[], (major, minor)),
        };
        self.header(path, type_bits | (mode & 0o7777), data.len() as u32, rdev)?;
        self.raw(data)?;
        self.pad4()
    }

    fn header(&mut self, path: &str, mode: u32, size: u32, rdev: (u32, u32)) -> io::Result<()> {
        let name_len = path.len() as u32 + 1;
        let ino = self.ino;
        self.ino += 1;
        let header = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}{name_len:08x}{:08x}",
            0, 0, 1, 0, 0, 0, rdev.0, rdev.1, 0
        );
        self.raw(header.as_bytes())?;
        self.raw(path.as_bytes())?;
        self.raw(&[0])?;
        self.pad4()
    }

    /// Writes the trailer and returns the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.header("TRAILER!!!", 0, 0, (0, 0))?;
        let pad = (512 - (self.written % 512) as usize) % 512;
        self.raw(&vec![0u8; pad])?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_aligned_and_the_trailer_ends_the_archive() {
        let mut w = CpioWriter::new(Vec::new());
        w.add("bin", 0o755, EntryKind::Dir).unwrap();
        w.add("bin/hello", 0o755, EntryKind::File(b"#!/bin/sh\necho hi\n"))
            .unwrap();
        w.add("bin/sh", 0o777, EntryKind::Symlink("busybox"))
            .unwrap();
        let out = w.finish().unwrap();
        assert_eq!(out.len() % 512, 0);
        assert!(out.starts_with(b"070701"));
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("bin/hello\0"));
        assert!(text.contains("echo hi"));
        assert!(text.contains("TRAILER!!!"));
        // Every header starts on a 4-byte boundary.
        for (i, _) in text.match_indices("070701") {
            assert_eq!(i % 4, 0);
        }
    }
}
