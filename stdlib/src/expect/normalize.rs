//! Cleans a terminal byte stream for matching: removes ANSI escape
//! sequences (CSI, OSC, two-byte escapes), even when split across reads,
//! and turns `\r\n` into `\n`.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Text,
    Escape,
    EscapeIntermediate,
    Csi,
    Osc,
    OscEscape,
    CarriageReturn,
}

/// A streaming normalizer.
#[derive(Debug, Clone)]
pub struct Normalizer {
    state: State,
}

impl Default for Normalizer {
    fn default() -> Self {
        Self { state: State::Text }
    }
}

impl Normalizer {
    /// Appends the cleaned form of `input` to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut rest = input;
        while !rest.is_empty() {
            if self.state == State::Text {
                // Fast path: copy everything up to the next ESC or CR.
                let stop = memchr::memchr2(0x1b, b'\r', rest).unwrap_or(rest.len());
                out.extend_from_slice(&rest[..stop]);
                rest = &rest[stop..];
                if rest.is_empty() {
                    break;
                }
            }
            let b = rest[0];
            rest = &rest[1..];
            self.state = match (self.state, b) {
                (State::Text, 0x1b) => State::Escape,
                (State::Text, b'\r') => State::CarriageReturn,
                (State::Text, _) => {
                    out.push(b);
                    State::Text
                }
                (State::CarriageReturn, b'\n') => {
                    out.push(b'\n');
                    State::Text
                }
                (State::CarriageReturn, 0x1b) => {
                    out.push(b'\r');
                    State::Escape
                }
                (State::CarriageReturn, b'\r') => {
                    out.push(b'\r');
                    State::CarriageReturn
                }
                (State::CarriageReturn, _) => {
                    out.push(b'\r');
                    out.push(b);
                    State::Text
                }
                (State::Escape, b'[') => State::Csi,
                (State::Escape, b']') => State::Osc,
                (State::Escape, 0x20..=0x2f) => State::EscapeIntermediate,
                (State::Escape, _) => State::Text,
                (State::EscapeIntermediate, 0x20..=0x2f) => State::EscapeIntermediate,
                (State::EscapeIntermediate, _) => State::Text,
                (State::Csi, 0x40..=0x7e) => State::Text,
                (State::Csi, _) => State::Csi,
                (State::Osc, 0x07) => State::Text,
                (State::Osc, 0x1b) => State::OscEscape,
                (State::Osc, _) => State::Osc,
                (State::OscEscape, _) => State::Text,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(chunks: &[&[u8]]) -> String {
        let mut n = Normalizer::default();
        let mut out = Vec::new();
        for c in chunks {
            n.push(c, &mut out);
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strips_escapes_even_split_across_reads() {
        assert_eq!(clean(&[b"\x1b[1;32mok\x1b[0m done"]), "ok done");
        assert_eq!(clean(&[b"\x1b[1;", b"32mok\x1b", b"[0m"]), "ok");
        assert_eq!(clean(&[b"\x1b]0;title\x07prompt# "]), "prompt# ");
        assert_eq!(clean(&[b"a\x1b(Bb"]), "ab");
    }

    #[test]
    fn crlf_becomes_lf_even_split() {
        assert_eq!(
            clean(&[b"one\r\ntwo\r", b"\nthree\rx"]),
            "one\ntwo\nthree\rx"
        );
    }
}
