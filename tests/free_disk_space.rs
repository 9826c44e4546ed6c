//! The free-disk-space runbook on a real guest whose disk was filled by the
//! `disk-full` fault (issue 13): df at 100 % over the console; a rejected
//! approval deletes nothing; an approved one (from another account, in
//! another process) deletes exactly the listed files and df ends under the
//! threshold, every step and the approver in the journal; hostile file
//! names (spaces, quotes, `$(…)`, backquotes, a newline) are listed escaped
//! and deleted without running anything; system directories and small
//! files are never candidates; nothing left to free is a clear failure.

mod common;

use std::io::Read;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use common::os_users::os_user;
use common::{assert_code, assert_stderr, text, vm_lock, wait_child, Drydock};
use serde_json::Value;

const R: &str = "region-a";
/// Root's password: every secret is masked in what drydock writes, so it
/// must not be a part of the names the test looks for.
const PW: &str = "fds-S3cret";

/// A path whose directories are named so that `$(touch /tmp/pwned)` is in
/// it, as a shell that evaluated it would run it.
const HOSTILE: &str = "/root/a b;$(touch /tmp/pwned)'x";
/// A name with a newline, `$(…)` and backquotes (no slash: it is one name).
const NEWLINE_NAME: &str = "/root/n\nl$(cd;cd ..;cd tmp;touch pwned2)`touch pwned3`";

/// The percent df shows for / on the guest.
fn df_percent(dd: &Drydock, id: &str) -> i64 {
    let o = dd.guest(R, id, PW, "df -Pk / | tail -n 1");
    let pct = o
        .split_whitespace()
        .find(|w| w.ends_with('%'))
        .unwrap_or_else(|| panic!("no percent in {o:?}"));
    pct.trim_end_matches('%').parse().unwrap()
}

fn start_run(dd: &Drydock, id: &str, extra: &[&str]) -> Child {
    let p_instance = format!("instance={id}");
    let mut args = vec![
        "--json",
        "--region",
        R,
        "run",
        "free-disk-space",
        "-p",
        &p_instance,
        "-p",
        "password=env:DD_TEST_PW",
    ];
    args.extend_from_slice(extra);
    dd.command(&args)
        .env("DD_TEST_PW", PW)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn outcome(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    })
}

