//! `executions` and `executions show`.

use drydock_ops::executions::{
    approvers_text, entry_detail, is_repl_session, state_text, step_detail, ExecutionView,
    ReplSessionView,
};
use drydock_runtime::journal::{ExecutionFilter, ReplSessionRecord};
use drydock_runtime::ExecutionState;

use super::{clip, print_json, shown, table, took, when, Context};
use crate::cli::ExecutionsArgs;
use crate::failure::CliError;

// `executions show --timeline` (src/commands/timeline.rs).
#[path = "timeline.rs"]
mod timeline;

/// `drydock executions [show EXEC]`.
pub fn run(ctx: &Context, args: ExecutionsArgs) -> Result<i32, CliError> {
    if let Some(crate::cli::ExecutionsCommand::Show {
        execution,
        timeline,
    }) = args.show
    {
        if timeline {
            if is_repl_session(&execution) {
                return Err(CliError::usage(format!(
                    "{} is a REPL session, which has no steps to draw; drop --timeline to see its entries",
                    shown(execution.trim())
                )));
            }
            return timeline::show(ctx, &execution);
        }
        if is_repl_session(&execution) {
            return show_repl(ctx, &execution);
        }
        return show(ctx, &execution);
    }
    let state = args
        .state
        .as_deref()
        .map(str::parse::<ExecutionState>)
        .transpose()
        .map_err(CliError::usage)?;
    let journal = ctx.executor.journal()?;
    let filter = ExecutionFilter {
        state,
        runbook: args.runbook,
        include_children: args.all,
        limit: Some(args.limit),
    };
    let list = journal.executions(&filter)?;
    if ctx.json {
        print_json(&list);
        return Ok(0);
    }
    // REPL sessions are their own kind: listed after the executions
    // (unless the listing is filtered by state or runbook).
    let sessions = if args.state.is_none() && filter.runbook.is_none() {
        journal.repl_sessions(args.limit)?
    } else {
        Vec::new()
    };
    if list.is_empty() && sessions.is_empty() {
        println!(
            "no executions in {}; start one with `drydock run RUNBOOK`",
            journal.path().display()
        );
        return Ok(0);
    }
    if list.is_empty() {
        println!("no executions");
        print_repl_sessions(&sessions);
        return Ok(0);
    }
    let mut t = table(&[
        "EXECUTION",
        "RUNBOOK",
        "STATE",
        "CREATED",
        "DURATION",
        "STEPS",
        "BY",
    ]);
    for e in &list {
        let steps = journal.steps(&e.id)?;
        let done = steps.iter().filter(|s| s.state.is_replayable()).count();
        t.add_row(vec![
            e.id.clone(),
            shown(&e.runbook),
            state_text(e),
            when(e.created_at),
            took(e.started_at, e.ended_at),
            format!("{done}/{}", steps.len()),
            shown(&e.requested_by),
        ]);
    }
    println!("{t}");
    print_repl_sessions(&sessions);
    Ok(0)
}

fn print_repl_sessions(sessions: &[ReplSessionRecord]) {
    if sessions.is_empty() {
        return;
    }
    let mut t = table(&[
        "REPL SESSION",
        "BY",
        "WHERE",
        "STARTED",
        "DURATION",
        "ENTRIES",
    ]);
    for s in sessions {
        t.add_row(vec![
            s.id.clone(),
            shown(&s.started_by),
            format!("{}@{}", shown(&s.profile), shown(&s.region)),
            when(s.started_at),
            match s.ended_at {
                Some(_) => took(Some(s.started_at), s.ended_at),
                None => "open".into(),
            },
            s.entries.to_string(),
        ]);
    }
    println!("\n{t}");
}

