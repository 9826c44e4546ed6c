//! `ssh::connect(host, #{ user, key | password, port })` in Rhai: run
//! commands (stdout, stderr, exit code), upload and download files over
//! SFTP, and open an interactive shell that `expect` can drive.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drydock_runtime::RunContext;
use rhai::{Engine, EvalAltResult, Map, Module, NativeCallContext, Position};
use ssh2::Session;

use crate::console::ExpectHandle;
use crate::expect::{wait_readable, ExpectOptions, Expecter, ReadResult, Transport};

/// A connected, authenticated SSH session.
#[derive(Clone)]
pub struct SshSession {
    session: Arc<Mutex<Session>>,
    fd: i32,
    label: String,
}

fn fail(pos: Position, message: String) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(message.into(), pos).into()
}

/// Connects and authenticates with a key file or a password.
pub fn connect(
    host: &str,
    port: u16,
    user: &str,
    key: Option<&Path>,
    password: Option<&str>,
) -> Result<SshSession, String> {
    let label = format!("ssh {user}@{host}:{port}");
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("{label}: cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{label}: {host} has no address"))?;
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|e| format!("{label}: cannot connect: {e}"))?;
    let fd = tcp.as_raw_fd();
    let mut session = Session::new().map_err(|e| format!("{label}: {e}"))?;
    session.set_tcp_stream(tcp);
    session.set_timeout(30_000);
    session
        .handshake()
        .map_err(|e| format!("{label}: SSH handshake failed: {e}"))?;
    match (key, password) {
        (Some(key), _) => session
            .userauth_pubkey_file(user, None, key, None)
            .map_err(|e| format!("{label}: the server refused key {} ({e})", key.display()))?,
        (None, Some(pw)) => session
            .userauth_password(user, pw)
            .map_err(|e| format!("{label}: the server refused the password ({e})"))?,
        (None, None) => {
            return Err(format!(
                "{label}: give `key` (a private key file) or `password`"
            ))
        }
    }
    if !session.authenticated() {
        return Err(format!("{label}: authentication failed"));
    }
    Ok(SshSession {
        session: Arc::new(Mutex::new(session)),
        fd,
        label,
    })
}

impl SshSession {
    /// Runs a command: (stdout, stderr, exit code).
    pub fn exec(&self, cmd: &str) -> Result<(String, String, i32), String> {
        let session = self.session.lock().unwrap();
        session.set_blocking(true);
        let mut ch = session
            .channel_session()
            .map_err(|e| format!("{}: cannot open a channel: {e}", self.label))?;
        ch.exec(cmd)
            .map_err(|e| format!("{}: cannot run `{cmd}`: {e}", self.label))?;
        let mut stdout = String::new();
        ch.read_to_string(&mut stdout)
            .map_err(|e| format!("{}: reading output of `{cmd}`: {e}", self.label))?;
        let mut stderr = String::new();
        ch.stderr()
            .read_to_string(&mut stderr)
            .map_err(|e| format!("{}: reading errors of `{cmd}`: {e}", self.label))?;
        ch.wait_close()
            .map_err(|e| format!("{}: {e}", self.label))?;
        let code = ch
            .exit_status()
            .map_err(|e| format!("{}: {e}", self.label))?;
        Ok((stdout, stderr, code))
    }

    /// An SFTP channel, with the session held (blocking) while it is used.
    fn sftp(&self) -> Result<(std::sync::MutexGuard<'_, Session>, ssh2::Sftp), String> {
        let session = self.session.lock().unwrap();
        session.set_blocking(true);
        let sftp = session
            .sftp()
            .map_err(|e| format!("{}: SFTP is not available: {e}", self.label))?;
        Ok((session, sftp))
    }

    /// Uploads a local file over SFTP.
    pub fn upload(&self, local: &Path, remote: &str) -> Result<u64, String> {
        let data =
            std::fs::read(local).map_err(|e| format!("cannot read {}: {e}", local.display()))?;
        let (_session, sftp) = self.sftp()?;
        let mut f = sftp
            .create(Path::new(remote))
            .map_err(|e| format!("{}: cannot create {remote}: {e}", self.label))?;
        f.write_all(&data)
            .map_err(|e| format!("{}: writing {remote}: {e}", self.label))?;
        Ok(data.len() as u64)
    }

    /// Downloads a remote file over SFTP (written atomically).
    pub fn download(&self, remote: &str, local: &Path) -> Result<u64, String> {
        let (_session, sftp) = self.sftp()?;
        let mut f = sftp
            .open(Path::new(remote))
            .map_err(|e| format!("{}: cannot open {remote}: {e}", self.label))?;
        let mut data = Vec::new();
        f.read_to_end(&mut data)
            .map_err(|e| format!("{}: reading {remote}: {e}", self.label))?;
        crate::files::write_atomically(local, &data)
            .map_err(|e| format!("cannot write {}: {e}", local.display()))?;
        Ok(data.len() as u64)
    }

