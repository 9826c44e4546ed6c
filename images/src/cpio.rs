//! The `newc` cpio format the kernel unpacks as an initramfs: a writer
//! ([`CpioWriter`]), the one reader of archives drydock did not write
//! ([`entries`]: initramfs files read off a guest's volume, which the
//! guest controls) and a [`rewrite`] built on it.

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

/// The fixed part of a `newc` header.
pub const HEADER_LEN: usize = 110;

/// One entry of a `newc` archive, as read (every offset checked).
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    /// Where its header starts.
    pub at: usize,
    /// Its 110-byte header.
    pub header: &'a [u8],
    /// File type and permission bits.
    pub mode: u32,
    /// Its path, without the terminating NUL.
    pub name: &'a [u8],
    /// Where its data starts (after the name and its padding).
    pub data_start: usize,
    pub data: &'a [u8],
    /// Where the next header starts (at most the archive's length).
    pub next: usize,
}

impl Entry<'_> {
    /// The entry that ends an archive.
    pub fn is_trailer(&self) -> bool {
        self.name == b"TRAILER!!!"
    }

    /// A regular file (`S_IFREG`).
    pub fn is_file(&self) -> bool {
        self.mode & 0o170000 == 0o100000
    }

    /// A symbolic link (`S_IFLNK`).
    pub fn is_symlink(&self) -> bool {
        self.mode & 0o170000 == 0o120000
    }
}

/// Reads the entries of the archive that starts at `start` of `bytes`, up
/// to and including its trailer. Untrusted input: every field is checked
/// against what is there; a damaged archive yields one error (and then
/// nothing), never a panic or a read out of bounds.
pub fn entries(bytes: &[u8], start: usize) -> Entries<'_> {
    Entries {
        bytes,
        at: start,
        done: false,
    }
}

/// The iterator of [`entries`].
pub struct Entries<'a> {
    bytes: &'a [u8],
    at: usize,
    done: bool,
}

impl<'a> Entries<'a> {
    fn read(&self) -> Result<Entry<'a>, String> {
        let (bytes, at) = (self.bytes, self.at);
        let truncated = || format!("truncated cpio archive at byte {at}");
        let header = bytes
            .get(at..at.checked_add(HEADER_LEN).ok_or_else(truncated)?)
            .ok_or_else(truncated)?;
        if &header[..6] != b"070701" && &header[..6] != b"070702" {
            return Err(format!(
                "no newc header at byte {at} (not a cpio archive, or compressed)"
            ));
        }
        let field = |i: usize| -> Result<usize, String> {
            std::str::from_utf8(&header[6 + 8 * i..14 + 8 * i])
                .ok()
                .and_then(|hex| usize::from_str_radix(hex, 16).ok())
                .ok_or_else(|| format!("damaged cpio header at byte {at}"))
        };
        let (mode, size, name_len) = (field(1)?, field(6)?, field(11)?);
        if name_len == 0 {
            return Err(format!("damaged cpio header at byte {at} (an empty name)"));
        }
        let align = |n: usize| n.checked_add(3).map(|n| n & !3);
        let name_start = at + HEADER_LEN;
        let name_end = name_start.checked_add(name_len).ok_or_else(truncated)?;
        let name = bytes.get(name_start..name_end).ok_or_else(truncated)?;
        let name = name.strip_suffix(&[0]).unwrap_or(name);
        let data_start = align(name_end).ok_or_else(truncated)?;
        let data_end = data_start.checked_add(size).ok_or_else(truncated)?;
        let data = bytes.get(data_start..data_end).ok_or_else(truncated)?;
        let next = align(data_end).ok_or_else(truncated)?.min(bytes.len());
        Ok(Entry {
            at,
            header,
            mode: mode as u32,
            name,
            data_start,
            data,
            next,
        })
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<Entry<'a>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let entry = self.read();
        match &entry {
            Ok(e) if !e.is_trailer() && e.next > self.at => self.at = e.next,
            _ => self.done = true,
        }
        Some(entry)
    }
}

/// Copies a `newc` archive (untrusted: an initramfs read off a guest's
/// volume), dropping or replacing entries as `decide` says (given each
/// entry's path and data). Read with [`entries`]; a damaged archive is an
/// error, never a panic.
pub fn rewrite(archive: &[u8], decide: impl Fn(&str, &[u8]) -> Rewrite) -> Result<Vec<u8>, String> {
    if archive.len() > MAX_REWRITE {
        return Err(format!("the archive is over {} MiB", MAX_REWRITE >> 20));
    }
    let pad4 = |n: usize| n.div_ceil(4) * 4;
    // Room for the trailer's padding: keeping everything never reallocates.
    let mut out = Vec::with_capacity(archive.len() + 512);
    for entry in entries(archive, 0) {
        let e = entry?;
        if e.is_trailer() {
            out.extend_from_slice(&archive[e.at..e.next]);
            let pad = (512 - out.len() % 512) % 512;
            out.extend(std::iter::repeat_n(0u8, pad));
            return Ok(out);
        }
        let name = std::str::from_utf8(e.name)
            .map_err(|_| format!("an entry name at byte {} is not UTF-8", e.at))?;
        match decide(name, e.data) {
            Rewrite::Keep => out.extend_from_slice(&archive[e.at..e.next]),
            Rewrite::Drop => {}
            Rewrite::Replace(data) => {
                if !e.is_file() {
                    return Err(format!("{name} is not a regular file"));
                }
                let mut header = e.header.to_vec();
                header[6 + 8 * 6..14 + 8 * 6]
                    .copy_from_slice(format!("{:08x}", data.len()).as_bytes());
                out.extend_from_slice(&header);
                out.extend_from_slice(&archive[e.at + HEADER_LEN..e.data_start]);
                out.extend_from_slice(&data);
                out.extend(std::iter::repeat_n(0u8, pad4(out.len()) - out.len()));
            }
        }
    }
    Err("the archive has no trailer".into())
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
