//! Journaled steps: retries with backoff, timeouts, failure policies
//! (abort, continue, compensation), cleanups, child runbooks.

mod common;

use std::time::{Duration, Instant};

use common::{assert_code, assert_stderr, text, Drydock};

#[test]
fn a_step_is_retried_until_it_succeeds() {
    let dd = Drydock::new();
    dd.write_runbook(
        "flaky.rhai",
        r#"
runbook(#{ name: "flaky" });
let tries = `${env("WORK")}/tries`;
let v = step("flaky", #{ attempts: 4, backoff: "50ms" }, || {
    append_file(tries, "try\n");
    let n = read_file(tries).split("\n").len() - 1;
    if n < 3 { throw `only ${n} tries so far`; }
    n
});
v
"#,
    );
    let out = dd.run(&["--json", "run", "flaky"]);
    assert_code(&out, 0);
    assert_eq!(dd.count("tries", "try"), 3);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["output"], 3);
    let id = v["execution_id"].as_str().unwrap();
    let show = dd.show(id);
    assert_eq!(show["steps"][0]["attempts"], 3);
    assert_eq!(show["steps"][0]["state"], "succeeded");
    let attempts = show["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    assert!(attempts[0]["error"]
        .as_str()
        .unwrap()
        .contains("only 1 tries so far"));
    assert!(attempts[2]["error"].is_null());
}

