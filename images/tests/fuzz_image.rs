//! Property tests of what drydock reads from untrusted files: kernels
//! (`images/src/kernel.rs`, `images/src/vmlinux.rs`): the ELF kernel inside
//! an LZ4 bzImage (legacy frames, any number of magic numbers, bombs), the
//! configuration a kernel carries (gzip between `IKCFG_ST` and
//! `IKCFG_ED`), the release in a bzImage header or an ELF banner, and the
//! features read from a `.config`; and what a guest leaves on its root
//! volume: initramfs archives (`images/src/cpio.rs`, the one cpio reader)
//! and the boot configuration (`images/src/boot_config.rs`). Nothing may panic, and
//! the bytes allocated per case are bounded by what the file could
//! legitimately hold: a counting global allocator sums every allocation.
//!
//! CI runs 256 cases of each; `scripts/fuzz [CASES]` runs them long.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;

use drydock_images::kernel::{
    bzimage_release, elf_release, embedded_config, is_bzimage, KernelFeatures, MAX_CONFIG,
};
use drydock_images::vmlinux::{extract, extract_within, ExtractLimits};
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// Bytes allocated by this thread, per case.

struct Counting;

thread_local! {
    static TOTAL: Cell<usize> = const { Cell::new(0) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = TOTAL.try_with(|t| t.set(t.get().saturating_add(size)));
    let _ = LARGEST.try_with(|m| {
        if size > m.get() {
            m.set(size)
        }
    });
}

// SAFETY: every method forwards to the system allocator with the same
// arguments; `note` only updates thread-local counters and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller upholds `alloc`'s contract, passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: `ptr` was allocated by `System` (every allocation goes
        // through this type) with `layout`, as the caller guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f`; returns its result, the bytes it allocated in all, and its
/// largest single allocation.
fn allocations<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    TOTAL.with(|t| t.set(0));
    LARGEST.with(|m| m.set(0));
    let out = f();
    (out, TOTAL.with(|t| t.get()), LARGEST.with(|m| m.get()))
}

// ---------------------------------------------------------------------------
// Kernel-shaped bytes.

const LZ4_MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];
const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];
/// One LZ4 block buffer (`vmlinux.rs`'s BLOCK_MAX).
const BLOCK: usize = 8 << 20;
/// LZ4's largest expansion: a block inflates at most ~255 times.
const LZ4_RATIO: usize = 256;

/// A piece of a hostile bzImage.
#[derive(Debug, Clone)]
enum Piece {
    Raw(Vec<u8>),
    /// The legacy LZ4 magic number.
    Magic,
    /// A length header of any value.
    Len(u32),
    /// A valid LZ4 block (length-prefixed) of these bytes, repeated
    /// `times` (a highly compressible payload: a small bomb).
    Block {
        data: Vec<u8>,
        times: usize,
        elf: bool,
    },
    /// A valid block with its length header off by `delta`.
    BadLen {
        data: Vec<u8>,
        delta: i32,
    },
    /// Arbitrary bytes where a block's body would be.
    Garbage {
        len: u32,
        body: Vec<u8>,
    },
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        2 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Piece::Raw),
        3 => Just(Piece::Magic),
        1 => prop_oneof![any::<u32>(), 0u32..4096].prop_map(Piece::Len),
        3 => (prop::collection::vec(any::<u8>(), 0..256), 1usize..256, any::<bool>())
            .prop_map(|(data, times, elf)| Piece::Block { data, times, elf }),
        1 => (prop::collection::vec(any::<u8>(), 0..128), -8i32..8)
            .prop_map(|(data, delta)| Piece::BadLen { data, delta }),
        1 => (0u32..512, prop::collection::vec(any::<u8>(), 0..512))
            .prop_map(|(len, body)| Piece::Garbage { len, body }),
    ]
}

fn block_bytes(raw: &[u8]) -> Vec<u8> {
    let c = lz4_flex::block::compress(raw);
    let mut v = (c.len() as u32).to_le_bytes().to_vec();
    v.extend(c);
    v
}

fn assemble(pieces: &[Piece]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in pieces {
        match p {
            Piece::Raw(b) => out.extend(b),
            Piece::Magic => out.extend(LZ4_MAGIC),
            Piece::Len(n) => out.extend(n.to_le_bytes()),
            Piece::Block { data, times, elf } => {
                let mut raw = if *elf { ELF_MAGIC.to_vec() } else { Vec::new() };
                for _ in 0..*times {
                    raw.extend(data);
                }
                out.extend(block_bytes(&raw));
            }
            Piece::BadLen { data, delta } => {
                let c = lz4_flex::block::compress(data);
                out.extend((c.len() as i64 + i64::from(*delta)).max(0).to_le_bytes()[..4].iter());
                out.extend(c);
            }
            Piece::Garbage { len, body } => {
                out.extend(len.to_le_bytes());
                out.extend(body);
            }
        }
    }
    out
}

