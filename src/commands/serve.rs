//! `drydock serve`: the long-running side. It runs schedules (their slots
//! recorded in the journal, so a restart never runs one twice), starts
//! each run as a background runner like `drydock run --detach`, resumes
//! scheduled runs whose runner died, and stops starting work on SIGTERM
//! (runners already started keep going and record their end).

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, SystemTime};

use chrono::{TimeZone, Utc};
use drydock_runtime::schedule::calendar::{state_of, CalendarState};
use drydock_runtime::schedule::{plan, Clock, Decision, Facts, SystemClock};
use tokio::signal::unix::{signal, SignalKind};

use super::{shown, Context};
use crate::cli::ServeArgs;
use crate::failure::CliError;

/// `drydock serve`.
pub fn run(ctx: &Context, args: ServeArgs) -> Result<i32, CliError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failure(format!("cannot start the service runtime: {e}")))?;
    rt.block_on(serve(ctx, args))
}

fn say(line: &str) {
    println!("{} {line}", Utc::now().format("%Y-%m-%dT%H:%M:%SZ"));
}

async fn serve(ctx: &Context, args: ServeArgs) -> Result<i32, CliError> {
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| CliError::failure(format!("cannot watch SIGTERM: {e}")))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| CliError::failure(format!("cannot watch SIGINT: {e}")))?;
    let file = args
        .schedules
        .clone()
        .unwrap_or_else(|| ctx.settings.data_dir.join("schedules.toml"));
    let explicit_file = args.schedules.is_some();
    if explicit_file && !file.exists() {
        return Err(CliError::usage(format!(
            "schedules file {} does not exist",
            file.display()
        )));
    }
    say(&format!(
        "drydock serve: data {}, schedules file {}",
        ctx.settings.data_dir.display(),
        file.display()
    ));
    let (stop_web, web_stopped) = tokio::sync::oneshot::channel::<()>();
    if args.listen != "off" {
        let addr: std::net::SocketAddr = args.listen.parse().map_err(|_| {
            CliError::usage(format!(
                "--listen `{}` is not ADDRESS:PORT (e.g. 127.0.0.1:8450) or off",
                shown(&args.listen)
            ))
        })?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| CliError::usage(format!("cannot listen on {addr}: {e}")))?;
        let bound = listener
            .local_addr()
            .map_err(|e| CliError::failure(e.to_string()))?;
        if !bound.ip().is_loopback() {
            say(&format!(
                "web console on {bound}, reachable from other machines: every request needs a token, and plain HTTP carries it in clear; put a TLS proxy in front"
            ));
        }
        say(&format!(
            "web console on http://{bound}/ (sign in with a token from `drydock tokens create`)"
        ));
        let state = super::web::WebState {
            data_dir: ctx.settings.data_dir.clone(),
            region: ctx.settings.region.clone(),
            profile: ctx.settings.profile.clone(),
        };
        tokio::spawn(async move {
            let shutdown = async {
                let _ = web_stopped.await;
            };
            if let Err(e) = axum::serve(listener, super::web::router(state))
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!("web console stopped: {e}");
            }
        });
    }
    let mut children: Vec<Child> = Vec::new();
    resume_orphans(ctx, &mut children);
    let mut file_seen: Option<SystemTime> = None;
    let clock = SystemClock;
    let mut cache = DueCache::default();
    let mut wait = Duration::ZERO;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {
                reload_file(ctx, &file, &mut file_seen);
                wait = Duration::from_secs(1);
                match schedule_tick(ctx, &clock, &mut children, &mut cache) {
                    // Wake for the next due slot, at least once a second
                    // (windows, file edits), at most 20 times a second.
                    Ok(Some(next)) => {
                        let until = (next - clock.now()).to_std().unwrap_or_default();
                        wait = until.clamp(Duration::from_millis(50), Duration::from_secs(1));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!("scheduler tick failed: {e}");
                        say(&format!("scheduler: {e}"));
                    }
                }
                if let Err(e) = super::windows::windows_tick(ctx, &clock, &mut children) {
                    tracing::warn!("maintenance window tick failed: {e}");
                    say(&format!("maintenance windows: {e}"));
                }
                children.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    let _ = stop_web.send(());
    say(&format!(
        "drydock serve: stopping; {} runs still going record their end in the journal and are resumed by the next serve if they stop",
        children.len()
    ));
    // Runners live in process groups of their own and finish their work.
    for c in children {
        std::mem::forget(c);
    }
    Ok(0)
}

