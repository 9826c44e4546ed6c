//! Event rules (issue 23): an event of the stream starts a runbook with
//! fields of the event as parameters, from `drydock serve` — once per
//! event across a serve killed and started again, within the rule's
//! hourly limit, behind an approval when the rule says so; a rule whose
//! parameters its runbook would refuse is refused when it is added. And
//! with a real guest: a boot stuck at the fstab prompt, seen on its
//! console by a console-pattern rule, is repaired by
//! `recover-boot-prompt` without a person, and on a later boot, with a
//! rule that names an approver, only once that approver said yes.

mod common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::scenario::Scenario;
use common::*;
use serde_json::Value;

const R: &str = "region-a";

fn serve(dd: &Drydock, name: &str) -> Child {
    std::fs::create_dir_all(dd.work()).unwrap();
    dd.command(&[
        "--region",
        R,
        "serve",
        "--listen",
        "off",
        "--check-interval",
        "off",
    ])
    .env("DRYDOCK_BIN", bin())
    .stdout(std::fs::File::create(dd.work().join(name)).unwrap())
    .stderr(Stdio::null())
    .spawn()
    .unwrap()
}

fn firings(dd: &Drydock, rule: &str) -> Vec<Value> {
    dd.json(&["rules", "show", rule])["firings"]
        .as_array()
        .unwrap()
        .clone()
}

