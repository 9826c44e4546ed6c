//! Create primitives are idempotent across a crash of their runner (issue
//! 27): a step that created an instance, a volume, a snapshot, an image and
//! a copy of it, whose runner is killed before the step completes, gets the
//! same resources back when it is resumed — no second instance, nothing
//! orphaned — and tags given at creation are there from the start. The CLI's
//! `--client-token` does the same for commands, and a resource an ended
//! execution created without referencing it is reported by `instances`.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const R: &str = "region-a";

fn listing(dd: &Drydock, region: &str, what: &str, key: &str) -> Vec<Value> {
    dd.json(&["--region", region, what])[key]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn ids(list: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = list
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn a_step_resumed_after_its_runner_was_killed_gets_back_what_it_created() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    let img = dd.image(R);
    dd.write_runbook(
        "make-things.rhai",
        r#"
runbook(#{
    name: "make-things",
    description: "creates one of each resource in one step, then waits",
    params: #{ image: #{ type: "string" } },
});
let made = step("make", || {
    let i = instance::launch(#{ image: params.image, type: "m1.small", tags: #{ purpose: "idem", Name: "made" } });
    let v = volume::create(#{ size_mib: 8, tags: #{ purpose: "idem" } });
    let s = snapshot::create(v);
    let g = image::create(i, "idem-image");
    let c = image::copy(g, "region-b");
    print(`made ${i} ${v} ${s} ${g} ${c}`);
    sleep(4);
    #{ instance: i, volume: v, snapshot: s, image: g, copy: c }
});
made
"#,
    );
    let p_image = format!("image={img}");
    let mut child = dd.spawn(&["--region", R, "run", "make-things", "-p", &p_image]);
    let ex = dd.only_execution_of("make-things");
    // Killed after everything was made, before the step completed.
    let mut printed = String::new();
    dd.wait_until("the step made everything", || {
        let events = dd.show(&ex)["events"].clone();
        printed = events
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["message"].as_str())
            .find(|m| m.starts_with("made "))
            .unwrap_or_default()
            .to_string();
        !printed.is_empty()
    });
    child.kill().unwrap();
    let _ = child.wait();
    let first: Vec<&str> = printed.split_whitespace().skip(1).collect();
    assert_eq!(first.len(), 5, "{printed}");
    let step = &dd.show(&ex)["steps"][0];
    assert_eq!(step["state"], "running", "killed inside the step: {step}");

    let out = dd.run(&["--json", "--region", R, "resume", &ex]);
    assert_code(&out, 0);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let o = &v["output"];
    assert_eq!(
        [
            &o["instance"],
            &o["volume"],
            &o["snapshot"],
            &o["image"],
            &o["copy"]
        ],
        [first[0], first[1], first[2], first[3], first[4]],
        "the resumed step returned what the first run made: {v}"
    );
    // Exactly one of each was made.
    let instances = listing(&dd, R, "instances", "instances");
    assert_eq!(ids(&instances), vec![first[0].to_string()], "{instances:?}");
    let i = &instances[0];
    assert_eq!(i["state"], "running", "{i}");
    assert_eq!(i["tags"]["purpose"], "idem", "{i}");
    assert_eq!(i["tags"]["Name"], "made", "{i}");
    let volumes = listing(&dd, R, "volumes", "volumes");
    let root = i["root_volume"].as_str().unwrap().to_string();
    let mut want = vec![root, first[1].to_string()];
    want.sort();
    assert_eq!(ids(&volumes), want, "{volumes:?}");
    let made_vol = volumes.iter().find(|x| x["id"] == first[1]).unwrap();
    assert_eq!(made_vol["tags"]["purpose"], "idem", "{made_vol}");
    let snaps = listing(&dd, R, "snapshots", "snapshots");
    assert_eq!(ids(&snaps), vec![first[2].to_string()], "{snaps:?}");
    let images_a = listing(&dd, R, "images", "images");
    let mut want = vec![img.clone(), first[3].to_string()];
    want.sort();
    assert_eq!(ids(&images_a), want, "{images_a:?}");
    let images_b = listing(&dd, "region-b", "images", "images");
    assert_eq!(ids(&images_b), vec![first[4].to_string()], "{images_b:?}");
    // The files of what was made, and nothing half-made.
    let leftovers = |dir: &str| -> Vec<String> {
        std::fs::read_dir(dd.data_dir().join(dir))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".partial"))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(leftovers("volumes").is_empty());
    assert!(leftovers("snapshots").is_empty());
    // Nothing reported as left behind: the execution references all of it.
    let all = dd.json(&["--region", R, "instances"]);
    assert_eq!(all["leftovers"], serde_json::json!([]), "{all}");

    // The CLI: a launch retried with the same token returns the same
    // instance; a volume token reused with other parameters is refused.
    let again = |args: &[&str]| {
        let mut a = vec!["--json", "--region", R];
        a.extend_from_slice(args);
        let out = dd.run(&a);
        assert_code(&out, 0);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["id"].as_str().unwrap().to_string()
    };
    let launch = [
        "instance",
        "launch",
        "--image",
        &img,
        "--client-token",
        "tok-1",
        "--tag",
        "team=ops",
    ];
    let a = again(&launch);
    let b = again(&launch);
    assert_eq!(a, b);
    let i = dd.instance(R, &a);
    assert_eq!(i["tags"]["team"], "ops", "{i}");
    let vol = ["volume", "create", "--size", "4", "--client-token", "v-1"];
    assert_eq!(again(&vol), again(&vol));
    let out = dd.run(&[
        "--region",
        R,
        "volume",
        "create",
        "--size",
        "5",
        "--client-token",
        "v-1",
    ]);
    assert_stderr(&out, 2, &["other parameters"]);
    let out = dd.run(&[
        "--region",
        R,
        "volume",
        "create",
        "--size",
        "5",
        "--client-token",
        "has space",
    ]);
    assert_code(&out, 2);
    dd.run(&["--region", R, "instance", "terminate", &a]);
}

