//! `drydock serve`: the long-running side. It runs schedules (their slots
//! recorded in the journal, so a restart never runs one twice), status
//! checks and automatic recovery, event rules (`commands/rules.rs`), starts
//! each run as a background runner like `drydock run --detach`, resumes
//! scheduled runs whose runner died, and stops starting work on SIGTERM
//! (runners already started keep going and record their end).

use std::path::PathBuf;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use chrono::{TimeZone, Utc};
use drydock_runtime::schedule::calendar::{state_of, CalendarState};
use drydock_runtime::schedule::{plan, Clock, Decision, Facts, SystemClock};
use serde_json::json;
use tokio::signal::unix::{signal, SignalKind};

use super::{serve_socket, shown, Context};
use crate::cli::{ServeArgs, ServeCommand};
use crate::failure::CliError;

/// `drydock serve`, or `drydock serve status`.
pub fn run(ctx: &Context, args: ServeArgs) -> Result<i32, CliError> {
    if let Some(ServeCommand::Status) = args.action {
        return status(ctx);
    }
    // One serve per data directory, before anything is started.
    let _lock = serve_socket::take_lock(&ctx.settings.data_dir)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failure(format!("cannot start the service runtime: {e}")))?;
    rt.block_on(serve(ctx, args))
}

/// `drydock serve status`: what the running serve says of itself.
fn status(ctx: &Context) -> Result<i32, CliError> {
    let data_dir = &ctx.settings.data_dir;
    let Some((code, v)) = serve_socket::get(data_dir, "/api/serve")? else {
        if ctx.json {
            println!("{}", serde_json::json!({ "running": false }));
        } else {
            println!(
                "no drydock serve runs for {} (start one with `drydock serve`)",
                data_dir.display()
            );
        }
        return Ok(1);
    };
    if code != 200 {
        return Err(CliError::failure(format!(
            "the serve refused: {}",
            v["error"].as_str().unwrap_or("no reason given")
        )));
    }
    if ctx.json {
        println!("{v}");
        return Ok(0);
    }
    let text = |k: &str| v[k].as_str().map(shown).unwrap_or_else(|| "-".into());
    let started = v["started_at"]
        .as_i64()
        .map(super::when)
        .unwrap_or_default();
    println!("drydock serve, pid {}, since {started}", v["pid"]);
    println!("  data directory  {}", text("data_dir"));
    println!("  region          {}", text("region"));
    println!("  web console     {}", text("http"));
    println!("  local socket    {}", text("socket"));
    println!("  schedules       {}", v["schedules"]);
    println!(
        "  next slot       {}",
        v["next_slot_at"]
            .as_i64()
            .map(super::when)
            .unwrap_or_else(|| "none".into())
    );
    println!("  runs going      {}", v["runs_going"]);
    println!("  you are         {}", text("caller"));
    if v["stopping"].as_bool() == Some(true) {
        println!("  stopping: no new work is started");
    }
    Ok(0)
}

fn say(line: &str) {
    println!("{} {line}", Utc::now().format("%Y-%m-%dT%H:%M:%SZ"));
}

