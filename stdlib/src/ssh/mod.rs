//! `ssh::connect(host, #{ user, key | password, port, host_key, known_hosts,
//! connect_timeout })` in Rhai: run commands (stdout and stderr read
//! together, as text and, on request, as exact bytes), upload and download
//! files over SFTP, and open an interactive shell that `expect` can drive.
//!
//! Safety:
//! - the server's host key is checked against drydock's own known_hosts
//!   (`DATA_DIR/ssh/known_hosts`) before any authentication, so an impostor
//!   never sees a password or a signature ([`known_hosts`]);
//! - the session is non-blocking: every wait polls the socket in short
//!   slices and honours the step's deadline and `drydock cancel`
//!   ([`Interrupt`]), so a quiet command may run as long as its step allows
//!   and no longer;
//! - output is collected as bytes (invalid UTF-8 never fails a call) and
//!   bounded (`max_output`), and nothing the server sends can panic.

pub mod known_hosts;

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use drydock_runtime::duration::parse_duration;
use drydock_runtime::interrupt::{Interrupt, Interruption};
use drydock_runtime::RunContext;
use rhai::{Blob, Dynamic, Engine, EvalAltResult, Map, Module, NativeCallContext, Position};
use ssh2::{BlockDirections, ErrorCode, MethodType, OpenFlags, OpenType, Session};

use crate::console::ExpectHandle;
use crate::doc::doc;
use crate::expect::{ExpectOptions, Expecter, ReadResult, Transport};
use known_hosts::{HostKeyPolicy, Verdict};

/// libssh2's "would block" (LIBSSH2_ERROR_EAGAIN).
const EAGAIN: i32 = -37;
/// The longest single wait on the socket between interrupt checks.
const SLICE: Duration = Duration::from_millis(100);
/// Default bound on TCP connect + handshake + host key + authentication.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default bound on the output kept per stream of one command.
const MAX_OUTPUT: usize = 64 << 20;

/// Why an SSH operation did not complete.
#[derive(Debug)]
pub enum SshError {
    /// A message naming host:port, what failed and what to do.
    Failed(String),
    /// The step's deadline passed or the execution was cancelled.
    Interrupted(Interruption),
}

impl SshError {
    fn into_rhai(self, pos: Position) -> Box<EvalAltResult> {
        match self {
            Self::Failed(m) => EvalAltResult::ErrorRuntime(m.into(), pos).into(),
            Self::Interrupted(i) => i.into_rhai(pos),
        }
    }
}

impl std::fmt::Display for SshError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Failed(m) => f.write_str(m),
            Self::Interrupted(Interruption::Cancelled) => f.write_str("cancelled"),
            Self::Interrupted(Interruption::DeadlinePassed) => f.write_str("step deadline passed"),
        }
    }
}

/// How to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub port: u16,
    pub user: String,
    pub key: Option<PathBuf>,
    pub password: Option<String>,
    pub host_key: HostKeyPolicy,
    pub known_hosts: PathBuf,
    pub connect_timeout: Duration,
}

/// What one command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i64,
    /// The signal that ended the command, as the server names it (`TERM`).
    pub signal: Option<String>,
}

/// Options of one `exec`.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    pub timeout: Option<Duration>,
    pub max_output: usize,
}

impl Default for ExecOptions {
    fn default() -> Self {
        Self {
            timeout: None,
            max_output: MAX_OUTPUT,
        }
    }
}

/// A connected, authenticated SSH session (non-blocking underneath).
#[derive(Clone)]
pub struct SshSession {
    session: Arc<Mutex<Session>>,
    fd: i32,
    label: String,
    interrupt: Arc<Interrupt>,
}

fn lock(m: &Mutex<Session>) -> MutexGuard<'_, Session> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn would_block(e: &ssh2::Error) -> bool {
    e.code() == ErrorCode::Session(EAGAIN)
}

