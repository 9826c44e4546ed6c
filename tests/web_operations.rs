//! Operating from the web console (issue 24), in a real browser (headless
//! Chromium over WebDriver) as two OS accounts: an operator starts a
//! runbook from its form (a bad value is refused next to its field),
//! watches it reach an approval, cancels and retries it from the page; a
//! second account approves in its own browser session on a phone-sized
//! window; the operator's page sees the run finish without reloading.
//! Also: token scopes on every route (a read token gets 403 on approve,
//! run, cancel, resume and consoles, naming the scope it needs) and the
//! OpenAPI document (OpenAPI 3, every route the server serves, each with
//! the scope the server enforces).

mod common;

use common::browser::Browser;
use common::os_users::os_user;
use common::{assert_code, text, Drydock};
use serde_json::{json, Value};

/// Prints, asks ddalice, prints again: needs no VM.
const WEBGATED: &str = r#"
runbook(#{
    name: "webgated",
    description: "Prints, waits for an approval, prints again",
    params: #{
        target: #{ type: "string", pattern: "^[a-z]+$", description: "which service (lowercase letters)" },
        count: #{ type: "int", min: 1, max: 5, default_value: 2, description: "how many times" },
        mode: #{ type: "string", allowed: ["fast", "safe"], default_value: "safe" },
        password: #{ type: "secret", required: false, description: "the service's password" },
    },
});
step("prepare", || print(`preparing ${params.target} x${params.count}`));
approve(#{ message: "Restart the service?", approvers: ["ddalice"] });
step("restart", || print(`restarted ${params.target}`));
"#;

const SECRET: &str = "s3cr3t-typed-in-the-browser";

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// A call to the API with a token: (status, JSON body or Null).
fn call(method: &str, url: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    let a = agent();
    let auth = format!("Bearer {token}");
    let resp = match method {
        "GET" => a
            .get(url)
            .header("Authorization", &auth)
            .header("X-Drydock", "1")
            .call(),
        _ => a
            .post(url)
            .header("Authorization", &auth)
            .header("X-Drydock", "1")
            .send_json(body.unwrap_or(json!({}))),
    };
    let mut r = resp.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = r.status().as_u16();
    let body = r.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// A token of `scope` made by `args`' account.
fn token_of(out: std::process::Output) -> String {
    assert_code(&out, 0);
    let t = text(&out.stdout).trim().to_string();
    assert!(t.starts_with("ddt_"), "{t}");
    t
}

#[test]
fn an_operator_runs_watches_cancels_and_retries_while_a_second_account_approves() {
    let bob = os_user("ddbob", &["ddops"]);
    let alice = os_user("ddalice", &["ddops"]);
    let dd = Drydock::shared_by("ddops");
    dd.write_runbook("webgated.rhai", WEBGATED);
    let (_serve, url) = dd.serve_web();
    let runner = token_of(dd.run_as(&bob, &["tokens", "create", "--scope", "run"]));
    let approver = token_of(dd.run_as(&alice, &["tokens", "create", "--scope", "approve"]));
    let tokens = dd.json(&["tokens"]);
    let scopes: Vec<&str> = tokens
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["scope"].as_str().unwrap())
        .collect();
    assert_eq!(scopes, ["run", "approve"], "{tokens}");

    // The operator: the catalogue, then the runbook's form.
    let op = Browser::start();
    op.sign_in(&url, &runner, "ddbob");
    op.click("a[data-view=runbooks]");
    op.wait_text("#runbooks", "the runbook and its description", |t| {
        t.contains("webgated") && t.contains("Prints, waits for an approval")
    });
    op.click("a.run[data-name='webgated']");
    op.find("#run-form");
    // Fields made from the declarations: labelled, typed, with defaults.
    assert_eq!(
        op.attribute("#p-password", "type").as_deref(),
        Some("password")
    );
    assert_eq!(op.attribute("#p-count", "type").as_deref(), Some("number"));
    assert_eq!(
        op.script("return document.getElementById('p-count').value"),
        "2"
    );
    assert_eq!(
        op.script("return document.getElementById('p-mode').tagName"),
        "SELECT"
    );
    assert_eq!(
        op.script("return document.getElementById('p-mode').value"),
        "safe"
    );
    let unlabelled = op.script(
        "return [...document.querySelectorAll('#run-form input, #run-form select')]
           .filter((el) => el.labels.length === 0).map((el) => el.id)",
    );
    assert_eq!(unlabelled, json!([]), "every field has a label");
    assert!(op.text(&op.find("#h-target")).contains("lowercase letters"));

    // A bad value is refused next to its field; nothing starts.
    op.type_in("#p-target", "Not Valid!");
    op.type_in("#p-password", SECRET);
    op.click("#run-submit");
    let err = op.wait_text("#err-target", "the field's error", |t| !t.is_empty());
    assert!(err.contains("/^[a-z]+$/"), "{err}");
    assert_eq!(
        op.attribute("#p-target", "aria-invalid").as_deref(),
        Some("true")
    );
    assert_eq!(op.text(&op.find("#err-count")), "");
    assert_eq!(dd.json(&["executions"]), json!([]));

    // A good value starts it; the page follows it to its approval.
    op.clear("#p-target");
    op.type_in("#p-target", "db");
    op.click("#run-submit");
    op.wait_text("#exec-state", "the approval", |t| t == "WaitingForApproval");
    op.wait_text("#printed", "the printed line", |t| {
        t.contains("preparing db x2")
    });
    let id = dd.only_execution();
    let shown = dd.show(&id);
    assert_eq!(shown["execution"]["requested_by"], "ddbob");
    assert!(
        !shown.to_string().contains(SECRET),
        "the secret is journaled sealed"
    );
    assert!(!op.source().contains(SECRET), "the page keeps no secret");
    // A mark in the page: gone if it reloads.
    op.script("window.__notReloaded = true; return null");
    assert_eq!(
        op.attribute("#exec-status", "aria-live").as_deref(),
        Some("polite")
    );

    // Cancel from the page, then retry: back at the approval.
    op.click("#cancel");
    op.wait_text("#exec-state", "the cancel", |t| t == "Cancelled");
    op.click("#retry");
    op.wait_text("#exec-state", "the approval again", |t| {
        t == "WaitingForApproval"
    });

    // The approver, in a browser of its own on a phone-sized window.
    let ap = Browser::start();
    ap.resize(390, 844);
    ap.sign_in(&url, &approver, "ddalice");
    ap.click("a[data-view=approvals]");
    ap.wait_text("#approvals", "the waiting run", |t| {
        t.contains(&id) && t.contains("Restart the service?") && t.contains("you may decide")
    });
    let sideways =
        "return document.documentElement.scrollWidth > document.documentElement.clientWidth + 1";
    assert_eq!(
        ap.script(sideways),
        json!(false),
        "the approvals list fits a phone"
    );
    ap.click(&format!("a.open[data-id='{id}']"));
    ap.wait_text("#exec-state", "waiting", |t| t == "WaitingForApproval");
    assert_eq!(
        ap.script(sideways),
        json!(false),
        "an execution fits a phone"
    );
    ap.type_in("#comment", "go ahead");
    ap.click("#approve");

    // The operator's page sees the end without reloading.
    op.wait_text("#exec-state", "the end", |t| t == "Success");
    op.wait_text("#printed", "the last line", |t| t.contains("restarted db"));
    assert_eq!(op.script("return window.__notReloaded === true"), true);
    let shown = dd.show(&id);
    let d = &shown["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["state"] == "approved")
        .unwrap()["decisions"][0];
    assert_eq!(d["approver"], "ddalice");
    assert_eq!(d["comment"], "go ahead");
}

#[test]
fn a_read_token_is_refused_what_its_scope_does_not_cover_and_the_openapi_document_lists_every_route(
) {
    let dd = Drydock::new();
    dd.write_runbook("webgated.rhai", WEBGATED);
    let (_serve, url) = dd.serve_web();
    let read = token_of(dd.run(&["tokens", "create"]));
    let admin = token_of(dd.run(&["tokens", "create", "--scope", "admin"]));
    let out = dd.run(&["tokens", "create", "--scope", "everything"]);
    assert_code(&out, 2);
    assert!(text(&out.stderr).contains("--scope everything: not a scope"));
    assert_eq!(dd.json(&["tokens"])[0]["scope"], "read");
    assert!(text(&dd.run(&["tokens"]).stdout).contains("SCOPE"));

    // A real execution waiting for an approval, started by the admin.
    let (code, started) = call(
        "POST",
        &format!("{url}api/runs"),
        &admin,
        Some(json!({ "runbook": "webgated", "params": { "target": "web" } })),
    );
    assert_eq!(code, 201, "{started}");
    let id = started["execution_id"].as_str().unwrap().to_string();
    dd.wait_for_approval(&id);

    // Read, and nothing more.
    for (method, path, needed) in [
        ("POST", format!("api/executions/{id}/decision"), "approve"),
        ("POST", "api/runs".to_string(), "run"),
        ("POST", format!("api/executions/{id}/cancel"), "run"),
        ("POST", format!("api/executions/{id}/resume"), "run"),
        (
            "GET",
            "api/instances/i-0abc1234/console".to_string(),
            "console",
        ),
    ] {
        let (code, body) = call(
            method,
            &format!("{url}{path}"),
            &read,
            Some(json!({ "approve": true, "runbook": "webgated", "params": { "target": "x" } })),
        );
        assert_eq!(code, 403, "{method} {path}: {body}");
        assert_eq!(body["needed_scope"], needed, "{body}");
        assert_eq!(body["token_scope"], "read");
        let msg = body["error"].as_str().unwrap();
        assert!(
            msg.contains(&format!("--scope {needed}")),
            "the refusal says how to get the scope: {msg}"
        );
    }
    assert_eq!(
        call("GET", &format!("{url}api/executions/{id}"), &read, None).0,
        200
    );
    // Nothing was decided, started or cancelled by those calls.
    assert_eq!(dd.json(&["executions"]).as_array().unwrap().len(), 1);
    assert_eq!(dd.show(&id)["execution"]["state"], "WaitingForApproval");

    // The OpenAPI document: OpenAPI 3, references that resolve.
    let (code, doc) = call("GET", &format!("{url}api/openapi.json"), &read, None);
    assert_eq!(code, 200, "{doc}");
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let text_of_doc = doc.to_string();
    for r in text_of_doc.split("\"$ref\":\"").skip(1) {
        let target = r.split('"').next().unwrap();
        let name = target
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("a reference outside the schemas: {target}"));
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "{target} does not resolve"
        );
    }
    let paths = doc["paths"].as_object().unwrap();
    // The routes the server serves are the document's paths: the router is
    // built from the same definitions (utoipa-axum), so each documented
    // operation must be served, with the scope its security names.
    let mut operations = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path}"
            );
            let concrete = path
                .replace("{id}", "ex-nonexistent")
                .replace("{name}", "nonexistent");
            let full = format!("{}{}", url.trim_end_matches('/'), concrete);
            let method = method.to_uppercase();
            let (code, body) = call(&method, &full, &admin, Some(json!({})));
            // The router's own 404 and 405 have no JSON body; a handler's
            // "no such execution" has one.
            assert!(
                code != 405 && !(code == 404 && body.is_null()),
                "{method} {path} is documented but not served ({code})"
            );
            let needed: Vec<String> = op["security"]
                .as_array()
                .map(|s| {
                    s.iter()
                        .filter_map(|req| req["token"].as_array())
                        .flatten()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            if path.starts_with("/api/") && path != "/api/executions/{id}/stream" {
                let (code, body) = call(&method, &full, &read, Some(json!({})));
                match needed.first().map(String::as_str) {
                    Some("read") => assert_ne!(code, 403, "{method} {path}: {body}"),
                    Some(scope) => {
                        assert_eq!(code, 403, "{method} {path} documents scope {scope}");
                        assert_eq!(body["needed_scope"], scope, "{method} {path}");
                    }
                    None => panic!("{method} {path} names no token scope"),
                }
            }
        }
    }
    for route in [
        "/api/runs",
        "/api/runbooks",
        "/api/runbooks/{name}",
        "/api/executions/{id}/cancel",
        "/api/executions/{id}/resume",
        "/api/executions/{id}/decision",
        "/api/executions/{id}/stream",
        "/api/openapi.json",
        "/login",
        "/",
    ] {
        assert!(paths.contains_key(route), "{route} is not in the document");
    }
    assert!(operations >= 21, "{operations} operations");
    // Without a token, the document is not served either.
    let r = agent()
        .get(&format!("{url}api/openapi.json"))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}
