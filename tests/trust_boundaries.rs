//! Trust boundaries, second pass (issue 19), each found by a review with
//! real local accounts and reproduced here with them: a runbook planted in
//! a shared runbook directory, a planted data directory, an admin made by
//! one's own config file.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::os_users::{os_group, os_user, OsUser};
use common::serve::at_in;
use common::*;

const PLANTED: &str = r#"
runbook(#{ name: "tick", description: "planted" });
write_file(`${env("WORK")}/planted-ran`, "the planted code ran as the caller");
"#;

const GATED: &str = r#"
runbook(#{ name: "gated", params: #{ timeout: #{ type: "duration", default_value: "2s" } } });
approve(#{ message: "go?", approvers: ["ddtbob"], timeout: params.timeout }).decision
"#;

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn shared() -> (Drydock, OsUser) {
    os_group("ddtrust");
    let alice = os_user("ddtalice", &["ddtrust"]);
    let _bob = os_user("ddtbob", &["ddtrust"]);
    let dd = Drydock::shared_by("ddtrust");
    // The owner sets up the shared data directory.
    assert_code(&dd.run(&["runbooks"]), 0);
    (dd, alice)
}

/// A member of the sharing group plants runbooks in the shared data
/// directory's runbook directory — one named like a bundled runbook, one
/// new — and the owner runs them by name: both are refused, naming the
/// file, its owner and mode and the fix; nothing of them runs.
#[test]
fn a_runbook_planted_by_a_group_member_does_not_run_as_the_owner() {
    let (dd, alice) = shared();
    let runbooks = dd.data_dir().join("runbooks");
    let as_alice = |script: &str| {
        let out = std::process::Command::new("runuser")
            .args(["-u", &alice.name, "--", "sh", "-c", script])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    let planted_clean = PLANTED.replace("\"tick\"", "\"clean-old-files\"");
    std::fs::write(dd.work().join("tick.src"), PLANTED).unwrap();
    std::fs::write(dd.work().join("clean.src"), planted_clean).unwrap();
    chmod(&dd.work().join("tick.src"), 0o644);
    chmod(&dd.work().join("clean.src"), 0o644);
    as_alice(&format!(
        "umask 022; mkdir -p {r} && cp {w}/tick.src {r}/tick.rhai && cp {w}/clean.src {r}/clean-old-files.rhai",
        r = runbooks.display(),
        w = dd.work().display()
    ));
    let out = dd.run(&["run", "tick"]);
    assert_stderr(&out, 2, &["tick.rhai", "ddtalice", "owned by"]);
    let out = dd.run(&[
        "run",
        "clean-old-files",
        "-p",
        "dir=/nonexistent",
        "-p",
        "older_than_days=1",
    ]);
    assert_stderr(&out, 2, &["ddtalice"]);
    assert!(
        !dd.work().join("planted-ran").exists(),
        "the planted code ran"
    );
    // The owner's own file in a directory the group cannot write runs.
    let mine = dd.dir.path().join("runbooks").join("tick.rhai");
    std::fs::write(&mine, PLANTED.replace("planted", "mine")).unwrap();
    chmod(&mine, 0o644);
    // (The planted directory still names a second `tick`: run by path.)
    let out = dd.run(&["run", mine.to_str().unwrap()]);
    assert_code(&out, 0);
    // A file of one's own that the group may write is refused too.
    chmod(&mine, 0o664);
    let out = dd.run(&["run", mine.to_str().unwrap()]);
    assert_stderr(&out, 2, &["chmod go-w"]);
}

/// Another account pre-creates a data directory open to everyone, with a
/// journal anyone may write; the victim's drydock refuses to use it.
#[test]
fn a_data_directory_planted_by_another_account_is_refused() {
    os_group("ddtrust");
    let alice = os_user("ddtalice", &["ddtrust"]);
    let dd = Drydock::new();
    chmod(dd.dir.path(), 0o777);
    let planted = dd.dir.path().join("planted");
    let out = std::process::Command::new("runuser")
        .args([
            "-u",
            &alice.name,
            "--",
            "sh",
            "-c",
            &format!(
                "mkdir -m 0777 {p} && touch {p}/journal.sqlite3 && chmod 0666 {p}/journal.sqlite3",
                p = planted.display()
            ),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = std::process::Command::new(bin())
        .args(["--data-dir", planted.to_str().unwrap(), "runbooks"])
        .env_remove("DRYDOCK_GROUP")
        .output()
        .unwrap();
    assert_stderr(&out, 2, &["ddtalice", "not to you"]);
    // Nothing was loosened or written there.
    assert_eq!(
        std::fs::metadata(planted.join("journal.sqlite3"))
            .unwrap()
            .len(),
        0
    );
    // One's own directory left open to everyone is refused with the fix.
    let mine = dd.dir.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("journal.sqlite3"), b"").unwrap();
    chmod(&mine.join("journal.sqlite3"), 0o666);
    let out = std::process::Command::new(bin())
        .args(["--data-dir", mine.to_str().unwrap(), "runbooks"])
        .env_remove("DRYDOCK_GROUP")
        .output()
        .unwrap();
    assert_stderr(&out, 2, &["journal.sqlite3", "chmod"]);
}

/// A member's own config file names them an admin: their --auto-approve
/// still does not settle an approval that does not allow it, and drydock
/// says why the admins were ignored.
#[test]
fn a_config_of_ones_own_does_not_make_one_an_admin() {
    let (dd, alice) = shared();
    dd.write_runbook("gated.rhai", GATED);
    let config = dd.work().join("alice.toml");
    std::fs::write(&config, "admins = [\"ddtalice\"]\n").unwrap();
    std::os::unix::fs::chown(&config, Some(alice.uid), None).unwrap();
    chmod(&config, 0o600);
    let out = dd.run_as(
        &alice,
        &[
            "--config",
            config.to_str().unwrap(),
            "run",
            "gated",
            "--auto-approve",
        ],
    );
    let err = assert_stderr(&out, 4, &["`admins` in", "ignored"]);
    assert!(
        err.contains("--auto-approve by ddtalice does not apply"),
        "{err}"
    );
    let id = dd.only_execution_of("gated");
    let show = dd.show(&id);
    assert!(
        show["approvals"][0]["decisions"]
            .as_array()
            .is_none_or(|d| d.is_empty()),
        "{show}"
    );
}

const SCHEDULED: &str = r#"
runbook(#{ name: "nightly-change", params: #{ approvers: #{ type: "list", default_value: [] } } });
append_file(`${env("WORK")}/ran`, "version 1\n");
if !params.approvers.is_empty() {
    approve(#{ message: "apply the change?", approvers: params.approvers, timeout: "1m" });
}
"#;

/// A schedule of a runbook file fires that file (not whatever answers to
/// its name), only while its code is the one approved when the schedule
/// was added; a scheduled run is requested by whoever added the schedule
/// (run by the account that starts it), who therefore cannot approve it.
#[test]
fn a_schedule_runs_only_its_approved_code_requested_by_whoever_added_it() {
    let (dd, alice) = shared();
    let bob = os_user("ddtbob", &["ddtrust"]);
    // A runbook installed by the owner (root) where only root can write.
    let dir = dd.dir.path().join("installed");
    std::fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o755);
    let file = dir.join("nightly-change.rhai");
    std::fs::write(&file, SCHEDULED).unwrap();
    chmod(&file, 0o644);
    chmod(&dd.work(), 0o777);
    let f = file.to_str().unwrap();
    // Alice schedules it by path.
    let out = dd.run_as(
        &alice,
        &[
            "schedules",
            "add",
            "nightly",
            "--runbook",
            f,
            "--schedule",
            "cron(0 3 * * ? *)",
            "-p",
            "approvers=ddtalice,ddtbob",
        ],
    );
    assert_code(&out, 0);
    let shown = dd.json(&["schedules", "show", "nightly"]);
    assert!(shown.to_string().contains(f), "stored by path: {shown}");
    // Root starts the slot, as serve would: requested by alice, run by root.
    let out = dd.run(&["--json", "schedules", "run-now", "nightly"]);
    assert_code(&out, 0);
    let id = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["execution_id"]
        .as_str()
        .unwrap()
        .to_string();
    dd.wait_for_approval(&id);
    let show = dd.show(&id);
    assert_eq!(show["execution"]["requested_by"], "ddtalice", "{show}");
    assert_eq!(show["execution"]["run_by"], "root", "{show}");
    assert_eq!(show["execution"]["runbook_owner"], "root", "{show}");
    let text_show = text(&dd.run(&["executions", "show", &id]).stdout);
    assert!(
        text_show.contains("requested by ddtalice, run by root"),
        "{text_show}"
    );
    // Alice added the schedule: she cannot approve its run.
    let out = dd.run_as(&alice, &["approve", &id]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("separation of duties"),
        "{}",
        text(&out.stderr)
    );
    assert_code(&dd.run_as(&bob, &["approve", &id]), 0);
    dd.wait_until("the run ends", || dd.state(&id) == "Success");

    // The next run is bob's: let him append to the record of runs.
    chmod(&dd.work().join("ran"), 0o666);
    // The file changes: the next slot is refused (skipped by serve) until
    // someone approves the change.
    std::fs::write(&file, SCHEDULED.replace("version 1", "version 2")).unwrap();
    let out = dd.run(&["schedules", "run-now", "nightly"]);
    assert_stderr(
        &out,
        2,
        &[
            "changed since the schedule was approved",
            "schedules update nightly",
        ],
    );
    assert_code(&dd.run_as(&bob, &["schedules", "update", "nightly"]), 0);
    let out = dd.run_as(&bob, &["--json", "schedules", "run-now", "nightly"]);
    assert_code(&out, 0);
    let id = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["execution_id"]
        .as_str()
        .unwrap()
        .to_string();
    dd.wait_for_approval(&id);
    let show = dd.show(&id);
    assert_eq!(
        show["execution"]["requested_by"], "ddtbob",
        "the approver of the change requests its runs: {show}"
    );
    assert_code(&dd.run_as(&alice, &["approve", &id]), 0);
    dd.wait_until("the run ends", || dd.state(&id) == "Success");
    let ran = std::fs::read_to_string(dd.work().join("ran")).unwrap();
    assert_eq!(ran, "version 1\nversion 2\n");
}

const SHOWS: &str = r#"
runbook(#{ name: "shows", params: #{ dir: #{ type: "string" } } });
params.dir
"#;

/// `-p dir=param:NAME` for a parameter that is not a secret passes the
/// parameter store's value, never the text `param:NAME`; a SecureString
/// there is refused (it would be journaled in clear).
#[test]
fn a_param_reference_is_resolved_or_refused_never_passed_literally() {
    let dd = Drydock::new();
    dd.write_runbook("shows.rhai", SHOWS);
    let put = |name: &str, value: &str, secure: bool| {
        let mut args = vec!["param", "put", name];
        if secure {
            args.push("--secure");
        }
        let mut c = dd.command(&args);
        c.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(value.as_bytes())
            .unwrap();
        assert_code(&wait_child(child), 0);
    };
    put("app/logdir", "/var/log/app", false);
    put("app/token", "s3cret-token-value", true);
    let out = dd.run(&["--json", "run", "shows", "-p", "dir=param:app/logdir"]);
    assert_code(&out, 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["output"], "/var/log/app", "{v}");
    let out = dd.run(&["run", "shows", "-p", "dir=param:app/token"]);
    let err = assert_stderr(&out, 2, &["SecureString", "secret"]);
    assert!(!err.contains("s3cret-token-value"));
    let out = dd.run(&["run", "shows", "-p", "dir=param:no/such"]);
    assert_code(&out, 2);
}

/// The web console on an address other machines reach needs
/// --listen-public (plain HTTP carries tokens in clear).
#[test]
fn listening_beyond_loopback_needs_listen_public() {
    let dd = Drydock::new();
    let out = dd.run(&["serve", "--listen", "0.0.0.0:0"]);
    assert_stderr(&out, 2, &["--listen-public", "TLS"]);
}

/// clean-old-files lists a directory owned by another account, waits for
/// the approval; meanwhile that account swaps the directory for a symlink
/// to a directory of the runner's holding files of the same names. After
/// the approval nothing there is deleted, no report is written there, and
/// the execution fails saying the directory was replaced.
#[test]
fn a_directory_swapped_during_the_approval_deletes_nothing() {
    let (dd, alice) = shared();
    let bob = os_user("ddtbob", &["ddtrust"]);
    let logs = dd.work().join("logs");
    let victim = dd.work().join("victim");
    std::fs::create_dir(&victim).unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(30 * 86400);
    for n in ["a.log", "b.log"] {
        let f = victim.join(n);
        std::fs::write(&f, "precious\n").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    let as_alice = |script: &str| {
        let out = std::process::Command::new("runuser")
            .args(["-u", &alice.name, "--", "sh", "-c", script])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    as_alice(&format!(
        "mkdir {l} && touch -d '30 days ago' {l}/a.log {l}/b.log",
        l = logs.display()
    ));
    let child = dd.spawn(&[
        "run",
        "clean-old-files",
        "-p",
        &format!("dir={}", logs.display()),
        "-p",
        "approvers=ddtbob",
    ]);
    let id = dd.only_execution_of("clean-old-files");
    dd.wait_for_approval(&id);
    // The swap, by the directory's owner, while the approval waits.
    as_alice(&format!(
        "mv {l} {l}.moved && ln -s {v} {l}",
        l = logs.display(),
        v = victim.display()
    ));
    assert_code(&dd.run_as(&bob, &["approve", &id]), 0);
    let out = wait_child(child);
    assert_code(&out, 1);
    let show = dd.show(&id);
    assert!(
        show["execution"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("no longer the directory that was listed"),
        "{show}"
    );
    for n in ["a.log", "b.log"] {
        assert_eq!(
            std::fs::read_to_string(victim.join(n)).unwrap(),
            "precious\n",
            "{n} in the runner's directory was deleted"
        );
    }
    assert!(!victim.join(".drydock-clean-report").exists());
    // Alice's moved files were not touched either: nothing was deleted.
    assert!(dd.work().join("logs.moved/a.log").exists());
}

const LOGS: &str = r#"
runbook(#{ name: "logs" });
step("log", || append_file(`${env("WORK")}/log`, "ran\n"));
"#;

/// Issue 19: once, in group mode, serve's API answered "database disk
/// image is malformed" after another account read the journal. Serve's
/// own opening of the journal dropped the locks its open connections held
/// (POSIX locks go with any close of the file), so the other account's
/// process, closing last, deleted the -wal and -shm files serve still
/// used: serve went on with a deleted wal-index (stale reads, a schedule
/// added afterwards never ran, and at worst a malformed journal). Now
/// serve's files stay live and it sees what is added after.
#[test]
fn a_journal_read_by_another_account_leaves_serve_on_the_live_journal() {
    let (dd, alice) = shared();
    dd.write_runbook("logs.rhai", LOGS);
    chmod(&dd.work(), 0o777);
    assert_code(&dd.run(&["run", "logs"]), 0);
    let mut serve = dd.serve("off");
    dd.wait_until("serve answers", || {
        dd.run(&["serve", "status"]).status.code() == Some(0)
    });
    // A few ticks: serve opens the journal again and again.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    // Another account reads the journal with sqlite3 and closes it (the
    // sqlite3 package: scripts/setup installs it).
    let out = std::process::Command::new("runuser")
        .args(["-u", &alice.name, "--", "sqlite3"])
        .arg(dd.data_dir().join("journal.sqlite3"))
        .arg("SELECT COUNT(*) FROM executions;")
        .output()
        .expect("sqlite3 (scripts/setup installs it)");
    assert!(out.status.success(), "sqlite3: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "1");
    let deleted: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", serve.id()))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|p| p.display().to_string())
        .filter(|p| p.contains("journal.sqlite3") && p.ends_with("(deleted)"))
        .collect();
    // Then a schedule is added and serve must see it.
    let at = at_in(2);
    assert_code(
        &dd.run(&[
            "schedules",
            "add",
            "soon",
            "--runbook",
            "logs",
            "--schedule",
            &at,
        ]),
        0,
    );
    let start = std::time::Instant::now();
    while dd.count("log", "ran") < 2 && start.elapsed() < std::time::Duration::from_secs(12) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let ran = dd.count("log", "ran");
    let (status, body) = dd.local_api_get("/api/executions");
    let _ = serve.kill();
    let _ = serve.wait();
    assert!(
        deleted.is_empty(),
        "serve holds deleted journal files after another account's read: {deleted:?}"
    );
    assert_eq!(ran, 2, "serve never ran the schedule added after the read");
    assert!(status.contains("200"), "{status}: {body}");
    let scheduled = dd.json(&["schedules", "show", "soon"])["slots"][0]["execution_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        !scheduled.is_empty() && body.contains(&scheduled),
        "serve's API does not list {scheduled}: {body}"
    );
    assert_code(&dd.run(&["executions"]), 0);
}

/// Issue 19: a maintenance window's task ran as requested by the serve
/// account, so whoever added it approved their own change. A task carries
/// whoever added (or last changed) it; the execution the window starts is
/// requested by them and run by serve's account; they cannot approve it.
#[test]
fn a_window_task_is_requested_by_whoever_added_it() {
    let (dd, alice) = shared();
    let bob = os_user("ddtbob", &["ddtrust"]);
    dd.write_runbook("nightly-change.rhai", SCHEDULED);
    chmod(&dd.work(), 0o777);
    let at = at_in(3);
    assert_code(
        &dd.run(&[
            "windows",
            "add",
            "patch",
            "--schedule",
            &at,
            "--duration",
            "2m",
            "--cutoff",
            "10s",
        ]),
        0,
    );
    let out = dd.run_as(
        &alice,
        &[
            "windows",
            "task",
            "patch",
            "change",
            "--runbook",
            "nightly-change",
            "-p",
            "approvers=ddtalice,ddtbob",
        ],
    );
    assert_stdout(&out, 0, &["requested by ddtalice"]);
    let shown = text(&dd.run(&["windows", "show", "patch"]).stdout);
    assert!(shown.contains("ddtalice"), "{shown}");
    let mut serve = dd.serve("off");
    let mut id = String::new();
    dd.wait_until("the window starts its task", || {
        id = dd.json(&["windows", "show", "patch"])["runs"][0]["tasks"][0]["execution_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        !id.is_empty()
    });
    dd.wait_for_approval(&id);
    let show = dd.show(&id);
    assert_eq!(show["execution"]["requested_by"], "ddtalice", "{show}");
    assert_eq!(show["execution"]["run_by"], "root", "{show}");
    let out = dd.run_as(&alice, &["approve", &id]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("separation of duties"),
        "{}",
        text(&out.stderr)
    );
    assert_code(&dd.run_as(&bob, &["approve", &id]), 0);
    dd.wait_until("the run ends", || dd.state(&id) == "Success");
    let _ = serve.kill();
    let _ = serve.wait();
}

/// A window runs only the code approved when its task was added: a
/// runbook changed since is skipped at the window, with the reason.
#[test]
fn a_window_task_whose_runbook_changed_is_skipped() {
    let dd = Drydock::new();
    dd.write_runbook("nightly-change.rhai", SCHEDULED);
    let at = at_in(3);
    assert_code(
        &dd.run(&[
            "windows",
            "add",
            "patch",
            "--schedule",
            &at,
            "--duration",
            "2m",
            "--cutoff",
            "10s",
        ]),
        0,
    );
    assert_code(
        &dd.run(&[
            "windows",
            "task",
            "patch",
            "change",
            "--runbook",
            "nightly-change",
        ]),
        0,
    );
    dd.write_runbook(
        "nightly-change.rhai",
        &SCHEDULED.replace("version 1", "changed after approval"),
    );
    let mut serve = dd.serve("off");
    let mut task = serde_json::Value::Null;
    dd.wait_until("the window handles its task", || {
        task = dd.json(&["windows", "show", "patch"])["runs"][0]["tasks"][0].clone();
        task["state"] == "skipped" || !task["execution_id"].is_null()
    });
    let _ = serve.kill();
    let _ = serve.wait();
    assert_eq!(task["state"], "skipped", "{task}");
    assert!(
        task["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("changed since the task was added"),
        "{task}"
    );
    assert!(!dd.work().join("ran").exists(), "the changed code ran");
}
