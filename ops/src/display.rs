//! Text from outside — runbook names, messages and printed lines, step
//! outputs and errors, approvers' comments, guest output, file names —
//! made safe to show: every front end (the CLI, the REPL, the web API's
//! text) shows such text through these functions, so none of them can be
//! made to print an escape sequence that repaints a terminal or a newline
//! that forges a line.
//!
//! The escaping itself is [`drydock_runtime::display::sanitize`] (the
//! runtime uses it for its own messages too); this module is what the
//! front ends call.

use std::fmt::Write as _;
use std::path::Path;

use drydock_runtime::display::sanitize;

/// One line of text as it may be shown: control characters (newlines,
/// escape sequences, bidi overrides) escaped, `\n` as the two characters
/// `\n`, ESC as `\x1b`.
pub fn shown(text: &str) -> String {
    sanitize(text).into_owned()
}

/// Text of several lines (a value printed in the REPL, a runbook's
/// output) as it may be shown: line breaks and tabs kept (a `\r` only
/// right before a `\n`), every other control character escaped as by
/// [`shown`].
pub fn shown_lines(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut lines = text.split('\n').peekable();
    while let Some(line) = lines.next() {
        let last = lines.peek().is_none();
        let (body, cr) = match line.strip_suffix('\r') {
            Some(body) if !last => (body, true),
            _ => (line, false),
        };
        for (i, part) in body.split('\t').enumerate() {
            if i > 0 {
                out.push('\t');
            }
            out.push_str(&sanitize(part));
        }
        if cr {
            out.push('\r');
        }
        if !last {
            out.push('\n');
        }
    }
    out
}

/// Bytes that may not be UTF-8 (a file name, raw guest output) as one
/// line: valid text as by [`shown`], each byte that is not part of valid
/// UTF-8 as `\xNN` (so two different names never look alike).
pub fn shown_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(&sanitize(chunk.valid()));
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// A path (a runbook file, a directory) as one line, as by [`shown_bytes`].
pub fn shown_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    shown_bytes(path.as_os_str().as_bytes())
}

/// Text cut to at most `max` characters for a table cell: line breaks
/// become spaces, other control characters are escaped as by [`shown`],
/// and a cut ends in `…`. Only the head of a long text is looked at, so a
/// megabyte of output costs no more than a short one.
pub fn clip(text: &str, max: usize) -> String {
    if max == 0 {
        return String::new();
    }
    // Each character is shown as one or more: the first max + 1 decide.
    let head: String = text
        .chars()
        .take(max + 1)
        .map(|c| if c == '\n' { ' ' } else { c })
        .collect();
    let one_line = shown(&head);
    if one_line.chars().count() <= max {
        one_line
    } else {
        let cut: String = one_line.chars().take(max - 1).collect();
        format!("{cut}…")
    }
}

/// How long ago a timestamp (ms since the epoch) was, roughly: `5s ago`,
/// `3m ago`, `2h ago`, `4d ago` (a time in the future is `0s ago`).
pub fn ago(ms: i64, now_ms: i64) -> String {
    let secs = (now_ms - ms).max(0) / 1000;
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_control(s: &str) -> bool {
        !s.chars().any(|c| c.is_control())
    }

    #[test]
    fn escape_sequences_and_forged_lines_are_shown_not_obeyed() {
        assert_eq!(shown("plain"), "plain");
        let evil = "ok\napproved by root\x1b[2K\x1b]0;title\x07\r";
        let s = shown(evil);
        assert_eq!(s, "ok\\napproved by root\\x1b[2K\\x1b]0;title\\x07\\r");
        assert!(no_control(&s));
        // Bidi overrides reorder what follows them.
        assert_eq!(shown("a\u{202e}b\u{2066}c"), "a\\u{202e}b\\u{2066}c");
        // C1 controls (CSI as one character) too.
        assert_eq!(shown("x\u{9b}2J"), "x\\x9b2J");
    }

    #[test]
    fn lines_keep_their_breaks_but_not_their_escapes() {
        assert_eq!(shown_lines("line\n"), "line\n");
        assert_eq!(shown_lines("a\tb\r\nc"), "a\tb\r\nc");
        assert_eq!(
            shown_lines("red \x1b[31mtext\x1b[0m\nnext"),
            "red \\x1b[31mtext\\x1b[0m\nnext"
        );
        // A bare carriage return would overwrite the line it is on.
        assert_eq!(shown_lines("safe\rforged"), "safe\\rforged");
        assert_eq!(shown_lines("end\r"), "end\\r");
        assert_eq!(shown_lines(""), "");
        assert_eq!(shown_lines("\n\n"), "\n\n");
    }

    #[test]
    fn invalid_utf8_is_shown_byte_by_byte() {
        assert_eq!(shown_bytes(b"plain"), "plain");
        assert_eq!(shown_bytes(b"caf\xc3\xa9"), "café");
        assert_eq!(shown_bytes(b"a\xffb\xc3"), "a\\xffb\\xc3");
        assert_eq!(shown_bytes(b"\xe2\x80\n\x1b[2J"), "\\xe2\\x80\\n\\x1b[2J");
        // Two names that differ only in invalid bytes do not look alike.
        assert_ne!(shown_bytes(b"f\xfe"), shown_bytes(b"f\xff"));
        use std::os::unix::ffi::OsStrExt;
        let p = Path::new(std::ffi::OsStr::from_bytes(b"/runbooks/x\xff\n.rhai"));
        assert_eq!(shown_path(p), "/runbooks/x\\xff\\n.rhai");
    }

    #[test]
    fn clip_cuts_to_the_width_and_escapes() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("exactly10!", 10), "exactly10!");
        assert_eq!(clip("one more than ten", 10), "one more …");
        assert_eq!(clip("two\nlines", 20), "two lines");
        assert_eq!(clip("esc\x1b[2J", 20), "esc\\x1b[2J");
        // An escape that makes the text longer than the cell is cut too.
        assert_eq!(clip("ab\x1b", 4), "ab\\…");
        assert_eq!(clip("été!", 3), "ét…");
        assert_eq!(clip("anything", 0), "");
        assert_eq!(clip("anything", 1), "…");
        for n in 1..12 {
            let c = clip("a\x1b[31mb\u{202e}c\nd", n);
            assert!(c.chars().count() <= n, "{n}: {c:?}");
            assert!(no_control(&c), "{n}: {c:?}");
        }
    }

    #[test]
    fn very_long_text_is_clipped_without_reading_it_all() {
        let long = "\x1b[2J".repeat(1_000_000) + "tail";
        let c = clip(&long, 60);
        assert_eq!(c.chars().count(), 60);
        assert!(c.ends_with('…') && c.starts_with("\\x1b[2J"));
        assert!(no_control(&c));
        let plain = "x".repeat(5_000_000);
        assert_eq!(clip(&plain, 70).chars().count(), 70);
        // Whole, a long text is escaped throughout.
        let s = shown(&long);
        assert!(no_control(&s) && s.ends_with("tail"));
        assert_eq!(s.len(), long.len() + 3 * 1_000_000);
    }

    #[test]
    fn ago_is_rough() {
        assert_eq!(ago(0, 5_000), "5s ago");
        assert_eq!(ago(0, 125_000), "2m ago");
        assert_eq!(ago(0, 7_200_000), "2h ago");
        assert_eq!(ago(0, 3 * 86_400_000), "3d ago");
        assert_eq!(ago(10_000, 0), "0s ago");
    }
}