/// Polls `fd` for `events` for at most `timeout`.
fn poll_fd(fd: i32, events: i16, timeout: Duration) -> std::io::Result<()> {
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: poll(2) on one pollfd that lives on this stack frame, for at
    // most `ms` milliseconds; no other memory is touched.
    let r = unsafe { libc::poll(&mut pfd, 1, ms) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

/// Waits for the socket between attempts of a non-blocking operation,
/// honouring the interrupt and an optional per-call deadline.
struct Waiter<'a> {
    fd: i32,
    label: &'a str,
    interrupt: &'a Interrupt,
    /// (deadline, the duration it came from, the option that set it)
    limit: Option<(Instant, Duration, &'static str)>,
}

impl Waiter<'_> {
    fn wait(&self, session: &Session, what: &str) -> Result<(), SshError> {
        self.interrupt.check().map_err(SshError::Interrupted)?;
        let mut slice = SLICE;
        if let Some(d) = self.interrupt.nearest_deadline() {
            slice = slice.min(d.saturating_duration_since(Instant::now()));
        }
        if let Some((at, limit, option)) = self.limit {
            let left = at.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(SshError::Failed(format!(
                    "{}: {what} did not finish within {limit:?} (the `{option}` option); give it more time or find out why the server is slow",
                    self.label
                )));
            }
            slice = slice.min(left);
        }
        let events = match session.block_directions() {
            BlockDirections::Outbound => libc::POLLOUT,
            BlockDirections::Both => libc::POLLIN | libc::POLLOUT,
            _ => libc::POLLIN,
        };
        poll_fd(self.fd, events, slice.max(Duration::from_millis(1)))
            .map_err(|e| SshError::Failed(format!("{}: waiting for the server: {e}", self.label)))
    }

    /// Calls `f` until it stops saying "would block".
    fn retry<T>(
        &self,
        session: &Session,
        what: &str,
        mut f: impl FnMut(&Session) -> Result<T, ssh2::Error>,
    ) -> Result<T, SshError> {
        loop {
            match f(session) {
                Ok(v) => return Ok(v),
                Err(e) if would_block(&e) => self.wait(session, what)?,
                Err(e) => return Err(SshError::Failed(format!("{}: {what}: {e}", self.label))),
            }
        }
    }
}

/// Connects, checks the host key, then authenticates with a key file or a
/// password.
pub fn connect(
    host: &str,
    opts: &ConnectOptions,
    interrupt: Arc<Interrupt>,
) -> Result<SshSession, SshError> {
    let port = opts.port;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let label = format!("ssh {}@{host}:{port}", opts.user);
    let failed = |m: String| SshError::Failed(format!("{label}: {m}"));
    if !known_hosts::valid_host(host) {
        return Err(failed(format!(
            "{host:?} is not a host name or address (letters, digits, `.-_:%` only)"
        )));
    }
    match (&opts.key, &opts.password) {
        (Some(k), _) if !k.is_file() => {
            return Err(failed(format!(
                "no private key file at {}; give `key` the path of a readable private key",
                k.display()
            )))
        }
        (None, None) => {
            return Err(failed(
                "give `key` (a private key file) or `password`".into(),
            ))
        }
        _ => {}
    }
    let started = Instant::now();
    let until = started + opts.connect_timeout;
    let waiter = Waiter {
        fd: -1,
        label: &label,
        interrupt: &interrupt,
        limit: Some((until, opts.connect_timeout, "connect_timeout")),
    };
    interrupt.check().map_err(SshError::Interrupted)?;
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|e| failed(format!("cannot resolve {host}: {e}; check the host name")))?
        .collect();
    let mut last_err = None;
    let mut tcp = None;
    for addr in &addrs {
        let mut left = until.saturating_duration_since(Instant::now());
        if let Some(d) = interrupt.nearest_deadline() {
            left = left.min(d.saturating_duration_since(Instant::now()));
        }
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(addr, left) {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last_err = Some(e),
        }
    }
    interrupt.check().map_err(SshError::Interrupted)?;
    let tcp = tcp.ok_or_else(|| match last_err {
        Some(e) => failed(format!(
            "cannot connect: {e}; check that sshd runs there and that port {port} is reachable"
        )),
        None if addrs.is_empty() => failed(format!("{host} has no address")),
        None => failed(format!(
            "cannot connect within {:?} (`connect_timeout`)",
            opts.connect_timeout
        )),
    })?;
    let _ = tcp.set_nodelay(true);
    let fd = tcp.as_raw_fd();
    let waiter = Waiter { fd, ..waiter };
    let mut session = Session::new().map_err(|e| failed(format!("{e}")))?;
    session.set_tcp_stream(tcp);
    session.set_blocking(false);
    // Only for what ssh2 does in blocking mode on its own (freeing channels
    // and SFTP handles): never wait forever there.
    session.set_timeout(5_000);

    // What known_hosts says about this host, before talking to it.
    let name = known_hosts::host_name(host, port);
    let text = match drydock_runtime::input_file::read_to_string(
        &opts.known_hosts,
        drydock_runtime::input_file::InputKind::KnownHosts,
    ) {
        Ok(t) => t,
        Err(e) if e.is_not_found() => String::new(),
        Err(e) => return Err(failed(e.to_string())),
    };
    let entries =
        if opts.host_key == HostKeyPolicy::Strict || opts.host_key == HostKeyPolicy::AcceptNew {
            known_hosts::entries_for(&text, &name)
        } else {
            Vec::new()
        };
    if let Some(algos) = known_hosts::preferred_algorithms(&entries) {
        if let Err(e) = session.method_pref(MethodType::HostKey, &algos) {
            tracing::debug!(%label, %algos, "host key algorithm preference not set: {e}");
        }
    }
    loop {
        match session.handshake() {
            Ok(()) => break,
            Err(e) if would_block(&e) => waiter.wait(&session, "the SSH handshake")?,
            Err(e) => {
                return Err(failed(format!(
                    "SSH handshake failed: {e}; is this an SSH server on port {port}?"
                )))
            }
        }
    }

    check_host_key(&session, host, port, &label, &entries, opts)?;

    let user = opts.user.as_str();
    let auth: Result<(), SshError> = match (&opts.key, &opts.password) {
        (Some(key), _) => waiter
            .retry(&session, "public-key authentication", |s| {
                s.userauth_pubkey_file(user, None, key, None)
            })
            .map_err(|e| match e {
                SshError::Failed(m) => SshError::Failed(format!(
                    "{label}: the server refused key {} ({m}); check that its public key is in ~{user}/.ssh/authorized_keys there and that `user` is right",
                    key.display()
                )),
                other => other,
            }),
        (None, Some(pw)) => waiter
            .retry(&session, "password authentication", |s| {
                s.userauth_password(user, pw)
            })
            .map_err(|e| match e {
                SshError::Failed(_) => SshError::Failed(format!(
                    "{label}: the server refused the password for {user}; check the user and password, and that the server allows password logins"
                )),
                other => other,
            }),
        (None, None) => Err(failed("give `key` or `password`".into())),
    };
    auth?;
    if !session.authenticated() {
        return Err(failed("authentication failed".into()));
    }
    tracing::info!(%label, elapsed = ?started.elapsed(), "ssh connected");
    Ok(SshSession {
        session: Arc::new(Mutex::new(session)),
        fd,
        label,
        interrupt,
    })
}