/// What a call on `input` may allocate in all: one block buffer, the
/// output (at most `LZ4_RATIO` times the input, and at most the limit)
/// grown by doubling, and a little for errors and bookkeeping.
fn extract_bound(input: usize, max_output: usize) -> usize {
    BLOCK + 4 * (LZ4_RATIO * input).min(max_output) + (64 << 10)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

proptest! {
    /// Any mix of magic numbers, valid and broken blocks, bombs and noise:
    /// no panic, the first ELF or an error, and bounded allocation however
    /// many candidates the file holds.
    #[test]
    fn vmlinux_extract_is_bounded_on_any_bzimage(
        pieces in prop::collection::vec(piece(), 0..48),
        max_output in prop_oneof![Just(256usize << 20), (1usize..64) .prop_map(|k| k << 10)],
        max_attempts in 0usize..20,
    ) {
        let image = assemble(&pieces);
        let limits = ExtractLimits { max_output, max_attempts };
        let (r, total, _) = allocations(|| extract_within(&image, limits));
        prop_assert!(
            total <= extract_bound(image.len(), max_output),
            "{total} bytes allocated for {} bytes of input", image.len()
        );
        if let Ok(elf) = r {
            prop_assert!(elf.starts_with(&ELF_MAGIC));
            prop_assert!(elf.len() <= max_output);
        }
    }

    /// The embedded configuration: any bytes, markers in any order, gzip
    /// streams (valid, truncated, large when inflated): no panic, text of
    /// at most MAX_CONFIG bytes, and no allocation beyond a few times that.
    #[test]
    fn embedded_config_is_bounded_on_any_kernel(
        before in prop::collection::vec(any::<u8>(), 0..64),
        text in prop::collection::vec(any::<u8>(), 0..512),
        repeat in prop_oneof![6 => 1usize..4, 1 => 1usize..20_000],
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
        markers in prop::sample::select(vec![(true, true), (true, false), (false, true), (false, false)]),
        after in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut inflated = Vec::new();
        for _ in 0..repeat {
            inflated.extend(&text);
        }
        let mut gz = gzip(&inflated);
        if truncate && !gz.is_empty() {
            let at = cut.index(gz.len());
            gz.truncate(at);
        }
        let mut elf = before.clone();
        if markers.0 {
            elf.extend(b"IKCFG_ST");
        }
        elf.extend(&gz);
        if markers.1 {
            elf.extend(b"IKCFG_ED");
        }
        elf.extend(&after);
        let (r, total, _) = allocations(|| embedded_config(&elf));
        if let Some(config) = &r {
            prop_assert!(config.len() as u64 <= MAX_CONFIG);
        }
        prop_assert!(
            total as u64 <= 4 * MAX_CONFIG + (1 << 20),
            "{total} bytes allocated"
        );
        if !truncate && markers == (true, true)
            && inflated.len() as u64 <= MAX_CONFIG
            && !before.windows(8).any(|w| w == b"IKCFG_ST")
            && !gz.windows(8).any(|w| w == b"IKCFG_ED")
        {
            if let Ok(text) = std::str::from_utf8(&inflated) {
                prop_assert_eq!(r.as_deref(), Some(text));
            }
        }
    }

    /// bzImage header and ELF banner: any bytes, any version pointer.
    #[test]
    fn kernel_release_never_panics(
        mut image in prop::collection::vec(any::<u8>(), 0..0x1200),
        hdrs in any::<bool>(),
        ptr in prop_oneof![any::<u16>(), 0u16..0x1000],
        banner in any::<bool>(),
        version in "[ -~]{0,40}",
    ) {
        if hdrs && image.len() >= 0x210 {
            image[0x202..0x206].copy_from_slice(b"HdrS");
            image[0x20e..0x210].copy_from_slice(&ptr.to_le_bytes());
        }
        if banner {
            image.extend(b"Linux version ");
            image.extend(version.as_bytes());
        }
        let (_, total, _) = allocations(|| {
            let _ = is_bzimage(&image);
            if let Some(r) = bzimage_release(&image) {
                assert!(!r.is_empty() && !r.contains(char::is_whitespace));
            }
            if let Some(r) = elf_release(&image) {
                assert!(!r.contains(' ') && !r.contains('\0'));
            }
        });
        prop_assert!(total <= image.len() + 4096);
    }

    /// `.config` text: any lines; the derived answers stay consistent.
    #[test]
    fn kernel_features_from_any_config(
        lines in prop::collection::vec(
            prop_oneof![
                "[ -~]{0,60}",
                (prop::sample::select(vec![
                    "CONFIG_ACPI", "CONFIG_VIRTIO_MMIO", "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES",
                    "CONFIG_VIRTIO_PCI", "CONFIG_VIRTIO_BLK", "# CONFIG_ACPI",
                ]), prop::sample::select(vec!["=y", "=m", "=n", " is not set", "=", "=y "]))
                    .prop_map(|(k, v)| format!("{k}{v}")),
            ],
            0..40,
        ),
    ) {
        let config = lines.join("\n");
        let f = KernelFeatures::from_config(&config);
        prop_assert!(!f.virtio_mmio_on_cmdline() || !f.acpi);
        prop_assert_eq!(f.unusable().is_none(), (f.acpi || f.virtio_mmio_cmdline) && f.builtin_virtio);
    }
}

/// Inputs that once failed, kept as plain tests (run by CI and once by
/// `scripts/fuzz`).
mod regressions {
    use super::*;

    /// Before the limits, every LZ4 magic number followed by a plausible
    /// block cost a fresh 8 MiB buffer and a full decompression: 4,000
    /// candidates in 96 KiB of file allocated 31 GiB.
    #[test]
    fn many_candidates_share_one_block_buffer() {
        let c = lz4_flex::block::compress(&[0u8; 64]);
        let mut image = Vec::new();
        for _ in 0..4000 {
            image.extend(LZ4_MAGIC);
            image.extend((c.len() as u32).to_le_bytes());
            image.extend(&c);
        }
        let (r, total, largest) = allocations(|| extract(&image));
        assert!(r.is_err());
        assert!(largest <= BLOCK, "{largest}");
        assert!(total <= extract_bound(image.len(), 256 << 20), "{total}");
    }

    /// An ELF start then blocks that inflate a thousand times: the output
    /// stops at the limit.
    #[test]
    fn an_lz4_bomb_stops_at_the_output_limit() {
        // Full 8 MiB blocks of zeros (about 32 KiB each compressed).
        let mut first = ELF_MAGIC.to_vec();
        first.resize(BLOCK, 0);
        let mut image = LZ4_MAGIC.to_vec();
        image.extend(block_bytes(&first));
        let zeros = block_bytes(&vec![0u8; BLOCK]);
        for _ in 0..16 {
            image.extend(&zeros);
        }
        let limits = ExtractLimits {
            max_output: 40 << 20,
            ..Default::default()
        };
        let (r, total, _) = allocations(|| extract_within(&image, limits));
        assert!(r.unwrap_err().contains("inflates past 40 MiB"));
        assert!(total <= extract_bound(image.len(), 40 << 20), "{total}");
    }
}

proptest! {
    // Each case may compress and inflate a few 8 MiB blocks (unoptimised).
    // 24 by default; scripts/fuzz's PROPTEST_CASES for long runs.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24)
    ))]

    /// A well-formed payload after any prefix without a magic number is
    /// found, whole, whatever follows its trailer: every block but the
    /// last holds 8 MiB, as in the legacy format, and the trailer (the
    /// original size, then anything) is never taken for a block.
    #[test]
    fn vmlinux_extract_finds_the_elf_after_any_prefix(
        prefix in prop::collection::vec(any::<u8>(), 0..512),
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..2048), 1..4),
        trailer in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        prop_assume!(!prefix.windows(4).any(|w| w == LZ4_MAGIC));
        let mut elf: Vec<u8> = Vec::new();
        let mut image = prefix.clone();
        image.extend(LZ4_MAGIC);
        for (i, c) in chunks.iter().enumerate() {
            let mut raw = if i == 0 { ELF_MAGIC.to_vec() } else { Vec::new() };
            raw.extend(c);
            if i + 1 < chunks.len() {
                // A full block: the chunk repeated to 8 MiB.
                raw = raw.iter().copied().cycle().take(BLOCK).collect();
            }
            elf.extend(&raw);
            image.extend(block_bytes(&raw));
        }
        // The trailer: the original size, then whatever follows. (A magic
        // number across the prefix's end would be a candidate of its own,
        // which fails and is skipped.)
        image.extend((elf.len() as u32).to_le_bytes());
        image.extend(&trailer);
        let (r, total, _) = allocations(|| extract(&image));
        match r {
            Ok(got) => prop_assert!(got == elf, "{} bytes, not the {} expected", got.len(), elf.len()),
            Err(e) => prop_assert!(false, "not found: {}", e),
        }
        prop_assert!(total <= extract_bound(image.len(), 256 << 20));
    }
}

