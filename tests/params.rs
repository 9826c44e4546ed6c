//! Parameter validation: every kind of bad value is refused before anything
//! runs, with exit code 2, a message naming the parameter, what was given
//! and what was expected, and no execution recorded.

mod common;

use common::{assert_code, assert_stderr, text, Drydock};

const RUNBOOK: &str = r#"
runbook(#{
    name: "typed",
    description: "takes one parameter of each kind",
    params: #{
        s: #{ type: "string", pattern: "^[a-z]+$", default_value: "abc" },
        n: #{ type: "int", min: 1, max: 10, default_value: 5 },
        b: #{ type: "bool", default_value: false },
        l: #{ type: "list", default_value: [] },
        m: #{ type: "map", default_value: #{} },
        d: #{ type: "duration", default_value: "1m" },
        mode: #{ type: "string", allowed: ["fast", "safe"], default_value: "safe" },
        inst: #{ type: "instance", required: false },
        vol: #{ type: "volume", required: false },
        img: #{ type: "image", required: false },
        snap: #{ type: "snapshot", required: false },
        region: #{ type: "region", required: false },
        must: #{ type: "string" },
    },
});
step("echo", || params)
"#;

fn refused(dd: &Drydock, args: &[&str], wants: &[&str]) {
    let mut full = vec!["run", "typed", "-p", "must=x"];
    full.extend_from_slice(args);
    let out = dd.run(&full);
    assert_code(&out, 2);
    let err = text(&out.stderr);
    for want in wants {
        assert!(err.contains(want), "{args:?}: expected {want:?} in:\n{err}");
    }
    assert!(dd.executions().is_empty(), "{args:?} recorded an execution");
}

#[test]
fn each_kind_of_bad_value_is_refused_and_nothing_is_recorded() {
    let dd = Drydock::new();
    dd.write_runbook("typed.rhai", RUNBOOK);
    refused(
        &dd,
        &["-p", "s=ABC"],
        &["parameter `s`", "\"ABC\"", "/^[a-z]+$/"],
    );
    refused(
        &dd,
        &["-p", "n=ten"],
        &["parameter `n`", "\"ten\"", "an integer"],
    );
    refused(&dd, &["-p", "n=11"], &["parameter `n`", "at most 10"]);
    refused(
        &dd,
        &["-p", "b=perhaps"],
        &["parameter `b`", "true or false"],
    );
    refused(&dd, &["-p", "l=[1,"], &["parameter `l`", "a list"]);
    refused(&dd, &["-p", "m=[1]"], &["parameter `m`", "a map"]);
    refused(
        &dd,
        &["-p", "d=soon"],
        &["parameter `d`", "\"soon\"", "90s"],
    );
    refused(
        &dd,
        &["-p", "mode=reckless"],
        &["parameter `mode`", "one of \"fast\", \"safe\""],
    );
    refused(
        &dd,
        &["-p", "inst=web-1"],
        &["parameter `inst`", "instance id"],
    );
    refused(
        &dd,
        &["-p", "vol=i-0123abcd"],
        &["parameter `vol`", "volume id"],
    );
    refused(
        &dd,
        &["-p", "img=ami-0123abcd"],
        &["parameter `img`", "image id"],
    );
    refused(
        &dd,
        &["-p", "snap=snapshot1"],
        &["parameter `snap`", "snapshot id"],
    );
    refused(
        &dd,
        &["-p", "region=Region_A"],
        &["parameter `region`", "region name"],
    );
    refused(
        &dd,
        &["-p", "colour=red"],
        &[
            "parameter `colour`",
            "unknown parameter",
            "this runbook takes",
        ],
    );
    refused(&dd, &["-p", "novalue"], &["--param expects NAME=VALUE"]);
}

#[test]
fn a_missing_required_parameter_names_the_flag_to_pass() {
    let dd = Drydock::new();
    dd.write_runbook("typed.rhai", RUNBOOK);
    let out = dd.run(&["run", "typed"]);
    assert_stderr(&out, 2, &["parameter `must`: required but not given"]);
    assert!(text(&out.stderr).contains("--param must=VALUE"));
    assert!(dd.executions().is_empty());
}

#[test]
fn good_values_from_flags_and_params_file_are_typed() {
    let dd = Drydock::new();
    dd.write_runbook("typed.rhai", RUNBOOK);
    let file = dd.work().join("params.json");
    std::fs::write(
        &file,
        r#"{"n": 7, "l": ["a", "b"], "m": {"k": 1}, "must": "from-file"}"#,
    )
    .unwrap();
    let out = dd.run(&[
        "--json",
        "run",
        "typed",
        "--params-file",
        file.to_str().unwrap(),
        "-p",
        "b=yes",
        "-p",
        "inst=i-0123abcd",
        "-p",
        "region=region-a",
        "-p",
        "must=flag-wins",
    ]);
    assert_code(&out, 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let p = &v["output"];
    assert_eq!(p["n"], 7);
    assert_eq!(p["b"], true);
    assert_eq!(p["l"], serde_json::json!(["a", "b"]));
    assert_eq!(p["m"]["k"], 1);
    assert_eq!(p["d"], "1m");
    assert_eq!(p["inst"], "i-0123abcd");
    assert_eq!(p["must"], "flag-wins");
    assert_eq!(p["vol"], serde_json::Value::Null);
}

#[test]
fn a_params_file_that_is_not_an_object_is_a_usage_error() {
    let dd = Drydock::new();
    dd.write_runbook("typed.rhai", RUNBOOK);
    let file = dd.work().join("params.json");
    std::fs::write(&file, "[1, 2]").unwrap();
    let out = dd.run(&["run", "typed", "--params-file", file.to_str().unwrap()]);
    assert_stderr(&out, 2, &["must hold a JSON object"]);
}
