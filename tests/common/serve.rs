//! `drydock serve` in the background, its local API, and what tests that
//! wait on it use: free ports, deadlines, timestamps.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{text, Drydock};

/// A child process killed (and reaped) when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drydock {
    /// `drydock serve --listen <listen>` in the background, its output
    /// discarded.
    pub fn serve(&self, listen: &str) -> Child {
        self.serve_with(listen, Stdio::null(), Stdio::null())
    }

    /// `drydock serve --listen <listen>` with its stdout and stderr as given.
    pub fn serve_with(&self, listen: &str, stdout: Stdio, stderr: Stdio) -> Child {
        self.command(&["serve", "--listen", listen])
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap()
    }

    /// Starts `drydock serve` and returns it with the web console's address.
    pub fn serve_web(&self) -> (Killed, String) {
        let mut child = self.serve_with("127.0.0.1:0", Stdio::piped(), Stdio::null());
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = loop {
            let line = lines.next().expect("serve printed its address").unwrap();
            if let Some(rest) = line.split("web console on ").nth(1) {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        // Keep reading so serve never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        (Killed(child), url)
    }

    /// `serve status --json` once a serve answers (up to 20 s).
    pub fn serve_status_when_up(&self) -> Value {
        let start = Instant::now();
        loop {
            let out = self.run(&["--json", "serve", "status"]);
            if out.status.code() == Some(0) {
                return serde_json::from_slice(&out.stdout).unwrap();
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "serve never answered: {} {}",
                text(&out.stdout),
                text(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A GET to serve's local API over DATA_DIR/serve.sock: (status line, body).
    pub fn local_api_get(&self, path: &str) -> (String, String) {
        let mut s =
            std::os::unix::net::UnixStream::connect(self.data_dir().join("serve.sock")).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: drydock\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
        (
            head.lines().next().unwrap_or_default().to_string(),
            body.to_string(),
        )
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `cond` holds, failing the test after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A schedule of one run `secs` from now: `at(…)` in UTC to the second.
pub fn at_in(secs: u64) -> String {
    let t = chrono::Utc::now() + chrono::Duration::seconds(secs as i64);
    format!("at({})", t.format("%Y-%m-%dT%H:%M:%S"))
}

/// Now plus `offset_secs`, as an RFC 3339 UTC time to the second.
pub fn iso(offset_secs: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(offset_secs))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}
