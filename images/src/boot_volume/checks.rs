//! What a kernel and an initrd read off a volume must be before they
//! boot: a whole bzImage or an ELF; a cpio archive with an `/init` (or a
//! compressed one); whether an ELF has a PVH entry.

use crate::kernel;

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
pub(super) fn walk_cpio(bytes: &[u8], start: usize, has_init: &mut bool) -> Result<usize, String> {
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
