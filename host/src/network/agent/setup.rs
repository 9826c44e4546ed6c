//! `drydock host setup-network` (run as root): records the accounts the
//! agent serves, starts it detached (its own session, a pid file), and
//! with `--remove` stops it and removes what it made.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{AllowedUser, Config};
use crate::HostError;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn must_be_root(what: &str) -> Result<(), HostError> {
    if is_root() {
        Ok(())
    } else {
        Err(HostError::Invalid(format!(
            "{what} must run as root (it starts the root process that makes networks for the accounts it names): run `sudo drydock host setup-network --user NAME`"
        )))
    }
}

/// The uid of account `name`.
fn uid_of(name: &str) -> Result<u32, HostError> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| HostError::Invalid(format!("`{name}` is not an account name")))?;
    // SAFETY: getpwnam reads a NUL-terminated name and returns static
    // storage or null, read at once.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    if pw.is_null() {
        return Err(HostError::Invalid(format!(
            "there is no account `{name}` on this machine"
        )));
    }
    // SAFETY: pw is not null (checked above).
    Ok(unsafe { (*pw).pw_uid })
}

fn io<'a>(what: &str, path: &'a Path) -> impl FnOnce(std::io::Error) -> HostError + 'a {
    let what = what.to_string();
    move |e| HostError::io(&what, path, e)
}

/// The pid in the pid file, if that process is the agent.
fn running_agent() -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(super::pid_path())
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let is_agent = cmdline
        .split(|&b| b == 0)
        .any(|arg| arg == b"network-agent");
    is_agent.then_some(pid)
}

fn stop_agent() {
    let Some(pid) = running_agent() else { return };
    // SAFETY: kill sends a signal to the agent's pid (checked above).
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let start = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() && start.elapsed() < Duration::from_secs(5) {
        // Reap it if this process started it (a test does both).
        // SAFETY: waitpid with WNOHANG on a pid; no memory is touched.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
        std::thread::sleep(Duration::from_millis(50));
    }
    if Path::new(&format!("/proc/{pid}")).exists() {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Records `users` (and the uplink namespaces they may use), and (re)starts
/// the agent. Returns what the user is told.
pub fn setup(users: &[String], uplinks: &[String]) -> Result<String, HostError> {
    must_be_root("drydock host setup-network")?;
    if users.is_empty() {
        return Err(HostError::Invalid(
            "name the accounts the network agent serves: --user NAME (repeatable)".into(),
        ));
    }
    let mut config = Config::default();
    for name in users {
        let uid = uid_of(name)?;
        if uid == 0 {
            return Err(HostError::Invalid(
                "root needs no network agent: drydock makes its networks itself".into(),
            ));
        }
        config.users.push(AllowedUser {
            name: name.clone(),
            uid,
        });
    }
    for up in uplinks {
        crate::vpcs::check_uplink(up)?;
        config.uplinks.push(up.clone());
    }
    stop_agent();
    let config_path = Path::new(super::CONFIG);
    if let Some(dir) = config_path.parent() {
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    }
    let text = serde_json::to_string_pretty(&config).map_err(|e| HostError::Vmm(e.to_string()))?;
    std::fs::write(config_path, text).map_err(io("write", config_path))?;
    std::fs::set_permissions(config_path, std::fs::Permissions::from_mode(0o644))
        .map_err(io("chmod", config_path))?;
    let run = Path::new(super::RUN_DIR);
    std::fs::create_dir_all(run).map_err(io("create", run))?;
    std::fs::set_permissions(run, std::fs::Permissions::from_mode(0o755))
        .map_err(io("chmod", run))?;
    let socket = super::socket_path();
    let _ = std::fs::remove_file(&socket);
    let exe = std::env::current_exe().map_err(|e| HostError::Vmm(e.to_string()))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(super::log_path())
        .map_err(io("open", &super::log_path()))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["host", "network-agent"])
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(io("open", &super::log_path()))?)
        .stderr(log)
        .current_dir("/");
    // SAFETY: setsid is async-signal-safe; the agent leaves the caller's
    // session and terminal so it outlives them.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| HostError::Vmm(format!("cannot start the network agent: {e}")))?;
    let pid = child.id();
    std::fs::write(super::pid_path(), format!("{pid}\n"))
        .map_err(io("write", &super::pid_path()))?;
    let start = Instant::now();
    while !socket.exists() {
        if start.elapsed() > Duration::from_secs(10) {
            return Err(HostError::Vmm(format!(
                "the network agent did not start; see {}",
                super::log_path().display()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let names: Vec<&str> = config.users.iter().map(|u| u.name.as_str()).collect();
    Ok(format!(
        "network agent running (pid {pid}, socket {}); it makes instance networks for: {}",
        socket.display(),
        names.join(", ")
    ))
}

/// Stops the agent, removes its socket, pid file and configuration, and
/// the namespaces it made that no instance uses.
pub fn remove() -> Result<String, HostError> {
    must_be_root("drydock host setup-network --remove")?;
    stop_agent();
    for p in [
        super::socket_path(),
        super::pid_path(),
        super::CONFIG.into(),
    ] {
        let _ = std::fs::remove_file(p);
    }
    // /etc/drydock, if the configuration was all it held.
    if let Some(dir) = Path::new(super::CONFIG).parent() {
        let _ = std::fs::remove_dir(dir);
    }
    let left = super::server::Agent::release_all(&super::owners_dir());
    if left.is_empty() {
        let _ = std::fs::remove_dir_all(super::owners_dir());
        let _ = std::fs::remove_file(super::log_path());
        // Only when nothing else of drydock's is in it.
        let _ = std::fs::remove_dir(super::RUN_DIR);
        Ok("network agent stopped and removed".into())
    } else {
        Ok(format!(
            "network agent stopped and removed; namespaces of instances still running stay (stop them, then `ip netns delete` these as root): {}",
            left.join(", ")
        ))
    }
}

/// `drydock host network-agent`: the agent itself (started by `setup`).
pub fn run() -> Result<(), HostError> {
    must_be_root("drydock host network-agent")?;
    let config_path = Path::new(super::CONFIG);
    let text = std::fs::read_to_string(config_path).map_err(io("read", config_path))?;
    let config: Config = serde_json::from_str(&text)
        .map_err(|e| HostError::Invalid(format!("{} is damaged: {e}", config_path.display())))?;
    let owners = super::owners_dir();
    std::fs::create_dir_all(&owners).map_err(io("create", &owners))?;
    std::fs::set_permissions(&owners, std::fs::Permissions::from_mode(0o700))
        .map_err(io("chmod", &owners))?;
    let socket = super::socket_path();
    let _ = std::fs::remove_file(&socket);
    // Bound under a private name, opened to all, then put in place: the
    // socket is never there half set up.
    let tmp = socket.with_extension("sock.tmp");
    let _ = std::fs::remove_file(&tmp);
    let listener = std::os::unix::net::UnixListener::bind(&tmp).map_err(io("bind", &tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o666))
        .map_err(io("chmod", &tmp))?;
    std::fs::rename(&tmp, &socket).map_err(io("rename", &socket))?;
    tracing::info!("network agent serving {} account(s)", config.users.len());
    super::server::serve(super::server::Agent::new(config, owners), listener)
        .map_err(io("serve", &socket))
}
