//! Driver upgrades and instance-type migration on a real guest (seed 004):
//! an image built with only virtio_mmio runs on m1; check-migration names
//! what n2 needs; a migration without the driver does not boot on n2 and
//! is rolled back to m1, running, with the reason; a rejected approval
//! changes nothing; upgrade-drivers installs virtio_pci from a driver
//! volume (no network in the guest) and rebuilds the initramfs; then the
//! migration boots on n2 with virtio_pci loaded. With upgrade_drivers=true
//! the migration installs what lacks itself (the NIC driver too) and ends
//! on n2 with the network up.

mod common;

use common::{assert_code, text, vm_lock, wait_child, Drydock};
use serde_json::Value;

const R: &str = "region-a";

fn run_json(dd: &Drydock, args: &[&str]) -> (i32, Value, String) {
    let mut all = vec!["--region", R, "--json", "run"];
    all.extend_from_slice(args);
    let out = dd.command(&all).env("ROOT_PW", "hunter2").output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!said.contains("hunter2"), "{said}");
    (out.status.code().unwrap(), v, said)
}

/// `run_json` of `runbook` for `inst` to type n2.small with password
/// parameter `pw` and `extra` parameters.
fn to_n2(
    dd: &Drydock,
    runbook: &str,
    inst: &str,
    pw: &str,
    extra: &[&str],
) -> (i32, Value, String) {
    let mut args = vec![runbook, "-p", inst, "-p", "target_type=n2.small", "-p", pw];
    args.extend_from_slice(extra);
    run_json(dd, &args)
}