/// Re-imports the schedules file when it changed (a bad file is reported
/// and the schedules stay as they were).
fn reload_file(ctx: &Context, file: &PathBuf, seen: &mut Option<SystemTime>) {
    let Ok(modified) = std::fs::metadata(file).and_then(|m| m.modified()) else {
        return;
    };
    if *seen == Some(modified) {
        return;
    }
    *seen = Some(modified);
    match super::schedules::import_file(ctx, file) {
        Ok(n) => say(&format!("schedules file {}: {n} schedules", file.display())),
        Err(e) => say(&format!(
            "schedules file {} not loaded: {e}",
            file.display()
        )),
    }
}

/// The schedule's previous run, when it is still going.
fn previous_running(ctx: &Context, name: &str) -> Option<String> {
    let journal = ctx.executor.journal().ok()?;
    let slots = journal.slots(name, 5).ok()?;
    slots.into_iter().find_map(|s| {
        let id = s.execution_id?;
        let e = journal.execution(&id).ok()?;
        (!e.state.is_terminal()).then_some(id)
    })
}

/// When each schedule next needs attention, kept between ticks so an
/// idle tick costs one `data_version` read instead of a journal read and
/// a plan per schedule. Any commit by another connection (a CLI change,
/// this serve's own slot claims) invalidates it.
#[derive(Default)]
pub struct DueCache {
    journal: Option<drydock_runtime::Journal>,
    version: Option<i64>,
    due: Vec<(
        drydock_runtime::journal::ScheduleRecord,
        Option<chrono::DateTime<Utc>>,
    )>,
}

/// The first slot of `s` not handled yet (None when there is none).
fn first_unhandled(s: &drydock_runtime::journal::ScheduleRecord) -> Option<chrono::DateTime<Utc>> {
    let expr = drydock_runtime::schedule::ScheduleExpr::parse(&s.expression).ok()?;
    let tz = drydock_runtime::schedule::parse_tz(&s.timezone).ok()?;
    let anchor = Utc
        .timestamp_millis_opt(s.start_at.unwrap_or(s.created_at))
        .single()?;
    let origin = s.created_at.max(s.start_at.unwrap_or(i64::MIN)) - 1;
    let after = Utc
        .timestamp_millis_opt(s.last_slot_at.unwrap_or(origin))
        .single()?;
    let next = expr.next_after(after, tz, anchor)?;
    match s.end_at {
        Some(end) if next.timestamp_millis() > end => None,
        _ => Some(next),
    }
}

