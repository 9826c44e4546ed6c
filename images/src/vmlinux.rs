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

/// How much work a kernel file may cause. The file is untrusted (an image
/// built from any package, or a kernel of one's own): a file full of LZ4
/// magic numbers, or an LZ4 "bomb", must not cost gigabytes or minutes.
#[derive(Debug, Clone, Copy)]
pub struct ExtractLimits {
    /// The largest ELF produced (a distribution's vmlinux is 30-70 MiB).
    pub max_output: usize,
    /// Candidates (magic numbers followed by a plausible block) actually
    /// decompressed; each costs at most one block (8 MiB) unless its first
    /// block starts with the ELF magic.
    pub max_attempts: usize,
}

impl Default for ExtractLimits {
    fn default() -> Self {
        Self {
            max_output: 256 << 20,
            max_attempts: 16,
        }
    }
}

/// Extracts the ELF kernel from a bzImage, if its payload is LZ4, within
/// [`ExtractLimits::default`].
pub fn extract(bzimage: &[u8]) -> Result<Vec<u8>, String> {
    extract_within(bzimage, ExtractLimits::default())
}

/// [`extract`] within `limits`. At most one 8 MiB block buffer is
/// allocated per call (and only once a candidate looks like a stream), a
/// candidate whose first block is not the start of an ELF file is dropped
/// after that block, the first ELF found is returned, and the output never
/// grows past `max_output`.
pub fn extract_within(bzimage: &[u8], limits: ExtractLimits) -> Result<Vec<u8>, String> {
    let mut search = 0;
    let mut attempts = 0;
    let mut block = Vec::new();
    let mut last_error = None;
    while let Some(found) = find(&bzimage[search..], &LZ4_LEGACY_MAGIC) {
        let start = search + found;
        search = start + 4;
        let stream = &bzimage[start + 4..];
        if first_block_len(stream).is_none() {
            continue;
        }
        if attempts == limits.max_attempts {
            return Err(format!(
                "no LZ4-compressed ELF kernel among the first {attempts} candidates in the bzImage"
            ));
        }
        attempts += 1;
        if block.is_empty() {
            block = vec![0u8; BLOCK_MAX];
        }
        match decompress_legacy(stream, &mut block, limits.max_output) {
            Ok(Some(elf)) => return Ok(elf),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
    }
    Err(match last_error {
        Some(e) => format!("no LZ4-compressed ELF kernel found in the bzImage ({e})"),
        None => "no LZ4-compressed ELF kernel found in the bzImage".into(),
    })
}

/// Where `needle` first occurs in `hay`.
pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The compressed length of the block at the start of `data`, if it is a
/// plausible one (the stream ends at anything else: the trailer holding
/// the original size, or the end of the data).
fn first_block_len(data: &[u8]) -> Option<usize> {
    let len = u32::from_le_bytes(data.get(..4)?.try_into().ok()?) as usize;
    (len != 0 && len <= data.len() - 4 && len <= BLOCK_MAX + BLOCK_MAX / 255 + 16).then_some(len)
}

/// Decompresses a legacy LZ4 stream through `block` (at least
/// [`BLOCK_MAX`] bytes). `Ok(None)` when its first block is not the start
/// of an ELF file (nothing more is decompressed then).
fn decompress_legacy(
    mut data: &[u8],
    block: &mut [u8],
    max_output: usize,
) -> Result<Option<Vec<u8>>, String> {
    let mut out: Vec<u8> = Vec::new();
    while let Some(len) = first_block_len(data) {
        let n = lz4_flex::block::decompress_into(&data[4..4 + len], block)
            .map_err(|e| e.to_string())?;
        if out.is_empty() && !block[..n].starts_with(&ELF_MAGIC) {
            return Ok(None);
        }
        let want = out.len() + n;
        if want > max_output {
            return Err(format!(
                "the LZ4 payload inflates past {} MiB",
                max_output >> 20
            ));
        }
        if out.capacity() < want {
            // Doubling, but never past the limit.
            let target = want.max(out.capacity() * 2).min(max_output);
            out.reserve_exact(target - out.len());
        }
        out.extend_from_slice(&block[..n]);
        data = &data[4 + len..];
        // Every block of the legacy format but the last holds exactly
        // 8 MiB: a shorter one ends the stream (what follows is the
        // trailer, the original size, which may look like a block).
        if n < BLOCK_MAX {
            break;
        }
    }
    Ok((!out.is_empty()).then_some(out))
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

    /// A valid LZ4 block of `n` zero bytes.
    fn zero_block(n: usize) -> Vec<u8> {
        let c = lz4_flex::block::compress(&vec![0u8; n]);
        let mut v = LZ4_LEGACY_MAGIC.to_vec();
        v.extend_from_slice(&(c.len() as u32).to_le_bytes());
        v.extend_from_slice(&c);
        v
    }

    #[test]
    fn candidates_that_are_not_an_elf_cost_one_block_and_are_capped() {
        // Many streams whose first block decompresses but is no ELF.
        let image: Vec<u8> = (0..100).flat_map(|_| zero_block(1 << 20)).collect();
        let e = extract(&image).unwrap_err();
        assert!(e.contains("among the first 16 candidates"), "{e}");
        // An ELF after them is still found when within the limit.
        let mut elf = ELF_MAGIC.to_vec();
        elf.extend(vec![7u8; 1000]);
        let c = lz4_flex::block::compress(&elf);
        let mut image: Vec<u8> = (0..3).flat_map(|_| zero_block(4096)).collect();
        image.extend_from_slice(&LZ4_LEGACY_MAGIC);
        image.extend_from_slice(&(c.len() as u32).to_le_bytes());
        image.extend_from_slice(&c);
        assert_eq!(extract(&image).unwrap(), elf);
    }

    #[test]
    fn the_output_stops_at_the_limit() {
        // An ELF header block, then blocks of zeros: 8 MiB each.
        let mut first = ELF_MAGIC.to_vec();
        first.resize(BLOCK_MAX, 0);
        let c = lz4_flex::block::compress(&first);
        let mut image = LZ4_LEGACY_MAGIC.to_vec();
        image.extend_from_slice(&(c.len() as u32).to_le_bytes());
        image.extend_from_slice(&c);
        let zeros = lz4_flex::block::compress(&vec![0u8; BLOCK_MAX]);
        for _ in 0..2 {
            image.extend_from_slice(&(zeros.len() as u32).to_le_bytes());
            image.extend_from_slice(&zeros);
        }
        let limits = ExtractLimits {
            max_output: 12 << 20,
            ..Default::default()
        };
        let e = extract_within(&image, limits).unwrap_err();
        assert!(e.contains("inflates past 12 MiB"), "{e}");
        assert_eq!(extract(&image).unwrap().len(), 3 * BLOCK_MAX);
    }

    #[test]
    fn a_short_block_ends_the_stream() {
        // The trailer (the original size) may look like a block: after a
        // block shorter than 8 MiB it is not read as one.
        let mut elf = ELF_MAGIC.to_vec();
        elf.push(0);
        let c = lz4_flex::block::compress(&elf);
        let mut image = LZ4_LEGACY_MAGIC.to_vec();
        image.extend_from_slice(&(c.len() as u32).to_le_bytes());
        image.extend_from_slice(&c);
        image.extend_from_slice(&(elf.len() as u32).to_le_bytes());
        image.extend_from_slice(&[0; 5]);
        assert_eq!(extract(&image).unwrap(), elf);
    }
}
