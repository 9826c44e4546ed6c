//! What the line editor knows about drydock: completion of functions,
//! resource ids, runbooks and their parameters, commands and paths;
//! highlighting of Rhai. Completion never touches the disk for resources:
//! it reads a cache that a background thread refreshes, so typing never
//! waits on the host's database.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use drydock_runtime::identity::Identity;
use drydock_runtime::journal::{ApprovalState, ExecutionFilter};
use drydock_runtime::{Executor, Journal};
use nu_ansi_term::{Color, Style};
use reedline::{Completer, CompletionResult, Highlighter, Span, StyledText, Suggestion};

use crate::functions::{constants, FunctionIndex};
use crate::lexer::{self, Kind};

/// A resource of the host, for completion.
#[derive(Debug, Clone)]
pub struct Resource {
    pub id: String,
    pub description: String,
}

/// A runbook and its parameters, for `:run` completion.
#[derive(Debug, Clone)]
pub struct RunbookInfo {
    pub name: String,
    pub description: String,
    /// (name, type, description)
    pub params: Vec<(String, String, String)>,
}

/// What completion and the prompt read; refreshed in the background.
#[derive(Default)]
pub struct Shared {
    pub resources: RwLock<Vec<Resource>>,
    pub runbooks: RwLock<Vec<RunbookInfo>>,
    /// Executions waiting for a decision this user may give.
    pub approvals_waiting: AtomicUsize,
    /// Recent execution ids (id, description).
    pub executions: RwLock<Vec<Resource>>,
    pub functions: RwLock<FunctionIndex>,
    pub variables: RwLock<Vec<String>>,
    pub region: RwLock<String>,
    pub focus: RwLock<Option<String>>,
    pub profile: RwLock<String>,
    /// Change calendars closed right now, with why (name, reason).
    pub closed_calendars: RwLock<Vec<(String, String)>>,
    stop: AtomicBool,
    poke: (Mutex<bool>, Condvar),
}

/// How often the cache is refreshed.
pub const REFRESH_EVERY: Duration = Duration::from_secs(2);

impl Shared {
    /// Asks the refresher for a refresh now (after a change).
    pub fn poke(&self) {
        if let Ok(mut p) = self.poke.0.lock() {
            *p = true;
            self.poke.1.notify_all();
        }
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.poke();
    }