/// Applies the host-key policy to the key the server presented.
fn check_host_key(
    session: &Session,
    host: &str,
    port: u16,
    label: &str,
    entries: &[known_hosts::Entry],
    opts: &ConnectOptions,
) -> Result<(), SshError> {
    let failed = |m: String| SshError::Failed(format!("{label}: {m}"));
    let blob = session
        .host_key()
        .map(|(b, _)| b.to_vec())
        .ok_or_else(|| failed("the server presented no host key".into()))?;
    let key_type = known_hosts::key_type(&blob)
        .ok_or_else(|| failed("the server's host key is malformed; refusing".into()))?;
    let fp = known_hosts::fingerprint(&blob);
    let file = opts.known_hosts.display();
    let name = known_hosts::host_name(host, port);
    let remove_hint = format!("ssh-keygen -R '{name}' -f {file}");
    match &opts.host_key {
        HostKeyPolicy::Pinned(want) => {
            if known_hosts::digest(&blob) == *want {
                tracing::info!(%label, %fp, "host key matches the pinned fingerprint");
                return Ok(());
            }
            Err(failed(format!(
                "REFUSED: host key verification failed. {host}:{port} presented {key_type} {fp} but host_key pins {}; this may be an impostor (man-in-the-middle). Nothing was sent to it. If the server's key really changed, check the new fingerprint out of band (on the server: ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub) and update the pin",
                known_hosts::fingerprint_of_digest(want)
            )))
        }
        policy => match known_hosts::check(entries, &blob) {
            Verdict::Known { line } => {
                tracing::debug!(%label, %fp, line, "host key known");
                Ok(())
            }
            Verdict::Revoked { line } => Err(failed(format!(
                "REFUSED: the host key {key_type} {fp} of {host}:{port} is marked @revoked in {file} line {line}"
            ))),
            Verdict::Changed { recorded } => {
                tracing::warn!(%label, %fp, line = recorded.line, "host key CHANGED; refusing");
                Err(failed(format!(
                    "REFUSED: WARNING: THE HOST KEY OF {host}:{port} HAS CHANGED. Someone may be impersonating this host (man-in-the-middle), or its keys were regenerated. It presented {key_type} {fp}; {file} line {} records {} {}. Nothing was sent to it (no password, no key). If the change is expected, check the new fingerprint out of band, then remove the old line ({remove_hint}) and connect with host_key: \"accept-new\", or pin host_key: \"{fp}\"",
                    recorded.line,
                    recorded.key_type,
                    known_hosts::fingerprint(&recorded.blob)
                )))
            }
            Verdict::Unknown if *policy == HostKeyPolicy::AcceptNew => {
                let line = known_hosts::append(&opts.known_hosts, &name, &key_type, &blob)
                    .map_err(|e| {
                        failed(format!("cannot record the host key in {file}: {e}"))
                    })?;
                tracing::warn!(%label, %fp, %key_type, known_hosts = %file, line, "new host key recorded (accept-new)");
                Ok(())
            }
            Verdict::Unknown => Err(failed(format!(
                "REFUSED: the host key of {host}:{port} is not known: it presented {key_type} {fp}, and {file} has no line for {name}. Check the fingerprint out of band (on the server: ssh-keygen -lf /etc/ssh/ssh_host_{}_key.pub), then connect with host_key: \"accept-new\" to record it, or pin it with host_key: \"{fp}\"",
                key_type.trim_start_matches("ssh-").split('-').next().unwrap_or("ed25519")
            ))),
        },
    }
}