#[test]
fn a_step_that_keeps_failing_fails_the_execution_after_its_attempts() {
    let dd = Drydock::new();
    dd.write_runbook(
        "broken.rhai",
        r#"
runbook(#{ name: "broken" });
step("never works", #{ attempts: 2, backoff: "10ms" }, || { append_file(`${env("WORK")}/n`, "x\n"); throw "disk on fire"; });
step("not reached", || append_file(`${env("WORK")}/n`, "after\n"));
"#,
    );
    let out = dd.run(&["run", "broken"]);
    assert_code(&out, 1);
    assert_eq!(dd.count("n", "x"), 2);
    assert_eq!(dd.count("n", "after"), 0);
    let err = text(&out.stderr);
    assert!(
        err.contains("disk on fire") && err.contains("after 2 attempts"),
        "{err}"
    );
    let id = dd.only_execution();
    let show = dd.show(&id);
    assert_eq!(show["execution"]["state"], "Failed");
    assert!(show["execution"]["error"]
        .as_str()
        .unwrap()
        .contains("step `never works` failed: disk on fire"));
}

#[test]
fn a_step_timeout_stops_sleeps_commands_and_loops() {
    let dd = Drydock::new();
    for (file, body) in [
        ("t-sleep.rhai", "sleep(30);"),
        ("t-shell.rhai", "shell(\"sleep 30\");"),
        ("t-loop.rhai", "let i = 0; loop { i += 1; }"),
    ] {
        let name = file.trim_end_matches(".rhai");
        dd.write_runbook(
            file,
            &format!("runbook(#{{ name: \"{name}\" }});\nstep(\"slow\", #{{ timeout: \"300ms\" }}, || {{ {body} }});\n"),
        );
        let start = Instant::now();
        let out = dd.run(&["run", name]);
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{name} was not stopped"
        );
        assert_stderr(&out, 4, &["step `slow` timed out after 300ms"]);
    }
    let list = dd.executions();
    assert_eq!(list.len(), 3);
    assert!(list.iter().all(|e| e["state"] == "TimedOut"));
}

#[test]
fn on_failure_continue_goes_on_and_abort_stops() {
    let dd = Drydock::new();
    dd.write_runbook(
        "policies.rhai",
        r#"
runbook(#{ name: "policies", params: #{ policy: #{ type: "string", allowed: ["continue", "abort"] } } });
let r = step("optional check", #{ on_failure: params.policy }, || { throw "check failed"; });
let after = step("next", || if r == () { "went on after a failure" } else { "?" });
after
"#,
    );
    let out = dd.run(&["--json", "run", "policies", "-p", "policy=continue"]);
    assert_code(&out, 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["output"], "went on after a failure");
    let show = dd.show(v["execution_id"].as_str().unwrap());
    assert_eq!(show["steps"][0]["state"], "failed_continued");
    assert_eq!(show["steps"][1]["state"], "succeeded");

    let out = dd.run(&["--json", "run", "policies", "-p", "policy=abort"]);
    assert_code(&out, 1);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["state"], "Failed");
    let show = dd.show(v["execution_id"].as_str().unwrap());
    assert_eq!(show["steps"].as_array().unwrap().len(), 1);
}

#[test]
fn a_compensation_runs_when_its_step_fails_and_cleanups_always_run() {
    let dd = Drydock::new();
    dd.write_runbook(
        "saga.rhai",
        r#"
runbook(#{ name: "saga" });
let log = `${env("WORK")}/log`;
cleanup("always first registered", || append_file(log, "cleanup-1\n"));
cleanup("always second registered", || append_file(log, "cleanup-2\n"));
step("reserve", || append_file(log, "reserve\n"));
step("commit", #{ on_failure: || append_file(log, "undo-reserve\n") }, || { throw "commit refused"; });
step("never", || append_file(log, "never\n"));
"#,
    );
    let out = dd.run(&["run", "saga"]);
    assert_code(&out, 1);
    let log = std::fs::read_to_string(dd.work().join("log")).unwrap();
    assert_eq!(
        log, "reserve\nundo-reserve\ncleanup-2\ncleanup-1\n",
        "cleanups run last registered first"
    );
    let id = dd.only_execution();
    let show = dd.show(&id);
    assert!(show["execution"]["error"]
        .as_str()
        .unwrap()
        .contains("(compensated)"));
    let kinds: Vec<&str> = show["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["step", "step", "compensation", "cleanup", "cleanup"]
    );
}

#[test]
fn a_cleanup_registered_inside_a_step_is_refused_with_the_reason() {
    let dd = Drydock::new();
    dd.write_runbook(
        "nested-cleanup.rhai",
        "runbook(#{ name: \"nested-cleanup\" });\nstep(\"s\", || cleanup(\"c\", || 1));\n",
    );
    let out = dd.run(&["run", "nested-cleanup"]);
    assert_stderr(&out, 1, &["register cleanups at the top level"]);
}

#[test]
fn a_child_runbook_runs_as_its_own_execution_and_returns_its_output() {
    let dd = Drydock::new();
    dd.write_runbook(
        "child.rhai",
        r#"
runbook(#{ name: "child", params: #{ x: #{ type: "int" } } });
step("double", || params.x * 2)
"#,
    );
    dd.write_runbook(
        "parent.rhai",
        r#"
runbook(#{ name: "parent" });
let a = run_runbook("child", #{ x: 21 });
let bad = "accepted";
try { run_runbook("child", #{ x: "no" }); } catch (e) { bad = `${e}`; }
#{ a: a, bad: bad }
"#,
    );
    let out = dd.run(&["--json", "run", "parent"]);
    assert_code(&out, 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["output"]["a"], 42);
    assert!(
        v["output"]["bad"]
            .as_str()
            .unwrap()
            .contains("parameter `x`"),
        "{}",
        v["output"]["bad"]
    );
    let id = v["execution_id"].as_str().unwrap();
    let show = dd.show(id);
    assert_eq!(show["children"].as_array().unwrap().len(), 1);
    assert_eq!(show["children"][0]["state"], "Success");
    assert_eq!(show["steps"][0]["kind"], "runbook");
    assert!(
        dd.json(&["executions"]).as_array().unwrap().len() == 1,
        "children are hidden without --all"
    );
}

#[test]
fn a_child_runbook_can_run_in_another_region() {
    let dd = Drydock::new();
    dd.write_runbook(
        "where.rhai",
        r#"
runbook(#{ name: "where" });
step("here", || instance::list().len())
"#,
    );
    dd.write_runbook(
        "parent.rhai",
        r#"
runbook(#{ name: "parent" });
run_runbook("where", #{}, #{ region: "region-b" });
run_runbook("where", #{});
let errors = [];
for opts in [#{ region: "Not A Region" }, #{ region: 3 }, #{ zone: "x" }] {
    try { run_runbook("where", #{}, opts); errors.push("accepted"); } catch (e) { errors.push(`${e}`); }
}
errors
"#,
    );
    let out = dd.run(&["--region", "region-a", "--json", "run", "parent"]);
    assert_code(&out, 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let errors: Vec<&str> = v["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(
        errors[0].contains("`region` must be a region name"),
        "{errors:?}"
    );
    assert!(
        errors[1].contains("`region` must be a string"),
        "{errors:?}"
    );
    assert!(
        errors[2].contains("unknown option `zone`; the only option is `region`"),
        "{errors:?}"
    );
    let id = v["execution_id"].as_str().unwrap();
    let children = dd.show(id)["children"].as_array().unwrap().clone();
    let regions: Vec<&str> = children
        .iter()
        .map(|c| c["region"].as_str().unwrap())
        .collect();
    assert_eq!(regions, ["region-b", "region-a"]);
}

#[test]
fn script_errors_point_at_the_line() {
    let dd = Drydock::new();
    dd.write_runbook(
        "oops.rhai",
        "runbook(#{ name: \"oops\" });\nlet x = 1;\nlet y = x + no_such_var;\n",
    );
    let out = dd.run(&["run", "oops"]);
    assert_code(&out, 1);
    assert!(
        text(&out.stderr).contains("no_such_var (line 3"),
        "{}",
        text(&out.stderr)
    );
}
