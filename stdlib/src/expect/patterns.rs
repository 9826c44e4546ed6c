//! What `expect` looks for: exact strings or regexes, combined into one
//! leftmost-first automaton so a single pass finds the earliest match in
//! the stream (ties go to the pattern listed first).

use regex::bytes::{Regex, RegexBuilder};

/// One pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Exact(String),
    Regex(String),
}

/// A match in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Index of the pattern that matched.
    pub pattern: usize,
    pub start: usize,
    pub end: usize,
    /// The pattern's own capture groups (1..), `None` when a group did not take part.
    pub captures: Vec<Option<String>>,
}

/// Compiled patterns.
#[derive(Debug, Clone)]
pub struct PatternSet {
    combined: Regex,
    each: Vec<Regex>,
    names: Vec<String>,
}

impl PatternSet {
    /// Compiles `patterns`; a bad regex is an error naming it.
    pub fn new(patterns: &[Pattern]) -> Result<Self, String> {
        if patterns.is_empty() {
            return Err("expect needs at least one pattern".into());
        }
        let mut alternatives = Vec::new();
        let mut each = Vec::new();
        let mut names = Vec::new();
        for (i, p) in patterns.iter().enumerate() {
            let (source, name) = match p {
                Pattern::Exact(s) => (regex::escape(s), format!("{s:?}")),
                Pattern::Regex(r) => (r.clone(), format!("/{r}/")),
            };
            let single = RegexBuilder::new(&source)
                .multi_line(true)
                .build()
                .map_err(|e| format!("pattern {name} is not a valid regex: {e}"))?;
            alternatives.push(format!("(?P<p{i}>{source})"));
            each.push(single);
            names.push(name);
        }
        let combined = RegexBuilder::new(&alternatives.join("|"))
            .multi_line(true)
            .size_limit(64 << 20)
            .build()
            .map_err(|e| format!("patterns cannot be combined: {e}"))?;
        Ok(Self {
            combined,
            each,
            names,
        })
    }

    /// How patterns are shown in messages.
    pub fn describe(&self) -> String {
        self.names.join(", ")
    }

    pub fn len(&self) -> usize {
        self.each.len()
    }

    pub fn is_empty(&self) -> bool {
        self.each.is_empty()
    }

    /// The earliest match in `hay` at or after `from`.
    pub fn find_from(&self, hay: &[u8], from: usize) -> Option<Found> {
        let m = self.combined.find_at(hay, from)?;
        let caps = self.combined.captures_at(hay, m.start())?;
        let pattern = (0..self.each.len()).find(|i| caps.name(&format!("p{i}")).is_some())?;
        let own = self.each[pattern].captures(&hay[m.start()..m.end()]);
        let captures = match own {
            Some(c) => (1..c.len())
                .map(|g| {
                    c.get(g)
                        .map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned())
                })
                .collect(),
            None => Vec::new(),
        };
        Some(Found {
            pattern,
            start: m.start(),
            end: m.end(),
            captures,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earliest_match_wins_and_ties_go_to_the_first_pattern() {
        let set = PatternSet::new(&[
            Pattern::Exact("login:".into()),
            Pattern::Regex(r"(\w+)@(\w+)".into()),
        ])
        .unwrap();
        let f = set.find_from(b"welcome root@box then login:", 0).unwrap();
        assert_eq!(f.pattern, 1);
        assert_eq!(
            f.captures,
            vec![Some("root".to_string()), Some("box".to_string())]
        );
        let tie =
            PatternSet::new(&[Pattern::Exact("abc".into()), Pattern::Regex("a.c".into())]).unwrap();
        assert_eq!(tie.find_from(b"xxabc", 0).unwrap().pattern, 0);
    }

    #[test]
    fn exact_patterns_are_not_regexes_and_bad_regexes_are_named() {
        let set = PatternSet::new(&[Pattern::Exact("a.b(".into())]).unwrap();
        assert!(set.find_from(b"axb(", 0).is_none());
        assert!(set.find_from(b"a.b(", 0).is_some());
        let err = PatternSet::new(&[Pattern::Regex("(".into())]).unwrap_err();
        assert!(err.contains("/(/"), "{err}");
    }
}