impl SshSession {
    fn waiter(&self, timeout: Option<Duration>, option: &'static str) -> Waiter<'_> {
        Waiter {
            fd: self.fd,
            label: &self.label,
            interrupt: &self.interrupt,
            limit: timeout.map(|t| (Instant::now() + t, t, option)),
        }
    }

    /// The label used in messages: `ssh user@host:port`.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Runs a command; stdout and stderr are read together, as bytes.
    pub fn exec(&self, cmd: &str, opts: &ExecOptions) -> Result<ExecOutput, SshError> {
        let session = lock(&self.session);
        let w = self.waiter(opts.timeout, "timeout");
        let mut ch = w.retry(&session, "opening a channel", |s| s.channel_session())?;
        let shown = short(cmd);
        let result = (|| {
            w.retry(&session, &format!("starting `{shown}`"), |_| ch.exec(cmd))?;
            // No stdin: a command that reads it sees end of file at once.
            w.retry(&session, "closing stdin", |_| ch.send_eof())?;
            let mut out = Vec::new();
            let mut err = Vec::new();
            let mut buf = vec![0u8; 32 * 1024];
            let what = format!("`{shown}`");
            loop {
                let mut progressed = false;
                for (id, sink, name) in [(0, &mut out, "stdout"), (1, &mut err, "stderr")] {
                    loop {
                        match ch.stream(id).read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => {
                                progressed = true;
                                if sink.len() + n > opts.max_output {
                                    return Err(SshError::Failed(format!(
                                        "{}: `{shown}` wrote more than {} bytes to {name}; raise `max_output`, or write to a file on the server and download it",
                                        self.label, opts.max_output
                                    )));
                                }
                                sink.extend_from_slice(&buf[..n]);
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(e) => {
                                return Err(SshError::Failed(format!(
                                    "{}: reading {name} of `{shown}`: {e}",
                                    self.label
                                )))
                            }
                        }
                    }
                }
                if !progressed {
                    if ch.eof() {
                        break;
                    }
                    w.wait(&session, &what)?;
                }
            }
            w.retry(&session, &what, |_| ch.close())?;
            w.retry(&session, &what, |_| ch.wait_close())?;
            let status = ch.exit_status().unwrap_or(-1);
            let signal = ch.exit_signal().ok().and_then(|s| s.exit_signal);
            let exit_code = match &signal {
                Some(sig) => 128 + signal_number(sig),
                None => i64::from(status),
            };
            Ok(ExecOutput {
                stdout: out,
                stderr: err,
                exit_code,
                signal,
            })
        })();
        if let Err(e) = &result {
            tracing::warn!(label = %self.label, cmd = %shown, "ssh exec stopped: {e}");
            abandon(&session, self.fd, &mut ch);
        }
        result
    }

    /// An SFTP channel, with the session held while it is used.
    fn sftp(&self, w: &Waiter) -> Result<(MutexGuard<'_, Session>, ssh2::Sftp), SshError> {
        let session = lock(&self.session);
        let sftp = w
            .retry(&session, "starting SFTP", |s| s.sftp())
            .map_err(|e| match e {
                SshError::Failed(m) => SshError::Failed(format!(
                "{m}; the server must offer the sftp subsystem (`Subsystem sftp` in sshd_config)"
            )),
                other => other,
            })?;
        Ok((session, sftp))
    }

    /// Uploads a local file over SFTP, streaming it; returns its size.
    pub fn upload(
        &self,
        local: &Path,
        remote: &str,
        timeout: Option<Duration>,
    ) -> Result<u64, SshError> {
        let mut src = std::fs::File::open(local)
            .map_err(|e| SshError::Failed(format!("cannot read {}: {e}", local.display())))?;
        let w = self.waiter(timeout, "timeout");
        let (session, sftp) = self.sftp(&w)?;
        let what = format!("uploading to {remote}");
        let mut f = w.retry(&session, &what, |_| {
            sftp.open_mode(
                Path::new(remote),
                OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE,
                0o644,
                OpenType::File,
            )
        })?;
        let mut buf = vec![0u8; 32 * 1024];
        let mut total = 0u64;
        loop {
            let n = src
                .read(&mut buf)
                .map_err(|e| SshError::Failed(format!("cannot read {}: {e}", local.display())))?;
            if n == 0 {
                break;
            }
            let mut off = 0;
            while off < n {
                match f.write(&buf[off..n]) {
                    Ok(0) => {
                        return Err(SshError::Failed(format!(
                            "{}: writing {remote}: the server accepted no data",
                            self.label
                        )))
                    }
                    Ok(k) => off += k,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        w.wait(&session, &what)?
                    }
                    Err(e) => {
                        return Err(SshError::Failed(format!(
                            "{}: writing {remote}: {e}; check free space and permissions there",
                            self.label
                        )))
                    }
                }
            }
            total += n as u64;
        }
        w.retry(&session, &what, |_| f.close())?;
        Ok(total)
    }

