//! `:save FILE`: a session's successful entries as a runbook skeleton.
//! The resource ids it used become parameters (defaulting to those ids),
//! entries that changed something become `step`s (journaled, replayed on
//! resume), the rest (reads, handles like `console::open`) stay plain
//! statements so later steps can use their variables.

use std::collections::BTreeMap;

use crate::lexer::{self, Kind};
use crate::session::Evaluated;

/// Calls that change something outside the script.
const CHANGING: &[&str] = &[
    "instance::launch",
    "instance::start",
    "instance::stop",
    "instance::reboot",
    "instance::terminate",
    "instance::force_stop",
    "instance::modify_type",
    "volume::create",
    "volume::attach",
    "volume::attach_root",
    "volume::detach",
    "volume::force_detach",
    "volume::delete",
    "snapshot::create",
    "image::create",
    "write_file",
    "append_file",
    "shell",
    "shell_result",
    "exec",
    "exec_result",
    // methods of console/serial/SSH sessions
    "send",
    "send_line",
    "send_key",
    "login",
    "run",
    "upload",
    "download",
];

/// Whether an entry calls something that changes state.
pub fn changes_something(src: &str) -> bool {
    let toks: Vec<_> = lexer::tokens(src)
        .into_iter()
        .filter(|t| t.kind != Kind::Space && t.kind != Kind::Comment)
        .collect();
    for (i, t) in toks.iter().enumerate() {
        if t.kind != Kind::Ident {
            continue;
        }
        let called = toks.get(i + 1).is_some_and(|n| &src[n.start..n.end] == "(");
        if !called {
            continue;
        }
        let name = &src[t.start..t.end];
        let qualified = if i >= 3 && toks[i - 3].kind == Kind::Module {
            format!("{}::{name}", &src[toks[i - 3].start..toks[i - 3].end])
        } else {
            name.to_string()
        };
        if CHANGING.contains(&qualified.as_str()) {
            return true;
        }
    }
    false
}

fn param_kind(id: &str) -> Option<(&'static str, &'static str)> {
    let (kind, hex) = if let Some(h) = id.strip_prefix("i-") {
        (("instance", "instance"), h)
    } else if let Some(h) = id.strip_prefix("vol-") {
        (("volume", "volume"), h)
    } else if let Some(h) = id.strip_prefix("snap-") {
        (("snapshot", "snapshot"), h)
    } else if let Some(h) = id.strip_prefix("img-") {
        (("image", "image"), h)
    } else {
        return None;
    };
    (hex.len() >= 8 && hex.len() <= 17 && hex.chars().all(|c| c.is_ascii_hexdigit()))
        .then_some(kind)
}