/// A step that created an instance and then failed leaves it to nobody:
/// `drydock instances` names it, the execution that made it, and the fix.
/// A retried step (a new generation) creates anew.
#[test]
fn an_instance_an_ended_execution_made_and_forgot_is_reported() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    let img = dd.image(R);
    dd.write_runbook(
        "forget.rhai",
        r#"
runbook(#{
    name: "forget",
    description: "launches, then fails in the same step; retried once",
    params: #{ image: #{ type: "string" } },
});
step("launch and fail", #{ attempts: 2, backoff: "1s" }, || {
    let i = instance::launch(#{ image: params.image, type: "m1.small" });
    throw "no good";
});
"#,
    );
    let p_image = format!("image={img}");
    let out = dd.run(&["--json", "--region", R, "run", "forget", "-p", &p_image]);
    assert_code(&out, 1);
    let ex = dd.only_execution_of("forget");
    let list = dd.json(&["--region", R, "instances"]);
    let instances = list["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 2, "each attempt launched its own: {list}");
    let left = list["leftovers"].as_array().unwrap();
    assert_eq!(left.len(), 2, "{list}");
    for l in left {
        assert_eq!(l["execution"], ex.as_str(), "{l}");
        assert_eq!(l["kind"], "instance", "{l}");
        assert!(
            l["fix"].as_str().unwrap().contains("instance terminate"),
            "{l}"
        );
    }
    let out = dd.run(&["--region", R, "instances"]);
    let err = text(&out.stderr);
    assert!(err.contains("no longer referenced"), "{err}");
    assert!(err.contains(&ex), "{err}");
    for l in left {
        let id = l["resource"].as_str().unwrap();
        let out = dd.run(&["--region", R, "instance", "terminate", id]);
        assert_code(&out, 0);
    }
    std::thread::sleep(Duration::from_millis(100));
    let list = dd.json(&["--region", R, "instances"]);
    assert_eq!(list["leftovers"], serde_json::json!([]), "{list}");
}

/// fault::inject in a step whose runner is killed after the injection:
/// the resumed step injects it again whole (the first is reverted from its
/// recorded undo), not "already has disk-full".
#[test]
fn a_fault_injected_by_a_step_cut_off_is_injected_once() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    let img = dd.image(R);
    let id = dd.launch(R, &img, &["--allow-faults"]);
    let out = dd.run(&["--region", R, "instance", "stop", &id]);
    assert_code(&out, 0);
    dd.write_runbook(
        "break-it.rhai",
        r#"
runbook(#{
    name: "break-it",
    description: "injects a fault in a step, then waits",
    params: #{ instance: #{ type: "string" } },
});
step("inject", || {
    let f = fault::inject(params.instance, "disk-full");
    print(`injected ${f.id}`);
    sleep(3);
    f.id
})
"#,
    );
    let p = format!("instance={id}");
    let mut child = dd.spawn(&["--region", R, "run", "break-it", "-p", &p]);
    let ex = dd.only_execution_of("break-it");
    dd.wait_until("the fault was injected", || {
        dd.show(&ex)["events"]
            .to_string()
            .contains("injected fault-")
    });
    child.kill().unwrap();
    let _ = child.wait();
    let out = dd.run(&["--json", "--region", R, "resume", &ex]);
    assert_code(&out, 0);
    let faults = dd.json(&["--region", R, "fault", "list", &id]);
    let list = faults
        .as_array()
        .cloned()
        .unwrap_or_else(|| faults["faults"].as_array().cloned().unwrap_or_default());
    let active: Vec<&Value> = list.iter().filter(|f| f["reverted_at"].is_null()).collect();
    assert_eq!(active.len(), 1, "one fault in effect: {faults}");
    assert_eq!(
        list.len(),
        2,
        "the first, reverted, and the second: {faults}"
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["output"], active[0]["id"], "{v}");
}
