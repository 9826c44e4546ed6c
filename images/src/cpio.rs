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

/// The largest archive [`rewrite`] takes (an initramfs read off a volume).
pub const MAX_REWRITE: usize = 256 << 20;

/// What [`rewrite`] does with one entry, by its path.
pub enum Rewrite {
    Keep,
    Drop,
    /// New contents for a regular file.
    Replace(Vec<u8>),
}

/// Copies a `newc` archive (untrusted: an initramfs read off a guest's
/// volume), dropping or replacing entries as `decide` says (given each
/// entry's path and data). Every header
/// field and length is checked against what is there; a damaged archive
/// is an error, never a panic.
pub fn rewrite(archive: &[u8], decide: impl Fn(&str, &[u8]) -> Rewrite) -> Result<Vec<u8>, String> {
    if archive.len() > MAX_REWRITE {
        return Err(format!("the archive is over {} MiB", MAX_REWRITE >> 20));
    }
    const HEADER: usize = 110;
    let pad4 = |n: usize| n.div_ceil(4) * 4;
    let field = |h: &[u8], i: usize| -> Result<usize, String> {
        let hex =
            std::str::from_utf8(&h[6 + 8 * i..14 + 8 * i]).map_err(|_| "a header is not ASCII")?;
        usize::from_str_radix(hex, 16).map_err(|_| format!("a header field is not hex: {hex:?}"))
    };
    let mut out = Vec::with_capacity(archive.len());
    let mut at = 0;
    loop {
        let h = archive
            .get(at..at + HEADER)
            .ok_or_else(|| format!("the archive ends inside a header at byte {at}"))?;
        if &h[..6] != b"070701" && &h[..6] != b"070702" {
            return Err(format!(
                "no newc header at byte {at} (not a cpio archive, or compressed)"
            ));
        }
        let (mode, size, name_len) = (field(h, 1)?, field(h, 6)?, field(h, 11)?);
        let name_end = at + HEADER + name_len;
        let data_start = pad4(name_end);
        let data_end = data_start
            .checked_add(size)
            .ok_or("an entry's size overflows")?;
        let next = pad4(data_end);
        if name_len == 0 || data_end > archive.len() {
            return Err(format!(
                "an entry at byte {at} runs past the end of the archive"
            ));
        }
        let name = std::str::from_utf8(&archive[at + HEADER..name_end - 1])
            .map_err(|_| format!("an entry name at byte {at} is not UTF-8"))?;
        let end = next.min(archive.len());
        if name == "TRAILER!!!" {
            out.extend_from_slice(&archive[at..end]);
            let pad = (512 - out.len() % 512) % 512;
            out.extend(std::iter::repeat_n(0u8, pad));
            return Ok(out);
        }
        match decide(name, &archive[data_start..data_end]) {
            Rewrite::Keep => out.extend_from_slice(&archive[at..end]),
            Rewrite::Drop => {}
            Rewrite::Replace(data) => {
                if mode & 0o170000 != 0o100000 {
                    return Err(format!("{name} is not a regular file"));
                }
                let mut header = h.to_vec();
                header[6 + 8 * 6..14 + 8 * 6]
                    .copy_from_slice(format!("{:08x}", data.len()).as_bytes());
                out.extend_from_slice(&header);
                out.extend_from_slice(&archive[at + HEADER..data_start]);
                out.extend_from_slice(&data);
                out.extend(std::iter::repeat_n(0u8, pad4(out.len()) - out.len()));
            }
        }
        at = next;
    }
}

#[cfg(test)]
mod rewrite_tests {
    use super::*;

    fn archive() -> Vec<u8> {
        let mut w = CpioWriter::new(Vec::new());
        w.add("init", 0o755, EntryKind::File(b"#!/bin/sh\n"))
            .unwrap();
        w.add("lib", 0o755, EntryKind::Dir).unwrap();
        w.add("lib/modules/virtio_mmio.ko", 0o644, EntryKind::File(b"ko1"))
            .unwrap();
        w.add("lib/modules/virtio_blk.ko", 0o644, EntryKind::File(b"ko22"))
            .unwrap();
        w.add(
            "etc/drydock-drivers",
            0o644,
            EntryKind::File(b"virtio_mmio\nvirtio_blk\n"),
        )
        .unwrap();
        w.finish().unwrap()
    }

    fn names(a: &[u8]) -> Vec<String> {
        let names = std::cell::RefCell::new(Vec::new());
        rewrite(a, |n, _| {
            names.borrow_mut().push(n.to_string());
            Rewrite::Keep
        })
        .unwrap();
        names.into_inner()
    }

    #[test]
    fn entries_are_dropped_and_replaced_and_the_rest_kept_byte_for_byte() {
        let a = archive();
        assert_eq!(rewrite(&a, |_, _| Rewrite::Keep).unwrap(), a);
        let b = rewrite(&a, |n, _| match n {
            "lib/modules/virtio_mmio.ko" => Rewrite::Drop,
            "etc/drydock-drivers" => Rewrite::Replace(b"virtio_blk\n".to_vec()),
            _ => Rewrite::Keep,
        })
        .unwrap();
        assert_eq!(b.len() % 512, 0);
        assert_eq!(
            names(&b),
            [
                "init",
                "lib",
                "lib/modules/virtio_blk.ko",
                "etc/drydock-drivers"
            ]
        );
        // The replaced file reads back (through another rewrite).
        let got = std::cell::RefCell::new(0usize);
        rewrite(&b, |n, data| {
            if n == "etc/drydock-drivers" {
                assert_eq!(data, b"virtio_blk\n");
                *got.borrow_mut() += 1;
            }
            Rewrite::Keep
        })
        .unwrap();
        assert_eq!(*got.borrow(), 1);
        let text = String::from_utf8_lossy(&b);
        assert!(text.contains("virtio_blk\n") && !text.contains("virtio_mmio"));
    }

    #[test]
    fn damaged_archives_are_errors() {
        let a = archive();
        for cut in [0, 50, 111, 130, a.len() - 600] {
            assert!(
                rewrite(&a[..cut], |_, _| Rewrite::Keep).is_err(),
                "cut at {cut}"
            );
        }
        let mut bad = a.clone();
        bad[6 + 8 * 6..14 + 8 * 6].copy_from_slice(b"ffffffff");
        assert!(rewrite(&bad, |_, _| Rewrite::Keep).is_err());
        let mut gz = vec![0x1f, 0x8b];
        gz.extend_from_slice(&a);
        assert!(rewrite(&gz, |_, _| Rewrite::Keep)
            .unwrap_err()
            .contains("not a cpio archive"));
    }
}
