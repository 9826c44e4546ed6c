//! The evaluation session: a Rhai engine with drydock's primitives, the
//! variables and functions defined so far, the focused instance, and an
//! interrupt that Ctrl-C fires for the running entry only.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use drydock_runtime::interrupt::Interrupt;
use drydock_runtime::secrets::Secrets;
use drydock_runtime::RunContext;
use rhai::{Dynamic, Engine, EvalAltResult, FnPtr, Map, NativeCallContext, Position, Scope, AST};

use drydock_stdlib::doc::doc;

use crate::lexer::{self, Kind};

type Installer<'a> = &'a dyn Fn(&mut Engine, &RunContext);

/// Stops the running entry from another thread (the Ctrl-C watcher).
///
/// The session's [`Interrupt`] is shared with every handle the entry
/// created (console sessions keep it): cancelling it for good would break
/// them for later entries, so an interruption is a deadline at "now",
/// removed when the entry ends.
#[derive(Clone)]
pub struct Canceller {
    interrupt: Arc<Interrupt>,
    fired: Arc<AtomicBool>,
    busy: Arc<AtomicBool>,
    token: Arc<Mutex<Option<u64>>>,
}

impl Canceller {
    /// Interrupts the running entry: waits (expect, sleep, shell, SSH)
    /// return at their next check, a busy script at its next operation.
    pub fn fire(&self) {
        if self.fired.swap(true, Ordering::SeqCst) {
            return;
        }
        let t = self.interrupt.push_deadline(Instant::now());
        if let Ok(mut slot) = self.token.lock() {
            *slot = Some(t);
        }
    }

    /// Whether an entry is running.
    pub fn busy(&self) -> bool {
        self.busy.load(Ordering::SeqCst)
    }

    /// Whether the running entry was interrupted.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    fn reset(&self) {
        if let Ok(mut slot) = self.token.lock() {
            if let Some(t) = slot.take() {
                self.interrupt.pop_deadline(t);
            }
        }
        self.fired.store(false, Ordering::SeqCst);
    }
}

/// What an entry did, for `:save` and the journal.
#[derive(Debug, Clone)]
pub struct Evaluated {
    /// The entry as evaluated (focus calls made explicit), masked.
    pub text: String,
    /// The focused instance when it ran.
    pub focus: Option<String>,
}

/// An evaluation session.
pub struct ReplSession {
    engine: Engine,
    pub(crate) secrets: Secrets,
    scope: Scope<'static>,
    functions: AST,
    interrupt: Arc<Interrupt>,
    canceller: Canceller,
    focus: Arc<Mutex<Option<String>>>,
    data_dir: PathBuf,
    region: String,
    profile: String,
    /// Successful entries, in order.
    pub(crate) done: Vec<Evaluated>,
}

/// An entry's failure, for people.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalError {
    pub message: String,
    /// Line and column (1-based) in the entry.
    pub position: Option<(usize, usize)>,
    pub hint: Option<String>,
    pub interrupted: bool,
}

impl std::fmt::Display for EvalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.message)?;
        if let Some((l, c)) = self.position {
            write!(f, " (line {l}, column {c})")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

/// Module functions whose first argument is an instance id: called with
/// no argument they act on the focused instance.
const FOCUS_CALLS: &[&str] = &[
    "console::open",
    "instance::describe",
    "instance::start",
    "instance::stop",
    "instance::reboot",
    "instance::terminate",
    "instance::force_stop",
];

/// Rewrites `console::open()` and `instance::stop()`… (no argument) into
/// calls on `target()`, outside strings and comments.
pub fn with_focus_calls(src: &str) -> String {
    let toks: Vec<_> = lexer::tokens(src)
        .into_iter()
        .filter(|t| t.kind != Kind::Space)
        .collect();
    let mut inserts = Vec::new();
    for w in toks.windows(6) {
        if w[0].kind == Kind::Module
            && &src[w[1].start..w[2].end] == "::"
            && w[3].kind == Kind::Ident
            && &src[w[4].start..w[4].end] == "("
            && &src[w[5].start..w[5].end] == ")"
        {
            let name = format!(
                "{}::{}",
                &src[w[0].start..w[0].end],
                &src[w[3].start..w[3].end]
            );
            if FOCUS_CALLS.contains(&name.as_str()) {
                inserts.push(w[5].start);
            }
        }
    }
    let mut out = src.to_string();
    for at in inserts.into_iter().rev() {
        out.insert_str(at, "target()");
    }
    out
}

fn located(ctx: &NativeCallContext, message: String) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(message.into(), ctx.call_position()).into()
}

