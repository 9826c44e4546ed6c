//! Real local accounts for tests where identity matters: drydock must
//! tell OS users apart by uid, so these tests run it as other users.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use super::{bin, Drydock};

/// A local account created for tests.
#[derive(Debug, Clone)]
pub struct OsUser {
    pub name: String,
    pub uid: u32,
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn id_of(name: &str) -> Option<u32> {
    let out = run("id", &["-u", name]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().parse().unwrap())
}

/// Creates the group if it does not exist.
pub fn os_group(name: &str) {
    if !run("getent", &["group", name]).status.success() {
        let out = run("groupadd", &["-f", name]);
        assert!(
            out.status.success(),
            "groupadd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Creates (once) a local account with no login shell and the given
/// supplementary groups. The tests run as root, as CI does.
pub fn os_user(name: &str, groups: &[&str]) -> OsUser {
    // Serialise account creation: useradd locks /etc/passwd.
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    for g in groups {
        os_group(g);
    }
    if id_of(name).is_none() {
        let mut args = vec!["-M", "-s", "/usr/sbin/nologin"];
        let list = groups.join(",");
        if !groups.is_empty() {
            args.extend(["-G", &list]);
        }
        args.push(name);
        let out = run("useradd", &args);
        assert!(
            out.status.success() || id_of(name).is_some(),
            "useradd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for g in groups {
        let _ = run("usermod", &["-a", "-G", g, name]);
    }
    OsUser {
        name: name.to_string(),
        uid: id_of(name).expect("the account exists"),
    }
}

/// Connects to a Unix socket as another account (a Python one-liner run
/// by `runuser`), sends `line` and returns the first line of the reply, or
/// `CONNECT-ERROR …` when the socket cannot be reached at all.
pub fn connect_as(user: &OsUser, socket: &Path, line: &str) -> String {
    let script = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("CONNECT-ERROR", e); sys.exit(0)
try:
    s.sendall(sys.argv[2].encode() + b"\n")
except OSError:
    pass
data = b""
try:
    while b"\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
except OSError as e:
    print("READ-ERROR", e)
print(data.split(b"\n")[0].decode(errors="replace").strip())
"#;
    let out = Command::new("runuser")
        .args(["-u", &user.name, "--", "/usr/bin/python3", "-c", script])
        .arg(socket)
        .arg(line)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Drydock {
    /// A drydock shared by the accounts of `group`: its commands run with
    /// DRYDOCK_GROUP set and its directories are open to other accounts.
    pub fn shared_by(group: &str) -> Drydock {
        let mut dd = Drydock::new();
        dd.group = Some(group.into());
        dd.open_to_other_users();
        dd
    }

    /// Lets other accounts reach this drydock's directories (the test's
    /// temporary directory is private to root by default).
    pub fn open_to_other_users(&self) {
        use std::os::unix::fs::PermissionsExt;
        for p in [self.dir.path().to_path_buf(), self.dir.path().join("work")] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        // Readable by all, writable only by its owner: drydock runs no
        // runbook from a directory others can write.
        std::fs::set_permissions(
            self.dir.path().join("runbooks"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        // The data directory is this test's (its owner), as a shared one is
        // set up by its owner before others use it: drydock refuses one
        // owned by another account.
        let out = self.run(&["runbooks"]);
        assert!(
            out.status.success(),
            "setting up the data directory: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The drydock command run as another account (`runuser` sets its
    /// uid, gid and supplementary groups as a login would).
    pub fn command_as(&self, user: &OsUser, args: &[&str]) -> Command {
        let mut wrapper = Command::new("runuser");
        wrapper.args(["-u", &user.name, "--", bin()]);
        let mut cmd = self.command_in(wrapper, args);
        cmd.env("HOME", self.dir.path()).env_remove("USER");
        cmd
    }

    pub fn run_as(&self, user: &OsUser, args: &[&str]) -> Output {
        self.command_as(user, args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}