    /// Refreshes everything once.
    pub fn refresh(&self, data_dir: &Path, executor: Option<&Executor>) {
        let region = self.region.read().map(|r| r.clone()).unwrap_or_default();
        match drydock_host::HostStore::open(data_dir) {
            Ok(store) => {
                let mut list = Vec::new();
                for i in store.instances(Some(&region)).unwrap_or_default() {
                    let name = if i.config.hostname.is_empty() {
                        String::new()
                    } else {
                        format!("{} ", i.config.hostname)
                    };
                    list.push(Resource {
                        description: format!("{name}{} {}", i.state.as_str(), i.instance_type),
                        id: i.id,
                    });
                }
                for v in store.volumes(Some(&region)).unwrap_or_default() {
                    list.push(Resource {
                        description: match &v.attached_to {
                            Some(i) => format!("{} MiB, attached to {i}", v.size_mib),
                            None => format!("{} MiB, available", v.size_mib),
                        },
                        id: v.id,
                    });
                }
                for s in store.snapshots(Some(&region)).unwrap_or_default() {
                    list.push(Resource {
                        description: format!("of {}, {} MiB", s.volume_id, s.size_mib),
                        id: s.id,
                    });
                }
                for i in store.images(Some(&region)).unwrap_or_default() {
                    list.push(Resource {
                        description: format!("{} (owner {})", i.name, i.owner),
                        id: i.id,
                    });
                }
                if let Ok(mut r) = self.resources.write() {
                    *r = list;
                }
            }
            Err(e) => tracing::debug!("repl: host store: {e}"),
        }
        if let Ok(journal) = Journal::open(data_dir) {
            let me = Identity::current();
            let mut n = 0;
            for a in journal.pending_approvals().unwrap_or_default() {
                if a.state != ApprovalState::Pending {
                    continue;
                }
                let Ok(exec) = journal.execution(&a.execution_id) else {
                    continue;
                };
                let decided = a.decisions.iter().any(|d| d.approver == me.name);
                if !decided && a.may_decide(&me, &exec.requested_by, true).is_ok() {
                    n += 1;
                }
            }
            self.approvals_waiting.store(n, Ordering::SeqCst);
            let now = chrono::Utc::now();
            let closed = journal
                .calendars()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|c| {
                    match drydock_runtime::schedule::calendar::state_of(&journal, &c.name, now) {
                        drydock_runtime::schedule::calendar::CalendarState::Open => None,
                        drydock_runtime::schedule::calendar::CalendarState::Closed(why) => {
                            Some((c.name, why))
                        }
                    }
                })
                .collect();
            if let Ok(mut c) = self.closed_calendars.write() {
                *c = closed;
            }
            let recent = journal
                .executions(&ExecutionFilter {
                    limit: Some(50),
                    ..ExecutionFilter::default()
                })
                .unwrap_or_default();
            if let Ok(mut e) = self.executions.write() {
                *e = recent
                    .into_iter()
                    .map(|x| Resource {
                        description: format!("{} {}", x.runbook, x.state),
                        id: x.id,
                    })
                    .collect();
            }
        }
        if let Some(ex) = executor {
            let list: Vec<RunbookInfo> = ex
                .catalog()
                .entries()
                .into_iter()
                .filter(|e| !e.shadowed)
                .filter_map(|e| e.runbook.ok())
                .map(|rb| RunbookInfo {
                    name: rb.name.clone(),
                    description: rb.description.clone(),
                    params: rb
                        .params
                        .iter()
                        .map(|p| {
                            (
                                p.name.clone(),
                                format!("{:?}", p.kind).to_lowercase(),
                                p.description.clone(),
                            )
                        })
                        .collect(),
                })
                .collect();
            if let Ok(mut r) = self.runbooks.write() {
                *r = list;
            }
        }
    }

    /// Starts the refresher thread; it stops with [`Shared::stop`].
    pub fn start_refresher(
        self: &Arc<Self>,
        data_dir: PathBuf,
        executor: Option<Executor>,
    ) -> std::thread::JoinHandle<()> {
        let me = self.clone();
        std::thread::spawn(move || {
            while !me.stop.load(Ordering::SeqCst) {
                let t = Instant::now();
                me.refresh(&data_dir, executor.as_ref());
                tracing::debug!("repl: cache refreshed in {:?}", t.elapsed());
                let Ok(mut p) = me.poke.0.lock() else { return };
                if !*p {
                    p = match me.poke.1.wait_timeout(p, REFRESH_EVERY) {
                        Ok((p, _)) => p,
                        Err(_) => return,
                    };
                }
                *p = false;
            }
        })
    }
}

/// Commands beside Rhai, with what they do (for completion and `:help`).
pub const COMMANDS: &[(&str, &str)] = &[
    (
        ":help",
        "[topic] functions of a module, a function, or this list",
    ),
    (
        ":functions",
        "[module] registered functions with signatures",
    ),
    (":vars", "variables and functions defined in this session"),
    (
        ":use",
        "ID focus an instance: `target()`, `console::open()`, `:console`",
    ),
    (
        ":console",
        "[ID] attach to the serial console; Ctrl-] q returns",
    ),
    (":run", "RUNBOOK k=v … run a runbook here, progress inline"),
    (
        ":approvals",
        "approvals waiting, and whether you may decide",
    ),
    (":approve", "EXEC [comment] approve as your OS account"),
    (":reject", "EXEC [comment] reject as your OS account"),
    (":executions", "recent executions"),
    (":show", "EXEC an execution's steps, approvals and output"),
    (":instances", "instances of the region"),
    (
        ":calendars",
        "change calendars: open or closed now, and why",
    ),
    (
        ":serve",
        "the running `drydock serve`, asked over its socket",
    ),
    (":region", "NAME act in another region"),
    (":profile", "NAME act as another profile"),
    (":history", "[N] the last entries of this session"),
    (":save", "FILE this session as a runbook skeleton"),
    (":quit", "leave (or Ctrl-D)"),
];

/// The completer.
pub struct ReplCompleter {
    pub shared: Arc<Shared>,
}

fn sugg(value: String, description: Option<String>, span: Span, space: bool) -> Suggestion {
    Suggestion {
        value,
        description,
        span,
        append_whitespace: space,
        ..Suggestion::default()
    }
}

