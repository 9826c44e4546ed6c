//! `approvals` and `approve`: [`drydock_ops::approvals`] rendered for a
//! terminal.

use drydock_ops::approvals::{self, DecideOptions};
use serde_json::json;

use super::{clip, print_json, shown, table, when, Context};
use crate::cli::ApproveArgs;
use crate::failure::CliError;

/// `drydock approvals`: what waits for a decision, and what the runbook
/// did so far.
pub fn list(ctx: &Context) -> Result<i32, CliError> {
    let journal = ctx.executor.journal()?;
    let me = drydock_runtime::identity::Identity::current();
    let rows = approvals::list(&journal, &me)?;
    if ctx.json {
        let out: Vec<_> = rows
            .iter()
            .map(|p| {
                let a = &p.approval;
                json!({
                    "execution_id": a.execution_id,
                    "runbook": p.execution.runbook,
                    "message": a.message,
                    "approvers": a.approvers,
                    "min_approvals": a.min_approvals,
                    "approvals": a.approvals(),
                    "decisions": a.decisions,
                    "deadline_at": a.deadline_at,
                    "runner_alive": p.execution.has_live_runner(),
                    "steps_done": p.steps_done,
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
    for p in &rows {
        let a = &p.approval;
        t.add_row(vec![
            a.execution_id.clone(),
            shown(&p.execution.runbook),
            clip(&a.message, 60),
            clip(&p.approvers_text(), 40),
            format!("{}/{}", a.approvals(), a.min_approvals),
            when(a.deadline_at),
            clip(&p.steps_done.join(", "), 50),
        ]);
    }
    println!("{t}");
    println!(
        "you are {}; decide with `drydock approve EXECUTION [--reject] [--comment TEXT]`",
        shown(&me.name)
    );
    Ok(0)
}

/// `drydock approve`.
pub fn decide(ctx: &Context, args: ApproveArgs) -> Result<i32, CliError> {
    let mut journal = ctx.executor.journal()?;
    let me = crate::config::actor(args.as_user.as_deref())?;
    let decided = approvals::decide(
        &mut journal,
        &DecideOptions {
            execution: &args.execution,
            approve: !args.reject,
            comment: &args.comment,
            who: &me,
        },
    )?;
    let id = &decided.execution_id;
    if ctx.json {
        print_json(&json!({
            "execution_id": id,
            "approver": shown(&decided.approver),
            "outcome": decided.outcome,
            "runner_alive": decided.runner_alive,
        }));
        return Ok(0);
    }
    println!("{}", decided.summary());
    if decided.waits_for_resume() {
        println!("no runner is active for {id}; the decision is kept and applied by `drydock resume {id}`");
    }
    Ok(0)
}
