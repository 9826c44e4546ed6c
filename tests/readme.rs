//! The README as a tested document: every `drydock …` line of its ```sh
//! blocks runs here, in order, against a fresh data directory, and must
//! exit 0 (or the code the README gives) — unless it is listed below as
//! skipped, with the reason (a guest, a real instance or execution id, an
//! interactive or long-running command). The files the examples name as
//! the reader's own (`my.rhai`, `p.json`, `schedules.toml`,
//! `freezes.ics`) are written first, in the directory the lines run in.
//! Optional arguments in `[…]` are left out: the line runs as its
//! shortest form.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::text;

/// Lines skipped, by what they start with or contain, and why.
const SKIPPED: &[(&str, &str)] = &[
    ("…", "names a placeholder id (i-…, ex-…, img-…): needs a real instance, image or execution; the guest tests run these commands"),
    ("ex-3f2a", "names an example execution id"),
    ("i-0abc1234", "names example instance ids: needs running instances (tests/fleets.rs)"),
    ("--targets", "a fleet run needs instances its targets match (tests/fleets.rs)"),
    ("|", "shorthand for several commands (one of the alternatives)"),
    ("drydock run clean-old-files -p dir=/var/log/app", "waits for an approval from a second account (tests/cli.rs runs the runbook end to end)"),
    ("drydock image build", "builds a guest image from Debian packages or a kernel (minutes; the guest tests build it)"),
    ("drydock repl", "interactive (tests/repl.rs drives it in a terminal)"),
    ("drydock run dr-drill", "needs tagged running instances (tests/drill.rs)"),
    ("drydock driver-volume create", "needs a guest kernel release's Debian package (tests/migration.rs)"),
];

/// `drydock serve` (exactly) runs until stopped: tests/serve_local_api.rs
/// and tests/schedules.rs run it.
const RUNS_UNTIL_STOPPED: &str = "drydock serve";

/// The exit code the README gives for a line, when not 0.
fn expected_codes(line: &str) -> &'static [i32] {
    if line == "drydock serve status" {
        // "exit 1 if none runs": none runs here.
        &[1]
    } else if line.starts_with("drydock calendar state") {
        // "open" (exit 0) or "closed: why" (exit 1), by today's date.
        &[0, 1]
    } else {
        &[0]
    }
}

/// The ```sh blocks' lines: continuations joined, comments dropped.
fn sh_lines(readme: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut in_sh = false;
    let mut pending: Option<(usize, String)> = None;
    for (i, line) in readme.lines().enumerate() {
        let t = line.trim_start();
        if t.starts_with("```") {
            in_sh = !in_sh && t == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        let code = strip_comment(line);
        let (start, mut joined) = pending.take().unwrap_or((i + 1, String::new()));
        let code = code.trim_end();
        if let Some(head) = code.strip_suffix('\\') {
            joined.push_str(head.trim());
            joined.push(' ');
            pending = Some((start, joined));
            continue;
        }
        joined.push_str(code.trim());
        let joined = joined.trim().to_string();
        if !joined.is_empty() {
            out.push((start, joined));
        }
    }
    out
}

/// The line without a `# comment` (a `#` after whitespace, outside quotes).
fn strip_comment(line: &str) -> &str {
    let (mut single, mut double) = (false, false);
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && prev.is_whitespace() => return &line[..i],
            _ => {}
        }
        prev = c;
    }
    line
}