    /// An interactive shell on a pty, as an expect transport.
    pub fn shell(&self) -> Result<ShellTransport, String> {
        let session = self.session.lock().unwrap();
        session.set_blocking(true);
        let mut ch = session
            .channel_session()
            .map_err(|e| format!("{}: cannot open a channel: {e}", self.label))?;
        ch.request_pty("vt100", None, Some((200, 50, 0, 0)))
            .map_err(|e| format!("{}: no pty: {e}", self.label))?;
        ch.shell()
            .map_err(|e| format!("{}: no shell: {e}", self.label))?;
        drop(session);
        Ok(ShellTransport {
            ssh: self.clone(),
            channel: ch,
        })
    }
}

/// An SSH shell channel that `expect` drives.
pub struct ShellTransport {
    ssh: SshSession,
    channel: ssh2::Channel,
}

impl Transport for ShellTransport {
    fn read_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> std::io::Result<ReadResult> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            {
                let session = self.ssh.session.lock().unwrap();
                session.set_blocking(false);
                let r = self.channel.read(buf);
                session.set_blocking(true);
                match r {
                    Ok(0) if self.channel.eof() => return Ok(ReadResult::Eof),
                    Ok(0) => {}
                    Ok(n) => return Ok(ReadResult::Data(n)),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(ReadResult::Timeout);
            }
            wait_readable(self.ssh.fd, left.min(Duration::from_millis(100)))?;
        }
    }

    fn send(&mut self, data: &[u8]) -> std::io::Result<()> {
        let _guard = self.ssh.session.lock().unwrap();
        self.channel.write_all(data)?;
        self.channel.flush()
    }

    fn describe(&self) -> String {
        format!("{} (shell)", self.ssh.label)
    }
}

/// Registers the `ssh` module and the methods of SSH sessions.
pub fn install(engine: &mut Engine, ctx: &RunContext) {
    engine.register_type_with_name::<SshSession>("SshSession");
    let mut module = Module::new();
    module.set_native_fn(
        "connect",
        |host: &str, opts: Map| -> Result<SshSession, Box<EvalAltResult>> {
            let get = |k: &str| opts.get(k).and_then(|v| v.clone().into_string().ok());
            let user = get("user").unwrap_or_else(|| "root".into());
            let port = opts.get("port").and_then(|p| p.as_int().ok()).unwrap_or(22);
            let port = u16::try_from(port)
                .map_err(|_| fail(Position::NONE, format!("bad port {port}")))?;
            let key = get("key").map(std::path::PathBuf::from);
            connect(
                host,
                port,
                &user,
                key.as_deref(),
                get("password").as_deref(),
            )
            .map_err(|e| fail(Position::NONE, e))
        },
    );
    engine.register_static_module("ssh", module.into());
    engine.register_fn(
        "exec",
        |ctx: NativeCallContext,
         s: &mut SshSession,
         cmd: &str|
         -> Result<Map, Box<EvalAltResult>> {
            let (stdout, stderr, code) = s.exec(cmd).map_err(|e| fail(ctx.call_position(), e))?;
            let mut m = Map::new();
            m.insert("stdout".into(), stdout.into());
            m.insert("stderr".into(), stderr.into());
            m.insert("exit_code".into(), (code as i64).into());
            Ok(m)
        },
    );
    engine.register_fn(
        "upload",
        |ctx: NativeCallContext, s: &mut SshSession, local: &str, remote: &str| {
            s.upload(Path::new(local), remote)
                .map(|n| n as i64)
                .map_err(|e| fail(ctx.call_position(), e))
        },
    );
    engine.register_fn(
        "download",
        |ctx: NativeCallContext, s: &mut SshSession, remote: &str, local: &str| {
            s.download(remote, Path::new(local))
                .map(|n| n as i64)
                .map_err(|e| fail(ctx.call_position(), e))
        },
    );
    let interrupt = ctx.interrupt.clone();
    let transcripts = ctx.data_dir.join("transcripts");
    let exec_id = ctx.execution_id.clone();
    engine.register_fn(
        "shell",
        move |ctx: NativeCallContext,
              s: &mut SshSession|
              -> Result<ExpectHandle, Box<EvalAltResult>> {
            let transport = s.shell().map_err(|e| fail(ctx.call_position(), e))?;
            let boxed: Box<dyn Transport> = Box::new(transport);
            let mut session = Expecter::new(boxed, ExpectOptions::default());
            if std::fs::create_dir_all(&transcripts).is_ok() {
                let _ = session.record_transcript(&transcripts.join(format!("{exec_id}-ssh.log")));
            }
            Ok(ExpectHandle::new(session, interrupt.clone()))
        },
    );
}
