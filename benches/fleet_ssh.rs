//! A fleet command over SSH on 10 instances (QEMU backend here;
//! accelerator chosen by probing): 10 m1.small instances from one image,
//! all launched before any is waited for so they boot together; launch to
//! the first SSH command that succeeds on each (`drydock ssh`, host key
//! pinned from the console); then the bundled `run-command` runbook with
//! `--targets` on the 10 (`uname -n`), all at once and one at a time: the
//! fleet's wall time and each target's child execution; and, with a copy
//! of its step that times `ssh::connect` apart from `exec`, how much of a
//! target's time is the SSH connect (TCP, handshake, host key check,
//! public key authentication).
//!
//! Run with `cargo bench --profile dev --bench fleet_ssh` as root
//! (instance networks need CAP_NET_ADMIN). `FLEET_SSH_N` changes the
//! number of instances (default 10), `FLEET_SSH_REPEAT` how many times
//! each fleet run is repeated on them (default 5). Every instance is terminated at the
//! end, also when the bench fails.

#[path = "support/mod.rs"]
mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::Bench;

const PW: &str = "bench-pw";
const COMMAND: &str = "uname -n";
/// Launch to SSH-ready, for all of them.
const READY_LIMIT: Duration = Duration::from_secs(900);

/// run-command's step, timing the connect apart from the command.
const TIMED_RUNBOOK: &str = r#"
runbook(#{
    name: "run-command-timed",
    description: "run-command's SSH step, with the connect and the command timed apart",
    params: #{
        instance: #{ type: "instance", description: "the running instance" },
        command: #{ type: "string", description: "the shell command" },
        key: #{ type: "string", description: "a private key file on the host" },
    },
});
let r = step("run it over SSH", #{ timeout: "5m", attempts: 1 }, || {
    let t = timestamp();
    let h = ssh::connect(params.instance, #{ user: "root", key: params.key, connect_timeout: "30s" });
    let connect_s = t.elapsed;
    let t = timestamp();
    let out = h.exec(params.command);
    #{ connect_s: connect_s, exec_s: t.elapsed, exit_code: out.exit_code, stdout: out.stdout }
});
if r.exit_code != 0 { throw `exit ${r.exit_code}`; }
r
"#;

/// The launched instances, terminated when dropped (also on a panic).
struct Instances<'a> {
    b: &'a Bench,
    ids: Vec<String>,
}

