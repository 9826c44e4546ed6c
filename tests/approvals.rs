//! Approvals: approved, rejected, timed out, a quorum of two, approvers
//! outside the list refused, decisions made while no runner is alive, and
//! --auto-approve recorded as such.

mod common;

use common::{assert_code, text, wait_child, Drydock};

const GATED: &str = r#"
runbook(#{
    name: "gated",
    params: #{
        approvers: #{ type: "list", default_value: [] },
        quorum: #{ type: "int", default_value: 1 },
        timeout: #{ type: "duration", default_value: "1h" },
        on_reject: #{ type: "string", default_value: "abort" },
    },
});
let log = `${env("WORK")}/log`;
step("before", || append_file(log, "before\n"));
let d = approve(#{
    message: "Stop the database for maintenance?",
    approvers: params.approvers,
    min_approvals: params.quorum,
    timeout: params.timeout,
    on_reject: params.on_reject,
});
if d.approved {
    step("after", || append_file(log, "after\n"));
} else {
    step("skip", || append_file(log, "skipped\n"));
}
d.decision
"#;

fn setup() -> Drydock {
    let dd = Drydock::new();
    dd.write_runbook("gated.rhai", GATED);
    dd
}

#[test]
fn an_approval_from_another_terminal_lets_the_runbook_go_on() {
    let dd = setup();
    let child = dd.spawn(&["run", "gated", "-p", "approvers=alice,bob"]);
    let id = dd.only_execution();
    dd.wait_for_approval(&id);
    assert_eq!(dd.state(&id), "WaitingForApproval");
    let pending = dd.json(&["approvals"]);
    assert_eq!(pending[0]["message"], "Stop the database for maintenance?");
    assert_eq!(pending[0]["steps_done"], serde_json::json!(["before"]));
    let out = dd.run(&[
        "approve",
        &id,
        "--as",
        "alice",
        "--comment",
        "window is open",
    ]);
    assert_code(&out, 0);
    assert!(text(&out.stdout).contains("approved by alice"));
    let out = wait_child(child);
    assert_code(&out, 0);
    assert_eq!(dd.count("log", "after"), 1);
    let show = dd.show(&id);
    assert_eq!(show["execution"]["state"], "Success");
    let decision = &show["approvals"][0]["decisions"][0];
    assert_eq!(decision["approver"], "alice");
    assert_eq!(decision["comment"], "window is open");
    assert_eq!(decision["auto"], false);
}

#[test]
fn a_rejection_aborts_by_default_and_can_be_branched_on() {
    let dd = setup();
    let child = dd.spawn(&["run", "gated"]);
    let id = dd.only_execution();
    dd.wait_for_approval(&id);
    assert_code(
        &dd.run(&[
            "approve",
            &id,
            "--reject",
            "--as",
            "carol",
            "--comment",
            "not today",
        ]),
        0,
    );
    let out = wait_child(child);
    assert_code(&out, 3);
    assert!(text(&out.stderr).contains("approval rejected by carol: not today"));
    assert_eq!(dd.state(&id), "Rejected");
    assert_eq!(dd.count("log", "after") + dd.count("log", "skipped"), 0);

    let dd = setup();
    let child = dd.spawn(&["--json", "run", "gated", "-p", "on_reject=continue"]);
    let id = dd.only_execution();
    dd.wait_for_approval(&id);
    assert_code(&dd.run(&["approve", &id, "--reject"]), 0);
    let out = wait_child(child);
    assert_code(&out, 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["output"], "rejected");
    assert_eq!(dd.count("log", "skipped"), 1);
}

#[test]
fn an_approval_times_out() {
    let dd = setup();
    let out = dd.run(&["run", "gated", "-p", "timeout=300ms"]);
    assert_code(&out, 4);
    assert!(
        text(&out.stderr).contains("approval timed out after 300ms with 0 of 1 approvals"),
        "{}",
        text(&out.stderr)
    );
    let id = dd.only_execution();
    assert_eq!(dd.state(&id), "TimedOut");
    assert_eq!(dd.show(&id)["approvals"][0]["state"], "timed_out");
}

#[test]
fn a_quorum_of_two_waits_for_the_second_approver_and_outsiders_are_refused() {
    let dd = setup();
    let child = dd.spawn(&[
        "run",
        "gated",
        "-p",
        "approvers=alice,bob,carol",
        "-p",
        "quorum=2",
    ]);
    let id = dd.only_execution();
    dd.wait_for_approval(&id);

    let out = dd.run(&["approve", &id, "--as", "mallory"]);
    assert_code(&out, 2);
    assert!(text(&out.stderr).contains(
        "mallory is not an approver of this request; it may be decided by: alice, bob, carol"
    ));

    let out = dd.run(&["approve", &id, "--as", "alice"]);
    assert_code(&out, 0);
    assert!(
        text(&out.stdout).contains("1 of 2 approvals, waiting for 1 more from bob, carol"),
        "{}",
        text(&out.stdout)
    );
    let out = dd.run(&["approve", &id, "--as", "alice"]);
    assert_code(&out, 2);
    assert!(text(&out.stderr).contains("alice already approved"));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        dd.state(&id),
        "WaitingForApproval",
        "one approval of two is not enough"
    );

    assert_code(&dd.run(&["approve", &id, "--as", "bob"]), 0);
    assert_code(&wait_child(child), 0);
    let show = dd.show(&id);
    assert_eq!(
        show["approvals"][0]["decisions"].as_array().unwrap().len(),
        2
    );
}

#[test]
fn a_decision_made_while_no_runner_is_alive_is_applied_on_resume() {
    let dd = setup();
    let mut child = dd.spawn(&["run", "gated", "-p", "approvers=alice"]);
    let id = dd.only_execution();
    dd.wait_for_approval(&id);
    child.kill().unwrap();
    child.wait().unwrap();
    let list = dd.json(&["approvals"]);
    assert_eq!(list[0]["runner_alive"], false);
    let out = dd.run(&["approve", &id, "--as", "alice"]);
    assert_code(&out, 0);
    assert!(text(&out.stdout).contains(&format!(
        "the decision is kept and applied by `drydock resume {id}`"
    )));
    let out = dd.run(&["resume", &id]);
    assert_code(&out, 0);
    assert!(text(&out.stderr).contains("replayed from the journal"));
    assert_eq!(dd.count("log", "before"), 1);
    assert_eq!(dd.count("log", "after"), 1);
}

#[test]
fn auto_approve_is_recorded_as_such() {
    let dd = setup();
    let out = dd.run(&["run", "gated", "--auto-approve", "-p", "approvers=alice"]);
    assert_code(&out, 0);
    let id = dd.only_execution();
    let show = dd.show(&id);
    assert_eq!(show["execution"]["auto_approve"], true);
    let d = &show["approvals"][0]["decisions"][0];
    assert_eq!(d["approver"], "auto-approve");
    assert_eq!(d["auto"], true);
}

#[test]
fn approving_an_execution_without_a_pending_approval_is_a_clear_error() {
    let dd = setup();
    assert_code(&dd.run(&["run", "gated", "--auto-approve"]), 0);
    let id = dd.only_execution();
    let out = dd.run(&["approve", &id]);
    assert_code(&out, 2);
    assert!(text(&out.stderr).contains("has no pending approval (it is Success)"));
    let out = dd.run(&["approve", "ex-doesnotexist"]);
    assert_code(&out, 2);
    assert!(text(&out.stderr).contains("no execution matches"));
}
