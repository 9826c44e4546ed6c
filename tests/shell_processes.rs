//! Host commands as real processes: a step timeout or `drydock cancel`
//! stops the whole process group of a `shell()` or `exec()` command,
//! background jobs included, and nothing of it is left running; `exec`
//! passes arguments without a shell.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{assert_code, assert_stderr, text, Drydock};

/// A `sleep` under a name no other process has, so pgrep finds only ours.
fn marked_sleep(dd: &Drydock, tag: &str) -> PathBuf {
    let marker = dd
        .work()
        .join(format!("ddsleep-{tag}-{}", std::process::id()));
    std::os::unix::fs::symlink(which("sleep"), &marker).unwrap();
    marker
}

fn which(program: &str) -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .unwrap();
    PathBuf::from(text(&out.stdout).trim())
}

fn running(marker: &Path) -> Vec<String> {
    let out = Command::new("pgrep")
        .args(["-a", "-f", "--", marker.to_str().unwrap()])
        .output()
        .unwrap();
    text(&out.stdout)
        .lines()
        .filter(|l| !l.contains("pgrep"))
        .map(str::to_string)
        .collect()
}

/// Waits briefly for processes to go (a killed process may take a moment
/// to leave the process table); returns what is still running.
fn still_running_after(marker: &Path, wait: Duration) -> Vec<String> {
    let start = Instant::now();
    loop {
        let r = running(marker);
        if r.is_empty() || start.elapsed() > wait {
            return r;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_step_timeout_kills_background_jobs_of_the_shell_too() {
    let dd = Drydock::new();
    let s = marked_sleep(&dd, "timeout");
    let s = s.to_str().unwrap();
    for (name, cmd) in [
        // The shell waits for the second sleep; the first is a background job.
        ("both", format!("{s} 30 & {s} 30")),
        // The shell exits at once; its background job holds the pipes.
        ("bg-only", format!("{s} 30 &")),
        // Nothing in the group obeys SIGTERM: SIGKILL after the grace.
        ("deaf", format!("trap '' TERM; {s} 30 & {s} 30")),
    ] {
        dd.write_runbook(
            &format!("{name}.rhai"),
            &format!(
                "runbook(#{{ name: \"{name}\" }});\nstep(\"slow\", #{{ timeout: \"1s\" }}, || shell({cmd:?}));\n"
            ),
        );
        let start = Instant::now();
        let out = dd.run(&["run", name]);
        let took = start.elapsed();
        assert_stderr(&out, 4, &["step `slow` timed out after 1"]);
        assert!(
            took < Duration::from_secs(8),
            "{name}: took {took:?} to time out"
        );
        let left = still_running_after(&PathBuf::from(s), Duration::from_secs(2));
        assert!(
            left.is_empty(),
            "{name}: processes of the command outlived it: {left:?}"
        );
    }
}

#[test]
fn cancel_kills_the_whole_group_of_a_running_command() {
    let dd = Drydock::new();
    let s = marked_sleep(&dd, "cancel");
    let s = s.to_str().unwrap();
    dd.write_runbook(
        "slow.rhai",
        &format!(
            "runbook(#{{ name: \"slow\" }});\nstep(\"wait\", || exec([\"sh\", \"-c\", {:?}]));\n",
            format!("{s} 60 & {s} 60")
        ),
    );
    let out = dd.run(&["run", "slow", "--detach"]);
    assert_code(&out, 0);
    let id = dd.only_execution();
    let marker = PathBuf::from(s);
    dd.wait_until("the command to start", || running(&marker).len() >= 2);
    let start = Instant::now();
    assert_code(&dd.run(&["cancel", &id]), 0);
    dd.wait_until("the execution to end", || dd.state(&id) == "Cancelled");
    assert!(start.elapsed() < Duration::from_secs(10));
    let left = still_running_after(&marker, Duration::from_secs(3));
    assert!(left.is_empty(), "outlived the cancel: {left:?}");
}

#[test]
fn exec_runs_without_a_shell_and_reports_failures_clearly() {
    let dd = Drydock::new();
    let w = dd.work();
    dd.write_runbook(
        "exec.rhai",
        r#"runbook(#{ name: "exec" });
let dir = env("WORK");
let words = ["a';touch PWNED;echo '", "$(touch X)", "`touch Y`", "-rf", "new\nline", "sp ace"];
let out = exec(["printf", "<%s>"] + words, #{ cwd: dir });
let r = exec_result(["sh", "-c", "echo $DD_V; cat; echo err >&2; exit 3"],
                    #{ env: #{ DD_V: "v" }, stdin: "in", cwd: dir });
let errors = [];
for argv in [["false"], ["drydock-no-such-program"], ["rm", "a\x00b"], []] {
    try { exec(argv); errors.push("no error"); } catch (e) { errors.push(`${e}`); }
}
try { shell("echo on-stderr >&2; exit 7"); } catch (e) { errors.push(`${e}`); }
try { shell("kill -KILL $$"); } catch (e) { errors.push(`${e}`); }
#{ out: out, r: r, errors: errors, quoted: shell(`printf '%s' ${shell_quote(words[0])}`) }
"#,
    );
    let v = dd.json(&["run", "exec"]);
    let output = &v["output"];
    assert_eq!(
        output["out"], "<a';touch PWNED;echo '><$(touch X)><`touch Y`><-rf><new\nline><sp ace>",
        "{v}"
    );
    assert_eq!(output["r"]["exit_code"], 3);
    assert_eq!(output["r"]["stdout"], "v\nin");
    assert_eq!(output["r"]["stderr"], "err\n");
    assert_eq!(output["quoted"], "a';touch PWNED;echo '");
    let errors: Vec<&str> = output["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(
        errors[0].contains("command `false` exited with status 1"),
        "{errors:?}"
    );
    assert!(
        errors[1].contains("no program named drydock-no-such-program in PATH"),
        "{errors:?}"
    );
    assert!(
        errors[2].contains("argv[1] contains a NUL byte"),
        "{errors:?}"
    );
    assert!(errors[3].contains("the argv is empty"), "{errors:?}");
    assert!(
        errors[4].contains("exited with status 7") && errors[4].contains("on-stderr"),
        "{errors:?}"
    );
    assert!(
        errors[5].contains("killed by signal 9 (SIGKILL)"),
        "{errors:?}"
    );
    for marker in ["PWNED", "X", "Y"] {
        assert!(!w.join(marker).exists(), "{marker} was created");
    }
}
