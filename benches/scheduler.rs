//! Scheduler figures for `drydock serve`:
//! - the planner alone over 1,000 schedules (the pure part of a tick);
//! - CPU that an idle `drydock serve` with 1,000 schedules uses per minute
//!   (from /proc, over a measured span);
//! - firing jitter: how late runs start after their slot, over `at()`
//!   schedules a second apart.
//!
//! Run with `cargo bench --bench scheduler [SECONDS]` (default 20 s idle).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use drydock_runtime::journal::{Journal, MissedPolicy, ScheduleRecord};
use drydock_runtime::schedule::{plan, Facts};

const SCHEDULES: usize = 1000;

fn record(i: usize, expr: &str, runbook: &str) -> ScheduleRecord {
    ScheduleRecord {
        name: format!("s{i:04}"),
        runbook: runbook.into(),
        expression: expr.into(),
        timezone: if i % 2 == 0 { "UTC" } else { "Europe/Berlin" }.into(),
        params: Default::default(),
        start_at: None,
        end_at: None,
        paused: false,
        missed: MissedPolicy::Skip,
        max_lateness_ms: 3_600_000,
        calendar: None,
        created_by: "bench".into(),
        created_at: Utc::now().timestamp_millis(),
        source: "bench".into(),
        last_slot_at: None,
        fleet: None,
        runbook_sha256: None,
        created_by_uid: None,
    }
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15; after the command name they
    // are the 12th and 13th.
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn main() {
    let idle_secs: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let runbooks = dir.path().join("runbooks");
    std::fs::create_dir_all(&runbooks).unwrap();
    std::fs::write(
        runbooks.join("noop.rhai"),
        "runbook(#{ name: \"noop\" });\nstep(\"s\", || 1);\n",
    )
    .unwrap();
    let mut journal = Journal::open(&data).unwrap();
    let exprs = [
        "cron(0 3 * * *)",
        "cron(*/15 * * * *)",
        "rate(6 hours)",
        "cron(0 4 ? * SUN *)",
    ];
    let records: Vec<ScheduleRecord> = (0..SCHEDULES)
        .map(|i| record(i, exprs[i % exprs.len()], "noop"))
        .collect();
    for r in &records {
        journal.put_schedule(r).unwrap();
    }

    // The planner alone.
    let closed = |_: chrono::DateTime<Utc>| None;
    let facts = Facts {
        previous_running: None,
        calendar_closed: &closed,
    };
    let start = Instant::now();
    let rounds = 20;
    for _ in 0..rounds {
        for r in &records {
            let _ = plan(r, Utc::now(), &facts).unwrap();
        }
    }
    let per_tick = start.elapsed() / rounds;
    println!("planner over {SCHEDULES} schedules: {per_tick:?} per tick");

    // Firing jitter: 10 at() schedules one second apart, from 3 s on.
    let base = Utc::now() + chrono::Duration::seconds(3);
    let mut slots = Vec::new();
    for k in 0..10 {
        let t = base + chrono::Duration::seconds(k);
        let t = t.with_timezone(&Utc);
        let expr = format!("at({})", t.format("%Y-%m-%dT%H:%M:%S"));
        let mut r = record(SCHEDULES + k as usize, &expr, "noop");
        r.timezone = "UTC".into();
        journal.put_schedule(&r).unwrap();
        slots.push((r.name.clone(), t.timestamp() * 1000));
    }
    drop(journal);

    let mut serve = Command::new(env!("CARGO_BIN_EXE_drydock"))
        .arg("--data-dir")
        .arg(&data)
        .arg("--runbook-dir")
        .arg(&runbooks)
        .args(["serve", "--listen", "off"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(16));
    // Idle: after the at() runs, nothing is due for hours.
    let hz = 100.0; // USER_HZ on Linux
    let t0 = cpu_ticks(serve.id());
    let w0 = Instant::now();
    std::thread::sleep(Duration::from_secs(idle_secs));
    let used = (cpu_ticks(serve.id()) - t0) as f64 / hz;
    let wall = w0.elapsed().as_secs_f64();
    serve.kill().unwrap();
    let _ = serve.wait();
    println!(
        "idle serve with {} schedules: {:.2} CPU-seconds per minute ({:.2} % of one core), measured over {wall:.0} s",
        SCHEDULES + 10,
        used / wall * 60.0,
        used / wall * 100.0
    );

    let journal = Journal::open(&data).unwrap();
    let mut late: Vec<i64> = Vec::new();
    for (name, slot) in &slots {
        let s = journal.slots(name, 1).unwrap();
        let Some(slot_rec) = s.first() else { continue };
        let Some(id) = &slot_rec.execution_id else {
            continue;
        };
        let e = journal.execution(id).unwrap();
        late.push(e.created_at - slot);
    }
    late.sort_unstable();
    if late.is_empty() {
        println!("firing jitter: no run started");
    } else {
        println!(
            "firing jitter over {} at() slots: min {} ms, median {} ms, max {} ms (slot time to execution created)",
            late.len(),
            late[0],
            late[late.len() / 2],
            late[late.len() - 1]
        );
    }
}