// ---------------------------------------------------------------------------
// The one cpio reader (initramfs files read off a guest's volume).

/// An archive of `files` written by drydock's writer, then damaged.
fn cpio_archive(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    use drydock_images::cpio::{CpioWriter, EntryKind};
    let mut w = CpioWriter::new(Vec::new());
    for (name, data) in files {
        w.add(name, 0o644, EntryKind::File(data)).unwrap();
    }
    w.finish().unwrap()
}

proptest! {
    /// What the writer writes, the reader reads back, entry for entry; the
    /// rewrite that keeps everything changes nothing; and whatever is done
    /// to the bytes (cut, overwritten, any noise), reading, rewriting and
    /// checking an initrd end in entries or an error, never a panic, and
    /// never allocate more than the archive's size (plus 512 bytes of
    /// padding) per copy.
    #[test]
    fn the_cpio_reader_reads_what_the_writer_wrote_and_survives_any_damage(
        files in prop::collection::vec(("[a-z]{1,12}(/[a-z]{1,8}){0,2}", prop::collection::vec(any::<u8>(), 0..300)), 0..8),
        cut in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        noise in prop::collection::vec(any::<u8>(), 0..16),
        junk in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        use drydock_images::cpio::{entries, rewrite, Rewrite};
        let archive = cpio_archive(&files);
        let read: Vec<_> = entries(&archive, 0).collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(read.len(), files.len() + 1);
        prop_assert!(read.last().unwrap().is_trailer());
        for (e, (name, data)) in read.iter().zip(&files) {
            prop_assert_eq!(e.name, name.as_bytes());
            prop_assert_eq!(e.data, data.as_slice());
            prop_assert!(e.is_file());
        }
        prop_assert_eq!(rewrite(&archive, |_, _| Rewrite::Keep).unwrap(), archive.clone());

        let mut damaged = archive[..cut.index(archive.len() + 1)].to_vec();
        if !damaged.is_empty() {
            let from = at.index(damaged.len());
            for (i, b) in noise.iter().enumerate() {
                if let Some(x) = damaged.get_mut(from + i) {
                    *x = *b;
                }
            }
        }
        for input in [&damaged, &junk] {
            let (n, _, largest) = allocations(|| entries(input, 0).take(10_000).count());
            prop_assert!(n <= input.len() / 110 + 1);
            // Nothing but an error's message: entries are views of the input.
            prop_assert!(largest <= 256, "the reader allocated {} bytes at once", largest);
            let (_, _, largest) = allocations(|| rewrite(input, |_, _| Rewrite::Keep));
            prop_assert!(largest <= input.len() + 512 + 256, "{} for {} bytes", largest, input.len());
            let _ = drydock_images::boot_volume::check_initrd(input);
        }
    }
}

