//! A real browser for tests of the web console: headless Chromium driven
//! over WebDriver (chromedriver, Debian's chromium-driver), one session
//! per [`Browser`].

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::serve::{free_port, Killed};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    base: String,
    session: String,
    _driver: Killed,
    _profile: tempfile::TempDir,
}

/// A WebDriver call; errors come back as the JSON WebDriver sends.
pub fn call(method: &str, url: &str, body: Option<Value>) -> Value {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let resp = match (method, body) {
        ("GET", _) => agent.get(url).call(),
        ("DELETE", _) => agent.delete(url).call(),
        (_, b) => agent.post(url).send_json(b.unwrap_or(json!({}))),
    };
    match resp {
        Ok(mut r) => r.body_mut().read_json::<Value>().unwrap_or(Value::Null),
        Err(e) => panic!("WebDriver {method} {url}: {e}"),
    }
}

/// Retries an element action a page re-render made stale.
pub fn with_retry(what: &str, f: impl Fn() -> Value) {
    let start = Instant::now();
    loop {
        let v = f();
        if v["value"].get("error").is_none() {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{what}: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl Browser {
    pub fn start() -> Self {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is installed by scripts/setup (Debian's chromium-driver)");
        let base = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        while ureq::get(&format!("{base}/status")).call().is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({ "capabilities": { "alwaysMatch": { "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync",
                     format!("--user-data-dir={}", profile.path().display())]
        }}}});
        let v = call("POST", &format!("{base}/session"), Some(caps));
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_string();
        Self {
            base,
            session,
            _driver: Killed(driver),
            _profile: profile,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/session/{}{path}", self.base, self.session)
    }

    pub fn go(&self, url: &str) {
        call("POST", &self.url("/url"), Some(json!({ "url": url })));
    }

    /// Waits up to 20 s for an element matching `css`.
    pub fn find(&self, css: &str) -> String {
        let start = Instant::now();
        loop {
            let v = call(
                "POST",
                &self.url("/element"),
                Some(json!({ "using": "css selector", "value": css })),
            );
            if let Some(id) = v["value"][ELEMENT].as_str() {
                return id.to_string();
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no {css} on the page: {}",
                self.source()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn text(&self, el: &str) -> String {
        call("GET", &self.url(&format!("/element/{el}/text")), None)["value"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn click(&self, css: &str) {
        with_retry(&format!("click {css}"), || {
            let el = self.find(css);
            call(
                "POST",
                &self.url(&format!("/element/{el}/click")),
                Some(json!({})),
            )
        });
    }

    pub fn type_in(&self, css: &str, value: &str) {
        with_retry(&format!("type into {css}"), || {
            let el = self.find(css);
            call(
                "POST",
                &self.url(&format!("/element/{el}/value")),
                Some(json!({ "text": value })),
            )
        });
    }

    pub fn source(&self) -> String {
        call("GET", &self.url("/source"), None)["value"]
            .as_str()
            .unwrap_or_default()
            .chars()
            .take(3000)
            .collect()
    }

    /// Waits until the element's text satisfies `cond`.
    pub fn wait_text(&self, css: &str, what: &str, cond: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let t = self.text(&self.find(css));
            if cond(&t) {
                return t;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{css} never showed {what}; it says {t:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = ureq::delete(&format!("{}/session/{}", self.base, self.session)).call();
    }
}

impl Browser {
    /// Runs a script in the page and returns its value.
    pub fn script(&self, js: &str) -> Value {
        call(
            "POST",
            &self.url("/execute/sync"),
            Some(json!({ "script": js, "args": [] })),
        )["value"]
            .clone()
    }

    /// Empties an input.
    pub fn clear(&self, css: &str) {
        with_retry(&format!("clear {css}"), || {
            let el = self.find(css);
            call(
                "POST",
                &self.url(&format!("/element/{el}/clear")),
                Some(json!({})),
            )
        });
    }

    /// An attribute of the first element matching `css` (None when absent).
    pub fn attribute(&self, css: &str, name: &str) -> Option<String> {
        let el = self.find(css);
        call(
            "GET",
            &self.url(&format!("/element/{el}/attribute/{name}")),
            None,
        )["value"]
            .as_str()
            .map(str::to_string)
    }

    /// Sets the window's size (a phone's, say).
    pub fn resize(&self, width: u32, height: u32) {
        call(
            "POST",
            &self.url("/window/rect"),
            Some(json!({ "width": width, "height": height })),
        );
    }

    /// Signs in with `token` and waits for the page to name `account`.
    pub fn sign_in(&self, url: &str, token: &str, account: &str) {
        self.go(url);
        self.type_in("#token", token);
        self.click("#signin");
        self.wait_text("#me", "the account", |t| t.contains(account));
    }
}