async fn serve(ctx: &Context, args: ServeArgs) -> Result<i32, CliError> {
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| CliError::failure(format!("cannot watch SIGTERM: {e}")))?;
    // A child that ends is reaped at once, not left <defunct>.
    let mut chld = signal(SignalKind::child())
        .map_err(|e| CliError::failure(format!("cannot watch SIGCHLD: {e}")))?;
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
    let checks = health_settings(&args)?;
    let retention = match args.event_retention.trim() {
        "off" => None,
        text => Some(super::events::parse_retention(text, "--event-retention")?),
    };
    let started_at = drydock_runtime::journal::now_ms();
    let socket = serve_socket::socket_path(&ctx.settings.data_dir);
    let status = Arc::new(Mutex::new(json!({})));
    let state = super::web::WebState {
        data_dir: ctx.settings.data_dir.clone(),
        region: ctx.settings.region.clone(),
        profile: ctx.settings.profile.clone(),
        serve: status.clone(),
        ctx: Arc::new(super::Context {
            settings: ctx.settings.clone(),
            executor: ctx.executor.clone(),
            json: true,
        }),
    };
    let (stop_web, web_stopped) = tokio::sync::watch::channel(false);
    let shutdown = move || {
        let mut rx = web_stopped.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let mut http = None;
    if args.listen != "off" {
        let addr: std::net::SocketAddr = args.listen.parse().map_err(|_| {
            CliError::usage(format!(
                "--listen `{}` is not ADDRESS:PORT (e.g. 127.0.0.1:8450) or off",
                shown(&args.listen)
            ))
        })?;
        // Checked before binding: a public address needs --listen-public.
        if !addr.ip().is_loopback() && !args.listen_public {
            return Err(CliError::usage(format!(
                "--listen {addr} is reachable from other machines, and the web console speaks plain HTTP: every token would cross the network in clear. \
                 Listen on 127.0.0.1 and put a TLS proxy in front, or pass --listen-public if that proxy (or a trusted network) is already there"
            )));
        }
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
        http = Some(format!("http://{bound}/"));
        let router = super::web::router(state.clone());
        let stopped = shutdown();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(stopped)
                .await
            {
                tracing::error!("web console stopped: {e}");
            }
        });
    }
    let unix = serve_socket::bind(&ctx.settings.data_dir)?;
    say(&format!(
        "local API on {} (for this account{})",
        socket.display(),
        match drydock_runtime::access::sharing().group {
            Some(g) => format!(" and group {g}"),
            None => String::new(),
        }
    ));
    {
        let router = super::web::router(state.clone())
            .into_make_service_with_connect_info::<super::web::UnixPeer>();
        let stopped = shutdown();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(unix, router)
                .with_graceful_shutdown(stopped)
                .await
            {
                tracing::error!("local API stopped: {e}");
            }
        });
    }
    let report = |schedules: usize, next: Option<i64>, runs: usize, stopping: bool| {
        if let Ok(mut s) = status.lock() {
            *s = json!({
                "running": true,
                "pid": std::process::id(),
                "started_at": started_at,
                "account": drydock_runtime::identity::Identity::current().name,
                "data_dir": ctx.settings.data_dir.display().to_string(),
                "region": ctx.settings.region,
                "http": http,
                "socket": socket.display().to_string(),
                "schedules_file": file.display().to_string(),
                "schedules": schedules,
                "next_slot_at": next,
                "runs_going": runs,
                "stopping": stopping,
            });
        }
    };
    report(0, None, 0, false);
    let mut children: Vec<Child> = Vec::new();
    // After a host outage: instances, and every execution cut off (not
    // only scheduled ones).
    match super::recover::recover(ctx, true, &|m| say(m)) {
        Ok((r, runners)) => {
            children.extend(runners);
            if !r.instances.is_empty() || !r.executions.is_empty() {
                say(&format!(
                    "host recovery: {} instance(s) found stopped, {} execution(s) resumed",
                    r.instances.len(),
                    r.executions.len()
                ));
            }
        }
        Err(e) => say(&format!("host recovery failed: {e}")),
    }
    let health = checks.map(|(every, policy)| {
        say(&format!(
            "status checks every {}; automatic recovery at most {} per {}",
            drydock_runtime::duration::format_duration(every),
            policy.max,
            drydock_runtime::duration::format_duration(policy.window)
        ));
        HealthChecks::start(
            ctx.settings.data_dir.clone(),
            ctx.settings.profile.clone(),
            every,
            policy,
        )
    });
    match super::rules::resume_deliveries(ctx) {
        Ok(0) => {}
        Ok(n) => say(&format!(
            "webhooks: {n} deliveries left unanswered sent again"
        )),
        Err(e) => say(&format!("webhooks: {e}")),
    }
    let mut file_seen: Option<SystemTime> = None;
    let clock = SystemClock;
    let mut cache = DueCache::default();
    let mut wake = tokio::time::Instant::now();
    // The first prune comes an interval after the start.
    let mut last_prune = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {
                reload_file(ctx, &file, &mut file_seen);
                let mut wait = Duration::from_secs(1);
                let mut next_slot = None;
                match schedule_tick(ctx, &clock, &mut children, &mut cache) {
                    // Wake for the next due slot, at least once a second
                    // (windows, file edits), at most 20 times a second.
                    Ok(Some(next)) => {
                        next_slot = Some(next.timestamp_millis());
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
                // Instances' state changes a crash left in the host
                // store's outbox reach the stream; old events go.
                flush_host_events(ctx);
                if let Some(keep) = retention {
                    if last_prune.elapsed() >= PRUNE_EVERY {
                        last_prune = std::time::Instant::now();
                        prune_events(ctx, keep);
                    }
                }
                // Console patterns become events; events fire rules.
                if let Err(e) = super::console_rules::console_tick(ctx) {
                    say(&format!("console rules: {e}"));
                }
                match super::rules::rules_tick(ctx, &mut children) {
                    Ok(lines) => lines.iter().for_each(|l| say(l)),
                    Err(e) => say(&format!("rules: {e}")),
                }
                reap(&mut children);
                report(cache.due.len(), next_slot, children.len(), false);
                wake = tokio::time::Instant::now() + wait;
            }
            _ = chld.recv() => reap(&mut children),
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    report(cache.due.len(), None, children.len(), true);
    let _ = stop_web.send(true);
    drop(health);
    say(&format!(
        "drydock serve: stopping; {} runs still going record their end in the journal and are resumed by the next serve if they stop",
        children.len()
    ));
    // Runners live in process groups of their own and finish their work
    // (init adopts them when this process ends); the ones that ended are
    // reaped now.
    reap(&mut children);
    for c in children {
        std::mem::forget(c);
    }
    Ok(0)
}

/// `--check-interval`, `--max-recoveries`, `--recovery-window`: None
/// when checks are off.
/// How often `--event-retention` prunes the event stream.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Moves what the host store's outbox holds into the event stream (every
/// state change does it too; this catches one a crash cut off).
fn flush_host_events(ctx: &Context) {
    let store = drydock_host::store::HostStore::open(&ctx.settings.data_dir);
    if let Err(e) = store.and_then(|s| s.flush_events()) {
        tracing::warn!("instance events wait in the host store's outbox: {e}");
    }
}

fn prune_events(ctx: &Context, keep: Duration) {
    let cut = drydock_runtime::journal::now_ms() - keep.as_millis() as i64;
    match ctx.executor.journal().map(|mut j| j.prune_events(cut)) {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => say(&format!("removed {n} events past the retention")),
        Ok(Err(e)) => say(&format!("event retention: {e}")),
        Err(e) => say(&format!("event retention: {e}")),
    }
}

fn health_settings(
    args: &ServeArgs,
) -> Result<Option<(Duration, drydock_ops::health::RecoveryPolicy)>, CliError> {
    let window = drydock_runtime::duration::parse_duration(&args.recovery_window)
        .map_err(|e| CliError::usage(format!("--recovery-window: {e}")))?;
    if args.check_interval.trim() == "off" {
        return Ok(None);
    }
    let every = drydock_runtime::duration::parse_duration(&args.check_interval)
        .map_err(|e| CliError::usage(format!("--check-interval: {e} (or off)")))?;
    if every < Duration::from_secs(1) {
        return Err(CliError::usage(
            "--check-interval must be at least 1s (each pass reaches every running instance)",
        ));
    }
    Ok(Some((
        every,
        drydock_ops::health::RecoveryPolicy {
            max: args.max_recoveries,
            window,
        },
    )))
}

/// The thread that runs the status checks (and recoveries) at their
/// interval; they block on instances (a start waits for its VMM), so they
/// stay off the loop that runs schedules and serves the web console.
struct HealthChecks {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HealthChecks {
    fn start(
        data_dir: PathBuf,
        profile: String,
        every: Duration,
        policy: drydock_ops::health::RecoveryPolicy,
    ) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("status-checks".into())
            .spawn(move || {
                use std::sync::atomic::Ordering;
                while !s.load(Ordering::SeqCst) {
                    let pass = drydock_runtime::Journal::open(&data_dir)
                        .map_err(|e| e.to_string())
                        .and_then(|j| {
                            drydock_ops::health::pass(&data_dir, &profile, &policy, &j)
                                .map_err(|e| e.to_string())
                        });
                    match pass {
                        Ok(p) => {
                            for (id, before, now) in &p.changed {
                                let before = if before.is_empty() { "-" } else { before };
                                say(&format!("status: {id} {before} -> {now}"));
                            }
                            for (id, outcome) in &p.recoveries {
                                say(&format!("recovery: {id} {outcome}"));
                            }
                        }
                        Err(e) => say(&format!("status checks: {e}")),
                    }
                    let until = std::time::Instant::now() + every;
                    while !s.load(Ordering::SeqCst) && std::time::Instant::now() < until {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            })
            .ok();
        Self { stop, thread }
    }
}

impl Drop for HealthChecks {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reaps every child of this process that has ended: the runners it
/// tracks (dropped from `children`), and the ones it does not (an
/// instance's supervisor started by host recovery, a runner whose start
/// could not be recorded), which would otherwise stay `<defunct>` for as
/// long as serve runs.
pub fn reap(children: &mut Vec<Child>) {
    children.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
    loop {
        // SAFETY: siginfo_t is plain data for which all zeroes is valid;
        // waitid only writes into it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid with WNOWAIT only reports an ended child (it is
        // left waitable); `info` is a valid siginfo_t we own.
        let rc = unsafe {
            libc::waitid(
                libc::P_ALL,
                0,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: waitid filled `info` (or left it zeroed: pid 0).
        let pid = unsafe { info.si_pid() };
        if rc != 0 || pid <= 0 {
            return;
        }
        // The runners tracked above were already reaped through their
        // Child: what is left ended after that check or is untracked.
        if let Some(i) = children.iter().position(|c| c.id() == pid as u32) {
            // It has ended: wait() returns at once and reaps it.
            let _ = children.swap_remove(i).wait();
            continue;
        }
        let mut status = 0;
        // SAFETY: waitpid on a pid that is our own ended child, with a
        // valid pointer for its status.
        unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    }
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
    let version = match cache.journal.as_ref().map(|j| j.data_version()).transpose() {
        Ok(v) => v,
        Err(e) => {
            // A connection that failed is not trusted again: the next tick
            // opens a fresh one (and reads every schedule again).
            cache.journal = None;
            cache.version = None;
            return Err(e.into());
        }
    };
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
                    // The slot names its execution before the runner starts.
                    &mut |id| {
                        ctx.executor
                            .journal()?
                            .set_slot_execution(&s.name, slot_ms, id)?;
                        Ok(())
                    },
                ) {
                    Ok((id, child)) => {
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
