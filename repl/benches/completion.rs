//! Keystroke cost of the REPL's line editor helpers with a host of 500
//! instances (plus their root volumes): per keystroke reedline runs the
//! highlighter (and, with the menu open, the completer). Completion reads
//! the background cache, so neither touches the host database.
//! `cargo bench -p drydock-repl --bench completion`

use std::sync::Arc;
use std::time::{Duration, Instant};

use drydock_host::{HostStore, InstanceConfig, InstanceRecord, InstanceState};
use drydock_repl::{ReplCompleter, ReplSession, RhaiHighlighter, Shared};
use reedline::{Completer, Highlighter};

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = HostStore::open(dir.path()).expect("host store");
    for n in 0..500u32 {
        let rec = InstanceRecord {
            id: format!("i-{:08x}{:08x}", n * 7919, n),
            region: "region-a".into(),
            instance_type: "m1.small".into(),
            image_id: "img-0000000000000000".into(),
            state: if n % 3 == 0 {
                InstanceState::Stopped
            } else {
                InstanceState::Running
            },
            state_reason: String::new(),
            root_volume: format!("vol-{n:016x}"),
            supervisor_pid: None,
            supervisor_token: None,
            boots: 1,
            config: InstanceConfig {
                hostname: format!("web-{n}"),
                ..InstanceConfig::default()
            },
            created_at: 0,
            state_since: 0,
            after_host_failure: Default::default(),
            auto_recovery: false,
        };
        store.insert_instance(&rec).expect("insert");
    }
    let t = Instant::now();
    let session = ReplSession::new(dir.path(), "region-a", "default", &drydock_stdlib::install);
    println!("session (engine + primitives) built in {:?}", t.elapsed());
    let shared = Arc::new(Shared::default());
    *shared.region.write().expect("lock") = "region-a".into();
    let t = Instant::now();
    *shared.functions.write().expect("lock") =
        drydock_repl::FunctionIndex::from_engine(session.engine());
    println!("function index from metadata in {:?}", t.elapsed());
    let t = Instant::now();
    shared.refresh(dir.path(), None);
    println!(
        "background refresh of {} resources in {:?} (off the keystroke path)",
        shared.resources.read().expect("lock").len(),
        t.elapsed()
    );
    let mut completer = ReplCompleter {
        shared: shared.clone(),
    };
    let highlighter = RhaiHighlighter { shared };
    let line = r#"let c = console::open("i-0000f"#;
    let mut times = Vec::new();
    for _round in 0..50 {
        for end in 1..=line.len() {
            let typed = &line[..end];
            let t = Instant::now();
            let _ = highlighter.highlight(typed, end);
            let r = completer.complete(typed, end);
            std::hint::black_box(r);
            times.push(t.elapsed());
        }
    }
    times.sort();
    let p = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    let over: usize = times
        .iter()
        .filter(|d| **d > Duration::from_millis(20))
        .count();
    println!(
        "per keystroke (highlight + complete, 500 instances): median {:?}, p99 {:?}, max {:?}; over 20 ms: {over} of {}",
        p(0.5),
        p(0.99),
        times[times.len() - 1],
        times.len()
    );
}