/// One pass over the schedules that are due: claim their slots, start
/// what runs. Returns when the next schedule is due.
pub fn schedule_tick(
    ctx: &Context,
    clock: &dyn Clock,
    children: &mut Vec<Child>,
    cache: &mut DueCache,
) -> Result<Option<chrono::DateTime<Utc>>, CliError> {
    let now = clock.now();
    if cache.journal.is_none() {
        cache.journal = Some(ctx.executor.journal()?);
    }
    let version = cache
        .journal
        .as_ref()
        .map(|j| j.data_version())
        .transpose()?;
    if cache.version.is_none() || cache.version != version {
        let list = ctx.executor.journal()?.schedules()?;
        cache.due = list
            .into_iter()
            .map(|s| {
                let due = first_unhandled(&s);
                (s, due)
            })
            .collect();
        cache.version = version;
    }
    let due_now: Vec<drydock_runtime::journal::ScheduleRecord> = cache
        .due
        .iter()
        .filter(|(_, d)| d.is_some_and(|d| d <= now))
        .map(|(s, _)| s.clone())
        .collect();
    if !due_now.is_empty() {
        // Our own claims below change the journal: read it again next time.
        cache.version = None;
    }
    for s in due_now {
        // A closed calendar skips the slot, unless it asks for an override
        // approval: then the run starts and waits for it first.
        let journal = ctx.executor.journal()?;
        let calendar = s
            .calendar
            .as_ref()
            .and_then(|c| journal.calendar(c).ok().flatten());
        let gated = calendar.as_ref().is_some_and(|c| c.on_closed == "approval");
        let closed_at = |t: chrono::DateTime<Utc>| match &s.calendar {
            Some(c) => match state_of(&journal, c, t) {
                CalendarState::Open => None,
                CalendarState::Closed(why) => Some(why),
            },
            None => None,
        };
        let calendar_closed = |t: chrono::DateTime<Utc>| if gated { None } else { closed_at(t) };
        let facts = Facts {
            previous_running: previous_running(ctx, &s.name),
            calendar_closed: &calendar_closed,
        };
        let planned = match plan(&s, now, &facts) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(schedule = %s.name, "cannot plan: {e}");
                continue;
            }
        };
        for p in planned {
            let slot_ms = p.slot.timestamp_millis();
            let claimed = ctx.executor.journal()?.claim_slot(
                &s.name,
                slot_ms,
                p.decision.state(),
                p.decision.reason(),
                true,
            )?;
            if !claimed {
                continue;
            }
            let slot = Utc
                .timestamp_millis_opt(slot_ms)
                .single()
                .map(|t| t.to_rfc3339())
                .unwrap_or_default();
            match &p.decision {
                Decision::Start => match super::schedules::start_scheduled(
                    ctx,
                    &s,
                    closed_at(p.slot).map(|why| format!("{why}; run {} anyway?", s.name)),
                ) {
                    Ok((id, child)) => {
                        ctx.executor
                            .journal()?
                            .set_slot_execution(&s.name, slot_ms, &id)?;
                        children.push(child);
                        say(&format!("{}: slot {slot} started {id}", shown(&s.name)));
                    }
                    Err(e) => {
                        ctx.executor.journal()?.set_slot_failed(
                            &s.name,
                            slot_ms,
                            &e.to_string(),
                        )?;
                        say(&format!(
                            "{}: slot {slot} could not start: {e}",
                            shown(&s.name)
                        ));
                    }
                },
                other => say(&format!(
                    "{}: slot {slot} {}: {}",
                    shown(&s.name),
                    other.state(),
                    other.reason().unwrap_or("")
                )),
            }
        }
    }
    Ok(cache.due.iter().filter_map(|(_, d)| *d).min())
}

/// Scheduled runs whose runner is gone (serve or the machine went down
/// while they ran) are resumed.
fn resume_orphans(ctx: &Context, children: &mut Vec<Child>) {
    let Ok(journal) = ctx.executor.journal() else {
        return;
    };
    let Ok(schedules) = journal.schedules() else {
        return;
    };
    for s in schedules {
        for slot in journal.slots(&s.name, 20).unwrap_or_default() {
            let Some(id) = slot.execution_id else {
                continue;
            };
            let Ok(e) = journal.execution(&id) else {
                continue;
            };
            if e.state.is_terminal() || e.has_live_runner() {
                continue;
            }
            match super::run::start_background(ctx, &id) {
                Ok((child, _)) => {
                    children.push(child);
                    say(&format!(
                        "{}: resumed {id}, whose runner had stopped",
                        shown(&s.name)
                    ));
                }
                Err(err) => say(&format!("{}: cannot resume {id}: {err}", shown(&s.name))),
            }
        }
    }
}
