//! Power-loss soak (issue 20): every bundled host runbook, on a real guest
//! broken by its fault, cut off by host outages at random moments — every
//! process of the data directory (runners, supervisors, VMMs) stopped at
//! the same instant, as when the host loses power — each followed by
//! `drydock host recover`, which resumes it. Each run must end Success with
//! nothing orphaned: no stray rescue/helper/drill instance, no volume left
//! unattached or attached elsewhere, no image or snapshot the runbook made
//! and does not name in its output, nothing in `leftovers`, and the
//! instance running.
//!
//! Prints per runbook: outages survived / tried and the time from the last
//! restart (`host recover`) to Success. Then the time `host recover`
//! takes for 10 instances cut off at once.
//!
//! Run with `cargo bench --bench power_loss_soak` (QEMU, like the tests).
//! Knobs (environment):
//!   SOAK_OUTAGES=N       outages per runbook (default 20)
//!   SOAK_PER_RUN=K       outages at most per run (default 2; a run
//!                        ending earlier takes fewer)
//!   SOAK_SEED=S          the random moments (printed; replays a soak)
//!   SOAK_RUNBOOKS=a,b    only these cases (names as printed)
//!   SOAK_RECOVER_COUNT=M instances for the `host recover` figure (10;
//!                        0 skips it)

#[path = "../tests/common/power.rs"]
mod power;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const REGIONS: [&str; 2] = ["region-a", "region-b"];

struct Dd {
    data: tempfile::TempDir,
    cache: PathBuf,
}

impl Drop for Dd {
    /// No guest or runner outlives the soak.
    fn drop(&mut self) {
        power_loss(self.data.path());
    }
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_drydock")
}

