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

mod command;
mod handle;
mod login;

pub use command::{command_line, quote_command};
pub use handle::ExpectHandle;
use handle::*;

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use drydock_host::console_client::{connect, ConsoleStart};
use drydock_host::HostStore;
use drydock_runtime::RunContext;
use rhai::{Array, Dynamic, Engine, EvalAltResult, Map, Module, NativeCallContext, Position};

use crate::doc::doc;
use crate::expect::{ExpectOptions, Expecter, FdTransport, Pattern};

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
