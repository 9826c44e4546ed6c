//! Host commands.
//!
//! - `shell(cmd)` runs `/bin/sh -c cmd`, returns stdout and fails on a
//!   non-zero exit; `shell_result(cmd)` returns `#{ exit_code, stdout,
//!   stderr }`.
//! - `exec(argv)` and `exec_result(argv)` do the same for a program run
//!   **without a shell**: `argv` is an array whose first element is the
//!   program (looked up in `PATH` when it has no `/`) and whose other
//!   elements are its arguments, passed as they are (strings, or blobs for
//!   bytes that are not UTF-8). Nothing in them is interpreted.
//! - Each of the four takes an optional map: `cwd`, `env` (a map; `()`
//!   removes a variable), `clear_env`, `stdin` (string or blob) and `bytes`
//!   (stdout and stderr as blobs instead of lossy UTF-8 strings).
//! - `shell_quote(s)` returns `s` as one single-quoted POSIX shell word;
//!   `shell_quote([a, b, …])` the words joined by spaces.
//!
//! Every command runs in a session (and process group) of its own. When the
//! step's deadline passes or the execution is cancelled, the whole group
//! gets SIGTERM, then SIGKILL after a short grace. Once the direct child has
//! exited, output is read until the pipes close or nothing is left in the
//! group that could still write (a daemon that left the group does not hold
//! the call).

use std::ffi::{OsStr, OsString};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use drydock_runtime::interrupt::{Interrupt, Interruption};
use drydock_runtime::secrets::Secrets;
use drydock_runtime::RunContext;

use crate::doc::doc;
use rhai::{Array, Blob, Dynamic, Engine, EvalAltResult, Map, NativeCallContext};

/// How long a process group has between SIGTERM and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(2);
/// How often a running command checks for deadlines and cancellation.
const TICK: Duration = Duration::from_millis(20);

/// What a finished command produced, as text (invalid UTF-8 replaced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    pub exit_code: i64,
    pub stdout: String,
    pub stderr: String,
}

/// What a finished command produced, as bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawOutput {
    /// The exit status, or 128 + the signal that killed it.
    pub exit_code: i64,
    /// The signal that killed the command, if one did.
    pub signal: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl RawOutput {
    fn into_text(self) -> CommandOutput {
        CommandOutput {
            exit_code: self.exit_code,
            stdout: lossy(self.stdout),
            stderr: lossy(self.stderr),
        }
    }
}

fn lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Why a command did not produce output.
#[derive(Debug)]
pub enum CommandError {
    Spawn(std::io::Error),
    Interrupted(Interruption),
}

/// A command to run: a program and its arguments, with no shell involved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Invocation {
    pub program: OsString,
    pub args: Vec<OsString>,
    pub cwd: Option<PathBuf>,
    /// Variables to set (`Some`) or remove (`None`).
    pub env: Vec<(OsString, Option<OsString>)>,
    /// Start from an empty environment.
    pub clear_env: bool,
    /// Bytes written to the command's stdin (otherwise stdin is /dev/null).
    pub stdin: Option<Vec<u8>>,
}

impl Invocation {
    /// `/bin/sh -c script`.
    pub fn shell(script: &str) -> Self {
        Self {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            ..Self::default()
        }
    }

    /// A program and its arguments. Fails on an empty argv, an empty
    /// program name, or a NUL byte anywhere (the OS cannot pass those).
    pub fn argv(argv: Vec<OsString>) -> Result<Self, String> {
        let mut it = argv.into_iter();
        let program = it
            .next()
            .ok_or("the argv is empty: give at least the program")?;
        if program.is_empty() {
            return Err("the program name (argv[0]) is empty".into());
        }
        let args: Vec<OsString> = it.collect();
        for (i, a) in std::iter::once(&program).chain(&args).enumerate() {
            if a.as_bytes().contains(&0) {
                return Err(format!(
                    "argv[{i}] contains a NUL byte, which no program can receive: {}",
                    display_word(a)
                ));
            }
        }
        Ok(Self {
            program,
            args,
            ..Self::default()
        })
    }

    /// The command line as an operator would type it (for messages).
    pub fn display(&self) -> String {
        let mut words = vec![display_word(&self.program)];
        words.extend(self.args.iter().map(|a| display_word(a)));
        let line = words.join(" ");
        truncate(&line, 300)
    }
}

/// Runs `/bin/sh -c script`, honouring `interrupt`.
pub fn run_command(script: &str, interrupt: &Interrupt) -> Result<CommandOutput, CommandError> {
    run(&Invocation::shell(script), interrupt).map(RawOutput::into_text)
}

