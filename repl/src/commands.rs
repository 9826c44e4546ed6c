//! One REPL: the session, its journal record, and the `:commands`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use drydock_runtime::identity::Identity;
use drydock_runtime::journal::{ApprovalRecord, ExecutionFilter};
use drydock_runtime::observer::{ExecutionOutcome, Observer, StepEvent, StepOutcome};
use drydock_runtime::secrets::Secrets;
use drydock_runtime::{Executor, Journal, RunContext, StartError, StartOptions, SuppliedValue};
use drydock_runtime::{RunOptions, StepState};
use rhai::Engine;

use drydock_ops::approvals::{self, DecideOptions};
use drydock_ops::display::{clip, shown, shown_lines};
use drydock_ops::executions::{is_repl_session, step_detail, ExecutionView, ReplSessionView};

use crate::complete::{Shared, COMMANDS};
use crate::functions::FunctionIndex;
use crate::render::{table, when};
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
    session: ReplSession,
    install: Installer<'a>,
    data_dir: PathBuf,
    executor: Option<Executor>,
    shared: Arc<Shared>,
    refresher: Option<std::thread::JoinHandle<()>>,
    journal: Option<(Journal, String)>,
    history: Vec<(String, bool)>,
    running: Running,
    serve_status: Option<crate::service_commands::ServeStatus<'a>>,
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

    fn host(&self) -> Result<drydock_host::Host, String> {
        drydock_ops::host::open(&drydock_ops::host::HostOptions {
            data_dir: &self.data_dir,
            region: self.session.region(),
            profile: self.session.profile(),
        })
        .map_err(|e| e.to_string())
    }

    fn use_focus(&mut self, id: &str) -> Result<String, String> {
        if id.is_empty() || id == "-" {
            self.session.set_focus(None);
            self.set_shared_focus(None);
            return Ok("no instance focused".into());
        }
        let host = self.host()?;
        let inst = host
            .store()
            .map_err(|e| e.to_string())?
            .instance(id)
            .map_err(|e| e.to_string())?;
        let inst = host
            .in_region(id, &inst.region.clone(), inst)
            .map_err(|e| e.to_string())?;
        self.session.set_focus(Some(inst.id.clone()));
        self.set_shared_focus(Some(inst.id.clone()));
        Ok(format!(
            "focused {} ({} {}): `target()`, `console::open()`, `:console` act on it",
            inst.id,
            inst.state.as_str(),
            inst.instance_type
        ))
    }

    fn set_shared_focus(&self, id: Option<String>) {
        if let Ok(mut f) = self.shared.focus.write() {
            *f = id;
        }
    }

    fn console(&mut self, arg: &str) -> Result<String, String> {
        use drydock_host::console_client::{connect, run_terminal, ConsoleStart, Detached};
        let (id, read_only) = match arg.split_whitespace().collect::<Vec<_>>()[..] {
            [] => (None, false),
            ["--read-only"] => (None, true),
            [id] => (Some(id.to_string()), false),
            [id, "--read-only"] | ["--read-only", id] => (Some(id.to_string()), true),
            _ => return Err("usage: :console [ID] [--read-only]".into()),
        };
        let id = id
            .or_else(|| self.session.focus())
            .ok_or("which instance? `:console i-…`, or focus one with `:use i-…`")?;
        let host = self.host()?;
        let inst = host
            .store()
            .map_err(|e| e.to_string())?
            .instance(&id)
            .map_err(|e| e.to_string())?;
        let inst = host
            .in_region(&id, &inst.region.clone(), inst)
            .map_err(|e| e.to_string())?;
        let dir = host.instance_dir(&inst.id);
        let who = format!(
            "{} (drydock repl, pid {})",
            Identity::current().name,
            std::process::id()
        );
        let conn = connect(&dir, &inst.id, !read_only, &who, false, ConsoleStart::Tail)
            .map_err(|e| e.to_string())?;
        eprint!(
            "[console of {} in {}; Ctrl-] then q returns to the REPL, b sends a break, s<key> SysRq <key>]\r\n",
            inst.id,
            host.region()
        );
        let why = run_terminal(&conn, &dir, read_only).map_err(|e| e.to_string())?;
        Ok(match why {
            Detached::ConsoleClosed => format!("\r\n[the console of {} closed]", inst.id),
            _ => format!("\r\n[back from the console of {}]", inst.id),
        })
    }

    fn executor(&self) -> Result<&Executor, String> {
        self.executor
            .as_ref()
            .ok_or_else(|| "runbooks are not available in this REPL (no executor)".to_string())
    }

    fn run_runbook(&mut self, rest: &str) -> Result<String, String> {
        let mut words = split_words(rest).into_iter();
        let name = words.next().ok_or("usage: :run RUNBOOK name=value …")?;
        let executor = self.executor()?.clone();
        let runbook = executor.catalog().find(&name).map_err(|e| e.to_string())?;
        let mut supplied = BTreeMap::new();
        for w in words {
            let (k, v) = w
                .split_once('=')
                .ok_or_else(|| format!("parameters are name=value, got `{w}`"))?;
            let v = if v == "@focus" {
                self.session.focus().unwrap_or_default()
            } else {
                v.to_string()
            };
            supplied.insert(k.trim().to_string(), SuppliedValue::Text(v));
        }
        // An instance parameter left out takes the focused instance.
        if let Some(focus) = self.session.focus() {
            for p in &runbook.params {
                let is_instance = format!("{:?}", p.kind).contains("Instance");
                if is_instance && p.required && !supplied.contains_key(&p.name) {
                    supplied.insert(p.name.clone(), SuppliedValue::Text(focus.clone()));
                    eprintln!("  {} = {focus} (the focused instance)", p.name);
                }
            }
        }
        let opts = StartOptions {
            auto_approve: false,
            requester: Some(Identity::current()),
            gate: None,
        };
        let id = match executor.create_execution(&runbook, &supplied, &opts) {
            Ok(id) => id,
            Err(StartError::Params(e)) => {
                return Err(format!(
                    "runbook `{}` was not started; its parameters are not valid:\n  {}",
                    runbook.name,
                    e.to_string().replace('\n', "\n  ")
                ))
            }
            Err(e) => return Err(e.to_string()),
        };
        eprintln!(
            "{id}: {} in {} (Ctrl-C cancels it)",
            shown(&runbook.name),
            self.session.region()
        );
        if let Ok(mut r) = self.running.lock() {
            *r = Some((self.data_dir.clone(), id.clone()));
        }
        let outcome = executor.run(&id, Arc::new(InlineProgress), RunOptions::default());
        if let Ok(mut r) = self.running.lock() {
            *r = None;
        }
        self.shared.poke();
        let outcome = outcome.map_err(|e| e.to_string())?;
        let mut out = format!(
            "{id}: {} {} in {:.1}s ({} steps run, {} replayed)",
            outcome.runbook,
            outcome.state,
            outcome.duration_ms as f64 / 1000.0,
            outcome.steps_run,
            outcome.steps_replayed
        );
        if let Some(e) = &outcome.error {
            out.push_str(&format!("\n  error: {}", shown(e)));
        }
        if !outcome.output.is_null() {
            out.push_str(&format!(
                "\n{}",
                serde_json::to_string_pretty(&outcome.output).unwrap_or_default()
            ));
        }
        if outcome.state == drydock_runtime::ExecutionState::Success {
            Ok(out)
        } else {
            Err(out)
        }
    }

    fn journal(&self) -> Result<Journal, String> {
        Journal::open(&self.data_dir).map_err(|e| e.to_string())
    }

    fn approvals(&self) -> Result<String, String> {
        let journal = self.journal()?;
        let me = Identity::current();
        let pending = approvals::list(&journal, &me).map_err(|e| e.to_string())?;
        if pending.is_empty() {
            return Ok("no pending approvals".into());
        }
        let rows = pending
            .iter()
            .map(|p| {
                vec![
                    p.approval.execution_id.clone(),
                    shown(&p.execution.runbook),
                    clip(&p.approval.message, 50),
                    format!("{}/{}", p.approval.approvals(), p.approval.min_approvals),
                    shown(&p.execution.requested_by),
                    p.you.label().to_string(),
                ]
            })
            .collect();
        Ok(format!(
            "{}\nyou are {}; decide with `:approve EXEC [comment]` or `:reject EXEC [comment]`",
            table(
                &[
                    "EXECUTION",
                    "RUNBOOK",
                    "MESSAGE",
                    "APPROVED",
                    "REQUESTED BY",
                    "YOU"
                ],
                rows
            ),
            shown(&me.name)
        ))
    }

    fn decide(&mut self, rest: &str, approve: bool) -> Result<String, String> {
        let (exec, comment) = match rest.split_once(char::is_whitespace) {
            Some((e, c)) => (e, c.trim().trim_matches('"')),
            None => (rest, ""),
        };
        if exec.is_empty() {
            return Err(format!(
                "usage: :{} EXEC [comment]",
                if approve { "approve" } else { "reject" }
            ));
        }
        let mut journal = self.journal()?;
        let me = Identity::current();
        let decided = approvals::decide(
            &mut journal,
            &DecideOptions {
                execution: exec,
                approve,
                comment,
                who: &me,
            },
        )
        .map_err(|e| e.to_string())?;
        self.shared.poke();
        let mut out = decided.summary();
        if decided.waits_for_resume() {
            let id = &decided.execution_id;
            out.push_str(&format!(
                "\nno runner is active for {id}; the decision is kept and applied by `drydock resume {id}`"
            ));
        }
        Ok(out)
    }

    fn executions(&self) -> Result<String, String> {
        let journal = self.journal()?;
        let list = journal
            .executions(&ExecutionFilter {
                limit: Some(20),
                ..ExecutionFilter::default()
            })
            .map_err(|e| e.to_string())?;
        let mut out = if list.is_empty() {
            "no executions".to_string()
        } else {
            table(
                &["EXECUTION", "RUNBOOK", "STATE", "CREATED", "BY"],
                list.iter()
                    .map(|e| {
                        vec![
                            e.id.clone(),
                            shown(&e.runbook),
                            e.state.to_string(),
                            when(e.created_at),
                            shown(&e.requested_by),
                        ]
                    })
                    .collect(),
            )
        };
        let sessions = journal.repl_sessions(5).map_err(|e| e.to_string())?;
        if !sessions.is_empty() {
            out.push_str("\n\nREPL sessions:\n");
            out.push_str(&table(
                &["SESSION", "BY", "WHERE", "STARTED", "ENTRIES"],
                sessions
                    .iter()
                    .map(|s| {
                        vec![
                            s.id.clone(),
                            shown(&s.started_by),
                            format!("{}@{}", shown(&s.profile), shown(&s.region)),
                            when(s.started_at),
                            s.entries.to_string(),
                        ]
                    })
                    .collect(),
            ));
        }
        Ok(out)
    }

    fn show_execution(&self, prefix: &str) -> Result<String, String> {
        if prefix.is_empty() {
            return Err("usage: :show EXEC (or a repl-… session)".into());
        }
        let journal = self.journal()?;
        if is_repl_session(prefix) {
            let view = ReplSessionView::load(&journal, prefix).map_err(|e| e.to_string())?;
            let s = &view.session;
            let mut out = format!(
                "session {} by {} in {}@{}\n",
                s.id,
                shown(&s.started_by),
                shown(&s.profile),
                shown(&s.region)
            );
            for e in &view.entries {
                out.push_str(&format!(
                    "{:>4} {} {} ({} ms)\n",
                    e.seq,
                    if e.ok { "ok " } else { "err" },
                    clip(&e.input, 70),
                    e.duration_ms
                ));
            }
            return Ok(out);
        }
        let view = ExecutionView::load(&journal, prefix).map_err(|e| e.to_string())?;
        let exec = &view.execution;
        let mut out = format!(
            "execution {}\nrunbook   {}\nstate     {}\nby        {}\nparams    {}\n",
            exec.id,
            shown(&exec.runbook),
            drydock_ops::executions::state_text(exec),
            shown(&exec.requested_by),
            shown(&exec.params.to_string())
        );
        if let Some(e) = &exec.error {
            out.push_str(&format!("error     {}\n", shown(e)));
        }
        if !exec.output.is_null() {
            out.push_str(&format!("output    {}\n", shown(&exec.output.to_string())));
        }
        if !view.steps.is_empty() {
            out.push_str(&table(
                &["STEP", "STATE", "ATTEMPTS", "OUTPUT / ERROR"],
                view.steps
                    .iter()
                    .map(|s| {
                        vec![
                            shown(&s.name),
                            s.state.to_string(),
                            s.attempts.to_string(),
                            clip(&step_detail(s), 60),
                        ]
                    })
                    .collect(),
            ));
            out.push('\n');
        }
        for a in &view.approvals {
            out.push_str(&format!(
                "approval {}: \"{}\" ({}/{})\n",
                a.state.as_str(),
                shown(&a.message),
                a.approvals(),
                a.min_approvals
            ));
            for d in &a.decisions {
                out.push_str(&format!(
                    "  {} {} {}\n",
                    shown(&d.approver),
                    if d.approve { "approved" } else { "rejected" },
                    shown(&d.comment)
                ));
            }
        }
        Ok(out)
    }

    fn instances(&self) -> Result<String, String> {
        let store = drydock_host::HostStore::open(&self.data_dir).map_err(|e| e.to_string())?;
        let list = store
            .instances(Some(self.session.region()))
            .map_err(|e| e.to_string())?;
        if list.is_empty() {
            return Ok(format!("no instances in {}", self.session.region()));
        }
        Ok(table(
            &["INSTANCE", "STATE", "TYPE", "IMAGE", "ROOT VOLUME", "SINCE"],
            list.iter()
                .map(|i| {
                    vec![
                        i.id.clone(),
                        i.state.as_str().to_string(),
                        i.instance_type.clone(),
                        i.image_id.clone(),
                        i.root_volume.clone(),
                        when(i.state_since),
                    ]
                })
                .collect(),
        ))
    }

    fn location(&mut self, cmd: &str, name: &str) -> Result<String, String> {
        if name.is_empty() {
            return Ok(format!(
                "region {}, profile {}",
                self.session.region(),
                self.session.profile()
            ));
        }
        let (region, profile) = if cmd == ":region" {
            drydock_host::check_region(name).map_err(|e| e.to_string())?;
            (name.to_string(), self.session.profile().to_string())
        } else {
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(format!(
                    "`{name}` is not a profile name (letters, digits, - and _)"
                ));
            }
            (self.session.region().to_string(), name.to_string())
        };
        self.session.set_location(&region, &profile, self.install);
        if let Ok(mut r) = self.shared.region.write() {
            r.clone_from(&region);
        }
        if let Ok(mut p) = self.shared.profile.write() {
            p.clone_from(&profile);
        }
        if let Ok(mut f) = self.shared.functions.write() {
            *f = FunctionIndex::from_engine(self.session.engine());
        }
        self.shared.poke();
        if let Some(executor) = self.executor.take() {
            self.executor = Some(executor.with_location(&region, &profile));
        }
        Ok(format!("now in {region} as profile {profile}"))
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
fn split_words(s: &str) -> Vec<String> {
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
fn render_error(input: &str, e: &crate::session::EvalError) -> String {
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

/// `:run` progress, printed as it happens.
struct InlineProgress;

impl Observer for InlineProgress {
    fn step_started(&self, s: &StepEvent) {
        let indent = "  ".repeat(s.depth + 1);
        if s.attempt > 1 {
            eprintln!("{indent}▸ {} (attempt {})", shown(&s.name), s.attempt);
        } else {
            eprintln!("{indent}▸ {}", shown(&s.name));
        }
    }
    fn step_retrying(&self, s: &StepEvent, error: &str, delay: Duration) {
        eprintln!(
            "{}  ↻ {}: {}; again in {:.1}s",
            "  ".repeat(s.depth + 1),
            shown(&s.name),
            shown(error),
            delay.as_secs_f64()
        );
    }
    fn step_finished(&self, s: &StepEvent, o: &StepOutcome) {
        let indent = "  ".repeat(s.depth + 1);
        match (&o.state, &o.error) {
            (StepState::Succeeded, _) => {
                eprintln!(
                    "{indent}✓ {} ({:.1}s)",
                    shown(&s.name),
                    o.duration.as_secs_f64()
                )
            }
            (state, Some(e)) => eprintln!("{indent}✗ {} {state}: {}", shown(&s.name), shown(e)),
            (state, None) => eprintln!("{indent}· {} {state}", shown(&s.name)),
        }
    }
    fn step_replayed(&self, s: &StepEvent, state: StepState) {
        eprintln!(
            "{}= {} ({state}, replayed)",
            "  ".repeat(s.depth + 1),
            shown(&s.name)
        );
    }
    fn approval_waiting(&self, s: &StepEvent, a: &ApprovalRecord) {
        let who = if a.approvers.is_empty() {
            "anyone but you".to_string()
        } else {
            shown(&a.approvers.join(", "))
        };
        eprintln!(
            "{}⏸ waiting for approval: \"{}\" (approvers: {who}); another account decides with `drydock approve {}` or `:approve {}`",
            "  ".repeat(s.depth + 1),
            shown(&a.message),
            s.execution_id,
            s.execution_id
        );
    }
    fn approval_decided(&self, s: &StepEvent, a: &ApprovalRecord) {
        eprintln!(
            "{}▶ approval {}",
            "  ".repeat(s.depth + 1),
            a.state.as_str()
        );
    }
    fn printed(&self, _id: &str, line: &str) {
        eprintln!("  | {}", shown(line));
    }
    fn note(&self, _id: &str, message: &str) {
        eprintln!("  note: {}", shown(message));
    }
    fn execution_finished(&self, _o: &ExecutionOutcome, _depth: usize) {}
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
