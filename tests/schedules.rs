//! Schedules and `drydock serve` through the real binary: validation with
//! the position of the error, a slot that runs once even when serve is
//! killed and restarted, a schedules file picked up without a restart,
//! and a run whose runner died resumed by the next serve.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::serve::{at_in, iso, wait_for};
use common::{assert_code, assert_stdout, text, Drydock};

const LOG: &str = r#"
runbook(#{ name: "log-line", params: #{ line: #{ type: "string", default_value: "ran" } } });
step("log", || append_file(`${env("WORK")}/log`, params.line + "\n"));
"#;

#[test]
fn schedules_are_validated_before_anything_is_stored() {
    let dd = Drydock::new();
    dd.write_runbook("log-line.rhai", LOG);
    let cases: [(&[&str], &str); 5] = [
        (&["--schedule", "cron(0 25 * * *)"], "column 8: hour `25`"),
        (&["--schedule", "rate(6 weeks)"], "unit `weeks`"),
        (
            &["--schedule", "cron(0 3 * * *)", "--timezone", "Mars/Base"],
            "IANA",
        ),
        (
            &["--schedule", "cron(0 3 * * *)", "-p", "nope=1"],
            "unknown parameter",
        ),
        (
            &["--schedule", "cron(0 3 * * *)", "--missed", "sometimes"],
            "skip or catch-up",
        ),
    ];
    for (extra, msg) in cases {
        let mut args = vec!["schedules", "add", "nightly", "--runbook", "log-line"];
        args.extend_from_slice(extra);
        let out = dd.run(&args);
        assert_code(&out, 2);
        assert!(
            text(&out.stderr).contains(msg),
            "{extra:?}: {}",
            text(&out.stderr)
        );
    }
    assert_eq!(dd.json(&["schedules"]), serde_json::json!([]));
    let out = dd.run(&[
        "schedules",
        "add",
        "nightly",
        "--runbook",
        "log-line",
        "--schedule",
        "cron(0 3 * * *)",
        "--timezone",
        "Europe/Berlin",
        "-p",
        "line=night",
    ]);
    assert_code(&out, 0);
    let list = dd.json(&["schedules"]);
    assert_eq!(list[0]["schedule"]["name"], "nightly");
    assert!(
        list[0]["next_run"].as_str().unwrap().contains("T02:00:00")
            || list[0]["next_run"].as_str().unwrap().contains("T01:00:00")
    );
    assert_code(&dd.run(&["schedules", "pause", "nightly"]), 0);
    assert_eq!(
        dd.json(&["schedules", "show", "nightly"])["schedule"]["paused"],
        true
    );
    assert_code(&dd.run(&["schedules", "remove", "nightly"]), 0);
    assert_code(&dd.run(&["schedules", "show", "nightly"]), 2);
}

#[test]
fn a_slot_runs_once_even_when_serve_is_killed_and_restarted() {
    let dd = Drydock::new();
    dd.write_runbook("log-line.rhai", LOG);
    let when = at_in(3);
    assert_code(
        &dd.run(&[
            "schedules",
            "add",
            "once",
            "--runbook",
            "log-line",
            "--schedule",
            &when,
        ]),
        0,
    );
    let mut s = dd.serve_with("127.0.0.1:0", Stdio::piped(), Stdio::piped());
    wait_for("the slot to run", Duration::from_secs(20), || {
        dd.count("log", "ran") == 1
    });
    // Killed without warning, restarted: the slot is in the journal.
    s.kill().unwrap();
    s.wait().unwrap();
    let mut s = dd.serve_with("127.0.0.1:0", Stdio::piped(), Stdio::piped());
    std::thread::sleep(Duration::from_secs(4));
    s.kill().unwrap();
    s.wait().unwrap();
    assert_eq!(dd.count("log", "ran"), 1, "never twice for the same slot");
    let show = dd.json(&["schedules", "show", "once"]);
    assert_eq!(show["slots"].as_array().unwrap().len(), 1);
    assert_eq!(show["slots"][0]["state"], "started");
    let id = show["slots"][0]["execution_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(dd.state(&id), "Success");
    assert!(show["next_run"].is_null(), "an at() schedule runs once");
}

#[test]
fn a_schedules_file_is_picked_up_by_a_running_serve() {
    let dd = Drydock::new();
    dd.write_runbook("log-line.rhai", LOG);
    let mut s = dd.serve_with("127.0.0.1:0", Stdio::piped(), Stdio::piped());
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::write(
        dd.data_dir().join("schedules.toml"),
        format!(
            "[[schedule]]\nname = \"from-file\"\nrunbook = \"log-line\"\nschedule = \"{}\"\n[schedule.params]\nline = \"from file\"\n",
            at_in(3)
        ),
    )
    .unwrap();
    wait_for(
        "the file's schedule to run",
        Duration::from_secs(20),
        || dd.count("log", "from file") == 1,
    );
    s.kill().unwrap();
    let out = s.wait_with_output().unwrap();
    let said = text(&out.stdout);
    assert!(
        said.contains("1 schedules") && said.contains("from-file: slot"),
        "{said}"
    );
}

#[test]
fn a_scheduled_run_whose_runner_died_is_resumed_by_the_next_serve() {
    let dd = Drydock::new();
    dd.write_runbook(
        "two-steps.rhai",
        r#"runbook(#{ name: "two-steps" });
let flag = `${env("WORK")}/go`;
step("first", || append_file(`${env("WORK")}/log`, "first\n"));
step("wait", || { while !file_exists(flag) { sleep(0.05); } });
step("last", || append_file(`${env("WORK")}/log`, "last\n"));"#,
    );
    assert_code(
        &dd.run(&[
            "schedules",
            "add",
            "job",
            "--runbook",
            "two-steps",
            "--schedule",
            &at_in(2),
        ]),
        0,
    );
    let s = dd.serve_with("127.0.0.1:0", Stdio::piped(), Stdio::piped());
    wait_for("the first step", Duration::from_secs(20), || {
        dd.count("log", "first") == 1
    });
    // SIGTERM: serve stops starting work and exits cleanly.
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(s.id() as i32, libc::SIGTERM) };
    let out = s.wait_with_output().unwrap();
    assert_stdout(&out, 0, &["stopping"]);
    // The machine goes down: the runner dies too.
    let id = dd.json(&["schedules", "show", "job"])["slots"][0]["execution_id"]
        .as_str()
        .unwrap()
        .to_string();
    let pid = dd.show(&id)["execution"]["runner_pid"].as_u64().unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    wait_for("the runner to die", Duration::from_secs(10), || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
    std::fs::write(dd.work().join("go"), "").unwrap();
    let mut s = dd.serve_with("127.0.0.1:0", Stdio::piped(), Stdio::piped());
    wait_for("the resumed run to finish", Duration::from_secs(30), || {
        dd.state(&id) == "Success"
    });
    s.kill().unwrap();
    s.wait().unwrap();
    assert_eq!(
        dd.count("log", "first"),
        1,
        "completed steps are not run again"
    );
    assert_eq!(dd.count("log", "last"), 1);
}

#[test]
fn a_change_calendar_blocks_a_scheduled_run_or_gates_it_behind_an_override() {
    let alice = common::os_users::os_user("ddalice", &["ddops"]);
    let dd = Drydock::shared_by("ddops");
    dd.write_runbook("log-line.rhai", LOG);
    assert_code(
        &dd.run(&["calendar", "add", "prod", "--default", "open"]),
        0,
    );
    assert_code(
        &dd.run(&[
            "calendar",
            "event",
            "prod",
            "--start",
            &iso(-3600),
            "--end",
            &iso(3600),
            "--summary",
            "Release freeze",
        ]),
        0,
    );
    let out = dd.run(&["calendar", "state", "prod"]);
    assert_code(&out, 1);
    assert!(
        text(&out.stdout).contains("closed: change calendar prod is closed: Release freeze until")
    );
    assert_code(
        &dd.run(&["calendar", "state", "prod", "--at", &iso(7200)]),
        0,
    );
    // A runbook can ask too.
    dd.write_runbook(
        "ask.rhai",
        r#"runbook(#{ name: "ask" }); [calendar::state("prod"), calendar::state("nope")]"#,
    );
    let out = dd.run(&["--json", "run", "ask"]);
    assert_code(&out, 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["output"], serde_json::json!(["closed", "closed"]));

    // Skipped and recorded.
    assert_code(
        &dd.run(&[
            "schedules",
            "add",
            "frozen",
            "--runbook",
            "log-line",
            "--schedule",
            &at_in(2),
            "--calendar",
            "prod",
        ]),
        0,
    );
    // Gated: the run waits for an override approval by someone else.
    assert_code(
        &dd.run(&[
            "calendar",
            "add",
            "gated",
            "--default",
            "closed",
            "--on-closed",
            "approval",
        ]),
        0,
    );
    assert_code(
        &dd.run(&[
            "schedules",
            "add",
            "override",
            "--runbook",
            "log-line",
            "--schedule",
            &at_in(2),
            "--calendar",
            "gated",
            "-p",
            "line=overridden",
        ]),
        0,
    );
    let mut s = dd.serve_with("127.0.0.1:0", Stdio::piped(), Stdio::piped());
    let mut id = String::new();
    wait_for("the gated run to wait", Duration::from_secs(20), || {
        let show = dd.json(&["schedules", "show", "override"]);
        match show["slots"][0]["execution_id"].as_str() {
            Some(e) => {
                id = e.to_string();
                dd.state(&id) == "WaitingForApproval"
            }
            None => false,
        }
    });
    let frozen = dd.json(&["schedules", "show", "frozen"]);
    assert_eq!(frozen["slots"][0]["state"], "skipped");
    assert!(frozen["slots"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("Release freeze"));
    // A slot not run is an event, with why.
    let slots = dd.json(&["events", "--type", "schedule.slot"]);
    let skipped = slots["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["data"]["schedule"] == "frozen")
        .unwrap_or_else(|| panic!("{slots}"));
    assert_eq!(skipped["data"]["state"], "skipped", "{skipped}");
    assert!(
        skipped["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("Release freeze"),
        "{skipped}"
    );
    let pending = dd.json(&["approvals"]).to_string();
    assert!(pending.contains("run override anyway?"), "{pending}");
    assert_code(
        &dd.run_as(&alice, &["approve", &id, "--comment", "hotfix"]),
        0,
    );
    wait_for("the overridden run", Duration::from_secs(20), || {
        dd.count("log", "overridden") == 1
    });
    s.kill().unwrap();
    s.wait().unwrap();
    assert_eq!(dd.count("log", "ran"), 0, "the frozen slot never ran");
}

#[test]
fn an_icalendar_file_is_imported() {
    let dd = Drydock::new();
    let ics = dd.work().join("freezes.ics");
    std::fs::write(
        &ics,
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nBEGIN:VEVENT\r\nUID:a\r\nDTSTAMP:20261201T000000Z\r\nDTSTART:20261220T000000Z\r\nDTEND:20270102T000000Z\r\nSUMMARY:Year-end freeze\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
    )
    .unwrap();
    assert_code(&dd.run(&["calendar", "add", "prod"]), 0);
    assert_code(
        &dd.run(&["calendar", "import", "prod", ics.to_str().unwrap()]),
        0,
    );
    let show = dd.json(&["calendar", "show", "prod"]);
    assert_eq!(show["events"][0]["summary"], "Year-end freeze");
    assert_code(
        &dd.run(&["calendar", "state", "prod", "--at", "2026-12-24T00:00:00Z"]),
        1,
    );
    assert_code(
        &dd.run(&["calendar", "state", "prod", "--at", "2027-01-03T00:00:00Z"]),
        0,
    );
    std::fs::write(&ics, "garbage").unwrap();
    assert_code(
        &dd.run(&["calendar", "import", "prod", ics.to_str().unwrap()]),
        2,
    );
}

#[test]
fn a_maintenance_window_runs_tasks_by_priority_until_its_cutoff_and_cancels_at_its_end() {
    let dd = Drydock::new();
    dd.write_runbook("log-line.rhai", LOG);
    dd.write_runbook(
        "slow.rhai",
        r#"runbook(#{ name: "slow", params: #{ secs: #{ type: "int" }, line: #{ type: "string" } } });
step("slow", || { sleep(params.secs); append_file(`${env("WORK")}/log`, params.line + "\n"); });"#,
    );
    let at = at_in(2);
    assert_code(
        &dd.run(&[
            "windows",
            "add",
            "patch",
            "--schedule",
            &at,
            "--duration",
            "16s",
            "--cutoff",
            "6s",
        ]),
        0,
    );
    for (task, rb, prio, extra) in [
        ("backup", "log-line", "1", "line=backup"),
        ("patch-a", "log-line", "2", "line=patch-a"),
        ("patch-b", "log-line", "2", "line=patch-b"),
        ("long", "slow", "3", "secs=9"),
        ("too-late", "log-line", "4", "line=too-late"),
    ] {
        let mut args = vec![
            "windows",
            "task",
            "patch",
            task,
            "--runbook",
            rb,
            "--priority",
            prio,
            "-p",
            extra,
        ];
        if rb == "slow" {
            args.extend(["-p", "line=long"]);
        }
        assert_code(&dd.run(&args), 0);
    }
    assert_code(
        &dd.run(&[
            "windows",
            "add",
            "short",
            "--schedule",
            &at,
            "--duration",
            "6s",
            "--at-end",
            "cancel",
        ]),
        0,
    );
    assert_code(
        &dd.run(&[
            "windows",
            "task",
            "short",
            "forever",
            "--runbook",
            "slow",
            "-p",
            "secs=600",
            "-p",
            "line=never",
        ]),
        0,
    );
    let mut s = dd.serve_with("127.0.0.1:0", Stdio::piped(), Stdio::piped());
    wait_for("both windows to close", Duration::from_secs(90), || {
        let p = dd.json(&["windows", "show", "patch"]);
        let q = dd.json(&["windows", "show", "short"]);
        p["runs"][0]["run"]["state"] == "closed" && q["runs"][0]["run"]["state"] == "closed"
    });
    s.kill().unwrap();
    let out = s.wait_with_output().unwrap();
    let log = std::fs::read_to_string(dd.work().join("log")).unwrap_or_default();
    let order: Vec<&str> = log.lines().collect();
    assert_eq!(order.first(), Some(&"backup"), "{log}");
    assert!(
        order.iter().position(|l| *l == "long") > order.iter().position(|l| *l == "patch-a"),
        "{log}"
    );
    assert!(!log.contains("too-late"), "cutoff: {log}");
    let patch = dd.json(&["windows", "show", "patch"]);
    let tasks = patch["runs"][0]["tasks"].to_string();
    assert!(
        tasks.contains("cutoff: no task starts in the last 6.0s"),
        "{tasks}"
    );
    // The short window's task was cancelled at its end.
    let short = dd.json(&["windows", "show", "short"]);
    let id = short["runs"][0]["tasks"][0]["execution_id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for("the cancel", Duration::from_secs(15), || {
        dd.state(&id) == "Cancelled"
    });
    assert!(
        text(&out.stdout).contains("window short: ended; cancelling"),
        "{}",
        text(&out.stdout)
    );
}

/// The children of `pid` that are zombies (state Z in /proc/PID/stat).
fn zombies_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid …: comm may hold spaces, so split after ')'.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let (Some(state), Some(ppid)) = (f.next(), f.next()) else {
            continue;
        };
        if state == "Z" && ppid.parse() == Ok(pid) {
            out.push(head.split_whitespace().next().unwrap().parse().unwrap());
        }
    }
    out
}

/// Issue 19: serve left `<defunct>` runners. Quick scheduled runs end
/// while serve sleeps between ticks; each is reaped when it ends, and a
/// zombie child of serve is never seen for more than a moment.
#[test]
fn serve_reaps_every_runner_it_started() {
    let dd = Drydock::new();
    // Ends a moment after serve started it, well before serve's next tick.
    dd.write_runbook(
        "brief.rhai",
        r#"runbook(#{ name: "brief" });
step("log", || { append_file(`${env("WORK")}/log`, "ran\n"); sleep(0.2); });"#,
    );
    for (i, secs) in [(1, 2), (2, 4), (3, 6)] {
        let name = format!("quick-{i}");
        assert_code(
            &dd.run(&[
                "schedules",
                "add",
                &name,
                "--runbook",
                "brief",
                "--schedule",
                &at_in(secs),
            ]),
            0,
        );
    }
    let mut s = dd.serve_with("127.0.0.1:0", Stdio::piped(), Stdio::piped());
    let pid = s.id();
    // Sampled every 20 ms: how long each zombie child of serve lasted.
    let mut seen: std::collections::HashMap<u32, Instant> = Default::default();
    let mut longest = Duration::ZERO;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(25) {
        let now = zombies_of(pid);
        for z in &now {
            let first = *seen.entry(*z).or_insert_with(Instant::now);
            longest = longest.max(first.elapsed());
        }
        if dd.count("log", "ran") == 3 && start.elapsed() > Duration::from_secs(9) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(dd.count("log", "ran"), 3, "the three runs ran");
    std::thread::sleep(Duration::from_millis(500));
    let left = zombies_of(pid);
    s.kill().unwrap();
    s.wait().unwrap();
    assert!(left.is_empty(), "zombie children of serve: {left:?}");
    assert!(
        longest < Duration::from_millis(300),
        "a runner stayed <defunct> for {longest:?} ({} zombies seen)",
        seen.len()
    );
}
