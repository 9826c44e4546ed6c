//! Running one command: in a session and process group of its own, its
//! output read from non-blocking pipes, the whole group stopped (SIGTERM,
//! then SIGKILL) at the step's deadline or a cancellation, and done once
//! nothing left in the group can still write.

use std::ffi::OsString;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use drydock_runtime::interrupt::{Interrupt, Interruption};

use super::words::{display_word, truncate};

/// How long a process group has between SIGTERM and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(2);
/// How often a running command checks for deadlines and cancellation.
pub(super) const TICK: Duration = Duration::from_millis(20);

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

pub(super) fn lossy(bytes: Vec<u8>) -> String {
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

pub(super) fn exit_code(status: ExitStatus) -> (i64, Option<i32>) {
    match (status.code(), status.signal()) {
        (Some(c), _) => (i64::from(c), None),
        (None, Some(s)) => (128 + i64::from(s), Some(s)),
        (None, None) => (-1, None),
    }
}

/// Whether the child has exited, without reaping it.
pub(super) fn child_exited(pid: libc::pid_t) -> bool {
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
pub(super) fn group_alive(pgid: libc::pid_t) -> bool {
    // SAFETY: kill(2) with signal 0 only checks that the group exists; no
    // signal is sent and no memory is touched.
    let r = unsafe { libc::kill(-pgid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

pub(super) fn signal_group(pgid: libc::pid_t, signal: libc::c_int) {
    // The child is not reaped yet, so its group id still belongs to it.
    // SAFETY: kill(2) with a negative pid signals the process group of the child we started (setsid made it the leader); no memory is touched.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// SIGTERM to the group, SIGKILL to whatever is left after the grace, then
/// reap the child. Does not wait for the pipes.
pub(super) fn stop_group(pgid: libc::pid_t, child: &mut Child) {
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
pub(super) fn group_has_live_members(pgid: libc::pid_t) -> bool {
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
pub(super) struct Pipes {
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

pub(super) fn pollfd(fd: i32, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// One read from a pipe poll said is ready; false at EOF or on an error.
pub(super) fn read_some(r: &mut impl Read, into: &mut Vec<u8>) -> bool {
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

pub(super) fn set_nonblocking(fd: i32) {
    // SAFETY: fcntl(2) on a file descriptor we own (the write end of the
    // child's stdin pipe); F_GETFL/F_SETFL touch no memory.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags != -1 {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
}