/// Why `run_runbook`, `approve` and `cleanup` exist only in runbooks, and
/// what to do in the REPL instead (the README says the same).
pub const RUN_RUNBOOK_ONLY: &str = "run_runbook exists only in runbooks: a child execution is journaled under its parent execution's step, and a REPL entry is not a step of an execution. Here, `:run NAME key=value …` starts the runbook as an execution of its own";
pub const APPROVE_ONLY: &str = "approve exists only in runbooks: an approval belongs to an execution (who asked, at which step, who may decide, what a resume replays), and a REPL session is none. To have a second person agree before a risky step, `:save` the steps as a runbook with approve(#{ … }) before that step and `:run` it; the other person answers with `drydock approve`";
pub const CLEANUP_ONLY: &str = "cleanup exists only in runbooks: a cleanup runs when its execution ends, and a REPL session has no end the journal runs it at. Run its statements yourself when you are done, or put them in a runbook";

/// `run_runbook`, `approve` and `cleanup` answer with why they exist only
/// in runbooks (instead of Rhai's "Function not found").
fn register_runbook_only(engine: &mut Engine) {
    fn refuse(ctx: &NativeCallContext, why: &str) -> Result<Dynamic, Box<EvalAltResult>> {
        Err(located(ctx, why.to_string()))
    }
    const RUN_RUNBOOK: &[&str] = &[
        "Runbooks only (a child execution belongs to a step of its parent): in the REPL, `:run NAME key=value …`.",
    ];
    const APPROVE: &[&str] = &[
        "Runbooks only (an approval belongs to an execution): `:save` the steps as a runbook with approve(#{ … }) before the risky one, and `:run` it.",
    ];
    const CLEANUP: &[&str] = &[
        "Runbooks only (a cleanup runs when its execution ends): run its statements yourself when you are done.",
    ];
    doc("run_runbook(name)", RUN_RUNBOOK)
        .register(engine, |ctx: NativeCallContext, _n: Dynamic| {
            refuse(&ctx, RUN_RUNBOOK_ONLY)
        });
    doc("run_runbook(name, params)", RUN_RUNBOOK).register(
        engine,
        |ctx: NativeCallContext, _n: Dynamic, _p: Dynamic| refuse(&ctx, RUN_RUNBOOK_ONLY),
    );
    doc("run_runbook(name, params, options)", RUN_RUNBOOK).register(
        engine,
        |ctx: NativeCallContext, _n: Dynamic, _p: Dynamic, _o: Dynamic| {
            refuse(&ctx, RUN_RUNBOOK_ONLY)
        },
    );
    doc("approve()", APPROVE).register(engine, |ctx: NativeCallContext| refuse(&ctx, APPROVE_ONLY));
    doc("approve(options)", APPROVE).register(engine, |ctx: NativeCallContext, _o: Dynamic| {
        refuse(&ctx, APPROVE_ONLY)
    });
    doc("cleanup(name, body)", CLEANUP).register(
        engine,
        |ctx: NativeCallContext, _n: Dynamic, _f: Dynamic| refuse(&ctx, CLEANUP_ONLY),
    );
    doc("cleanup(name, options, body)", CLEANUP).register(
        engine,
        |ctx: NativeCallContext, _n: Dynamic, _o: Dynamic, _f: Dynamic| refuse(&ctx, CLEANUP_ONLY),
    );
}

impl ReplSession {
    /// A session whose engine has the primitives `install` registers.
    pub fn new(data_dir: &Path, region: &str, profile: &str, install: Installer) -> Self {
        let interrupt = Arc::new(Interrupt::never());
        let canceller = Canceller {
            interrupt: interrupt.clone(),
            fired: Arc::new(AtomicBool::new(false)),
            busy: Arc::new(AtomicBool::new(false)),
            token: Arc::new(Mutex::new(None)),
        };
        let mut s = Self {
            engine: Engine::new(),
            secrets: Secrets::new(),
            scope: Scope::new(),
            functions: AST::empty(),
            interrupt,
            canceller,
            focus: Arc::new(Mutex::new(None)),
            data_dir: data_dir.to_path_buf(),
            region: region.to_string(),
            profile: profile.to_string(),
            done: Vec::new(),
        };
        s.build_engine(install);
        s
    }

