//! How many instances drydock drives at once on this machine through a
//! fleet run, and where it saturates. For each fleet size N (default 1, 2,
//! 4, 6; `FLEET_SIZES=1,2,4,8` to choose), N instances are launched and
//! stopped beforehand (not timed); then one `drydock run --targets
//! tag:… --max-concurrency N` drives them all at once, each target:
//! start the instance, log in over the serial console, run a command,
//! stop it. Printed per N: wall time, targets per minute, the slowest
//! target, and how busy the machine's CPUs were during the run.
//!
//! Run with `cargo bench --bench fleet_saturation` (needs QEMU and apt,
//! like the tests: `scripts/setup` installs them). Takes minutes.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const DRIVE: &str = r#"
runbook(#{ name: "drive", params: #{ instance: #{ type: "instance" } } });
step("start", #{ timeout: "5m" }, || instance::start(params.instance).state);
let kernel = step("command on the console", #{ timeout: "5m" }, || {
    let c = console::open(params.instance);
    c.login("root", "bench");
    c.run("uname -r", "2m").stdout
});
step("stop", #{ timeout: "5m" }, || instance::stop(params.instance).state);
kernel
"#;

struct Bench {
    data: tempfile::TempDir,
    runbooks: PathBuf,
    cache: PathBuf,
}

impl Bench {
    fn drydock(&self, args: &[&str]) -> serde_json::Value {
        let out = Command::new(env!("CARGO_BIN_EXE_drydock"))
            .arg("--json")
            .arg("--data-dir")
            .arg(self.data.path())
            .arg("--runbook-dir")
            .arg(&self.runbooks)
            .args(args)
            .env("DRYDOCK_IMAGE_CACHE", &self.cache)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    fn wait_state(&self, id: &str, state: &str) {
        let start = Instant::now();
        loop {
            let list = self.drydock(&["instances"]);
            let now = list["instances"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["id"] == id)
                .map(|i| i["state"].as_str().unwrap_or("").to_string())
                .unwrap_or_default();
            if now == state {
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(300), "{id}: {now}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// (busy, total) CPU jiffies of the whole machine.
fn cpu_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = stat.lines().next().unwrap_or_default();
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

fn main() {
    let sizes: Vec<usize> = std::env::var("FLEET_SIZES")
        .unwrap_or_else(|_| "1,2,4,6".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|&n| n > 0)
        .collect();
    let data = tempfile::tempdir().unwrap();
    let runbooks = data.path().join("bench-runbooks");
    std::fs::create_dir_all(&runbooks).unwrap();
    std::fs::write(runbooks.join("drive.rhai"), DRIVE).unwrap();
    let b = Bench {
        data,
        runbooks,
        cache: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-images"),
    };
    let image = b.drydock(&["image", "build"])["image"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "fleet run: start, console login + command, stop per target, all at once ({cores} CPUs, accelerator {:?})",
        drydock_host::backend::choose_accel()
    );
    println!(
        "{:>6} {:>10} {:>16} {:>16} {:>10}",
        "N", "wall", "targets/min", "slowest target", "CPU busy"
    );
    for n in sizes {
        let tag = format!("fleet=n{n}");
        let mut ids = Vec::new();
        for _ in 0..n {
            let id = b.drydock(&[
                "instance",
                "launch",
                "--image",
                &image,
                "--type",
                "m1.small",
                "--root-password",
                "bench",
            ])["id"]
                .as_str()
                .unwrap()
                .to_string();
            b.drydock(&["tag", &id, &tag]);
            ids.push(id);
        }
        for id in &ids {
            b.wait_state(id, "running");
            b.drydock(&["instance", "stop", id]);
        }
        let (busy0, total0) = cpu_jiffies();
        let start = Instant::now();
        let v = b.drydock(&[
            "run",
            "drive",
            "--targets",
            &format!("tag:{tag}"),
            "--max-concurrency",
            &n.to_string(),
        ]);
        let wall = start.elapsed();
        let (busy1, total1) = cpu_jiffies();
        let targets = v["output"]["targets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let ok = targets
            .iter()
            .filter(|t| t["outcome"] == "succeeded")
            .count();
        assert_eq!(ok, n, "every target succeeds: {v}");
        // The slowest child, from the journal.
        let mut slowest = Duration::ZERO;
        for t in &targets {
            if let Some(child) = t["execution_id"].as_str() {
                let e = b.drydock(&["executions", "show", child]);
                let (Some(s), Some(f)) = (
                    e["execution"]["started_at"].as_i64(),
                    e["execution"]["ended_at"].as_i64(),
                ) else {
                    continue;
                };
                slowest = slowest.max(Duration::from_millis((f - s).max(0) as u64));
            }
        }
        let busy = (busy1 - busy0) as f64 / (total1 - total0).max(1) as f64;
        println!(
            "{:>6} {:>8.1} s {:>16.1} {:>14.1} s {:>9.0}%",
            n,
            wall.as_secs_f64(),
            n as f64 * 60.0 / wall.as_secs_f64(),
            slowest.as_secs_f64(),
            busy * 100.0
        );
        for id in &ids {
            b.drydock(&["instance", "terminate", id]);
        }
    }
}
