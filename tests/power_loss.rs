//! The host loses power (issue 20): every process of the data directory —
//! runners, supervisors, VMMs — killed at the same instant, then
//! `drydock host recover` as an operator (or a boot unit) would run it.
//! Data a guest synced survives; instances come back by their
//! `--after-host-failure` policy; a runbook cut off at random moments
//! resumes and finishes with nothing orphaned.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::scenario::Scenario;
use common::*;
use serde_json::Value;

const R: &str = "region-a";

fn recover(dd: &Drydock, extra: &[&str]) -> Value {
    let mut args = vec!["--json", "host", "recover"];
    args.extend_from_slice(extra);
    let out = dd
        .command(&args)
        .env("DRYDOCK_BIN", bin())
        .output()
        .unwrap();
    assert_code(&out, 0);
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn synced_guest_data_survives_and_instances_come_back_by_their_policy() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    let img = dd.image(R);
    let back = dd.launch(
        R,
        &img,
        &["--root-password", "pw", "--after-host-failure", "start"],
    );
    let stays = dd.launch(R, &img, &[]);
    let out = dd.console_run(
        R,
        &back,
        "pw",
        "echo flushed-before-the-outage > /root/DATA; sync; cat /root/DATA",
    );
    assert_stdout(&out, 0, &["flushed-before-the-outage"]);

    assert!(dd.power_loss() >= 2, "runners, supervisors and VMMs died");
    let r = recover(&dd, &[]);
    let found: Vec<&Value> = r["instances"].as_array().unwrap().iter().collect();
    assert_eq!(found.len(), 2, "{r}");
    let of = |id: &str| found.iter().find(|i| i["id"] == id).cloned().unwrap();
    assert_eq!(of(&back)["outcome"], "started", "{r}");
    assert_eq!(of(&back)["after_host_failure"], "start", "{r}");
    assert!(
        of(&stays)["outcome"]
            .as_str()
            .unwrap()
            .starts_with("left stopped"),
        "{r}"
    );
    assert_eq!(dd.instance(R, &back)["state"], "running");
    let s = dd.instance(R, &stays);
    assert_eq!(s["state"], "stopped", "{s}");
    assert!(
        s["state_reason"].as_str().unwrap().contains("reconcile"),
        "{s}"
    );
    let out = dd.console_run(R, &back, "pw", "cat /root/DATA");
    assert_stdout(&out, 0, &["flushed-before-the-outage"]);
    // A second recovery finds nothing new to start.
    let r = recover(&dd, &[]);
    assert!(
        r["instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["id"] != back.as_str()),
        "{r}"
    );
}

/// rescue-root-volume with a launched rescue instance, cut off by power
/// losses at random moments (seeded; `POWER_LOSS_SEED=A,B` replays), each
/// followed by `drydock host recover`, which resumes it; it ends Success
/// with the instance running, its root volume back, one rescue instance
/// launched and terminated, nothing left over.
#[test]
fn a_rescue_survives_power_losses_at_random_moments() {
    let _vm = vm_lock();
    for seed in kill_seeds("POWER_LOSS_SEED", &[333333333]) {
        rescue_through_outages(seed);
    }
}

fn rescue_through_outages(seed: u64) {
    eprintln!("POWER_LOSS_SEED={seed}");
    let mut next = xorshift(seed);
    let dd = Drydock::new();
    let id = Scenario::instance_with(&dd, &["--root-password", "pw"]);
    let root = dd.root_volume(R, &id);
    let p_instance = format!("instance={id}");
    let child = dd
        .command(&[
            "--region",
            R,
            "run",
            "rescue-root-volume",
            "-p",
            &p_instance,
            "-p",
            "password=env:DD_PW",
            "-p",
            "fix=echo fixed > root/FIXED",
            "-p",
            "verify=cat /root/FIXED",
            "--detach",
        ])
        .env("DD_PW", "pw")
        .env("DRYDOCK_BIN", bin())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_code(&child, 0);
    let execution = dd.only_execution_of("rescue-root-volume");
    // The password reaches resumed runs from the execution's sealed
    // parameters, not from this environment.
    let mut outages = 0;
    while outages < 2 {
        let wait = Duration::from_millis(500 + next() % 9_000);
        std::thread::sleep(wait);
        let state = dd.state(&execution);
        if state == "Success" || state == "Failed" {
            break;
        }
        let step = dd.show(&execution)["steps"]
            .as_array()
            .and_then(|s| s.last().cloned())
            .unwrap_or_default();
        let killed = dd.power_loss();
        outages += 1;
        eprintln!(
            "power loss after {wait:?} in step {:?} ({}): {killed} processes",
            step["name"], step["state"]
        );
        let r = recover(&dd, &[]);
        let resumed = r["executions"].as_array().unwrap();
        assert!(
            resumed
                .iter()
                .any(|e| e["id"] == execution.as_str() && e["outcome"] == "resumed"),
            "{r}"
        );
    }
    let start = Instant::now();
    loop {
        let state = dd.state(&execution);
        if state != "InProgress" && state != "Pending" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "still {state} after 5 minutes"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let shown = dd.show(&execution);
    assert_eq!(
        shown["execution"]["state"], "Success",
        "after {outages} outages: {shown}"
    );
    assert_eq!(
        shown["execution"]["output"]["verified"], "fixed\n",
        "{shown}"
    );
    if outages > 0 {
        let events = shown["events"].to_string();
        assert!(events.contains("host recovery"), "{events}");
    }
    let i = dd.instance(R, &id);
    assert_eq!(i["state"], "running", "{i}");
    let vols = dd.json(&["--region", R, "volumes"]);
    let v = vols["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == root.as_str())
        .cloned()
        .unwrap();
    assert_eq!(v["attached_to"], id.as_str(), "{v}");
    assert_eq!(v["attach_index"], 0, "{v}");
    let all = dd.instances(R);
    assert_eq!(all.len(), 2, "one rescue instance was launched: {all:?}");
    for r in all.iter().filter(|r| r["id"] != id.as_str()) {
        assert_eq!(r["state"], "terminated", "{r}");
    }
    let listing = dd.json(&["--region", R, "instances"]);
    assert_eq!(listing["leftovers"], serde_json::json!([]), "{listing}");
    // Only the instance's root volume is left (the rescue's went with it).
    assert_eq!(vols["volumes"].as_array().unwrap().len(), 1, "{vols}");
}

/// Runs a bundled runbook (detached) and cuts the power `outages` times at
/// random moments within `window_ms` of its start or of the last recovery,
/// each followed by `drydock host recover`; returns the execution shown
/// once it ended, and how many outages hit it while it ran.
fn through_outages(
    dd: &Drydock,
    runbook: &str,
    params: &[&str],
    outages: usize,
    window_ms: u64,
    next: &mut dyn FnMut() -> u64,
) -> (Value, usize) {
    let mut args = vec!["--region", R, "run", runbook, "--detach"];
    for p in params {
        args.push("-p");
        args.push(p);
    }
    let out = dd
        .command(&args)
        .env("DD_PW", "pw")
        .env("DRYDOCK_BIN", bin())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_code(&out, 0);
    let execution = dd.only_execution_of(runbook);
    let mut cut = 0;
    while cut < outages {
        let wait = Duration::from_millis(200 + next() % window_ms);
        std::thread::sleep(wait);
        let state = dd.state(&execution);
        if state != "InProgress" {
            break;
        }
        let step = dd.show(&execution)["steps"]
            .as_array()
            .and_then(|s| s.last().cloned())
            .unwrap_or_default();
        dd.power_loss();
        cut += 1;
        eprintln!(
            "{runbook}: power loss after {wait:?} in step {:?} ({})",
            step["name"], step["state"]
        );
        let r = recover(dd, &[]);
        assert!(
            r["executions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["id"] == execution.as_str() && e["outcome"] == "resumed"),
            "{r}"
        );
    }
    let start = Instant::now();
    while dd.state(&execution) == "InProgress" {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "{runbook} still running 5 minutes after the last recovery"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let shown = dd.show(&execution);
    assert_eq!(
        shown["execution"]["state"], "Success",
        "{runbook} after {cut} outages: {shown}"
    );
    (shown, cut)
}

/// Nothing orphaned: no leftovers, every instance but `keep` terminated,
/// every volume attached to a live instance (`id`'s root as its root), no
/// image but `images`.
fn nothing_orphaned(dd: &Drydock, id: &str, keep: &[&str], images: &[&str]) {
    let listing = dd.json(&["--region", R, "instances"]);
    assert_eq!(listing["leftovers"], serde_json::json!([]), "{listing}");
    for i in dd.instances(R) {
        let iid = i["id"].as_str().unwrap();
        if iid != id && !keep.contains(&iid) {
            assert_eq!(i["state"], "terminated", "a stray instance: {i}");
        }
    }
    let me = dd.instance(R, id);
    assert_eq!(me["state"], "running", "{me}");
    let vols = dd.json(&["--region", R, "volumes"]);
    for v in vols["volumes"].as_array().unwrap() {
        let to = v["attached_to"].as_str().unwrap_or("");
        assert!(to == id || keep.contains(&to), "a stray volume: {v}");
        if v["id"] == me["root_volume"] {
            assert_eq!(v["attach_index"], 0, "{v}");
        }
    }
    let imgs = dd.json(&["--region", R, "images"]);
    for i in imgs["images"].as_array().unwrap() {
        let iid = i["id"].as_str().unwrap();
        assert!(images.contains(&iid), "an image left over: {i}");
    }
    let snaps = dd.json(&["--region", R, "snapshots"]);
    assert_eq!(
        snaps["snapshots"].as_array().map_or(0, |s| s.len()),
        0,
        "{snaps}"
    );
}

/// One guest through three bundled runbooks, each cut off by a power loss
/// at a random moment (seeded; `POWER_LOSS_SEED=S` replays): a full disk
/// freed (free-disk-space), the n2 drivers installed over the console
/// (upgrade-drivers, online: driver volume attached, reboot) and the move
/// to n2.small (migrate-instance-type: check-migration, backup image,
/// stop, type, start, verify). Each ends Success with nothing orphaned.
#[test]
fn free_disk_space_upgrade_drivers_and_migration_survive_power_losses() {
    let _vm = vm_lock();
    for seed in kill_seeds("POWER_LOSS_SEED", &[]) {
        eprintln!("POWER_LOSS_SEED={seed}");
        let mut next = xorshift(seed);
        let dd = Drydock::new();
        let base = dd.image(R);
        let mmio = dd.image_with(
            R,
            &["--name", "mmio-only", "--drivers", "virtio_mmio,virtio_blk"],
        );
        let id = dd.launch(
            R,
            &mmio,
            &[
                "--type",
                "m1.small",
                "--root-password",
                "pw",
                "--allow-faults",
            ],
        );
        dd.wait_console(R, &id, "login:");
        dd.inject_fault(R, &id, "disk-full");
        dd.wait_console(R, &id, "login:");
        let inst = format!("instance={id}");
        let pw = "password=env:DD_PW";

        let (shown, _) = through_outages(&dd, "free-disk-space", &[&inst, pw], 1, 3_000, &mut next);
        assert!(
            shown["execution"]["output"]["after_percent"]
                .as_i64()
                .unwrap()
                < 90,
            "{shown}"
        );
        nothing_orphaned(&dd, &id, &[], &[&base, &mmio]);

        let n2 = "target_type=n2.small";
        let (shown, _) = through_outages(
            &dd,
            "upgrade-drivers",
            &[&inst, pw, n2],
            1,
            12_000,
            &mut next,
        );
        let backup = shown["execution"]["output"]["backup"]
            .as_str()
            .unwrap()
            .to_string();
        nothing_orphaned(&dd, &id, &[], &[&base, &mmio, &backup]);

        let (shown, _) = through_outages(
            &dd,
            "migrate-instance-type",
            &[&inst, pw, n2],
            1,
            10_000,
            &mut next,
        );
        assert_eq!(
            shown["execution"]["output"]["result"], "migrated",
            "{shown}"
        );
        let moved = shown["execution"]["output"]["backup"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(dd.instance(R, &id)["instance_type"], "n2.small");
        nothing_orphaned(&dd, &id, &[], &[&base, &mmio, &backup, &moved]);
    }
}
