//! The embedded host with real Linux guests under QEMU: images built from
//! Debian packages, the instance lifecycle, console logs, guest power-off,
//! VMM crashes, instance types, regions and bad input.

mod common;

use common::scenario::Scenario;
use common::{assert_code, assert_stderr, text, vm_lock, Drydock};

const R: &str = "region-a";

#[test]
fn launch_stop_start_reboot_terminate_a_real_guest() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    let img = dd.image(R);
    assert!(img.starts_with("img-"), "{img}");
    let id = dd.launch(R, &img, &["--root-password", "hunter2"]);
    assert_eq!(dd.instance(R, &id)["state"], "running");
    dd.wait_login(R, &id);
    let boot1 = dd.console(R, &id, Some(1));
    assert!(boot1.contains(&format!("drydock: {id} is up")), "{boot1}");

    let out = dd.run(&["--region", R, "instance", "stop", &id]);
    assert_code(&out, 0);
    let i = dd.instance(R, &id);
    assert_eq!(i["state"], "stopped");
    assert_eq!(i["state_reason"], "stopped by user");
    assert!(
        dd.console(R, &id, Some(1)).contains("sysrq: Power Off"),
        "a clean stop syncs and powers off"
    );

    dd.start_instance(R, &id);
    dd.wait_login(R, &id);
    assert_eq!(dd.instance(R, &id)["boots"], 2);

    dd.reboot_instance(R, &id);
    assert_eq!(
        dd.instance(R, &id)["boots"],
        3,
        "a reboot is a new boot of the same instance"
    );
    dd.wait_login(R, &id);
    assert_eq!(dd.instance(R, &id)["state"], "running");

    let root = dd.json(&["--region", R, "instances"])["instances"][0]["root_volume"]
        .as_str()
        .unwrap()
        .to_string();
    let root_file = dd.data_dir().join("volumes").join(format!("{root}.raw"));
    assert!(root_file.exists());
    dd.terminate(R, &id);
    assert_eq!(dd.instance(R, &id)["state"], "terminated");
    assert!(
        !root_file.exists(),
        "DeleteOnTermination removes the root volume"
    );
}

#[test]
fn terminate_keeps_a_root_volume_without_delete_on_termination() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    let img = dd.image(R);
    let id = dd.launch(R, &img, &["--keep-root-volume"]);
    let root = dd.root_volume(R, &id);
    dd.terminate(R, &id);
    let file = dd.data_dir().join("volumes").join(format!("{root}.raw"));
    assert!(file.exists(), "the root volume is kept");
}

#[test]
fn user_data_and_metadata_reach_the_guest_and_a_guest_poweroff_stops_the_instance() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    let img = dd.image(R);
    let script = dd.work().join("user-data.sh");
    std::fs::write(
        &script,
        "echo \"USERDATA $(grep region /run/drydock/meta-data)\"\npoweroff\n",
    )
    .unwrap();
    let id = dd.launch(
        R,
        &img,
        &[
            "--user-data",
            script.to_str().unwrap(),
            "--hostname",
            "web-1",
        ],
    );
    dd.wait_until("the guest to power itself off", || {
        dd.instance(R, &id)["state"] == "stopped"
    });
    let i = dd.instance(R, &id);
    assert_eq!(i["state_reason"], "guest powered off");
    let console = dd.console(R, &id, None);
    assert!(console.contains("USERDATA region: region-a"), "{console}");
}

#[test]
fn a_vmm_that_dies_is_detected_and_so_is_a_dead_instance_process() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    let img = dd.image(R);
    let id = dd.launch(R, &img, &[]);
    let pid = |pattern: &str| -> i32 {
        let out = std::process::Command::new("pgrep")
            .args(["-f", "--", pattern])
            .output()
            .unwrap();
        text(&out.stdout)
            .lines()
            .next()
            .unwrap_or_else(|| panic!("no process matches {pattern}"))
            .parse()
            .unwrap()
    };
    // The VMM dies under the supervisor.
    let qemu = pid(&format!("qemu-system-x86_64 .*-name {id}"));
    unsafe_kill(qemu);
    dd.wait_until("the crash to be recorded", || {
        dd.instance(R, &id)["state"] == "stopped"
    });
    let reason = dd.instance(R, &id)["state_reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.starts_with("VMM exited unexpectedly"), "{reason}");

    // The supervisor itself dies: its VMM goes with it, and the next
    // drydock command notices.
    dd.start_instance(R, &id);
    let sup = pid(&format!("--instance {id}"));
    unsafe_kill(sup);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let i = dd.instance(R, &id);
    assert_eq!(i["state"], "stopped");
    assert_eq!(
        i["state_reason"],
        "instance process exited unexpectedly (found by reconcile)"
    );
    let leftover = std::process::Command::new("pgrep")
        .args(["-f", &format!("-name {id}")])
        .output()
        .unwrap();
    assert!(
        text(&leftover.stdout).trim().is_empty(),
        "the VMM died with its supervisor"
    );
}

fn unsafe_kill(pid: i32) {
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn the_type_changes_only_when_stopped_and_the_new_generation_boots() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    let img = dd.image(R);
    let id = dd.launch(R, &img, &["--type", "m1.small"]);
    let out = dd.run(&[
        "--region", R, "instance", "modify", &id, "--type", "n2.small",
    ]);
    assert_stderr(&out, 2, &["is running; stop it first"]);
    assert_code(
        &dd.run(&["--region", R, "instance", "stop", &id, "--force"]),
        0,
    );
    assert_eq!(
        dd.instance(R, &id)["state_reason"],
        "stopped by user (forced)"
    );
    assert_code(
        &dd.run(&[
            "--region", R, "instance", "modify", &id, "--type", "n2.small",
        ]),
        0,
    );
    dd.start_instance(R, &id);
    dd.wait_login(R, &id);
    assert_eq!(dd.instance(R, &id)["instance_type"], "n2.small");
    dd.terminate(R, &id);
}

