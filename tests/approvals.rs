//! Approvals decided by real OS accounts: approved, rejected, timed out, a
//! quorum of distinct people, approvers outside the list or group refused,
//! separation of duties, deadlines enforced at decision time and asked
//! again by `--retry`, decisions made while no runner is alive, approvals
//! bound to the code they were given for, `--auto-approve` only where
//! allowed, and names and comments that cannot forge output.
//!
//! The test process runs as root (as CI does) and creates local accounts
//! `ddalice`, `ddbob`, `ddcarol`, `ddmallory` in the group `ddops`, which
//! shares each test's data directory (DRYDOCK_GROUP).

mod common;

use common::os_users::{os_user, OsUser};
use common::{assert_code, assert_stderr, assert_stdout, text, wait_child, Drydock};

const GATED: &str = r#"
runbook(#{
    name: "gated",
    params: #{
        approvers: #{ type: "list", default_value: [] },
        quorum: #{ type: "int", default_value: 1 },
        timeout: #{ type: "duration", default_value: "1h" },
        on_reject: #{ type: "string", default_value: "abort" },
        pause: #{ type: "duration", default_value: "0s" },
    },
});
let log = `${env("WORK")}/log`;
step("before", || { append_file(log, "before\n"); sleep(params.pause); });
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

struct Team {
    alice: OsUser,
    bob: OsUser,
    carol: OsUser,
    mallory: OsUser,
}

fn team() -> Team {
    Team {
        alice: os_user("ddalice", &["ddops"]),
        bob: os_user("ddbob", &["ddops", "ddapprovers"]),
        carol: os_user("ddcarol", &["ddops"]),
        mallory: os_user("ddmallory", &["ddops"]),
    }
}

fn setup() -> (Drydock, Team) {
    let team = team();
    let dd = Drydock::shared_by("ddops");
    dd.write_runbook("gated.rhai", GATED);
    (dd, team)
}

#[test]
fn an_approval_by_another_account_lets_the_runbook_go_on() {
    let (dd, t) = setup();
    let (child, id) = dd.spawn_until_approval(&["run", "gated", "-p", "approvers=ddalice,ddbob"]);
    assert_eq!(dd.state(&id), "WaitingForApproval");
    let pending = dd.json(&["approvals"]);
    assert_eq!(pending[0]["message"], "Stop the database for maintenance?");
    assert_eq!(pending[0]["steps_done"], serde_json::json!(["before"]));
    let out = dd.run_as(&t.alice, &["approve", &id, "--comment", "window is open"]);
    assert_stdout(&out, 0, &["approved by ddalice"]);
    let out = wait_child(child);
    assert_code(&out, 0);
    assert_eq!(dd.count("log", "after"), 1);
    let show = dd.show(&id);
    assert_eq!(show["execution"]["state"], "Success");
    assert_eq!(show["execution"]["requested_by"], "root");
    let decision = &show["approvals"][0]["decisions"][0];
    assert_eq!(decision["approver"], "ddalice");
    assert_eq!(decision["approver_uid"], t.alice.uid);
    assert_eq!(decision["comment"], "window is open");
    assert_eq!(decision["auto"], false);
}

#[test]
fn a_name_given_with_as_is_refused_unless_it_is_your_own() {
    let (dd, t) = setup();
    let (child, id) = dd.spawn_until_approval(&["run", "gated", "-p", "approvers=ddbob"]);
    let out = dd.run_as(&t.alice, &["approve", &id, "--as", "ddbob"]);
    assert_stderr(
        &out,
        2,
        &["--as \"ddbob\": you are ddalice", "cannot take a name"],
    );
    // USER and DRYDOCK_USER are not identities either.
    let out = dd
        .command_as(&t.alice, &["approve", &id])
        .env("USER", "ddbob")
        .env("DRYDOCK_USER", "ddbob")
        .output()
        .unwrap();
    assert_stderr(&out, 2, &["ddalice is not an approver"]);
    assert_code(&dd.run_as(&t.bob, &["approve", &id, "--as", "ddbob"]), 0);
    assert_code(&wait_child(child), 0);
}

