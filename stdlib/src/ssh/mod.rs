//! `ssh::connect(host, #{ user, key | password, port, host_key, known_hosts,
//! connect_timeout })` in Rhai (`host` may be a drydock instance: its
//! address inside its VPC, its host key the one its console announced): run commands (stdout and stderr read
//! together, as text and, on request, as exact bytes), upload and download
//! files over SFTP, and open an interactive shell that `expect` can drive.
//!
//! Safety:
//! - the server's host key is checked against drydock's own known_hosts
//!   (`DATA_DIR/ssh/known_hosts`) before any authentication, so an impostor
//!   never sees a password or a signature ([`known_hosts`]);
//! - the session is non-blocking: every wait polls the socket in short
//!   slices and honours the step's deadline and `drydock cancel`
//!   (`drydock_runtime::interrupt::Interrupt`), so a quiet command may run as long as its step allows
//!   and no longer;
//! - output is collected as bytes (invalid UTF-8 never fails a call) and
//!   bounded (`max_output`), and nothing the server sends can panic.

pub mod known_hosts;
mod session;
mod shell;
mod transfer;

use session::*;
pub use session::{ConnectOptions, ExecOptions, ExecOutput, SshError, SshSession};
pub use shell::ShellTransport;

use std::path::{Path, PathBuf};
use std::time::Duration;

use drydock_runtime::duration::parse_duration;
use drydock_runtime::RunContext;
use rhai::{Blob, Dynamic, Engine, EvalAltResult, Map, Module, NativeCallContext, Position};

use crate::console::ExpectHandle;
use crate::doc::doc;
use crate::expect::{ExpectOptions, Expecter, Transport};
use known_hosts::HostKeyPolicy;

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

/// `i-` and hex digits: a drydock instance, not a host name.
fn is_instance_id(s: &str) -> bool {
    s.strip_prefix("i-")
        .is_some_and(|h| !h.is_empty() && h.len() <= 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Where an instance's SSH server is, and the keys it announced.
struct InstanceTarget {
    vpc_id: String,
    address: std::net::SocketAddr,
    digests: Vec<[u8; 32]>,
}

fn instance_target(
    open_host: &dyn Fn() -> Result<drydock_host::Host, drydock_host::HostError>,
    id: &str,
    port: u16,
) -> Result<InstanceTarget, String> {
    let host = open_host().map_err(|e| e.to_string())?;
    let store = host.store().map_err(|e| e.to_string())?;
    let rec = store.instance(id).map_err(|e| e.to_string())?;
    host.in_region(id, &rec.region.clone(), ())
        .map_err(|e| e.to_string())?;
    if rec.state != drydock_host::InstanceState::Running {
        return Err(format!(
            "the instance is {}; start it first (`instance::ensure_running(id, #{{}})`)",
            rec.state
        ));
    }
    let eni = store
        .interfaces(id)
        .map_err(|e| e.to_string())?
        .into_iter()
        .next()
        .ok_or_else(|| "the instance has no network interface".to_string())?;
    let ip: std::net::IpAddr = eni
        .private_ip
        .parse()
        .map_err(|_| "its stored address is damaged".to_string())?;
    let keys = host.announced_host_keys(id).map_err(|e| e.to_string())?;
    let digests = keys
        .iter()
        .filter_map(|k| k.split_whitespace().nth(1))
        .filter_map(known_hosts::decode_base64)
        .map(|blob| known_hosts::digest(&blob))
        .collect::<Vec<_>>();
    if digests.is_empty() {
        return Err("the host keys its console announced cannot be read".into());
    }
    Ok(InstanceTarget {
        vpc_id: eni.vpc_id,
        address: std::net::SocketAddr::new(ip, port),
        digests,
    })
}

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
    let open_host = crate::instances::host_opener(ctx);
    doc("ssh::connect(host, options)", &[
        "An SSH connection to `host` — a host name, an address, or a drydock instance id (`i-…`: its private address, reached inside its VPC, its host key pinned to the one it announced on its serial console) — the host key checked before authenticating.",
        "Options: `user` (default root), `key` (a private key file), `password`, `port` (22), `host_key`: `\"strict\"` (default: an unknown host is refused, with its fingerprint), `\"accept-new\"` or a pinned `\"SHA256:…\"` (not for instances); `known_hosts` (another file), `connect_timeout` (30s). A changed key is always refused.",
        "Example: `let h = ssh::connect(\"10.0.0.5\", #{ user: \"root\", key: \"/root/.ssh/id_ed25519\" });` or `ssh::connect(id, #{ password: secret(\"pw\") })`",
    ])
    .set_in(
        &mut module,
        move |host: &str, opts: Map| -> Result<SshSession, Box<EvalAltResult>> {
            let mut o = connect_options(&opts, &data_dir)
                .map_err(|e| fail(Position::NONE, format!("ssh {host}: {e}")))?;
            if !is_instance_id(host) {
                return connect(host, &o, interrupt.clone())
                    .map_err(|e| e.into_rhai(Position::NONE));
            }
            if opts.contains_key("host_key") || opts.contains_key("known_hosts") {
                return Err(fail(
                    Position::NONE,
                    format!("ssh {host}: an instance's host key is the one it announced on its serial console; drop `host_key` and `known_hosts`"),
                ));
            }
            let target = instance_target(&open_host, host, o.port)
                .map_err(|e| fail(Position::NONE, format!("ssh {host}: {e}")))?;
            o.host_key = HostKeyPolicy::Announced {
                instance: host.to_string(),
                digests: target.digests,
            };
            let tcp = drydock_host::network::connect(
                &data_dir,
                &target.vpc_id,
                target.address,
                o.connect_timeout,
            )
            .map_err(|e| {
                fail(
                    Position::NONE,
                    format!(
                        "ssh {host} ({}): cannot connect: {e}; is its SSH server running (`service sshd status` on its console) and does a security group admit port {}?",
                        target.address, o.port
                    ),
                )
            })?;
            let label = format!("{host} ({})", target.address.ip());
            connect_with(&label, &o, interrupt.clone(), Some(tcp))
                .map_err(|e| e.into_rhai(Position::NONE))
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