impl Drop for Instances<'_> {
    fn drop(&mut self) {
        for id in &self.ids {
            let out = self.b.run(&["instance", "terminate", id]);
            if !out.status.success() {
                eprintln!(
                    "terminate {id}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
    }
}

/// min / median / max, in seconds.
fn spread(mut v: Vec<f64>) -> String {
    if v.is_empty() {
        return "-".into();
    }
    v.sort_by(|a, b| a.total_cmp(b));
    format!(
        "min {:.2} s, median {:.2} s, max {:.2} s (of {})",
        v[0],
        v[v.len() / 2],
        v[v.len() - 1],
        v.len()
    )
}

/// One target's child execution.
struct Kid {
    /// Its start to its end, in seconds.
    total: f64,
    /// Its SSH step's start to end, in seconds.
    step: Option<f64>,
    output: serde_json::Value,
}

/// Each target's child execution, from the fleet's parent.
fn children(b: &Bench, parent: &str) -> Vec<Kid> {
    let view = b.json(&["executions", "show", parent]);
    let mut out = Vec::new();
    for t in view["output"]["targets"]
        .as_array()
        .or_else(|| view["execution"]["output"]["targets"].as_array())
        .cloned()
        .unwrap_or_default()
    {
        let Some(child) = t["execution_id"].as_str() else {
            continue;
        };
        let c = b.json(&["executions", "show", child]);
        let e = &c["execution"];
        let step = c["steps"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == "run it over SSH"))
            .and_then(|s| {
                Some((s["ended_at"].as_i64()? - s["started_at"].as_i64()?) as f64 / 1000.0)
            });
        if let (Some(s), Some(end)) = (e["started_at"].as_i64(), e["ended_at"].as_i64()) {
            out.push(Kid {
                total: (end - s) as f64 / 1000.0,
                step,
                output: e["output"].clone(),
            });
        }
    }
    out
}

/// `drydock run RUNBOOK --targets IDS` at `conc` at once: (wall seconds,
/// the outcome).
fn fleet_run(
    b: &Bench,
    runbook: &str,
    ids: &[String],
    conc: usize,
    key: &str,
) -> (f64, serde_json::Value) {
    let targets = ids.join(",");
    let conc = conc.to_string();
    let command = format!("command={COMMAND}");
    let key = format!("key={key}");
    let started = Instant::now();
    let out = b.run(&[
        "--json",
        "run",
        runbook,
        "--targets",
        &targets,
        "--max-concurrency",
        &conc,
        "--max-errors",
        "100%",
        "-p",
        &command,
        "-p",
        &key,
    ]);
    let wall = started.elapsed().as_secs_f64();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    if !out.status.success() {
        eprintln!(
            "  {runbook} at {conc} at once: exit {:?}: {}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim(),
            v["output"]
        );
    }
    (wall, v)
}

fn main() {
    let n: usize = std::env::var("FLEET_SSH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let repeat: usize = std::env::var("FLEET_SSH_REPEAT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let b = Bench::new();
    let work = tempfile::tempdir().unwrap();
    let key = work.path().join("key");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success());
    let key_s = key.display().to_string();
    let pubkey = format!("{key_s}.pub");
    let timed = work.path().join("run-command-timed.rhai");
    std::fs::write(&timed, TIMED_RUNBOOK).unwrap();
    let img = b.image();
    println!(
        "fleet command over SSH on {n} m1.small instances (backend {})",
        b.json(&["host-info"])["backend_m1"]
    );

    // Launch them all, then wait.
    let mut fleet = Instances {
        b: &b,
        ids: Vec::new(),
    };
    let t0 = Instant::now();
    let mut launched_at = Vec::new();
    for _ in 0..n {
        let started = t0.elapsed().as_secs_f64();
        let v = b.json(&[
            "instance",
            "launch",
            "--image",
            &img,
            "--type",
            "m1.small",
            "--root-password",
            PW,
            "--ssh-key",
            &pubkey,
            "--tag",
            "fleet=bench",
        ]);
        fleet.ids.push(v["id"].as_str().unwrap().to_string());
        launched_at.push(started);
    }
    let all_launched = t0.elapsed().as_secs_f64();
    println!(
        "  {n} launches returned after {all_launched:.1} s (each {:.2} s on average)",
        all_launched / n as f64
    );

    // Every instance not ready yet is tried at once, then again.
    let mut ready: Vec<Option<f64>> = vec![None; n];
    let mut last_err = vec![String::new(); n];
    while ready.iter().any(Option::is_none) && t0.elapsed() < READY_LIMIT {
        let tries: Vec<(usize, Child)> = (0..n)
            .filter(|&i| ready[i].is_none())
            .map(|i| {
                let child = b
                    .cmd(&["ssh", &fleet.ids[i], "-i", &key_s, "--", "true"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                (i, child)
            })
            .collect();
        for (i, child) in tries {
            let out = child.wait_with_output().unwrap();
            if out.status.success() {
                ready[i] = Some(t0.elapsed().as_secs_f64());
            } else {
                last_err[i] = String::from_utf8_lossy(&out.stderr).trim().to_string();
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    for (i, r) in ready.iter().enumerate() {
        if r.is_none() {
            println!(
                "  {} not SSH-ready after {} s: {}",
                fleet.ids[i],
                READY_LIMIT.as_secs(),
                last_err[i]
            );
        }
    }
    let ups: Vec<f64> = ready
        .iter()
        .zip(&launched_at)
        .filter_map(|(r, l)| Some(r.as_ref()? - l))
        .collect();
    let last = ready.iter().flatten().fold(0.0f64, |a, &b| a.max(b));
    println!("  first launch -> all {} SSH-ready: {last:.1} s", ups.len());
    println!("  each one's launch -> SSH-ready: {}", spread(ups));
    let ids: Vec<String> = fleet
        .ids
        .iter()
        .zip(&ready)
        .filter(|(_, r)| r.is_some())
        .map(|(id, _)| id.clone())
        .collect();
    assert!(!ids.is_empty(), "no instance answered SSH");

    let timed = timed.to_str().unwrap();
    for (runbook, label) in [("run-command", "run-command"), (timed, "timed copy")] {
        for conc in [ids.len(), 1] {
            let mut walls = Vec::new();
            let mut kids = Vec::new();
            let (mut ok, mut named) = (0, 0);
            for _ in 0..repeat {
                let (wall, v) = fleet_run(&b, runbook, &ids, conc, &key_s);
                walls.push(wall);
                ok += v["output"]["succeeded"].as_u64().unwrap_or(0);
                let parent = v["execution_id"].as_str().unwrap_or_default().to_string();
                let these = children(&b, &parent);
                named += these
                    .iter()
                    .filter(|k| {
                        k.output["stdout"]
                            .as_str()
                            .is_some_and(|s| !s.trim().is_empty())
                    })
                    .count();
                kids.extend(these);
            }
            println!(
                "  {label} `{COMMAND}` on {} at {conc} at once, {repeat} runs: {ok} of {} targets succeeded, {named} printed a name",
                ids.len(),
                ids.len() * repeat,
            );
            println!(
                "    wall (drydock run, process start to exit): {}",
                spread(walls)
            );
            println!(
                "    per target (child execution): {}",
                spread(kids.iter().map(|k| k.total).collect())
            );
            println!(
                "    of which its SSH step: {}",
                spread(kids.iter().filter_map(|k| k.step).collect())
            );
            let connect: Vec<f64> = kids
                .iter()
                .filter_map(|k| k.output["connect_s"].as_f64())
                .collect();
            if connect.is_empty() {
                continue;
            }
            let exec: Vec<f64> = kids
                .iter()
                .filter_map(|k| k.output["exec_s"].as_f64())
                .collect();
            let total: f64 = kids.iter().map(|k| k.total).sum();
            let steps: f64 = kids.iter().filter_map(|k| k.step).sum();
            let c: f64 = connect.iter().sum();
            println!("    ssh::connect: {}", spread(connect));
            println!("    exec `{COMMAND}`: {}", spread(exec));
            println!(
                "    connect / SSH step: {:.0} %, connect / per-target time: {:.0} %",
                100.0 * c / steps.max(1e-9),
                100.0 * c / total.max(1e-9)
            );
        }
    }
    drop(fleet);
}