#[test]
fn a_rejection_aborts_by_default_and_can_be_branched_on() {
    let (dd, t) = setup();
    let (child, id) = dd.spawn_until_approval(&["run", "gated"]);
    let out = dd.run_as(
        &t.carol,
        &["approve", &id, "--reject", "--comment", "not today"],
    );
    assert_code(&out, 0);
    let out = wait_child(child);
    assert_stderr(&out, 3, &["approval rejected by ddcarol: not today"]);
    assert_eq!(dd.state(&id), "Rejected");
    assert_eq!(dd.count("log", "after") + dd.count("log", "skipped"), 0);

    // The requester may withdraw (reject) their own request.
    let (dd, _) = setup();
    let (child, id) =
        dd.spawn_until_approval(&["--json", "run", "gated", "-p", "on_reject=continue"]);
    assert_code(&dd.run(&["approve", &id, "--reject"]), 0);
    let out = wait_child(child);
    assert_code(&out, 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["output"], "rejected");
    assert_eq!(dd.count("log", "skipped"), 1);
}

#[test]
fn an_approval_times_out() {
    let (dd, _) = setup();
    let out = dd.run(&["run", "gated", "-p", "timeout=300ms"]);
    assert_stderr(
        &out,
        4,
        &["approval timed out after 300ms with 0 of 1 approvals"],
    );
    let id = dd.only_execution();
    assert_eq!(dd.state(&id), "TimedOut");
    assert_eq!(dd.show(&id)["approvals"][0]["state"], "timed_out");
}

