//! Masking: every secret value an execution has seen, and the forms a
//! runbook can derive from it, replaced by `****` in what it writes out
//! (the journal, transcripts, output), also across the pieces of a stream.

use std::sync::{Arc, RwLock};

use super::MASK;

/// The secret values seen so far; shared by everything that writes text
/// out of one execution or REPL session.
///
/// What is masked is not only each value as given but the forms a runbook
/// can derive from it and write out by mistake: upper and lower case,
/// base64 (standard and URL-safe, with and without padding), hex, and
/// every piece of at least [`MIN_PIECE`] characters (a `sub_string`, a
/// split). All occurrences of all forms are found in one pass and each
/// stretch they cover becomes one `****`.
#[derive(Debug, Default, Clone)]
pub struct Secrets {
    inner: Arc<RwLock<Masks>>,
}

#[derive(Debug, Default)]
struct Masks {
    values: Vec<String>,
    needles: Vec<Vec<u8>>,
    matcher: Option<aho_corasick::AhoCorasick>,
}

/// The shortest piece of a secret that is masked on its own.
pub const MIN_PIECE: usize = 6;

/// The longest secret (bytes) whose pieces are masked on their own.
pub const MAX_PIECED: usize = 256;

/// The forms of `v` that are masked.
fn derived_forms(v: &str) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    use base64::Engine;
    let mut out = vec![v.to_string(), v.to_uppercase(), v.to_lowercase()];
    for e in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        out.push(e.encode(v.as_bytes()));
    }
    let hex: String = v.bytes().map(|b| format!("{b:02x}")).collect();
    out.push(hex.to_uppercase());
    out.push(hex);
    // Pieces of passwords and tokens; not of long texts registered as
    // secrets (a user-data script), whose every six letters would mask
    // unrelated output.
    let chars: Vec<char> = v.chars().collect();
    if chars.len() > MIN_PIECE && v.len() <= MAX_PIECED && !v.contains('\n') {
        for w in chars.windows(MIN_PIECE) {
            let piece: String = w.iter().collect();
            out.push(piece.to_uppercase());
            out.push(piece.to_lowercase());
            out.push(piece);
        }
    }
    out
}

impl Masks {
    fn rebuild(&mut self) {
        let mut needles: Vec<Vec<u8>> = self
            .values
            .iter()
            .flat_map(|v| derived_forms(v))
            .filter(|n| !n.is_empty())
            .map(String::into_bytes)
            .collect();
        needles.sort();
        needles.dedup();
        self.matcher = if needles.is_empty() {
            None
        } else {
            aho_corasick::AhoCorasick::new(&needles).ok()
        };
        self.needles = needles;
    }

    /// The byte ranges of `hay` any form covers, merged.
    fn ranges(&self, hay: &[u8]) -> Vec<(usize, usize)> {
        let Some(m) = &self.matcher else {
            return Vec::new();
        };
        let mut spans: Vec<(usize, usize)> = m
            .find_overlapping_iter(hay)
            .map(|x| (x.start(), x.end()))
            .collect();
        spans.sort();
        let mut merged: Vec<(usize, usize)> = Vec::new();
        for (a, b) in spans {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        merged
    }

    fn longest(&self) -> usize {
        self.needles.iter().map(Vec::len).max().unwrap_or(0)
    }
}

fn replace_ranges(hay: &[u8], ranges: &[(usize, usize)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut at = 0;
    for (a, b) in ranges {
        out.extend_from_slice(&hay[at..*a]);
        out.extend_from_slice(MASK.as_bytes());
        at = *b;
    }
    out.extend_from_slice(&hay[at..]);
    out
}

impl Secrets {
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Masks> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a value to mask from now on (with its derived forms).
    /// Empty values are ignored.
    pub fn add(&self, value: &str) {
        if value.is_empty() {
            return;
        }
        let mut m = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let mut changed = false;
        // A secret typed at a prompt often arrives with its line ending.
        for v in [value, value.trim()] {
            if !v.is_empty() && !m.values.iter().any(|x| x == v) {
                m.values.push(v.to_string());
                changed = true;
            }
        }
        if changed {
            m.rebuild();
        }
    }

    /// Whether no secret is registered.
    pub fn is_empty(&self) -> bool {
        self.read().values.is_empty()
    }

    /// Whether `text` holds any registered secret (or a derived form).
    pub fn contains_secret(&self, text: &str) -> bool {
        self.read()
            .matcher
            .as_ref()
            .is_some_and(|m| m.is_match(text.as_bytes()))
    }

    /// `text` with every registered secret (and derived form) replaced by
    /// `****`.
    pub fn mask(&self, text: &str) -> String {
        let m = self.read();
        let ranges = m.ranges(text.as_bytes());
        if ranges.is_empty() {
            return text.to_string();
        }
        // Forms are whole UTF-8 strings, so the ranges fall on character
        // boundaries; lossy conversion is only a safeguard.
        String::from_utf8_lossy(&replace_ranges(text.as_bytes(), &ranges)).into_owned()
    }

    /// Masks every string inside a JSON value.
    pub fn mask_json(&self, value: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        if self.is_empty() {
            return value.clone();
        }
        match value {
            Value::String(s) => Value::String(self.mask(s)),
            Value::Array(a) => Value::Array(a.iter().map(|v| self.mask_json(v)).collect()),
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (self.mask(k), self.mask_json(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// Masks raw bytes (transcripts).
    pub fn mask_bytes<'a>(&self, bytes: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        let m = self.read();
        let ranges = m.ranges(bytes);
        if ranges.is_empty() {
            std::borrow::Cow::Borrowed(bytes)
        } else {
            std::borrow::Cow::Owned(replace_ranges(bytes, &ranges))
        }
    }
}

/// Masks a stream written in pieces (a transcript fed as output
/// arrives): a secret split across two pieces is masked too. It holds back
/// at most the longest form's length minus one byte until the next piece
/// or [`StreamMask::finish`].
#[derive(Debug, Default)]
pub struct StreamMask {
    carry: Vec<u8>,
}

impl StreamMask {
    /// What may be written now, masked; the rest waits.
    pub fn push(&mut self, secrets: &Secrets, chunk: &[u8]) -> Vec<u8> {
        self.carry.extend_from_slice(chunk);
        let m = secrets.read();
        let longest = m.longest();
        if longest == 0 {
            return std::mem::take(&mut self.carry);
        }
        // Every occurrence that starts before `safe` ends inside the
        // carry; one that starts later may still be completed.
        let safe = self.carry.len().saturating_sub(longest - 1);
        let ranges = m.ranges(&self.carry);
        let mut out = Vec::with_capacity(self.carry.len());
        let mut i = 0;
        let mut next = ranges.iter().peekable();
        while i < safe {
            match next.peek() {
                Some((a, b)) if *a == i => {
                    out.extend_from_slice(MASK.as_bytes());
                    i = *b;
                    next.next();
                }
                Some((a, _)) if *a < i => {
                    next.next();
                }
                _ => {
                    out.push(self.carry[i]);
                    i += 1;
                }
            }
        }
        self.carry.drain(..i.min(self.carry.len()));
        out
    }

    /// The rest at the end of the stream, masked.
    pub fn finish(&mut self, secrets: &Secrets) -> Vec<u8> {
        let rest = std::mem::take(&mut self.carry);
        secrets.mask_bytes(&rest).into_owned()
    }
}
