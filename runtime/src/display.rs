//! Text from outside (approver comments, messages, names, guest output)
//! made safe to show on a terminal or in one line of a table.

use std::borrow::Cow;
use std::time::{Duration, UNIX_EPOCH};

/// Escapes control characters (newlines, escape sequences, bidi
/// overrides) so that a value cannot forge lines or repaint a terminal:
/// `\n` becomes the two characters `\n`, ESC becomes `\x1b`.
pub fn sanitize(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                let n = c as u32;
                if n < 0x100 {
                    out.push_str(&format!("\\x{n:02x}"));
                } else {
                    out.push_str(&format!("\\u{{{n:x}}}"));
                }
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        // Bidirectional overrides and isolates reorder what follows them.
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
}

/// A timestamp (ms since the epoch) in RFC 3339, to the second.
pub fn timestamp(ms: i64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_lines_and_escapes_are_shown_not_obeyed() {
        assert_eq!(sanitize("plain text"), "plain text");
        assert_eq!(
            sanitize("ok\napproved by root\x1b[2K"),
            "ok\\napproved by root\\x1b[2K"
        );
        assert_eq!(sanitize("a\u{202e}b"), "a\\u{202e}b");
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
    }
}
