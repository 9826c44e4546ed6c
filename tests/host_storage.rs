//! Volumes, snapshots and images on the embedded host, with real guests:
//! hot attach and detach, root and instance-store rules, extent-only
//! snapshots, images from instances copied to another region, launch
//! permissions, and concurrent drydock processes.

mod common;

use std::os::unix::fs::FileExt;

use common::scenario::Scenario;
use common::{assert_code, assert_stderr, vm_lock, Drydock};
use serde_json::Value;

const R: &str = "region-a";

fn json_of(out: &std::process::Output) -> Value {
    assert_code(out, 0);
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_data_volume_is_hot_attached_to_a_running_instance_and_detached() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    let id = Scenario::instance_with(&dd, &["--type", "n2.small"]);
    let vol = dd.create_volume(R, &["--size", "64", "--ext4", "data"]);
    assert_code(&dd.run(&["--region", R, "volume", "attach", &vol, &id]), 0);
    dd.wait_console(R, &id, &format!("attached (serial {vol})"));
    assert_eq!(dd.volume(R, &vol)["attached_to"], id.as_str());

    let out = dd.run(&["--region", R, "volume", "delete", &vol]);
    assert_stderr(
        &out,
        2,
        &[&format!("attached to {id}; detach it before deleting it")],
    );

    assert_code(&dd.run(&["--region", R, "volume", "detach", &vol]), 0);
    dd.wait_console(R, &id, "detached");
    assert_eq!(dd.volume(R, &vol)["attached_to"], Value::Null);
    assert_code(&dd.run(&["--region", R, "volume", "delete", &vol]), 0);
    assert_eq!(dd.volume(R, &vol), Value::Null);
}

#[test]
fn volumes_attached_while_stopped_are_there_at_boot_and_root_rules_hold() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    let img = dd.image(R);
    let id = dd.launch(R, &img, &["--type", "m1.small"]);
    let root = dd.root_volume(R, &id);
    let data = dd.create_volume(R, &["--size", "32"]);
    let out = dd.run(&["--region", R, "volume", "attach", &data, &id]);
    assert_stderr(
        &out,
        2,
        &["old-generation type (m1.small, virtio-mmio) running on QEMU"],
    );
    assert_eq!(
        dd.volume(R, &data)["attached_to"],
        Value::Null,
        "a refused attach records nothing"
    );

    let out = dd.run(&["--region", R, "volume", "detach", &root]);
    assert_stderr(&out, 2, &["is the root volume of"]);

    dd.stop_instance(R, &id);
    assert_code(&dd.run(&["--region", R, "volume", "attach", &data, &id]), 0);
    dd.start_instance(R, &id);
    dd.wait_login(R, &id);
    let console = dd.console(R, &id, None);
    assert!(
        console.contains("vda=vol-") && console.contains(&format!("={data}")),
        "{console}"
    );

    // Root volume out and back in, as a repair would do.
    dd.stop_instance(R, &id);
    assert_code(&dd.run(&["--region", R, "volume", "detach", &root]), 0);
    let out = dd.run(&["--region", R, "instance", "start", &id]);
    assert_stderr(&out, 2, &["has no root volume"]);
    assert_code(
        &dd.run(&["--region", R, "volume", "attach", &root, &id, "--root"]),
        0,
    );
    dd.start_instance(R, &id);
    dd.wait_login(R, &id);
}

#[test]
fn instance_storage_cannot_be_detached_and_is_wiped_at_stop() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    let img = dd.image(R);
    let id = dd.launch(R, &img, &["--type", "m1.medium"]);
    let vols = dd.json(&["--region", R, "volumes"]);
    let store = vols["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["kind"] == "instance-store")
        .cloned()
        .unwrap();
    let store_id = store["id"].as_str().unwrap();
    let out = dd.run(&["--region", R, "volume", "detach", store_id]);
    assert_stderr(&out, 2, &["is instance storage"]);
    let path = std::path::PathBuf::from(store["path"].as_str().unwrap());
    assert!(path.exists());
    dd.stop_instance(R, &id);
    assert!(
        !path.exists(),
        "instance storage is wiped when the instance stops"
    );
}

#[test]
fn a_snapshot_copies_only_written_extents_and_restores_the_data() {
    let dd = Drydock::new();
    let vol = dd.create_volume(R, &["--size", "4096"]);
    let path = std::path::PathBuf::from(dd.volume(R, &vol)["path"].as_str().unwrap());
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let chunk: Vec<u8> = (0..(1 << 20)).map(|i| (i % 251) as u8 + 1).collect();
    for i in 0..100u64 {
        f.write_all_at(&chunk, (1 << 30) + i * (1 << 20)).unwrap();
    }
    f.write_all_at(b"drydock was here", 3 << 30).unwrap();
    drop(f);
    let snap = json_of(&dd.run(&["--json", "--region", R, "snapshot", "create", &vol]));
    let copied = snap["bytes_copied"].as_u64().unwrap();
    assert!(
        (100 << 20..=101 << 20).contains(&copied),
        "copied {copied} bytes of a 4 GiB volume with 100 MiB written"
    );
    let snap_id = snap["snapshot"]["id"].as_str().unwrap();
    let restored = dd.create_volume(R, &["--snapshot", snap_id]);
    let rv = dd.volume(R, &restored);
    assert_eq!(rv["size_mib"], 4096);
    let g = std::fs::File::open(rv["path"].as_str().unwrap()).unwrap();
    let mut buf = [0u8; 16];
    g.read_exact_at(&mut buf, 3 << 30).unwrap();
    assert_eq!(&buf, b"drydock was here");
    let mut one = vec![0u8; 1 << 20];
    g.read_exact_at(&mut one, (1 << 30) + 42 * (1 << 20))
        .unwrap();
    assert_eq!(one, chunk);
    let out = dd.run(&[
        "--region",
        R,
        "volume",
        "create",
        "--snapshot",
        snap_id,
        "--size",
        "10",
    ]);
    assert_stderr(&out, 2, &["smaller than snapshot"]);
}

