//! Status checks, automatic recovery and the event stream (issue 23),
//! with a real guest: `drydock serve` checks every second; the instance's
//! VMM is killed; serve sees the system check fail, starts the instance
//! again (same id, root volume and address, its synced data there), and
//! records it all as events. Three times; the fourth failure within the
//! day (EC2's limit, the default) is not recovered, and an event says why.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const R: &str = "region-a";
const PW: &str = "pw";

fn events(dd: &Drydock, id: &str) -> Vec<Value> {
    dd.json(&["events", "--instance", id, "--limit", "1000"])["events"]
        .as_array()
        .unwrap()
        .clone()
}

/// Waits until an event of `kind` about `id` after `after` matches `test`;
/// returns it.
fn wait_event(
    dd: &Drydock,
    id: &str,
    after: i64,
    kind: &str,
    test: impl Fn(&Value) -> bool,
    serve_log: &std::path::Path,
) -> Value {
    let start = Instant::now();
    loop {
        if let Some(e) = events(dd, id)
            .into_iter()
            .find(|e| e["seq"].as_i64().unwrap() > after && e["type"] == kind && test(e))
        {
            return e;
        }
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "no {kind} event for {id}; events: {:#?}\nserve said:\n{}",
            events(dd, id),
            std::fs::read_to_string(serve_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A GET on the serve's local API (its Unix socket; the caller is this
/// account).
fn local_api(dd: &Drydock, path: &str) -> Value {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(dd.data_dir().join("serve.sock")).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let body = reply.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {reply}"))
}

/// Sends `signal` to the VMM of a running instance: the child of its
/// instance process.
fn signal_vmm(dd: &Drydock, id: &str, signal: i32) {
    let sup = dd.instance(R, id)["supervisor_pid"].as_u64().unwrap();
    let children = std::fs::read_to_string(format!("/proc/{sup}/task/{sup}/children")).unwrap();
    let vmm: u32 = children
        .split_whitespace()
        .next()
        .expect("the instance process has a VMM")
        .parse()
        .unwrap();
    // SAFETY: kill sends a signal to a process of this test's own drydock.
    assert_eq!(unsafe { libc::kill(vmm as i32, signal) }, 0);
}

fn kill_vmm(dd: &Drydock, id: &str) {
    signal_vmm(dd, id, libc::SIGKILL);
}

/// `instance-status ID` once, with its exit code.
fn status_now(dd: &Drydock, id: &str) -> (i32, Value) {
    let out = dd.run(&["--json", "--region", R, "instance-status", id]);
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap(), v["statuses"][0].clone())
}

#[test]
fn a_dead_vmm_is_seen_impaired_and_recovered_three_times_then_left_stopped_past_the_limit() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    let img = dd.image(R);
    let id = dd.launch(R, &img, &["--root-password", PW, "--auto-recovery", "on"]);
    let before = dd.instance(R, &id);
    assert_eq!(before["auto_recovery"], true, "{before}");
    let (root, ip) = (
        before["root_volume"].as_str().unwrap().to_string(),
        before["private_ip"].clone(),
    );
    dd.guest(R, &id, PW, "echo kept-across-recovery > /root/kept && sync");
    // Checked now, by hand: both checks pass.
    let out = dd.run(&["--json", "--region", R, "instance-status", &id]);
    assert_code(&out, 0);
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["statuses"][0]["status"], "ok", "{st}");
    assert_eq!(st["statuses"][0]["system"]["status"], "ok", "{st}");
    // A VMM stopped by a signal makes no progress: the system check says
    // so within its probe's timeout; continued, it passes again.
    signal_vmm(&dd, &id, libc::SIGSTOP);
    let asked = Instant::now();
    let (code, st) = status_now(&dd, &id);
    let took = asked.elapsed();
    signal_vmm(&dd, &id, libc::SIGCONT);
    assert_eq!(code, 1, "impaired exits 1: {st}");
    assert_eq!(st["system"]["status"], "impaired", "{st}");
    let why = st["system"]["reason"].as_str().unwrap();
    assert!(
        why.contains("does not answer") && why.contains("no progress"),
        "{st}"
    );
    assert!(
        took < Duration::from_secs(20),
        "the check is bounded: {took:?}"
    );
    let start = Instant::now();
    loop {
        let (code, st) = status_now(&dd, &id);
        if code == 0 && st["system"]["status"] == "ok" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "continued: {st}");
        std::thread::sleep(Duration::from_millis(500));
    }

    let log = dd.work().join("serve.log");
    std::fs::create_dir_all(dd.work()).unwrap();
    let mut serve = dd
        .command(&[
            "--region",
            R,
            "serve",
            "--listen",
            "off",
            "--check-interval",
            "1s",
        ])
        .env("DRYDOCK_BIN", bin())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ok = wait_event(
        &dd,
        &id,
        0,
        "instance.status",
        |e| e["data"]["status"] == "ok",
        &log,
    );

    // The VMM dies: impaired (system), recovered, running again.
    kill_vmm(&dd, &id);
    let impaired = wait_event(
        &dd,
        &id,
        ok["seq"].as_i64().unwrap(),
        "instance.status",
        |e| e["data"]["status"] == "impaired",
        &log,
    );
    assert_eq!(impaired["data"]["system"], "impaired", "{impaired}");
    assert!(
        impaired["data"]["system_reason"]
            .as_str()
            .unwrap()
            .contains("VMM exited unexpectedly")
            || impaired["data"]["system_reason"]
                .as_str()
                .unwrap()
                .contains("gone"),
        "{impaired}"
    );
    let recovered = wait_event(
        &dd,
        &id,
        impaired["seq"].as_i64().unwrap(),
        "instance.recovery",
        |_| true,
        &log,
    );
    assert_eq!(recovered["data"]["outcome"], "recovered", "{recovered}");
    let after = dd.instance(R, &id);
    assert_eq!(after["state"], "running", "{after}");
    assert_eq!(after["root_volume"], root.as_str());
    assert_eq!(after["private_ip"], ip);
    let kept = dd.guest(R, &id, PW, "cat /root/kept");
    assert!(kept.contains("kept-across-recovery"), "{kept}");
    // The state changes are events too.
    let states: Vec<String> = events(&dd, &id)
        .iter()
        .filter(|e| e["type"] == "instance.state")
        .map(|e| e["data"]["state"].as_str().unwrap().to_string())
        .collect();
    assert!(
        states
            .windows(2)
            .any(|w| w[0] == "stopped" && w[1] == "pending"),
        "{states:?}"
    );
    assert_eq!(
        states.last().map(String::as_str),
        Some("running"),
        "{states:?}"
    );

    // Twice more, recovered (EC2's default: three in 24 hours); the
    // fourth failure within the day is not, and it stays stopped.
    let mut mark = recovered["seq"].as_i64().unwrap();
    for n in 2..=3 {
        let ok = wait_event(
            &dd,
            &id,
            mark,
            "instance.status",
            |e| e["data"]["status"] == "ok",
            &log,
        );
        kill_vmm(&dd, &id);
        let again = wait_event(
            &dd,
            &id,
            ok["seq"].as_i64().unwrap(),
            "instance.recovery",
            |_| true,
            &log,
        );
        assert_eq!(again["data"]["outcome"], "recovered", "{n}: {again}");
        assert_eq!(again["data"]["recoveries"], n, "{again}");
        mark = again["seq"].as_i64().unwrap();
    }
    wait_event(
        &dd,
        &id,
        mark,
        "instance.status",
        |e| e["data"]["status"] == "ok",
        &log,
    );
    kill_vmm(&dd, &id);
    let limit = wait_event(&dd, &id, mark, "instance.recovery", |_| true, &log);
    assert_eq!(limit["data"]["outcome"], "limit", "{limit}");
    assert!(
        limit["detail"]
            .as_str()
            .unwrap()
            .contains("3 recoveries in the last 24h00m")
            && limit["detail"].as_str().unwrap().contains("at most 3"),
        "{limit}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(dd.instance(R, &id)["state"], "stopped");
    let limits = events(&dd, &id)
        .iter()
        .filter(|e| e["type"] == "instance.recovery" && e["data"]["outcome"] == "limit")
        .count();
    assert_eq!(limits, 1, "said once, not at every check");
    // By hand: impaired, exit 1, the reason shown; in the listing too.
    let out = dd.run(&["--region", R, "instance-status", &id]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("impaired"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(dd.instance(R, &id)["status"], "impaired");
    // The web console's API says the same.
    let api = local_api(&dd, "/api/instances");
    let listed = api["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(listed["status"], "impaired", "{api}");
    serve.kill().unwrap();
    serve.wait().unwrap();
    dd.run(&["--region", R, "instance", "terminate", &id]);
}

#[test]
fn executions_and_approvals_are_events_and_the_stream_filters_and_refuses_bad_input() {
    let dd = Drydock::new();
    dd.write_runbook(
        "gated.rhai",
        r#"runbook(#{ name: "gated", description: "asks, then says hello" });
approve(#{ message: "go?", approvers: ["tester"], timeout: "1h" });
"hello""#,
    );
    let out = dd.run(&["--json", "run", "gated", "--auto-approve"]);
    assert_code(&out, 0);
    let all = dd.json(&["events"])["events"].as_array().unwrap().clone();
    let kinds: Vec<&str> = all.iter().map(|e| e["type"].as_str().unwrap()).collect();
    for k in [
        "execution.started",
        "approval.requested",
        "approval.decided",
        "execution.ended",
    ] {
        assert!(kinds.contains(&k), "{k} missing: {kinds:?}");
    }
    let ended = all.iter().find(|e| e["type"] == "execution.ended").unwrap();
    assert_eq!(ended["data"]["state"], "Success", "{ended}");
    assert_eq!(ended["data"]["runbook"], "gated");
    let seqs: Vec<i64> = all.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    // A family, a time window, a cursor.
    let execs = dd.json(&["events", "--type", "execution"])["events"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(execs, 2);
    assert_eq!(
        dd.json(&["events", "--since", "1h"])["events"]
            .as_array()
            .unwrap()
            .len(),
        all.len()
    );
    let after = dd.json(&["events", "--after", &seqs[1].to_string()])["events"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(after, all.len() - 2);
    // --limit keeps the newest, oldest first.
    let newest: Vec<i64> = dd.json(&["events", "--limit", "2"])["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(newest, seqs[seqs.len() - 2..].to_vec());
    // A runbook's own events; a type the host emits is refused.
    dd.write_runbook(
        "emits.rhai",
        r#"runbook(#{ name: "emits", description: "emits an event" });
event("runbook.deployed", #{ version: "1.2.3" });
"done""#,
    );
    assert_code(&dd.run(&["run", "emits"]), 0);
    let own = dd.json(&["events", "--type", "runbook"]);
    assert_eq!(own["events"][0]["type"], "runbook.deployed", "{own}");
    assert_eq!(own["events"][0]["data"]["version"], "1.2.3", "{own}");
    assert!(own["events"][0]["execution"].is_string(), "{own}");
    dd.write_runbook(
        "fakes.rhai",
        r#"runbook(#{ name: "fakes", description: "fakes an instance event" });
event("instance.state", #{ state: "running" });"#,
    );
    let out = dd.run(&["run", "fakes"]);
    assert_code(&out, 1);
    assert!(
        text(&out.stderr).contains("not a type a runbook may emit"),
        "{}",
        text(&out.stderr)
    );
    // Retention: nothing this recent goes.
    let pruned = dd.json(&["events", "prune", "--older-than", "1h"]);
    assert_eq!(pruned["removed"], 0, "{pruned}");
    let now_all = dd.json(&["events", "--limit", "10000"])["events"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(pruned["left"], now_all, "{pruned}");
    // Bad input: exit 2 with the fix.
    for (args, says) in [
        (
            vec!["events", "--type", "instance.bogus"],
            "is not an event type",
        ),
        (
            vec!["events", "--since", "yesterday-ish"],
            "neither a duration",
        ),
        (vec!["events", "--limit", "0"], "at least 1"),
        (vec!["serve", "--check-interval", "10ms"], "at least 1s"),
        (
            vec!["events", "prune", "--older-than", "10m"],
            "shorter than an hour",
        ),
        (vec!["events", "prune", "--older-than", "soon"], "30d"),
        (
            vec!["serve", "--event-retention", "5m"],
            "shorter than an hour",
        ),
        (
            vec!["events", "--limit", "3", "prune", "--older-than", "1d"],
            "cannot be used with",
        ),
        (
            vec!["instance", "modify", "i-0", "--auto-recovery", "maybe"],
            "on or off",
        ),
    ] {
        assert_refused(&dd.run(&args), &args, says);
    }
    // --follow prints as events happen.
    let mut follow = dd
        .command(&["--json", "events", "--follow", "--type", "execution.ended"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert_code(&dd.run(&["run", "gated", "--auto-approve"]), 0);
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(follow.stdout.take().unwrap()));
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let second: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["type"], "execution.ended");
    assert!(second["seq"].as_i64() > first["seq"].as_i64(), "{second}");
    follow.kill().unwrap();
    follow.wait().unwrap();
}
