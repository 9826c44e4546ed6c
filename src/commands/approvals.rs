//! `approvals` and `approve`.

use drydock_runtime::journal::ApprovalState;
use drydock_runtime::StepState;
use serde_json::json;

use super::{clip, print_json, shown, table, when, Context};
use crate::cli::ApproveArgs;
use crate::failure::CliError;

/// `drydock approvals`: what waits for a decision, and what the runbook
/// did so far.
pub fn list(ctx: &Context) -> Result<i32, CliError> {
    let journal = ctx.executor.journal()?;
    let pending = journal.pending_approvals()?;
    let mut rows = Vec::new();
    for a in &pending {
        let exec = journal.execution(&a.execution_id)?;
        let done: Vec<String> = journal
            .steps(&a.execution_id)?
            .into_iter()
            .filter(|s| s.state == StepState::Succeeded)
            .map(|s| s.name)
            .collect();
        rows.push((a, exec, done));
    }
    if ctx.json {
        let out: Vec<_> = rows
            .iter()
            .map(|(a, exec, done)| {
                json!({
                    "execution_id": a.execution_id,
                    "runbook": exec.runbook,
                    "message": a.message,
                    "approvers": a.approvers,
                    "min_approvals": a.min_approvals,
                    "approvals": a.approvals(),
                    "decisions": a.decisions,
                    "deadline_at": a.deadline_at,
                    "runner_alive": exec.has_live_runner(),
                    "steps_done": done,
                })
            })
            .collect();
        print_json(&out);
        return Ok(0);
    }
    if rows.is_empty() {
        println!("no pending approvals");
        return Ok(0);
    }
    let mut t = table(&[
        "EXECUTION",
        "RUNBOOK",
        "MESSAGE",
        "APPROVERS",
        "APPROVED",
        "EXPIRES",
        "DONE SO FAR",
    ]);
    for (a, exec, done) in &rows {
        let approvers = if a.approvers.is_empty() {
            "anyone but the requester".to_string()
        } else {
            a.approvers.join(", ")
        };
        t.add_row(vec![
            a.execution_id.clone(),
            exec.runbook.clone(),
            clip(&a.message, 60),
            clip(&approvers, 40),
            format!("{}/{}", a.approvals(), a.min_approvals),
            when(a.deadline_at),
            clip(&done.join(", "), 50),
        ]);
    }
    println!("{t}");
    println!(
        "you are {}; decide with `drydock approve EXECUTION [--reject] [--comment TEXT]`",
        shown(&drydock_runtime::identity::Identity::current().name)
    );
    Ok(0)
}

/// `drydock approve`.
pub fn decide(ctx: &Context, args: ApproveArgs) -> Result<i32, CliError> {
    let mut journal = ctx.executor.journal()?;
    let id = journal.resolve_execution(&args.execution)?;
    let me = crate::config::actor(args.as_user.as_deref())?;
    if args.comment.chars().count() > 2000 {
        return Err(CliError::usage(
            "--comment is limited to 2000 characters; put long reasoning in a ticket and link it",
        ));
    }
    let outcome = journal.decide(&id, &me, !args.reject, &args.comment, false)?;
    let who = shown(&me.name);
    let runner_alive = journal.execution(&id)?.has_live_runner();
    if ctx.json {
        print_json(
            &json!({ "execution_id": id, "approver": who, "outcome": outcome, "runner_alive": runner_alive }),
        );
        return Ok(0);
    }
    match outcome.state {
        ApprovalState::Approved => println!(
            "{id}: approved by {who} ({} of {} needed)",
            outcome.approvals, outcome.required
        ),
        ApprovalState::Rejected => println!("{id}: rejected by {who}"),
        _ => {
            let more = outcome.required - outcome.approvals;
            let from = if outcome.waiting_on.is_empty() {
                String::new()
            } else {
                format!(" from {}", outcome.waiting_on.join(", "))
            };
            println!(
                "{id}: {who} approved; {} of {} approvals, waiting for {more} more{from}",
                outcome.approvals, outcome.required
            );
        }
    }
    if outcome.state != ApprovalState::Pending && !runner_alive {
        println!("no runner is active for {id}; the decision is kept and applied by `drydock resume {id}`");
    }
    Ok(0)
}