// ---------------------------------------------------------------------------
// The boot configuration a guest writes on its root volume
// (/boot/extlinux/extlinux.conf, up to MAX_CONFIG_BYTES).

proptest! {
    /// Any text, and any mix of the keywords with hostile values: parsing
    /// ends in a configuration within the limits or an error, never a
    /// panic; every entry's names and command line are bounded, and the
    /// boot order names only entries the file has.
    #[test]
    fn the_boot_configuration_parser_bounds_whatever_the_guest_wrote(
        noise in "\\PC{0,400}",
        lines in prop::collection::vec(
            (prop::sample::select(vec!["DEFAULT", "LABEL", "KERNEL", "LINUX", "INITRD", "APPEND", "TIMEOUT", "PROMPT", "MENU", "default", "  label", "#"]),
             prop_oneof!["[ -~]{0,300}", "(/boot/|boot/|/|\\.\\./|/boot/\\.\\./)[a-z./-]{0,40}"]),
            0..60),
    ) {
        use drydock_images::boot_config::{BootConfig, MAX_APPEND, MAX_ENTRIES};
        let structured: String = lines.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
        for text in [noise.as_str(), structured.as_str()] {
            if let Ok(config) = BootConfig::parse(text) {
                let order = config.boot_order();
                prop_assert!(order.len() <= MAX_ENTRIES);
                for e in order {
                    prop_assert!(e.append.len() <= MAX_APPEND);
                    prop_assert!(config.entry(&e.label).is_some());
                    for path in [&e.kernel, &e.initrd].into_iter().flatten() {
                        prop_assert!(path.starts_with("/boot/") && !path.contains("/../"), "{}", path);
                    }
                }
            }
        }
    }
}