    /// Downloads a remote file over SFTP, byte for byte, into a temporary
    /// file next to `local` that is renamed over it when complete.
    pub fn download(
        &self,
        remote: &str,
        local: &Path,
        timeout: Option<Duration>,
    ) -> Result<u64, SshError> {
        let w = self.waiter(timeout, "timeout");
        let (session, sftp) = self.sftp(&w)?;
        let what = format!("downloading {remote}");
        let mut f = w
            .retry(&session, &what, |_| sftp.open(Path::new(remote)))
            .map_err(|e| match e {
                SshError::Failed(m) => {
                    SshError::Failed(format!("{m}; check that {remote} exists and is readable"))
                }
                other => other,
            })?;
        let (tmp, mut dst) = temp_next_to(local).map_err(|e| {
            SshError::Failed(format!("cannot write next to {}: {e}", local.display()))
        })?;
        let result = (|| {
            let mut buf = vec![0u8; 32 * 1024];
            let mut total = 0u64;
            loop {
                match f.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        dst.write_all(&buf[..n]).map_err(|e| {
                            SshError::Failed(format!("cannot write {}: {e}", tmp.display()))
                        })?;
                        total += n as u64;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        w.wait(&session, &what)?
                    }
                    Err(e) => {
                        return Err(SshError::Failed(format!(
                            "{}: reading {remote}: {e}",
                            self.label
                        )))
                    }
                }
            }
            let _ = w.retry(&session, &what, |_| f.close());
            dst.sync_all()
                .and_then(|()| std::fs::rename(&tmp, local))
                .map_err(|e| SshError::Failed(format!("cannot write {}: {e}", local.display())))?;
            Ok(total)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// An interactive shell on a pty, as an expect transport.
    pub fn shell(&self) -> Result<ShellTransport, SshError> {
        let session = lock(&self.session);
        let w = self.waiter(Some(CONNECT_TIMEOUT), "connect_timeout");
        let mut ch = w.retry(&session, "opening a channel", |s| s.channel_session())?;
        w.retry(&session, "asking for a pty", |_| {
            ch.request_pty("vt100", None, Some((200, 50, 0, 0)))
        })?;
        w.retry(&session, "starting a shell", |_| ch.shell())?;
        drop(session);
        Ok(ShellTransport {
            ssh: self.clone(),
            channel: ch,
        })
    }
}

/// Closes a channel whose command is being abandoned, without waiting long.
/// Without a pty the remote command is not killed by this (SSH has no
/// reliable way to do it); it loses its stdout and stderr.
fn abandon(session: &Session, fd: i32, ch: &mut ssh2::Channel) {
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        match ch.close() {
            Err(e) if would_block(&e) => {
                let _ = poll_fd(fd, libc::POLLIN | libc::POLLOUT, Duration::from_millis(20));
            }
            _ => break,
        }
    }
    let _ = session;
}