#[test]
fn an_mmio_only_instance_is_rolled_back_then_upgraded_and_migrated_to_n2() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    let img = dd.image_with(
        R,
        &["--name", "mmio-only", "--drivers", "virtio_mmio,virtio_blk"],
    );
    let id = dd.launch(
        R,
        &img,
        &["--type", "m1.small", "--root-password", "hunter2"],
    );
    let pw = "password=env:ROOT_PW";
    let inst = format!("instance={id}");

    // 1. The pre-checks name what n2 needs.
    let (code, v, said) = to_n2(&dd, "check-migration", &inst, pw, &[]);
    assert_eq!(code, 0, "{said}");
    let report = &v["output"];
    assert_eq!(report["ready"], false, "{report}");
    let failed: Vec<&str> = report["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(
        failed,
        ["virtio_pci module installed", "virtio_pci in the initramfs"],
        "{report}"
    );
    let check = |name: &str| {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == name)
            .unwrap_or_else(|| panic!("no check {name}: {report}"))
            .clone()
    };
    assert_eq!(check("virtio_blk in the initramfs")["result"], "PASSED");
    assert_eq!(check("driver package for the kernel")["result"], "PASSED");
    assert!(check("virtio_pci in the initramfs")["fix"]
        .as_str()
        .unwrap()
        .contains("upgrade-drivers"));

    // 2. Without ignore_checks the migration refuses before touching anything.
    let (code, _, said) = to_n2(&dd, "migrate-instance-type", &inst, pw, &[]);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("pre-checks failed"), "{said}");
    assert_eq!(dd.instance(R, &id)["instance_type"], "m1.small");

    // 3. Forced: n2 does not find the root disk; back on m1, running.
    let (code, _, said) = to_n2(
        &dd,
        "migrate-instance-type",
        &inst,
        pw,
        &["-p", "ignore_checks=true"],
    );
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains("n2.small did not boot")
            && said.contains("rolled back to m1.small")
            && said.contains("virtio_pci"),
        "{said}"
    );
    let after = dd.instance(R, &id);
    assert_eq!(after["instance_type"], "m1.small");
    assert_eq!(after["state"], "running");
    let exec = dd.only_execution_of("migrate-instance-type");
    let steps: Vec<String> = dd.show(&exec)["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    for s in [
        "backup image",
        "set the type to n2.small",
        "verify on the new type",
        "set the type back to m1.small",
        "verify on the old type",
    ] {
        assert!(steps.iter().any(|x| x == s), "no step {s}: {steps:?}");
    }

    // 4. A rejected approval changes nothing.
    let child = dd
        .command(&[
            "--region",
            R,
            "run",
            "migrate-instance-type",
            "-p",
            &inst,
            "-p",
            "target_type=n2.small",
            "-p",
            pw,
            "-p",
            "ignore_checks=true",
            "-p",
            "approvers=[\"*\"]",
        ])
        .env("ROOT_PW", "hunter2")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The pre-checks and the backup come first: up to a few minutes.
    let started = std::time::Instant::now();
    let pending = loop {
        let list = dd.json(&["approvals"]);
        if let Some(a) = list.as_array().and_then(|a| a.first()) {
            break a["execution_id"].as_str().unwrap().to_string();
        }
        assert!(
            started.elapsed().as_secs() < 300,
            "the migration never asked for approval"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    assert_code(&dd.run(&["approve", &pending, "--reject"]), 0);
    let out = wait_child(child);
    assert_code(&out, 3);
    let after = dd.instance(R, &id);
    assert_eq!(after["instance_type"], "m1.small");
    assert_eq!(after["state"], "running");

    // 5. The drivers, from a driver volume, over the console.
    let (code, v, said) = to_n2(&dd, "upgrade-drivers", &inst, pw, &[]);
    assert_eq!(code, 0, "{said}");
    let up = &v["output"];
    assert_eq!(up["installed"], serde_json::json!(["virtio_pci"]), "{up}");
    assert!(up["backup"].as_str().unwrap().starts_with("img-"));
    assert!(up["initramfs_modules"]
        .as_str()
        .unwrap()
        .contains("virtio_pci"));
    // The driver volume is gone.
    let vols = dd.json(&["--region", R, "volumes"]);
    assert!(
        !vols.to_string().contains("drydock:drivers"),
        "a driver volume was left: {vols}"
    );

    // 6. Now the migration boots on n2, with virtio_pci loaded.
    let (code, v, said) = to_n2(&dd, "migrate-instance-type", &inst, pw, &[]);
    assert_eq!(code, 0, "{said}");
    assert_eq!(v["output"]["result"], "migrated");
    let after = dd.instance(R, &id);
    assert_eq!(after["instance_type"], "n2.small");
    assert_eq!(after["state"], "running");
    let modules = dd.guest(R, &id, "hunter2", "cut -d' ' -f1 /proc/modules");
    assert!(modules.contains("virtio_pci"), "{modules}");
}

#[test]
fn a_migration_with_upgrade_drivers_installs_the_storage_and_network_drivers_and_ends_networked_on_n2(
) {
    let _vm = vm_lock();
    let dd = Drydock::new();
    // No virtio_pci (n2's transport) in the image, and the network driver
    // taken off its root volume: on n2 it would find neither its root disk
    // nor its network.
    let img = dd.image_with(
        R,
        &["--name", "mmio-only", "--drivers", "virtio_mmio,virtio_blk"],
    );
    let id = dd.launch(
        R,
        &img,
        &[
            "--type",
            "m1.small",
            "--root-password",
            "hunter2",
            "--allow-faults",
        ],
    );
    dd.inject_fault(R, &id, "nic-driver-missing");
    let ip = dd.instance(R, &id)["private_ip"]
        .as_str()
        .unwrap_or_else(|| panic!("{id} has no private address"))
        .to_string();
    let pw = "password=env:ROOT_PW";
    let inst = format!("instance={id}");

    // Without upgrade_drivers it stops before touching anything, naming
    // what lacks and the parameter that installs it.
    let (code, _, said) = to_n2(&dd, "migrate-instance-type", &inst, pw, &[]);
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains("pre-checks failed")
            && said.contains("virtio_pci")
            && said.contains("virtio_net")
            && said.contains("upgrade_drivers=true"),
        "{said}"
    );
    assert_eq!(dd.instance(R, &id)["instance_type"], "m1.small");

    // With it: backup, upgrade-drivers, the pre-checks again, the switch.
    let (code, v, said) = to_n2(
        &dd,
        "migrate-instance-type",
        &inst,
        pw,
        &["-p", "upgrade_drivers=true"],
    );
    assert_eq!(code, 0, "{said}");
    println!(
        "migrate-instance-type with upgrade_drivers: {} ms",
        v["duration_ms"]
    );
    let out = &v["output"];
    assert_eq!(out["result"], "migrated", "{out}");
    let mut installed: Vec<&str> = out["drivers_installed"]
        .as_array()
        .unwrap_or_else(|| panic!("{out}"))
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    installed.sort();
    assert_eq!(installed, ["virtio_net", "virtio_pci"], "{out}");
    let exec = v["execution_id"].as_str().unwrap().to_string();
    let steps: Vec<String> = dd.show(&exec)["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    let at = |name: &str| {
        steps
            .iter()
            .position(|s| s == name)
            .unwrap_or_else(|| panic!("no step {name}: {steps:?}"))
    };
    assert!(at("backup image") < at("run upgrade-drivers"), "{steps:?}");
    assert!(at("run upgrade-drivers") < at("stop"), "{steps:?}");
    assert_eq!(
        steps.iter().filter(|s| *s == "run check-migration").count(),
        2,
        "checked again after the upgrade: {steps:?}"
    );

    // On n2, running, with the address it had, reachable from the host.
    let after = dd.instance(R, &id);
    assert_eq!(after["instance_type"], "n2.small");
    assert_eq!(after["state"], "running");
    assert_eq!(after["private_ip"], ip.as_str());
    let modules = dd.guest(R, &id, "hunter2", "cut -d' ' -f1 /proc/modules");
    assert!(
        modules.contains("virtio_pci") && modules.contains("virtio_net"),
        "{modules}"
    );
    let addr = dd.guest(R, &id, "hunter2", "ip -4 -o addr show dev eth0");
    assert!(addr.contains(&format!("inet {ip}/")), "{addr}");
    let out = dd.run(&[
        "--json",
        "--region",
        R,
        "repl",
        "-c",
        &format!("net::tcp_check(\"{id}\", 22, \"5s\")"),
    ]);
    assert_code(&out, 0);
    let ssh: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ssh["open"], true, "SSH's port answers on n2: {ssh}");
    // One backup (the migration's; upgrade-drivers made none), no driver
    // volume left.
    let images = dd.json(&["--region", R, "images"]).to_string();
    assert_eq!(images.matches("before-n2.small-").count(), 1, "{images}");
    assert!(!images.contains("before-drivers-"), "{images}");
    let vols = dd.json(&["--region", R, "volumes"]);
    assert!(!vols.to_string().contains("drydock:drivers"), "{vols}");
}

