//! One REPL: the session, its journal record, and the `:commands`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use drydock_runtime::identity::Identity;
use drydock_runtime::secrets::Secrets;
use drydock_runtime::{Executor, Journal, RunContext};
use rhai::Engine;

use drydock_ops::display::shown_lines;

use crate::complete::{Shared, COMMANDS};
use crate::functions::FunctionIndex;
use crate::session::ReplSession;
use crate::sigint::Running;
use crate::ReplOptions;

/// How an entry went.
#[derive(Debug, Clone, Copy)]
pub struct EntryResult {
    pub ok: bool,
    pub quit: bool,
    pub interrupted: bool,
}

type Installer<'a> = &'a (dyn Fn(&mut Engine, &RunContext) + Sync);

/// A REPL: evaluates entries and commands, records them.
pub struct Repl<'a> {
    pub(crate) session: ReplSession,
    pub(crate) install: Installer<'a>,
    pub(crate) data_dir: PathBuf,
    pub(crate) executor: Option<Executor>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) refresher: Option<std::thread::JoinHandle<()>>,
    pub(crate) journal: Option<(Journal, String)>,
    pub(crate) history: Vec<(String, bool)>,
    pub(crate) running: Running,
    pub(crate) serve_status: Option<crate::service_commands::ServeStatus<'a>>,
}

impl<'a> Repl<'a> {
    pub fn new(opts: &ReplOptions<'a>, interactive: bool) -> Self {
        let session = ReplSession::new(&opts.data_dir, &opts.region, &opts.profile, opts.install);
        let shared = Arc::new(Shared::default());
        if let Ok(mut f) = shared.functions.write() {
            *f = FunctionIndex::from_engine(session.engine());
        }
        if let Ok(mut r) = shared.region.write() {
            r.clone_from(&opts.region);
        }
        if let Ok(mut p) = shared.profile.write() {
            p.clone_from(&opts.profile);
        }
        let refresher = interactive
            .then(|| shared.start_refresher(opts.data_dir.clone(), opts.executor.clone()));
        let me = Identity::current();
        let journal = Journal::open(&opts.data_dir)
            .and_then(|mut j| {
                j.set_masker(session.secrets().clone());
                let id = j.start_repl_session(&me.name, &opts.region, &opts.profile)?;
                Ok((j, id))
            })
            .map_err(|e| {
                tracing::warn!("repl: this session is not recorded in the journal: {e}");
                eprintln!("warning: this session is not recorded in the journal: {e}");
            })
            .ok();
        Self {
            session,
            install: opts.install,
            data_dir: opts.data_dir.clone(),
            executor: opts.executor.clone(),
            shared,
            refresher,
            journal,
            history: Vec::new(),
            running: Arc::new(Mutex::new(None)),
            serve_status: opts.serve_status,
        }
    }

    pub fn canceller(&self) -> crate::session::Canceller {
        self.session.canceller()
    }