fn short(cmd: &str) -> String {
    let one_line = cmd.replace('\n', "⏎");
    match one_line.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

fn signal_number(name: &str) -> i64 {
    match name.trim_start_matches("SIG") {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ILL" => 4,
        "ABRT" => 6,
        "FPE" => 8,
        "KILL" => 9,
        "USR1" => 10,
        "SEGV" => 11,
        "USR2" => 12,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        _ => 127,
    }
}

fn temp_next_to(target: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mode = std::fs::metadata(target)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
        .unwrap_or(0o600);
    for n in 0..100u32 {
        let candidate = dir.join(format!(".{name}.download.{}.{n}", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&candidate)
        {
            Ok(f) => return Ok((candidate, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free temporary file name"))
}

/// An SSH shell channel that `expect` drives.
pub struct ShellTransport {
    ssh: SshSession,
    channel: ssh2::Channel,
}

impl Transport for ShellTransport {
    fn read_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> std::io::Result<ReadResult> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let _session = lock(&self.ssh.session);
                match self.channel.read(buf) {
                    Ok(0) if self.channel.eof() => return Ok(ReadResult::Eof),
                    Ok(0) => {}
                    Ok(n) => return Ok(ReadResult::Data(n)),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(ReadResult::Timeout);
            }
            poll_fd(self.ssh.fd, libc::POLLIN, left.min(SLICE))?;
        }
    }

    fn send(&mut self, data: &[u8]) -> std::io::Result<()> {
        // No flush: ssh2's flush discards unread *incoming* data.
        let stalled_at = Instant::now() + Duration::from_secs(60);
        let mut off = 0;
        while off < data.len() {
            let r = {
                let _session = lock(&self.ssh.session);
                self.channel.write(&data[off..])
            };
            match r {
                Ok(n) => off += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if self.ssh.interrupt.check().is_err() {
                        return Err(std::io::Error::other("interrupted while sending"));
                    }
                    if Instant::now() >= stalled_at {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "the server has accepted nothing for 60s",
                        ));
                    }
                    poll_fd(self.ssh.fd, libc::POLLIN | libc::POLLOUT, SLICE)?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("{} (shell)", self.ssh.label)
    }
}

fn fail(pos: Position, message: String) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(message.into(), pos).into()
}

fn duration_option(opts: &Map, key: &str) -> Result<Option<Duration>, String> {
    match opts.get(key) {
        None => Ok(None),
        Some(v) if v.is_unit() => Ok(None),
        Some(v) if v.is_int() => {
            let secs = v.as_int().unwrap_or(0);
            u64::try_from(secs)
                .map(|s| Some(Duration::from_secs(s)))
                .map_err(|_| format!("`{key}` must not be negative"))
        }
        Some(v) if v.is_string() => parse_duration(&v.clone().into_string().unwrap_or_default())
            .map(Some)
            .map_err(|e| format!("`{key}`: {e}")),
        Some(v) => Err(format!(
            "`{key}` must be a duration like \"30s\", got {}",
            v.type_name()
        )),
    }
}

fn string_option(opts: &Map, key: &str) -> Result<Option<String>, String> {
    match opts.get(key) {
        None => Ok(None),
        Some(v) if v.is_unit() => Ok(None),
        Some(v) if v.is_string() => Ok(v.clone().into_string().ok()),
        Some(v) => Err(format!("`{key}` must be a string, got {}", v.type_name())),
    }
}

fn check_keys(opts: &Map, allowed: &[&str], what: &str) -> Result<(), String> {
    for k in opts.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(format!(
                "{what}: unknown option `{k}`; known: {}",
                allowed.join(", ")
            ));
        }
    }
    Ok(())
}

const CONNECT_KEYS: &[&str] = &[
    "user",
    "key",
    "password",
    "port",
    "host_key",
    "known_hosts",
    "connect_timeout",
];

/// Reads the options map of `ssh::connect`.
pub fn connect_options(opts: &Map, data_dir: &Path) -> Result<ConnectOptions, String> {
    check_keys(opts, CONNECT_KEYS, "ssh::connect")?;
    let port = match opts.get("port") {
        None => 22,
        Some(p) => {
            let n = p
                .as_int()
                .map_err(|t| format!("`port` must be a number, got {t}"))?;
            u16::try_from(n)
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("bad port {n}: use 1..65535"))?
        }
    };
    let host_key = match string_option(opts, "host_key")? {
        None => HostKeyPolicy::Strict,
        Some(t) => HostKeyPolicy::parse(&t)?,
    };
    let known_hosts = string_option(opts, "known_hosts")?
        .map(PathBuf::from)
        .unwrap_or_else(|| data_dir.join("ssh").join("known_hosts"));
    Ok(ConnectOptions {
        port,
        user: string_option(opts, "user")?.unwrap_or_else(|| "root".into()),
        key: string_option(opts, "key")?.map(PathBuf::from),
        password: string_option(opts, "password")?,
        host_key,
        known_hosts,
        connect_timeout: duration_option(opts, "connect_timeout")?.unwrap_or(CONNECT_TIMEOUT),
    })
}

