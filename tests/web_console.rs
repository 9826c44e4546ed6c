//! The web console in a real browser: headless Chromium driven over
//! WebDriver (chromedriver). An approver signs in with a token made as
//! their own OS account, opens the execution that waits for them,
//! approves it, and watches the page show it end — while the runbook runs
//! in another process. Also the API's refusals without a token or without
//! the anti-forgery header.

mod common;

use std::time::Duration;

use common::browser::Browser;
use common::os_users::os_user;
use common::{assert_code, text, wait_child, Drydock};
use serde_json::json;

const GATED: &str = r#"
runbook(#{ name: "gated" });
step("before", || 1);
approve(#{ message: "Restart the database?", approvers: ["ddalice"] });
step("after", || append_file(`${env("WORK")}/log`, "after\n"));
"#;

#[test]
fn an_approver_signs_in_approves_in_the_browser_and_watches_the_run_end() {
    let alice = os_user("ddalice", &["ddops"]);
    let dd = Drydock::shared_by("ddops");
    dd.write_runbook("gated.rhai", GATED);
    let runner = dd.spawn(&["run", "gated"]);
    let id = dd.only_execution();
    dd.wait_for_approval(&id);
    let (_serve, url) = dd.serve_web();
    let out = dd.run_as(
        &alice,
        &[
            "tokens", "create", "--label", "browser", "--scope", "approve",
        ],
    );
    assert_code(&out, 0);
    let token = text(&out.stdout).trim().to_string();
    assert!(token.starts_with("ddt_"), "{token}");

    let b = Browser::start();
    b.go(&url);
    b.type_in("#token", &token);
    b.click("#signin");
    b.wait_text("#me", "the account", |t| t.contains("ddalice"));
    b.click("a[data-view=approvals]");
    b.wait_text("#approvals", "the waiting execution", |t| {
        t.contains(&id) && t.contains("Restart the database?") && t.contains("you may decide")
    });
    b.click(&format!("a.open[data-id='{id}']"));
    b.wait_text("#exec-state", "waiting", |t| t == "WaitingForApproval");
    b.type_in("#comment", "approved from the browser");
    b.click("#approve");
    // The page follows the run (server-sent events) until it ends.
    b.wait_text("#exec-state", "the end of the run", |t| t == "Success");
    assert!(!b.find("#timeline").is_empty());
    assert_code(&wait_child(runner), 0);
    let show = dd.show(&id);
    let d = &show["approvals"][0]["decisions"][0];
    assert_eq!(d["approver"], "ddalice");
    assert_eq!(d["comment"], "approved from the browser");
    assert_eq!(dd.count("log", "after"), 1);
}

#[test]
fn the_api_needs_a_token_and_changes_need_the_anti_forgery_header() {
    let dd = Drydock::new();
    let (_serve, url) = dd.serve_web();
    // An approve token: the refusal below is the missing header's.
    let token = text(&dd.run(&["tokens", "create", "--scope", "approve"]).stdout)
        .trim()
        .to_string();
    let status = |r: Result<ureq::http::Response<ureq::Body>, ureq::Error>| match r {
        Ok(r) => r.status().as_u16(),
        Err(ureq::Error::StatusCode(c)) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(
        status(ureq::get(&format!("{url}api/executions")).call()),
        401
    );
    assert_eq!(
        status(
            ureq::get(&format!("{url}api/executions"))
                .header("Authorization", &format!("Bearer {token}x"))
                .call()
        ),
        401
    );
    assert_eq!(
        status(
            ureq::get(&format!("{url}api/executions"))
                .header("Authorization", &format!("Bearer {token}"))
                .call()
        ),
        200
    );
    assert_eq!(
        status(
            ureq::post(&format!("{url}api/executions/ex-0/decision"))
                .header("Authorization", &format!("Bearer {token}"))
                .send_json(json!({ "approve": true }))
        ),
        403
    );
    // A revoked token no longer works.
    let id = dd.json(&["tokens"])[0]["id"].as_str().unwrap().to_string();
    assert_code(&dd.run(&["tokens", "revoke", &id]), 0);
    assert_eq!(
        status(
            ureq::get(&format!("{url}api/whoami"))
                .header("Authorization", &format!("Bearer {token}"))
                .call()
        ),
        401
    );
}

/// Issue 19: tokens never expired. A token lives 90 days unless
/// `--expires` says otherwise (at most a year, never "never"); each use is
/// recorded; once expired the API and the sign-in form refuse it with 401
/// and a message naming the expiry and the fix; `tokens` shows both.
#[test]
fn a_token_expires_and_its_last_use_is_recorded() {
    let dd = Drydock::new();
    for bad in ["never", "400d", "0s", "soon"] {
        let out = dd.run(&["tokens", "create", "--expires", bad]);
        assert_code(&out, 2);
        assert!(
            text(&out.stderr).contains("--expires"),
            "{bad}: {}",
            text(&out.stderr)
        );
    }
    assert!(
        text(&dd.run(&["tokens", "create", "--expires", "never"]).stderr)
            .contains("tokens always expire")
    );
    // The default: 90 days.
    let made = dd.json(&["tokens", "create", "--label", "default"]);
    let days = (made["expires_at"].as_i64().unwrap() - chrono::Utc::now().timestamp_millis())
        as f64
        / 86_400_000.0;
    assert!((89.9..=90.1).contains(&days), "{made}");
    let (_serve, url) = dd.serve_web();
    let made = dd.json(&["tokens", "create", "--label", "short", "--expires", "4s"]);
    let token = made["token"].as_str().unwrap().to_string();
    let id = made["id"].as_str().unwrap().to_string();
    let listed = |id: &str| {
        dd.json(&["tokens"])
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .cloned()
            .unwrap()
    };
    assert!(listed(&id)["last_used_at"].is_null());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let get = |path: &str| {
        let mut r = agent
            .get(&format!("{url}{path}"))
            .header("Authorization", &format!("Bearer {token}"))
            .call()
            .unwrap();
        (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        )
    };
    assert_eq!(get("api/whoami").0, 200);
    let t = listed(&id);
    assert!(t["last_used_at"].as_i64().is_some(), "{t}");
    assert_eq!(t["expired"], false);
    let table = text(&dd.run(&["tokens"]).stdout);
    assert!(
        table.contains("EXPIRES") && table.contains("LAST USED"),
        "{table}"
    );
    std::thread::sleep(Duration::from_millis(4500));
    let (code, body) = get("api/executions");
    assert_eq!(code, 401, "{body}");
    assert!(
        body.contains(&format!("token {id} expired at")) && body.contains("tokens create"),
        "{body}"
    );
    // The sign-in form refuses it too.
    let mut r = agent
        .post(&format!("{url}login"))
        .content_type("application/x-www-form-urlencoded")
        .send(format!("token={token}"))
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r
        .body_mut()
        .read_to_string()
        .unwrap()
        .contains("expired at"));
    assert_eq!(listed(&id)["expired"], true);
    assert!(text(&dd.run(&["tokens"]).stdout).contains("expired "));
}
