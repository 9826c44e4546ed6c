//! Fault injection on real guests (issue 13): faults go only into
//! instances allowed to be broken and only while stopped; each shows its
//! real symptom on the console at the next boot; `fault revert` puts the
//! instance back as it was; a fault injected from a runbook is in the
//! journal.

mod common;

use common::{assert_code, assert_stderr, assert_stdout, text, vm_lock, Drydock};
use serde_json::Value;

const R: &str = "region-a";

#[test]
fn faults_show_their_symptoms_and_revert_cleanly() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    let img = dd.image(R);

    // Not allowed to be broken: refused, nothing changed.
    let safe = dd.launch(R, &img, &["--root-password", "pw"]);
    dd.stop_instance(R, &safe);
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
    dd.terminate(R, &safe);

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
    dd.stop_instance(R, &id);
    let f = dd.json(&["--region", R, "fault", "inject", &id, "fstab-missing-disk"]);
    assert_eq!(f["fault"], "fstab-missing-disk");
    let out = dd.run(&["--region", R, "fault", "inject", &id, "fstab-missing-disk"]);
    assert_stderr(&out, 2, &["already has"]);
    dd.start_instance(R, &id);
    dd.wait_console(R, &id, "Press S to skip mounting or M for manual recovery");
    dd.force_stop(R, &id);

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
    dd.start_instance(R, &id);
    let out = dd.console_run_plain(R, &id, "pw", "120s", "id -u");
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("refused"),
        "{}",
        text(&out.stderr)
    );
    dd.stop_instance(R, &id);

    // Every fault reverted: the password works again; then disk-full.
    assert_code(&dd.run(&["--region", R, "fault", "revert", &id]), 0);
    assert_eq!(dd.instance(R, &id)["config"]["root_password"], "set");
    assert_code(
        &dd.run(&["--region", R, "fault", "inject", &id, "disk-full"]),
        0,
    );
    dd.start_instance(R, &id);
    let out = dd.console_run_plain(R, &id, "pw", "120s", "df -P / | tail -n 1");
    assert_stdout(&out, 0, &["100%"]);
    dd.stop_instance(R, &id);

    // bad-init: the boot stops before userspace, saying why.
    assert_code(
        &dd.run(&["--region", R, "fault", "revert", &id, "disk-full"]),
        0,
    );
    assert_code(
        &dd.run(&["--region", R, "fault", "inject", &id, "bad-init"]),
        0,
    );
    dd.start_instance(R, &id);
    dd.wait_console(R, &id, "has no /sbin/init");
    dd.force_stop(R, &id);

    // All reverted: a clean boot, the disk has room, init is back.
    assert_code(&dd.run(&["--region", R, "fault", "revert", &id]), 0);
    dd.start_instance(R, &id);
    let out = dd.console_run_plain(
        R,
        &id,
        "pw",
        "120s",
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
