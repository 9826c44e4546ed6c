//! `console::open(instance)` in Rhai: drive an instance's serial console
//! with the expect engine — wait for boot, log in, run commands with exit
//! codes, answer prompts — even when SSH and the network are gone.
//!
//! ```rhai
//! let c = console::open("i-0123abcd4567");
//! c.wait_for_boot("120s");
//! c.login("root", "secret");
//! let r = c.run("mount -a");           // #{ stdout, exit_code }
//! let m = c.expect(["Press S to skip", console::TIMEOUT], "30s");
//! if m.index == 0 { c.send_key("S"); }
//! ```

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use drydock_host::console_client::{connect, ConsoleStart};
use drydock_host::HostStore;
use drydock_runtime::interrupt::Interrupt;
use drydock_runtime::RunContext;
use rhai::{Array, Dynamic, Engine, EvalAltResult, Map, Module, NativeCallContext, Position};

use crate::doc::doc;
use crate::expect::{ExpectOptions, Expecter, FdTransport, Outcome, Pattern, PatternSet};

/// Marker a pattern list may hold to get the timeout as an outcome.
pub const TIMEOUT: &str = "\u{0}drydock:TIMEOUT";
/// Marker a pattern list may hold to get the end of the stream as an outcome.
pub const EOF: &str = "\u{0}drydock:EOF";

/// Anything `expect` can run on, for the shared helpers.
pub type Session = Expecter<Box<dyn crate::expect::Transport>>;

impl crate::expect::Transport for Box<dyn crate::expect::Transport> {
    fn read_timeout(
        &mut self,
        buf: &mut [u8],
        timeout: Duration,
    ) -> std::io::Result<crate::expect::ReadResult> {
        (**self).read_timeout(buf, timeout)
    }
    fn send(&mut self, data: &[u8]) -> std::io::Result<()> {
        (**self).send(data)
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
}

/// An expect session usable from Rhai (cheap to clone, shared).
#[derive(Clone)]
pub struct ExpectHandle {
    inner: Arc<Mutex<HandleState>>,
}

struct HandleState {
    session: Session,
    interrupt: Arc<Interrupt>,
    seq: u64,
    /// Distinguishes this handle's sentinels from earlier sessions' output
    /// still in the console's tail.
    nonce: u32,
    default_timeout: Duration,
    /// `login` reached a shell through this handle: when the handle goes
    /// (the step or runbook that held it ended), the shell is left, so the
    /// next person on the console finds a login prompt, not a root shell.
    logged_in: bool,
    /// For an instance's console: its id. Several handles of one process
    /// share the console's shell; the last one to go logs out.
    instance: Option<String>,
}

/// Per instance console: how many handles of this process are open, and
/// whether one of them logged in.
static CONSOLE_USERS: Mutex<Option<std::collections::HashMap<String, (usize, bool)>>> =
    Mutex::new(None);

fn console_users<T>(
    f: impl FnOnce(&mut std::collections::HashMap<String, (usize, bool)>) -> T,
) -> T {
    let mut g = CONSOLE_USERS.lock().unwrap_or_else(|p| p.into_inner());
    f(g.get_or_insert_with(Default::default))
}

impl Drop for HandleState {
    fn drop(&mut self) {
        let logged_in = match &self.instance {
            None => self.logged_in,
            Some(id) => console_users(|m| {
                let last = match m.get_mut(id) {
                    Some(e) => {
                        e.0 = e.0.saturating_sub(1);
                        e.0 == 0
                    }
                    None => true,
                };
                if last {
                    m.remove(id).is_some_and(|e| e.1) || self.logged_in
                } else {
                    false
                }
            }),
        };
        if logged_in {
            // Ctrl-C stops a command left running (a step that timed out),
            // then the shell is left. Best effort: the console may be gone.
            let _ = self.session.send(b"\x03");
            std::thread::sleep(Duration::from_millis(100));
            let _ = self.session.send(b"exit\r");
            std::thread::sleep(Duration::from_millis(100));
            tracing::debug!("console: logged out as the handle ended");
        }
    }
}

/// A number that differs between console handles (time and process based).
fn session_nonce() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or_default();
    t ^ std::process::id().rotate_left(16)
}