fn exec_map(out: ExecOutput, bytes: bool) -> Map {
    let mut m = Map::new();
    let utf8 = std::str::from_utf8(&out.stdout).is_ok() && std::str::from_utf8(&out.stderr).is_ok();
    m.insert(
        "stdout".into(),
        String::from_utf8_lossy(&out.stdout).into_owned().into(),
    );
    m.insert(
        "stderr".into(),
        String::from_utf8_lossy(&out.stderr).into_owned().into(),
    );
    m.insert("exit_code".into(), out.exit_code.into());
    m.insert("utf8".into(), utf8.into());
    if let Some(sig) = out.signal {
        m.insert("signal".into(), sig.into());
    }
    if bytes {
        m.insert(
            "stdout_bytes".into(),
            Dynamic::from_blob(out.stdout as Blob),
        );
        m.insert(
            "stderr_bytes".into(),
            Dynamic::from_blob(out.stderr as Blob),
        );
    }
    m
}

fn exec_with(
    s: &SshSession,
    pos: Position,
    cmd: &str,
    opts: &Map,
) -> Result<Map, Box<EvalAltResult>> {
    let bad = |m: String| fail(pos, format!("{}: exec: {m}", s.label));
    check_keys(opts, &["timeout", "bytes", "max_output"], "exec").map_err(bad)?;
    let timeout = duration_option(opts, "timeout").map_err(bad)?;
    let bytes = match opts.get("bytes") {
        None => false,
        Some(v) => v
            .as_bool()
            .map_err(|t| bad(format!("`bytes` must be true or false, got {t}")))?,
    };
    let max_output = match opts.get("max_output") {
        None => MAX_OUTPUT,
        Some(v) => v
            .as_int()
            .ok()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| bad("`max_output` must be a number of bytes".into()))?,
    };
    let out = s
        .exec(
            cmd,
            &ExecOptions {
                timeout,
                max_output,
            },
        )
        .map_err(|e| e.into_rhai(pos))?;
    Ok(exec_map(out, bytes))
}

fn transfer_timeout(
    s: &SshSession,
    pos: Position,
    opts: &Map,
) -> Result<Option<Duration>, Box<EvalAltResult>> {
    check_keys(opts, &["timeout"], "transfer")
        .and_then(|()| duration_option(opts, "timeout"))
        .map_err(|m| fail(pos, format!("{}: {m}", s.label)))
}

fn upload_with(
    s: &SshSession,
    pos: Position,
    local: &str,
    remote: &str,
    opts: &Map,
) -> Result<i64, Box<EvalAltResult>> {
    let timeout = transfer_timeout(s, pos, opts)?;
    s.upload(Path::new(local), remote, timeout)
        .map(|n| n as i64)
        .map_err(|e| e.into_rhai(pos))
}

fn download_with(
    s: &SshSession,
    pos: Position,
    remote: &str,
    local: &str,
    opts: &Map,
) -> Result<i64, Box<EvalAltResult>> {
    let timeout = transfer_timeout(s, pos, opts)?;
    s.download(remote, Path::new(local), timeout)
        .map(|n| n as i64)
        .map_err(|e| e.into_rhai(pos))
}

