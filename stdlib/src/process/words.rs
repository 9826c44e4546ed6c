//! Words: a string as one POSIX shell word, an argument shown as a word
//! people can read (and paste), text cut to a length.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// `s` as one single-quoted POSIX shell word: `'` becomes `'\''`; nothing
/// inside single quotes is special to the shell (`$`, backquotes, `\`,
/// newlines, globs). Fails on a NUL byte, which no shell word can hold.
pub fn shell_quote(s: &str) -> Result<String, String> {
    if s.contains('\0') {
        return Err(format!(
            "cannot quote a string that contains a NUL byte: {}",
            truncate(&format!("{s:?}"), 200)
        ));
    }
    let mut q = String::with_capacity(s.len() + 2);
    q.push('\'');
    for c in s.chars() {
        if c == '\'' {
            q.push_str("'\\''");
        } else {
            q.push(c);
        }
    }
    q.push('\'');
    Ok(q)
}

/// A word for messages: bare when it is plainly safe, quoted otherwise, with
/// control characters and invalid UTF-8 escaped so a message stays one line.
pub(super) fn display_word(w: &OsStr) -> String {
    let bytes = w.as_bytes();
    let plain = !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./_-".contains(b));
    if plain {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.chars().any(char::is_control) => {
            shell_quote(s).unwrap_or_else(|_| format!("{s:?}"))
        }
        _ => {
            // $'…' with escapes, as bash prints such words.
            let mut out = String::from("$'");
            for chunk in bytes.utf8_chunks() {
                for c in chunk.valid().chars() {
                    match c {
                        '\'' => out.push_str("\\'"),
                        '\\' => out.push_str("\\\\"),
                        '\n' => out.push_str("\\n"),
                        '\t' => out.push_str("\\t"),
                        c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
                        c => out.push(c),
                    }
                }
                for b in chunk.invalid() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            }
            out.push('\'');
            out
        }
    }
}

pub(super) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}
