//! `drydock serve`'s local side: one serve per data directory, its Unix
//! socket (DATA_DIR/serve.sock) serving the API to the CLI with the
//! caller known from the socket peer (no token), `drydock serve status`,
//! and a stale socket after a crash. Other accounts: `ddsvcalice` in the
//! sharing group `ddsvc`, `ddsvcout` in none.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::os_users::os_user;
use common::{assert_code, assert_stdout, text, Drydock};
use serde_json::Value;

#[test]
fn serve_status_answers_over_the_unix_socket_and_a_second_serve_is_refused() {
    let dd = Drydock::new();
    // None running: exit 1 and says how to start one.
    let out = dd.run(&["serve", "status"]);
    assert_stdout(&out, 1, &["no drydock serve runs"]);
    let out = dd.run(&["--json", "serve", "status"]);
    assert_code(&out, 1);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["running"], false);

    let mut s = dd.serve_with("off", Stdio::null(), Stdio::piped());
    let v = dd.serve_status_when_up();
    assert_eq!(v["pid"], s.id(), "{v}");
    assert_eq!(v["running"], true);
    assert_eq!(v["http"], Value::Null, "--listen off: no web console");
    assert_eq!(v["caller"], "root", "the caller is the socket peer");
    let socket = dd.data_dir().join("serve.sock");
    assert_eq!(v["socket"], socket.display().to_string());
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    // The README's mode exactly: 0600 (a socket is connectable with write
    // permission; execute means nothing on it).
    assert_eq!(
        meta.mode() & 0o7777,
        0o600,
        "private to the account: {:o}",
        meta.mode()
    );

    // A schedule added from the CLI shows in the running serve's status.
    dd.write_runbook(
        "noop.rhai",
        "runbook(#{ name: \"noop\", description: \"nothing\" });\nstep(\"n\", || 1);\n",
    );
    let out = dd.run(&[
        "schedules",
        "add",
        "hourly",
        "--runbook",
        "noop",
        "--schedule",
        "rate(1 hour)",
    ]);
    assert_code(&out, 0);
    let start = Instant::now();
    loop {
        let v = dd.serve_status_when_up();
        if v["schedules"] == 1 && v["next_slot_at"].is_i64() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{v}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = dd.run(&["serve", "status"]);
    assert_code(&out, 0);
    let shown = text(&out.stdout);
    assert!(shown.contains(&format!("pid {}", s.id())), "{shown}");
    assert!(shown.contains("schedules       1"), "{shown}");

    // A second serve on the same data directory is refused, naming the
    // first; the first keeps serving.
    let out = dd.run(&["serve", "--listen", "off"]);
    assert_code(&out, 1);
    let err = text(&out.stderr);
    assert!(
        err.contains("already serves") && err.contains(&format!("pid {}", s.id())),
        "{err}"
    );
    assert_eq!(dd.serve_status_when_up()["pid"], s.id());

    // Killed outright: the socket stays behind, status says none runs,
    // and the next serve replaces the stale socket.
    s.kill().unwrap();
    let _ = s.wait();
    assert!(socket.exists(), "SIGKILL leaves the socket file");
    let out = dd.run(&["serve", "status"]);
    assert_code(&out, 1);
    let mut s2 = dd.serve_with("off", Stdio::null(), Stdio::piped());
    assert_eq!(dd.serve_status_when_up()["pid"], s2.id());
    // SIGTERM: a clean stop removes the socket.
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(s2.id() as i32, libc::SIGTERM) };
    let status = s2.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!socket.exists(), "a clean stop removes the socket");
}

#[test]
fn over_the_socket_the_caller_is_the_peers_account_and_outsiders_are_refused() {
    let alice = os_user("ddsvcalice", &["ddsvc"]);
    let outsider = os_user("ddsvcout", &[]);
    let dd = Drydock::shared_by("ddsvc");
    let mut s = dd.serve_with("off", Stdio::null(), Stdio::piped());
    dd.serve_status_when_up();
    let socket = dd.data_dir().join("serve.sock");
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert_eq!(
        meta.mode() & 0o7777,
        0o660,
        "group-shared socket: {:o}",
        meta.mode()
    );

    // A member of the sharing group: served as herself, no token.
    let out = dd.run_as(&alice, &["--json", "serve", "status"]);
    assert_code(&out, 0);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["caller"], "ddsvcalice", "{v}");

    // An account outside the group cannot use this data directory at all,
    // let alone its serve: a clear error, no hang.
    let out = dd.run_as(&outsider, &["serve", "status"]);
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(err.contains("ermission denied"), "{err}");

    s.kill().unwrap();
    let _ = s.wait();
}
