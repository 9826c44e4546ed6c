//! Shared test harness: a drydock with its own data and runbook
//! directories, driven through the real binary.

#![allow(dead_code)]

pub mod approvals;
pub mod browser;
pub mod console;
pub mod guest;
pub mod os_users;
pub mod power;
pub mod scenario;
pub mod serve;
pub mod volumes;

#[allow(unused_imports)]
pub use guest::image_cache;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Drydock {
    pub dir: tempfile::TempDir,
    /// The sharing group every command of this drydock uses (DRYDOCK_GROUP).
    pub group: Option<String>,
}

impl Drop for Drydock {
    /// Instances and detached or abandoned runners outlive commands: stop
    /// every drydock process of this test's data directory (VMMs die with
    /// their supervisors), so a failed test leaves nothing waiting.
    fn drop(&mut self) {
        let pattern = format!("--data-dir {} ", self.data_dir().display());
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", "--", &pattern])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // The VPC namespaces this data directory made (each has a lock
        // file named after its VPC): their TAPs went with the VMMs.
        if let Ok(locks) = std::fs::read_dir(self.data_dir().join("network")) {
            let vpcs: Vec<String> = locks
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter_map(|n| n.strip_suffix(".lock").map(str::to_string))
                .collect();
            for ns in std::fs::read_dir("/run/netns")
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = ns.file_name().to_string_lossy().into_owned();
                if name.starts_with("drydock-")
                    && vpcs.iter().any(|v| name.ends_with(&format!("-{v}")))
                {
                    let _ = Command::new("ip")
                        .args(["netns", "delete", &name])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_drydock")
}

/// drydock's VMM binary, built beside `drydock` by `cargo build
/// --workspace --all-targets` (scripts/setup; with the workspace's tests
/// in the build, it has the test hooks the VMM's seccomp tests use).
pub fn vmm_bin() -> std::path::PathBuf {
    let path = std::path::Path::new(bin()).with_file_name("drydock-vmm");
    let version = Command::new(&path).arg("--version").output();
    match version {
        Ok(out) if text(&out.stdout).contains("(test hooks)") => path,
        Ok(out) => panic!(
            "{} was built without its test hooks ({}): run `cargo build --workspace --all-targets` (scripts/setup does)",
            path.display(),
            text(&out.stdout).trim()
        ),
        Err(e) => panic!(
            "cannot run {} ({e}): run `cargo build --workspace --all-targets` (scripts/setup does)",
            path.display()
        ),
    }
}

impl Drydock {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("runbooks")).unwrap();
        std::fs::create_dir_all(dir.path().join("work")).unwrap();
        Self { dir, group: None }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A scratch directory for files the runbooks touch.
    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    pub fn write_runbook(&self, file: &str, source: &str) -> PathBuf {
        let path = self.dir.path().join("runbooks").join(file);
        std::fs::write(&path, source).unwrap();
        path
    }

    pub fn command(&self, args: &[&str]) -> Command {
        self.command_in(Command::new(bin()), args)
    }

    /// Sets up `cmd` (the binary, or a wrapper that runs it) with this
    /// drydock's directories and `args`.
    pub fn command_in(&self, mut cmd: Command, args: &[&str]) -> Command {
        cmd.env_remove("DRYDOCK_RUNBOOK_PATH")
            .env("DRYDOCK_CONFIG", self.dir.path().join("no-config.toml"))
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("WORK", self.work())
            .env("USER", "tester")
            // The console password test guests are launched with, for
            // secret parameters given as `password=env:DD_PW`.
            .env("DD_PW", "pw")
            .env_remove("DRYDOCK_GROUP")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--runbook-dir")
            .arg(self.dir.path().join("runbooks"))
            .args(args);
        cmd.env_remove("DRYDOCK_CONFIG");
        if let Some(g) = &self.group {
            cmd.env("DRYDOCK_GROUP", g);
        }
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).stdin(Stdio::null()).output().unwrap()
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Runs and parses stdout as JSON; panics with stderr on failure.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        let out = self.run(&full);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?}: not JSON ({e}); stdout: {}; stderr: {}",
                text(&out.stdout),
                text(&out.stderr)
            )
        })
    }

    pub fn executions(&self) -> Vec<Value> {
        self.json(&["executions", "--all"])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn show(&self, id: &str) -> Value {
        self.json(&["executions", "show", id])
    }

    pub fn state(&self, id: &str) -> String {
        self.show(id)["execution"]["state"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Waits until `cond` holds, up to 20 s.
    pub fn wait_until(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        while !cond() {
            // Generous: CI shares 2 CPUs with emulated guests.
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The id of the only top-level execution, once it exists.
    pub fn only_execution(&self) -> String {
        let mut id = String::new();
        self.wait_until("the execution to be recorded", || {
            let list = self.json(&["executions"]);
            match list.as_array().map(|a| a.as_slice()) {
                Some([one]) => {
                    id = one["id"].as_str().unwrap().to_string();
                    true
                }
                _ => false,
            }
        });
        id
    }

    /// The id of the newest top-level execution of `runbook`, once it exists.
    pub fn only_execution_of(&self, runbook: &str) -> String {
        let mut id = String::new();
        self.wait_until("the execution to be recorded", || {
            let list = self.json(&["executions", "--runbook", runbook]);
            match list.as_array().and_then(|a| a.first()) {
                Some(e) => {
                    id = e["id"].as_str().unwrap().to_string();
                    true
                }
                None => false,
            }
        });
        id
    }

    /// Waits for a pending approval on `id`.
    pub fn wait_for_approval(&self, id: &str) {
        self.wait_until("a pending approval", || {
            self.json(&["approvals"])
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["execution_id"] == id)
        });
    }

    /// Lines of a counter file written by runbook steps.
    pub fn count(&self, file: &str, line: &str) -> usize {
        std::fs::read_to_string(self.work().join(file))
            .unwrap_or_default()
            .lines()
            .filter(|l| *l == line)
            .count()
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts an exit code, showing the output when it differs.
pub fn assert_code(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Asserts a usage error (exit 2) whose message says `says`.
pub fn assert_refused(out: &Output, args: &[&str], says: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(err.contains(says), "{args:?}: {err}");
}

pub fn wait_child(child: Child) -> Output {
    child.wait_with_output().unwrap()
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// Serializes tests that boot guests: on two cores, one TCG guest at a
/// time keeps boots fast and timings predictable.
pub fn vm_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A xorshift64 generator from `seed`: the moments of a random-kill test,
/// the same for the same seed.
pub fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut rng = seed | 1;
    move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    }
}

/// The seeds a random-kill test runs with: those in `var` (comma
/// separated) when set, else `fixed` (seeds that once found a bug) and one
/// new random seed. Each is printed, so a failure can be replayed.
pub fn kill_seeds(var: &str, fixed: &[u64]) -> Vec<u64> {
    if let Ok(list) = std::env::var(var) {
        let seeds: Vec<u64> = list
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        if !seeds.is_empty() {
            return seeds;
        }
    }
    let random = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut seeds = fixed.to_vec();
    seeds.push(random);
    eprintln!("{var}: seeds {seeds:?}");
    seeds
}

impl Drydock {
    /// The pids of every process of this drydock: runners, supervisors,
    /// VMMs (anything whose command line names the data directory).
    pub fn processes(&self) -> Vec<u32> {
        power::processes_naming(&self.data_dir())
    }

    /// A power loss: every process of this drydock stopped at the same
    /// instant (SIGSTOP to all, then SIGKILL to all), as if the host went
    /// down. Returns how many processes died.
    pub fn power_loss(&self) -> usize {
        let pids = self.processes();
        assert!(
            power::stop_and_kill(&pids, Duration::from_secs(30)),
            "processes outlived SIGKILL"
        );
        pids.len()
    }
}

/// Asserts an exit code and that stderr holds every one of `needles`,
/// showing stderr when it does not.
pub fn assert_stderr(out: &Output, code: i32, needles: &[&str]) -> String {
    assert_code(out, code);
    let err = text(&out.stderr);
    for n in needles {
        assert!(err.contains(n), "no {n:?} in stderr: {err}");
    }
    err
}

/// Asserts an exit code and that stdout holds every one of `needles`,
/// showing stdout when it does not.
pub fn assert_stdout(out: &Output, code: i32, needles: &[&str]) -> String {
    assert_code(out, code);
    let said = text(&out.stdout);
    for n in needles {
        assert!(said.contains(n), "no {n:?} in stdout: {said}");
    }
    said
}