#[test]
fn an_instance_nobody_can_log_into_is_upgraded_through_a_helper_then_migrated() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    let img = dd.image_with(
        R,
        &["--name", "mmio-only", "--drivers", "virtio_mmio,virtio_blk"],
    );
    // Seed 004's trap: the instance sits in a private subnet (no route out
    // of its VPC), where the helper goes too.
    let vpc = dd.json(&["--region", R, "vpc", "create", "--cidr", "10.70.0.0/16"]);
    let vpc = vpc["id"].as_str().unwrap().to_string();
    let private = dd.json(&[
        "--region",
        R,
        "subnet",
        "create",
        "--vpc",
        &vpc,
        "--cidr",
        "10.70.2.0/24",
        "--private",
    ]);
    let private = private["id"].as_str().unwrap().to_string();
    let id = dd.launch(
        R,
        &img,
        &[
            "--type",
            "m1.small",
            "--root-password",
            "hunter2",
            "--allow-faults",
            "--subnet",
            &private,
        ],
    );
    let pw = "password=env:ROOT_PW";
    let inst = format!("instance={id}");
    // The console password is lost.
    dd.inject_fault(R, &id, "lost-password");

    // Online it cannot be done, and says how it can.
    let (code, _, said) = to_n2(&dd, "upgrade-drivers", &inst, pw, &[]);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("allow_offline=true"), "{said}");

    let (code, v, said) = to_n2(
        &dd,
        "upgrade-drivers",
        &inst,
        pw,
        &["-p", "allow_offline=true"],
    );
    assert_eq!(code, 0, "{said}");
    println!("upgrade-drivers offline: {} ms", v["duration_ms"]);
    let up = &v["output"];
    assert_eq!(up["offline"], true, "{up}");
    assert_eq!(up["helper_subnet"], private.as_str(), "{up}");
    assert!(up["backup"].as_str().unwrap().starts_with("img-"));
    let output = up["install_output"].to_string();
    assert!(
        output.contains("update-initramfs: built") && output.contains("virtio_pci"),
        "{up}"
    );
    // The helper and the driver volume are gone; the root is back.
    let live: Vec<Value> = dd.json(&["--region", R, "instances"])["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["state"] != "terminated")
        .cloned()
        .collect();
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0]["id"], id.as_str());
    assert_eq!(live[0]["state"], "running");
    let vols = dd.json(&["--region", R, "volumes"]);
    assert!(!vols.to_string().contains("drydock:drivers"), "{vols}");
    let root = live[0]["root_volume"].as_str().unwrap();
    let root_vol = vols["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == root)
        .unwrap()
        .clone();
    assert_eq!(root_vol["attached_to"], id.as_str());
    assert_eq!(root_vol["attach_index"], 0);

    // With the password back, the migration boots on n2.
    dd.stop_instance(R, &id);
    assert_code(&dd.run(&["--region", R, "fault", "revert", &id]), 0);
    dd.start_instance(R, &id);
    let (code, v, said) = to_n2(&dd, "migrate-instance-type", &inst, pw, &[]);
    assert_eq!(code, 0, "{said}");
    assert_eq!(v["output"]["result"], "migrated");
    let after = dd.instance(R, &id);
    assert_eq!(after["instance_type"], "n2.small");
    // Still in its private subnet, at its address.
    assert_eq!(after["subnet_id"], private.as_str(), "{after}");
    assert!(
        after["private_ip"]
            .as_str()
            .unwrap()
            .starts_with("10.70.2."),
        "{after}"
    );
}

