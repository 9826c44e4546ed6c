//! Recovery runbooks on real broken guests (issue 13): a fault is put in,
//! its symptom seen on the console, the matching bundled runbook run —
//! with its approval given from another process by another account —
//! and the instance logged into afterwards, the fix checked, the journal
//! holding every step.

mod common;

use common::os_users::os_user;
use common::scenario::Scenario;
use common::{assert_code, text, vm_lock, wait_child, Drydock};
use serde_json::Value;

const R: &str = "region-a";

#[test]
fn a_boot_stuck_at_the_fstab_prompt_is_recovered_over_the_console() {
    let _vm = vm_lock();
    let alice = os_user("ddalice", &["ddops"]);
    let dd = Drydock::shared_by("ddops");
    let id = Scenario::broken(&dd, "fstab-missing-disk");
    dd.wait_console(R, &id, "Press S to skip mounting or M for manual recovery");

    let p_instance = format!("instance={id}");
    let runner = dd
        .command(&[
            "--json",
            "--region",
            R,
            "run",
            "recover-boot-prompt",
            "-p",
            &p_instance,
            "-p",
            "password=env:DD_TEST_PW",
            "-p",
            "approvers=[\"ddalice\"]",
        ])
        .env("DD_TEST_PW", "pw")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let exec = dd.only_execution_of("recover-boot-prompt");
    dd.wait_for_approval(&exec);
    // Nothing changed before the approval: still at the prompt.
    let shown = dd.show(&exec);
    let failed = shown["steps"][0]["output"]["failed"].as_str().unwrap_or("");
    assert!(failed.contains("cannot mount"), "{shown}");
    let out = dd.run_as(&alice, &["approve", &exec, "--comment", "go"]);
    assert_code(&out, 0);
    let out = wait_child(runner);
    assert_code(&out, 0);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let o = &v["output"];
    assert_eq!(o["recovered"], true, "{v}");
    assert_eq!(o["clean_reboot"], true, "{v}");
    let commented = o["commented_out"].as_array().unwrap();
    assert_eq!(commented.len(), 1, "{v}");
    assert!(
        commented[0]
            .as_str()
            .unwrap()
            .contains("drydock-fault-data"),
        "{v}"
    );
    // The journal has every step, the approval by alice, and no password.
    let shown = dd.show(&exec);
    let names: Vec<&str> = shown["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    for want in [
        "find the prompt on the console",
        "comment out the failing fstab lines in manual recovery",
        "continue the boot and log in",
        "reboot and check the boot is clean",
    ] {
        assert!(names.contains(&want), "{names:?}");
    }
    assert_eq!(shown["approvals"][0]["decisions"][0]["approver"], "ddalice");
    assert!(!shown.to_string().contains("\"pw\""), "{shown}");

    // Logged in afterwards: the backup is there, the line commented out.
    let script = format!(
        "let c = console::open(\"{id}\"); c.login(\"root\", \"pw\"); c.run(\"grep drydock-fault-data /etc/fstab; ls /etc/fstab.drydock-backup\", \"60s\").stdout"
    );
    let out = dd.run(&["--region", R, "repl", "-c", &script]);
    assert_code(&out, 0);
    let o = text(&out.stdout);
    assert!(
        o.contains(
            "# drydock recover-boot-prompt: cannot mount, commented out: LABEL=drydock-fault-data"
        ),
        "{o}"
    );
    assert!(o.contains("/etc/fstab.drydock-backup"), "{o}");
}

