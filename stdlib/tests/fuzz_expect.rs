//! Property tests of the expect normaliser against arbitrary console
//! bytes: whatever a guest writes, and however the reads split it.
//! `PROPTEST_CASES` sets how many cases (CI: the default 256;
//! `scripts/fuzz` runs many more).

use drydock_stdlib::expect::normalize::Normalizer;
use proptest::prelude::*;

fn normalize_in(input: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut n = Normalizer::default();
    let mut out = Vec::new();
    let mut last = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.sort_unstable();
    for c in cuts {
        n.push(&input[last..c], &mut out);
        last = c;
    }
    n.push(&input[last..], &mut out);
    out
}

/// Bytes that look like a terminal: text, CR/LF, escapes, OSC, bell.
fn console_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            any::<u8>(),
            Just(0x1b),
            Just(b'['),
            Just(b']'),
            Just(b'\r'),
            Just(b'\n'),
            Just(0x07),
            Just(b'm'),
            Just(b';'),
        ],
        0..512,
    )
}

proptest! {
    #[test]
    fn however_reads_split_the_stream_the_result_is_the_same(
        input in console_bytes(),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        prop_assert_eq!(normalize_in(&input, &cuts), normalize_in(&input, &[]));
    }

    #[test]
    fn no_escape_character_survives_and_output_never_grows(input in console_bytes()) {
        let out = normalize_in(&input, &[]);
        prop_assert!(!out.contains(&0x1b));
        prop_assert!(out.len() <= input.len() + 1);
    }

    #[test]
    fn plain_text_passes_unchanged(text in "[ -~\n]{0,300}") {
        prop_assert_eq!(normalize_in(text.as_bytes(), &[]), text.as_bytes().to_vec());
    }
}