/// Replaces string literals holding resource ids by `params.NAME`,
/// naming each id once (instance, instance_2, volume…).
fn parameterize(src: &str, names: &mut BTreeMap<String, (String, &'static str)>) -> String {
    let mut out = String::new();
    let mut last = 0;
    for t in lexer::tokens(src) {
        if t.kind != Kind::Str {
            continue;
        }
        let lit = &src[t.start..t.end];
        let inner = lit.trim_matches(|c| c == '"' || c == '\'');
        let Some((base, ty)) = param_kind(inner) else {
            continue;
        };
        let next = names.len();
        let count = names.values().filter(|(_, t)| *t == ty).count();
        let name = names
            .entry(inner.to_string())
            .or_insert_with(|| {
                let _ = next;
                if count == 0 {
                    (base.to_string(), ty)
                } else {
                    (format!("{base}_{}", count + 1), ty)
                }
            })
            .0
            .clone();
        out.push_str(&src[last..t.start]);
        out.push_str(&format!("params.{name}"));
        last = t.end;
    }
    out.push_str(&src[last..]);
    out
}

fn step_name(src: &str) -> String {
    let one_line: String = src.split_whitespace().collect::<Vec<_>>().join(" ");
    let short: String = one_line.chars().take(60).collect();
    let short = if one_line.chars().count() > 60 {
        format!("{short}…")
    } else {
        short
    };
    short.replace('\\', "\\\\").replace('"', "'")
}

/// `let NAME = EXPR;` → (NAME, EXPR).
fn split_let(src: &str) -> Option<(String, String)> {
    let s = src.trim().trim_end_matches(';').trim();
    let rest = s.strip_prefix("let ")?;
    let (name, expr) = rest.split_once('=')?;
    let name = name.trim();
    if name.is_empty() || !name.chars().all(|c| c == '_' || c.is_alphanumeric()) {
        return None;
    }
    let expr = expr.trim();
    // One statement only: no `;` outside strings.
    let more = lexer::tokens(expr)
        .iter()
        .any(|t| t.kind == Kind::Punct && &expr[t.start..t.end] == ";");
    (!more && !expr.is_empty() && !expr.starts_with('='))
        .then(|| (name.to_string(), expr.to_string()))
}

/// The runbook text for `entries`.
pub fn runbook(name: &str, who: &str, entries: &[Evaluated]) -> String {
    let mut names: BTreeMap<String, (String, &'static str)> = BTreeMap::new();
    let mut body = String::new();
    for e in entries {
        let mut text = e.text.trim().to_string();
        if text.is_empty() {
            continue;
        }
        if let Some(f) = &e.focus {
            text = text.replace("target()", &format!("\"{f}\""));
        }
        let text = parameterize(&text, &mut names);
        if changes_something(&text) {
            let label = step_name(&text);
            match split_let(&text) {
                Some((var, expr)) => {
                    body.push_str(&format!("let {var} = step(\"{label}\", || {expr});\n"))
                }
                None => {
                    let inner = text.trim_end_matches(';');
                    body.push_str(&format!("step(\"{label}\", || {{\n    {inner};\n}});\n"));
                }
            }
        } else {
            body.push_str(&text);
            if !text.ends_with(';') && !text.ends_with('}') {
                body.push(';');
            }
            body.push('\n');
        }
    }
    // Ids in order of the names given.
    let mut params: Vec<(&String, &(String, &str))> = names.iter().collect();
    params.sort_by(|a, b| a.1 .0.cmp(&b.1 .0));
    let mut meta = String::new();
    meta.push_str("runbook(#{\n");
    meta.push_str(&format!("    name: \"{name}\",\n"));
    meta.push_str(&format!(
        "    description: \"Saved from a drydock repl session by {}\",\n",
        who.replace('"', "'")
    ));
    meta.push_str("    params: #{\n");
    for (id, (pname, ty)) in params {
        meta.push_str(&format!(
            "        {pname}: #{{ type: \"{ty}\", default_value: \"{id}\", description: \"the {ty} the session worked on\" }},\n"
        ));
    }
    meta.push_str("    },\n});\n\n");
    format!(
        "// Written by `drydock repl` (:save). Entries that changed something are\n// steps (journaled, replayed on resume); review before running it again.\n{meta}{body}"
    )
}

/// A runbook name from a file name: `fix-disk.rhai` → `fix-disk`.
pub fn name_from_path(path: &std::path::Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "repl-session".into());
    let clean: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if clean.is_empty() {
        "repl-session".into()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(text: &str, focus: Option<&str>) -> Evaluated {
        Evaluated {
            text: text.into(),
            focus: focus.map(str::to_string),
        }
    }

    #[test]
    fn skeleton_with_params_and_steps() {
        let rb = runbook(
            "fix",
            "root",
            &[
                ev(r#"let d = instance::describe("i-0123456789abcdef");"#, None),
                ev(r#"instance::stop(target())"#, Some("i-0123456789abcdef")),
                ev(r#"let v = volume::detach("vol-00000000aa");"#, None),
                ev(r#"write_file("/tmp/x", "i-0123456789abcdef")"#, None),
                ev("let n = 1 + 2;", None),
            ],
        );
        assert!(
            rb.contains(r#"instance: #{ type: "instance", default_value: "i-0123456789abcdef""#),
            "{rb}"
        );
        assert!(
            rb.contains(r#"volume: #{ type: "volume", default_value: "vol-00000000aa""#),
            "{rb}"
        );
        assert!(
            rb.contains("let d = instance::describe(params.instance);"),
            "{rb}"
        );
        assert!(rb.contains("step(\"instance::stop(params.instance)\", || {\n    instance::stop(params.instance);\n});"), "{rb}");
        assert!(rb.contains("let v = step(\"let v = volume::detach(params.volume);\", || volume::detach(params.volume));"), "{rb}");
        assert!(rb.contains("let n = 1 + 2;\n"), "{rb}");
        assert!(changes_something("c.send_line(\"x\")"));
        assert!(!changes_something("\"shell(x)\""));
    }
}
