//! The uncompressed kernel (ELF `vmlinux`) inside a Debian `vmlinuz`.
//!
//! Booting the ELF through its PVH entry skips the kernel's own
//! decompressor, which under software emulation costs a good part of a
//! second, and is the entry drydock's own VMM uses. The cloud kernel's
//! payload is LZ4 in the legacy frame format: a magic number, then blocks
//! of at most 8 MiB, each preceded by its compressed length.

const LZ4_LEGACY_MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];
const BLOCK_MAX: usize = 8 << 20;
const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];

/// Extracts the ELF kernel from a bzImage, if its payload is LZ4.
pub fn extract(bzimage: &[u8]) -> Result<Vec<u8>, String> {
    let mut search = 0;
    while let Some(found) = find(&bzimage[search..], &LZ4_LEGACY_MAGIC) {
        let start = search + found;
        if let Ok(elf) = decompress_legacy(&bzimage[start + 4..]) {
            if elf.starts_with(&ELF_MAGIC) {
                return Ok(elf);
            }
        }
        search = start + 4;
    }
    Err("no LZ4-compressed ELF kernel found in the bzImage".into())
}

/// Where `needle` first occurs in `hay`.
pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn decompress_legacy(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut block = vec![0u8; BLOCK_MAX];
    while data.len() >= 4 {
        let len = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if len == 0 || len > data.len() - 4 || len > BLOCK_MAX + BLOCK_MAX / 255 + 16 {
            break; // the trailer (original size) or the end of the stream
        }
        let n = lz4_flex::block::decompress_into(&data[4..4 + len], &mut block)
            .map_err(|e| e.to_string())?;
        out.extend_from_slice(&block[..n]);
        data = &data[4 + len..];
    }
    if out.is_empty() {
        return Err("empty LZ4 stream".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_inflates_a_legacy_lz4_payload() {
        let mut elf = ELF_MAGIC.to_vec();
        elf.extend((0..100_000u32).flat_map(|i| (i % 97).to_le_bytes()));
        let compressed = lz4_flex::block::compress(&elf);
        let mut image = b"MZ setup code and boot header ....".to_vec();
        image.extend_from_slice(&LZ4_LEGACY_MAGIC);
        image.extend_from_slice(&(compressed.len() as u32).to_le_bytes());
        image.extend_from_slice(&compressed);
        image.extend_from_slice(&(elf.len() as u32).to_le_bytes());
        assert_eq!(extract(&image).unwrap(), elf);
        assert!(extract(b"no kernel here").is_err());
    }
}