fn err(pos: Position, message: String) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(message.into(), pos).into()
}

fn duration_arg(pos: Position, v: &Dynamic) -> Result<Duration, Box<EvalAltResult>> {
    drydock_runtime::executor::duration_value("timeout", v).map_err(|e| err(pos, e))
}

/// Patterns, and where TIMEOUT and EOF stand in the caller's list.
type ParsedPatterns = (Vec<Pattern>, Option<usize>, Option<usize>);

/// The patterns of an `expect` call: strings are exact, `#{ regex: "…" }`
/// (or `re("…")`) are regexes, and TIMEOUT / EOF markers turn those
/// outcomes into matches.
fn parse_patterns(pos: Position, list: Dynamic) -> Result<ParsedPatterns, Box<EvalAltResult>> {
    let items: Array = if list.is_array() {
        list.cast::<Array>()
    } else {
        vec![list]
    };
    let (mut patterns, mut timeout_at, mut eof_at) = (Vec::new(), None, None);
    for (i, item) in items.into_iter().enumerate() {
        if let Some(s) = item.clone().try_cast::<rhai::ImmutableString>() {
            match s.as_str() {
                TIMEOUT => timeout_at = Some(i),
                EOF => eof_at = Some(i),
                _ => patterns.push((i, Pattern::Exact(s.to_string()))),
            }
        } else if let Some(m) = item.clone().try_cast::<Map>() {
            let re = m
                .get("regex")
                .and_then(|r| r.clone().into_string().ok())
                .ok_or_else(|| {
                    err(
                        pos,
                        "a pattern map needs `regex`, e.g. #{ regex: \"login: *$\" }".into(),
                    )
                })?;
            patterns.push((i, Pattern::Regex(re)));
        } else {
            return Err(err(
                pos,
                format!(
                    "a pattern must be a string or #{{ regex: ... }}, got {}",
                    item.type_name()
                ),
            ));
        }
    }
    // Indexes in the compiled set are positions among real patterns; keep
    // the caller's numbering by padding with never-matching entries.
    let mut ordered = Vec::new();
    for (i, p) in patterns {
        while ordered.len() < i {
            ordered.push(Pattern::Regex(r"[^\s\S]".into()));
        }
        ordered.push(p);
    }
    Ok((ordered, timeout_at, eof_at))
}

impl ExpectHandle {
    pub fn new(session: Session, interrupt: Arc<Interrupt>) -> Self {
        Self {
            inner: Arc::new(Mutex::new(HandleState {
                session,
                interrupt,
                seq: 0,
                nonce: session_nonce(),
                default_timeout: Duration::from_secs(60),
                logged_in: false,
                instance: None,
            })),
        }
    }

