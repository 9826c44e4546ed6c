//! An instance's serial console: its output, waiting for what it shows,
//! and commands run as root on it through the REPL.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use super::{text, Drydock};

impl Drydock {
    pub fn console(&self, region: &str, id: &str, boot: Option<u32>) -> String {
        let boot_s = boot.map(|b| b.to_string());
        let mut args = vec!["--region", region, "console-output", id];
        if let Some(b) = &boot_s {
            args.extend_from_slice(&["--boot", b]);
        }
        text(&self.run(&args).stdout)
    }

    /// Waits up to 90 s for `pattern` in the console output of the latest boot.
    pub fn wait_console(&self, region: &str, id: &str, pattern: &str) {
        let start = Instant::now();
        loop {
            let out = self.console(region, id, None);
            if out.contains(pattern) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "no {pattern:?} on the console of {id}; got:\n{out}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs `cmd` as root on an instance's serial console (waiting for its
    /// boot first) through the REPL; the password travels in the
    /// environment, never on a command line.
    pub fn console_run(&self, region: &str, id: &str, password: &str, cmd: &str) -> Output {
        let script = format!(
            "let c = console::open(\"{id}\"); c.wait_for_boot(\"180s\"); c.login(\"root\", secret(env(\"DD_LOGIN_PW\"))); c.run(\"{cmd}\", \"60s\").stdout"
        );
        self.command(&["--region", region, "repl", "-c", &script])
            .env("DD_LOGIN_PW", password)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// As `console_run`, with the password in the script as a plain
    /// string (not a secret: nothing of the output is masked) and
    /// `boot_wait` for the boot.
    pub fn console_run_plain(
        &self,
        region: &str,
        id: &str,
        password: &str,
        boot_wait: &str,
        cmd: &str,
    ) -> Output {
        let script = format!(
            "let c = console::open(\"{id}\"); c.wait_for_boot(\"{boot_wait}\"); c.login(\"root\", \"{password}\"); c.run(\"{cmd}\", \"60s\").stdout"
        );
        self.run(&["--region", region, "repl", "-c", &script])
    }
}