impl Dd {
    fn new(cache: &Path) -> Self {
        Self {
            data: tempfile::tempdir().unwrap(),
            cache: cache.to_path_buf(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.arg("--json")
            .arg("--data-dir")
            .arg(self.data.path())
            .args(args)
            .env("DRYDOCK_IMAGE_CACHE", &self.cache)
            .env("DRYDOCK_BIN", bin())
            .env("SOAK_PW", "soak")
            .stdin(Stdio::null());
        c
    }

    fn try_json(&self, args: &[&str]) -> Result<Value, String> {
        let out = self.command(args).output().unwrap();
        if !out.status.success() {
            return Err(format!(
                "drydock {args:?} exited {:?}: {}{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            ));
        }
        Ok(serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
    }

    fn json(&self, args: &[&str]) -> Value {
        self.try_json(args).unwrap_or_else(|e| panic!("{e}"))
    }

    fn list(&self, region: &str, what: &str) -> Vec<Value> {
        self.json(&["--region", region, what])[what]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn console_has(&self, region: &str, id: &str, text: &str) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let v = self
                .try_json(&["--region", region, "console-output", id])
                .unwrap_or_default();
            if v["output"].as_str().unwrap_or("").contains(text) {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(300) {
                return Err(format!("{id}: no {text:?} on the console in 5 minutes"));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// A running instance of `image` (`extra` launch options), broken by
    /// `fault` (empty: healthy), showing `symptom` on its console.
    fn broken(&self, image: &str, extra: &[&str], fault: &[&str], symptom: &str) -> String {
        let mut args = vec![
            "--region",
            "region-a",
            "instance",
            "launch",
            "--image",
            image,
            "--root-password",
            "soak",
            "--allow-faults",
        ];
        args.extend_from_slice(extra);
        let id = self.json(&args)["id"].as_str().unwrap().to_string();
        self.console_has("region-a", &id, "login:").unwrap();
        if !fault.is_empty() {
            self.json(&["--region", "region-a", "instance", "stop", &id]);
            let mut args = vec!["--region", "region-a", "fault", "inject", &id];
            args.extend_from_slice(fault);
            self.json(&args);
            self.json(&["--region", "region-a", "instance", "start", &id]);
        }
        self.console_has("region-a", &id, symptom).unwrap();
        // The boot prints on for a moment after its login prompt: a login
        // typed into that can answer a prompt already gone.
        std::thread::sleep(Duration::from_secs(3));
        id
    }

    fn state(&self, execution: &str) -> String {
        self.try_json(&["executions", "show", execution])
            .map(|v| v["execution"]["state"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    }
}

/// Every process whose command line names `data` (runners, supervisors,
/// VMMs), stopped at once (SIGSTOP to all) then killed (SIGKILL to all);
/// how many there were.
fn power_loss(data: &Path) -> usize {
    let pids = power::processes_naming(data);
    power::stop_and_kill(&pids, Duration::from_secs(30));
    pids.len()
}

/// xorshift64: the random moments, reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// One bundled runbook's case.
struct Case {
    name: &'static str,
    /// Outages are drawn between 0.1 s and this long after the run (or
    /// the last recovery) started: about the runbook's wall time (made
    /// shorter when a run ends before its first outage).
    window_ms: u64,
}

const CASES: &[Case] = &[
    Case {
        name: "recover-boot-prompt",
        window_ms: 14_000,
    },
    Case {
        name: "free-disk-space",
        window_ms: 7_000,
    },
    Case {
        name: "start-service",
        window_ms: 5_000,
    },
    Case {
        name: "reset-access",
        window_ms: 28_000,
    },
    Case {
        name: "rescue-root-volume",
        window_ms: 26_000,
    },
    Case {
        name: "repair-root-volume",
        window_ms: 20_000,
    },
    Case {
        name: "upgrade-drivers-online",
        window_ms: 22_000,
    },
    Case {
        name: "upgrade-drivers-offline",
        window_ms: 35_000,
    },
    Case {
        name: "migrate-instance-type",
        window_ms: 18_000,
    },
    Case {
        name: "dr-drill",
        window_ms: 14_000,
    },
];

/// Sets up a case; returns (runbook, parameters, target instance, the
/// instances a person owns that may stay stopped after an outage).
fn setup(dd: &Dd, images: &Images, case: &str) -> (String, Vec<String>, String, Vec<String>) {
    let pw = "password=env:SOAK_PW".to_string();
    let m1 = ["--type", "m1.small"];
    let (runbook, target, mut params, others) = match case {
        "recover-boot-prompt" => {
            let id = dd.broken(
                &images.base,
                &m1,
                &["fstab-missing-disk"],
                "Press S to skip mounting",
            );
            ("recover-boot-prompt", id, vec![pw], vec![])
        }
        "free-disk-space" => {
            let id = dd.broken(&images.base, &m1, &["disk-full"], "login:");
            ("free-disk-space", id, vec![pw], vec![])
        }
        "start-service" => {
            let id = dd.broken(
                &images.base,
                &m1,
                &["stop-service", "syslogd"],
                "service syslogd is disabled",
            );
            (
                "start-service",
                id,
                vec![pw, "service=syslogd".into()],
                vec![],
            )
        }
        "reset-access" => {
            let id = dd.broken(&images.base, &m1, &["lost-password"], "login:");
            (
                "reset-access",
                id,
                vec!["new_password=env:SOAK_PW".into()],
                vec![],
            )
        }
        "rescue-root-volume" => {
            let id = dd.broken(&images.base, &m1, &["bad-init"], "has no /sbin/init");
            let fix =
                "fix=[ ! -e sbin/init.drydock-fault ] || mv sbin/init.drydock-fault sbin/init"
                    .to_string();
            ("rescue-root-volume", id, vec![pw, fix], vec![])
        }
        "repair-root-volume" => {
            let rescue = dd.broken(&images.base, &["--type", "n2.small"], &[], "login:");
            let id = dd.broken(&images.base, &m1, &["bad-init"], "has no /sbin/init");
            let p = vec![
                "password=soak".to_string(),
                format!("rescue={rescue}"),
                "fix=[ ! -e sbin/init.drydock-fault ] || mv sbin/init.drydock-fault sbin/init"
                    .to_string(),
            ];
            ("repair-root-volume", id, p, vec![rescue])
        }
        "upgrade-drivers-online" => {
            let id = dd.broken(&images.mmio, &m1, &[], "login:");
            (
                "upgrade-drivers",
                id,
                vec![pw, "target_type=n2.small".into()],
                vec![],
            )
        }
        "upgrade-drivers-offline" => {
            let id = dd.broken(
                &images.base,
                &m1,
                &["missing-driver"],
                "did not appear after 5s",
            );
            let p = vec![
                pw,
                "target_type=m1.small".into(),
                "allow_offline=true".into(),
            ];
            ("upgrade-drivers", id, p, vec![])
        }
        "migrate-instance-type" => {
            // An image with the n2 drivers: the pre-checks pass.
            let id = dd.broken(&images.base, &m1, &[], "login:");
            (
                "migrate-instance-type",
                id,
                vec![pw, "target_type=n2.small".into()],
                vec![],
            )
        }
        "dr-drill" => {
            let id = dd.broken(&images.base, &m1, &[], "login:");
            let p = vec![
                pw,
                format!("instances=[\"{id}\"]"),
                "target_region=region-b".into(),
            ];
            ("dr-drill", id, p, vec![])
        }
        other => panic!("no case {other}"),
    };
    params.insert(0, format!("instance={target}"));
    if runbook == "dr-drill" {
        params.remove(0);
    }
    (runbook.to_string(), params, target, others)
}

struct Images {
    base: String,
    mmio: String,
}

/// What a region holds, by id.
fn ids(v: &[Value]) -> Vec<String> {
    v.iter()
        .filter_map(|x| x["id"].as_str().map(str::to_string))
        .collect()
}

/// One run: start the runbook, cut the power up to `per_run` times, let
/// the last recovery finish it, check the outcome. Returns (outages,
/// Ok(time from the last restart to the end) or the reason it failed).
fn one_run(
    dd: &Dd,
    images: &Images,
    case: &Case,
    window_ms: u64,
    rng: &mut Rng,
    per_run: usize,
) -> (usize, Result<Duration, String>) {
    let (runbook, params, target, others) = setup(dd, images, case.name);
    let before: Vec<(String, Vec<String>, Vec<String>)> = REGIONS
        .iter()
        .map(|r| {
            (
                r.to_string(),
                ids(&dd.list(r, "images")),
                ids(&dd.list(r, "snapshots")),
            )
        })
        .collect();
    let mut args = vec!["--region", "region-a", "run", &runbook, "--detach"];
    for p in &params {
        args.push("-p");
        args.push(p);
    }
    let started = dd.json(&args);
    let execution = started["execution_id"].as_str().unwrap().to_string();
    let mut outages = 0;
    let mut restart = Instant::now();
    while outages < per_run {
        let wait = Duration::from_millis(100 + rng.next() % window_ms);
        std::thread::sleep(wait);
        let state = dd.state(&execution);
        if state != "InProgress" && state != "Pending" && state != "WaitingForApproval" {
            break;
        }
        let step = dd
            .try_json(&["executions", "show", &execution])
            .unwrap_or_default()["steps"]
            .as_array()
            .and_then(|s| s.last().cloned())
            .unwrap_or_default();
        let killed = power_loss(dd.data.path());
        outages += 1;
        restart = Instant::now();
        eprintln!(
            "  {}: outage {outages} after {:.1} s in step {} ({} processes)",
            case.name,
            wait.as_secs_f64(),
            step["name"],
            killed
        );
        let r = match dd.try_json(&["host", "recover"]) {
            Ok(r) => r,
            Err(e) => return (outages, Err(format!("host recover failed: {e}"))),
        };
        let resumed = r["executions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["id"] == execution.as_str() && e["outcome"] == "resumed");
        if !resumed {
            return (
                outages,
                Err(format!("host recover did not resume {execution}: {r}")),
            );
        }
    }
    let end = loop {
        let state = dd.state(&execution);
        if state != "InProgress" && state != "Pending" && !state.is_empty() {
            break state;
        }
        if restart.elapsed() > Duration::from_secs(900) {
            return (
                outages,
                Err(format!(
                    "{execution} still {state} 15 minutes after the restart"
                )),
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let took = restart.elapsed();
    let shown = dd.json(&["executions", "show", &execution]);
    if end != "Success" {
        return (
            outages,
            Err(format!(
                "{execution} ended {end}: {}",
                shown["execution"]["error"]
            )),
        );
    }
    // Cleanups and the last journal writes settle just after the state.
    std::thread::sleep(Duration::from_secs(1));
    let output = shown["execution"]["output"].to_string();
    let mut problems = Vec::new();
    for (region, images_before, snaps_before) in &before {
        let listing = dd.json(&["--region", region, "instances"]);
        if listing["leftovers"]
            .as_array()
            .is_some_and(|l| !l.is_empty())
        {
            problems.push(format!("leftovers in {region}: {}", listing["leftovers"]));
        }
        let live: Vec<&Value> = listing["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i["state"] != "terminated")
            .collect();
        for i in &live {
            let id = i["id"].as_str().unwrap_or("");
            if id != target && !others.iter().any(|o| o == id) {
                problems.push(format!("stray instance {id} ({}) in {region}", i["state"]));
            }
        }
        let live_ids: Vec<&str> = live.iter().filter_map(|i| i["id"].as_str()).collect();
        for v in dd.list(region, "volumes") {
            match v["attached_to"].as_str() {
                Some(to) if live_ids.contains(&to) => {}
                other => problems.push(format!(
                    "volume {} in {region} attached to {other:?}",
                    v["id"]
                )),
            }
        }
        for im in ids(&dd.list(region, "images")) {
            if !images_before.contains(&im) && !output.contains(&im) {
                problems.push(format!("image {im} left in {region}"));
            }
        }
        for s in ids(&dd.list(region, "snapshots")) {
            if !snaps_before.contains(&s) {
                problems.push(format!("snapshot {s} left in {region}"));
            }
        }
    }
    let t = dd
        .list("region-a", "instances")
        .into_iter()
        .find(|i| i["id"] == target.as_str())
        .unwrap_or_default();
    let root = t["root_volume"].as_str().unwrap_or("").to_string();
    // A drill promises nothing about its sources: one an outage stopped
    // after the drill had read it stays as its --after-host-failure
    // policy (stop) leaves it.
    let left_by_policy = case.name == "dr-drill"
        && t["state"] == "stopped"
        && t["state_reason"]
            .as_str()
            .is_some_and(|r| r.contains("found by reconcile"));
    if t["state"] != "running" && !left_by_policy {
        problems.push(format!(
            "{target} is {} ({})",
            t["state"], t["state_reason"]
        ));
    }
    let root_ok = dd.list("region-a", "volumes").iter().any(|v| {
        v["id"] == root.as_str() && v["attached_to"] == target.as_str() && v["attach_index"] == 0
    });
    if !root_ok {
        problems.push(format!("{root} is not the root volume of {target}"));
    }
    if problems.is_empty() {
        (outages, Ok(took))
    } else {
        (
            outages,
            Err(format!("{execution}: {}", problems.join("; "))),
        )
    }
}

fn env_num(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn main() {
    // cargo bench passes --bench; nothing else is taken from the command line.
    let cache = std::env::var_os("DRYDOCK_IMAGE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-images"));
    let outages_wanted = env_num("SOAK_OUTAGES", 20) as usize;
    let per_run = env_num("SOAK_PER_RUN", 2).max(1) as usize;
    let seed = env_num(
        "SOAK_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    let only: Vec<String> = std::env::var("SOAK_RUNBOOKS")
        .map(|s| s.split(',').map(|x| x.trim().to_string()).collect())
        .unwrap_or_default();
    println!(
        "power-loss soak: {outages_wanted} outages per runbook, at most {per_run} per run, SOAK_SEED={seed}"
    );
    let mut rng = Rng(seed | 1);
    let mut rows = Vec::new();
    for case in CASES {
        if !only.is_empty() && !only.iter().any(|o| o == case.name) {
            continue;
        }
        let mut tried = 0;
        let mut survived = 0;
        let mut runs = 0;
        let mut times = Vec::new();
        let mut failures = Vec::new();
        let mut window_ms = case.window_ms;
        while tried < outages_wanted && runs < outages_wanted * 2 {
            runs += 1;
            // A fresh data directory per run: nothing of one run is
            // counted against the next.
            let dd = Dd::new(&cache);
            let images = Images {
                base: dd.json(&["--region", "region-a", "image", "build"])["image"]["id"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                mmio: if case.name == "upgrade-drivers-online" {
                    dd.json(&[
                        "--region",
                        "region-a",
                        "image",
                        "build",
                        "--name",
                        "mmio-only",
                        "--drivers",
                        "virtio_mmio,virtio_blk",
                    ])["image"]["id"]
                        .as_str()
                        .unwrap()
                        .to_string()
                } else {
                    String::new()
                },
            };
            let left = (outages_wanted - tried).min(per_run);
            let (n, result) = one_run(&dd, &images, case, window_ms, &mut rng, left);
            tried += n;
            match result {
                Ok(t) => {
                    survived += n;
                    if n > 0 {
                        times.push(t.as_secs_f64());
                    } else {
                        // It ended before the first outage: draw the
                        // moments within the time it took.
                        window_ms = (t.as_millis() as u64 * 7 / 10).max(300);
                    }
                    eprintln!(
                        "  {}: run {runs}: {n} outages, Success {:.1} s after the restart",
                        case.name,
                        t.as_secs_f64()
                    );
                }
                Err(e) => {
                    eprintln!("  {}: run {runs}: {n} outages, FAILED: {e}", case.name);
                    failures.push(e);
                    if n == 0 {
                        // Failed with no outage at all: not the soak's finding.
                        break;
                    }
                }
            }
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let median = times.get(times.len() / 2).copied();
        let max = times.last().copied();
        let row = format!(
            "{:<26} {:>3} / {:<3} {:>10} {:>10}",
            case.name,
            survived,
            tried,
            median.map(|m| format!("{m:.1} s")).unwrap_or("-".into()),
            max.map(|m| format!("{m:.1} s")).unwrap_or("-".into()),
        );
        println!("{row}");
        for f in &failures {
            println!("    failed: {f}");
        }
        rows.push(row);
    }
    println!(
        "\n{:<26} {:>9} {:>10} {:>10}",
        "runbook", "survived", "median", "max"
    );
    println!(
        "{:<26} {:>9} {:>10} {:>10}",
        "", "/ tried", "restart to Success", ""
    );
    for r in &rows {
        println!("{r}");
    }
    let count = env_num("SOAK_RECOVER_COUNT", 10) as usize;
    if count > 0 {
        recover_time(&cache, count);
    }
}

/// The time `drydock host recover` takes after an outage cut off `count`
/// instances (half launched with `--after-host-failure start`, which it
/// starts again; half left stopped).
fn recover_time(cache: &Path, count: usize) {
    let dd = Dd::new(cache);
    let image = dd.json(&["--region", "region-a", "image", "build"])["image"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut ids = Vec::new();
    for n in 0..count {
        let policy = if n % 2 == 0 { "start" } else { "stop" };
        let id = dd.json(&[
            "--region",
            "region-a",
            "instance",
            "launch",
            "--image",
            &image,
            "--type",
            "m1.small",
            "--after-host-failure",
            policy,
        ])["id"]
            .as_str()
            .unwrap()
            .to_string();
        ids.push(id);
    }
    for id in &ids {
        dd.console_has("region-a", id, "login:").unwrap();
    }
    let killed = power_loss(dd.data.path());
    let start = Instant::now();
    let r = dd.json(&["host", "recover"]);
    let took = start.elapsed();
    let started = r["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["outcome"] == "started")
        .count();
    println!(
        "\nhost recover after an outage of {count} running instances ({killed} processes killed): {:.2} s ({started} started again, {} left stopped)",
        took.as_secs_f64(),
        r["instances"].as_array().map_or(0, |a| a.len()) - started
    );
    let start = Instant::now();
    dd.json(&["host", "recover"]);
    println!(
        "host recover with nothing to do ({count} instances, {started} running): {:.2} s",
        start.elapsed().as_secs_f64()
    );
}
