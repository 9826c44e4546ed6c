//! Files, sockets and instance secrets against other local accounts
//! (issue 10): everything drydock keeps is private to its account (or its
//! sharing group), its sockets check who connects, and listings do not
//! show an instance's root password hash or user-data. Run as root, as CI
//! does: the tests create the accounts `ddmallory` (in the group `ddops`)
//! and `ddoutsider` (in no drydock group). The VMM's own control socket is
//! covered in `tests/vmm_process.rs`.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::os_users::{connect_as, os_user, OsUser};
use common::{assert_code, text, vm_lock, Drydock};
use serde_json::Value;

const R: &str = "region-a";

/// Every entry under `root` (symbolic links not followed) with its mode.
fn walk(root: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
        out.push((p, meta));
    }
    out
}

/// Entries that have any of the `forbidden` permission bits.
fn too_open(root: &Path, forbidden: u32) -> Vec<String> {
    walk(root)
        .into_iter()
        .filter(|(_, m)| !m.file_type().is_symlink() && m.mode() & forbidden != 0)
        .map(|(p, m)| format!("{} {:o}", p.display(), m.mode() & 0o7777))
        .collect()
}

fn gid_of(group: &str) -> u32 {
    let out = Command::new("getent")
        .args(["group", group])
        .output()
        .unwrap();
    text(&out.stdout)
        .split(':')
        .nth(2)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Reads a file as another account: its bytes, or the error `cat` gave.
fn read_as(user: &OsUser, path: &Path) -> Result<Vec<u8>, String> {
    let out = Command::new("runuser")
        .args(["-u", &user.name, "--", "head", "-c", "16"])
        .arg(path)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(text(&out.stderr))
    }
}

#[test]
fn the_data_directory_and_everything_in_it_is_private_and_older_state_is_tightened() {
    let dd = Drydock::new();
    dd.open_to_other_users();
    let mallory = os_user("ddmallory", &["ddops"]);
    dd.write_runbook(
        "hello.rhai",
        r#"runbook(#{ name: "hello", description: "says hello" });
step("greet", || "hello")"#,
    );
    assert_code(&dd.run(&["run", "hello"]), 0);
    let vol = dd.json(&["volume", "create", "--size", "8", "--ext4", "data"]);
    let vol_path = PathBuf::from(vol["path"].as_str().unwrap());
    let vol_id = vol["id"].as_str().unwrap().to_string();
    assert_code(&dd.run(&["snapshot", "create", &vol_id]), 0);
    let data = dd.data_dir();
    let journal = data.join("journal.sqlite3");
    assert!(journal.exists() && vol_path.exists());

    assert_eq!(mode(&data), 0o700);
    let open = too_open(&data, 0o077);
    assert!(open.is_empty(), "open to group or others: {open:#?}");

    // Another account cannot read the journal or a guest's disk: not
    // through the directory, and not even when it can traverse it.
    for p in [&journal, &vol_path] {
        let err = read_as(&mallory, p).unwrap_err();
        assert!(err.contains("Permission denied"), "{err}");
    }
    chmod(&data, 0o711);
    chmod(&data.join("volumes"), 0o711);
    for p in [&journal, &vol_path] {
        let err = read_as(&mallory, p).unwrap_err();
        assert!(err.contains("Permission denied"), "{}: {err}", p.display());
    }

    // State of an older drydock (it set no modes) is tightened.
    chmod(&data, 0o755);
    chmod(&data.join("volumes"), 0o755);
    chmod(&vol_path, 0o644);
    chmod(&data.join("host.sqlite3"), 0o644);
    chmod(&journal, 0o644);
    std::fs::remove_file(data.join(".modes-tightened-v1")).unwrap();
    assert_code(&dd.run(&["volumes"]), 0);
    let open = too_open(&data, 0o077);
    assert!(open.is_empty(), "not tightened: {open:#?}");
    assert_eq!(mode(&vol_path), 0o600);
}