#[test]
fn a_quorum_counts_distinct_accounts_and_outsiders_are_refused() {
    let (dd, t) = setup();
    let (child, id) = dd.spawn_until_approval(&[
        "run",
        "gated",
        "-p",
        "approvers=ddalice,ddbob,ddcarol",
        "-p",
        "quorum=2",
    ]);

    let out = dd.run_as(&t.mallory, &["approve", &id]);
    assert_stderr(&out, 2, &["ddmallory is not an approver of this request; it may be decided by: ddalice, ddbob, ddcarol"]);

    let out = dd.run_as(&t.alice, &["approve", &id]);
    assert_stdout(
        &out,
        0,
        &["1 of 2 approvals, waiting for 1 more from ddbob, ddcarol"],
    );
    let out = dd.run_as(&t.alice, &["approve", &id]);
    assert_stderr(&out, 2, &["ddalice already approved"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        dd.state(&id),
        "WaitingForApproval",
        "one approval of two is not enough"
    );

    assert_code(&dd.run_as(&t.bob, &["approve", &id]), 0);
    assert_code(&wait_child(child), 0);
    let show = dd.show(&id);
    assert_eq!(
        show["approvals"][0]["decisions"].as_array().unwrap().len(),
        2
    );
}

#[test]
fn with_no_approver_list_one_person_cannot_meet_a_quorum_alone() {
    let (dd, t) = setup();
    let (child, id) = dd.spawn_until_approval(&["run", "gated", "-p", "quorum=3"]);
    assert_code(&dd.run_as(&t.alice, &["approve", &id]), 0);
    assert_code(&dd.run_as(&t.alice, &["approve", &id]), 2);
    // Neither the requester (root) nor a repeated account counts.
    let out = dd.run(&["approve", &id]);
    assert_stderr(
        &out,
        2,
        &["root requested this execution and cannot approve it"],
    );
    assert_code(&dd.run_as(&t.bob, &["approve", &id]), 0);
    assert_eq!(dd.state(&id), "WaitingForApproval");
    assert_code(&dd.run_as(&t.carol, &["approve", &id]), 0);
    assert_code(&wait_child(child), 0);
}

#[test]
fn the_requester_cannot_approve_unless_the_runbook_allows_it() {
    let (dd, t) = setup();
    // ddalice requests, ddalice may not approve, ddbob may.
    let child = dd
        .command_as(&t.alice, &["run", "gated"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let id = dd.only_execution();
    dd.wait_for_approval(&id);
    assert_eq!(dd.show(&id)["execution"]["requested_by"], "ddalice");
    let out = dd.run_as(&t.alice, &["approve", &id]);
    assert_stderr(
        &out,
        2,
        &["ddalice requested this execution and cannot approve it (separation of duties)"],
    );
    assert_code(&dd.run_as(&t.bob, &["approve", &id]), 0);
    assert_code(&wait_child(child), 0);

    dd.write_runbook(
        "self.rhai",
        r#"runbook(#{ name: "self" });
           approve(#{ message: "my own small change", allow_self_approval: true }).decision"#,
    );
    let child = dd
        .command_as(&t.alice, &["run", "self"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let id = dd.only_execution_of("self");
    dd.wait_for_approval(&id);
    assert_code(&dd.run_as(&t.alice, &["approve", &id]), 0);
    assert_code(&wait_child(child), 0);
}

#[test]
fn groups_name_approvers() {
    let (dd, t) = setup();
    let (child, id) = dd.spawn_until_approval(&["run", "gated", "-p", "approvers=@ddapprovers"]);
    let out = dd.run_as(&t.alice, &["approve", &id]);
    assert_stderr(&out, 2, &["ddalice is not an approver"]);
    assert_code(&dd.run_as(&t.bob, &["approve", &id]), 0);
    assert_code(&wait_child(child), 0);
    assert_eq!(
        dd.show(&id)["approvals"][0]["decisions"][0]["approver"],
        "ddbob"
    );
}

#[test]
fn a_decision_made_while_no_runner_is_alive_is_applied_on_resume() {
    let (dd, t) = setup();
    let id = dd.approval_without_runner(&["run", "gated", "-p", "approvers=ddalice"]);
    let list = dd.json(&["approvals"]);
    assert_eq!(list[0]["runner_alive"], false);
    let out = dd.run_as(&t.alice, &["approve", &id]);
    assert_stdout(
        &out,
        0,
        &[&format!(
            "the decision is kept and applied by `drydock resume {id}`"
        )],
    );
    let out = dd.run(&["resume", &id]);
    assert_stderr(&out, 0, &["replayed from the journal"]);
    assert_eq!(dd.count("log", "before"), 1);
    assert_eq!(dd.count("log", "after"), 1);
}

#[test]
fn a_late_decision_is_refused_and_retry_asks_again() {
    let (dd, t) = setup();
    let id = dd.approval_without_runner(&[
        "run",
        "gated",
        "-p",
        "approvers=ddalice",
        "-p",
        "timeout=1s",
    ]);
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let out = dd.run_as(&t.alice, &["approve", &id]);
    assert_stderr(
        &out,
        2,
        &["expired at", &format!("drydock resume {id} --retry")],
    );
    assert_eq!(
        dd.show(&id)["approvals"][0]["decisions"],
        serde_json::json!([])
    );
    assert_code(&dd.run(&["resume", &id]), 4);
    assert_eq!(dd.state(&id), "TimedOut");

    // --retry asks again, with a fresh deadline, instead of timing out at once.
    let child = dd.spawn(&["resume", &id, "--retry"]);
    dd.wait_until("the approval to be asked again", || {
        dd.show(&id)["approvals"][0]["state"] == "pending"
    });
    assert_code(&dd.run_as(&t.alice, &["approve", &id]), 0);
    assert_code(&wait_child(child), 0);
    assert_eq!(dd.count("log", "after"), 1);
    let events = dd.show(&id)["events"].to_string();
    assert!(
        events.contains("ended timed_out earlier; asking again"),
        "{events}"
    );
}

#[test]
fn an_approval_does_not_pass_for_code_edited_after_it() {
    let (dd, t) = setup();
    let id = dd.approval_without_runner(&["run", "gated", "-p", "approvers=ddalice"]);
    assert_code(&dd.run_as(&t.alice, &["approve", &id]), 0);
    // Someone edits what the approved step does.
    let evil = GATED.replace(
        r#"step("after", || append_file(log, "after\n"));"#,
        r#"step("after", || append_file(log, "something else\n"));"#,
    );
    assert_ne!(evil, GATED);
    dd.write_runbook("gated.rhai", &evil);
    let out = dd.run(&["resume", &id]);
    assert_stderr(
        &out,
        2,
        &[
            "runbook changed since it was approved",
            "put the original runbook back",
        ],
    );
    assert_eq!(dd.count("log", "something else"), 0);
    // With the approved code back, it goes on.
    dd.write_runbook("gated.rhai", GATED);
    assert_code(&dd.run(&["resume", &id]), 0);
    assert_eq!(dd.count("log", "after"), 1);
}

const ALLOWED: &str = r#"
runbook(#{ name: "allowed", params: #{ pause: #{ type: "duration", default_value: "0s" } } });
// Pauses the first time only, so a resumed run goes straight on.
let marker = `${env("WORK")}/paused-${execution_id}`;
step("before", || if !file_exists(marker) { write_file(marker, ""); sleep(params.pause); });
approve(#{ message: "routine rotation", approvers: ["ddbob"], auto_approve: "allowed" }).decision
"#;

#[test]
fn auto_approve_only_where_allowed_or_by_an_admin_and_recorded_with_who() {
    let (dd, t) = setup();
    dd.write_runbook("allowed.rhai", ALLOWED);
    // Root is an admin: it may auto-approve any approval.
    let out = dd.run(&["run", "gated", "--auto-approve", "-p", "approvers=ddalice"]);
    assert_code(&out, 0);
    let id = dd.only_execution();
    let show = dd.show(&id);
    assert_eq!(show["execution"]["auto_approve_by"], "root");
    let d = &show["approvals"][0]["decisions"][0];
    assert_eq!(d["approver"], "root");
    assert_eq!(d["auto"], true);
    assert!(d["comment"].as_str().unwrap().contains("admin"));
    // The log root's run wrote is shared with the next runs.
    std::fs::set_permissions(
        dd.work().join("log"),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();

    // Another account's --auto-approve does not settle an approval that
    // does not allow it: it waits (and here times out).
    let out = dd.run_as(
        &t.alice,
        &["run", "gated", "--auto-approve", "-p", "timeout=500ms"],
    );
    assert_stderr(
        &out,
        4,
        &["--auto-approve by ddalice does not apply to this approval"],
    );

    // ... but it does where the runbook says auto_approve: "allowed".
    let out = dd.run_as(&t.alice, &["--json", "run", "allowed", "--auto-approve"]);
    assert_code(&out, 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let show = dd.show(v["execution_id"].as_str().unwrap());
    assert_eq!(show["approvals"][0]["decisions"][0]["approver"], "ddalice");
    assert_eq!(show["approvals"][0]["decisions"][0]["auto"], true);

    // A resume by another account does not inherit it.
    let mut child = dd
        .command_as(
            &t.alice,
            &["run", "allowed", "--auto-approve", "-p", "pause=30s"],
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut id = String::new();
    dd.wait_until("the paused run", || {
        let list = dd.json(&["executions", "--state", "InProgress"]);
        match list.as_array().and_then(|a| a.first()) {
            Some(e) => {
                id = e["id"].as_str().unwrap().to_string();
                true
            }
            None => false,
        }
    });
    // runuser waits for its child: kill the runner itself.
    let pid = dd.show(&id)["execution"]["runner_pid"].as_u64().unwrap();
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    child.wait().unwrap();
    let resumer = dd.spawn(&["resume", &id]);
    dd.wait_for_approval(&id);
    let events = dd.show(&id)["events"].to_string();
    assert!(
        events.contains("--auto-approve was asked for by ddalice; this runner runs as root"),
        "{events}"
    );
    assert_code(&dd.run_as(&t.bob, &["approve", &id]), 0);
    assert_code(&wait_child(resumer), 0);
}

#[test]
fn names_and_comments_cannot_forge_output() {
    let (dd, t) = setup();
    let (child, id) = dd.spawn_until_approval(&["run", "gated", "-p", "approvers=ddalice"]);
    let forged = "ok\n  root approved (auto-approve) at 2026-01-01\x1b[2K\x1b[1A";
    assert_code(
        &dd.run_as(&t.alice, &["approve", &id, "--comment", forged]),
        0,
    );
    assert_code(&wait_child(child), 0);
    let show = text(&dd.run(&["executions", "show", &id]).stdout);
    assert!(!show.contains('\x1b'), "{show:?}");
    assert!(
        show.contains(r"ok\n  root approved (auto-approve) at 2026-01-01\x1b[2K\x1b[1A"),
        "{show}"
    );
    assert!(
        !show
            .lines()
            .any(|l| l.trim_start().starts_with("root approved")),
        "a comment forged a decision line: {show}"
    );
    // JSON keeps the exact text.
    assert_eq!(
        dd.show(&id)["approvals"][0]["decisions"][0]["comment"],
        forged
    );
}

#[test]
fn approving_an_execution_without_a_pending_approval_is_a_clear_error() {
    let (dd, _) = setup();
    assert_code(&dd.run(&["run", "gated", "--auto-approve"]), 0);
    let id = dd.only_execution();
    let out = dd.run(&["approve", &id]);
    assert_stderr(&out, 2, &["has no pending approval (it is Success)"]);
    let out = dd.run(&["approve", "ex-doesnotexist"]);
    assert_stderr(&out, 2, &["no execution matches"]);
}
