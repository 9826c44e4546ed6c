//! Figures of status checks, automatic recovery and event rules (issue
//! 23), on this machine's backend (QEMU TCG here):
//!
//! - **detection latency**: an instance's VMM killed (SIGKILL) → the
//!   `instance.status impaired` event, with `drydock serve
//!   --check-interval 1s`;
//! - **recovery to login**: the VMM killed → the recovered instance's
//!   console shows its login prompt again (`--auto-recovery on`);
//! - **event → runbook start**: an `execution.ended Failed` event → the
//!   execution its rule starts (serve's loop, one turn a second at most);
//! - **check cost**: one pass of both checks over N running instances
//!   (`drydock instance-status`, wall time and CPU time of the process),
//!   and serve's CPU use over a minute with checks every 10 s against a
//!   minute with checks off, as a percentage of one core.
//!
//! Run with `cargo bench --profile dev --bench health_figures` as root
//! (instance networks need CAP_NET_ADMIN). `HEALTH_N` sets the number of
//! instances of the cost figure (default 20), `HEALTH_REPEAT` the kills
//! (default 3). Every instance is terminated at the end, also on a panic.

#[path = "support/mod.rs"]
mod support;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use support::Bench;

const PW: &str = "bench-pw";

impl Bench {
    fn serve(&self, interval: &str) -> Child {
        self.cmd(&[
            "serve",
            "--listen",
            "off",
            "--check-interval",
            interval,
            "--max-recoveries",
            "100",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
    }

    fn events(&self, kind: &str, after: i64) -> Vec<serde_json::Value> {
        let after = after.to_string();
        self.json(&[
            "events", "--type", kind, "--after", &after, "--limit", "10000",
        ])["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn last_seq(&self) -> i64 {
        self.json(&["events", "--limit", "1"])["events"][0]["seq"]
            .as_i64()
            .unwrap_or(0)
    }
}

/// The launched instances, terminated when dropped (also on a panic).
struct Instances<'a> {
    b: &'a Bench,
    ids: Vec<String>,
}

impl Drop for Instances<'_> {
    fn drop(&mut self) {
        for id in &self.ids {
            let _ = self.b.run(&["instance", "terminate", id]);
        }
    }
}

/// Stops a child process (serve) when dropped.
struct Stopping(Child);

impl Drop for Stopping {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn spread(mut v: Vec<f64>, unit: &str) -> String {
    if v.is_empty() {
        return "-".into();
    }
    v.sort_by(|a, b| a.total_cmp(b));
    format!(
        "min {:.2} {unit}, median {:.2} {unit}, max {:.2} {unit} (of {})",
        v[0],
        v[v.len() / 2],
        v[v.len() - 1],
        v.len()
    )
}

/// Waits up to `limit` for `f` to give something.
fn wait<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command's closing parenthesis.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // utime and stime are fields 14 and 15 (11 and 12 after the name).
    (ticks(11) + ticks(12)) / hz
}

/// CPU seconds (user + system) of this process's waited-for children.
fn children_cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one rusage into the valid pointer given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr());
        usage.assume_init()
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn vmm_of(b: &Bench, id: &str) -> Option<u32> {
    let sup = describe(b, id)["supervisor_pid"].as_u64()?;
    std::fs::read_to_string(format!("/proc/{sup}/task/{sup}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// An instance's record, from `drydock instances`.
fn describe(b: &Bench, id: &str) -> serde_json::Value {
    b.json(&["instances"])["instances"]
        .as_array()
        .and_then(|all| all.iter().find(|i| i["id"] == id).cloned())
        .unwrap_or_default()
}

fn launch(b: &Bench, img: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "instance",
        "launch",
        "--image",
        img,
        "--type",
        "m1.small",
        "--root-password",
        PW,
    ];
    args.extend_from_slice(extra);
    b.json(&args)["id"].as_str().unwrap().to_string()
}

fn detection_and_recovery(b: &Bench, img: &str, repeat: usize) {
    let mut fleet = Instances { b, ids: Vec::new() };
    let id = launch(b, img, &["--auto-recovery", "on"]);
    fleet.ids.push(id.clone());
    let _serve = Stopping(b.serve("1s"));
    let mut detect = Vec::new();
    let mut to_login = Vec::new();
    let mut to_recovered = Vec::new();
    for round in 0..repeat {
        // Up and checked ok first.
        let ok = wait(Duration::from_secs(300), || {
            let st = b.json_or(&["instance-status", &id], &[1]);
            (st["statuses"][0]["status"] == "ok").then_some(())
        });
        if ok.is_none() {
            println!("  round {round}: {id} never became ok");
            return;
        }
        let boots = describe(b, &id)["boots"].as_u64().unwrap_or(0);
        let after = b.last_seq();
        let Some(vmm) = vmm_of(b, &id) else {
            println!("  round {round}: no VMM found");
            return;
        };
        let killed = now_ms();
        // SAFETY: kill signals the VMM this bench's drydock started.
        unsafe { libc::kill(vmm as i32, libc::SIGKILL) };
        let impaired = wait(Duration::from_secs(120), || {
            b.events("instance.status", after)
                .into_iter()
                .find(|e| e["instance"] == id.as_str() && e["data"]["status"] == "impaired")
        });
        let Some(impaired) = impaired else {
            println!("  round {round}: no impaired event");
            return;
        };
        detect.push((impaired["at"].as_i64().unwrap() - killed) as f64 / 1000.0);
        let recovered = wait(Duration::from_secs(300), || {
            b.events("instance.recovery", after)
                .into_iter()
                .find(|e| e["instance"] == id.as_str())
        });
        if let Some(r) = recovered {
            to_recovered.push((r["at"].as_i64().unwrap() - killed) as f64 / 1000.0);
        }
        let login = wait(Duration::from_secs(300), || {
            let d = describe(b, &id);
            if d["boots"].as_u64().unwrap_or(0) <= boots {
                return None;
            }
            let out = b.run(&["console-output", &id]);
            String::from_utf8_lossy(&out.stdout)
                .contains(&format!("{id} login:"))
                .then(now_ms)
        });
        match login {
            Some(at) => to_login.push((at - killed) as f64 / 1000.0),
            None => println!("  round {round}: no login prompt after the recovery"),
        }
    }
    println!(
        "  VMM killed -> instance.status impaired (checks every 1 s): {}",
        spread(detect, "s")
    );
    println!(
        "  VMM killed -> instance.recovery event: {}",
        spread(to_recovered, "s")
    );
    println!(
        "  VMM killed -> the recovered guest's login prompt: {}",
        spread(to_login, "s")
    );
}

fn event_to_runbook(b: &Bench, work: &std::path::Path, repeat: usize) {
    let dir = work.join("runbooks");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("fails.rhai"),
        r#"runbook(#{ name: "fails", description: "fails at once" }); throw "broken";"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("on-failure.rhai"),
        r#"runbook(#{ name: "on-failure", description: "answers a failure",
            params: #{ failed: #{ type: "string", description: "the failed execution" } } });
        params.failed"#,
    )
    .unwrap();
    let rd = dir.to_str().unwrap();
    let out = b.run(&[
        "--runbook-dir",
        rd,
        "rules",
        "add",
        "answer",
        "--event",
        "execution.ended Failed",
        "--match",
        "data.runbook=fails",
        "--runbook",
        "on-failure",
        "-p",
        "failed={{event.execution}}",
        "--max-per-hour",
        "1000",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _serve = Stopping(
        b.cmd(&[
            "--runbook-dir",
            rd,
            "serve",
            "--listen",
            "off",
            "--check-interval",
            "off",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    std::thread::sleep(Duration::from_secs(2));
    let mut latencies = Vec::new();
    for _ in 0..repeat {
        let after = b.last_seq();
        let _ = b.run(&["--runbook-dir", rd, "run", "fails"]);
        let ended = b
            .events("execution.ended", after)
            .into_iter()
            .find(|e| e["data"]["runbook"] == "fails");
        let Some(ended) = ended else { continue };
        let started = wait(Duration::from_secs(30), || {
            b.events("execution.started", after)
                .into_iter()
                .find(|e| e["data"]["runbook"] == "on-failure")
        });
        if let Some(s) = started {
            latencies.push((s["at"].as_i64().unwrap() - ended["at"].as_i64().unwrap()) as f64);
        }
    }
    println!(
        "  execution.ended -> the rule's execution started: {}",
        spread(latencies, "ms")
    );
}

fn check_cost(b: &Bench, img: &str, n: usize) {
    let mut fleet = Instances { b, ids: Vec::new() };
    for _ in 0..n {
        fleet.ids.push(launch(b, img, &[]));
    }
    let all_ok = wait(Duration::from_secs(1200), || {
        let st = b.json_or(&["instance-status"], &[1]);
        let oks = st["statuses"]
            .as_array()?
            .iter()
            .filter(|s| s["status"] == "ok")
            .count();
        (oks == n).then_some(())
    });
    if all_ok.is_none() {
        println!("  not all {n} instances passed their checks; the cost is measured anyway");
    }
    // One pass, by hand: wall and CPU time of the checking process.
    let mut walls = Vec::new();
    let mut cpus = Vec::new();
    for _ in 0..5 {
        let before = children_cpu_seconds();
        let t = Instant::now();
        let status = b
            .cmd(&["--json", "instance-status"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.code().is_some_and(|c| c <= 1), "{status}");
        cpus.push(children_cpu_seconds() - before);
        walls.push(t.elapsed().as_secs_f64());
    }
    println!(
        "  one pass of both checks over {n} instances: wall {}; CPU {}",
        spread(walls, "s"),
        spread(cpus, "s")
    );
    for interval in ["off", "10s"] {
        let serve = Stopping(b.serve(interval));
        std::thread::sleep(Duration::from_secs(5));
        let pid = serve.0.id();
        let c0 = cpu_seconds(pid);
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(60));
        let used = cpu_seconds(pid) - c0;
        let pct = 100.0 * used / t0.elapsed().as_secs_f64();
        println!(
            "  serve with --check-interval {interval}, {n} instances running: {used:.2} CPU s in 60 s ({pct:.2} % of a core)"
        );
    }
}

fn main() {
    let n: usize = std::env::var("HEALTH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let repeat: usize = std::env::var("HEALTH_REPEAT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let b = Bench::new();
    let work = tempfile::tempdir().unwrap();
    let img = b.image();
    println!(
        "status checks, recovery and rules (backend {})",
        b.json(&["host-info"])["backend_m1"]
    );
    detection_and_recovery(&b, &img, repeat);
    event_to_runbook(&b, work.path(), 10);
    check_cost(&b, &img, n);
}
