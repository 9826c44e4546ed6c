//! Guests: the shared image, instances and their life cycle, and commands
//! run in a guest (through a runbook, or the REPL on its console).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{assert_code, text, Drydock};

/// Where image builds are cached across tests and test runs.
pub fn image_cache() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("images")
}

impl Drydock {
    /// Builds (or reuses) the default image and registers it; returns its id.
    pub fn image(&self, region: &str) -> String {
        self.image_with(region, &[])
    }

    pub fn image_with(&self, region: &str, extra: &[&str]) -> String {
        let mut args = vec!["--json", "--region", region, "image", "build"];
        args.extend_from_slice(extra);
        let out = self
            .command(&args)
            .env("DRYDOCK_IMAGE_CACHE", image_cache())
            .output()
            .unwrap();
        assert_code(&out, 0);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["image"]["id"].as_str().unwrap().to_string()
    }

    /// Launches an instance and returns its id.
    pub fn launch(&self, region: &str, image: &str, extra: &[&str]) -> String {
        let mut args = vec![
            "--json", "--region", region, "instance", "launch", "--image", image,
        ];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        assert_code(&out, 0);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["id"].as_str().unwrap().to_string()
    }

    pub fn instance(&self, region: &str, id: &str) -> Value {
        let list = self.json(&["--region", region, "instances"]);
        list["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == id)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Every instance `drydock instances` lists in `region`.
    pub fn instances(&self, region: &str) -> Vec<Value> {
        self.json(&["--region", region, "instances"])["instances"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The id of an instance's root volume.
    pub fn root_volume(&self, region: &str, id: &str) -> String {
        let inst = self.instance(region, id);
        inst["root_volume"]
            .as_str()
            .unwrap_or_else(|| panic!("{id} has no root volume: {inst}"))
            .to_string()
    }

    /// How many times an instance has booted.
    pub fn boots(&self, region: &str, id: &str) -> u64 {
        let inst = self.instance(region, id);
        inst["boots"]
            .as_u64()
            .unwrap_or_else(|| panic!("{id} has no boot count: {inst}"))
    }

    /// `drydock instance <verb> <args…>`, which must succeed.
    fn instance_verb(&self, region: &str, verb: &str, args: &[&str]) {
        let mut all = vec!["--region", region, "instance", verb];
        all.extend_from_slice(args);
        assert_code(&self.run(&all), 0);
    }

    pub fn stop_instance(&self, region: &str, id: &str) {
        self.instance_verb(region, "stop", &[id]);
    }

    /// Stops an instance as a power cut would (`stop --force`).
    pub fn force_stop(&self, region: &str, id: &str) {
        self.instance_verb(region, "stop", &["--force", id]);
    }

    pub fn start_instance(&self, region: &str, id: &str) {
        self.instance_verb(region, "start", &[id]);
    }

    pub fn reboot_instance(&self, region: &str, id: &str) {
        self.instance_verb(region, "reboot", &[id]);
    }

    pub fn terminate(&self, region: &str, id: &str) {
        self.instance_verb(region, "terminate", &[id]);
    }

    /// Stops a running instance, injects `fault` and starts it again.
    pub fn inject_fault(&self, region: &str, id: &str, fault: &str) {
        self.stop_instance(region, id);
        assert_code(
            &self.run(&["--region", region, "fault", "inject", id, fault]),
            0,
        );
        self.start_instance(region, id);
    }

    /// Waits for the login prompt of an instance (its hostname is its id).
    pub fn wait_login(&self, region: &str, id: &str) {
        self.wait_console(region, id, &format!("{id} login:"));
    }

    /// Waits for boot `n` (or a later one) to reach the login prompt.
    pub fn wait_login_of_boot(&self, region: &str, id: &str, n: u64) {
        let start = Instant::now();
        while !(self.boots(region, id) >= n
            && self
                .console(region, id, None)
                .contains(&format!("{id} login:")))
        {
            assert!(
                start.elapsed().as_secs() < 150,
                "boot {n} of {id} never reached the login prompt; console:\n{}",
                self.console(region, id, None)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Runs a runbook `name` that logs in as root with `password` and runs
    /// `commands` (key, command) in order, returning each one's stdout by
    /// key; a non-zero exit of any command fails the test.
    pub fn in_guest(
        &self,
        region: &str,
        id: &str,
        name: &str,
        password: &str,
        commands: &[(&str, &str)],
    ) -> Value {
        let mut body = format!(
            "let c = console::open(params.instance);\nc.wait_for_boot(\"180s\");\nc.login(\"root\", {password:?});\nlet out = #{{}};\n",
        );
        for (key, cmd) in commands {
            body.push_str(&format!(
                "let r = c.run({cmd:?});\nif r.exit_code != 0 {{ throw \"{key}: exit \" + r.exit_code + \": \" + r.stdout; }}\nout[{key:?}] = r.stdout;\n"
            ));
        }
        body.push_str("out\n");
        self.write_runbook(
            &format!("{name}.rhai"),
            &format!(
                "runbook(#{{ name: {name:?}, params: #{{ instance: #{{ type: \"instance\" }} }} }});\n{body}"
            ),
        );
        let out = self.run(&[
            "--json",
            "--region",
            region,
            "run",
            name,
            "-p",
            &format!("instance={id}"),
        ]);
        assert_code(&out, 0);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["output"].clone()
    }

    /// Runs `cmd` as root on an instance's console through the REPL (the
    /// command and password given through the environment, so no quoting
    /// layer changes them) and returns its stdout; a non-zero exit fails
    /// the test.
    pub fn guest(&self, region: &str, id: &str, password: &str, cmd: &str) -> String {
        let script = "let c = console::open(env(\"DD_GUEST_ID\")); c.wait_for_boot(\"180s\"); c.login(\"root\", env(\"DD_TEST_PW\")); \
             let r = c.run(env(\"DD_GUEST_CMD\"), \"300s\"); \
             if r.exit_code != 0 { throw `exit ${r.exit_code}: ${r.stdout}`; } r.stdout";
        let out = self
            .command(&["--region", region, "repl", "-c", script])
            .env("DD_GUEST_ID", id)
            .env("DD_GUEST_CMD", cmd)
            .env("DD_TEST_PW", password)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_code(&out, 0);
        text(&out.stdout)
    }
}