    pub fn running_execution(&self) -> Running {
        self.running.clone()
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn secrets(&self) -> Secrets {
        self.session.secrets().clone()
    }

    /// The journal id of this session (`repl-…`).
    pub fn session_id(&self) -> Option<&str> {
        self.journal.as_ref().map(|(_, id)| id.as_str())
    }

    /// Ends the session's record and the background refresher.
    pub fn finish(&mut self) {
        if let Some((j, id)) = self.journal.as_mut() {
            if let Err(e) = j.end_repl_session(id) {
                tracing::warn!("repl: cannot record the end of {id}: {e}");
            }
        }
        self.shared.stop();
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
    }

    fn record(
        &mut self,
        input: &str,
        ok: bool,
        output: Option<&str>,
        error: Option<&str>,
        took: Duration,
    ) {
        if let Some((j, id)) = self.journal.as_mut() {
            j.set_masker(self.session.secrets().clone());
            if let Err(e) = j.add_repl_entry(id, input, ok, output, error, took.as_millis() as i64)
            {
                tracing::warn!("repl: cannot record an entry: {e}");
            }
        }
    }

    /// Evaluates an entry or runs a command; prints what it shows.
    pub fn entry(&mut self, line: &str) -> EntryResult {
        let input = line.trim();
        let start = Instant::now();
        if input.is_empty() {
            return EntryResult {
                ok: true,
                quit: false,
                interrupted: false,
            };
        }
        let (ok, quit, interrupted, shown, error) = if input.starts_with(':') {
            match self.command(input) {
                Ok(Flow::Quit) => (true, true, false, None, None),
                Ok(Flow::Show(s)) => (true, false, false, Some(s), None),
                Err(e) => (false, false, false, None, Some(e)),
            }
        } else {
            match self.session.eval_value(input) {
                Ok(v) => {
                    let s = (!v.is_unit()).then(|| crate::output::show(&v, self.session.secrets()));
                    (true, false, false, s, None)
                }
                Err(e) => {
                    let shown = render_error(input, &e);
                    (false, false, e.interrupted, None, Some(shown))
                }
            }
        };
        let took = start.elapsed();
        // A value may hold what a guest or a file said: shown with its
        // lines, never its escape sequences. (A command's own output
        // escapes the outside text it shows.)
        let value = !input.starts_with(':');
        match (&shown, &error) {
            (Some(s), _) if !s.is_empty() => {
                let s = if value { shown_lines(s) } else { s.clone() };
                if s.ends_with('\n') {
                    print!("{s}");
                } else {
                    println!("{s}");
                }
            }
            (_, Some(e)) => eprintln!("error: {}", shown_lines(e)),
            _ => {}
        }
        let masked = self.session.secrets().mask(input);
        self.history.push((masked, ok));
        self.record(input, ok, shown.as_deref(), error.as_deref(), took);
        if let Ok(mut v) = self.shared.variables.write() {
            *v = self.session.variables();
        }
        EntryResult {
            ok,
            quit,
            interrupted,
        }
    }

    fn command(&mut self, input: &str) -> Result<Flow, String> {
        let (cmd, rest) = match input.split_once(char::is_whitespace) {
            Some((c, r)) => (c, r.trim()),
            None => (input, ""),
        };
        let show = |s: String| Ok(Flow::Show(s));
        match cmd {
            ":quit" | ":q" | ":exit" => Ok(Flow::Quit),
            ":help" | ":h" | ":?" => show(self.help(rest)),
            ":functions" | ":fns" => {
                let idx = FunctionIndex::from_engine(self.session.engine());
                show(idx.help((!rest.is_empty()).then_some(rest)))
            }
            ":vars" => {
                let mut out = String::new();
                for v in self.session.variables() {
                    out.push_str(&format!("  {v}\n"));
                }
                for f in self.session.script_functions() {
                    out.push_str(&format!("  fn {f}\n"));
                }
                show(if out.is_empty() {
                    "no variables yet".into()
                } else {
                    out
                })
            }
            ":use" => self.use_focus(rest).map(Flow::Show),
            ":console" => self.console(rest).map(Flow::Show),
            ":run" => self.run_runbook(rest).map(Flow::Show),
            ":approvals" => self.approvals().map(Flow::Show),
            ":approve" | ":reject" => self.decide(rest, cmd == ":approve").map(Flow::Show),
            ":executions" => self.executions().map(Flow::Show),
            ":show" => self.show_execution(rest).map(Flow::Show),
            ":instances" => self.instances().map(Flow::Show),
            ":calendars" => crate::service_commands::calendars(&self.journal()?).map(Flow::Show),
            ":serve" => crate::service_commands::serve(self.serve_status).map(Flow::Show),
            ":region" | ":profile" => self.location(cmd, rest).map(Flow::Show),
            ":history" => {
                let n: usize = rest.parse().unwrap_or(50);
                let skip = self.history.len().saturating_sub(n);
                let out: Vec<String> = self
                    .history
                    .iter()
                    .enumerate()
                    .skip(skip)
                    .map(|(i, (e, ok))| {
                        format!(
                            "{:>4} {} {}",
                            i + 1,
                            if *ok { " " } else { "!" },
                            e.replace('\n', "\n       ")
                        )
                    })
                    .collect();
                show(out.join("\n"))
            }
            ":save" => self.save(rest).map(Flow::Show),
            other => Err(format!(
                "unknown command {other}; commands: {}",
                COMMANDS.iter().map(|c| c.0).collect::<Vec<_>>().join(" ")
            )),
        }
    }

    fn help(&self, topic: &str) -> String {
        if !topic.is_empty() {
            return FunctionIndex::from_engine(self.session.engine()).help(Some(topic));
        }
        let mut out = String::from(
            "Enter Rhai statements; variables and functions persist between entries. An unfinished\n\
             block continues on the next line. Tab completes functions, ids, runbooks and paths.\n\
             Ctrl-C stops the running entry; Ctrl-D leaves.\n\n\
             modules: ",
        );
        out.push_str(
            &FunctionIndex::from_engine(self.session.engine())
                .modules()
                .join(", "),
        );
        out.push_str("  (`:help MODULE`, `:help FUNCTION`, `:functions` for all)\n\ncommands:\n");
        for (c, d) in COMMANDS {
            out.push_str(&format!("  {c:<12} {d}\n"));
        }
        out.push_str(
            "\nThe focused instance (`:use i-…`) is `focus` and `target()`; `console::open()`,\n\
             `instance::describe()`, `instance::stop()`… with no id act on it, as does `:console`.\n",
        );
        out
    }

    pub(crate) fn executor(&self) -> Result<&Executor, String> {
        self.executor
            .as_ref()
            .ok_or_else(|| "runbooks are not available in this REPL (no executor)".to_string())
    }

    fn save(&self, file: &str) -> Result<String, String> {
        if file.is_empty() {
            return Err("usage: :save FILE.rhai".into());
        }
        let path = PathBuf::from(file);
        if self.session.done.is_empty() {
            return Err("nothing to save yet: no entry succeeded in this session".into());
        }
        let name = crate::save::name_from_path(&path);
        let text = crate::save::runbook(&name, &Identity::current().name, &self.session.done);
        std::fs::write(&path, &text)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(format!(
            "wrote {} ({} entries); check it with `drydock validate {}`",
            path.display(),
            self.session.done.len(),
            path.display()
        ))
    }
}

/// Words, with "double quoted" words kept together.
pub(crate) fn split_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            c => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

enum Flow {
    Show(String),
    Quit,
}

/// An error with the entry's line and a caret under the column.
pub(crate) fn render_error(input: &str, e: &crate::session::EvalError) -> String {
    let mut out = e.message.clone();
    if let Some((l, c)) = e.position {
        if let Some(src) = input.lines().nth(l.saturating_sub(1)) {
            let col = c.saturating_sub(1).min(src.chars().count());
            out.push_str(&format!(
                "\n  {l} | {src}\n  {} | {}^",
                " ".repeat(l.to_string().len()),
                " ".repeat(col)
            ));
        }
    }
    if let Some(h) = &e.hint {
        out.push_str(&format!("\n  hint: {h}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_errors() {
        assert_eq!(
            split_words(r#"fix a=1 msg="two words""#),
            vec!["fix", "a=1", "msg=two words"]
        );
        let e = crate::session::EvalError {
            message: "boom".into(),
            position: Some((2, 5)),
            hint: Some("try again".into()),
            interrupted: false,
        };
        assert_eq!(
            render_error("let a = 1;\nlet b = x;", &e),
            "boom\n  2 | let b = x;\n    |     ^\n  hint: try again"
        );
    }
}
