//! The command line: validate, runbooks, executions, usage errors, and the
//! bundled demo runbook end to end.

mod common;

use common::{assert_code, text, wait_child, Drydock};

#[test]
fn validate_reports_file_line_column_and_exits_2() {
    let dd = Drydock::new();
    let good = dd.write_runbook(
        "good.rhai",
        "runbook(#{ name: \"good\", params: #{ n: #{ type: \"int\" } } });\nstep(\"s\", || 1);\n",
    );
    let bad = dd.write_runbook(
        "bad.rhai",
        "runbook(#{ name: \"bad\" });\nstep(\"s\", || {\n  let = 1;\n});\n",
    );
    let meta = dd.write_runbook(
        "meta.rhai",
        "runbook(#{ name: \"meta\", params: #{ n: #{ type: \"integer\" } } });\n",
    );
    let out = dd.run(&["validate", good.to_str().unwrap()]);
    assert_code(&out, 0);
    assert!(text(&out.stdout).contains("ok:") && text(&out.stdout).contains("1 parameters"));
    let out = dd.run(&[
        "validate",
        good.to_str().unwrap(),
        bad.to_str().unwrap(),
        meta.to_str().unwrap(),
    ]);
    assert_code(&out, 2);
    let err = text(&out.stderr);
    assert!(err.contains(&format!("{}:3:", bad.display())), "{err}");
    assert!(
        err.contains(&format!(
            "{}:1:1: parameter `n`: unknown type \"integer\"",
            meta.display()
        )),
        "{err}"
    );
}

#[test]
fn runbooks_lists_bundled_and_user_runbooks() {
    let dd = Drydock::new();
    dd.write_runbook(
        "mine.rhai",
        "runbook(#{ name: \"mine\", description: \"my own\" });\n",
    );
    dd.write_runbook("broken.rhai", "runbook(#{ name: \"Broken Name\" });\n");
    let list = dd.json(&["runbooks"]);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert!(
        names.contains(&"mine") && names.contains(&"clean-old-files"),
        "{names:?}"
    );
    assert!(list.as_array().unwrap().iter().any(|r| r["error"]
        .as_str()
        .is_some_and(|e| e.contains("must be lowercase"))));
    let table = text(&dd.run(&["runbooks"]).stdout);
    assert!(
        table.contains("my own") && table.contains("bundled"),
        "{table}"
    );
}

#[test]
fn unknown_runbooks_commands_and_executions_are_usage_errors() {
    let dd = Drydock::new();
    let out = dd.run(&["run", "no-such-runbook"]);
    assert_code(&out, 2);
    let said = text(&out.stderr);
    assert!(
        said.contains("no runbook named `no-such-runbook`; known runbooks: ")
            && said.contains(" clean-old-files, ")
            && said.contains("List them with `drydock runbooks`"),
        "{said}"
    );
    assert_code(&dd.run(&["frobnicate"]), 2);
    let out = dd.run(&["executions", "show", "ex-nope"]);
    assert_code(&out, 2);
    assert!(text(&out.stderr).contains("no execution matches `ex-nope`"));
    let out = dd.run(&["executions", "--state", "Sleeping"]);
    assert_code(&out, 2);
    assert!(text(&out.stderr).contains("expected one of Pending, InProgress"));
}

#[test]
fn the_bundled_demo_runbook_finds_asks_deletes_and_verifies() {
    let alice = common::os_users::os_user("ddalice", &["ddops"]);
    let mut dd = Drydock::new();
    dd.group = Some("ddops".into());
    dd.open_to_other_users();
    let dir = dd.work().join("logs");
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["old-1.log", "old-2.log", "fresh.log"] {
        std::fs::write(dir.join(name), "data\n").unwrap();
    }
    let ten_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(10 * 86400);
    for name in ["old-1.log", "old-2.log"] {
        std::fs::File::options()
            .write(true)
            .open(dir.join(name))
            .unwrap()
            .set_modified(ten_days_ago)
            .unwrap();
    }
    let dir_s = dir.to_str().unwrap();
    let child = dd.spawn(&[
        "run",
        "clean-old-files",
        "-p",
        &format!("dir={dir_s}"),
        "-p",
        "approvers=ddalice",
    ]);
    let id = dd.only_execution();
    dd.wait_for_approval(&id);
    let pending = dd.json(&["approvals"]);
    assert!(pending[0]["message"]
        .as_str()
        .unwrap()
        .starts_with("Delete 2 files"));
    assert!(
        dir.join("old-1.log").exists(),
        "nothing is deleted before approval"
    );
    assert_code(&dd.run_as(&alice, &["approve", &id]), 0);
    let out = wait_child(child);
    assert_code(&out, 0);
    assert!(!dir.join("old-1.log").exists() && !dir.join("old-2.log").exists());
    assert!(dir.join("fresh.log").exists());
    let progress = text(&out.stderr);
    assert!(
        progress.contains("[1] find old files ... ok in"),
        "{progress}"
    );
    assert!(
        progress.contains("[3] delete files ... ok in"),
        "{progress}"
    );
    let show = text(&dd.run(&["executions", "show", &id]).stdout);
    assert!(show.contains("alice approved"), "{show}");
    assert!(show.contains("verify"), "{show}");
}