    /// `expect(patterns, timeout)`: a map #{ index, before, matched, captures }.
    pub fn expect(
        &self,
        pos: Position,
        list: Dynamic,
        timeout: Duration,
    ) -> Result<Map, Box<EvalAltResult>> {
        let (patterns, timeout_at, eof_at) = parse_patterns(pos, list)?;
        let mut st = self.inner.lock().unwrap();
        let set = if patterns.is_empty() {
            None
        } else {
            Some(PatternSet::new(&patterns).map_err(|e| err(pos, e))?)
        };
        let start = Instant::now();
        loop {
            st.interrupt.check().map_err(|i| i.into_rhai(pos))?;
            let left = timeout.saturating_sub(start.elapsed());
            let slice = left.min(Duration::from_millis(200));
            let outcome = match &set {
                Some(set) => st.session.expect(set, slice),
                None => {
                    let never =
                        PatternSet::new(&[Pattern::Regex(r"[^\s\S]".into())]).expect("valid");
                    st.session.expect(&never, slice)
                }
            }
            .map_err(|e| err(pos, format!("{}: {e}", st.session.describe())))?;
            let mut map = Map::new();
            match outcome {
                Outcome::Matched(m) => {
                    map.insert("index".into(), (m.index as i64).into());
                    map.insert("before".into(), m.before.into());
                    map.insert("matched".into(), m.matched.into());
                    let caps: Array = m
                        .captures
                        .into_iter()
                        .map(|c| c.map(Dynamic::from).unwrap_or(Dynamic::UNIT))
                        .collect();
                    map.insert("captures".into(), caps.into());
                    return Ok(map);
                }
                Outcome::Timeout { tail, .. } if left <= slice => {
                    if let Some(i) = timeout_at {
                        map.insert("index".into(), (i as i64).into());
                        map.insert("before".into(), tail.into());
                        return Ok(map);
                    }
                    let wanted = set.as_ref().map(|s| s.describe()).unwrap_or_default();
                    return Err(err(
                        pos,
                        format!(
                            "{}: no match for {wanted} within {}; last lines seen:\n{tail}",
                            st.session.describe(),
                            drydock_runtime::duration::format_duration(timeout)
                        ),
                    ));
                }
                Outcome::Timeout { .. } => continue,
                Outcome::Eof { before } => {
                    if let Some(i) = eof_at {
                        map.insert("index".into(), (i as i64).into());
                        map.insert("before".into(), before.into());
                        return Ok(map);
                    }
                    return Err(err(
                        pos,
                        format!(
                            "{}: the stream ended; last output:\n{before}",
                            st.session.describe()
                        ),
                    ));
                }
            }
        }
    }

    pub fn send(&self, pos: Position, text: &str) -> Result<(), Box<EvalAltResult>> {
        let mut st = self.inner.lock().unwrap();
        st.session
            .send(text.as_bytes())
            .map_err(|e| err(pos, format!("{}: cannot send: {e}", st.session.describe())))
    }

    fn timeout(&self) -> Duration {
        self.inner.lock().unwrap().default_timeout
    }

    fn expect_one(
        &self,
        pos: Position,
        patterns: Array,
        timeout: Duration,
    ) -> Result<Map, Box<EvalAltResult>> {
        self.expect(pos, Dynamic::from_array(patterns), timeout)
    }

