//! A small, forgiving Rhai tokenizer for what the REPL does per keystroke:
//! highlighting, finding the word under the cursor and whether it sits in
//! a string or a comment. It never fails: unfinished strings and comments
//! run to the end of the input.

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Keyword,
    /// A name; `module` when followed by `::`.
    Ident,
    Module,
    /// A registered function name in a call position.
    Number,
    Str,
    Comment,
    /// `:command` at the start of an entry.
    Command,
    Punct,
    Space,
}

/// One token: its kind and its byte range in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

const KEYWORDS: &[&str] = &[
    "let",
    "const",
    "if",
    "else",
    "switch",
    "do",
    "while",
    "loop",
    "until",
    "for",
    "in",
    "break",
    "continue",
    "return",
    "throw",
    "try",
    "catch",
    "fn",
    "private",
    "import",
    "export",
    "as",
    "true",
    "false",
    "this",
    "global",
    "is_def_var",
    "is_def_fn",
    "Fn",
    "call",
    "curry",
];

/// Whether `word` is a Rhai keyword (or literal).
pub fn is_keyword(word: &str) -> bool {
    KEYWORDS.contains(&word)
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_ident_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// Splits `src` into tokens covering it entirely.
pub fn tokens(src: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let bytes = src.as_bytes();
    let mut chars = src.char_indices().peekable();
    let command = src.trim_start().starts_with(':');
    if command {
        out.push(Token {
            kind: Kind::Command,
            start: 0,
            end: src.len(),
        });
        return out;
    }
    while let Some((start, c)) = chars.next() {
        let kind;
        let mut end = start + c.len_utf8();
        if c.is_whitespace() {
            while let Some(&(i, c)) = chars.peek() {
                if !c.is_whitespace() {
                    break;
                }
                end = i + c.len_utf8();
                chars.next();
            }
            kind = Kind::Space;
        } else if c == '/' && bytes.get(start + 1) == Some(&b'/') {
            end = src[start..].find('\n').map_or(src.len(), |n| start + n);
            while chars.peek().is_some_and(|&(i, _)| i < end) {
                chars.next();
            }
            kind = Kind::Comment;
        } else if c == '/' && bytes.get(start + 1) == Some(&b'*') {
            end = src[start + 2..]
                .find("*/")
                .map_or(src.len(), |n| start + 2 + n + 2);
            while chars.peek().is_some_and(|&(i, _)| i < end) {
                chars.next();
            }
            kind = Kind::Comment;
        } else if c == '"' || c == '`' || c == '\'' {
            let mut escaped = false;
            end = src.len();
            for (i, d) in chars.by_ref() {
                if escaped {
                    escaped = false;
                } else if d == '\\' && c != '`' {
                    escaped = true;
                } else if d == c {
                    end = i + d.len_utf8();
                    break;
                }
            }
            kind = Kind::Str;
        } else if c.is_ascii_digit() {
            while let Some(&(i, d)) = chars.peek() {
                if !(d.is_ascii_alphanumeric() || d == '_' || d == '.') {
                    break;
                }
                end = i + d.len_utf8();
                chars.next();
            }
            kind = Kind::Number;
        } else if is_ident_start(c) {
            while let Some(&(i, d)) = chars.peek() {
                if !is_ident_char(d) {
                    break;
                }
                end = i + d.len_utf8();
                chars.next();
            }
            let word = &src[start..end];
            kind = if src[end..].starts_with("::") {
                Kind::Module
            } else if is_keyword(word) {
                Kind::Keyword
            } else {
                Kind::Ident
            };
        } else {
            kind = Kind::Punct;
        }
        out.push(Token { kind, start, end });
    }
    out
}

/// Whether byte offset `pos` is inside a string literal or a comment
/// (an unfinished one counts).
pub fn in_string_or_comment(src: &str, pos: usize) -> Option<Kind> {
    tokens(&src[..pos])
        .last()
        .filter(|t| {
            matches!(t.kind, Kind::Str | Kind::Comment)
                && t.end == pos
                && !closed(&src[t.start..t.end], t.kind)
        })
        .map(|t| t.kind)
}

fn closed(tok: &str, kind: Kind) -> bool {
    match kind {
        Kind::Str => {
            let q = tok.chars().next().unwrap_or('"');
            tok.len() >= 2 && tok.ends_with(q) && !tok.ends_with(&format!("\\{q}"))
        }
        Kind::Comment => tok.starts_with("/*") && tok.len() >= 4 && tok.ends_with("*/"),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<(Kind, &str)> {
        tokens(src)
            .into_iter()
            .filter(|t| t.kind != Kind::Space)
            .map(|t| (t.kind, &src[t.start..t.end]))
            .collect()
    }

    #[test]
    fn rhai_tokens() {
        assert_eq!(
            kinds(r#"let c = console::open("i-1"); // hi"#),
            vec![
                (Kind::Keyword, "let"),
                (Kind::Ident, "c"),
                (Kind::Punct, "="),
                (Kind::Module, "console"),
                (Kind::Punct, ":"),
                (Kind::Punct, ":"),
                (Kind::Ident, "open"),
                (Kind::Punct, "("),
                (Kind::Str, "\"i-1\""),
                (Kind::Punct, ")"),
                (Kind::Punct, ";"),
                (Kind::Comment, "// hi"),
            ]
        );
        assert_eq!(kinds("x = 1_000 + 2.5"), {
            vec![
                (Kind::Ident, "x"),
                (Kind::Punct, "="),
                (Kind::Number, "1_000"),
                (Kind::Punct, "+"),
                (Kind::Number, "2.5"),
            ]
        });
        assert_eq!(kinds(":console i-1"), vec![(Kind::Command, ":console i-1")]);
    }

    #[test]
    fn open_strings_and_comments() {
        assert_eq!(in_string_or_comment(r#"open("i-"#, 8), Some(Kind::Str));
        assert_eq!(in_string_or_comment(r#"open("i-1")"#, 11), None);
        assert_eq!(in_string_or_comment(r#"x /* a"#, 6), Some(Kind::Comment));
        assert_eq!(in_string_or_comment(r#"x // a"#, 6), Some(Kind::Comment));
        assert_eq!(in_string_or_comment(r#""a\"b"#, 5), Some(Kind::Str));
        assert_eq!(in_string_or_comment("é \"", 4), Some(Kind::Str));
    }
}