/// The pending approval of an execution of free-disk-space other than
/// those in `seen`, once there is one (login, df and the search take a
/// while under emulation); returns its execution id and message. Fails with
/// the runner's output if it ends first.
fn pending_approval(dd: &Drydock, seen: &[String], runner: &mut Child) -> (String, String) {
    let start = Instant::now();
    loop {
        let list = dd.json(&["approvals"]);
        let found = list.as_array().unwrap().iter().find_map(|a| {
            let id = a["execution_id"].as_str()?.to_string();
            (!seen.contains(&id)).then(|| (id, a["message"].as_str().unwrap_or("").to_string()))
        });
        if let Some(f) = found {
            return f;
        }
        if let Some(status) = runner.try_wait().unwrap() {
            let mut out = String::new();
            if let Some(mut o) = runner.stdout.take() {
                let _ = o.read_to_string(&mut out);
            }
            let mut err = String::new();
            if let Some(mut e) = runner.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("the run ended ({status}) before asking for approval:\n{out}\n{err}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "no approval asked for within 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_full_disk_is_freed_over_the_console_only_as_approved() {
    let _vm = vm_lock();
    let alice = os_user("ddalice", &["ddops"]);
    let dd = Drydock::shared_by("ddops");
    let img = dd.image(R);
    let id = dd.launch(R, &img, &["--root-password", PW, "--allow-faults"]);

    // Data with hostile names, a large file where the system lives and a
    // small one, before the disk fills up.
    // (Short commands: busybox's line editor takes about 1 KiB.)
    for cmd in [
        "mkdir -p \"/root/a b;\\$(touch /tmp\"",
        "dd if=/dev/zero of=\"/root/a b;\\$(touch /tmp/pwned)'x\" bs=1M count=3 2>/dev/null",
        "dd if=/dev/zero of=\"$(printf '/root/n\\nl$(cd;cd ..;cd tmp;touch pwned2)`touch pwned3`')\" bs=1M count=2 2>/dev/null",
        "dd if=/dev/zero of=/etc/drydock-big bs=1M count=4 2>/dev/null",
        "dd if=/dev/zero of=/root/small bs=1k count=100 2>/dev/null && sync",
    ] {
        dd.guest(R, &id, PW, cmd);
    }
    let made = dd.guest(
        R,
        &id,
        PW,
        "find /root -type f -size +1000k -exec echo F \\; | wc -l",
    );
    assert_eq!(made.trim(), "2", "{made}");
    dd.inject_fault(R, &id, "disk-full");
    assert_eq!(df_percent(&dd, &id), 100);

    // 1. Rejected: nothing is deleted.
    let mut runner = start_run(&dd, &id, &["-p", "approvers=[\"ddalice\"]"]);
    let (rejected, message) = pending_approval(&dd, &[], &mut runner);
    assert!(message.contains("/var/drydock-fault-fill"), "{message}");
    assert!(message.contains("MiB"), "sizes listed: {message}");
    assert!(message.contains("100% used"), "{message}");
    assert_code(
        &dd.run_as(
            &alice,
            &["approve", &rejected, "--reject", "--comment", "not now"],
        ),
        0,
    );
    let out = wait_child(runner);
    assert_code(&out, 3);
    assert_eq!(
        df_percent(&dd, &id),
        100,
        "a rejected run deleted something"
    );
    dd.guest(
        R,
        &id,
        PW,
        "ls -l /var/drydock-fault-fill /root/small /etc/drydock-big",
    );

    // 2. Approved by alice from another process: the filler goes, df ends
    // under the default threshold of 90 %.
    let started = Instant::now();
    let mut runner = start_run(&dd, &id, &["-p", "approvers=[\"ddalice\"]"]);
    let (exec, message) = pending_approval(&dd, std::slice::from_ref(&rejected), &mut runner);
    assert!(
        message.contains("\"/var/drydock-fault-fill\" ("),
        "{message}"
    );
    assert!(
        !message.contains("drydock-big") && !message.contains("small"),
        "{message}"
    );
    assert_code(
        &dd.run_as(&alice, &["approve", &exec, "--comment", "go"]),
        0,
    );
    let out = wait_child(runner);
    assert_code(&out, 0);
    let wall = started.elapsed();
    let v = outcome(&out);
    let run_ms = v["duration_ms"].as_u64().unwrap_or(0);
    let o = &v["output"];
    assert_eq!(o["before_percent"], 100, "{v}");
    assert!(o["after_percent"].as_i64().unwrap() < 90, "{v}");
    let deleted: Vec<&str> = o["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert_eq!(deleted, ["/var/drydock-fault-fill"], "{v}");
    assert!(o["freed_kib"].as_i64().unwrap() > 100 * 1024, "{v}");
    assert_eq!(o["approved_by"][0], "ddalice", "{v}");
    assert!(df_percent(&dd, &id) < 90);
    // The journal: every step, their outputs, the approval and who gave it,
    // never the password.
    let shown = dd.show(&exec);
    let steps = shown["steps"].as_array().unwrap();
    let names: Vec<&str> = steps.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "log in and measure usage",
            "find the largest data files",
            "approval",
            "delete the approved files",
            "check usage is under the threshold",
        ],
        "{shown}"
    );
    assert!(steps.iter().all(|s| s["state"] == "succeeded"), "{shown}");
    assert_eq!(steps[0]["output"]["percent"], 100, "{shown}");
    assert_eq!(
        steps[3]["output"]["deleted"][0]["path"],
        "/var/drydock-fault-fill"
    );
    assert_eq!(shown["approvals"][0]["decisions"][0]["approver"], "ddalice");
    assert_eq!(shown["approvals"][0]["decisions"][0]["approve"], true);
    assert!(!shown.to_string().contains(PW), "{shown}");
    let rejected_show = dd.show(&rejected);
    assert_eq!(rejected_show["execution"]["state"], "Rejected");
    assert!(rejected_show["steps"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["name"] != "delete the approved files"));

    // 3. A threshold no deletion can reach: every candidate is listed and
    // deleted — the hostile names too, escaped in the message, without
    // running anything — then the run fails saying usage is still too high.
    let mut runner = start_run(
        &dd,
        &id,
        &["-p", "approvers=[\"ddalice\"]", "-p", "threshold=1"],
    );
    let (hostile_exec, message) =
        pending_approval(&dd, &[rejected.clone(), exec.clone()], &mut runner);
    assert!(message.contains(&format!("{HOSTILE:?}")), "{message}");
    assert!(message.contains(&format!("{NEWLINE_NAME:?}")), "{message}");
    assert!(!message.contains('\n'), "names are escaped: {message}");
    assert!(
        !message.contains("drydock-big") && !message.contains("/root/small"),
        "{message}"
    );
    assert_code(&dd.run_as(&alice, &["approve", &hostile_exec]), 0);
    let out = wait_child(runner);
    assert_code(&out, 1);
    let v = outcome(&out);
    let err = v["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("still") && err.contains("threshold is 1%"),
        "{v}"
    );
    let shown = dd.show(&hostile_exec);
    let gone: Vec<&str> = shown["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "delete the approved files")
        .unwrap()["output"]["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert!(
        gone.contains(&HOSTILE) && gone.contains(&NEWLINE_NAME),
        "{shown}"
    );
    let left = dd.guest(
        R,
        &id,
        PW,
        "find / -xdev -name 'pwned*' | wc -l; ls /root; ls -l /etc/drydock-big /root/small",
    );
    let mut lines = left.lines();
    assert_eq!(
        lines.next().map(str::trim),
        Some("0"),
        "something ran: {left}"
    );
    assert!(
        !left.contains("pwned)") && !left.contains("touch pwned"),
        "{left}"
    );
    assert!(
        left.contains("/etc/drydock-big") && left.contains("/root/small"),
        "{left}"
    );

    // 4. Nothing left to free: a clear failure that names it.
    let out = wait_child(start_run(&dd, &id, &["-p", "threshold=1"]));
    assert_code(&out, 1);
    let v = outcome(&out);
    let err = v["error"].as_str().unwrap_or_default();
    assert!(err.contains("nothing to free") && err.contains("1M"), "{v}");

    // Bad parameters are refused before anything runs.
    let out = wait_child(start_run(&dd, &id, &["-p", "path=/usr/lib"]));
    assert_code(&out, 1);
    assert!(
        outcome(&out)["error"]
            .as_str()
            .unwrap_or_default()
            .contains("data files only"),
        "{}",
        text(&out.stdout)
    );
    let out = wait_child(start_run(&dd, &id, &["-p", "min_size=lots"]));
    assert_stderr(&out, 2, &["min_size"]);
    eprintln!(
        "free-disk-space: approved run {wall:?} end to end (journal: {} ms, approval wait included)",
        run_ms
    );
}
