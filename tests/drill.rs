//! Disaster-recovery drills on real guests: `dr-drill` copies recovery
//! points of running instances of region-a into region-b, restores them
//! there (a child execution in region-b), checks the steady state over the
//! serial console, measures RTO and RPO, and tears everything down;
//! `drydock drill report` shows the verdict and draws the timeline.

mod common;

use common::{assert_code, assert_stderr, text, vm_lock, Drydock};
use serde_json::Value;

const A: &str = "region-a";
const B: &str = "region-b";

fn live_instances(dd: &Drydock, region: &str) -> Vec<String> {
    dd.json(&["--region", region, "instances"])["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["state"] != "terminated")
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

fn images(dd: &Drydock, region: &str) -> Vec<Value> {
    dd.json(&["--region", region, "images"])["images"]
        .as_array()
        .unwrap()
        .clone()
}

fn run_drill(dd: &Drydock, extra: &[&str]) -> (std::process::Output, String) {
    let mut args = vec![
        "--region",
        A,
        "--json",
        "run",
        "dr-drill",
        "-p",
        "target_region=region-b",
        "-p",
        "password=env:DRILL_PASSWORD",
    ];
    args.extend_from_slice(extra);
    let out = dd
        .command(&args)
        .env("DRILL_PASSWORD", "hunter2")
        .output()
        .unwrap();
    let exec = dd.only_execution_of("dr-drill");
    (out, exec)
}

fn report(dd: &Drydock, exec: &str, extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["--json", "drill", "report", exec];
    args.extend_from_slice(extra);
    let out = dd.run(&args);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "drill report is not JSON ({e}): {}{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    });
    (out.status.code().unwrap(), v)
}

#[test]
fn a_drill_of_two_instances_restores_them_in_region_b_measures_and_tears_down() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    let img = dd.image(A);
    let ids: Vec<String> = (0..2)
        .map(|_| {
            dd.launch(
                A,
                &img,
                &["--type", "m1.small", "--root-password", "hunter2"],
            )
        })
        .collect();
    for id in &ids {
        assert_code(&dd.run(&["--region", A, "tag", id, "drill=yes"]), 0);
    }
    let images_before = images(&dd, A).len();
    let (out, exec) = run_drill(
        &dd,
        &[
            "-p",
            "instances=[\"tag:drill=yes\"]",
            // The console check (which also starts busybox's httpd), SSH's
            // port as a user reaches it, and a GET of the web service.
            "-p",
            "steady_state={\"command\": \"touch /root/.drill-rw && rm /root/.drill-rw && mkdir -p /srv/www && echo up > /srv/www/health && (netstat -ltn | grep -q :8000 || busybox httpd -p 8000 -h /srv/www) && echo steady-state-ok\", \"expect\": \"steady-state-ok\", \"tcp\": 22, \"http\": \"http://{ip}:8000/health\"}",
            "-p",
            "rto=15m",
            "-p",
            "rpo=5m",
        ],
    );
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_code(&out, 0);
    assert!(!all.contains("hunter2"), "{all}");

    let (code, v) = report(&dd, &exec, &[]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["verdict"], "met");
    assert_eq!(v["state"], "Success");
    let r = &v["report"];
    assert_eq!(r["source_region"], A);
    assert_eq!(r["target_region"], B);
    assert_eq!(r["rto_target_ms"], 900_000);
    assert_eq!(r["rpo_target_ms"], 300_000);
    assert_eq!(r["kept"], false);
    let rows = r["instances"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let mut sources: Vec<&str> = rows.iter().map(|x| x["source"].as_str().unwrap()).collect();
    sources.sort();
    let mut want: Vec<&str> = ids.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(sources, want);
    let started = r["started_ms"].as_i64().unwrap();
    for row in rows {
        assert_eq!(row["steady_state"], "met", "{row}");
        assert!(row["steady_output"]
            .as_str()
            .unwrap()
            .contains("steady-state-ok"));
        assert_eq!(row["marker_found"], true, "{row}");
        assert_eq!(row["steady_tcp"]["open"], true, "{row}");
        assert!(
            row["steady_tcp"]["address"]
                .as_str()
                .unwrap()
                .starts_with("10.2."),
            "checked in region-b's VPC: {row}"
        );
        assert_eq!(row["steady_http"]["ok"], true, "{row}");
        assert_eq!(row["steady_http"]["status"], 200, "{row}");
        assert!(
            row["steady_http"]["url"]
                .as_str()
                .unwrap()
                .starts_with("http://10.2.")
                && row["steady_http"]["url"]
                    .as_str()
                    .unwrap()
                    .ends_with(":8000/health"),
            "{{ip}} is the restored instance's address: {row}"
        );
        assert_eq!(row["rto"], "met");
        assert_eq!(row["rpo"], "met");
        let restored = row["restored_instance"].as_str().unwrap();
        assert!(restored.starts_with("i-") && !ids.iter().any(|i| i == restored));
        assert!(row["copied_image"].as_str().unwrap().starts_with("img-"));
        assert_ne!(row["copied_image"], row["recovery_point"]);
        // RTO: from the drill's start to the steady state in region-b.
        let met = row["steady_met_ms"].as_i64().unwrap();
        assert_eq!(row["rto_ms"].as_i64().unwrap(), met - started);
        assert!(met > started && met <= r["ended_ms"].as_i64().unwrap());
        // RPO: the recovery point's time minus the marker read back.
        let rpo = row["rpo_ms"].as_i64().unwrap();
        assert_eq!(
            rpo,
            row["recovery_point_ms"].as_i64().unwrap() - row["marker_ms"].as_i64().unwrap()
        );
        assert!((0..300_000).contains(&rpo), "{rpo}");
    }
    // The timeline covers both regions: the restore ran in region-b.
    let timeline = v["timeline"].as_array().unwrap();
    for (region, step) in [
        (A, "find the instances"),
        (A, "verdict"),
        (B, "launch from img-"),
        (B, "steady state of i-"),
        (B, "cleanup: terminate i-"),
    ] {
        assert!(
            timeline
                .iter()
                .any(|b| b["region"] == region && b["step"].as_str().unwrap().starts_with(step)),
            "no {step} in {region}: {timeline:?}"
        );
    }
    // Torn down: nothing left in region-b, no drill image in region-a.
    assert!(
        live_instances(&dd, B).is_empty(),
        "{:?}",
        live_instances(&dd, B)
    );
    assert!(images(&dd, B).is_empty(), "{:?}", images(&dd, B));
    assert_eq!(images(&dd, A).len(), images_before);
    // The sources run on, untouched.
    for id in &ids {
        assert_eq!(dd.instance(A, id)["state"], "running");
    }

    // The readable report and the picture.
    let out = dd.run(&["drill", "report", &exec[..10]]);
    assert_code(&out, 0);
    let table = text(&out.stdout);
    println!("{table}");
    assert!(
        table.contains("verdict    met") && table.contains("region-a -> region-b"),
        "{table}"
    );
    for id in &ids {
        assert!(table.contains(id.as_str()), "{table}");
    }
    let page = dd.work().join("drill.html");
    let svg = dd.work().join("drill.svg");
    let out = dd.run(&[
        "drill",
        "report",
        &exec,
        "--html",
        page.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert_code(&out, 0);
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(picture.starts_with("<svg"));
    assert_eq!(picture.matches("<g class=\"step\"").count(), timeline.len());
    assert!(picture.contains("class=\"rto-target\""));
    assert_eq!(picture.matches("<g class=\"mark\"").count(), 2);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("<svg") && html.contains("<h1>DR drill"));

    // A report of something that is not a drill is a usage error.
    dd.write_runbook(
        "not-a-drill.rhai",
        "runbook(#{ name: \"not-a-drill\" });\nstep(\"x\", || 1);\n",
    );
    assert_code(&dd.run(&["run", "not-a-drill"]), 0);
    let other = dd.only_execution_of("not-a-drill");
    let out = dd.run(&["drill", "report", &other]);
    assert_stderr(&out, 2, &["not dr-drill"]);
}

#[test]
fn a_drill_whose_steady_state_fails_in_the_target_is_breached_and_still_tears_down() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    let img = dd.image(A);
    let id = dd.launch(
        A,
        &img,
        &["--type", "m1.small", "--root-password", "hunter2"],
    );
    // The host name is the instance's id: the source has it, the restored
    // instance (another id) does not.
    let steady = format!("{{\"command\": \"hostname\", \"expect\": \"{id}\"}}");
    let (out, exec) = run_drill(
        &dd,
        &[
            "-p",
            &format!("instances=[\"{id}\"]"),
            "-p",
            &format!("steady_state={steady}"),
        ],
    );
    assert_code(&out, 1);
    let (code, v) = report(&dd, &exec, &[]);
    assert_eq!(code, 1);
    assert_eq!(v["verdict"], "breached");
    assert_eq!(v["state"], "Failed");
    let row = &v["report"]["instances"][0];
    assert_eq!(row["source"], id.as_str());
    assert_eq!(row["steady_state"], "failed");
    assert_eq!(row["rto"], "breached");
    assert!(row["rto_ms"].is_null());
    // The verdict is an event, about this execution.
    let events = dd.json(&["events", "--type", "drill.verdict"]);
    let ev = &events["events"][0];
    assert_eq!(ev["data"]["verdict"], "breached", "{events}");
    assert_eq!(ev["execution"], exec.as_str(), "{events}");
    assert_eq!(
        ev["data"]["instances"][0]["source"],
        id.as_str(),
        "{events}"
    );
    assert_eq!(
        events["events"].as_array().unwrap().len(),
        1,
        "once: {events}"
    );
    assert!(
        row["error"].as_str().unwrap().contains("does not show"),
        "{row}"
    );
    // Still torn down.
    assert!(live_instances(&dd, B).is_empty());
    assert!(images(&dd, B).is_empty());
    assert_eq!(dd.instance(A, &id)["state"], "running");
}
