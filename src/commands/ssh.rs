//! `drydock ssh i-…`: OpenSSH's client to an instance, run inside the
//! instance's VPC (its network namespace), with a known_hosts file holding
//! only the host keys the instance announced on its serial console — no
//! trust on first use, and a key that changed without the console saying
//! so is refused by ssh itself.

use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

use drydock_host::InstanceState;

use super::host_common::open_host;
use super::Context;
use crate::cli::SshArgs;
use crate::failure::CliError;

pub fn run(ctx: &Context, args: SshArgs) -> Result<i32, CliError> {
    let host = open_host(ctx)?;
    let store = host.store()?;
    let id = &args.instance;
    let rec = store.instance(id)?;
    host.in_region(id, &rec.region.clone(), ())?;
    if rec.state != InstanceState::Running {
        return Err(CliError::usage(format!(
            "{id} is {}; start it first (`drydock instance start {id}`)",
            rec.state
        )));
    }
    let eni = store.interfaces(id)?.into_iter().next().ok_or_else(|| {
        CliError::usage(format!(
            "{id} has no network interface; use `drydock console {id}`"
        ))
    })?;
    let keys = host.announced_host_keys(id)?;
    if args.user.is_empty()
        || !args
            .user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(CliError::usage(format!(
            "`{}` is not a user name (letters, digits, `._-`)",
            args.user
        )));
    }
    // A known_hosts of this instance alone, private, written whole.
    let dir = ctx.settings.data_dir.join("ssh").join("instances");
    std::fs::create_dir_all(&dir)
        .map_err(|e| CliError::failure(format!("cannot create {}: {e}", dir.display())))?;
    let file = dir.join(format!("{id}.known_hosts"));
    let tmp = dir.join(format!(".{id}.known_hosts.tmp"));
    let text: String = keys.iter().map(|k| format!("{id} {k}\n")).collect();
    {
        use std::io::Write;
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| CliError::failure(format!("cannot write {}: {e}", tmp.display())))?;
        f.write_all(text.as_bytes())
            .map_err(|e| CliError::failure(format!("cannot write {}: {e}", tmp.display())))?;
    }
    std::fs::rename(&tmp, &file)
        .map_err(|e| CliError::failure(format!("cannot write {}: {e}", file.display())))?;
    let ns = drydock_host::network::namespace_name(&ctx.settings.data_dir, &eni.vpc_id);
    // As root: ssh runs inside the namespace. Otherwise the network
    // agent makes its connection there, and this drydock carries it
    // (`drydock host ssh-proxy`, ssh's ProxyCommand).
    let privileged = drydock_host::network::ops::privileged();
    let mut cmd = if privileged {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &ns, "ssh"]);
        c
    } else {
        Command::new("ssh")
    };
    let proxy = if privileged {
        "ProxyCommand=none".to_string()
    } else {
        let exe = std::env::current_exe()
            .map_err(|e| CliError::failure(format!("cannot find drydock's own path: {e}")))?;
        let words = [
            exe.display().to_string(),
            "--data-dir".into(),
            ctx.settings.data_dir.display().to_string(),
            "host".into(),
            "ssh-proxy".into(),
            eni.vpc_id.clone(),
            format!("{}:22", eni.private_ip),
        ];
        let line: Vec<String> = words.iter().map(|w| shell_quote(w)).collect();
        format!("ProxyCommand={}", line.join(" "))
    };
    cmd.arg("-o")
        .arg(format!("UserKnownHostsFile={}", file.display()))
        .args([
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "UpdateHostKeys=no",
            // The user's ssh config must not send this connection through
            // a shared session (to the same address in another VPC) or a
            // proxy outside the VPC.
            "-o",
            "ControlMaster=no",
            "-o",
            "ControlPath=none",
            "-o",
        ])
        .arg(&proxy)
        .args(["-o", "ProxyJump=none", "-o"])
        .arg(format!("HostKeyAlias={id}"));
    if let Some(key) = &args.identity {
        cmd.arg("-i").arg(key);
    }
    cmd.arg("-l").arg(&args.user).arg(&eni.private_ip);
    if !args.command.is_empty() {
        cmd.arg("--").args(&args.command);
    }
    let err = cmd.exec();
    Err(CliError::failure(format!(
        "cannot run ssh (OpenSSH's client) in {ns}: {err}"
    )))
}

/// One word for the shell ssh runs a ProxyCommand with (and `%` kept from
/// ssh's own expansion).
fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''").replace('%', "%%"))
}

/// `drydock host ssh-proxy VPC ADDR`: ssh's ProxyCommand for an account
/// without CAP_NET_ADMIN: a connection made inside the VPC's namespace (by
/// the network agent), carried between stdin/stdout and it.
pub fn proxy(ctx: &Context, vpc_id: &str, addr: &str) -> Result<i32, CliError> {
    let addr: std::net::SocketAddr = addr
        .parse()
        .map_err(|_| CliError::usage(format!("`{addr}` is not an address:port")))?;
    let stream = drydock_host::network::connect(
        &ctx.settings.data_dir,
        vpc_id,
        addr,
        std::time::Duration::from_secs(10),
    )
    .map_err(|e| CliError::failure(format!("cannot connect to {addr} in {vpc_id}: {e}")))?;
    let mut to_guest = stream
        .try_clone()
        .map_err(|e| CliError::failure(e.to_string()))?;
    let up = std::thread::spawn(move || {
        let _ = pump(&mut std::io::stdin().lock(), &mut to_guest);
        let _ = to_guest.shutdown(std::net::Shutdown::Write);
    });
    let mut from_guest = stream;
    let _ = pump(&mut from_guest, &mut std::io::stdout().lock());
    drop(up);
    Ok(0)
}

/// Copies until end of input, each chunk written and flushed as it
/// comes. Not `std::io::copy`: between a socket and a pipe it splices, and
/// a blocking splice from the socket holds the pipe's lock while it waits,
/// so ssh cannot read what was already passed on (both ends then wait).
fn pump(from: &mut impl std::io::Read, to: &mut impl std::io::Write) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        to.flush()?;
    }
}