    /// Waits until the console has been quiet for `quiet` (at most
    /// `limit`): after `Password: ` busybox's login turns echo off only a
    /// moment later, and a password typed before that would be echoed to
    /// the console (and its log) in clear.
    fn wait_quiet(
        &self,
        pos: Position,
        quiet: Duration,
        limit: Duration,
    ) -> Result<(), Box<EvalAltResult>> {
        let start = Instant::now();
        let any: Array = vec![Dynamic::from(regex_map(r"(?s).+")), TIMEOUT.into()];
        while start.elapsed() < limit {
            let m = self.expect(pos, Dynamic::from_array(any.clone()), quiet)?;
            if m["index"].as_int().unwrap_or(-1) == 1 {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Logs in on a getty, whether the login prompt is already shown, not
    /// yet shown, or a shell is already open.
    ///
    /// Only prompts that follow its own input are answered: what the
    /// console showed before (the prompts of a run cut off by a crash,
    /// someone else's typing) is dropped, and `Password: ` is answered
    /// only right after this call typed the user name — a password prompt
    /// it did not cause gets an empty answer (which fails it and brings a
    /// fresh login prompt), never the password. The password is typed
    /// once the console has been quiet for a moment (echo off).
    pub fn login(
        &self,
        pos: Position,
        user: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<(), Box<EvalAltResult>> {
        // Drop what the console shows until it is quiet (the tail a new
        // connection starts with, a getty being respawned), then ask for a
        // fresh prompt.
        self.wait_quiet(pos, Duration::from_millis(700), Duration::from_secs(30))?;
        self.inner.lock().unwrap().session.clear();
        self.send(pos, "\r")?;
        let prompts: Array = vec![
            "login: ".into(),
            "Password: ".into(),
            Dynamic::from(regex_map(r"[#$] $")),
            "Login incorrect".into(),
        ];
        let mut sent_user = false;
        let mut sent_password = false;
        for _ in 0..10 {
            let m = self.expect_one(pos, prompts.clone(), timeout)?;
            match m["index"].as_int().unwrap_or(-1) {
                0 => {
                    self.send(pos, &format!("{user}\r"))?;
                    sent_user = true;
                    sent_password = false;
                }
                1 if sent_user && !sent_password => {
                    self.wait_quiet(pos, Duration::from_millis(500), Duration::from_secs(10))?;
                    self.send(pos, &format!("{password}\r"))?;
                    sent_password = true;
                }
                // A password prompt this call did not cause.
                1 => self.send(pos, "\r")?,
                2 => {
                    let mut st = self.inner.lock().unwrap();
                    st.logged_in = true;
                    if let Some(id) = &st.instance {
                        console_users(|m| m.entry(id.clone()).or_insert((1, false)).1 = true);
                    }
                    return Ok(());
                }
                _ if sent_password => {
                    return Err(err(
                        pos,
                        format!(
                            "login as {user} failed: the password was refused (Login incorrect)"
                        ),
                    ))
                }
                _ => {}
            }
        }
        Err(err(
            pos,
            format!("login as {user} did not reach a shell prompt"),
        ))
    }

    /// Leaves the shell `login` opened (the console shows a login prompt
    /// again); nothing when this handle did not log in.
    pub fn logout(&self, pos: Position) -> Result<(), Box<EvalAltResult>> {
        let was = {
            let mut st = self.inner.lock().unwrap();
            let shared = match &st.instance {
                Some(id) => console_users(|m| {
                    m.get_mut(id)
                        .map(|e| std::mem::replace(&mut e.1, false))
                        .unwrap_or(false)
                }),
                None => false,
            };
            std::mem::replace(&mut st.logged_in, false) || shared
        };
        if was {
            self.send(pos, "\x03")?;
            self.send(pos, "exit\r")?;
            self.expect_one(pos, vec!["login: ".into()], Duration::from_secs(60))?;
        }
        Ok(())
    }

    /// Runs a shell command and returns #{ stdout, exit_code }. The end is
    /// found by a sentinel the command prints, not by guessing the prompt.
    pub fn run(
        &self,
        pos: Position,
        cmd: &str,
        timeout: Duration,
    ) -> Result<Map, Box<EvalAltResult>> {
        let quoted = quote_command(cmd).map_err(|e| err(pos, e))?;
        let n = {
            let mut st = self.inner.lock().unwrap();
            st.seq += 1;
            st.session.clear();
            format!("{:x}x{}", st.nonce, st.seq)
        };
        // The echoed command line shows `"__ds7""__"` and `__dd7_"$?"__`; only
        // the output has `__ds7__` (where the output starts) and `__dd7_0__`
        // (where it ends, with the exit code). This holds however the line
        // editor wraps or redraws a long echoed command. The command itself
        // is single-quoted and run by `eval` (see [`command_line`]): a `#`,
        // an unbalanced quote or a trailing backslash stays inside it and
        // never swallows the end sentinel.
        self.send(pos, &format!("{}\r", command_line(&n, &quoted)))?;
        let m = self.expect_one(
            pos,
            vec![Dynamic::from(regex_map(&format!(r"__dd{n}_(\d+)__")))],
            timeout,
        )?;
        let before = m["before"].clone().into_string().unwrap_or_default();
        let start = format!("__ds{n}__");
        let stdout = match before.rfind(&start) {
            Some(i) => {
                let rest = &before[i + start.len()..];
                rest.strip_prefix("\r\n")
                    .or_else(|| rest.strip_prefix('\n'))
                    .unwrap_or(rest)
                    .to_string()
            }
            None => before,
        };
        // Line editors redraw with a carriage return at the start of a line.
        let stdout = stdout.trim_start_matches('\r').replace("\n\r", "\n");
        let code: i64 = m["captures"]
            .clone()
            .into_array()
            .ok()
            .and_then(|c| c.first().cloned())
            .and_then(|c| c.into_string().ok())
            .and_then(|c| c.parse().ok())
            .unwrap_or(-1);
        let mut out = Map::new();
        out.insert("stdout".into(), stdout.into());
        out.insert("exit_code".into(), code.into());
        Ok(out)
    }
}

/// The longest line a terminal in canonical mode takes (Linux: 4095
/// bytes), less the sentinels, for the command that appears twice on it.
const MAX_COMMAND_LINE: usize = 1800;

/// The line `run` sends: the start sentinel, the command's syntax checked
/// in a subshell without running it (`if false; then CMD fi`: a syntax
/// error there ends only the subshell — in the shell itself it would
/// abort the rest of the line, end sentinel included), then the command
/// run by `eval` in the shell itself (so `cd` and variables stay), then the
/// end sentinel with the exit code (2 for a command the shell cannot
/// parse, as shells do).
pub fn command_line(n: &str, quoted: &str) -> String {
    format!(
        "echo \"__ds{n}\"\"__\"; \
         if (eval \"$(printf 'if false; then\\n%s\\nfi' {quoted})\") 2>/dev/null; \
         then eval {quoted}; \
         else echo 'drydock: the shell cannot parse this command' >&2; (exit 2); fi; \
         echo \"__dd{n}_\"$?\"__\""
    )
}

/// `cmd` as one single-quoted shell word (`'` becomes `'\''`), for `eval`.
/// Refuses what a terminal would act on instead of passing to the shell
/// (control characters other than tab and newline) and lines longer than
/// a terminal takes, with an error that says so.
pub fn quote_command(cmd: &str) -> Result<String, String> {
    if let Some(c) = cmd
        .chars()
        .find(|c| c.is_control() && *c != '\t' && *c != '\n')
    {
        return Err(format!(
            "run: the command contains the control character {:?}, which the terminal would act on; \
             use send() for control keys",
            c
        ));
    }
    // An empty command would be an empty `then` (a syntax error).
    let cmd = if cmd.trim().is_empty() { ":" } else { cmd };
    let quoted = format!("'{}'", cmd.replace('\'', "'\\''"));
    if let Some(line) = quoted.split('\n').find(|l| l.len() > MAX_COMMAND_LINE) {
        return Err(format!(
            "run: a line of the command is {} bytes once quoted; a terminal takes at most {MAX_COMMAND_LINE} \
             (split it, or upload a script)",
            line.len()
        ));
    }
    Ok(quoted)
}

fn regex_map(re: &str) -> Map {
    let mut m = Map::new();
    m.insert("regex".into(), re.into());
    m
}

/// Opens an instance's console as the interactive writer, with the
/// in-memory tail first so a prompt already on screen can be matched.
fn open_console(
    ctx: &RunContext,
    pos: Position,
    instance: &str,
    force: bool,
) -> Result<ExpectHandle, Box<EvalAltResult>> {
    let store = HostStore::open(&ctx.data_dir).map_err(|e| err(pos, e.to_string()))?;
    let inst = store
        .instance(instance)
        .map_err(|e| err(pos, e.to_string()))?;
    let dir = ctx.data_dir.join("instances").join(&inst.id);
    let who = format!(
        "execution {} (pid {})",
        ctx.execution_id,
        std::process::id()
    );
    let conn = connect(&dir, &inst.id, true, &who, force, ConsoleStart::Tail)
        .map_err(|e| err(pos, e.to_string()))?;
    let label = format!("console of {} ({})", inst.id, inst.region);
    let transport: Box<dyn crate::expect::Transport> =
        Box::new(FdTransport::<UnixStream>::new(conn.stream, label));
    let mut session = Expecter::new(transport, ExpectOptions::default());
    let transcripts = ctx.data_dir.join("transcripts");
    if std::fs::create_dir_all(&transcripts).is_ok() {
        let path: PathBuf = transcripts.join(format!("{}-{}.log", ctx.execution_id, inst.id));
        let _ = session.record_transcript(&path, &ctx.secrets);
    }
    let handle = ExpectHandle::new(session, ctx.interrupt.clone());
    handle.inner.lock().unwrap().instance = Some(inst.id.clone());
    console_users(|m| m.entry(inst.id.clone()).or_insert((0, false)).0 += 1);
    Ok(handle)
}

/// The `console` module's constants, with what they mean (for the help
/// and docs/primitives.md: Rhai's metadata has functions only).
pub const CONSTANTS: &[(&str, &str)] = &[
    (
        "console::TIMEOUT",
        "In an `expect` list: a timeout is a match (its index) instead of an error.",
    ),
    (
        "console::EOF",
        "In an `expect` list: the end of the stream is a match instead of an error.",
    ),
];

/// Registers the `console` module and the methods of expect sessions.
pub fn install(engine: &mut Engine, ctx: &RunContext) {
    engine.register_type_with_name::<ExpectHandle>("ExpectSession");
    let mut module = Module::new();
    module.set_var("TIMEOUT", TIMEOUT);
    module.set_var("EOF", EOF);
    let c = ctx.clone();
    doc("console::open(instance)", &[
        "An expect session on an instance's serial console, as its interactive writer; what the console shows already can be matched.",
        "Fails when the instance does not exist or is not running, or another writer holds the console.",
        "Example: `let c = console::open(params.instance); c.login(\"root\", params.password);`",
    ])
    .set_in(
        &mut module,
        move |instance: &str| -> Result<ExpectHandle, Box<EvalAltResult>> {
            open_console(&c, Position::NONE, instance, false)
        },
    );
    let c = ctx.clone();
    doc("console::open(instance, options)", &[
        "An expect session on an instance's serial console, with options: `force: true` takes the console over from another writer.",
    ])
    .set_in(
        &mut module,
        move |instance: &str, opts: Map| -> Result<ExpectHandle, Box<EvalAltResult>> {
            let force = opts
                .get("force")
                .and_then(|f| f.as_bool().ok())
                .unwrap_or(false);
            open_console(&c, Position::NONE, instance, force)
        },
    );
    engine.register_static_module("console", module.into());
    register_session_methods(engine);
}

/// Methods every expect session has (console, serial, ssh shell).
pub fn register_session_methods(engine: &mut Engine) {
    doc(
        "re(pattern)",
        &[
            "A regular expression for an `expect` list (plain strings match exactly).",
            "Example: `c.expect([re(\"[#$] $\"), \"login: \"])`",
        ],
    )
    .register(engine, |p: &str| -> Map { regex_map(p) });
    doc("ExpectSession.expect(patterns, timeout)", &[
        "Waits for the leftmost match of one of the patterns (a string, `re(…)`, `console::TIMEOUT`, `console::EOF`, or a list of them): `#{ index, before, matched, captures }`.",
        "`timeout` is a duration (`\"90s\"` or seconds). Fails on a timeout or the end of the stream unless the list has TIMEOUT / EOF; the error has the pattern, the wait and the last lines seen.",
        "Example: `let m = c.expect([\"Press S to skip\", \"login: \", console::TIMEOUT], \"120s\");`",
    ])
    .register(
        engine,
        |ctx: NativeCallContext,
         s: &mut ExpectHandle,
         patterns: Dynamic,
         timeout: Dynamic|
         -> Result<Map, Box<EvalAltResult>> {
            let t = duration_arg(ctx.call_position(), &timeout)?;
            s.expect(ctx.call_position(), patterns, t)
        },
    );
    doc("ExpectSession.expect(patterns)", &[
        "Waits for the leftmost match of one of the patterns, for the session's default timeout (60s, see `set_timeout`): `#{ index, before, matched, captures }`.",
    ])
    .register(
        engine,
        |ctx: NativeCallContext, s: &mut ExpectHandle, patterns: Dynamic| {
            let t = s.timeout();
            s.expect(ctx.call_position(), patterns, t)
        },
    );
    doc(
        "ExpectSession.send(text)",
        &["Sends text as it is (no newline)."],
    )
    .register(
        engine,
        |ctx: NativeCallContext, s: &mut ExpectHandle, text: &str| {
            s.send(ctx.call_position(), text)
        },
    );
    doc(
        "ExpectSession.send_line(text)",
        &["Sends text and Enter (`\\r`)."],
    )
    .register(
        engine,
        |ctx: NativeCallContext, s: &mut ExpectHandle, text: &str| {
            s.send(ctx.call_position(), &format!("{text}\r"))
        },
    );
    doc(
        "ExpectSession.send_key(key)",
        &["Sends one key: one character (`\"S\"` to answer a boot prompt); fails on more."],
    )
    .register(
        engine,
        |ctx: NativeCallContext, s: &mut ExpectHandle, key: &str| {
            if key.chars().count() != 1 {
                return Err(err(
                    ctx.call_position(),
                    format!("send_key takes one key, got {key:?}"),
                ));
            }
            s.send(ctx.call_position(), key)
        },
    );
    doc("ExpectSession.login(user, password)", &[
        "Logs in to a shell, whether or not the login prompt is already on screen.",
        "Answers only prompts that follow its own input (older output is dropped first), and the password prompt only right after it typed the user name. Fails on a refused login or the default timeout.",
        "Example: `c.login(\"root\", params.password)`",
    ])
    .register(
        engine,
        |ctx: NativeCallContext, s: &mut ExpectHandle, user: &str, password: &str| {
            let t = s.timeout();
            s.login(ctx.call_position(), user, password, t)
        },
    );
    doc("ExpectSession.drain()", &[
        "Drops what the session shows until it has been quiet for 0.7s (at most 30s), so old prompts are not answered.",
    ])
    .register(
        engine,
        |ctx: NativeCallContext, s: &mut ExpectHandle| -> Result<(), Box<EvalAltResult>> {
            let pos = ctx.call_position();
            s.wait_quiet(pos, Duration::from_millis(700), Duration::from_secs(30))?;
            s.inner.lock().unwrap().session.clear();
            Ok(())
        },
    );
    doc("ExpectSession.logout()", &[
        "Leaves the shell `login` opened (the console shows a login prompt again); nothing when this session did not log in. Also done when the session goes.",
    ])
    .register(engine, |ctx: NativeCallContext, s: &mut ExpectHandle| {
        s.logout(ctx.call_position())
    });
    doc("ExpectSession.run(command)", &[
        "Runs a shell command in the logged-in shell: `#{ stdout, exit_code }` (the end is found by a sentinel, not by guessing the prompt), within the default timeout.",
        "A command the shell cannot parse returns exit code 2; control characters (use `send`) and lines over 1800 bytes are refused.",
        "Example: `c.run(\"systemctl is-active sshd\").exit_code`",
    ])
    .register(
        engine,
        |ctx: NativeCallContext, s: &mut ExpectHandle, cmd: &str| {
            let t = s.timeout();
            s.run(ctx.call_position(), cmd, t)
        },
    );
    doc("ExpectSession.run(command, timeout)", &[
        "Runs a shell command in the logged-in shell, waiting at most `timeout` (`\"5m\"` or seconds): `#{ stdout, exit_code }`.",
    ])
    .register(
        engine,
        |ctx: NativeCallContext,
         s: &mut ExpectHandle,
         cmd: &str,
         timeout: Dynamic|
         -> Result<Map, Box<EvalAltResult>> {
            let t = duration_arg(ctx.call_position(), &timeout)?;
            s.run(ctx.call_position(), cmd, t)
        },
    );
    doc("ExpectSession.wait_for_boot(timeout)", &[
        "Waits until the guest shows a login prompt, at most `timeout` (`\"2m\"` or seconds): the match, as `expect` returns it.",
    ])
    .register(
        engine,
        |ctx: NativeCallContext,
         s: &mut ExpectHandle,
         timeout: Dynamic|
         -> Result<Map, Box<EvalAltResult>> {
            let t = duration_arg(ctx.call_position(), &timeout)?;
            s.expect(
                ctx.call_position(),
                Dynamic::from_array(vec!["login: ".into()]),
                t,
            )
        },
    );
    doc("ExpectSession.wait_for_boot()", &[
        "Waits until the guest shows a login prompt, at most 5 minutes: the match, as `expect` returns it.",
    ])
    .register(
        engine,
        |ctx: NativeCallContext, s: &mut ExpectHandle| {
            s.expect(
                ctx.call_position(),
                Dynamic::from_array(vec!["login: ".into()]),
                Duration::from_secs(300),
            )
        },
    );
    doc(
        "ExpectSession.set_timeout(timeout)",
        &["Sets the session's default timeout (60s at first) of `expect`, `run` and `login`."],
    )
    .register(
        engine,
        |ctx: NativeCallContext, s: &mut ExpectHandle, timeout: Dynamic| {
            let t = duration_arg(ctx.call_position(), &timeout)?;
            s.inner.lock().unwrap().default_timeout = t;
            Ok::<(), Box<EvalAltResult>>(())
        },
    );
    doc("ExpectSession.describe()", &[
        "What this session is connected to (`console of i-… (region-a)`, a serial port, an SSH host).",
    ])
    .register(engine, |s: &mut ExpectHandle| {
        s.inner.lock().unwrap().session.describe()
    });
}

#[cfg(test)]
mod quote_tests {
    use super::{command_line, quote_command};
    use std::io::Write;

    /// What an interactive `sh` (a console's shell is interactive) prints
    /// for the line `run` sends, sentinels turned into `start` / `end N`.
    fn through_sh(cmd: &str) -> (String, i32) {
        let q = quote_command(cmd).unwrap();
        let mut child = std::process::Command::new("sh")
            .arg("-i")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let line = command_line("X", &q);
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(format!("{line}\necho after\n").as_bytes())
            .unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout)
            .replace("__dsX__", "start")
            .replace("__ddX_", "end ")
            .replace("__\n", "\n");
        assert!(text.ends_with("after\n"), "the shell went on: {text}");
        let text = text.trim_end_matches("after\n").to_string();
        (text, out.status.code().unwrap_or(-1))
    }

    #[test]
    fn hashes_quotes_and_backslashes_stay_inside_the_command() {
        let (out, _) = through_sh("echo a # b");
        assert_eq!(out, "start\na\nend 0\n");
        let (out, _) = through_sh("echo 'it''s' \"x\" $((1+2))");
        assert_eq!(out, "start\nits x 3\nend 0\n");
        let (out, _) = through_sh("echo it\\'s");
        assert_eq!(out, "start\nit's\nend 0\n");
        // An unbalanced quote is a syntax error of the command, not a hang.
        let (out, _) = through_sh("echo 'unbalanced");
        assert_eq!(out, "start\nend 2\n");
        // A trailing backslash would continue the line: not a whole command.
        let (out, _) = through_sh("echo trailing \\");
        assert_eq!(out, "start\nend 2\n");
        let (out, _) = through_sh("false");
        assert_eq!(out, "start\nend 1\n");
        let (out, _) = through_sh("echo one\necho two");
        assert_eq!(out, "start\none\ntwo\nend 0\n");
        let (out, _) = through_sh("");
        assert_eq!(out, "start\nend 0\n");
        // The command runs in the shell itself: a cd stays.
        let (out, _) = through_sh("cd / && pwd # where");
        assert_eq!(out, "start\n/\nend 0\n");
        let (out, _) = through_sh("fi");
        assert_eq!(out, "start\nend 2\n");
    }

    #[test]
    fn control_characters_and_overlong_lines_are_refused() {
        assert!(quote_command("echo \u{3}")
            .unwrap_err()
            .contains("control character"));
        assert!(quote_command(&"x".repeat(5000))
            .unwrap_err()
            .contains("a terminal takes at most"));
        assert!(quote_command("a\tb").is_ok());
    }
}