/// `drydock executions show repl-…`: a REPL session and its entries.
fn show_repl(ctx: &Context, prefix: &str) -> Result<i32, CliError> {
    let journal = ctx.executor.journal()?;
    let view = ReplSessionView::load(&journal, prefix)?;
    if ctx.json {
        print_json(&view);
        return Ok(0);
    }
    let (s, entries) = (&view.session, &view.entries);
    println!("session    {}", s.id);
    println!("kind       repl");
    println!("by         {}", shown(&s.started_by));
    println!("where      {}@{}", shown(&s.profile), shown(&s.region));
    println!("started    {}", when(s.started_at));
    println!(
        "duration   {}",
        match s.ended_at {
            Some(_) => took(Some(s.started_at), s.ended_at),
            None => "still open (or the REPL died)".into(),
        }
    );
    if entries.is_empty() {
        println!("no entries");
        return Ok(0);
    }
    let mut t = table(&["#", "AT", "ENTRY", "RESULT", "OUTPUT / ERROR", "TOOK"]);
    for e in entries {
        t.add_row(vec![
            e.seq.to_string(),
            when(e.at),
            clip(&e.input, 70),
            if e.ok { "ok".into() } else { "error".into() },
            clip(&entry_detail(e), 60),
            format!("{} ms", e.duration_ms),
        ]);
    }
    println!("{t}");
    Ok(0)
}

fn show(ctx: &Context, prefix: &str) -> Result<i32, CliError> {
    let journal = ctx.executor.journal()?;
    let view = ExecutionView::load(&journal, prefix)?;
    if ctx.json {
        print_json(&view);
        return Ok(0);
    }
    let exec = &view.execution;
    println!("execution  {}", exec.id);
    println!(
        "runbook    {} ({})",
        shown(&exec.runbook),
        shown(&exec.origin)
    );
    println!(
        "code       sha256:{}{}",
        exec.source_sha256,
        match &exec.runbook_owner {
            Some(o) => format!(", file owned by {}", shown(o)),
            None => String::new(),
        }
    );
    println!("state      {}", state_text(exec));
    println!(
        "by         requested by {}{}{}",
        shown(&exec.requested_by),
        match &exec.run_by {
            Some(r) => format!(", run by {}", shown(r)),
            None => String::new(),
        },
        match &exec.auto_approve_by {
            Some(by) => format!(" (--auto-approve asked by {})", shown(by)),
            None => String::new(),
        }
    );
    println!("created    {}", when(exec.created_at));
    println!("duration   {}", took(exec.started_at, exec.ended_at));
    println!("params     {}", shown(&exec.params.to_string()));
    if let Some(parent) = &exec.parent_id {
        println!(
            "parent     {parent} (step {})",
            shown(exec.parent_step.as_deref().unwrap_or("?"))
        );
    }
    if !exec.output.is_null() {
        println!("output     {}", shown(&exec.output.to_string()));
    }
    if let Some(e) = &exec.error {
        println!("error      {}", shown(e));
    }
    if !view.steps.is_empty() {
        let mut t = table(&[
            "PATH",
            "STEP",
            "KIND",
            "STATE",
            "ATTEMPTS",
            "DURATION",
            "OUTPUT / ERROR",
        ]);
        for s in &view.steps {
            t.add_row(vec![
                s.path.clone(),
                shown(&s.name),
                s.kind.as_str().to_string(),
                s.state.to_string(),
                s.attempts.to_string(),
                took(Some(s.started_at), s.ended_at.or(Some(s.started_at))),
                clip(&step_detail(s), 70),
            ]);
        }
        println!("{t}");
    }
    let mut failed = view.failed_attempts().peekable();
    if failed.peek().is_some() {
        println!("failed attempts:");
        for a in failed {
            println!(
                "  [{}] attempt {} at {}: {}",
                a.path,
                a.attempt,
                when(a.started_at),
                shown(a.error.as_deref().unwrap_or(""))
            );
        }
    }
    for a in &view.approvals {
        println!(
            "approval [{}] {}: \"{}\" ({}/{} approvals; approvers: {})",
            a.path,
            a.state.as_str(),
            shown(&a.message),
            a.approvals(),
            a.min_approvals,
            shown(&approvers_text(a))
        );
        for d in &a.decisions {
            let verb = if d.approve { "approved" } else { "rejected" };
            let auto = if d.auto { " (auto-approve)" } else { "" };
            let comment = if d.comment.is_empty() {
                String::new()
            } else {
                format!(": {}", shown(&d.comment))
            };
            println!(
                "  {} {verb}{auto} at {}{comment}",
                shown(&d.approver),
                when(d.decided_at)
            );
        }
    }
    for c in &view.children {
        println!("child      {} {} {}", c.id, shown(&c.runbook), c.state);
    }
    if !view.events.is_empty() {
        println!("printed:");
        for e in &view.events {
            println!("  {} {}", when(e.at), shown(&e.message));
        }
    }
    Ok(0)
}
