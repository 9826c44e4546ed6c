//! `drydock windows`: maintenance windows with prioritised tasks, run by
//! `drydock serve`.

use std::process::Child;

use chrono::{TimeZone, Utc};
use drydock_runtime::journal::{WindowRecord, WindowTask};
use drydock_runtime::schedule::windows::{actions, statuses, WindowAction};
use drydock_runtime::schedule::{parse_tz, Clock, ScheduleExpr};
use drydock_runtime::SuppliedValue;
use serde_json::json;

use super::{clip, print_json, shown, table, when, Context};
use crate::cli::WindowsCommand;
use crate::failure::CliError;

fn duration(what: &str, text: &str) -> Result<i64, CliError> {
    drydock_runtime::duration::parse_duration(text)
        .map(|d| d.as_millis() as i64)
        .map_err(|e| CliError::usage(format!("{what}: {e}")))
}

/// `drydock windows …`.
pub fn run(ctx: &Context, cmd: Option<WindowsCommand>) -> Result<i32, CliError> {
    let mut journal = ctx.executor.journal()?;
    match cmd {
        None | Some(WindowsCommand::List) => {
            let list = journal.windows()?;
            if ctx.json {
                print_json(&list);
                return Ok(0);
            }
            if list.is_empty() {
                println!("no maintenance windows; add one with `drydock windows add NAME --schedule … --duration 4h --cutoff 1h`");
                return Ok(0);
            }
            let mut t = table(&[
                "WINDOW",
                "SCHEDULE",
                "TZ",
                "DURATION",
                "CUTOFF",
                "AT THE END",
                "NEXT",
                "TASKS",
            ]);
            for w in &list {
                let next = ScheduleExpr::parse(&w.expression).ok().and_then(|e| {
                    let tz = parse_tz(&w.timezone).ok()?;
                    let start = Utc.timestamp_millis_opt(w.created_at).single()?;
                    e.next_after(Utc::now(), tz, start)
                });
                t.add_row(vec![
                    shown(&w.name),
                    shown(&w.expression),
                    w.timezone.clone(),
                    fmt_ms(w.duration_ms),
                    fmt_ms(w.cutoff_ms),
                    w.cutoff_behavior.clone(),
                    next.map(|t| t.to_rfc3339())
                        .unwrap_or_else(|| "never".into()),
                    journal.window_tasks(&w.name)?.len().to_string(),
                ]);
            }
            println!("{t}");
        }
        Some(WindowsCommand::Add {
            name,
            schedule,
            duration: d,
            cutoff,
            timezone,
            at_end,
        }) => {
            ScheduleExpr::parse(&schedule).map_err(|e| CliError::usage(e.to_string()))?;
            let tz = timezone.unwrap_or_else(|| "UTC".into());
            parse_tz(&tz).map_err(CliError::usage)?;
            let duration_ms = duration("--duration", &d)?;
            let cutoff_ms = duration("--cutoff", &cutoff)?;
            if duration_ms < 5_000 || cutoff_ms >= duration_ms {
                return Err(CliError::usage(
                    "--duration must be at least 5s and longer than --cutoff",
                ));
            }
            if !matches!(at_end.as_str(), "finish" | "cancel") {
                return Err(CliError::usage(
                    "--at-end is finish (running tasks go on) or cancel (they are cancelled at a safe point)",
                ));
            }
            drydock_runtime::journal::check_parameter_name(&name).map_err(CliError::usage)?;
            let record = WindowRecord {
                name: name.clone(),
                expression: schedule,
                timezone: tz,
                duration_ms,
                cutoff_ms,
                cutoff_behavior: at_end,
                created_by: drydock_runtime::identity::Identity::current().name,
                created_at: drydock_runtime::journal::now_ms(),
                last_slot_at: None,
            };
            journal.put_window(&record)?;
            if ctx.json {
                // As stored (an update keeps what the journal keeps).
                print_json(&journal.window(&name)?);
            } else {
                println!("maintenance window {name} saved; register tasks with `drydock windows task {name} TASK --runbook …`");
            }
        }
        Some(WindowsCommand::Task {
            window,
            task,
            runbook,
            params,
            priority,
        }) => {
            journal.window(&window)?;
            let rb = ctx.executor.catalog().find(&runbook)?;
            let supplied = super::run::params_from(&params, None)?;
            let resolved =
                drydock_runtime::params::resolve_params(&rb.params, &supplied).map_err(|e| {
                    CliError::usage(format!(
                        "task {task}: its parameters are not valid for runbook `{}`:\n  {}",
                        rb.name,
                        e.to_string().replace('\n', "\n  ")
                    ))
                })?;
            // Whoever adds or changes a task requests its executions.
            let me = drydock_runtime::identity::Identity::current();
            let record = WindowTask {
                window: window.clone(),
                name: task.clone(),
                runbook: rb.name.clone(),
                params: resolved,
                priority,
                created_by: Some(me.name.clone()),
                created_by_uid: Some(me.uid),
                // The code approved with the task: a window runs only it.
                runbook_sha256: Some(drydock_runtime::executor::source_digest(&rb.source)),
            };
            journal.put_window_task(&record)?;
            if ctx.json {
                print_json(&record);
            } else {
                println!(
                    "{window}: task {task} ({}) at priority {priority}; its runs are requested by {}",
                    rb.name, me.name
                );
            }
        }
        Some(WindowsCommand::Show { name }) => {
            let w = journal.window(&name)?;
            let tasks = journal.window_tasks(&name)?;
            let runs = journal.window_runs(&name, 10)?;
            if ctx.json {
                let runs: Vec<_> = runs
                    .iter()
                    .map(|r| json!({ "run": r, "tasks": journal.window_task_runs(&name, r.slot_at).unwrap_or_default() }))
                    .collect();
                print_json(&json!({ "window": w, "tasks": tasks, "runs": runs }));
                return Ok(0);
            }
            println!(
                "{} — {} ({}), open {}, no new task in the last {}, at the end: {}",
                shown(&w.name),
                shown(&w.expression),
                w.timezone,
                fmt_ms(w.duration_ms),
                fmt_ms(w.cutoff_ms),
                w.cutoff_behavior
            );
            let mut t = table(&["PRIORITY", "TASK", "RUNBOOK", "REQUESTED BY"]);
            for task in &tasks {
                t.add_row(vec![
                    task.priority.to_string(),
                    shown(&task.name),
                    shown(&task.runbook),
                    shown(task.created_by.as_deref().unwrap_or(&w.created_by)),
                ]);
            }
            println!("{t}");
            for r in &runs {
                println!(
                    "opened {} until {} ({})",
                    when(r.slot_at),
                    when(r.ends_at),
                    r.state
                );
                for tr in journal.window_task_runs(&name, r.slot_at)? {
                    println!(
                        "  {} {} {}",
                        shown(&tr.task),
                        tr.state,
                        clip(&tr.execution_id.or(tr.reason).unwrap_or_default(), 80)
                    );
                }
            }
        }
        Some(WindowsCommand::Remove { name }) => {
            journal.remove_window(&name)?;
            if ctx.json {
                print_json(&json!({ "window": name, "removed": true }));
            } else {
                println!("maintenance window {name} removed");
            }
        }
    }
    Ok(0)
}

