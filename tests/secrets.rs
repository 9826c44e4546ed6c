//! Secrets: the parameter store (versions, labels, SecureStrings sealed at
//! rest with a 0600 key), `secret` parameters given by reference, file,
//! environment or on the command line (with a warning), and the value
//! never found in clear in the journal's files, `executions show`, JSON,
//! progress, errors or outputs — while the runbook gets the real value.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use common::{assert_code, assert_stderr, text, Drydock};

const SECRET: &str = "c0rrect-Horse-b4ttery";

fn put(dd: &Drydock, name: &str, value: &str, secure: bool) {
    let mut args = vec!["param", "put", name];
    if secure {
        args.push("--secure");
    }
    let mut child = dd
        .command(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{value}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_code(&out, 0);
}

/// Every byte drydock keeps in its data directory, for leak checks.
fn data_dir_bytes(dd: &Drydock) -> Vec<u8> {
    let mut all = Vec::new();
    let mut dirs = vec![dd.data_dir()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if let Ok(b) = std::fs::read(&p) {
                all.extend_from_slice(&b);
            }
        }
    }
    all
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn the_parameter_store_keeps_versions_labels_and_sealed_values() {
    let dd = Drydock::new();
    put(&dd, "db/password", SECRET, true);
    put(&dd, "db/password", "second-Value-99", true);
    put(&dd, "db/host", "db.internal", false);
    let key = dd.data_dir().join("keys/secrets.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let dir_mode = std::fs::metadata(dd.data_dir())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);

    assert_eq!(
        text(&dd.run(&["param", "get", "db/password"]).stdout),
        "****\n"
    );
    assert_eq!(
        text(
            &dd.run(&["param", "get", "db/password:1", "--decrypt"])
                .stdout
        ),
        format!("{SECRET}\n")
    );
    assert_eq!(
        text(&dd.run(&["param", "get", "db/host"]).stdout),
        "db.internal\n"
    );
    assert_code(&dd.run(&["param", "label", "db/password", "1", "prod"]), 0);
    assert_eq!(
        text(
            &dd.run(&["param", "get", "db/password:prod", "--decrypt"])
                .stdout
        ),
        format!("{SECRET}\n")
    );
    let list = dd.json(&["param", "list"]);
    let pw = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "db/password")
        .unwrap();
    assert_eq!(pw["version"], 2);
    assert_eq!(pw["secure"], true);
    assert!(pw.get("value").is_none());
    let history = dd.json(&["param", "history", "db/password"]);
    assert_eq!(history[0]["version"], 2);
    assert_eq!(history[1]["labels"], serde_json::json!(["prod"]));
    assert!(
        !contains(&data_dir_bytes(&dd), SECRET),
        "a secret is stored in clear"
    );

    // A secure value is never taken from the command line.
    let out = dd.run(&["param", "put", "x", "--secure", "--value", "visible-in-ps"]);
    assert_stderr(&out, 2, &["visible to every local user in `ps`"]);
    // A plain parameter cannot become secure by accident, nor the reverse.
    let out = dd.run(&["param", "put", "db/host", "--value", "x", "--secure"]);
    assert_code(&out, 2);
    assert_code(&dd.run(&["param", "get", "nope"]), 2);
    assert_code(&dd.run(&["param", "delete", "db/host"]), 0);
    assert_code(&dd.run(&["param", "get", "db/host"]), 2);
}

const USES: &str = r#"
runbook(#{ name: "uses-secret", params: #{ password: #{ type: "secret" } } });
// The runbook gets the real value (this file is the test's proof).
step("check", || { write_file(`${env("WORK")}/got`, params.password); "checked" });
print(`the password is ${params.password}`);
let echoed = step("echo", || `output ${params.password}`);
step("fail", || shell(`echo "$PW" >&2; exit 3`, #{ env: #{ PW: params.password } }));
"#;

/// A secret on a command line (visible to every local user in `ps`) is
/// refused, with the fix; derived forms of it are masked too.
const IN_ARGV: &str = r#"
runbook(#{ name: "in-argv", params: #{ password: #{ type: "secret" } } });
let refused = [];
try { shell(`echo ${params.password}`); } catch (e) { refused.push(`${e}`); }
try { exec(["echo", params.password.sub_string(2, 8)]); } catch (e) { refused.push(`${e}`); }
print(`upper ${params.password.to_upper()} piece ${params.password.sub_string(1, 9)}`);
let via_env = shell(`printf '%s' "$PW" | wc -c`, #{ env: #{ PW: params.password } });
#{ refused: refused, via_env: via_env }
"#;

fn assert_never_shown(dd: &Drydock, out: &std::process::Output, value: &str) -> String {
    let id = dd.only_execution();
    for shown in [
        text(&out.stdout),
        text(&out.stderr),
        text(&dd.run(&["executions", "show", &id]).stdout),
        dd.show(&id).to_string(),
        dd.json(&["executions"]).to_string(),
    ] {
        assert!(!shown.contains(value), "the secret leaked: {shown}");
    }
    assert!(
        !contains(&data_dir_bytes(dd), value),
        "the secret is in clear under the data directory"
    );
    id
}

#[test]
fn a_secret_parameter_by_reference_is_used_and_never_shown() {
    let dd = Drydock::new();
    put(&dd, "app/password", SECRET, true);
    dd.write_runbook("uses-secret.rhai", USES);
    let out = dd.run(&["run", "uses-secret", "-p", "password=param:app/password"]);
    assert_code(&out, 1);
    assert!(
        !text(&out.stderr).contains("warning"),
        "no warning for a reference"
    );
    assert_eq!(
        std::fs::read_to_string(dd.work().join("got")).unwrap(),
        SECRET
    );
    let id = assert_never_shown(&dd, &out, SECRET);
    let show = dd.show(&id);
    assert_eq!(
        show["execution"]["params"]["password"],
        "**** (param:app/password v1)"
    );
    let shown = text(&dd.run(&["executions", "show", &id]).stdout);
    assert!(shown.contains("the password is ****"), "{shown}");
    assert!(shown.contains("output ****"), "{shown}");
    assert!(shown.contains("exit"), "the error is still useful: {shown}");

    // A resume opens the pinned version again, even after a new one is put.
    put(&dd, "app/password", "a-newer-one-123", true);
    std::fs::remove_file(dd.work().join("got")).unwrap();
    let out = dd.run(&["resume", &id, "--retry"]);
    assert_code(&out, 1);
    assert!(!text(&out.stderr).contains(SECRET));
}

#[test]
fn a_secret_on_a_command_line_is_refused_and_its_derived_forms_are_masked() {
    let dd = Drydock::new();
    dd.write_runbook("in-argv.rhai", IN_ARGV);
    let out = dd
        .command(&["--json", "run", "in-argv", "-p", "password=env:APP_PW"])
        .env("APP_PW", SECRET)
        .output()
        .unwrap();
    assert_code(&out, 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let refused = v["output"]["refused"].as_array().unwrap();
    assert_eq!(refused.len(), 2, "{v}");
    for r in refused {
        let r = r.as_str().unwrap();
        assert!(
            r.contains("holds a secret value") && r.contains("env:"),
            "{r}"
        );
    }
    assert_eq!(
        v["output"]["via_env"].as_str().unwrap().trim(),
        SECRET.len().to_string()
    );
    let id = assert_never_shown(&dd, &out, SECRET);
    let shown = dd.show(&id).to_string();
    for derived in [SECRET.to_uppercase(), SECRET[1..9].to_string()] {
        assert!(!shown.contains(&derived), "{derived} shown: {shown}");
    }
}

#[test]
fn secrets_from_a_file_the_environment_or_the_command_line() {
    let dd = Drydock::new();
    dd.write_runbook("uses-secret.rhai", USES);
    let file = dd.work().join("pw.txt");
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    let out = dd.run(&[
        "run",
        "uses-secret",
        "-p",
        &format!("password=file:{}", file.display()),
    ]);
    assert_code(&out, 1);
    assert_eq!(
        std::fs::read_to_string(dd.work().join("got")).unwrap(),
        SECRET
    );
    let id = assert_never_shown(&dd, &out, SECRET);
    assert_eq!(dd.show(&id)["execution"]["params"]["password"], "****");

    let dd = Drydock::new();
    dd.write_runbook("uses-secret.rhai", USES);
    let out = dd
        .command(&["run", "uses-secret", "-p", "password=env:APP_PW"])
        .env("APP_PW", SECRET)
        .output()
        .unwrap();
    assert_code(&out, 1);
    assert_eq!(
        std::fs::read_to_string(dd.work().join("got")).unwrap(),
        SECRET
    );
    assert_never_shown(&dd, &out, SECRET);

    let dd = Drydock::new();
    dd.write_runbook("uses-secret.rhai", USES);
    let literal = "typed-in-the-clear-42";
    let out = dd.run(&["run", "uses-secret", "-p", &format!("password={literal}")]);
    assert_stderr(&out, 1, &["is a secret given on the command line"]);
    assert_never_shown(&dd, &out, literal);

    // A missing reference is a usage error; nothing starts.
    let out = dd.run(&["run", "uses-secret", "-p", "password=param:nope"]);
    assert_stderr(&out, 2, &["no parameter named nope"]);
}

#[test]
fn param_and_secret_in_rhai_register_what_to_mask() {
    let dd = Drydock::new();
    put(&dd, "api/token", SECRET, true);
    dd.write_runbook(
        "rhai-secrets.rhai",
        r#"
runbook(#{ name: "rhai-secrets" });
let token = param("api/token");
let other = secret(read_file(`${env("WORK")}/other`));
print(`token=${token} other=${other}`);
step("out", || #{ token: token, other: other })
"#,
    );
    std::fs::write(dd.work().join("other"), "read-at-run-time-77").unwrap();
    let out = dd.run(&["--json", "run", "rhai-secrets"]);
    assert_code(&out, 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["output"],
        serde_json::json!({"token": "****", "other": "****"})
    );
    assert_never_shown(&dd, &out, SECRET);
    assert_never_shown(&dd, &out, "read-at-run-time-77");
}

#[test]
fn a_runbook_cannot_ship_a_secret_default() {
    let dd = Drydock::new();
    let path = dd.write_runbook(
        "bad-secret.rhai",
        r#"runbook(#{ name: "bad-secret", params: #{ pw: #{ type: "secret", default_value: "hunter2" } } });"#,
    );
    let out = dd.run(&["validate", path.to_str().unwrap()]);
    assert_stderr(&out, 2, &["must name a stored parameter"]);
}

#[test]
fn the_data_directory_is_private_to_its_owner() {
    let other = common::os_users::os_user("ddmallory", &["ddops"]);
    let dd = Drydock::new();
    dd.open_to_other_users();
    put(&dd, "x/pw", SECRET, true);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dd.data_dir()), 0o700);
    assert_eq!(mode(&dd.data_dir().join("journal.sqlite3")), 0o600);
    // Another account can neither list executions nor read parameters.
    let out = dd.run_as(&other, &["param", "list"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("ermission denied"),
        "{}",
        text(&out.stderr)
    );
    // A runbook's own commands inherit the private umask.
    dd.write_runbook(
        "touch.rhai",
        r#"runbook(#{ name: "touch" }); shell(`touch ${env("WORK")}/made-by-runbook`);"#,
    );
    assert_code(&dd.run(&["run", "touch"]), 0);
    assert_eq!(mode(&dd.work().join("made-by-runbook")), 0o600);
}

#[test]
fn a_root_password_comes_from_the_store_a_file_or_a_prompt_not_the_command_line() {
    let dd = Drydock::new();
    let out = dd.run(&[
        "instance",
        "launch",
        "--image",
        "img-00000000",
        "--root-password",
        "param:nope",
    ]);
    assert_stderr(&out, 2, &["no parameter named nope"]);
    let out = dd.run(&[
        "instance",
        "launch",
        "--image",
        "img-00000000",
        "--root-password",
        "file:/nonexistent/pw",
    ]);
    assert_stderr(&out, 2, &["cannot read the value from /nonexistent/pw"]);
    // A literal still works, with a warning (the image does not exist, so
    // nothing is launched here).
    let out = dd.run(&[
        "instance",
        "launch",
        "--image",
        "img-00000000",
        "--root-password",
        "visible",
    ]);
    assert!(
        text(&out.stderr).contains("visible to every local user in `ps`"),
        "{}",
        text(&out.stderr)
    );
    let out = dd
        .command(&["instance", "launch", "--image", "img-00000000"])
        .env("DRYDOCK_ROOT_PASSWORD", "from-env")
        .output()
        .unwrap();
    assert!(
        !text(&out.stderr).contains("warning"),
        "{}",
        text(&out.stderr)
    );
}
