//! `drydock executions show ID --timeline`: an execution's steps drawn on
//! a time axis from its journal (bars placed and sized by when each step
//! ran), in text as wide as COLUMNS says, and as JSON with offsets in ms;
//! a running step, and the steps a resume replayed (after a step was cut
//! off, and after the runner died waiting for an approval).

mod common;

use common::{assert_code, assert_stderr, text, Drydock};
use serde_json::Value;

const PACED: &str = r#"
runbook(#{ name: "paced" });
cleanup("tidy", || { sleep("100ms"); 0 });
step("quick", || { sleep("200ms"); 1 });
approve(#{ message: "go on?", auto_approve: "allowed" });
step("slow", || { sleep("1200ms"); 2 });
step("flaky", #{ on_failure: "continue" }, || { sleep("200ms"); throw "broken on purpose" });
3
"#;

/// The rows of a rendered timeline whose label starts with `name`.
fn row<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no row {name:?} in\n{out}"))
}

/// The cells a row's bar covers: (first, last+1) inside its `|…|`.
fn bar(line: &str) -> (usize, usize) {
    let cells: Vec<char> = line
        .split('|')
        .nth(1)
        .unwrap_or_else(|| panic!("no bar in {line:?}"))
        .chars()
        .collect();
    let first = cells.iter().position(|c| *c != ' ').expect("an empty bar");
    let last = cells.iter().rposition(|c| *c != ' ').unwrap() + 1;
    (first, last)
}

fn timeline(dd: &Drydock, id: &str, columns: &str) -> std::process::Output {
    dd.command(&["executions", "show", id, "--timeline"])
        .env("COLUMNS", columns)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn a_finished_execution_is_drawn_to_scale_in_text_and_json() {
    let dd = Drydock::new();
    dd.write_runbook("paced.rhai", PACED);
    let out = dd.run(&["--json", "run", "paced", "--auto-approve"]);
    assert_code(&out, 0);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = v["execution_id"].as_str().unwrap().to_string();

    let out = timeline(&dd, &id, "80");
    assert_code(&out, 0);
    let o = text(&out.stdout);
    assert!(o.lines().next().unwrap().contains(&id), "{o}");
    assert!(o.contains("paced") && o.contains("Success"), "{o}");
    for l in o.lines().skip(1) {
        assert!(l.chars().count() <= 80, "longer than COLUMNS: {l:?}\n{o}");
    }
    assert_eq!(row(&o, "STEP").chars().count(), 80, "{o}");
    let quick = row(&o, "quick ");
    let approval = row(&o, "approval ");
    let slow = row(&o, "slow ");
    let flaky = row(&o, "flaky ");
    let tidy = row(&o, "cleanup: tidy ");
    assert!(quick.contains("| ok "), "{quick}");
    assert!(approval.contains("| approved "), "{approval}");
    assert!(
        slow.contains("| ok ") && slow.trim_end().ends_with('s'),
        "{slow}"
    );
    assert!(
        flaky.contains("| failed, went on ") && flaky.contains('#'),
        "{flaky}"
    );
    assert!(tidy.contains("| ok "), "{tidy}");
    // In order along the axis, and sized by duration: 1.2 s against 0.2 s.
    let (q, a, s, f, t) = (bar(quick), bar(approval), bar(slow), bar(flaky), bar(tidy));
    // The first step starts near the execution's start (the runner's own
    // start-up comes before it).
    assert!(q.0 <= 3 && q.0 <= a.0, "{o}");
    assert!(
        q.1 <= a.0 + 1 && a.1 <= s.0 + 1 && s.1 <= f.0 + 1 && f.1 <= t.0 + 1,
        "{o}"
    );
    let width = |b: (usize, usize)| b.1 - b.0;
    assert!(width(s) >= 3 * width(q), "{o}");
    assert!(width(a) >= 1 && width(t) >= 1, "{o}");
    // The cleanup ran last: its bar reaches the end of the area.
    let cells = quick.split('|').nth(1).unwrap().chars().count();
    assert!(t.1 + 1 >= cells, "{o}");
    let axis = o
        .lines()
        .find(|l| l.trim_start().starts_with("+-"))
        .expect("a time axis");
    assert_eq!(axis.trim_end().chars().last(), Some('+'), "{o}");
    let labels = o.lines().last().unwrap();
    assert!(labels.trim_start().starts_with("0s"), "{o}");

    // Wider terminal, wider rows; the bars keep their proportions.
    let out = timeline(&dd, &id, "140");
    assert_code(&out, 0);
    let wide = text(&out.stdout);
    assert_eq!(row(&wide, "STEP").chars().count(), 140, "{wide}");
    assert!(width(bar(row(&wide, "slow "))) > width(s), "{wide}");

    // The same data as JSON, offsets in ms from the execution's start.
    let out = dd
        .command(&["--json", "executions", "show", &id[..8], "--timeline"])
        .output()
        .unwrap();
    assert_code(&out, 0);
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    let t = &j["timeline"];
    assert_eq!(t["execution"], id.as_str());
    let steps = t["steps"].as_array().unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["quick", "approval", "slow", "flaky", "tidy"], "{t}");
    let statuses: Vec<&str> = steps
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["ok", "approved", "ok", "failed_continued", "ok"],
        "{t}"
    );
    assert_eq!(steps[4]["kind"], "cleanup");
    let ms = |s: &Value, k: &str| s[k].as_i64().unwrap();
    assert!(ms(&steps[0], "start_ms") >= 0);
    for w in steps.windows(2) {
        assert!(ms(&w[0], "end_ms") <= ms(&w[1], "start_ms"), "{t}");
    }
    assert!(ms(&steps[2], "duration_ms") >= 1200, "{t}");
    assert!(ms(&steps[0], "duration_ms") >= 200, "{t}");
    assert_eq!(
        ms(&steps[2], "end_ms") - ms(&steps[2], "start_ms"),
        ms(&steps[2], "duration_ms")
    );
    assert!(ms(t, "duration_ms") >= ms(&steps[4], "end_ms"), "{t}");

    // Bad input: a usage error naming the fix.
    let out = timeline(&dd, &id, "wide");
    assert_code(&out, 2);
    let e = text(&out.stderr);
    assert!(
        e.contains("COLUMNS=wide") && e.contains("COLUMNS=120"),
        "{e}"
    );
    let out = timeline(&dd, "ex-0000dead", "80");
    assert_code(&out, 2);
    let out = dd.run(&["executions", "show", "repl-1234", "--timeline"]);
    assert_stderr(&out, 2, &["REPL session"]);
}

const CUT: &str = r#"
runbook(#{ name: "cut" });
let w = env("WORK");
step("first", || { sleep("150ms"); 1 });
step("second", || {
    append_file(`${w}/log`, "start\n");
    while file_exists(`${w}/block`) { sleep(0.05); }
    2
});
step("third", || 3)
"#;

#[test]
fn a_running_step_and_the_steps_a_resume_replayed() {
    let dd = Drydock::new();
    dd.write_runbook("cut.rhai", CUT);
    std::fs::write(dd.work().join("block"), "").unwrap();
    let mut child = dd.spawn(&["run", "cut"]);
    dd.wait_until("the second step to start", || dd.count("log", "start") == 1);
    let id = dd.only_execution();
    let out = timeline(&dd, &id, "100");
    assert_code(&out, 0);
    let o = text(&out.stdout);
    assert!(row(&o, "first ").contains("| ok "), "{o}");
    let second = row(&o, "second ");
    assert!(second.contains("| running ") && second.contains('▒'), "{o}");
    assert!(o.lines().next().unwrap().contains("so far"), "{o}");

    // The runner dies mid-step; a resume replays `first` and runs the rest.
    child.kill().unwrap();
    child.wait().unwrap();
    let out = timeline(&dd, &id, "100");
    assert!(
        row(&text(&out.stdout), "second ").contains("| interrupted "),
        "{}",
        text(&out.stdout)
    );
    std::fs::remove_file(dd.work().join("block")).unwrap();
    assert_code(&dd.run(&["resume", &id]), 0);
    let out = timeline(&dd, &id, "100");
    assert_code(&out, 0);
    let o = text(&out.stdout);
    assert!(o.contains("resumed 1 time(s)"), "{o}");
    let first = row(&o, "first ");
    assert!(first.contains("| replayed ") && first.contains('░'), "{o}");
    assert!(row(&o, "second ").contains("| ok "), "{o}");
    assert!(row(&o, "third ").contains("| ok "), "{o}");
    let j = dd.json(&["executions", "show", &id, "--timeline"]);
    assert_eq!(j["timeline"]["resumes"], 1, "{j}");
    assert!(j["timeline"]["resumed_at_ms"].as_i64().unwrap() > 0, "{j}");
    assert_eq!(j["timeline"]["steps"][0]["status"], "replayed", "{j}");
    assert_eq!(j["timeline"]["steps"][1]["attempts"], 2, "{j}");
}

const WAIT: &str = r#"
runbook(#{ name: "wait" });
step("before", || { sleep("100ms"); 1 });
approve(#{ message: "go on?", allow_self_approval: true });
step("after", || 2)
"#;

#[test]
fn an_approval_decided_while_no_runner_was_alive_shows_the_replayed_steps() {
    let dd = Drydock::new();
    dd.write_runbook("wait.rhai", WAIT);
    let (mut child, id) = dd.spawn_until_approval(&["run", "wait"]);
    let out = timeline(&dd, &id, "100");
    let o = text(&out.stdout);
    assert!(row(&o, "approval ").contains("| waiting "), "{o}");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_code(&dd.run(&["approve", &id, "--comment", "later"]), 0);
    assert_code(&dd.run(&["resume", &id]), 0);
    let out = timeline(&dd, &id, "100");
    assert_code(&out, 0);
    let o = text(&out.stdout);
    assert!(o.contains("resumed 1 time(s)"), "{o}");
    assert!(row(&o, "before ").contains("| replayed "), "{o}");
    assert!(row(&o, "approval ").contains("| approved "), "{o}");
    assert!(row(&o, "after ").contains("| ok "), "{o}");
}
