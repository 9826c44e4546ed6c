//! Runtime figures, printed side by side so runs can be compared:
//! - engine overhead per journaled step, with full and normal durability
//!   (the same loop without steps is subtracted);
//! - replay cost per completed step on resume;
//! - wall time of `drydock run` on a trivial runbook (process start to exit).
//!
//! Run with `cargo bench --bench runtime_overhead`.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use drydock_runtime::journal::Durability;
use drydock_runtime::{Catalog, Executor, QuietObserver, RunOptions, StartOptions};

const STEPS: usize = 400;

fn executor(dir: &std::path::Path, durability: Durability) -> Executor {
    let bundled = vec![
        ("steps.rhai".to_string(), format!("runbook(#{{ name: \"steps\" }});\nfor i in 0..{STEPS} {{ step(`s${{i}}`, || i); }}\n")),
        ("plain.rhai".to_string(), format!("runbook(#{{ name: \"plain\" }});\nfor i in 0..{STEPS} {{ let f = || i; f.call(); }}\n")),
    ];
    Executor::new(dir.to_path_buf(), Catalog::new(bundled, vec![])).with_durability(durability)
}

fn time_run(ex: &Executor, runbook: &str) -> (Duration, String) {
    let rb = ex.catalog().find(runbook).unwrap();
    let id = ex
        .create_execution(&rb, &BTreeMap::new(), &StartOptions::default())
        .unwrap();
    let start = Instant::now();
    let outcome = ex
        .run(&id, Arc::new(QuietObserver), RunOptions::default())
        .unwrap();
    assert_eq!(outcome.state.to_string(), "Success");
    (start.elapsed(), id)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    println!("drydock runtime figures ({STEPS} steps per run, median of 5 runs)");
    println!("{:<56} {:>12}", "measure", "value");
    for (label, durability) in [
        ("full (fsync per commit)", Durability::Full),
        ("normal (WAL, no fsync)", Durability::Normal),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let ex = executor(dir.path(), durability);
        let mut with_steps = Vec::new();
        let mut without = Vec::new();
        let mut replay = Vec::new();
        for _ in 0..5 {
            let (t, id) = time_run(&ex, "steps");
            with_steps.push(t);
            without.push(time_run(&ex, "plain").0);
            // Replay: reopen the finished execution and run it again; every step replays.
            let mut j = ex.journal().unwrap();
            j.finish_execution(
                &id,
                drydock_runtime::ExecutionState::Failed,
                &serde_json::Value::Null,
                None,
            )
            .unwrap();
            let start = Instant::now();
            let out = ex
                .run(&id, Arc::new(QuietObserver), RunOptions { retry: true })
                .unwrap();
            assert_eq!(out.steps_replayed as usize, STEPS);
            replay.push(start.elapsed());
        }
        let per_step = median(with_steps).saturating_sub(median(without)) / STEPS as u32;
        println!(
            "{:<56} {:>9.3} ms",
            format!("overhead per journaled step, {label}"),
            per_step.as_secs_f64() * 1e3
        );
        println!(
            "{:<56} {:>9.3} ms",
            format!("replay per step on resume, {label}"),
            (median(replay) / STEPS as u32).as_secs_f64() * 1e3
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let rb = dir.path().join("trivial.rhai");
    std::fs::write(
        &rb,
        "runbook(#{ name: \"trivial\" });\nstep(\"only\", || 1);\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let mut runs = Vec::new();
    for _ in 0..21 {
        let start = Instant::now();
        let status = Command::new(env!("CARGO_BIN_EXE_drydock"))
            .arg("--data-dir")
            .arg(&data)
            .args(["run", rb.to_str().unwrap()])
            .output()
            .unwrap()
            .status;
        runs.push(start.elapsed());
        assert!(status.success());
    }
    runs.sort();
    println!(
        "{:<56} {:>9.1} ms",
        "`drydock run` trivial runbook, median",
        runs[runs.len() / 2].as_secs_f64() * 1e3
    );
    println!(
        "{:<56} {:>9.1} ms",
        "`drydock run` trivial runbook, p90",
        runs[runs.len() * 9 / 10].as_secs_f64() * 1e3
    );
}
