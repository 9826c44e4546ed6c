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
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns, "ssh"])
        .arg("-o")
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
            "ProxyCommand=none",
            "-o",
            "ProxyJump=none",
            "-o",
        ])
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
