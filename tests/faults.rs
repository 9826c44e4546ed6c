//! Fault injection on real guests (issue 13): faults go only into
//! instances allowed to be broken and only while stopped; each shows its
//! real symptom on the console at the next boot; `fault revert` puts the
//! instance back as it was; a fault injected from a runbook is in the
//! journal.

mod common;

use common::{assert_code, assert_stderr, assert_stdout, text, vm_lock, Drydock};
use serde_json::Value;

const R: &str = "region-a";

/// Logs in over the console through the REPL's primitives and runs `cmd`.
fn console_run(dd: &Drydock, id: &str, cmd: &str) -> std::process::Output {
    let script = format!(
        "let c = console::open(\"{id}\"); c.wait_for_boot(\"120s\"); c.login(\"root\", \"pw\"); c.run(\"{cmd}\", \"60s\").stdout"
    );
    dd.run(&["--region", R, "repl", "-c", &script])
}

fn stop(dd: &Drydock, id: &str, force: bool) {
    let mut args = vec!["--region", R, "instance", "stop", id];
    if force {
        args.push("--force");
    }
    assert_code(&dd.run(&args), 0);
}

fn start(dd: &Drydock, id: &str) {
    assert_code(&dd.run(&["--region", R, "instance", "start", id]), 0);
}

#[test]
fn faults_show_their_symptoms_and_revert_cleanly() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    let img = dd.image(R);

    // Not allowed to be broken: refused, nothing changed.
    let safe = dd.launch(R, &img, &["--root-password", "pw"]);
    stop(&dd, &safe, false);
    let out = dd.run(&[
        "--region",
        R,
        "fault",
        "inject",
        &safe,
        "fstab-missing-disk",
    ]);
    assert_stderr(&out, 2, &["not allowed to be broken"]);
    let list = dd.json(&["--region", R, "fault", "list"]);
    assert_eq!(list["faults"].as_array().unwrap().len(), 0);
    assert_code(&dd.run(&["--region", R, "instance", "terminate", &safe]), 0);

    let id = dd.launch(R, &img, &["--root-password", "pw", "--allow-faults"]);
    assert_eq!(dd.instance(R, &id)["tags"]["allow-faults"], "true");
    dd.wait_console(R, &id, "login:");
    // Running: refused with the fix.
    let out = dd.run(&["--region", R, "fault", "inject", &id, "disk-full"]);
    assert_stderr(&out, 2, &["stop it first"]);
    // Unknown kind: a usage error naming the known ones.
    let out = dd.run(&["--region", R, "fault", "inject", &id, "no-such-fault"]);
    assert_stderr(&out, 2, &["fstab-missing-disk"]);
    let kinds = dd.json(&["fault", "kinds"]);
    assert!(kinds["kinds"].as_array().unwrap().len() >= 7, "{kinds}");

    // fstab-missing-disk: the boot stops at the classic prompt.
    stop(&dd, &id, false);
    let f = dd.json(&["--region", R, "fault", "inject", &id, "fstab-missing-disk"]);
    assert_eq!(f["fault"], "fstab-missing-disk");
    let out = dd.run(&["--region", R, "fault", "inject", &id, "fstab-missing-disk"]);
    assert_stderr(&out, 2, &["already has"]);
    start(&dd, &id);
    dd.wait_console(R, &id, "Press S to skip mounting or M for manual recovery");
    stop(&dd, &id, true);

    // Reverted, then lost-password injected from a runbook: journaled.
    let reverted = dd.json(&["--region", R, "fault", "revert", &id]);
    assert_eq!(reverted["faults"][0]["id"], f["id"]);
    dd.write_runbook(
        "break-it.rhai",
        r#"
runbook(#{ name: "break-it", params: #{ instance: #{ type: "instance" }, fault: #{ type: "string" } } });
step("inject", || fault::inject(params.instance, params.fault).detail)
"#,
    );
    let out = dd.run(&[
        "--json",
        "--region",
        R,
        "run",
        "break-it",
        "-p",
        &format!("instance={id}"),
        "-p",
        "fault=lost-password",
    ]);
    assert_code(&out, 0);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let shown = dd.show(v["execution_id"].as_str().unwrap());
    assert!(
        shown["steps"][0]["output"]
            .as_str()
            .unwrap()
            .contains("root's password locked"),
        "{shown}"
    );
    assert_eq!(
        dd.instance(R, &id)["config"]["root_password"],
        "not set",
        "the settings no longer set the password at boot"
    );
    start(&dd, &id);
    let out = console_run(&dd, &id, "id -u");
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("refused"),
        "{}",
        text(&out.stderr)
    );
    stop(&dd, &id, false);

    // Every fault reverted: the password works again; then disk-full.
    assert_code(&dd.run(&["--region", R, "fault", "revert", &id]), 0);
    assert_eq!(dd.instance(R, &id)["config"]["root_password"], "set");
    assert_code(
        &dd.run(&["--region", R, "fault", "inject", &id, "disk-full"]),
        0,
    );
    start(&dd, &id);
    let out = console_run(&dd, &id, "df -P / | tail -n 1");
    assert_stdout(&out, 0, &["100%"]);
    stop(&dd, &id, false);

    // bad-init: the boot stops before userspace, saying why.
    assert_code(
        &dd.run(&["--region", R, "fault", "revert", &id, "disk-full"]),
        0,
    );
    assert_code(
        &dd.run(&["--region", R, "fault", "inject", &id, "bad-init"]),
        0,
    );
    start(&dd, &id);
    dd.wait_console(R, &id, "has no /sbin/init");
    stop(&dd, &id, true);

    // All reverted: a clean boot, the disk has room, init is back.
    assert_code(&dd.run(&["--region", R, "fault", "revert", &id]), 0);
    start(&dd, &id);
    let out = console_run(
        &dd,
        &id,
        "df -P / | tail -n 1; ls /sbin/init; grep -c drydock-fault /etc/fstab",
    );
    assert_code(&out, 0);
    let o = text(&out.stdout);
    assert!(!o.contains("100%"), "{o}");
    assert!(o.contains("/sbin/init"), "{o}");
    let boot = dd.console(R, &id, None);
    assert!(!boot.contains("Press S to skip"), "{boot}");
    let list = dd.json(&["--region", R, "fault", "list", &id]);
    let faults = list["faults"].as_array().unwrap();
    assert_eq!(faults.len(), 4, "{list}");
    assert!(faults.iter().all(|f| f["reverted_at"].is_i64()), "{list}");
}