/// Runs `inv` in a new session and process group, collecting stdout and
/// stderr, and stops the whole group (SIGTERM, then SIGKILL after
/// [`KILL_GRACE`]) when `interrupt` fires.
pub fn run(inv: &Invocation, interrupt: &Interrupt) -> Result<RawOutput, CommandError> {
    interrupt.check().map_err(CommandError::Interrupted)?;
    let mut cmd = Command::new(&inv.program);
    cmd.args(&inv.args)
        .stdin(if inv.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if inv.clear_env {
        cmd.env_clear();
    }
    for (k, v) in &inv.env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    if let Some(dir) = &inv.cwd {
        cmd.current_dir(dir);
    }
    // A new session makes the child the leader of a new process group
    // (pgid = its pid) with no controlling terminal, so the group can be
    // signalled as a whole and nothing in it can stop on terminal I/O.
    // SAFETY: the closure runs in the forked child before exec and only calls setsid(2), which is async-signal-safe, allocates nothing and touches no memory shared with the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(CommandError::Spawn)?;
    let pgid = child.id() as libc::pid_t;
    tracing::debug!(pid = pgid, command = %inv.display(), "started command");
    let mut pipes = Pipes::new(&mut child, inv.stdin.clone());
    // Reading /proc for the group's members is not free: at most every 200 ms.
    let mut last_group_check: Option<Instant> = None;
    let mut group_live = true;
    loop {
        // The child is observed with WNOWAIT and reaped only at the end: while
        // it is a zombie its pid (= the group's id) cannot be reused, so every
        // signal sent to -pgid reaches this command's group and no other.
        let exited = child_exited(pgid);
        if exited
            && !pipes.closed()
            && last_group_check.is_none_or(|t| t.elapsed() >= Duration::from_millis(200))
        {
            last_group_check = Some(Instant::now());
            group_live = group_has_live_members(pgid);
        }
        if exited && (pipes.closed() || !group_live) {
            // Whatever is already in the pipes is part of the output.
            pipes.pump(Duration::ZERO);
            break;
        }
        if let Err(why) = interrupt.check() {
            tracing::info!(pid = pgid, command = %inv.display(), reason = ?why, "stopping command and its process group");
            stop_group(pgid, &mut child);
            return Err(CommandError::Interrupted(why));
        }
        if !pipes.pump(TICK) {
            thread::sleep(TICK);
        }
    }
    let status = child.wait().map_err(CommandError::Spawn)?;
    let (stdout, stderr) = pipes.into_output();
    let (exit_code, signal) = exit_code(status);
    tracing::debug!(pid = pgid, exit_code, "command finished");
    Ok(RawOutput {
        exit_code,
        signal,
        stdout,
        stderr,
    })
}

fn exit_code(status: ExitStatus) -> (i64, Option<i32>) {
    match (status.code(), status.signal()) {
        (Some(c), _) => (i64::from(c), None),
        (None, Some(s)) => (128 + i64::from(s), Some(s)),
        (None, None) => (-1, None),
    }
}

/// Whether the child has exited, without reaping it.
fn child_exited(pid: libc::pid_t) -> bool {
    // SAFETY: an all-zero siginfo_t is a valid value for this plain C struct.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid(2) writes only into `info`, which lives for the call;
    // WNOWAIT leaves the child waitable, so std's Child::wait reaps it later.
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if r == 0 {
        // SAFETY: si_pid is valid to read after waitid filled `info` (it stays
        // 0 when WNOHANG found nothing to report).
        return unsafe { info.si_pid() } == pid;
    }
    // ECHILD: nothing left to wait for (already reaped); EINTR: ask again.
    std::io::Error::last_os_error().kind() != ErrorKind::Interrupted
}

/// Whether any process (zombies included) is left in the process group.
fn group_alive(pgid: libc::pid_t) -> bool {
    // SAFETY: kill(2) with signal 0 only checks that the group exists; no
    // signal is sent and no memory is touched.
    let r = unsafe { libc::kill(-pgid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

fn signal_group(pgid: libc::pid_t, signal: libc::c_int) {
    // The child is not reaped yet, so its group id still belongs to it.
    // SAFETY: kill(2) with a negative pid signals the process group of the child we started (setsid made it the leader); no memory is touched.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// SIGTERM to the group, SIGKILL to whatever is left after the grace, then
/// reap the child. Does not wait for the pipes.
fn stop_group(pgid: libc::pid_t, child: &mut Child) {
    signal_group(pgid, libc::SIGTERM);
    // A stopped process only sees the SIGTERM once it runs again.
    signal_group(pgid, libc::SIGCONT);
    let end = Instant::now() + KILL_GRACE;
    loop {
        // Only the group's zombies left (the direct child among them): done.
        if child_exited(pgid) && !group_has_live_members(pgid) {
            break;
        }
        if Instant::now() >= end {
            tracing::warn!(
                pid = pgid,
                "process group still alive {KILL_GRACE:?} after SIGTERM; sending SIGKILL"
            );
            break;
        }
        thread::sleep(TICK);
    }
    signal_group(pgid, libc::SIGKILL);
    let _ = child.wait();
}

/// Whether the group has members that are not zombies (read from /proc: a
/// zombie still counts for kill(2), and nothing may ever reap one whose
/// parent is an init that does not reap).
fn group_has_live_members(pgid: libc::pid_t) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return group_alive(pgid);
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        if !name.as_bytes().iter().all(u8::is_ascii_digit) {
            continue;
        }
        let Ok(stat) = std::fs::read(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp …; comm may contain spaces and parens.
        let Some(close) = stat.iter().rposition(|&b| b == b')') else {
            continue;
        };
        let rest = String::from_utf8_lossy(&stat[close + 1..]);
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("");
        let _ppid = fields.next();
        let pgrp: Option<libc::pid_t> = fields.next().and_then(|f| f.parse().ok());
        if pgrp == Some(pgid) && state != "Z" && state != "X" {
            return true;
        }
    }
    false
}

/// The child's pipes, read (and written, for stdin) without blocking.
struct Pipes {
    stdout: Option<std::process::ChildStdout>,
    stderr: Option<std::process::ChildStderr>,
    stdin: Option<std::process::ChildStdin>,
    input: Vec<u8>,
    written: usize,
    out: Vec<u8>,
    err: Vec<u8>,
}

impl Pipes {
    fn new(child: &mut Child, input: Option<Vec<u8>>) -> Self {
        let stdin = child.stdin.take();
        if let Some(s) = &stdin {
            set_nonblocking(s.as_raw_fd());
        }
        let mut p = Self {
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            stdin,
            input: input.unwrap_or_default(),
            written: 0,
            out: Vec::new(),
            err: Vec::new(),
        };
        if p.input.is_empty() {
            p.stdin = None; // EOF right away
        }
        p
    }

    fn closed(&self) -> bool {
        self.stdout.is_none() && self.stderr.is_none()
    }

    /// Waits up to `timeout` for any pipe to be ready, then moves data.
    /// Returns false when there was nothing left to wait on.
    fn pump(&mut self, timeout: Duration) -> bool {
        let mut fds = Vec::with_capacity(3);
        if let Some(s) = &self.stdout {
            fds.push(pollfd(s.as_raw_fd(), libc::POLLIN));
        }
        if let Some(s) = &self.stderr {
            fds.push(pollfd(s.as_raw_fd(), libc::POLLIN));
        }
        if let Some(s) = &self.stdin {
            fds.push(pollfd(s.as_raw_fd(), libc::POLLOUT));
        }
        if fds.is_empty() {
            return false;
        }
        let ms = timeout.as_millis().min(1000) as libc::c_int;
        // SAFETY: `fds` is a live, correctly sized array of pollfd for the
        // duration of the call; poll(2) only writes their revents fields.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n <= 0 {
            return true;
        }
        let ready = |fd: i32| fds.iter().any(|p| p.fd == fd && p.revents != 0);
        if let Some(s) = &mut self.stdout {
            if ready(s.as_raw_fd()) && !read_some(s, &mut self.out) {
                self.stdout = None;
            }
        }
        if let Some(s) = &mut self.stderr {
            if ready(s.as_raw_fd()) && !read_some(s, &mut self.err) {
                self.stderr = None;
            }
        }
        if let Some(s) = &mut self.stdin {
            if ready(s.as_raw_fd()) {
                match s.write(&self.input[self.written..]) {
                    Ok(n) => self.written += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    // EPIPE: the command does not read its input; fine.
                    Err(_) => self.written = self.input.len(),
                }
                if self.written >= self.input.len() {
                    self.stdin = None; // closes it: EOF for the command
                }
            }
        }
        true
    }

    fn into_output(self) -> (Vec<u8>, Vec<u8>) {
        (self.out, self.err)
    }
}

fn pollfd(fd: i32, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// One read from a pipe poll said is ready; false at EOF or on an error.
fn read_some(r: &mut impl Read, into: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 64 * 1024];
    match r.read(&mut buf) {
        Ok(0) => false,
        Ok(n) => {
            into.extend_from_slice(&buf[..n]);
            true
        }
        Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::WouldBlock) => true,
        Err(_) => false,
    }
}

fn set_nonblocking(fd: i32) {
    // SAFETY: fcntl(2) on a file descriptor we own (the write end of the
    // child's stdin pipe); F_GETFL/F_SETFL touch no memory.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags != -1 {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
}

/// `s` as one single-quoted POSIX shell word: `'` becomes `'\''`; nothing
/// inside single quotes is special to the shell (`$`, backquotes, `\`,
/// newlines, globs). Fails on a NUL byte, which no shell word can hold.
pub fn shell_quote(s: &str) -> Result<String, String> {
    if s.contains('\0') {
        return Err(format!(
            "cannot quote a string that contains a NUL byte: {}",
            truncate(&format!("{s:?}"), 200)
        ));
    }
    let mut q = String::with_capacity(s.len() + 2);
    q.push('\'');
    for c in s.chars() {
        if c == '\'' {
            q.push_str("'\\''");
        } else {
            q.push(c);
        }
    }
    q.push('\'');
    Ok(q)
}

/// A word for messages: bare when it is plainly safe, quoted otherwise, with
/// control characters and invalid UTF-8 escaped so a message stays one line.
fn display_word(w: &OsStr) -> String {
    let bytes = w.as_bytes();
    let plain = !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./_-".contains(b));
    if plain {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.chars().any(char::is_control) => {
            shell_quote(s).unwrap_or_else(|_| format!("{s:?}"))
        }
        _ => {
            // $'…' with escapes, as bash prints such words.
            let mut out = String::from("$'");
            for chunk in bytes.utf8_chunks() {
                for c in chunk.valid().chars() {
                    match c {
                        '\'' => out.push_str("\\'"),
                        '\\' => out.push_str("\\\\"),
                        '\n' => out.push_str("\\n"),
                        '\t' => out.push_str("\\t"),
                        c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
                        c => out.push(c),
                    }
                }
                for b in chunk.invalid() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            }
            out.push('\'');
            out
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.trim_end().lines().collect();
    truncate(&all[all.len().saturating_sub(lines)..].join("\n"), 2000)
}

fn signal_name(s: i32) -> String {
    let name = match s {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        _ => return format!("signal {s}"),
    };
    format!("signal {s} ({name})")
}

/// The error of a command that ran but failed: status or signal, and the
/// last lines of stderr (or of stdout when stderr is empty).
fn failure_message(what: &str, out: &RawOutput) -> String {
    let how = match out.signal {
        Some(s) => format!("was killed by {}", signal_name(s)),
        None => format!("exited with status {}", out.exit_code),
    };
    let stderr = lossy(out.stderr.clone());
    let stdout = lossy(out.stdout.clone());
    let detail = if !stderr.trim().is_empty() {
        format!("; last lines of stderr:\n{}", tail(&stderr, 5))
    } else if !stdout.trim().is_empty() {
        format!(
            "; stderr was empty; last lines of stdout:\n{}",
            tail(&stdout, 5)
        )
    } else {
        "; it printed nothing".to_string()
    };
    format!("{what} {how}{detail}")
}

fn spawn_message(inv: &Invocation, shown: &str, io: &std::io::Error) -> String {
    if let Some(dir) = &inv.cwd {
        if !dir.is_dir() {
            return format!(
                "cannot run {shown}: the working directory {} is not a directory",
                display_word(dir.as_os_str())
            );
        }
    }
    let has_slash = inv.program.as_bytes().contains(&b'/');
    match io.kind() {
        ErrorKind::NotFound if !has_slash => format!(
            "cannot run {shown}: no program named {} in PATH",
            display_word(&inv.program)
        ),
        ErrorKind::NotFound => format!(
            "cannot run {shown}: {} does not exist",
            display_word(&inv.program)
        ),
        ErrorKind::PermissionDenied => format!(
            "cannot run {shown}: permission denied (is {} executable?)",
            display_word(&inv.program)
        ),
        _ => format!("cannot run {shown}: {io}"),
    }
}

/// Options shared by `shell`, `shell_result`, `exec` and `exec_result`.
#[derive(Debug, Default)]
struct Options {
    bytes: bool,
}

const OPTION_KEYS: &str = "cwd, env, clear_env, stdin, bytes";

fn apply_options(inv: &mut Invocation, opts: &Map) -> Result<Options, String> {
    let mut o = Options::default();
    for (key, value) in opts {
        match key.as_str() {
            "cwd" => {
                let dir = value
                    .clone()
                    .into_immutable_string()
                    .map_err(|t| format!("option cwd must be a string, not {t}"))?;
                if dir.contains('\0') {
                    return Err("option cwd contains a NUL byte".into());
                }
                inv.cwd = Some(PathBuf::from(dir.as_str()));
            }
            "env" => {
                let vars = value.clone().try_cast::<Map>().ok_or(
                    "option env must be a map of variable names to strings (or () to remove)",
                )?;
                for (name, v) in vars {
                    if name.is_empty() || name.contains('=') || name.contains('\0') {
                        return Err(format!("option env: invalid variable name {name:?}"));
                    }
                    let v = if v.is_unit() {
                        None
                    } else {
                        let s = v.into_immutable_string().map_err(|t| {
                            format!(
                                "option env: the value of {name} must be a string or (), not {t}"
                            )
                        })?;
                        if s.contains('\0') {
                            return Err(format!(
                                "option env: the value of {name} contains a NUL byte"
                            ));
                        }
                        Some(OsString::from(s.as_str()))
                    };
                    inv.env.push((OsString::from(name.as_str()), v));
                }
            }
            "clear_env" => {
                inv.clear_env = value
                    .as_bool()
                    .map_err(|t| format!("option clear_env must be a bool, not {t}"))?;
            }
            "stdin" => {
                inv.stdin = Some(if value.is_blob() {
                    value.clone().cast::<Blob>()
                } else {
                    value
                        .clone()
                        .into_immutable_string()
                        .map_err(|t| format!("option stdin must be a string or a blob, not {t}"))?
                        .as_bytes()
                        .to_vec()
                });
            }
            "bytes" => {
                o.bytes = value
                    .as_bool()
                    .map_err(|t| format!("option bytes must be a bool, not {t}"))?;
            }
            other => {
                return Err(format!(
                    "unknown option `{other}` (known options: {OPTION_KEYS})"
                ))
            }
        }
    }
    Ok(o)
}

/// The argv of `exec` from a Rhai array: strings, or blobs for raw bytes.
fn argv_from_rhai(argv: &Array) -> Result<Invocation, String> {
    let mut words = Vec::with_capacity(argv.len());
    for (i, item) in argv.iter().enumerate() {
        if item.is_blob() {
            words.push(OsString::from_vec(item.clone().cast::<Blob>()));
        } else if item.is_string() {
            let s = item.clone().into_immutable_string().unwrap_or_default();
            words.push(OsString::from(s.as_str()));
        } else {
            return Err(format!(
                "argv[{i}] is {} ({item}); every element must be a string (or a blob of bytes)",
                item.type_name()
            ));
        }
    }
    Invocation::argv(words)
}

fn runtime_error(ctx: &NativeCallContext, msg: String) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(msg.into(), ctx.call_position()).into()
}

/// Runs `inv` for a Rhai call; `shown` names the command in messages.
fn call(
    ctx: &NativeCallContext,
    interrupt: &Interrupt,
    inv: &Invocation,
    shown: &str,
) -> Result<RawOutput, Box<EvalAltResult>> {
    run(inv, interrupt).map_err(|e| match e {
        CommandError::Spawn(io) => runtime_error(ctx, spawn_message(inv, shown, &io)),
        CommandError::Interrupted(why) => why.into_rhai(ctx.call_position()),
    })
}

fn output_value(bytes: Vec<u8>, as_bytes: bool) -> Dynamic {
    if as_bytes {
        Dynamic::from_blob(bytes)
    } else {
        lossy(bytes).into()
    }
}

fn result_map(out: RawOutput, as_bytes: bool) -> Map {
    let mut map = Map::new();
    map.insert("exit_code".into(), Dynamic::from(out.exit_code));
    map.insert("stdout".into(), output_value(out.stdout, as_bytes));
    map.insert("stderr".into(), output_value(out.stderr, as_bytes));
    map
}

/// What a Rhai call runs, and how the result is returned.
struct Prepared {
    inv: Invocation,
    shown: String,
    opts: Options,
}

fn prepare_shell(script: &str, opts: Option<&Map>) -> Result<Prepared, String> {
    if script.contains('\0') {
        return Err("the shell command contains a NUL byte".into());
    }
    let mut inv = Invocation::shell(script);
    let opts = match opts {
        Some(m) => apply_options(&mut inv, m)?,
        None => Options::default(),
    };
    Ok(Prepared {
        inv,
        shown: format!("command `{}`", truncate(script, 300)),
        opts,
    })
}

fn prepare_exec(argv: &Array, opts: Option<&Map>) -> Result<Prepared, String> {
    let mut inv = argv_from_rhai(argv)?;
    let opts = match opts {
        Some(m) => apply_options(&mut inv, m)?,
        None => Options::default(),
    };
    let shown = format!("command `{}`", inv.display());
    Ok(Prepared { inv, shown, opts })
}

/// Refuses a command whose command line holds a secret value (or a form
/// of one, see [`Secrets`]): every local user can read a command line in
/// `ps` and /proc while it runs.
fn no_secret_in_argv(p: Prepared, secrets: &Secrets) -> Result<Prepared, String> {
    let words = std::iter::once(&p.inv.program).chain(p.inv.args.iter());
    for (i, w) in words.enumerate() {
        if secrets.contains_secret(&w.to_string_lossy()) {
            let which = if i == 0 {
                "its program name".to_string()
            } else {
                format!("its argument {i}")
            };
            return Err(format!(
                "{} was not run: {which} holds a secret value, and every local user can read a command line (`ps`, /proc) while it runs. \
                 Pass the secret in the environment (`#{{ env: #{{ PASSWORD: value }} }}`, then \"$PASSWORD\" in the shell) or on standard input (`#{{ stdin: value }}`)",
                secrets.mask(&p.shown)
            ));
        }
    }
    Ok(p)
}

/// Runs and returns stdout, or fails when the command did not exit with 0.
fn checked(
    ctx: &NativeCallContext,
    interrupt: &Interrupt,
    p: Result<Prepared, String>,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let p = p.map_err(|m| runtime_error(ctx, m))?;
    let out = call(ctx, interrupt, &p.inv, &p.shown)?;
    if out.exit_code != 0 {
        return Err(runtime_error(ctx, failure_message(&p.shown, &out)));
    }
    Ok(output_value(out.stdout, p.opts.bytes))
}

/// Runs and returns `#{ exit_code, stdout, stderr }` whatever the status.
fn unchecked(
    ctx: &NativeCallContext,
    interrupt: &Interrupt,
    p: Result<Prepared, String>,
) -> Result<Map, Box<EvalAltResult>> {
    let p = p.map_err(|m| runtime_error(ctx, m))?;
    let out = call(ctx, interrupt, &p.inv, &p.shown)?;
    Ok(result_map(out, p.opts.bytes))
}

const OPTIONS_DOC: &str = "Options: `cwd` (a directory), `env` (`#{ NAME: \"value\" }`, `()` removes one), `clear_env` (start from an empty environment), `stdin` (a string or a blob), `bytes` (blobs instead of text).";

/// Registers `shell`, `shell_result`, `exec`, `exec_result` and `shell_quote`.
pub fn install(engine: &mut Engine, ctx: &RunContext) {
    let i: Arc<Interrupt> = ctx.interrupt.clone();
    let sec = ctx.secrets.clone();
    doc("shell(script)", &[
        "Runs a shell script (`sh -c`) on this host; returns its stdout.",
        "Fails on a non-zero exit (the error has the status and the output), a step timeout or a cancellation.",
        "Example: `shell(\"df -h /\")`",
    ])
    .register(engine, move |ctx: NativeCallContext, script: &str| {
        checked(
            &ctx,
            &i,
            prepare_shell(script, None).and_then(|p| no_secret_in_argv(p, &sec)),
        )
    });
    let i: Arc<Interrupt> = ctx.interrupt.clone();
    let sec = ctx.secrets.clone();
    doc(
        "shell(script, options)",
        &[
            "Runs a shell script on this host, with options; returns its stdout.",
            OPTIONS_DOC,
            "Example: `shell(\"make\", #{ cwd: \"/srv/app\", env: #{ CC: \"gcc\" } })`",
        ],
    )
    .register(
        engine,
        move |ctx: NativeCallContext, script: &str, opts: Map| {
            checked(
                &ctx,
                &i,
                prepare_shell(script, Some(&opts)).and_then(|p| no_secret_in_argv(p, &sec)),
            )
        },
    );
    let i: Arc<Interrupt> = ctx.interrupt.clone();
    let sec = ctx.secrets.clone();
    doc("shell_result(script)", &[
        "Runs a shell script on this host: `#{ exit_code, stdout, stderr }`, whatever its exit status.",
        "Fails only when it cannot run, on a step timeout or a cancellation.",
        "Example: `if shell_result(\"systemctl is-active nginx\").exit_code != 0 { … }`",
    ])
    .register(
        engine,
        move |ctx: NativeCallContext, script: &str| {
            unchecked(
                &ctx,
                &i,
                prepare_shell(script, None).and_then(|p| no_secret_in_argv(p, &sec)),
            )
        },
    );
    let i: Arc<Interrupt> = ctx.interrupt.clone();
    let sec = ctx.secrets.clone();
    doc(
        "shell_result(script, options)",
        &[
            "Runs a shell script on this host, with options: `#{ exit_code, stdout, stderr }`.",
            OPTIONS_DOC,
        ],
    )
    .register(
        engine,
        move |ctx: NativeCallContext, script: &str, opts: Map| {
            unchecked(
                &ctx,
                &i,
                prepare_shell(script, Some(&opts)).and_then(|p| no_secret_in_argv(p, &sec)),
            )
        },
    );
    let i: Arc<Interrupt> = ctx.interrupt.clone();
    let sec = ctx.secrets.clone();
    doc("exec(argv)", &[
        "Runs a program without a shell (arguments passed as they are, nothing interpreted); returns its stdout.",
        "Use it for anything built from data. Fails on a non-zero exit, a missing program, a step timeout or a cancellation.",
        "Example: `exec([\"rm\", \"-f\", \"--\", name])`",
    ])
    .register(engine, move |ctx: NativeCallContext, argv: Array| {
        checked(
            &ctx,
            &i,
            prepare_exec(&argv, None).and_then(|p| no_secret_in_argv(p, &sec)),
        )
    });
    let i: Arc<Interrupt> = ctx.interrupt.clone();
    let sec = ctx.secrets.clone();
    doc(
        "exec(argv, options)",
        &[
            "Runs a program without a shell, with options; returns its stdout.",
            OPTIONS_DOC,
        ],
    )
    .register(
        engine,
        move |ctx: NativeCallContext, argv: Array, opts: Map| {
            checked(
                &ctx,
                &i,
                prepare_exec(&argv, Some(&opts)).and_then(|p| no_secret_in_argv(p, &sec)),
            )
        },
    );
    let i: Arc<Interrupt> = ctx.interrupt.clone();
    let sec = ctx.secrets.clone();
    doc("exec_result(argv)", &[
        "Runs a program without a shell: `#{ exit_code, stdout, stderr }`, whatever its exit status.",
        "Fails only when it cannot run, on a step timeout or a cancellation.",
    ])
    .register(engine, move |ctx: NativeCallContext, argv: Array| {
        unchecked(
            &ctx,
            &i,
            prepare_exec(&argv, None).and_then(|p| no_secret_in_argv(p, &sec)),
        )
    });
    let i: Arc<Interrupt> = ctx.interrupt.clone();
    let sec = ctx.secrets.clone();
    doc(
        "exec_result(argv, options)",
        &[
            "Runs a program without a shell, with options: `#{ exit_code, stdout, stderr }`.",
            OPTIONS_DOC,
        ],
    )
    .register(
        engine,
        move |ctx: NativeCallContext, argv: Array, opts: Map| {
            unchecked(
                &ctx,
                &i,
                prepare_exec(&argv, Some(&opts)).and_then(|p| no_secret_in_argv(p, &sec)),
            )
        },
    );
    doc(
        "shell_quote(word)",
        &[
            "One single-quoted POSIX shell word holding `word` exactly.",
            "Fails on a NUL byte, which no shell word can hold.",
            "Example: `shell(\"ls -l \" + shell_quote(path))`",
        ],
    )
    .register(
        engine,
        |ctx: NativeCallContext, s: &str| -> Result<String, Box<EvalAltResult>> {
            shell_quote(s).map_err(|m| runtime_error(&ctx, m))
        },
    );
    doc(
        "shell_quote(words)",
        &[
            "Quoted POSIX shell words, separated by spaces, one for each string of the array.",
            "Fails on an element that is not a string or holds a NUL byte.",
            "Example: `shell_quote([\"printf\", \"%s\", name])`",
        ],
    )
    .register(
        engine,
        |ctx: NativeCallContext, words: Array| -> Result<String, Box<EvalAltResult>> {
            let mut out = Vec::with_capacity(words.len());
            for (i, w) in words.into_iter().enumerate() {
                let s = w.into_immutable_string().map_err(|t| {
                    runtime_error(
                        &ctx,
                        format!("shell_quote: element {i} is {t}, not a string"),
                    )
                })?;
                out.push(shell_quote(&s).map_err(|m| runtime_error(&ctx, m))?);
            }
            Ok(out.join(" "))
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Invocation {
        Invocation::argv(words.iter().map(OsString::from).collect()).unwrap()
    }

    #[test]
    fn captures_output_and_status() {
        let out = run_command("echo out; echo err >&2; exit 3", &Interrupt::never()).unwrap();
        assert_eq!(
            out,
            CommandOutput {
                exit_code: 3,
                stdout: "out\n".into(),
                stderr: "err\n".into()
            }
        );
    }

    #[test]
    fn a_passed_deadline_kills_the_whole_group() {
        let i = Interrupt::never();
        i.push_deadline(Instant::now() + Duration::from_millis(100));
        let start = Instant::now();
        let r = run_command("sleep 30 & sleep 30; wait", &i);
        assert!(matches!(
            r,
            Err(CommandError::Interrupted(Interruption::DeadlinePassed))
        ));
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_background_job_holding_the_pipes_does_not_outlive_the_deadline() {
        let i = Interrupt::never();
        i.push_deadline(Instant::now() + Duration::from_millis(300));
        let start = Instant::now();
        let r = run_command("sleep 30 &", &i);
        assert!(
            matches!(
                r,
                Err(CommandError::Interrupted(Interruption::DeadlinePassed))
            ),
            "{r:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_stopped_job_is_woken_to_take_its_sigterm() {
        let i = Interrupt::never();
        i.push_deadline(Instant::now() + Duration::from_millis(300));
        let start = Instant::now();
        let r = run_command("sleep 30 & kill -STOP $!; sleep 30", &i);
        assert!(matches!(r, Err(CommandError::Interrupted(_))), "{r:?}");
        assert!(
            start.elapsed() < KILL_GRACE,
            "waited for the grace: {:?}",
            start.elapsed()
        );
    }

    #[test]
    fn a_background_job_with_its_output_elsewhere_does_not_hold_the_call() {
        let start = Instant::now();
        let out = run_command("sleep 3 >/dev/null 2>&1 & echo done", &Interrupt::never()).unwrap();
        assert_eq!(out.stdout, "done\n");
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn output_written_by_a_background_job_before_the_pipes_close_is_kept() {
        let out = run_command("(sleep 0.3; echo late) & echo early", &Interrupt::never()).unwrap();
        assert_eq!(out.stdout, "early\nlate\n");
    }

    #[test]
    fn exec_passes_arguments_verbatim() {
        let hostile = [
            "a';touch PWNED;echo '",
            "$(touch X)",
            "`id`",
            "-rf",
            "a\nb",
            " ",
            "",
        ];
        let mut words = vec!["printf", "<%s>"];
        words.extend(hostile);
        let out = run(&argv(&words), &Interrupt::never()).unwrap();
        let expected: String = hostile.iter().map(|h| format!("<{h}>")).collect();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);
    }

    #[test]
    fn exec_options_cwd_env_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let mut inv = argv(&["sh", "-c", "pwd; echo \"$DD_X\"; cat"]);
        inv.cwd = Some(dir.path().to_path_buf());
        inv.env.push(("DD_X".into(), Some("x y".into())));
        inv.stdin = Some(b"from stdin".to_vec());
        let out = run(&inv, &Interrupt::never()).unwrap();
        let expected = format!(
            "{}\nx y\nfrom stdin",
            dir.path().canonicalize().unwrap().display()
        );
        assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);
    }

    #[test]
    fn large_stdin_and_output_do_not_deadlock() {
        let mut inv = argv(&["cat"]);
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        inv.stdin = Some(big.clone());
        let out = run(&inv, &Interrupt::never()).unwrap();
        assert_eq!(out.stdout, big);
    }

    #[test]
    fn nul_bytes_and_empty_argv_are_refused() {
        assert!(Invocation::argv(vec![]).unwrap_err().contains("empty"));
        assert!(Invocation::argv(vec!["".into()])
            .unwrap_err()
            .contains("empty"));
        let e = Invocation::argv(vec!["rm".into(), "a\0b".into()]).unwrap_err();
        assert!(e.contains("argv[1] contains a NUL byte"), "{e}");
        assert!(shell_quote("a\0b").is_err());
    }

    #[test]
    fn shell_quote_round_trips_through_sh() {
        let hostile = [
            "plain",
            "",
            "it's",
            "''",
            "a';touch PWNED;echo '",
            "$(touch X)",
            "`touch Y`",
            "-rf",
            "--",
            "new\nline",
            "back\\slash",
            "*",
            "~root",
            "${HOME}",
            "é ü \u{1F600}",
            "!event",
        ];
        for h in hostile {
            let script = format!("printf '%s' {}", shell_quote(h).unwrap());
            let out = run_command(&script, &Interrupt::never()).unwrap();
            assert_eq!(out.stdout, h, "{script}");
            assert_eq!(out.exit_code, 0);
        }
    }

    #[test]
    fn messages_name_the_command_and_what_went_wrong() {
        let out = run(&argv(&["sh", "-c", "kill -TERM $$"]), &Interrupt::never()).unwrap();
        assert_eq!(out.signal, Some(libc::SIGTERM));
        let m = failure_message("command `x`", &out);
        assert!(m.contains("killed by signal 15 (SIGTERM)"), "{m}");
        let out = run_command("echo only-stdout; exit 4", &Interrupt::never()).unwrap();
        let raw = RawOutput {
            exit_code: out.exit_code,
            signal: None,
            stdout: out.stdout.into_bytes(),
            stderr: vec![],
        };
        let m = failure_message("command `x`", &raw);
        assert!(m.contains("status 4") && m.contains("only-stdout"), "{m}");
        let inv = argv(&["drydock-no-such-program-xyz"]);
        let Err(CommandError::Spawn(io)) = run(&inv, &Interrupt::never()) else {
            panic!("spawned a program that does not exist");
        };
        let m = spawn_message(&inv, "command `x`", &io);
        assert!(
            m.contains("no program named drydock-no-such-program-xyz in PATH"),
            "{m}"
        );
        assert_eq!(display_word(OsStr::new("a\nb")), "$'a\\nb'");
        assert_eq!(display_word(OsStr::from_bytes(b"a\xffb")), "$'a\\xffb'");
        assert_eq!(display_word(OsStr::new("it's")), "'it'\\''s'");
    }
}