fn paths(prefix: &str, span: Span) -> Vec<Suggestion> {
    let expanded = match prefix.strip_prefix("~/") {
        Some(rest) => std::env::var("HOME")
            .map(|h| format!("{h}/{rest}"))
            .unwrap_or_else(|_| prefix.to_string()),
        None => prefix.to_string(),
    };
    let (dir, stem) = match expanded.rfind('/') {
        Some(i) => (&expanded[..=i], &expanded[i + 1..]),
        None => ("", expanded.as_str()),
    };
    let shown_dir = match prefix.rfind('/') {
        Some(i) => &prefix[..=i],
        None => "",
    };
    let read = std::fs::read_dir(if dir.is_empty() { "." } else { dir });
    let mut out: Vec<Suggestion> = read
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with(stem) || (stem.is_empty() && name.starts_with('.')) {
                return None;
            }
            let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
            let value = format!("{shown_dir}{name}{}", if is_dir { "/" } else { "" });
            Some(sugg(value, None, span, false))
        })
        .take(200)
        .collect();
    out.sort_by(|a, b| a.value.cmp(&b.value));
    out
}

/// The word before `pos` made of `chars`.
fn word_start(line: &str, pos: usize, ok: impl Fn(char) -> bool) -> usize {
    line[..pos]
        .char_indices()
        .rev()
        .take_while(|(_, c)| ok(*c))
        .last()
        .map_or(pos, |(i, _)| i)
}

impl ReplCompleter {
    fn resources(&self, prefix: &str, span: Span, only: Option<&str>) -> Vec<Suggestion> {
        let r = self.shared.resources.read();
        let Ok(r) = r else { return Vec::new() };
        r.iter()
            .filter(|x| x.id.starts_with(prefix))
            .filter(|x| only.is_none_or(|k| x.id.starts_with(k)))
            .map(|x| sugg(x.id.clone(), Some(x.description.clone()), span, false))
            .collect()
    }

    fn executions(&self, prefix: &str, span: Span) -> Vec<Suggestion> {
        let Ok(e) = self.shared.executions.read() else {
            return Vec::new();
        };
        e.iter()
            .filter(|x| x.id.starts_with(prefix))
            .map(|x| sugg(x.id.clone(), Some(x.description.clone()), span, true))
            .collect()
    }