#[test]
fn bad_input_is_refused_clearly_and_changes_nothing() {
    let dd = Drydock::new();
    let img = dd.image(R);
    let out = dd.run(&[
        "--region", R, "instance", "launch", "--image", &img, "--type", "x9.huge",
    ]);
    assert_stderr(
        &out,
        2,
        &["unknown instance type `x9.huge`; choose one of m1.small"],
    );
    let out = dd.run(&[
        "--region",
        R,
        "instance",
        "launch",
        "--image",
        "img-000000000000",
    ]);
    assert_stderr(&out, 2, &["no image `img-000000000000`"]);
    let out = dd.run(&[
        "--region", "region-b", "instance", "launch", "--image", &img,
    ]);
    assert_code(&out, 2);
    assert!(text(&out.stderr).contains(&format!(
        "`{img}` is in region-a, not in region-b (use --region region-a)"
    )));
    let out = dd.run(&["--region", "mars-1", "instances"]);
    assert_stderr(
        &out,
        2,
        &["unknown region `mars-1`; regions: region-a, region-b"],
    );
    let out = dd.run(&["--region", R, "instance", "stop", "i-000000000000"]);
    assert_code(&out, 2);
    assert!(dd.json(&["--region", R, "instances"])["instances"]
        .as_array()
        .unwrap()
        .is_empty());
    assert!(
        !dd.data_dir().join("volumes").exists()
            || std::fs::read_dir(dd.data_dir().join("volumes"))
                .unwrap()
                .count()
                == 0
    );
}

#[test]
fn an_empty_region_says_where_instances_are() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    let img = dd.image(R);
    let id = dd.launch(R, &img, &[]);
    let out = dd.run(&["--region", "region-b", "instances"]);
    assert_code(&out, 0);
    assert_eq!(
        text(&out.stdout).trim(),
        "no instances in region-b; 1 (1 running) in region-a (use --region region-a)"
    );
    let out = text(&dd.run(&["--region", R, "instances"]).stdout);
    assert!(out.starts_with("region region-a, profile default"), "{out}");
    let regions = dd.json(&["regions"]);
    assert_eq!(regions[0]["running"], 1);
    assert_eq!(regions[1]["instances"], 0);
    dd.terminate(R, &id);
}

#[test]
fn an_image_without_the_new_generation_driver_does_not_boot_on_the_new_type() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    let legacy = dd.image_with(
        R,
        &["--name", "legacy", "--drivers", "virtio_mmio,virtio_blk"],
    );
    let id = dd.launch(R, &legacy, &["--type", "n2.small"]);
    dd.wait_console(R, &id, "dropping to an emergency shell");
    let console = dd.console(R, &id, None);
    assert!(console.contains("root device serial:"), "{console}");
    assert!(
        console.contains(
            "did not appear after 5s; the instance type may need a driver this image lacks"
        ),
        "{console}"
    );
    assert!(
        console.contains("drivers in this image: virtio_ring virtio virtio_mmio virtio_blk"),
        "{console}"
    );
    assert_code(
        &dd.run(&["--region", R, "instance", "stop", &id, "--force"]),
        0,
    );
    // The same image boots on the old generation.
    assert_code(
        &dd.run(&[
            "--region", R, "instance", "modify", &id, "--type", "m1.small",
        ]),
        0,
    );
    dd.start_instance(R, &id);
    dd.wait_login(R, &id);
}

#[test]
fn a_failing_fstab_entry_stops_the_boot_at_the_classic_prompt() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    let img = dd.image(R);
    let script = dd.work().join("user-data.sh");
    // user-data runs before /etc/fstab is processed: the new entry fails this very boot.
    std::fs::write(
        &script,
        "echo '/dev/vdz /data ext4 defaults 0 2' >> /etc/fstab\n",
    )
    .unwrap();
    let id = dd.launch(R, &img, &["--user-data", script.to_str().unwrap()]);
    dd.wait_console(R, &id, "Press S to skip mounting or M for manual recovery");
    std::thread::sleep(std::time::Duration::from_secs(2));
    let console = dd.console(R, &id, None);
    assert!(
        console.contains("mount: /data: cannot mount /dev/vdz"),
        "{console}"
    );
    assert!(!console.contains("login:"), "the boot waits at the prompt");
}

#[test]
fn the_latest_console_lines_come_from_memory_and_match_the_log_file() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    let id = Scenario::instance_with(&dd, &[]);
    let log_path = dd
        .data_dir()
        .join("instances")
        .join(&id)
        .join("console/boot-0001.log");
    let log = std::fs::read_to_string(&log_path).unwrap();
    // With the file gone, the running instance's process still has the tail.
    std::fs::rename(&log_path, log_path.with_extension("moved")).unwrap();
    let from_memory = text(
        &dd.run(&["--region", R, "console-output", &id, "--tail", "3"])
            .stdout,
    );
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(from_memory, lines[lines.len() - 3..].join("\n") + "\n");
    assert!(from_memory.contains("login:"));
}
