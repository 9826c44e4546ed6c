//! An SSH session: connecting (the host key checked before any
//! authentication), running a command with its output bounded, every wait
//! in short slices that honour the step's deadline and cancellation.

use super::known_hosts::{self, HostKeyPolicy, Verdict};
use drydock_runtime::interrupt::{Interrupt, Interruption};
use rhai::{EvalAltResult, Position};
use ssh2::{BlockDirections, ErrorCode, MethodType, Session};
use std::io::Read;
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// libssh2's "would block" (LIBSSH2_ERROR_EAGAIN).
pub(super) const EAGAIN: i32 = -37;
/// The longest single wait on the socket between interrupt checks.
pub(super) const SLICE: Duration = Duration::from_millis(100);
/// Default bound on TCP connect + handshake + host key + authentication.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default bound on the output kept per stream of one command.
pub(super) const MAX_OUTPUT: usize = 64 << 20;

/// Why an SSH operation did not complete.
#[derive(Debug)]
pub enum SshError {
    /// A message naming host:port, what failed and what to do.
    Failed(String),
    /// The step's deadline passed or the execution was cancelled.
    Interrupted(Interruption),
}

impl SshError {
    pub(super) fn into_rhai(self, pos: Position) -> Box<EvalAltResult> {
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
    pub(super) session: Arc<Mutex<Session>>,
    pub(super) fd: i32,
    pub(super) label: String,
    pub(super) interrupt: Arc<Interrupt>,
}

pub(super) fn lock(m: &Mutex<Session>) -> MutexGuard<'_, Session> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(super) fn would_block(e: &ssh2::Error) -> bool {
    e.code() == ErrorCode::Session(EAGAIN)
}

/// Polls `fd` for `events` for at most `timeout`.
pub(super) fn poll_fd(fd: i32, events: i16, timeout: Duration) -> std::io::Result<()> {
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
pub(super) struct Waiter<'a> {
    pub(super) fd: i32,
    pub(super) label: &'a str,
    pub(super) interrupt: &'a Interrupt,
    /// (deadline, the duration it came from, the option that set it)
    pub(super) limit: Option<(Instant, Duration, &'static str)>,
}

impl Waiter<'_> {
    pub(super) fn wait(&self, session: &Session, what: &str) -> Result<(), SshError> {
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
    pub(super) fn retry<T>(
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
    connect_with(host, opts, interrupt, None)
}

/// As [`connect`], over `tcp` when given (a connection the caller made,
/// e.g. from inside an instance's VPC) instead of connecting to `host`,
/// which then only names the server in messages.
pub fn connect_with(
    host: &str,
    opts: &ConnectOptions,
    interrupt: Arc<Interrupt>,
    tcp: Option<TcpStream>,
) -> Result<SshSession, SshError> {
    let port = opts.port;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let label = format!("ssh {}@{host}:{port}", opts.user);
    let failed = |m: String| SshError::Failed(format!("{label}: {m}"));
    if tcp.is_none() && !known_hosts::valid_host(host) {
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
    let given = tcp;
    let addrs: Vec<_> = if given.is_some() {
        Vec::new()
    } else {
        (host, port)
            .to_socket_addrs()
            .map_err(|e| failed(format!("cannot resolve {host}: {e}; check the host name")))?
            .collect()
    };
    let mut last_err = None;
    let mut tcp = given;
    for addr in addrs.iter().filter(|_| tcp.is_none()) {
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
pub(super) fn check_host_key(
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
        HostKeyPolicy::Announced { instance, digests } => {
            if digests.contains(&known_hosts::digest(&blob)) {
                tracing::info!(%label, %fp, "host key matches the one {instance} announced on its console");
                return Ok(());
            }
            let announced: Vec<String> = digests
                .iter()
                .map(known_hosts::fingerprint_of_digest)
                .collect();
            Err(failed(format!(
                "REFUSED: host key verification failed. {instance} ({host}:{port}) presented {key_type} {fp}, but its serial console announced {}; this may be an impostor, or its key changed without the console saying so. Nothing was sent to it. See what it announced with `drydock console-output {instance}`; if its key really changed, restart its SSH server so that it announces the new one (`service sshd restart` on its console)",
                announced.join(", ")
            )))
        }
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
    pub(super) fn waiter(&self, timeout: Option<Duration>, option: &'static str) -> Waiter<'_> {
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
}

/// Closes a channel whose command is being abandoned, without waiting long.
/// Without a pty the remote command is not killed by this (SSH has no
/// reliable way to do it); it loses its stdout and stderr.
pub(super) fn abandon(session: &Session, fd: i32, ch: &mut ssh2::Channel) {
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

pub(super) fn short(cmd: &str) -> String {
    let one_line = cmd.replace('\n', "⏎");
    match one_line.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

pub(super) fn signal_number(name: &str) -> i64 {
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