    /// (Re)builds the engine for the current region and profile; the
    /// variables, functions and focus stay.
    pub fn build_engine(&mut self, install: Installer) {
        let mut engine = Engine::new();
        let ctx = RunContext {
            execution_id: "repl".into(),
            data_dir: self.data_dir.clone(),
            interrupt: self.interrupt.clone(),
            region: self.region.clone(),
            profile: self.profile.clone(),
            secrets: self.secrets.clone(),
            call_sites: drydock_runtime::executor::CallSites::none(),
        };
        install(&mut engine, &ctx);
        drydock_runtime::parameters::install_primitives(
            &mut engine,
            self.data_dir.clone(),
            self.secrets.clone(),
        );
        let s = self.secrets.clone();
        engine.on_print(move |line| println!("{}", s.mask(line)));
        let c = self.canceller.clone();
        engine.on_progress(move |_| c.fired().then(|| Dynamic::from("interrupted")));
        for kind in 0..3u8 {
            let i = self.interrupt.clone();
            let sleep =
                move |ctx: NativeCallContext, d: Dynamic| -> Result<(), Box<EvalAltResult>> {
                    let d = drydock_runtime::executor::duration_value("sleep", &d)
                        .map_err(|e| located(&ctx, e))?;
                    i.sleep(d).map_err(|e| e.into_rhai(ctx.call_position()))
                };
            let d = doc("sleep(duration)", &[
                "Waits: a number of seconds or a duration (`\"90s\"`, `\"1m30s\"`); Ctrl-C stops it.",
            ]);
            match kind {
                0 => d.register(&mut engine, move |ctx: NativeCallContext, s: rhai::INT| {
                    sleep(ctx, Dynamic::from(s))
                }),
                1 => d.register(
                    &mut engine,
                    move |ctx: NativeCallContext, s: rhai::FLOAT| sleep(ctx, Dynamic::from(s)),
                ),
                _ => d.register(
                    &mut engine,
                    move |ctx: NativeCallContext, s: rhai::ImmutableString| {
                        sleep(ctx, Dynamic::from(s))
                    },
                ),
            };
        }
        doc(
            "duration_secs(duration)",
            &["A duration (`\"1m30s\"`, or a number of seconds) in seconds."],
        )
        .register(
            &mut engine,
            |ctx: NativeCallContext, d: Dynamic| -> Result<f64, Box<EvalAltResult>> {
                drydock_runtime::executor::duration_value("duration", &d)
                    .map(|d| d.as_secs_f64())
                    .map_err(|e| located(&ctx, e))
            },
        );
        // `step` as in a runbook, so statements move between both; here
        // the body just runs.
        doc(
            "step(name, body)",
            &[
                "Runs the body (`|| …`) and returns its value; in a runbook, a journaled step.",
                "Example: `step(\"check\", || shell(\"df -h /\"))`",
            ],
        )
        .register(
            &mut engine,
            |ctx: NativeCallContext,
             _name: &str,
             f: FnPtr|
             -> Result<Dynamic, Box<EvalAltResult>> { f.call_within_context(&ctx, ()) },
        );
        doc("step(name, options, body)", &[
            "Runs the body and returns its value; the options (attempts, timeout…) act in a runbook only.",
        ])
        .register(
            &mut engine,
            |ctx: NativeCallContext,
             _name: &str,
             _opts: Map,
             f: FnPtr|
             -> Result<Dynamic, Box<EvalAltResult>> { f.call_within_context(&ctx, ()) },
        );
        // `calendar::state(name)` / `calendar::reason(name)`, as in a runbook.
        drydock_runtime::schedule::calendar::install(&mut engine, self.data_dir.clone());
        register_runbook_only(&mut engine);
        let focus = self.focus.clone();
        doc(
            "target()",
            &["The focused instance's id (`:use i-…`); fails when none is focused."],
        )
        .register(
            &mut engine,
            move |ctx: NativeCallContext| -> Result<String, Box<EvalAltResult>> {
                focus.lock().ok().and_then(|f| f.clone()).ok_or_else(|| {
                    located(
                        &ctx,
                        "no instance is focused: `:use i-…` focuses one, or give the id".into(),
                    )
                })
            },
        );
        self.engine = engine;
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn canceller(&self) -> Canceller {
        self.canceller.clone()
    }

    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub fn profile(&self) -> &str {
        &self.profile
    }

    pub fn set_location(&mut self, region: &str, profile: &str, install: Installer) {
        self.region = region.to_string();
        self.profile = profile.to_string();
        self.build_engine(install);
    }

    /// The focused instance.
    pub fn focus(&self) -> Option<String> {
        self.focus.lock().ok().and_then(|f| f.clone())
    }

    pub fn set_focus(&mut self, id: Option<String>) {
        if let Ok(mut f) = self.focus.lock() {
            f.clone_from(&id);
        }
        match id {
            Some(id) => {
                self.scope.set_or_push("focus", id);
            }
            None => {
                self.scope.set_or_push("focus", Dynamic::UNIT);
            }
        }
    }

    /// Names of the variables defined so far.
    pub fn variables(&self) -> Vec<String> {
        self.scope.iter().map(|(n, _, _)| n.to_string()).collect()
    }

    /// Names of the script functions defined so far.
    pub fn script_functions(&self) -> Vec<String> {
        self.functions
            .iter_functions()
            .map(|f| format!("{}({})", f.name, f.params.join(", ")))
            .collect()
    }

    /// Evaluates one entry; returns what to show (nothing for `()`), with
    /// secrets masked.
    pub fn eval(&mut self, input: &str) -> Result<Option<String>, String> {
        self.eval_value(input)
            .map(|v| (!v.is_unit()).then(|| crate::output::show(&v, &self.secrets)))
            .map_err(|e| e.to_string())
    }

    /// Evaluates one entry and returns its value.
    pub fn eval_value(&mut self, input: &str) -> Result<Dynamic, EvalError> {
        crate::history::register_secret_literals(input, &self.secrets);
        self.canceller.reset();
        let text = with_focus_calls(input);
        self.canceller.busy.store(true, Ordering::SeqCst);
        let r = self.eval_unmasked(&text);
        self.canceller.busy.store(false, Ordering::SeqCst);
        let interrupted = self.canceller.fired();
        self.canceller.reset();
        match r {
            Ok(v) => {
                self.done.push(Evaluated {
                    text: self.secrets.mask(&text),
                    focus: self.focus(),
                });
                Ok(v)
            }
            Err(mut e) => {
                if interrupted {
                    e = EvalError {
                        message: "interrupted (Ctrl-C)".into(),
                        position: e.position,
                        hint: None,
                        interrupted: true,
                    };
                }
                e.message = self.secrets.mask(&e.message);
                e.hint = e.hint.map(|h| self.secrets.mask(&h));
                Err(e)
            }
        }
    }

    fn eval_unmasked(&mut self, input: &str) -> Result<Dynamic, EvalError> {
        let ast = self
            .engine
            .compile_with_scope(&self.scope, input)
            .map_err(|e| {
                let pos = e.position();
                EvalError {
                    message: format!("syntax error: {}", e.err_type()),
                    position: pos.line().map(|l| (l, pos.position().unwrap_or(0))),
                    hint: syntax_hint(e.err_type()),
                    interrupted: false,
                }
            })?;
        let program = self.functions.merge(&ast);
        let value: Dynamic = self
            .engine
            .eval_ast_with_scope(&mut self.scope, &program)
            .map_err(|e| self.runtime_error(&e))?;
        self.functions = self.functions.merge(&ast.clone_functions_only());
        Ok(value)
    }

    fn runtime_error(&self, e: &EvalAltResult) -> EvalError {
        let pos = innermost_position(e);
        let message = drydock_runtime::executor::describe_error(e);
        let hint = match e.unwrap_inner() {
            EvalAltResult::ErrorFunctionNotFound(sig, _) => {
                let name = sig.split('(').next().unwrap_or(sig).trim();
                Some(match self.closest_function(name) {
                    Some(near) => {
                        format!("did you mean `{near}`? `:functions` lists every function")
                    }
                    None => "`:functions` lists every function with its parameters".into(),
                })
            }
            EvalAltResult::ErrorVariableNotFound(..) => {
                Some("variables persist between entries; `:vars` lists them".into())
            }
            EvalAltResult::ErrorTerminated(..) => None,
            _ if message.contains("is it running?") => {
                Some("`instance::describe(id).state` says; `instance::start(id)` starts it".into())
            }
            _ => None,
        };
        EvalError {
            message,
            position: pos.line().map(|l| (l, pos.position().unwrap_or(0))),
            hint,
            interrupted: false,
        }
    }

    fn closest_function(&self, name: &str) -> Option<String> {
        let idx = crate::functions::FunctionIndex::from_engine(&self.engine);
        idx.functions
            .iter()
            .map(|f| f.qualified())
            .filter(|q| q != name)
            .map(|q| (edit_distance(&q, name), q))
            .filter(|(d, q)| *d <= 3.max(q.len() / 3))
            .min()
            .map(|(_, q)| q)
    }
}

fn innermost_position(e: &EvalAltResult) -> Position {
    match e {
        EvalAltResult::ErrorInFunctionCall(_, _, inner, pos) => {
            let p = innermost_position(inner);
            if p.is_none() {
                *pos
            } else {
                p
            }
        }
        other => other.position(),
    }
}

fn syntax_hint(e: &rhai::ParseErrorType) -> Option<String> {
    use rhai::ParseErrorType as P;
    match e {
        P::MissingToken(t, _) if t == ";" => {
            Some("end a statement with `;` before the next one".into())
        }
        P::UnknownOperator(op) if op == "=" => Some("compare with `==`".into()),
        P::Reserved(w) => Some(format!("`{w}` is reserved in Rhai; use another name")),
        _ => None,
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> (tempfile::TempDir, ReplSession) {
        let dir = tempfile::tempdir().unwrap();
        let s = ReplSession::new(dir.path(), "region-a", "default", &drydock_stdlib::install);
        (dir, s)
    }

    #[test]
    fn variables_and_functions_persist_between_entries() {
        let (_d, mut s) = session();
        assert_eq!(s.eval("let x = 40;").unwrap(), None);
        assert_eq!(s.eval("fn add2(v) { v + 2 }").unwrap(), None);
        assert_eq!(s.eval("add2(x)").unwrap(), Some("42".into()));
        assert_eq!(s.eval("shell(\"echo hi\")").unwrap(), Some("hi\n".into()));
        assert!(s.eval("nope()").unwrap_err().contains("nope"));
    }

    #[test]
    fn secrets_are_masked_in_what_the_repl_shows() {
        let (_d, mut s) = session();
        assert_eq!(
            s.eval(r#"let pw = secret("hunter2"); "user:" + pw"#)
                .unwrap(),
            Some("user:****".into())
        );
        assert!(!s
            .eval(r#"throw "bad " + pw"#)
            .unwrap_err()
            .contains("hunter2"));
    }

    #[test]
    fn errors_have_a_position_and_a_hint() {
        let (_d, mut s) = session();
        let e = s.eval_value("let a = 1;\nfile_exist(\"/\")").unwrap_err();
        assert_eq!(e.position.map(|p| p.0), Some(2), "{e:?}");
        assert!(e.hint.unwrap().contains("file_exists"));
        let e = s.eval_value("let = 3;").unwrap_err();
        assert!(e.message.starts_with("syntax error"), "{e:?}");
    }

    #[test]
    fn focus_is_the_default_target() {
        assert_eq!(
            with_focus_calls(
                r#"let c = console::open(); "console::open()"; instance::describe( )"#
            ),
            r#"let c = console::open(target()); "console::open()"; instance::describe( target())"#
        );
        let (_d, mut s) = session();
        assert!(s.eval("target()").unwrap_err().contains(":use"));
        s.set_focus(Some("i-0123456789".into()));
        assert_eq!(s.eval("target()").unwrap(), Some("i-0123456789".into()));
        assert_eq!(s.eval("focus").unwrap(), Some("i-0123456789".into()));
    }

    #[test]
    fn a_fired_canceller_stops_sleep_and_busy_loops_and_then_resets() {
        let (_d, mut s) = session();
        for entry in ["sleep(30)", "loop { }", "shell(\"sleep 30\")"] {
            let c = s.canceller();
            let t = std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(300));
                c.fire();
            });
            let start = Instant::now();
            let e = s.eval_value(entry).unwrap_err();
            t.join().unwrap();
            assert!(e.interrupted, "{entry}: {e:?}");
            assert!(start.elapsed().as_secs() < 10, "{entry}");
            assert_eq!(s.eval("sleep(0.01); 1").unwrap(), Some("1".into()));
        }
    }
}