fn fmt_ms(ms: i64) -> String {
    drydock_runtime::duration::format_duration(std::time::Duration::from_millis(ms.max(0) as u64))
}

fn say(line: &str) {
    println!("{} {line}", Utc::now().format("%Y-%m-%dT%H:%M:%SZ"));
}

/// One pass over every window: open due ones, move their tasks on,
/// close the ones that ended.
pub fn windows_tick(
    ctx: &Context,
    clock: &dyn Clock,
    children: &mut Vec<Child>,
) -> Result<(), CliError> {
    let now = clock.now();
    let now_ms = now.timestamp_millis();
    let mut journal = ctx.executor.journal()?;
    for w in journal.windows()? {
        let (Ok(expr), Ok(tz)) = (ScheduleExpr::parse(&w.expression), parse_tz(&w.timezone)) else {
            continue;
        };
        let anchor = Utc
            .timestamp_millis_opt(w.created_at)
            .single()
            .unwrap_or(now);
        let mut after = Utc
            .timestamp_millis_opt(w.last_slot_at.unwrap_or(w.created_at - 1))
            .single()
            .unwrap_or(now);
        let mut guard = 0;
        while let Some(slot) = expr.next_after(after, tz, anchor) {
            guard += 1;
            if slot > now || guard > 1000 {
                break;
            }
            let slot_ms = slot.timestamp_millis();
            let ends = slot_ms + w.duration_ms;
            // A window is worth opening while a task may still start.
            let usable = now_ms < ends - w.cutoff_ms;
            let state = if usable { "open" } else { "missed" };
            if journal.claim_window_run(&w.name, slot_ms, ends, state)? {
                say(&format!(
                    "window {}: {} {state} until {}",
                    shown(&w.name),
                    slot.to_rfc3339(),
                    when(ends)
                ));
            }
            after = slot;
        }
    }
    for run in journal.open_window_runs()? {
        let Ok(w) = journal.window(&run.window) else {
            journal.close_window_run(&run.window, run.slot_at)?;
            continue;
        };
        let tasks = journal.window_tasks(&w.name)?;
        let recorded = journal.window_task_runs(&w.name, run.slot_at)?;
        let ended = |id: &str| {
            journal
                .execution(id)
                .map(|e| e.state.is_terminal())
                .unwrap_or(true)
        };
        let st = statuses(&tasks, &recorded, &ended);
        for action in actions(&w, run.slot_at, run.ends_at, &st, now) {
            match action {
                WindowAction::Start(name) => {
                    let Some(task) = tasks.iter().find(|t| t.name == name) else {
                        continue;
                    };
                    if !journal.record_window_task(
                        &w.name,
                        run.slot_at,
                        &name,
                        "started",
                        None,
                        None,
                    )? {
                        continue;
                    }
                    // The run names its execution before the runner starts.
                    let started = start_task(ctx, &w, task, &mut |id| {
                        journal.set_window_task_execution(&w.name, run.slot_at, &name, id)?;
                        Ok(())
                    });
                    match started {
                        Ok((id, child)) => {
                            children.push(child);
                            say(&format!(
                                "window {}: task {} started {id}",
                                shown(&w.name),
                                shown(&name)
                            ));
                        }
                        Err(e) => {
                            journal.set_window_task_skipped(
                                &w.name,
                                run.slot_at,
                                &name,
                                &e.to_string(),
                            )?;
                            say(&format!(
                                "window {}: task {} could not start: {e}",
                                shown(&w.name),
                                shown(&name)
                            ))
                        }
                    }
                }
                WindowAction::Skip(name, why) => {
                    if journal.record_window_task(
                        &w.name,
                        run.slot_at,
                        &name,
                        "skipped",
                        None,
                        Some(&why),
                    )? {
                        say(&format!(
                            "window {}: task {} skipped: {why}",
                            shown(&w.name),
                            shown(&name)
                        ));
                    }
                }
                WindowAction::Cancel(id) => {
                    journal.request_cancel(&id)?;
                    say(&format!(
                        "window {}: ended; cancelling {id} at its next safe point",
                        shown(&w.name)
                    ));
                }
                WindowAction::Close => {
                    journal.close_window_run(&w.name, run.slot_at)?;
                    say(&format!("window {}: closed", shown(&w.name)));
                }
            }
        }
    }
    Ok(())
}