#[test]
fn an_instance_is_private_its_sockets_check_peers_and_listings_hide_its_secrets() {
    let _vm = vm_lock();
    let mut dd = Drydock::new();
    // A drydock shared with the group `ddops`: ddmallory is a member,
    // ddoutsider is not.
    let mallory = os_user("ddmallory", &["ddops"]);
    let outsider = os_user("ddoutsider", &[]);
    dd.group = Some("ddops".into());
    dd.open_to_other_users();
    let img = dd.image(R);
    let user_data = dd.work().join("user-data.sh");
    let script = "#!/bin/sh\necho user-data ran; TOKEN=ud-s3cr3t-token\n";
    std::fs::write(&user_data, script).unwrap();
    let out = dd.run(&[
        "--json",
        "--region",
        R,
        "instance",
        "launch",
        "--image",
        &img,
        "--root-password",
        "pw",
        "--user-data",
        user_data.to_str().unwrap(),
    ]);
    assert_code(&out, 0);
    let launched = text(&out.stdout);
    let id = serde_json::from_str::<Value>(&launched).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    dd.wait_login(R, &id);

    // Listings show that a password is set and what user-data it has, not
    // the hash or the script.
    let listing = text(&dd.run(&["--json", "--region", R, "instances"]).stdout);
    for shown in [&launched, &listing] {
        assert!(!shown.contains("$6$"), "a password hash: {shown}");
        assert!(!shown.contains("ud-s3cr3t-token"), "the user-data: {shown}");
    }
    let inst = dd.instance(R, &id);
    assert_eq!(inst["config"]["root_password"], "set", "{inst}");
    assert_eq!(inst["config"]["user_data"]["bytes"], script.len(), "{inst}");
    assert_eq!(
        inst["config"]["user_data"]["sha256"]
            .as_str()
            .unwrap()
            .len(),
        64
    );

    // Runbooks get the secrets only when they ask, and then masked.
    dd.write_runbook(
        "peek.rhai",
        r#"runbook(#{ name: "peek", description: "looks at an instance",
                     params: #{ instance: #{ type: "instance" } } });
let plain = instance::describe(params.instance);
let full = instance::describe(params.instance, #{ secrets: true });
print(`hash: ${full.secrets.root_password_hash}`);
#{
    plain_has_secrets: plain.contains("secrets"),
    root_password: plain.config.root_password,
    hash_kind: full.secrets.root_password_hash.sub_string(0, 3),
    user_data_ok: full.secrets.user_data.contains("ud-s3cr3t-token"),
    hash: full.secrets.root_password_hash,
}"#,
    );
    let out = dd.run(&[
        "--json",
        "--region",
        R,
        "run",
        "peek",
        "-p",
        &format!("instance={id}"),
    ]);
    assert_code(&out, 0);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let o = &v["output"];
    assert_eq!(o["plain_has_secrets"], false, "{v}");
    assert_eq!(o["root_password"], "set", "{v}");
    assert_eq!(o["hash_kind"], "$6$", "{v}");
    assert_eq!(o["user_data_ok"], true, "{v}");
    assert_eq!(o["hash"], "****", "masked in the output: {v}");
    let shown = dd.show(v["execution_id"].as_str().unwrap()).to_string();
    assert!(shown.contains("hash: ****"), "{shown}");
    assert!(!shown.contains("hash: $6$"), "{shown}");

    // Modes: the data directory is the group's (2770), nothing is open to
    // others, the console and control sockets are the group's (0660), the
    // VMM's QMP sockets its account's only (0600).
    let data = dd.data_dir();
    assert_eq!(mode(&data), 0o2770);
    assert_eq!(std::fs::metadata(&data).unwrap().gid(), gid_of("ddops"));
    let open = too_open(&data, 0o007);
    assert!(open.is_empty(), "open to others: {open:#?}");
    let idir = data.join("instances").join(&id);
    let console = idir.join("console.sock");
    let control = idir.join("control.sock");
    for s in [&console, &control] {
        assert!(std::fs::metadata(s).unwrap().file_type().is_socket());
        assert_eq!(mode(s), 0o660, "{}", s.display());
    }
    // Both backends (drydock's VMM and QEMU) listen on these two paths of
    // the instance directory while the instance runs (the supervisor
    // names them in its VM spec / QEMU command line): each must be there,
    // a socket, 0600.
    for s in ["qmp.sock", "qmp-events.sock"] {
        let p = idir.join(s);
        let meta = std::fs::symlink_metadata(&p)
            .unwrap_or_else(|e| panic!("{} of a running instance: {e}", p.display()));
        assert!(meta.file_type().is_socket(), "{}", p.display());
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }

    // An account outside the group reads nothing: not the journal, not the
    // root volume (its /etc/shadow), not the console log.
    let volumes = dd.json(&["--region", R, "volumes"]);
    let root = volumes["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["attached_to"] == id.as_str())
        .unwrap()["path"]
        .as_str()
        .unwrap()
        .to_string();
    let journal = data.join("journal.sqlite3");
    let boot_log = idir.join("console").join("boot-0001.log");
    for p in [&journal, Path::new(&root), &boot_log] {
        let err = read_as(&outsider, p).unwrap_err();
        assert!(err.contains("Permission denied"), "{}: {err}", p.display());
    }
    // A member of the group does.
    assert!(read_as(&mallory, &journal)
        .unwrap()
        .starts_with(b"SQLite format 3"));

    // The member uses the console socket as it is.
    let hello = r#"{"mode": "read", "who": "mallory", "from": "tail"}"#;
    let reply = connect_as(&mallory, &console, hello);
    let v: Value = serde_json::from_str(&reply).unwrap_or_else(|e| panic!("{e}: {reply}"));
    assert_eq!(v["ok"], true, "{reply}");
    let out = dd.run_as(
        &mallory,
        &["--region", R, "console-output", &id, "--tail", "5"],
    );
    assert_code(&out, 0);

    // The outsider cannot reach the sockets; with the modes opened by hand
    // it reaches them and is refused by its credentials, in each socket's
    // protocol, and the instance is unaffected.
    let reply = connect_as(&outsider, &console, hello);
    assert!(reply.starts_with("CONNECT-ERROR"), "{reply}");
    for d in [&data, &data.join("instances"), &idir] {
        chmod(d, 0o2771);
    }
    chmod(&console, 0o666);
    chmod(&control, 0o666);
    let reply = connect_as(&outsider, &console, r#"{"mode": "write", "force": true}"#);
    let v: Value = serde_json::from_str(&reply).unwrap_or_else(|e| panic!("{e}: {reply}"));
    assert_eq!(v["ok"], false, "{reply}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("ddoutsider may not use this socket"),
        "{reply}"
    );
    let reply = connect_as(&outsider, &control, "stop-force");
    assert!(
        reply.starts_with("error: ddoutsider may not use this socket"),
        "{reply}"
    );
    for d in [&data, &data.join("instances"), &idir] {
        chmod(d, 0o2770);
    }
    chmod(&console, 0o660);
    chmod(&control, 0o660);
    assert_eq!(dd.instance(R, &id)["state"], "running");
    let log = std::fs::read_to_string(idir.join("supervisor.log")).unwrap();
    assert!(
        log.contains("connection refused") && log.contains("ddoutsider"),
        "refusals are logged: {log}"
    );

    dd.terminate(R, &id);
}
