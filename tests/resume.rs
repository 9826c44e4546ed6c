//! Durable execution: a runner killed with SIGKILL mid-step is resumed and
//! every completed step runs exactly once; an edited runbook is detected;
//! cancel stops at a safe point and runs cleanups; --retry reruns the
//! failed part.

mod common;

use common::{assert_code, assert_stderr, assert_stdout, text, wait_child, Drydock};

const FOUR_STEPS: &str = r#"
runbook(#{ name: "four" });
let w = env("WORK");
let c = `${w}/counter`;
cleanup("report", || append_file(c, "cleanup\n"));
let a = step("one", || { append_file(c, "one\n"); 1 });
let b = step("two", || { append_file(c, "two\n"); a + 1 });
let x = step("three", || {
    append_file(c, "three-start\n");
    while file_exists(`${w}/block`) { sleep(0.05); }
    append_file(c, "three\n");
    b + 1
});
step("four", || { append_file(c, "four\n"); x + 1 })
"#;

/// Starts the four-step runbook with step three blocked; returns the
/// running `drydock run` once step three has started.
fn run_until_step_three(dd: &Drydock) -> std::process::Child {
    std::fs::write(dd.work().join("block"), "").unwrap();
    let child = dd.spawn(&["run", "four"]);
    dd.wait_until("step three to start", || {
        dd.count("counter", "three-start") == 1
    });
    child
}

#[test]
fn a_run_killed_mid_step_resumes_and_completed_steps_run_once() {
    let dd = Drydock::new();
    dd.write_runbook("four.rhai", FOUR_STEPS);
    let mut child = run_until_step_three(&dd);
    // SIGKILL: no chance to clean up or write anything.
    child.kill().unwrap();
    child.wait().unwrap();
    let id = dd.only_execution();
    let listed = dd.json(&["executions"]);
    assert_eq!(listed[0]["state"], "InProgress");
    let table = text(&dd.run(&["executions"]).stdout);
    assert!(
        table.contains(&format!("runner gone: drydock resume {id}")),
        "{table}"
    );

    std::fs::remove_file(dd.work().join("block")).unwrap();
    let out = dd.run(&["--json", "resume", &id[..6]]);
    assert_code(&out, 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["state"], "Success");
    assert_eq!(v["output"], 4, "replayed outputs feed later steps");
    assert_eq!(v["steps_replayed"], 2);
    for (line, times) in [
        ("one", 1),
        ("two", 1),
        ("three-start", 2),
        ("three", 1),
        ("four", 1),
        ("cleanup", 1),
    ] {
        assert_eq!(dd.count("counter", line), times, "{line}");
    }
    let out = dd.run(&["resume", &id]);
    assert_stderr(&out, 2, &["already ended Success"]);
}

#[test]
fn resuming_after_the_runbook_changed_is_detected_and_nothing_is_lost() {
    let dd = Drydock::new();
    let path = dd.write_runbook("four.rhai", FOUR_STEPS);
    let mut child = run_until_step_three(&dd);
    child.kill().unwrap();
    child.wait().unwrap();
    let id = dd.only_execution();
    std::fs::remove_file(dd.work().join("block")).unwrap();

    let edited = FOUR_STEPS.replace("step(\"two\"", "step(\"second\"");
    std::fs::write(&path, &edited).unwrap();
    let out = dd.run(&["resume", &id]);
    let err = assert_stderr(&out, 2, &["runbook changed since this execution started"]);
    assert!(
        err.contains("call 2 was step `two` in the journal, the script now makes step `second`"),
        "{err}"
    );
    assert_eq!(dd.state(&id), "InProgress", "the execution stays resumable");
    assert_eq!(
        dd.count("counter", "cleanup"),
        0,
        "cleanups of a changed script do not run"
    );

    std::fs::write(&path, FOUR_STEPS).unwrap();
    assert_code(&dd.run(&["resume", &id]), 0);
    assert_eq!(dd.count("counter", "two"), 1);
    assert_eq!(dd.count("counter", "four"), 1);
}

#[test]
fn cancel_stops_a_running_execution_at_a_safe_point_and_runs_cleanups() {
    let dd = Drydock::new();
    dd.write_runbook("four.rhai", FOUR_STEPS);
    let child = run_until_step_three(&dd);
    let id = dd.only_execution();
    let out = dd.run(&["cancel", &id]);
    assert_stdout(&out, 0, &["ended Cancelled"]);
    let run = wait_child(child);
    assert_code(&run, 5);
    assert_eq!(dd.count("counter", "four"), 0);
    assert_eq!(dd.count("counter", "cleanup"), 1);
    let show = dd.show(&id);
    assert_eq!(show["execution"]["state"], "Cancelled");
    assert_eq!(show["steps"][2]["state"], "cancelled");
}

#[test]
fn cancel_without_a_live_runner_runs_the_cleanups_itself() {
    let dd = Drydock::new();
    dd.write_runbook("four.rhai", FOUR_STEPS);
    let mut child = run_until_step_three(&dd);
    child.kill().unwrap();
    child.wait().unwrap();
    let id = dd.only_execution();
    let out = dd.run(&["cancel", &id]);
    assert_code(&out, 0);
    assert_eq!(dd.state(&id), "Cancelled");
    assert_eq!(dd.count("counter", "cleanup"), 1);
    assert_eq!(dd.count("counter", "one"), 1);
    let out = dd.run(&["cancel", &id]);
    assert_stderr(&out, 2, &["already ended Cancelled"]);
}

#[test]
fn a_second_runner_is_refused_while_the_first_is_alive() {
    let dd = Drydock::new();
    dd.write_runbook("four.rhai", FOUR_STEPS);
    let child = run_until_step_three(&dd);
    let id = dd.only_execution();
    let out = dd.run(&["resume", &id]);
    assert_stderr(&out, 2, &["is being run by process"]);
    std::fs::remove_file(dd.work().join("block")).unwrap();
    assert_code(&wait_child(child), 0);
}

#[test]
fn retry_reruns_only_the_failed_part() {
    let dd = Drydock::new();
    dd.write_runbook(
        "fragile.rhai",
        r#"
runbook(#{ name: "fragile" });
let w = env("WORK");
step("prepare", || append_file(`${w}/log`, "prepare\n"));
step("needs fix", || {
    append_file(`${w}/log`, "try\n");
    if !file_exists(`${w}/fixed`) { throw "not fixed yet"; }
});
step("finish", || append_file(`${w}/log`, "finish\n"));
"#,
    );
    assert_code(&dd.run(&["run", "fragile"]), 1);
    let id = dd.only_execution();
    let out = dd.run(&["resume", &id]);
    assert_stderr(&out, 2, &[&format!("drydock resume {id} --retry")]);
    std::fs::write(dd.work().join("fixed"), "").unwrap();
    assert_code(&dd.run(&["resume", &id, "--retry"]), 0);
    assert_eq!(dd.count("log", "prepare"), 1);
    assert_eq!(dd.count("log", "try"), 2);
    assert_eq!(dd.count("log", "finish"), 1);
    assert_eq!(dd.state(&id), "Success");
}

#[test]
fn detach_returns_at_once_and_the_background_runner_finishes() {
    let dd = Drydock::new();
    dd.write_runbook("four.rhai", FOUR_STEPS);
    let out = dd.run(&["run", "four", "--detach"]);
    assert_code(&out, 0);
    let id = text(&out.stdout).trim().to_string();
    assert!(id.starts_with("ex-"), "{id}");
    dd.wait_until("the detached execution to end", || {
        dd.state(&id) == "Success"
    });
    assert_eq!(dd.count("counter", "four"), 1);
}