fn wait<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_failed_execution_starts_the_rules_runbook_once_within_its_limit_and_behind_approval() {
    let dd = Drydock::new();
    dd.write_runbook(
        "flaky.rhai",
        r#"runbook(#{ name: "flaky", description: "fails" });
throw "disk full";"#,
    );
    dd.write_runbook(
        "on-failure.rhai",
        r#"runbook(#{ name: "on-failure", description: "notes a failed execution",
    params: #{ failed: #{ type: "string" }, why: #{ type: "string" }, tries: #{ type: "int", default_value: 1 } } });
#{ failed: params.failed, why: params.why, tries: params.tries }"#,
    );
    // Refused when added: what the runbook would refuse.
    for (extra, says) in [
        (vec!["-p", "nope=1"], "no such parameter"),
        (vec!["-p", "tries=3"], "failed: required"),
        (
            vec!["-p", "failed=x", "-p", "why=y", "-p", "tries=many"],
            "tries",
        ),
        (
            vec!["--max-per-hour", "0", "-p", "failed=x", "-p", "why=y"],
            "at least 1",
        ),
    ] {
        let mut args = vec![
            "rules",
            "add",
            "bad",
            "--event",
            "execution.ended Failed",
            "--runbook",
            "on-failure",
        ];
        args.extend(extra.iter());
        assert_refused(&dd.run(&args), &args, says);
    }
    for (args, says) in [
        (
            vec![
                "rules",
                "add",
                "bad",
                "--event",
                "instance.bogus",
                "--runbook",
                "on-failure",
            ],
            "not an event type",
        ),
        (
            vec![
                "rules",
                "add",
                "bad",
                "--console",
                "([",
                "--runbook",
                "on-failure",
            ],
            "not a regular expression",
        ),
        (
            vec![
                "rules",
                "add",
                "bad x",
                "--event",
                "instance.state",
                "--runbook",
                "on-failure",
            ],
            "rule name",
        ),
        (
            vec![
                "rules",
                "add",
                "bad",
                "--event",
                "instance.state",
                "--runbook",
                "no-such-runbook",
            ],
            "no-such-runbook",
        ),
        (vec!["rules", "remove", "never-added"], "no rule named"),
    ] {
        assert_refused(&dd.run(&args), &args, says);
    }
    // A secret in clear would be stored: refused.
    dd.write_runbook(
        "needs-secret.rhai",
        r#"runbook(#{ name: "needs-secret", params: #{ pw: #{ type: "secret" } } });
1"#,
    );
    let out = dd.run(&[
        "rules",
        "add",
        "s",
        "--event",
        "instance.state",
        "--runbook",
        "needs-secret",
        "-p",
        "pw=hunter2",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("param:NAME"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dd
        .run(&["rules"])
        .stdout
        .windows(7)
        .any(|w| w == b"hunter2"));

    assert_code(
        &dd.run(&[
            "rules",
            "add",
            "note-failures",
            "--event",
            "execution.ended Failed",
            "--match",
            "data.runbook=flaky",
            "--runbook",
            "on-failure",
            "-p",
            "failed={{event.execution}}",
            "-p",
            "why={{event.data.error}}",
            "--max-per-hour",
            "2",
        ]),
        0,
    );
    let listed = text(&dd.run(&["rules"]).stdout);
    assert!(
        listed.contains("note-failures") && listed.contains("execution.ended data.state=Failed"),
        "{listed}"
    );

    let mut s = serve(&dd, "serve-1.log");
    assert_eq!(dd.run(&["run", "flaky"]).status.code(), Some(1));
    let failed = dd.only_execution_of("flaky");
    let first = wait("the rule to start its run", 60, || {
        firings(&dd, "note-failures")
            .into_iter()
            .find(|f| f["outcome"] == "started")
    });
    let run = first["execution_id"].as_str().unwrap().to_string();
    wait("the rule's run to end", 60, || {
        (dd.state(&run) == "Success").then_some(())
    });
    let out = &dd.show(&run)["execution"]["output"];
    assert_eq!(out["failed"], failed.as_str(), "{out}");
    assert!(out["why"].as_str().unwrap().contains("disk full"), "{out}");

    // Killed and started again: the event is not run twice.
    s.kill().unwrap();
    s.wait().unwrap();
    let mut s = serve(&dd, "serve-2.log");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(firings(&dd, "note-failures").len(), 1);
    // Two more failures: one run (the limit is 2 an hour), one recorded, not run.
    assert_eq!(dd.run(&["run", "flaky"]).status.code(), Some(1));
    assert_eq!(dd.run(&["run", "flaky"]).status.code(), Some(1));
    let all = wait("both firings", 60, || {
        let f = firings(&dd, "note-failures");
        (f.len() == 3 && f.iter().all(|x| x["outcome"] != "claimed")).then_some(f)
    });
    let outcomes: Vec<&str> = all.iter().map(|f| f["outcome"].as_str().unwrap()).collect();
    assert_eq!(
        outcomes.iter().filter(|o| **o == "started").count(),
        2,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.iter().filter(|o| **o == "rate-limited").count(),
        1,
        "{outcomes:?}"
    );

    // Behind an approval: the run waits for the rule's approvers.
    assert_code(
        &dd.run(&[
            "rules",
            "add",
            "gated",
            "--event",
            "execution.ended Failed",
            "--match",
            "data.runbook=flaky",
            "--runbook",
            "on-failure",
            "-p",
            "failed={{event.execution}}",
            "-p",
            "why=gated",
            "--approvers",
            "somebody-else",
        ]),
        0,
    );
    assert_eq!(dd.run(&["run", "flaky"]).status.code(), Some(1));
    let gated = wait("the gated run", 60, || {
        firings(&dd, "gated")
            .into_iter()
            .find(|f| f["outcome"] == "started")
    });
    let gated = gated["execution_id"].as_str().unwrap().to_string();
    dd.wait_for_approval(&gated);
    let approvals = dd.json(&["approvals"]);
    assert!(
        approvals.to_string().contains("somebody-else"),
        "{approvals}"
    );
    assert!(
        approvals.to_string().contains("rule gated fired"),
        "{approvals}"
    );
    s.kill().unwrap();
    s.wait().unwrap();
    assert_code(&dd.run(&["rules", "remove", "gated"]), 0);
}

#[test]
fn a_boot_stuck_at_the_fstab_prompt_is_repaired_by_a_console_rule_without_a_person_then_behind_an_approval(
) {
    let _vm = vm_lock();
    // Shared with the account that approves (the rule's own creator may
    // not: separation of duties).
    let approver = common::os_users::os_user("ddalice", &["ddops"]);
    let dd = Drydock::shared_by("ddops");
    let mut put = dd
        .command(&["param", "put", "rescue/root", "--secure"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut put.stdin.take().unwrap(), b"pw\n").unwrap();
    assert!(put.wait().unwrap().success());
    assert_code(
        &dd.run(&[
            "rules",
            "add",
            "fstab-prompt",
            "--console",
            "Press S to skip mounting",
            "--runbook",
            "recover-boot-prompt",
            "-p",
            "instance={{event.instance}}",
            "-p",
            "password=param:rescue/root",
            "-p",
            "reboot_check=false",
        ]),
        0,
    );
    let mut s = serve(&dd, "serve.log");
    let id = Scenario::broken(&dd, "fstab-missing-disk");
    let fired = wait("the console rule to fire", 300, || {
        firings(&dd, "fstab-prompt")
            .into_iter()
            .find(|f| f["outcome"] == "started")
    });
    let run = fired["execution_id"].as_str().unwrap().to_string();
    let state = wait("recover-boot-prompt to end", 400, || {
        let st = dd.state(&run);
        matches!(st.as_str(), "Success" | "Failed" | "TimedOut").then_some(st)
    });
    let shown = dd.show(&run);
    assert_eq!(
        state,
        "Success",
        "{shown}\nserve: {}",
        std::fs::read_to_string(dd.work().join("serve.log")).unwrap_or_default()
    );
    assert_eq!(shown["execution"]["output"]["recovered"], true, "{shown}");
    assert_eq!(shown["execution"]["params"]["instance"], id.as_str());
    let console_events = dd.json(&["events", "--type", "instance.console", "--instance", &id]);
    assert!(
        console_events["events"][0]["data"]["line"]
            .as_str()
            .unwrap()
            .contains("Press S to skip mounting"),
        "{console_events}"
    );

    // The approval path: the same prompt on a later boot, with a rule
    // whose runbook waits for its approver; nothing touches the instance
    // before the decision, and the approved run repairs it.
    assert_code(&dd.run(&["rules", "remove", "fstab-prompt"]), 0);
    assert_code(
        &dd.run(&[
            "rules",
            "add",
            "fstab-gated",
            "--console",
            "Press S to skip mounting",
            "--runbook",
            "recover-boot-prompt",
            "-p",
            "instance={{event.instance}}",
            "-p",
            "password=param:rescue/root",
            "-p",
            "reboot_check=false",
            "--approvers",
            &approver.name,
        ]),
        0,
    );
    dd.stop_instance(R, &id);
    assert_code(&dd.run(&["--region", R, "fault", "revert", &id]), 0);
    assert_code(
        &dd.run(&["--region", R, "fault", "inject", &id, "fstab-missing-disk"]),
        0,
    );
    dd.start_instance(R, &id);
    let fired = wait("the gated console rule to fire", 300, || {
        firings(&dd, "fstab-gated")
            .into_iter()
            .find(|f| f["outcome"] == "started")
    });
    let gated = fired["execution_id"].as_str().unwrap().to_string();
    dd.wait_for_approval(&gated);
    assert_eq!(dd.state(&gated), "WaitingForApproval");
    let approvals = dd.json(&["approvals"]).to_string();
    assert!(approvals.contains("rule fstab-gated fired"), "{approvals}");
    // Still stuck while it waits.
    let st = dd.json(&["--region", R, "instance-status", &id]);
    assert_eq!(
        st["statuses"][0]["instance_check"]["status"], "impaired",
        "{st}"
    );
    assert!(
        st["statuses"][0]["instance_check"]["reason"]
            .as_str()
            .unwrap()
            .contains("mount prompt"),
        "{st}"
    );
    assert_code(
        &dd.run_as(&approver, &["approve", &gated, "--comment", "go ahead"]),
        0,
    );
    let state = wait("the approved recover-boot-prompt to end", 400, || {
        let st = dd.state(&gated);
        matches!(st.as_str(), "Success" | "Failed" | "TimedOut").then_some(st)
    });
    let shown = dd.show(&gated);
    assert_eq!(state, "Success", "{shown}");
    assert_eq!(shown["execution"]["output"]["recovered"], true, "{shown}");
    s.kill().unwrap();
    s.wait().unwrap();
    dd.run(&["--region", R, "instance", "terminate", &id]);
}

/// What the receiver got: each request's head and body.
type Requests = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

/// A webhook receiver: answers 500 to the first POST, 200 after; keeps
/// every request's headers and body.
fn receiver() -> (String, Requests) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0u8; len];
            reader.read_exact(&mut body).unwrap();
            let n = {
                let mut g = g.lock().unwrap();
                g.push((head, body));
                g.len()
            };
            let status = if n == 1 {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (url, got)
}

#[test]
fn a_webhook_gets_each_event_signed_once_across_a_serve_restart_after_a_retry() {
    use hmac::Mac;
    let dd = Drydock::new();
    dd.write_runbook(
        "flaky.rhai",
        r#"runbook(#{ name: "flaky", description: "fails" });
throw "disk full";"#,
    );
    let mut put = dd
        .command(&["param", "put", "hook/key", "--secure"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut put.stdin.take().unwrap(), b"k3y\n").unwrap();
    assert!(put.wait().unwrap().success());
    let (url, got) = receiver();
    // The key is never taken in clear, the URL is checked.
    for (args, says) in [
        (
            vec!["--webhook", url.as_str(), "--webhook-secret", "k3y"],
            "param:NAME",
        ),
        (
            vec![
                "--webhook",
                "ftp://x/",
                "--webhook-secret",
                "param:hook/key",
            ],
            "neither http",
        ),
        (
            vec![
                "--webhook",
                url.as_str(),
                "--webhook-secret",
                "param:no/such",
                "--allow-private",
            ],
            "--webhook-secret",
        ),
        (
            vec![
                "--webhook",
                url.as_str(),
                "--webhook-secret",
                "param:hook/key",
            ],
            "--allow-private",
        ),
        (
            vec![
                "--webhook",
                "http://169.254.169.254/",
                "--webhook-secret",
                "param:hook/key",
            ],
            "--allow-private",
        ),
    ] {
        let mut a = vec!["rules", "add", "hook", "--event", "execution.ended"];
        a.extend(args.iter());
        assert_refused(&dd.run(&a), &a, says);
    }
    assert_code(
        &dd.run(&[
            "rules",
            "add",
            "hook",
            "--event",
            "execution.ended Failed",
            "--webhook",
            &url,
            "--webhook-secret",
            "param:hook/key",
            "--allow-private",
        ]),
        0,
    );
    let mut s = serve(&dd, "serve-hook.log");
    assert_eq!(dd.run(&["run", "flaky"]).status.code(), Some(1));
    wait("the delivery", 60, || {
        firings(&dd, "hook")
            .into_iter()
            .find(|f| f["outcome"].as_str().unwrap().starts_with("delivered"))
    });
    s.kill().unwrap();
    s.wait().unwrap();
    let mut s = serve(&dd, "serve-hook-2.log");
    std::thread::sleep(Duration::from_secs(3));
    s.kill().unwrap();
    s.wait().unwrap();
    let got = got.lock().unwrap();
    assert_eq!(
        got.len(),
        2,
        "one failed attempt, one delivery, nothing after the restart"
    );
    let (head, body) = &got[1];
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
            .unwrap_or_default()
    };
    assert_eq!(header("X-Drydock-Event"), "execution.ended");
    assert_eq!(
        header("X-Drydock-Delivery"),
        got[0]
            .0
            .lines()
            .find(|l| l.starts_with("X-Drydock-Delivery") || l.starts_with("x-drydock-delivery"))
            .map(|l| l.split_once(':').unwrap().1.trim().to_string())
            .unwrap_or_default(),
        "a retry carries the same delivery id"
    );
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"k3y").unwrap();
    mac.update(body);
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(header("X-Drydock-Signature"), format!("sha256={want}"));
    let event: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(event["type"], "execution.ended");
    assert_eq!(event["data"]["runbook"], "flaky");
    assert!(!String::from_utf8_lossy(body).contains("k3y"));
}
