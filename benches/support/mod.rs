//! What the benches that drive the `drydock` binary share: a data
//! directory of their own, the image cache of the test runs, commands.
//! (Each bench includes this file as `mod support`.)

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

pub struct Bench {
    pub data: tempfile::TempDir,
    pub cache: PathBuf,
}

impl Bench {
    /// A fresh data directory; images from the cache the tests share.
    pub fn new() -> Self {
        Self {
            data: tempfile::tempdir().unwrap(),
            cache: PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("images"),
        }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_drydock"));
        c.arg("--data-dir")
            .arg(self.data.path())
            .args(args)
            .env("DRYDOCK_IMAGE_CACHE", &self.cache)
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// `--json ARGS`, which must succeed (or end with one of `also`).
    pub fn json_or(&self, args: &[&str], also: &[i32]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.run(&a);
        assert!(
            out.status.success() || out.status.code().is_some_and(|c| also.contains(&c)),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    /// `--json ARGS`, which must succeed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        self.json_or(args, &[])
    }

    /// The image the benches boot (built once, then cached): its id.
    pub fn image(&self) -> String {
        let built = self.json(&["image", "build"]);
        built["image"]["id"]
            .as_str()
            .or_else(|| built["id"].as_str())
            .expect("image build names its image")
            .to_string()
    }
}
