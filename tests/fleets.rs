//! Fleets: one runbook over instances chosen by tag, with a concurrency
//! limit and an error threshold, on real instances. Each child records
//! when it starts and ends, so the test can check that concurrency was
//! never exceeded and that no target started after the threshold.

mod common;

use common::{assert_code, assert_stderr, vm_lock, Drydock};

const R: &str = "region-a";

const CHECK: &str = r#"
runbook(#{ name: "check-host", params: #{ instance: #{ type: "instance" } } });
let log = `${env("WORK")}/fleet.log`;
step("work", || {
    append_file(log, `start ${params.instance} ${now_unix()}\n`);
    sleep(1.5);
    let tags = instance::describe(params.instance).tags;
    append_file(log, `end ${params.instance} ${now_unix()}\n`);
    if tags.fail == "yes" { throw `${params.instance} is broken`; }
    tags.role
})
"#;

/// The largest number of targets running at the same time, from the log.
fn max_overlap(log: &str) -> usize {
    let mut now = 0usize;
    let mut max = 0usize;
    for line in log.lines() {
        if line.starts_with("start ") {
            now += 1;
            max = max.max(now);
        } else if line.starts_with("end ") {
            now = now.saturating_sub(1);
        }
    }
    max
}

#[test]
fn a_fleet_by_tag_respects_concurrency_and_stops_after_too_many_errors() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    dd.write_runbook("check-host.rhai", CHECK);
    let img = dd.image(R);
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(dd.launch(R, &img, &["--type", "m1.small"]));
    }
    for (i, id) in ids.iter().enumerate() {
        let role = if i < 4 { "role=web" } else { "role=db" };
        assert_code(&dd.run(&["--region", R, "tag", id, role]), 0);
    }
    // The first two web targets fail.
    for id in &ids[..2] {
        assert_code(&dd.run(&["--region", R, "tag", id, "fail=yes"]), 0);
    }
    let out = dd.run(&[
        "--json",
        "--region",
        R,
        "run",
        "check-host",
        "--targets",
        "tag:role=web",
        "--max-concurrency",
        "2",
        "--max-errors",
        "1",
    ]);
    assert_code(&out, 1);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let summary = &v["output"];
    assert_eq!(summary["targets"].as_array().unwrap().len(), 4, "{summary}");
    assert_eq!(summary["failed"], 2, "{summary}");
    // The two failing targets run first, together; whether the third
    // starts depends on which of them fails first (one failure is
    // allowed), but after the second no target starts.
    let not_started = summary["not_started"].as_u64().unwrap();
    assert!(
        not_started >= 1,
        "stopped after more than 1 failed: {summary}"
    );
    assert_eq!(
        summary["succeeded"].as_u64().unwrap() + not_started,
        2,
        "{summary}"
    );
    let targets = summary["targets"].as_array().unwrap();
    for (i, t) in targets.iter().enumerate() {
        assert_eq!(t["target"], ids[i]);
        if i < 2 {
            assert_eq!(t["outcome"], "failed", "{summary}");
        }
    }
    assert_eq!(targets[3]["outcome"], "not started", "{summary}");
    assert!(v["error"]
        .as_str()
        .unwrap()
        .contains("2 of 4 targets failed; stopped starting targets after 2 failed"));
    let log = std::fs::read_to_string(dd.work().join("fleet.log")).unwrap();
    assert!(max_overlap(&log) <= 2, "{log}");
    assert!(
        !log.contains(&ids[4]),
        "the db instance is not a target: {log}"
    );

    // A percentage: 50% of 4 errors allowed; the others succeed.
    std::fs::remove_file(dd.work().join("fleet.log")).unwrap();
    let out = dd.run(&[
        "--json",
        "--region",
        R,
        "run",
        "check-host",
        "--targets",
        "tag:role=web",
        "--max-concurrency",
        "50%",
        "--max-errors",
        "50%",
    ]);
    assert_code(&out, 1);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["output"]["succeeded"], 2, "{}", v["output"]);
    assert_eq!(v["output"]["failed"], 2);
    assert_eq!(v["output"]["not_started"], 0);
    let log = std::fs::read_to_string(dd.work().join("fleet.log")).unwrap();
    assert!(max_overlap(&log) <= 2, "{log}");
    // The parent lists a child per target.
    let parent = v["execution_id"].as_str().unwrap();
    let show = dd.show(parent);
    assert_eq!(show["children"].as_array().unwrap().len(), 4);

    // Bad fleets are usage errors: nothing matches, a bad count.
    let out = dd.run(&[
        "--region",
        R,
        "run",
        "check-host",
        "--targets",
        "tag:role=cache",
    ]);
    assert_stderr(&out, 2, &["matched nothing"]);
    let out = dd.run(&[
        "--region",
        R,
        "run",
        "check-host",
        "--targets",
        "tag:role=web",
        "--max-errors",
        "many",
    ]);
    assert_code(&out, 2);

    // From a schedule: the targets are resolved when the slot runs.
    let at = format!(
        "at({})",
        (chrono::Utc::now() + chrono::Duration::seconds(2)).format("%Y-%m-%dT%H:%M:%S")
    );
    assert_code(
        &dd.run(&[
            "--region",
            R,
            "schedules",
            "add",
            "web-check",
            "--runbook",
            "check-host",
            "--schedule",
            &at,
            "--targets",
            "tag:role=web",
            "--max-concurrency",
            "2",
            "--max-errors",
            "4",
        ]),
        0,
    );
    let mut serve = dd
        .command(&["--region", R, "serve", "--listen", "off"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let parent = loop {
        let show = dd.json(&["schedules", "show", "web-check"]);
        if let Some(id) = show["slots"][0]["execution_id"].as_str() {
            if matches!(dd.state(id).as_str(), "Success" | "Failed") {
                break id.to_string();
            }
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "the scheduled fleet never ended"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    serve.kill().unwrap();
    serve.wait().unwrap();
    let show = dd.show(&parent);
    assert_eq!(
        show["execution"]["output"]["succeeded"], 2,
        "{}",
        show["execution"]["output"]
    );
    assert_eq!(show["execution"]["output"]["failed"], 2);
    assert_eq!(show["children"].as_array().unwrap().len(), 4);
}
