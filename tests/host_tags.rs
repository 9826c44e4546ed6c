//! Tags on instances and volumes: `drydock tag`/`untag`/`tags`, tags in
//! the `instances` and `volumes` listings (text and JSON), and
//! `instance::list(#{ tag: "role=web" })` in a runbook. No guest boots:
//! the instances are stopped records in the host store.

mod common;

use common::{assert_code, assert_stderr, text, Drydock};
use drydock_host::{HostStore, InstanceConfig, InstanceRecord, InstanceState};
use serde_json::Value;

fn stopped_instance(dd: &Drydock, id: &str, region: &str) {
    // Open the host once through the CLI so the data directory exists.
    assert_code(&dd.run(&["--region", region, "instances"]), 0);
    let mut store = HostStore::open(&dd.data_dir()).unwrap();
    store
        .insert_instance(&InstanceRecord {
            id: id.into(),
            region: region.into(),
            instance_type: "m1.small".into(),
            image_id: "img-0000000000000000".into(),
            state: InstanceState::Stopped,
            state_reason: String::new(),
            root_volume: "vol-none".into(),
            supervisor_pid: None,
            supervisor_token: None,
            boots: 0,
            config: InstanceConfig::default(),
            created_at: 0,
            state_since: 0,
            after_host_failure: Default::default(),
            auto_recovery: false,
        })
        .unwrap();
}

fn listed<'a>(list: &'a Value, key: &str, id: &str) -> &'a Value {
    list[key]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in {list}"))
}

#[test]
fn instances_and_volumes_are_tagged_listed_by_tag_and_untagged() {
    let dd = Drydock::new();
    stopped_instance(&dd, "i-00000000000000a1", "region-a");
    stopped_instance(&dd, "i-00000000000000a2", "region-a");
    stopped_instance(&dd, "i-00000000000000b1", "region-b");
    let vol = dd.json(&["volume", "create", "--size", "1"])["id"]
        .as_str()
        .unwrap()
        .to_string();

    let v = dd.json(&["tag", "i-00000000000000a1", "role=web", "env=prod"]);
    assert_eq!(v["tags"]["role"], "web");
    assert_eq!(v["tags"]["env"], "prod");
    assert_code(&dd.run(&["tag", "i-00000000000000a2", "role=db"]), 0);
    assert_code(&dd.run(&["tag", &vol, "role=web", "empty="]), 0);
    // Replacing a value keeps the others.
    let v = dd.json(&["tag", "i-00000000000000a1", "env=staging"]);
    assert_eq!(
        v["tags"],
        serde_json::json!({"role": "web", "env": "staging"})
    );

    let list = dd.json(&["instances"]);
    assert_eq!(
        listed(&list, "instances", "i-00000000000000a1")["tags"]["role"],
        "web"
    );
    assert_eq!(
        listed(&list, "instances", "i-00000000000000a2")["tags"]["role"],
        "db"
    );
    let out = dd.run(&["instances"]);
    assert!(
        text(&out.stdout).contains("env=staging, role=web"),
        "{}",
        text(&out.stdout)
    );
    let vols = dd.json(&["volumes"]);
    assert_eq!(listed(&vols, "volumes", &vol)["tags"]["empty"], "");

    let tagged = dd.json(&["tags", "tag:role=web"]);
    let ids: Vec<&str> = tagged["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["resource"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["i-00000000000000a1", vol.as_str()]);
    let any_role = dd.json(&["tags", "tag:role"]);
    assert_eq!(any_role["resources"].as_array().unwrap().len(), 3);

    // Another region's instance is not found here.
    let out = dd.run(&["tag", "i-00000000000000b1", "role=web"]);
    assert_stderr(&out, 2, &["is in region-b"]);

    // Bad input: a clear usage error, nothing stored.
    for (args, says) in [
        (
            vec!["tag", "i-00000000000000a1", "novalue"],
            "must be KEY=VALUE",
        ),
        (vec!["tag", "i-00000000000000a1", "=x"], "must be 1 to 128"),
        (vec!["tag", "snap-1", "a=b"], "only those take tags"),
        (vec!["tag", "i-ffffffffffffffff", "a=b"], "no instance"),
        (vec!["tags", "tag:a\u{7}=b"], "control characters"),
    ] {
        let out = dd.run(&args);
        assert_code(&out, 2);
        assert!(
            text(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let long = format!("k={}", "v".repeat(257));
    assert_code(&dd.run(&["tag", "i-00000000000000a1", &long]), 2);
    let many: Vec<String> = (0..49).map(|n| format!("k{n}=v")).collect();
    let mut args = vec!["tag", "i-00000000000000a1"];
    args.extend(many.iter().map(String::as_str));
    let out = dd.run(&args);
    assert_stderr(&out, 2, &["at most 50"]);
    let v = dd.json(&["instances"]);
    assert_eq!(
        listed(&v, "instances", "i-00000000000000a1")["tags"]
            .as_object()
            .unwrap()
            .len(),
        2,
        "a refused change stores nothing"
    );

    // A runbook selects by tag, tags and untags.
    dd.write_runbook(
        "fleet.rhai",
        r#"
runbook(#{ name: "fleet" });
let web = instance::list(#{ tag: "role=web" }).map(|i| i.id);
let all = instance::list().len();
instance::tag("i-00000000000000a2", #{ role: "web", tier: "2" });
let after = instance::list(#{ tag: "role=web" }).map(|i| i.id);
let left = instance::untag("i-00000000000000a2", "tier");
let vols = volume::list(#{ tag: "role" }).map(|v| v.id);
let bad = "";
try { instance::list(#{ tags: "x" }); } catch (e) { bad = `${e}`; }
#{ web: web, all: all, after: after, left: left, vols: vols, bad: bad }
"#,
    );
    let out = dd.run(&["--json", "run", "fleet"]);
    assert_code(&out, 0);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let o = &v["output"];
    assert_eq!(o["web"], serde_json::json!(["i-00000000000000a1"]));
    assert_eq!(o["all"], 2, "only this region's instances");
    assert_eq!(
        o["after"],
        serde_json::json!(["i-00000000000000a1", "i-00000000000000a2"])
    );
    assert_eq!(o["left"], serde_json::json!({"role": "web"}));
    assert_eq!(o["vols"], serde_json::json!([vol]));
    assert!(
        o["bad"].as_str().unwrap().contains("unknown option `tags`"),
        "{o}"
    );

    // Untag from the CLI; deleting a volume forgets its tags.
    let v = dd.json(&["untag", "i-00000000000000a1", "env", "missing"]);
    assert_eq!(v["tags"], serde_json::json!({"role": "web"}));
    assert_code(&dd.run(&["volume", "delete", &vol]), 0);
    let store = HostStore::open(&dd.data_dir()).unwrap();
    assert!(store.tags(&vol).unwrap().is_empty());
}