    fn command(&self, line: &str, pos: usize) -> Vec<Suggestion> {
        let start = word_start(line, pos, |c| !c.is_whitespace());
        let word = &line[start..pos];
        let span = Span::new(start, pos);
        let words: Vec<&str> = line[..start].split_whitespace().collect();
        let Some(cmd) = words.first() else {
            return COMMANDS
                .iter()
                .filter(|(c, _)| c.starts_with(word))
                .map(|(c, d)| sugg(c.to_string(), Some(d.to_string()), span, true))
                .collect();
        };
        match *cmd {
            ":console" | ":use" if words.len() == 1 => self.resources(word, span, Some("i-")),
            ":approve" | ":reject" | ":show" if words.len() == 1 => self.executions(word, span),
            ":save" if words.len() == 1 => paths(word, span),
            ":region" if words.len() == 1 => drydock_host::REGIONS
                .iter()
                .filter(|r| r.starts_with(word))
                .map(|r| sugg(r.to_string(), None, span, false))
                .collect(),
            ":help" | ":functions" if words.len() == 1 => {
                let idx = self.shared.functions.read();
                let Ok(idx) = idx else { return Vec::new() };
                let mut out: Vec<Suggestion> = idx
                    .modules()
                    .into_iter()
                    .filter(|m| m.starts_with(word))
                    .map(|m| sugg(m, Some("module".into()), span, false))
                    .collect();
                if *cmd == ":help" {
                    out.extend(
                        idx.functions
                            .iter()
                            .filter(|f| f.qualified().starts_with(word))
                            .map(|f| sugg(f.qualified(), Some(f.description.clone()), span, false)),
                    );
                }
                out
            }
            ":run" => {
                let runbooks = self.shared.runbooks.read();
                let Ok(runbooks) = runbooks else {
                    return Vec::new();
                };
                if words.len() == 1 {
                    return runbooks
                        .iter()
                        .filter(|r| r.name.starts_with(word))
                        .map(|r| sugg(r.name.clone(), Some(r.description.clone()), span, true))
                        .collect();
                }
                let Some(rb) = runbooks.iter().find(|r| r.name == words[1]) else {
                    return paths(word, span);
                };
                if let Some((name, value)) = word.split_once('=') {
                    let kind = rb
                        .params
                        .iter()
                        .find(|p| p.0 == name)
                        .map(|p| p.1.as_str())
                        .unwrap_or("");
                    let prefix = match kind {
                        k if k.contains("instance") => Some("i-"),
                        k if k.contains("volume") => Some("vol-"),
                        k if k.contains("snapshot") => Some("snap-"),
                        k if k.contains("image") => Some("img-"),
                        _ => None,
                    };
                    let vspan = Span::new(start + name.len() + 1, pos);
                    return match prefix {
                        Some(p) => self.resources(value, vspan, Some(p)),
                        None => Vec::new(),
                    };
                }
                rb.params
                    .iter()
                    .filter(|p| p.0.starts_with(word))
                    .filter(|p| !words.iter().any(|w| w.starts_with(&format!("{}=", p.0))))
                    .map(|p| {
                        let d = if p.2.is_empty() {
                            p.1.clone()
                        } else {
                            format!("{}: {}", p.1, p.2)
                        };
                        sugg(format!("{}=", p.0), Some(d), span, false)
                    })
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    fn rhai(&self, line: &str, pos: usize) -> Vec<Suggestion> {
        match lexer::in_string_or_comment(line, pos) {
            Some(Kind::Comment) => return Vec::new(),
            Some(_) => {
                let start = word_start(line, pos, |c| c != '"' && c != '`' && c != '\'');
                let word = &line[start..pos];
                let span = Span::new(start, pos);
                let looks_like_path = word.starts_with('/')
                    || word.starts_with("./")
                    || word.starts_with("~/")
                    || word.starts_with("../");
                if looks_like_path {
                    return paths(word, span);
                }
                let ids = self.resources(word, span, None);
                if !ids.is_empty() || !word.is_empty() {
                    return if ids.is_empty() {
                        paths(word, span)
                    } else {
                        ids
                    };
                }
                return ids;
            }
            None => {}
        }
        let start = word_start(line, pos, |c| c == '_' || c == ':' || c.is_alphanumeric());
        let word = &line[start..pos];
        let span = Span::new(start, pos);
        let idx = self.shared.functions.read();
        let Ok(idx) = idx else { return Vec::new() };
        let described = |f: &crate::functions::FnDoc| {
            let sig = f.signatures.first().cloned().unwrap_or_default();
            Some(if f.description.is_empty() {
                sig
            } else {
                format!("{sig} — {}", f.description)
            })
        };
        if line[..start].ends_with('.') {
            return idx
                .methods()
                .filter(|f| f.name.starts_with(word))
                .map(|f| sugg(f.name.clone(), described(f), span, false))
                .collect();
        }
        if word.is_empty() {
            return Vec::new();
        }
        let mut out: Vec<Suggestion> = Vec::new();
        if word.contains("::") {
            out.extend(
                idx.functions
                    .iter()
                    .filter(|f| f.module.is_some() && f.qualified().starts_with(word))
                    .map(|f| sugg(f.qualified(), described(f), span, false)),
            );
            out.extend(
                constants()
                    .filter(|(c, _)| c.starts_with(word))
                    .map(|(c, d)| sugg(c.to_string(), Some(d.to_string()), span, false)),
            );
            return out;
        }
        out.extend(
            idx.modules()
                .into_iter()
                .filter(|m| m.starts_with(word))
                .map(|m| sugg(format!("{m}::"), Some("module".into()), span, false)),
        );
        out.extend(
            idx.in_module(None)
                .filter(|f| f.name.starts_with(word))
                .map(|f| sugg(f.name.clone(), described(f), span, false)),
        );
        if let Ok(vars) = self.shared.variables.read() {
            out.extend(
                vars.iter()
                    .filter(|v| v.starts_with(word))
                    .map(|v| sugg(v.clone(), Some("variable".into()), span, false)),
            );
        }
        out
    }
}

impl Completer for ReplCompleter {
    fn complete(&mut self, line: &str, pos: usize) -> CompletionResult {
        let pos = pos.min(line.len());
        let s = if line.trim_start().starts_with(':') {
            self.command(line, pos)
        } else {
            self.rhai(line, pos)
        };
        CompletionResult::fresh(s)
    }
}

/// Rhai highlighting: keywords, modules, known functions, strings (ids
/// inside them stand out), numbers, comments, commands.
pub struct RhaiHighlighter {
    pub shared: Arc<Shared>,
}

fn is_resource_id(s: &str) -> bool {
    let s = s.trim_matches(|c| c == '"' || c == '`' || c == '\'');
    ["i-", "vol-", "snap-", "img-", "ex-", "repl-"]
        .iter()
        .any(|p| {
            s.strip_prefix(p)
                .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()))
        })
}

impl Highlighter for RhaiHighlighter {
    fn highlight(&self, line: &str, _cursor: usize) -> StyledText {
        let mut out = StyledText::new();
        let toks = lexer::tokens(line);
        let known = |name: &str| {
            self.shared
                .functions
                .read()
                .map(|i| i.functions.iter().any(|f| f.name == name))
                .unwrap_or(false)
        };
        for (i, t) in toks.iter().enumerate() {
            let text = &line[t.start..t.end];
            let style = match t.kind {
                Kind::Keyword => Style::new().fg(Color::Magenta).bold(),
                Kind::Module => Style::new().fg(Color::Cyan),
                Kind::Str if is_resource_id(text) => Style::new().fg(Color::Yellow),
                Kind::Str => Style::new().fg(Color::Green),
                Kind::Number => Style::new().fg(Color::Yellow),
                Kind::Comment => Style::new().fg(Color::DarkGray).italic(),
                Kind::Command => Style::new().fg(Color::Cyan).bold(),
                Kind::Ident
                    if toks
                        .get(i + 1)
                        .is_some_and(|n| &line[n.start..n.end] == "(")
                        && known(text) =>
                {
                    Style::new().fg(Color::Blue)
                }
                _ => Style::new(),
            };
            out.push((style, text.to_string()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completer() -> ReplCompleter {
        let dir = tempfile::tempdir().unwrap();
        let s =
            crate::ReplSession::new(dir.path(), "region-a", "default", &drydock_stdlib::install);
        let shared = Arc::new(Shared::default());
        *shared.functions.write().unwrap() = FunctionIndex::from_engine(s.engine());
        *shared.resources.write().unwrap() = vec![
            Resource {
                id: "i-0aaa1111".into(),
                description: "running m1.small".into(),
            },
            Resource {
                id: "i-0bbb2222".into(),
                description: "stopped m1.small".into(),
            },
            Resource {
                id: "vol-0ccc3333".into(),
                description: "1024 MiB, available".into(),
            },
        ];
        *shared.runbooks.write().unwrap() = vec![RunbookInfo {
            name: "repair".into(),
            description: "fix it".into(),
            params: vec![(
                "instance".into(),
                "resource(instance)".into(),
                "broken".into(),
            )],
        }];
        ReplCompleter { shared }
    }

    fn values(c: &mut ReplCompleter, line: &str) -> Vec<String> {
        match c.complete(line, line.len()) {
            CompletionResult::Fresh { suggestions, .. } => {
                suggestions.iter().map(|s| s.value.clone()).collect()
            }
            _ => Vec::new(),
        }
    }

    #[test]
    fn completes_the_domain() {
        let mut c = completer();
        assert_eq!(values(&mut c, "instance::desc"), vec!["instance::describe"]);
        assert!(values(&mut c, "inst").contains(&"instance::".to_string()));
        assert_eq!(values(&mut c, r#"console::open("i-0a"#), vec!["i-0aaa1111"]);
        assert_eq!(values(&mut c, r#"volume::detach("v"#), vec!["vol-0ccc3333"]);
        assert_eq!(values(&mut c, ":console i-0b"), vec!["i-0bbb2222"]);
        assert_eq!(values(&mut c, ":run rep"), vec!["repair"]);
        assert_eq!(values(&mut c, ":run repair in"), vec!["instance="]);
        assert_eq!(
            values(&mut c, ":run repair instance=i-0a"),
            vec!["i-0aaa1111"]
        );
        assert!(values(&mut c, "c.exp").contains(&"expect".to_string()));
        assert!(values(&mut c, ":con").contains(&":console".to_string()));
        assert!(values(&mut c, "// instance::desc").is_empty());
        assert!(values(&mut c, r#"read_file("/et"#).contains(&"/etc/".to_string()));
    }
}