/// Registers the `ssh` module and the methods of SSH sessions.
pub fn install(engine: &mut Engine, ctx: &RunContext) {
    engine.register_type_with_name::<SshSession>("SshSession");
    let mut module = Module::new();
    let interrupt = ctx.interrupt.clone();
    let data_dir = ctx.data_dir.clone();
    doc("ssh::connect(host, options)", &[
        "An SSH connection to `host`, its host key checked before authenticating.",
        "Options: `user` (default root), `key` (a private key file), `password`, `port` (22), `host_key`: `\"strict\"` (default: an unknown host is refused, with its fingerprint), `\"accept-new\"` or a pinned `\"SHA256:…\"`; `known_hosts` (another file), `connect_timeout` (30s). A changed key is always refused.",
        "Example: `let h = ssh::connect(\"10.0.0.5\", #{ user: \"root\", key: \"/root/.ssh/id_ed25519\" });`",
    ])
    .set_in(
        &mut module,
        move |host: &str, opts: Map| -> Result<SshSession, Box<EvalAltResult>> {
            let o = connect_options(&opts, &data_dir)
                .map_err(|e| fail(Position::NONE, format!("ssh {host}: {e}")))?;
            connect(host, &o, interrupt.clone()).map_err(|e| e.into_rhai(Position::NONE))
        },
    );
    engine.register_static_module("ssh", module.into());
    doc("SshSession.exec(command)", &[
        "Runs a remote command: `#{ stdout, stderr, exit_code, utf8 }` whatever its exit status (`utf8`: whether the output was valid UTF-8; invalid bytes never fail a call).",
        "Runs as long as its step allows. Example: `h.exec(\"uptime\").stdout`",
    ])
    .register(
        engine,
        |ctx: NativeCallContext, s: &mut SshSession, cmd: &str| {
            exec_with(s, ctx.call_position(), cmd, &Map::new())
        },
    );
    doc("SshSession.exec(command, options)", &[
        "Runs a remote command, with options: `timeout` (a catchable error; the channel is closed), `bytes: true` (adds the exact `stdout_bytes` / `stderr_bytes`), `max_output` (bytes kept).",
        "Example: `h.exec(\"cat /dev/vda1 | head -c 4\", #{ timeout: \"5s\", bytes: true })`",
    ])
    .register(
        engine,
        |ctx: NativeCallContext, s: &mut SshSession, cmd: &str, opts: Map| {
            exec_with(s, ctx.call_position(), cmd, &opts)
        },
    );
    doc(
        "SshSession.upload(local, remote)",
        &["Copies a local file to the remote host over SFTP; returns its size in bytes."],
    )
    .register(
        engine,
        |ctx: NativeCallContext, s: &mut SshSession, local: &str, remote: &str| {
            upload_with(s, ctx.call_position(), local, remote, &Map::new())
        },
    );
    doc("SshSession.upload(local, remote, options)", &[
        "Copies a local file to the remote host, with options: `timeout`; returns its size in bytes.",
    ])
    .register(
        engine,
        |ctx: NativeCallContext, s: &mut SshSession, local: &str, remote: &str, opts: Map| {
            upload_with(s, ctx.call_position(), local, remote, &opts)
        },
    );
    doc("SshSession.download(remote, local)", &[
        "Copies a remote file to `local` over SFTP, byte for byte (renamed into place when complete); returns its size in bytes.",
    ])
    .register(
        engine,
        |ctx: NativeCallContext, s: &mut SshSession, remote: &str, local: &str| {
            download_with(s, ctx.call_position(), remote, local, &Map::new())
        },
    );
    doc(
        "SshSession.download(remote, local, options)",
        &["Copies a remote file to `local`, with options: `timeout`; returns its size in bytes."],
    )
    .register(
        engine,
        |ctx: NativeCallContext, s: &mut SshSession, remote: &str, local: &str, opts: Map| {
            download_with(s, ctx.call_position(), remote, local, &opts)
        },
    );
    let interrupt = ctx.interrupt.clone();
    let transcripts = ctx.data_dir.join("transcripts");
    let exec_id = ctx.execution_id.clone();
    let secrets = ctx.secrets.clone();
    doc(
        "SshSession.shell()",
        &["An expect session on a remote interactive shell (the methods of `ExpectSession`)."],
    )
    .register(
        engine,
        move |ctx: NativeCallContext,
              s: &mut SshSession|
              -> Result<ExpectHandle, Box<EvalAltResult>> {
            let transport = s.shell().map_err(|e| e.into_rhai(ctx.call_position()))?;
            let boxed: Box<dyn Transport> = Box::new(transport);
            let mut session = Expecter::new(boxed, ExpectOptions::default());
            if std::fs::create_dir_all(&transcripts).is_ok() {
                let _ = session
                    .record_transcript(&transcripts.join(format!("{exec_id}-ssh.log")), &secrets);
            }
            Ok(ExpectHandle::new(session, interrupt.clone()))
        },
    );
}