#[test]
fn when_neither_type_passes_the_root_is_restored_from_the_backup_after_approval() {
    use common::os_users::os_user;
    let _vm = vm_lock();
    let alice = os_user("ddalice", &["ddops"]);
    let dd = Drydock::shared_by("ddops");
    let img = dd.image(R);
    let id = dd.launch(
        R,
        &img,
        &["--type", "m1.small", "--root-password", "hunter2"],
    );
    let old_root = dd.root_volume(R, &id);
    // The service check fails on any type: n2 fails, m1 fails too.
    let child = dd
        .command(&[
            "--region",
            R,
            "--json",
            "run",
            "migrate-instance-type",
            "-p",
            &format!("instance={id}"),
            "-p",
            "target_type=n2.small",
            "-p",
            "password=env:ROOT_PW",
            "-p",
            "check=test -e /srv/app-ready",
            "-p",
            "approvers=[\"ddalice\"]",
        ])
        .env("ROOT_PW", "hunter2")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let exec = dd.only_execution_of("migrate-instance-type");
    // First approval: the switch.
    let wait_pending = |n: usize| {
        let started = std::time::Instant::now();
        loop {
            let mine = dd.show(&exec)["approvals"]
                .as_array()
                .map(Vec::len)
                .unwrap_or(0);
            if mine >= n && !dd.json(&["approvals"]).as_array().unwrap().is_empty() {
                return;
            }
            assert!(
                started.elapsed().as_secs() < 400,
                "approval {n} never asked"
            );
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    };
    wait_pending(1);
    assert_code(&dd.run_as(&alice, &["approve", &exec]), 0);
    // Second: the restore, asked after both types failed.
    wait_pending(2);
    let pending = dd.json(&["approvals"]);
    let message = pending[0]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("boots neither on n2.small")
            && message.contains("Restore its root volume from the backup image img-"),
        "{message}"
    );
    assert_eq!(dd.instance(R, &id)["instance_type"], "m1.small");
    assert_code(&dd.run_as(&alice, &["approve", &exec]), 0);
    // The host loses power at a random moment of the restore (seeded:
    // `RESTORE_SEED=S` replays): everything of the data directory dies at
    // once; `host recover` resumes the restore where it stopped.
    let seed = common::kill_seeds("RESTORE_SEED", &[])[0];
    eprintln!("RESTORE_SEED={seed}");
    let wait = std::time::Duration::from_millis(common::xorshift(seed)() % 40_000);
    std::thread::sleep(wait);
    let cut = dd.state(&exec) == "InProgress";
    if cut {
        let step = dd.show(&exec)["steps"]
            .as_array()
            .and_then(|s| s.last().cloned())
            .unwrap_or_default();
        eprintln!("power loss after {wait:?} in step {:?}", step["name"]);
        assert!(dd.power_loss() >= 1);
        let out = dd
            .command(&["--json", "host", "recover"])
            .env("DRYDOCK_BIN", common::bin())
            .output()
            .unwrap();
        assert_code(&out, 0);
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            r["executions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["id"] == exec.as_str() && e["outcome"] == "resumed"),
            "{r}"
        );
    }
    let out = wait_child(child);
    let started = std::time::Instant::now();
    while dd.state(&exec) == "InProgress" {
        assert!(started.elapsed().as_secs() < 600, "the restore never ended");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let shown = dd.show(&exec);
    assert_eq!(shown["execution"]["state"], "Failed", "{shown}");
    let said = if cut {
        shown["execution"]["error"].to_string()
    } else {
        assert_code(&out, 1);
        text(&out.stderr) + &text(&out.stdout)
    };
    assert!(said.contains("was restored from img-"), "{said}");
    assert!(!said.contains("hunter2"));
    assert!(!shown.to_string().contains("hunter2"));
    // Restored: another root volume, the old one kept and detached, and the
    // instance runs on its old type.
    let after = dd.instance(R, &id);
    assert_eq!(after["state"], "running");
    assert_eq!(after["instance_type"], "m1.small");
    let new_root = after["root_volume"].as_str().unwrap();
    assert_ne!(new_root, old_root);
    let vols = dd.json(&["--region", R, "volumes"])["volumes"]
        .as_array()
        .unwrap()
        .clone();
    let old = vols.iter().find(|v| v["id"] == old_root.as_str()).unwrap();
    assert!(old["attached_to"].is_null(), "{old}");
    // Only the instance is left (the instance launched from the backup to
    // take its volume is gone).
    let live: Vec<Value> = dd.json(&["--region", R, "instances"])["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["state"] != "terminated")
        .cloned()
        .collect();
    assert_eq!(live.len(), 1, "{live:?}");
}