#[test]
fn the_rhai_in_the_readme_and_docs_is_valid() {
    let dd = Drydock::new();
    // README.md and every markdown file under docs/.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    let mut dirs = vec![root.join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|x| x == "md") {
                files.push(path);
            }
        }
    }
    let texts: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    let blocks: Vec<&str> = texts
        .iter()
        .flat_map(|t| t.split("```rhai\n").skip(1))
        .map(|b| &b[..b.find("```").unwrap()])
        .collect();
    assert!(
        blocks.len() >= 5,
        "the docs have rhai examples: {}",
        blocks.len()
    );
    for (i, block) in blocks.iter().enumerate() {
        // Snippets without metadata are checked for syntax under a minimal header.
        let source = if block.contains("runbook(#{") {
            block.to_string()
        } else {
            format!("runbook(#{{ name: \"snippet-{i}\" }});\n{block}")
        };
        let file = dd.write_runbook(&format!("readme-{i}.rhai"), &source);
        let out = dd.run(&["validate", file.to_str().unwrap()]);
        assert_code(&out, 0);
    }
    for name in ["my-runbook", "restart-service"] {
        assert!(
            blocks
                .iter()
                .any(|b| b.contains(&format!("name: \"{name}\""))),
            "the docs show runbook {name} whole"
        );
    }
}

#[test]
fn runbook_directories_come_from_the_env_var_and_the_config_file() {
    let dd = Drydock::new();
    let env_dir = dd.work().join("env-runbooks");
    let cfg_dir = dd.work().join("cfg-runbooks");
    std::fs::create_dir_all(&env_dir).unwrap();
    std::fs::create_dir_all(&cfg_dir).unwrap();
    std::fs::write(
        env_dir.join("a.rhai"),
        "runbook(#{ name: \"from-env\" });\n",
    )
    .unwrap();
    std::fs::write(
        cfg_dir.join("b.rhai"),
        "runbook(#{ name: \"from-config\" });\n",
    )
    .unwrap();
    let config = dd.work().join("config.toml");
    std::fs::write(
        &config,
        format!("runbook_dirs = [{:?}]\n", cfg_dir.to_str().unwrap()),
    )
    .unwrap();
    let out = dd
        .command(&["--json", "--config", config.to_str().unwrap(), "runbooks"])
        .env("DRYDOCK_RUNBOOK_PATH", &env_dir)
        .output()
        .unwrap();
    assert_code(&out, 0);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert!(
        names.contains(&"from-env") && names.contains(&"from-config"),
        "{names:?}"
    );

    std::fs::write(&config, "runbook_dirz = []\n").unwrap();
    let out = dd.run(&["--config", config.to_str().unwrap(), "runbooks"]);
    assert_code(&out, 2);
    assert!(
        text(&out.stderr).contains("is not valid") && text(&out.stderr).contains("runbook_dirz")
    );
}

