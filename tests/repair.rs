//! The bundled repair-root-volume runbook, end to end with real guests
//! and the Rhai host primitives: stop the broken instance, move its root volume to a
//! running rescue instance, fix a file through the rescue console, move
//! the volume back as root, start, and check the fix from the console.

mod common;

use common::{assert_code, vm_lock, Drydock};

const R: &str = "region-a";

/// A broken (old generation) instance and a running rescue (new
/// generation, so disks hot-plug), both with root password `pw`.
fn broken_and_rescue(dd: &Drydock) -> (String, String) {
    let img = dd.image(R);
    let broken = dd.launch(R, &img, &["--type", "m1.small", "--root-password", "pw"]);
    let rescue = dd.launch(R, &img, &["--type", "n2.small", "--root-password", "pw"]);
    (broken, rescue)
}

#[test]
fn a_root_volume_is_repaired_through_a_rescue_instance() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    let (broken, rescue) = broken_and_rescue(&dd);
    let out = dd.run(&[
        "--json",
        "--region",
        R,
        "run",
        "repair-root-volume",
        "-p",
        &format!("instance={broken}"),
        "-p",
        &format!("rescue={rescue}"),
        "-p",
        "password=pw",
        "-p",
        "fix=echo repaired > root/REPAIRED",
        "-p",
        "verify=cat /root/REPAIRED",
    ]);
    assert_code(&out, 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["output"]["verified"], "repaired\n");
    assert!(v["output"]["fixed_on"]
        .as_str()
        .unwrap()
        .starts_with("/dev/vd"));
    assert_eq!(v["steps_run"], 10, "nine steps and the cleanup");
    let i = dd.instance(R, &broken);
    assert_eq!(i["state"], "running");
    assert_eq!(i["boots"], 2);
}

#[test]
fn a_failed_fix_still_puts_the_root_volume_back() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    let (broken, rescue) = broken_and_rescue(&dd);
    let root = dd.instance(R, &broken)["root_volume"]
        .as_str()
        .unwrap()
        .to_string();
    let out = dd.run(&[
        "--region",
        R,
        "run",
        "repair-root-volume",
        "-p",
        &format!("instance={broken}"),
        "-p",
        &format!("rescue={rescue}"),
        "-p",
        "password=pw",
        "-p",
        "fix=false",
    ]);
    assert_code(&out, 1);
    assert!(
        common::text(&out.stderr).contains("the fix failed"),
        "{}",
        common::text(&out.stderr)
    );
    let vols = dd.json(&["--region", R, "volumes"]);
    let v = vols["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == root.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        v["attached_to"],
        broken.as_str(),
        "the cleanup put the volume back"
    );
    assert_eq!(v["attach_index"], 0, "as the root volume");
}