#[test]
fn a_missing_disk_driver_is_put_back_through_a_helper() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    let img = dd.image(R);
    let id = dd.launch(R, &img, &["--root-password", "pw", "--allow-faults"]);
    dd.wait_console(R, &id, "login:");
    dd.stop_instance(R, &id);
    assert_code(
        &dd.run(&["--region", R, "fault", "inject", &id, "missing-driver"]),
        0,
    );
    let faults = dd.json(&["--region", R, "fault", "list", &id]);
    assert!(
        faults
            .to_string()
            .contains("virtio_mmio removed from /boot/initrd.img-"),
        "{faults}"
    );
    // Injected twice: refused; reverted and injected again: fine.
    let again = dd.run(&["--region", R, "fault", "inject", &id, "missing-driver"]);
    assert_code(&again, 2);
    assert!(
        text(&again.stderr).contains("already has missing-driver"),
        "{}",
        text(&again.stderr)
    );
    assert_code(&dd.run(&["--region", R, "fault", "revert", &id]), 0);
    assert_code(
        &dd.run(&["--region", R, "fault", "inject", &id, "missing-driver"]),
        0,
    );
    dd.start_instance(R, &id);
    dd.wait_console(
        R,
        &id,
        "did not appear after 5s; the instance type may need a driver this image lacks",
    );

    let out = dd
        .command(&[
            "--json",
            "--region",
            R,
            "run",
            "upgrade-drivers",
            "-p",
            &format!("instance={id}"),
            "-p",
            "target_type=m1.small",
            "-p",
            "password=env:DD_TEST_PW",
            "-p",
            "allow_offline=true",
        ])
        .env("DD_TEST_PW", "pw")
        .output()
        .unwrap();
    assert_code(&out, 0);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["output"]["offline"], true, "{v}");
    let steps: Vec<String> = dd.show(v["execution_id"].as_str().unwrap())["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    for s in [
        "what the guest lacks",
        "backup image",
        "read the kernel release from the root volume",
        "launch a helper instance",
        "install on the helper",
        "attach the root volume back",
        "the instance boots",
    ] {
        assert!(steps.iter().any(|x| x == s), "no step {s}: {steps:?}");
    }
    // It boots and loads the driver again.
    dd.write_runbook(
        "mods.rhai",
        "runbook(#{ name: \"mods\", params: #{ instance: #{ type: \"instance\" } } });\n\
         let c = console::open(params.instance);\nc.wait_for_boot(\"180s\");\nc.login(\"root\", \"pw\");\n\
         c.run(\"cut -d' ' -f1 /proc/modules; cat /etc/initramfs/modules\", \"1m\").stdout\n",
    );
    let out = dd.run(&["--json", "run", "mods", "-p", &format!("instance={id}")]);
    assert_code(&out, 0);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let seen = v["output"].as_str().unwrap();
    assert!(seen.matches("virtio_mmio").count() >= 2, "{seen}");
    assert!(!text(&out.stderr).contains("panicked"));
}

