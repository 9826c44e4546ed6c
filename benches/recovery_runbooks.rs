//! Wall time of each bundled recovery runbook end to end, on a real guest
//! broken by the matching fault (issue 13's figure), plus the
//! driver-migration runbooks and a one-instance DR drill's measured RTO.
//! Each scenario: a fresh m1.small (allowed to be broken), stopped, the
//! fault injected, started (not timed); then `drydock run RUNBOOK` timed
//! from the command's start to its exit, and drydock's own duration.
//!
//! Run with `cargo bench --bench recovery_runbooks` (needs QEMU and apt,
//! like the tests: `scripts/setup` installs them). Takes minutes.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

struct Bench {
    data: tempfile::TempDir,
    cache: PathBuf,
}

impl Drop for Bench {
    /// No guest outlives the bench (its data directory goes with it).
    fn drop(&mut self) {
        for region in ["region-a", "region-b"] {
            let out = self
                .command(&["--region", region, "instances"])
                .output()
                .ok();
            let list: serde_json::Value = out
                .and_then(|o| serde_json::from_slice(&o.stdout).ok())
                .unwrap_or_default();
            for i in list["instances"].as_array().into_iter().flatten() {
                if let Some(id) = i["id"].as_str().filter(|_| i["state"] != "terminated") {
                    let _ = self
                        .command(&["--region", region, "instance", "terminate", id])
                        .output();
                }
            }
        }
    }
}

impl Bench {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_drydock"));
        c.arg("--json")
            .arg("--data-dir")
            .arg(self.data.path())
            .args(args)
            .env("DRYDOCK_IMAGE_CACHE", &self.cache)
            .env("BENCH_PW", "bench");
        c
    }

    fn drydock(&self, args: &[&str]) -> serde_json::Value {
        let out = self.command(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    fn console_has(&self, id: &str, text: &str) {
        let start = Instant::now();
        loop {
            let out = self.command(&["console-output", id]).output().unwrap();
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            if v["output"].as_str().unwrap_or("").contains(text) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(300),
                "{id}: no {text:?} on the console"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A running m1.small of `image`, broken by `fault` (with its target).
    fn broken(&self, image: &str, fault: &[&str], symptom: &str) -> String {
        let id = self.drydock(&[
            "instance",
            "launch",
            "--image",
            image,
            "--type",
            "m1.small",
            "--root-password",
            "bench",
            "--allow-faults",
        ])["id"]
            .as_str()
            .unwrap()
            .to_string();
        self.console_has(&id, "login:");
        if !fault.is_empty() {
            self.drydock(&["instance", "stop", &id]);
            let mut args = vec!["fault", "inject", &id];
            args.extend_from_slice(fault);
            self.drydock(&args);
            self.drydock(&["instance", "start", &id]);
        }
        self.console_has(&id, symptom);
        id
    }

    /// Runs a runbook; (wall time, drydock's duration, output).
    fn time(&self, args: &[&str]) -> (Duration, f64, serde_json::Value) {
        let mut all = vec!["run"];
        all.extend_from_slice(args);
        let start = Instant::now();
        let v = self.drydock(&all);
        let wall = start.elapsed();
        (
            wall,
            v["duration_ms"].as_f64().unwrap_or(0.0) / 1000.0,
            v["output"].clone(),
        )
    }
}

fn row(name: &str, fault: &str, (wall, own, _): &(Duration, f64, serde_json::Value)) {
    println!(
        "{:<24} {:<26} {:>9.1} s {:>9.1} s",
        name,
        fault,
        wall.as_secs_f64(),
        own
    );
}

fn main() {
    let b = Bench {
        data: tempfile::tempdir().unwrap(),
        cache: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-images"),
    };
    let image = b.drydock(&["image", "build"])["image"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mmio = b.drydock(&[
        "image",
        "build",
        "--name",
        "mmio-only",
        "--drivers",
        "virtio_mmio,virtio_blk",
    ])["image"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    println!(
        "recovery runbooks end to end on a broken m1.small (2 CPUs, accelerator {:?})",
        drydock_host::backend::choose_accel()
    );
    println!(
        "{:<24} {:<26} {:>11} {:>11}",
        "runbook", "fault", "wall", "drydock"
    );
    let pw = "password=env:BENCH_PW";

    let id = b.broken(&image, &["fstab-missing-disk"], "Press S to skip mounting");
    let inst = format!("instance={id}");
    row(
        "recover-boot-prompt",
        "fstab-missing-disk",
        &b.time(&["recover-boot-prompt", "-p", &inst, "-p", pw]),
    );

    let id = b.broken(&image, &["disk-full"], "login:");
    let inst = format!("instance={id}");
    row(
        "free-disk-space",
        "disk-full",
        &b.time(&["free-disk-space", "-p", &inst, "-p", pw]),
    );

    let id = b.broken(
        &image,
        &["stop-service", "syslogd"],
        "service syslogd is disabled",
    );
    let inst = format!("instance={id}");
    row(
        "start-service",
        "stop-service syslogd",
        &b.time(&[
            "start-service",
            "-p",
            &inst,
            "-p",
            "service=syslogd",
            "-p",
            pw,
        ]),
    );

    let id = b.broken(&image, &["lost-password"], "login:");
    let inst = format!("instance={id}");
    row(
        "reset-access",
        "lost-password",
        &b.time(&[
            "reset-access",
            "-p",
            &inst,
            "-p",
            "new_password=env:BENCH_PW",
        ]),
    );

    let id = b.broken(&image, &["bad-init"], "has no /sbin/init");
    let inst = format!("instance={id}");
    row(
        "rescue-root-volume",
        "bad-init",
        &b.time(&[
            "rescue-root-volume",
            "-p",
            &inst,
            "-p",
            pw,
            "-p",
            "fix=mv sbin/init.drydock-fault sbin/init",
        ]),
    );

    let id = b.broken(&image, &["missing-driver"], "did not appear after 5s");
    let inst = format!("instance={id}");
    row(
        "upgrade-drivers offline",
        "missing-driver",
        &b.time(&[
            "upgrade-drivers",
            "-p",
            &inst,
            "-p",
            pw,
            "-p",
            "target_type=m1.small",
            "-p",
            "allow_offline=true",
        ]),
    );

    let id = b.broken(&mmio, &[], "login:");
    let inst = format!("instance={id}");
    let n2 = "target_type=n2.small";
    row(
        "check-migration",
        "(m1 image without virtio_pci)",
        &b.time(&["check-migration", "-p", &inst, "-p", n2, "-p", pw]),
    );
    row(
        "upgrade-drivers online",
        "",
        &b.time(&["upgrade-drivers", "-p", &inst, "-p", n2, "-p", pw]),
    );
    row(
        "migrate-instance-type",
        "(to n2.small)",
        &b.time(&["migrate-instance-type", "-p", &inst, "-p", n2, "-p", pw]),
    );

    let id = b.broken(&image, &[], "login:");
    let drill = b.time(&[
        "dr-drill",
        "-p",
        &format!("instances=[\"{id}\"]"),
        "-p",
        "target_region=region-b",
        "-p",
        pw,
    ]);
    row("dr-drill", "(one instance)", &drill);
    println!(
        "dr-drill measured RTO {:.1} s, RPO {:.1} s",
        drill.2["instances"][0]["rto_ms"].as_f64().unwrap_or(0.0) / 1000.0,
        drill.2["instances"][0]["rpo_ms"].as_f64().unwrap_or(0.0) / 1000.0
    );
}