/// Starts a window's task, requested by whoever added or last changed it
/// (for a task of an older journal, the window's creator): serve runs it,
/// but that person does not approve their own change.
fn start_task(
    ctx: &Context,
    w: &WindowRecord,
    task: &WindowTask,
    recorded: &mut dyn FnMut(&str) -> Result<(), CliError>,
) -> Result<(String, Child), CliError> {
    let requester = drydock_runtime::identity::Identity {
        uid: task.created_by_uid.unwrap_or(u32::MAX),
        name: task
            .created_by
            .clone()
            .unwrap_or_else(|| w.created_by.clone()),
    };
    let runbook = ctx.executor.catalog().find(&task.runbook)?;
    let digest = drydock_runtime::executor::source_digest(&runbook.source);
    if let Some(pinned) = &task.runbook_sha256 {
        if *pinned != digest {
            return Err(CliError::usage(format!(
                "task {} of window {}: runbook `{}` changed since the task was added (sha256:{} then, sha256:{} now), so it is skipped; \
                 read the change, then approve it by adding the task again (`drydock windows task {} {} --runbook {} …`)",
                task.name,
                w.name,
                task.runbook,
                &pinned[..12.min(pinned.len())],
                &digest[..12],
                w.name,
                task.name,
                task.runbook
            )));
        }
    }
    let supplied = task
        .params
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), SuppliedValue::Json(v.clone())))
        .collect();
    let id = ctx
        .executor
        .create_execution(
            &runbook,
            &supplied,
            &drydock_runtime::StartOptions {
                requester: Some(requester),
                ..Default::default()
            },
        )
        .map_err(|e| CliError::usage(e.to_string()))?;
    recorded(&id)?;
    let (child, _) = super::run::start_background(ctx, &id)?;
    Ok((id, child))
}