#[test]
fn plural_resource_commands_take_actions_too() {
    let dd = Drydock::new();
    let out = dd.run(&["--json", "volumes", "create", "--size", "8"]);
    assert_code(&out, 0);
    let vol: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = vol["id"].as_str().unwrap();
    let out = dd.run(&["--json", "snapshots", "create", id]);
    assert_code(&out, 0);
    assert_eq!(
        dd.json(&["snapshots"])["snapshots"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_code(&dd.run(&["volumes", "delete", id]), 0);
    assert!(dd.json(&["volumes"])["volumes"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn a_reader_that_goes_away_is_not_a_crash() {
    use std::os::unix::process::ExitStatusExt;
    let dd = Drydock::new();
    dd.write_runbook(
        "big.rhai",
        "runbook(#{ name: \"big\" });\nlet s = \"\";\nfor i in 0..2000 { s += \"0123456789abcdef\"; }\ns\n",
    );
    // A listing whose reader is gone ends by SIGPIPE, quietly, as `ls | head` does.
    let mut child = dd
        .command(&["runbooks"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() || out.status.signal() == Some(13),
        "{:?}: {}",
        out.status,
        text(&out.stderr)
    );
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
    // A run whose reader is gone still completes and is journaled; no panic.
    let mut child = dd
        .command(&["--json", "run", "big"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(dd.state(&dd.only_execution()), "Success");
}

fn mode_of(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// "Older data directories are tightened by the first command": any
/// command, not only host commands.
#[test]
fn any_command_tightens_a_data_directory_left_by_an_older_drydock() {
    use std::os::unix::fs::PermissionsExt;
    let set = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    for command in [&["param", "list"][..], &["executions"], &["runbooks"]] {
        let dd = Drydock::new();
        assert_code(&dd.run(&["param", "list"]), 0);
        let data = dd.data_dir();
        // As an older drydock left it: no mark, open modes.
        let _ = std::fs::remove_file(data.join(".modes-tightened-v1"));
        let journal = data.join("journal.sqlite3");
        let logs = data.join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let log = logs.join("ex-old.log");
        std::fs::write(&log, "old\n").unwrap();
        set(&data, 0o755);
        set(&journal, 0o644);
        set(&logs, 0o755);
        set(&log, 0o644);
        assert_code(&dd.run(command), 0);
        assert_eq!(mode_of(&data), 0o700, "{command:?}");
        assert_eq!(mode_of(&journal), 0o600, "{command:?}");
        assert_eq!(mode_of(&logs), 0o700, "{command:?}");
        assert_eq!(mode_of(&log), 0o600, "{command:?}");
    }
}

/// Every command that changes something prints the resulting object
/// with `--json` (they printed nothing).
#[test]
fn json_prints_the_resulting_object_for_every_change() {
    let dd = Drydock::new();
    let ics = dd.work().join("holidays.ics");
    std::fs::write(
        &ics,
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:1\r\nDTSTART:20301224T000000Z\r\nDTEND:20301227T000000Z\r\nSUMMARY:Holidays\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
    )
    .unwrap();
    let json = |args: &[&str]| -> serde_json::Value {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        let out = dd.run(&full);
        assert_code(&out, 0);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {:?}", text(&out.stdout)))
    };
    let v = json(&["calendar", "add", "prod", "--default", "open"]);
    assert_eq!(v["name"], "prod", "{v}");
    assert_eq!(v["default_state"], "open", "{v}");
    let v = json(&["calendar", "import", "prod", ics.to_str().unwrap()]);
    assert_eq!(v["imported"], 1, "{v}");
    assert_eq!(v["events"].as_array().map(Vec::len), Some(1), "{v}");
    let v = json(&["calendar", "remove", "prod"]);
    assert_eq!(
        (&v["calendar"], &v["removed"]),
        (&"prod".into(), &true.into())
    );

    let v = json(&[
        "windows",
        "add",
        "nightly",
        "--schedule",
        "cron(0 2 * * ? *)",
        "--duration",
        "4h",
        "--cutoff",
        "1h",
    ]);
    assert_eq!(v["name"], "nightly", "{v}");
    let v = json(&[
        "windows",
        "task",
        "nightly",
        "tidy",
        "--runbook",
        "clean-old-files",
        "-p",
        "dir=/tmp",
    ]);
    assert_eq!(
        (&v["name"], &v["runbook"]),
        (&"tidy".into(), &"clean-old-files".into()),
        "{v}"
    );
    let v = json(&["windows", "remove", "nightly"]);
    assert_eq!(v["removed"], true, "{v}");

    assert_code(
        &dd.run(&[
            "schedules",
            "add",
            "poll",
            "--runbook",
            "clean-old-files",
            "--schedule",
            "rate(1 hour)",
            "-p",
            "dir=/tmp",
        ]),
        0,
    );
    let v = json(&["schedules", "pause", "poll"]);
    assert_eq!(
        (&v["name"], &v["paused"]),
        (&"poll".into(), &true.into()),
        "{v}"
    );
    let v = json(&["schedules", "resume", "poll"]);
    assert_eq!(v["paused"], false, "{v}");
    let v = json(&["schedules", "remove", "poll"]);
    assert_eq!(v["removed"], true, "{v}");

    assert_code(&dd.run(&["param", "put", "app/port", "--value", "80"]), 0);
    assert_code(&dd.run(&["param", "put", "app/port", "--value", "81"]), 0);
    let v = json(&["param", "label", "app/port", "2", "prod"]);
    assert_eq!(
        (&v["version"], &v["label"]),
        (&2.into(), &"prod".into()),
        "{v}"
    );
    let v = json(&["param", "delete", "app/port"]);
    assert_eq!(
        (&v["deleted"], &v["versions"]),
        (&true.into(), &2.into()),
        "{v}"
    );
}

#[test]
fn all_regions_with_nothing_anywhere_says_so_and_volume_list_takes_no_argument() {
    let dd = Drydock::new();
    let out = dd.run(&["instances", "--all-regions"]);
    assert_code(&out, 0);
    let o = text(&out.stdout);
    assert!(o.contains("no instances in any region"), "{o}");
    assert!(!o.contains("no instances in region-a"), "{o}");

    assert_code(&dd.run(&["volume", "create", "--size", "8"]), 0);
    dd.write_runbook(
        "vols.rhai",
        "runbook(#{ name: \"vols\" });\nstep(\"count\", || volume::list().len() + instance::list().len() * 100)",
    );
    let out = dd.run(&["--json", "run", "vols"]);
    assert_code(&out, 0);
    let id = dd.only_execution();
    let shown = dd.show(&id).to_string();
    assert!(
        shown.contains("\"output\":1") || shown.contains("\"output\": 1"),
        "{shown}"
    );
}
