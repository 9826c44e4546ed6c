//! Hostile values never panic the runner or wedge an execution: huge
//! durations, runaway recursion, id patterns, and a busy loop that must
//! still stop for `drydock cancel`.

mod common;

use std::time::{Duration, Instant};

use common::{assert_code, assert_stderr, text, wait_child, Drydock};

#[test]
fn huge_durations_are_usage_errors_or_clear_failures() {
    let dd = Drydock::new();
    dd.write_runbook(
        "wait.rhai",
        r#"runbook(#{ name: "wait", params: #{ wait: #{ type: "duration", default_value: "1s" } } });"#,
    );
    for value in ["1e20", "99999999999d", "1e300s", "NaN", "-5s", "inf"] {
        let out = dd.run(&["run", "wait", "-p", &format!("wait={value}")]);
        assert_code(&out, 2);
        assert!(
            text(&out.stderr).contains("parameter `wait`"),
            "{value}: {}",
            text(&out.stderr)
        );
    }
    let out = dd.run(&["run", "wait", "-p", "wait=36501d"]);
    assert_stderr(&out, 2, &["longest duration drydock takes (100 years)"]);
    assert!(dd.executions().is_empty(), "nothing was recorded");

    for (name, body) in [
        ("sleep-int", "sleep(9223372036854775807);"),
        ("sleep-float", "sleep(9.3e18);"),
        ("step-timeout", r#"step("s", #{ timeout: 1e30 }, || 1);"#),
        (
            "approval-timeout",
            r#"approve(#{ message: "m", timeout: 1e20 });"#,
        ),
    ] {
        dd.write_runbook(
            &format!("{name}.rhai"),
            &format!("runbook(#{{ name: \"{name}\" }});\n{body}\n"),
        );
        let out = dd.run(&["run", name]);
        assert_code(&out, 1);
        assert!(
            text(&out.stderr).contains("longest duration"),
            "{name}: {}",
            text(&out.stderr)
        );
    }
    // A growing backoff cannot overflow: it is capped by max_backoff.
    dd.write_runbook(
        "backoff.rhai",
        r#"runbook(#{ name: "backoff" });
           step("s", #{ attempts: 3, backoff: "36500d", backoff_factor: 10, max_backoff: "100ms" }, || throw "no");"#,
    );
    let start = Instant::now();
    assert_code(&dd.run(&["run", "backoff"]), 1);
    assert!(start.elapsed() < Duration::from_secs(20));
}

#[test]
fn a_runbook_that_calls_itself_stops_at_a_depth_limit() {
    let dd = Drydock::new();
    dd.write_runbook(
        "again.rhai",
        r#"runbook(#{ name: "again" }); run_runbook("again")"#,
    );
    let out = dd.run(&["run", "again"]);
    assert_stderr(&out, 1, &["runbooks nest deeper than 16 levels"]);
    let id = dd.only_execution();
    assert_eq!(dd.state(&id), "Failed");
}

#[test]
fn execution_ids_are_not_patterns() {
    let dd = Drydock::new();
    dd.write_runbook("one.rhai", r#"runbook(#{ name: "one" }); 1"#);
    assert_code(&dd.run(&["run", "one"]), 0);
    for pattern in ["%", "_", "ex-%", "ex-_%", "'", "ex-"] {
        let out = dd.run(&["cancel", pattern]);
        assert_code(&out, 2);
        assert!(
            text(&out.stderr).contains("no execution matches"),
            "{pattern}: {}",
            text(&out.stderr)
        );
    }
    let id = dd.only_execution();
    assert_code(
        &dd.run(&[
            "executions",
            "show",
            &id[..6].to_uppercase().replace("EX", "ex"),
        ]),
        0,
    );
}

#[test]
fn a_busy_loop_stops_for_cancel() {
    let dd = Drydock::new();
    dd.write_runbook(
        "spin.rhai",
        r#"runbook(#{ name: "spin" }); let n = 0; loop { n += 1; }"#,
    );
    let child = dd.spawn(&["run", "spin"]);
    let id = dd.only_execution();
    dd.wait_until("the runner", || dd.state(&id) == "InProgress");
    let start = Instant::now();
    assert_code(&dd.run(&["cancel", &id]), 0);
    let out = wait_child(child);
    assert_code(&out, 5);
    assert!(start.elapsed() < Duration::from_secs(15));
    assert_eq!(dd.state(&id), "Cancelled");
}

#[test]
fn a_journal_that_cannot_be_written_stops_the_execution() {
    let dd = Drydock::new();
    let journal = dd.data_dir().join("journal.sqlite3");
    // The "lock" step makes another process hold the journal exclusively
    // for longer than drydock waits for it (10 s), once.
    dd.write_runbook(
        "locked.rhai",
        &format!(
            r#"runbook(#{{ name: "locked" }});
let log = `${{env("WORK")}}/log`;
let marker = `${{env("WORK")}}/locked-once`;
step("first", || append_file(log, "first\n"));
step("lock", || {{
    if !file_exists(marker) {{
        write_file(marker, "");
        exec(["sh", "-c", "setsid python3 -c \"import sqlite3,time,sys; c=sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None); c.execute('BEGIN EXCLUSIVE'); open(sys.argv[2],'w').write('held'); time.sleep(14)\" \"$0\" \"$1\" </dev/null >/dev/null 2>&1 &", "{}", `${{env("WORK")}}/held`]);
        while !file_exists(`${{env("WORK")}}/held`) {{ sleep(0.05); }}
    }}
    "locked"
}});
step("after", || append_file(log, "after\n"));
"#,
            journal.display()
        ),
    );
    let out = dd.run(&["run", "locked"]);
    assert_stderr(&out, 1, &["the journal could not be written"]);
    assert_eq!(dd.count("log", "after"), 0, "no step runs unrecorded");
    // Once the other process lets go, the execution resumes where it stopped.
    std::thread::sleep(Duration::from_secs(5));
    let id = dd.only_execution();
    let out = dd.run(&["resume", &id]);
    assert_code(&out, 0);
    assert_eq!(dd.count("log", "first"), 1);
    assert_eq!(dd.count("log", "after"), 1);
}

#[test]
fn an_execution_acts_in_the_region_it_was_started_in() {
    let dd = Drydock::new();
    dd.write_runbook(
        "mkvol.rhai",
        r#"runbook(#{ name: "mkvol" });
let marker = `${env("WORK")}/paused-${execution_id}`;
step("pause", || if !file_exists(marker) { write_file(marker, ""); sleep(30); });
step("create", || volume::create(#{ size_mib: 1 }))"#,
    );
    let out = dd.run(&["--region", "region-b", "run", "mkvol", "--detach"]);
    assert_code(&out, 0);
    let id = text(&out.stdout).trim().to_string();
    dd.wait_until("the pause", || {
        dd.work().join(format!("paused-{id}")).exists()
    });
    // The runner dies; someone resumes from a shell set to region-a.
    let pid = dd.show(&id)["execution"]["runner_pid"].as_u64().unwrap();
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    dd.wait_until("the runner to die", || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
    let out = dd.run(&["--region", "region-a", "resume", &id]);
    assert_stderr(&out, 0, &["region region-b"]);
    let vol = dd.show(&id)["execution"]["output"]
        .as_str()
        .unwrap()
        .to_string();
    let in_b = dd.json(&["--region", "region-b", "volumes"]).to_string();
    let in_a = dd.json(&["--region", "region-a", "volumes"]).to_string();
    assert!(in_b.contains(&vol), "{in_b}");
    assert!(!in_a.contains(&vol), "{in_a}");
    assert_eq!(dd.show(&id)["execution"]["region"], "region-b");
    // The detached runner's log kept what it wrote before the crash.
    let log =
        std::fs::read_to_string(dd.data_dir().join("logs").join(format!("{id}.log"))).unwrap();
    assert!(log.contains("pause"), "{log}");
}

#[test]
fn a_hostile_file_in_a_runbook_directory_breaks_only_itself() {
    let dd = Drydock::new();
    dd.write_runbook("good.rhai", r#"runbook(#{ name: "good" }); "fine""#);
    dd.write_runbook(
        "strings.rhai",
        r#"let s = "xxxxxxxxxxxxxxxx"; loop { s += s; } runbook(#{ name: "strings" });"#,
    );
    dd.write_runbook(
        "arrays.rhai",
        r#"let a = [1]; loop { a += a; } runbook(#{ name: "arrays" });"#,
    );
    dd.write_runbook(
        "deep.rhai",
        &format!(
            "runbook(#{{ name: \"deep\" }}); {}1{};",
            "(".repeat(5000),
            ")".repeat(5000)
        ),
    );
    dd.write_runbook(
        "huge.rhai",
        &format!(
            "// {}\nrunbook(#{{ name: \"huge\" }});",
            "x".repeat(2 << 20)
        ),
    );
    let fifo = dd.dir.path().join("runbooks").join("fifo.rhai");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let start = Instant::now();
    let out = dd.run(&["--json", "run", "good"]);
    assert_code(&out, 0);
    assert!(start.elapsed() < Duration::from_secs(20));
    let out = dd.run(&["runbooks"]);
    assert_code(&out, 0);
    let listed = text(&out.stdout) + &text(&out.stderr);
    assert!(listed.contains("good"), "{listed}");
    for name in ["strings", "arrays", "huge", "fifo"] {
        let out = dd.run(&["run", name]);
        assert_code(&out, 2);
    }
    assert!(text(&dd.run(&["run", "huge"]).stderr).contains("at most 1048576 bytes"));
    assert!(text(&dd.run(&["run", "fifo"]).stderr).contains("not a regular file"));
}

#[test]
fn a_runner_whose_claim_was_taken_over_stops_writing() {
    let dd = Drydock::new();
    dd.write_runbook(
        "fenced.rhai",
        r#"runbook(#{ name: "fenced" });
let flag = `${env("WORK")}/go`;
step("wait", || { while !file_exists(flag) { sleep(0.05); } "waited" });
step("after", || append_file(`${env("WORK")}/log`, "after\n"));"#,
    );
    let child = dd.spawn(&["run", "fenced"]);
    let id = dd.only_execution();
    dd.wait_until("the step", || dd.state(&id) == "InProgress");
    std::thread::sleep(Duration::from_millis(300));
    // Another runner claims the execution (as a successor would after
    // judging this one dead): the claim counter moves on.
    let journal = dd.data_dir().join("journal.sqlite3");
    let ok = std::process::Command::new("python3")
        .arg("-c")
        .arg("import sqlite3,sys; c=sqlite3.connect(sys.argv[1], timeout=30); c.execute('UPDATE executions SET runner_epoch = runner_epoch + 1 WHERE id = ?', (sys.argv[2],)); c.commit()")
        .arg(&journal)
        .arg(&id)
        .status()
        .unwrap();
    assert!(ok.success());
    std::fs::write(dd.work().join("go"), "").unwrap();
    let out = wait_child(child);
    assert_stderr(&out, 1, &["was claimed by another runner"]);
    assert_eq!(dd.count("log", "after"), 0);
    // The stale runner recorded nothing after the takeover.
    let steps = dd.show(&id)["steps"].to_string();
    assert!(!steps.contains("waited"), "{steps}");
}

/// Runs drydock and kills it after `limit`: a command that hangs on a FIFO
/// or reads /dev/zero fails the test instead of wedging it.
fn run_within(dd: &Drydock, args: &[&str], limit: Duration) -> std::process::Output {
    let child = dd.spawn(args);
    let pid = child.id() as i32;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchdog = {
        let done = done.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            while start.elapsed() < limit {
                if done.load(std::sync::atomic::Ordering::SeqCst) {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            // SAFETY: kill(2) on our own child's pid, not yet waited for.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            true
        })
    };
    let out = wait_child(child);
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(
        !watchdog.join().unwrap(),
        "{args:?} did not end within {limit:?} (killed)"
    );
    out
}

#[test]
fn every_file_a_user_names_must_be_a_regular_file_and_is_refused_at_once() {
    let dd = Drydock::new();
    dd.write_runbook("good.rhai", r#"runbook(#{ name: "good" }); "fine""#);
    let work = dd.work();
    let zero = work.join("zero.rhai");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let fifo = work.join("fifo.rhai");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let dir = work.join("a-directory");
    std::fs::create_dir(&dir).unwrap();
    let big_key = work.join("big.pub");
    std::fs::write(&big_key, vec![b'k'; 70_000]).unwrap();
    for bad in [&zero, &fifo, &dir] {
        let f = bad.to_str().unwrap();
        let cases: Vec<Vec<&str>> = vec![
            vec!["validate", f],
            vec!["--json", "validate", f],
            vec!["run", f],
            vec!["run", "good", "--params-file", f],
            vec!["schedules", "import", f],
            vec!["calendar", "import", "holidays", f],
            vec!["param", "put", "p", "--value-file", f],
            vec!["--config", f, "runbooks"],
            vec!["instance", "launch", "--image", "img-0", "--ssh-key", f],
            vec!["instance", "launch", "--image", "img-0", "--user-data", f],
            vec!["image", "build", "--name", "k", "--kernel", f],
        ];
        for args in cases {
            let out = run_within(&dd, &args, Duration::from_secs(20));
            assert_code(&out, 2);
            let said = text(&out.stdout) + &text(&out.stderr);
            assert!(
                said.contains("not a regular file") && said.contains(f),
                "{args:?}: {said}"
            );
        }
    }
    // A size limit per kind, named in the error.
    let out = run_within(
        &dd,
        &[
            "instance",
            "launch",
            "--image",
            "img-0",
            "--ssh-key",
            big_key.to_str().unwrap(),
        ],
        Duration::from_secs(20),
    );
    assert_stderr(&out, 2, &["at most 65536 bytes"]);
    // The regular file next to them still validates.
    let out = dd.run(&[
        "validate",
        dd.dir.path().join("runbooks/good.rhai").to_str().unwrap(),
    ]);
    assert_code(&out, 0);
}