#[test]
fn a_disabled_service_is_started_again_over_the_console() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    let img = dd.image(R);
    let id = dd.launch(R, &img, &["--root-password", "pw", "--allow-faults"]);
    dd.wait_console(R, &id, "drydock: service syslogd started");
    dd.wait_console(R, &id, "login:");
    dd.stop_instance(R, &id);
    // What the fault needs, and refusals that name the problem.
    for (args, says) in [
        (vec!["stop-service"], "needs the service's name"),
        (vec!["stop-service", "nosuch"], "has no service nosuch"),
        (vec!["stop-service", "Bad Name"], "is not a service name"),
        (vec!["lost-password", "syslogd"], "takes no argument"),
    ] {
        let mut all = vec!["--region", R, "fault", "inject", &id];
        all.extend(args.iter().copied());
        let out = dd.run(&all);
        assert_code(&out, 2);
        assert!(
            text(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    assert_code(
        &dd.run(&[
            "--region",
            R,
            "fault",
            "inject",
            &id,
            "stop-service",
            "syslogd",
        ]),
        0,
    );
    dd.start_instance(R, &id);
    dd.wait_console(R, &id, "drydock: service syslogd is disabled");

    let out = dd
        .command(&[
            "--json",
            "--region",
            R,
            "run",
            "start-service",
            "-p",
            &format!("instance={id}"),
            "-p",
            "service=syslogd",
            "-p",
            "password=env:DD_TEST_PW",
        ])
        .env("DD_TEST_PW", "pw")
        .output()
        .unwrap();
    assert_code(&out, 0);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let o = &v["output"];
    assert_eq!(o["before"]["status"], "stopped", "{o}");
    assert_eq!(o["before"]["enabled"], false, "{o}");
    assert_eq!(o["after"]["status"], "running", "{o}");
    assert_eq!(o["after"]["enabled"], true, "{o}");
    // And it starts by itself at the next boot.
    let boots = dd.boots(R, &id);
    dd.reboot_instance(R, &id);
    let start = std::time::Instant::now();
    loop {
        let i = dd.instance(R, &id);
        let console = dd.console(R, &id, None);
        if i["boots"].as_u64().unwrap() > boots && console.contains("login:") {
            assert!(
                console.contains("drydock: service syslogd started"),
                "{console}"
            );
            break;
        }
        assert!(start.elapsed().as_secs() < 150, "no second boot: {console}");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

/// Runs `runbook` with `params` (the password from the environment) and
/// returns its JSON result; it must succeed.
fn run_ok(dd: &Drydock, runbook: &str, params: &[String]) -> Value {
    let mut args = vec!["--json", "--region", R, "run", runbook];
    for p in params {
        args.push("-p");
        args.push(p);
    }
    let out = dd.command(&args).env("DD_TEST_PW", "pw").output().unwrap();
    assert_code(&out, 0);
    let said = text(&out.stdout) + &text(&out.stderr);
    assert!(
        !said.contains("DD_TEST_PW=") && !said.contains("\"pw\""),
        "{said}"
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_other_faults_are_recovered_by_their_runbooks() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    let img = dd.image(R);
    let id = dd.launch(R, &img, &["--root-password", "pw", "--allow-faults"]);
    dd.wait_console(R, &id, "login:");
    let inst = format!("instance={id}");
    let pw = "password=env:DD_TEST_PW".to_string();

    // A mount option the file system rejects: the fstab prompt, answered.
    dd.inject_fault(R, &id, "fstab-bad-option");
    dd.wait_console(R, &id, "Press S to skip mounting or M for manual recovery");
    let v = run_ok(
        &dd,
        "recover-boot-prompt",
        &[inst.clone(), pw.clone(), "reboot_check=false".into()],
    );
    let commented = v["output"]["commented_out"].to_string();
    assert!(commented.contains("drydock-fault-no-such-option"), "{v}");

    // /sbin/init gone: the boot stops before userspace; put back from a
    // rescue instance the runbook launches.
    dd.inject_fault(R, &id, "bad-init");
    dd.wait_console(R, &id, "has no /sbin/init");
    let v = run_ok(
        &dd,
        "rescue-root-volume",
        &[
            inst.clone(),
            pw.clone(),
            "fix=mv sbin/init.drydock-fault sbin/init".into(),
            "verify=test -e /sbin/init && echo init-back".into(),
        ],
    );
    assert!(v["output"].to_string().contains("init-back"), "{v}");

    // A shell profile that ends every login: the login shell dies at once.
    dd.inject_fault(R, &id, "broken-shell-profile");
    dd.wait_console(R, &id, "login:");
    let v = run_ok(
        &dd,
        "rescue-root-volume",
        &[
            inst.clone(),
            pw.clone(),
            "fix=rm -f root/.profile".into(),
            "verify=echo profile-fine".into(),
        ],
    );
    assert!(v["output"].to_string().contains("profile-fine"), "{v}");
    assert_eq!(dd.instance(R, &id)["state"], "running");

    // Lost SSH keys, on an instance whose settings set no password (so a
    // reset is not undone at the next boot): a new key through reset-access.
    let keygen = |name: &str| {
        let file = dd.work().join(name);
        let ok = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C"])
            .arg(format!("{name}@host"))
            .arg("-f")
            .arg(&file)
            .status()
            .unwrap();
        assert!(ok.success());
        file.with_extension("pub")
    };
    let key_file = keygen("old");
    let keyed = dd.launch(
        R,
        &img,
        &["--ssh-key", key_file.to_str().unwrap(), "--allow-faults"],
    );
    dd.wait_console(R, &keyed, "login:");
    dd.stop_instance(R, &keyed);
    assert_code(
        &dd.run(&["--region", R, "fault", "inject", &keyed, "lost-ssh-key"]),
        0,
    );
    let new_key = std::fs::read_to_string(keygen("new")).unwrap();
    let new_key = new_key.trim();
    let v = run_ok(
        &dd,
        "reset-access",
        &[format!("instance={keyed}"), format!("ssh_key={new_key}")],
    );
    assert_eq!(v["state"], "Success", "{v}");
    // Stopped before, stopped after; the key is on its root volume.
    assert_eq!(dd.instance(R, &keyed)["state"], "stopped");
    let root = dd.root_volume(R, &keyed);
    let vols = dd.json(&["--region", R, "volumes"]);
    let path = vols["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == root.as_str())
        .unwrap()["path"]
        .as_str()
        .unwrap()
        .to_string();
    let dumped = std::process::Command::new("debugfs")
        .args(["-R", "cat /root/.ssh/authorized_keys", &path])
        .output()
        .unwrap();
    let keys = text(&dumped.stdout);
    assert!(
        keys.contains("new@host") && !keys.contains("old@host"),
        "{keys}"
    );
}