#[test]
fn an_image_made_from_an_instance_is_copied_to_another_region_and_launched_there() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    let img = dd.image(R);
    let script = dd.work().join("user-data.sh");
    std::fs::write(&script, "echo golden > /root/marker\n").unwrap();
    let id = dd.launch(R, &img, &["--user-data", script.to_str().unwrap()]);
    dd.wait_login(R, &id);
    let made = json_of(&dd.run(&[
        "--json", "--region", R, "image", "create", &id, "--name", "golden",
    ]));
    let golden = made["id"].as_str().unwrap().to_string();
    assert_eq!(made["source"], format!("instance {id}"));
    assert_eq!(
        dd.instance(R, &id)["state"],
        "running",
        "the instance runs again after imaging"
    );

    let copied = json_of(&dd.run(&[
        "--json",
        "--region",
        R,
        "image",
        "copy",
        &golden,
        "--to-region",
        "region-b",
    ]));
    let in_b = copied["id"].as_str().unwrap().to_string();
    assert_eq!(copied["region"], "region-b");
    let out = dd.run(&["--region", R, "instance", "launch", "--image", &in_b]);
    assert_stderr(&out, 2, &["is in region-b, not in region-a"]);

    // The copy boots in region-b with the file the first instance wrote.
    let script2 = dd.work().join("check.sh");
    std::fs::write(&script2, "echo \"MARKER $(cat /root/marker)\"\n").unwrap();
    let b = dd.launch(
        "region-b",
        &in_b,
        &["--user-data", script2.to_str().unwrap()],
    );
    dd.wait_console("region-b", &b, "MARKER golden");

    // Launch permissions: private to its owner until shared.
    let out = dd.run(&[
        "--region",
        "region-b",
        "--profile",
        "bob",
        "instance",
        "launch",
        "--image",
        &in_b,
    ]);
    assert_stderr(&out, 2, &["profile bob may not launch image"]);
    let bob_sees = dd.json(&["--region", "region-b", "--profile", "bob", "images"]);
    assert!(bob_sees["images"].as_array().unwrap().is_empty());
    assert_code(
        &dd.run(&[
            "--region",
            "region-b",
            "image",
            "modify",
            &in_b,
            "--add-profile",
            "bob",
        ]),
        0,
    );
    let bob_sees = dd.json(&["--region", "region-b", "--profile", "bob", "images"]);
    assert_eq!(bob_sees["images"][0]["id"], in_b.as_str());
    let out = dd.run(&[
        "--region",
        "region-b",
        "--profile",
        "bob",
        "image",
        "deregister",
        &in_b,
    ]);
    assert_stderr(&out, 2, &["only its owner can change it"]);
    assert_code(
        &dd.run(&["--region", "region-b", "image", "deregister", &in_b]),
        0,
    );
    assert!(dd.json(&["--region", "region-b", "images"])["images"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(
        dd.instance("region-b", &b)["state"],
        "running",
        "instances outlive their image"
    );
}

#[test]
fn concurrent_drydock_processes_keep_the_state_consistent() {
    let dd = Drydock::new();
    dd.write_runbook(
        "quick.rhai",
        "runbook(#{ name: \"quick\" });\nstep(\"one\", || 1);\nstep(\"two\", || 2);\n",
    );
    let mut children = Vec::new();
    for i in 0..12 {
        let args: Vec<&str> = if i % 2 == 0 {
            vec!["--json", "--region", R, "volume", "create", "--size", "8"]
        } else {
            vec!["--json", "run", "quick"]
        };
        children.push(dd.spawn(&args));
    }
    let mut volume_ids = std::collections::HashSet::new();
    for (i, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        let v = json_of(&out);
        if i % 2 == 0 {
            volume_ids.insert(v["id"].as_str().unwrap().to_string());
        } else {
            assert_eq!(v["state"], "Success");
        }
    }
    assert_eq!(volume_ids.len(), 6);
    assert_eq!(
        dd.json(&["--region", R, "volumes"])["volumes"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
    let execs = dd.json(&["executions"]);
    assert_eq!(execs.as_array().unwrap().len(), 6);
    for e in execs.as_array().unwrap() {
        assert_eq!(
            dd.show(e["id"].as_str().unwrap())["steps"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }
}

#[test]
fn a_volume_in_use_by_another_instance_is_refused() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    let img = dd.image(R);
    let a = dd.launch(R, &img, &["--type", "n2.small"]);
    let b = dd.launch(R, &img, &["--type", "n2.small"]);
    let root_a = dd.root_volume(R, &a);
    let out = dd.run(&["--region", R, "volume", "attach", &root_a, &b]);
    assert_stderr(&out, 2, &[&format!("volume {root_a} is attached to {a}")]);
    // Even with the records cleared by hand, the lock the VM holds refuses it.
    let vol = dd.create_volume(R, &["--size", "16"]);
    let path = dd.volume(R, &vol)["path"].as_str().unwrap().to_string();
    let holder = std::process::Command::new("flock")
        .args(["-x", &path, "sleep", "30"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let out = dd.run(&["--region", R, "volume", "attach", &vol, &b]);
    let mut holder = holder;
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_stderr(&out, 2, &["is in use by another virtual machine"]);
}