/// Leaves out `[optional]` parts (outside quotes).
fn without_optional(line: &str) -> String {
    let (mut single, mut double, mut depth) = (false, false, 0);
    let mut out = String::new();
    for c in line.chars() {
        match c {
            '\'' if !double && depth == 0 => single = !single,
            '"' if !single && depth == 0 => double = !double,
            '[' if !single && !double => {
                depth += 1;
                continue;
            }
            ']' if !single && !double && depth > 0 => {
                depth -= 1;
                continue;
            }
            _ => {}
        }
        if depth == 0 {
            out.push(c);
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn skip_reason(line: &str) -> Option<&'static str> {
    if line == RUNS_UNTIL_STOPPED {
        return Some("runs until stopped (tests/serve_local_api.rs, tests/schedules.rs)");
    }
    SKIPPED
        .iter()
        .find(|(pattern, _)| {
            if pattern.starts_with("drydock ") {
                line.starts_with(pattern)
            } else {
                line.contains(pattern)
            }
        })
        .map(|(_, why)| *why)
}

/// The reader's own files the examples name.
fn write_readers_files(dir: &Path) {
    std::fs::write(
        dir.join("my.rhai"),
        "runbook(#{ name: \"my-runbook\", description: \"the README's own\",\n    params: #{ greeting: #{ type: \"string\", default_value: \"hello\" } } });\nstep(\"greet\", || params.greeting);\n",
    )
    .unwrap();
    std::fs::write(dir.join("p.json"), "{\"greeting\": \"hi\"}\n").unwrap();
    std::fs::write(
        dir.join("schedules.toml"),
        "[[schedule]]\nname = \"from-file\"\nrunbook = \"clean-old-files\"\nschedule = \"rate(1 day)\"\n[schedule.params]\ndir = \"/var/tmp\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("freezes.ics"),
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:f1\r\nDTSTART:20300101T000000Z\r\nDTEND:20300102T000000Z\r\nSUMMARY:New year\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
    )
    .unwrap();
}

#[test]
fn every_command_of_the_readme_that_needs_no_guest_runs_as_written() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let bin = dir.path().join("bin");
    for d in [&work, &bin, &dir.path().join("config")] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::os::unix::fs::symlink(common::bin(), bin.join("drydock")).unwrap();
    write_readers_files(&work);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let (mut ran, mut skipped, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    for (at, line) in sh_lines(&readme) {
        if !line.starts_with("drydock ") && line != "drydock" {
            continue;
        }
        if let Some(why) = skip_reason(&line) {
            skipped.push(format!("README.md:{at}: {line}\n    skipped: {why}"));
            continue;
        }
        let runnable = without_optional(&line);
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(&runnable)
            .current_dir(&work)
            .env("PATH", &path)
            .env("DRYDOCK_DATA_DIR", dir.path().join("data"))
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env("XDG_DATA_HOME", dir.path().join("xdg-data"))
            .env_remove("DRYDOCK_CONFIG")
            .env_remove("DRYDOCK_RUNBOOK_PATH")
            .env_remove("DRYDOCK_GROUP")
            .env_remove("DRYDOCK_REGION")
            .env_remove("DRYDOCK_PROFILE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A value for commands that read one from standard input.
        let _ = child.stdin.take().unwrap().write_all(b"readme-value\n");
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        let code = out.status.code().unwrap_or(-1);
        let want = expected_codes(&runnable);
        if want.contains(&code) {
            ran.push(format!("README.md:{at}: {runnable}"));
        } else {
            failed.push(format!(
                "README.md:{at}: `{runnable}` exited {code}, the README says {want:?}\n  stdout: {}\n  stderr: {}",
                text(&out.stdout).trim(),
                text(&out.stderr).trim()
            ));
        }
    }
    eprintln!(
        "ran {}:\n  {}\nskipped {}:\n  {}",
        ran.len(),
        ran.join("\n  "),
        skipped.len(),
        skipped.join("\n  ")
    );
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    // The extraction works: the tour, schedules, tokens, calendars and
    // windows were run, not skipped.
    for must in [
        "drydock runbooks",
        "drydock validate my.rhai",
        "drydock run my.rhai --params-file p.json --detach",
        "drydock param put rescue/root --secure",
        "drydock schedules add nightly",
        "drydock schedules import schedules.toml",
        "drydock tokens create --label laptop",
        "drydock calendar import prod freezes.ics",
        "drydock windows task patch logs",
        "drydock windows show patch",
        "drydock instances",
    ] {
        assert!(
            ran.iter().any(|r| r.contains(must)),
            "`{must}` did not run: ran {ran:#?}"
        );
    }
}
