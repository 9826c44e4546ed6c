//! The documentation as tested documents: README.md and every markdown
//! file under docs/ (recursively).
//!
//! Commands: every `drydock …` line of their ```sh blocks, and every
//! `$ drydock …` line of their other code blocks (a command shown with its
//! output), runs here, in order, against a fresh data directory per
//! document, and must exit 0 (or the code the document gives) — unless it
//! is listed below as skipped, with the reason (a guest, a real instance
//! or execution id, an interactive or long-running command). A line may
//! start with environment assignments (`COLUMNS=100 drydock …`). The files
//! the examples name as the reader's own (`my.rhai`, `p.json`,
//! `schedules.toml`, `freezes.ics`) are written first, in the directory the
//! lines run in. Optional arguments in `[…]` are left out: the line runs
//! as its shortest form.
//!
//! Links: every relative markdown link of those files must point to an
//! existing file, and a `#fragment` to a heading of its target.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::text;

/// Lines skipped, by what they start with or contain, and why.
const SKIPPED: &[(&str, &str)] = &[
    ("…", "names a placeholder id (i-…, ex-…, img-…): needs a real instance, image or execution; the guest tests run these commands"),
    ("ex-3f2a", "names an example execution id"),
    ("ex-42d18d699c00", "names an example execution id"),
    ("i-0abc1234", "names example instance ids: needs running instances (tests/fleets.rs)"),
    ("--targets", "a fleet run needs instances its targets match (tests/fleets.rs)"),
    ("|", "shorthand for several commands (one of the alternatives)"),
    ("drydock run clean-old-files -p dir=/var/log/app", "waits for an approval from a second account (tests/cli.rs runs the runbook end to end)"),
    ("drydock image build", "builds a guest image from Debian packages or a kernel (minutes; the guest tests build it)"),
    ("drydock repl", "interactive (tests/repl.rs drives it in a terminal)"),
    ("drydock run dr-drill", "needs tagged running instances (tests/drill.rs)"),
    ("drydock driver-volume create", "needs a guest kernel release's Debian package (tests/migration.rs)"),
    ("--webhook-secret param:", "needs a signing key in the parameter store, typed at a prompt (tests/rules.rs adds and fires webhook rules end to end)"),
];

/// `drydock serve` (exactly) runs until stopped: tests/serve_local_api.rs
/// and tests/schedules.rs run it.
const RUNS_UNTIL_STOPPED: &str = "drydock serve";

/// The exit code the documentation gives for a line, when not 0.
fn expected_codes(command: &str) -> &'static [i32] {
    if command == "drydock serve status" {
        // "exit 1 if none runs": none runs here.
        &[1]
    } else if command.starts_with("drydock calendar state") {
        // "open" (exit 0) or "closed: why" (exit 1), by today's date.
        &[0, 1]
    } else {
        &[0]
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md, then every `.md` under docs/ (sorted), as paths relative to
/// the workspace root.
fn documents() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let path = e.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|x| x == "md") {
                out.push(path);
            }
        }
    }
    let mut docs = Vec::new();
    walk(&root().join("docs"), &mut docs);
    docs.sort();
    let mut all = vec![PathBuf::from("README.md")];
    all.extend(
        docs.into_iter()
            .map(|p| p.strip_prefix(root()).unwrap().to_path_buf()),
    );
    all
}

fn read(doc: &Path) -> String {
    std::fs::read_to_string(root().join(doc)).unwrap_or_else(|e| panic!("{}: {e}", doc.display()))
}

/// The command lines of a document: its ```sh blocks' lines (continuations
/// joined, comments dropped) and the `$ ` lines of its other code blocks.
fn command_lines(doc: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut fence: Option<String> = None;
    let mut pending: Option<(usize, String)> = None;
    for (i, line) in doc.lines().enumerate() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("```") {
            fence = match fence {
                Some(_) => None,
                None => Some(rest.trim().to_string()),
            };
            continue;
        }
        let Some(lang) = fence.as_deref() else {
            continue;
        };
        let code = if lang == "sh" || pending.is_some() {
            strip_comment(line)
        } else if let Some(shown) = t.strip_prefix("$ ") {
            strip_comment(shown)
        } else {
            continue;
        };
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

/// The command after any leading `NAME=VALUE` environment assignments.
fn without_env(line: &str) -> &str {
    let mut rest = line;
    while let Some((word, tail)) = rest.split_once(' ') {
        let is_assignment = word.split_once('=').is_some_and(|(name, _)| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        });
        if !is_assignment {
            break;
        }
        rest = tail.trim_start();
    }
    rest
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
    let command = without_env(line);
    if command == RUNS_UNTIL_STOPPED {
        return Some("runs until stopped (tests/serve_local_api.rs, tests/schedules.rs)");
    }
    SKIPPED
        .iter()
        .find(|(pattern, _)| {
            if pattern.starts_with("drydock ") {
                command.starts_with(pattern)
            } else {
                line.contains(pattern)
            }
        })
        .map(|(_, why)| *why)
}

/// The first block of `lang` in the README that contains `marker`.
fn readme_block(lang: &str, marker: &str) -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    readme
        .split(&format!("```{lang}\n"))
        .skip(1)
        .map(|b| &b[..b.find("```").unwrap()])
        .find(|b| b.contains(marker))
        .unwrap_or_else(|| panic!("the README shows a {lang} block with {marker}"))
        .to_string()
}

/// The reader's own files the examples name: `my.rhai` and `p.json` as
/// the README shows them.
fn write_readers_files(dir: &Path) {
    std::fs::write(dir.join("my.rhai"), readme_block("rhai", "my-runbook")).unwrap();
    std::fs::write(dir.join("p.json"), readme_block("json", "greeting")).unwrap();
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

#[derive(Default)]
struct Outcome {
    ran: Vec<String>,
    skipped: Vec<String>,
    failed: Vec<String>,
}

/// Runs a document's `drydock` lines, in order, in a fresh data directory.
fn run_examples(name: &str, doc: &str) -> Outcome {
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

    let mut outcome = Outcome::default();
    for (at, line) in command_lines(doc) {
        let command = without_env(&line);
        if !command.starts_with("drydock ") && command != "drydock" {
            continue;
        }
        if let Some(why) = skip_reason(&line) {
            outcome
                .skipped
                .push(format!("{name}:{at}: {line}\n    skipped: {why}"));
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
        let want = expected_codes(without_env(&runnable));
        if want.contains(&code) {
            outcome.ran.push(format!("{name}:{at}: {runnable}"));
        } else {
            outcome.failed.push(format!(
                "{name}:{at}: `{runnable}` exited {code}, the document says {want:?}\n  stdout: {}\n  stderr: {}",
                text(&out.stdout).trim(),
                text(&out.stderr).trim()
            ));
        }
    }
    outcome
}

#[test]
fn every_command_of_the_documentation_that_needs_no_guest_runs_as_written() {
    let mut all = Outcome::default();
    for doc in documents() {
        let name = doc.display().to_string();
        let o = run_examples(&name, &read(&doc));
        all.ran.extend(o.ran);
        all.skipped.extend(o.skipped);
        all.failed.extend(o.failed);
    }
    eprintln!(
        "ran {}:\n  {}\nskipped {}:\n  {}",
        all.ran.len(),
        all.ran.join("\n  "),
        all.skipped.len(),
        all.skipped.join("\n  ")
    );
    assert!(all.failed.is_empty(), "{}", all.failed.join("\n"));
    // The extraction works: the tours, schedules, tokens, calendars and
    // windows were run, not skipped, in the documents that show them.
    for (doc, must) in [
        ("README.md", "drydock runbooks"),
        ("README.md", "drydock validate my.rhai"),
        ("README.md", "drydock run my.rhai --params-file p.json"),
        ("README.md", "drydock host-info"),
        ("README.md", "drydock instances"),
        (
            "docs/guide.md",
            "drydock run my.rhai --params-file p.json --detach",
        ),
        ("docs/guide.md", "drydock param put rescue/root --secure"),
        ("docs/guide.md", "drydock schedules add nightly"),
        ("docs/guide.md", "drydock schedules import schedules.toml"),
        ("docs/guide.md", "drydock tokens create --label laptop"),
        ("docs/guide.md", "drydock calendar import prod freezes.ics"),
        ("docs/guide.md", "drydock windows task patch logs"),
        ("docs/guide.md", "drydock windows show patch"),
        ("docs/guide.md", "drydock fault kinds"),
        ("docs/guide.md", "drydock host recover"),
        ("docs/runbooks.md", "drydock approvals"),
    ] {
        assert!(
            all.ran
                .iter()
                .any(|r| r.starts_with(&format!("{doc}:")) && r.contains(must)),
            "`{must}` of {doc} did not run: ran {:#?}",
            all.ran
        );
    }
}

#[test]
fn a_wrong_example_fails_the_check() {
    let doc = "```sh\ndrydock runbooks                 # fine\ndrydock no-such-command --x\n```\n\n\
               ```text\n$ drydock instances --no-such-flag\nnot run: output\n$ COLUMNS=80 drydock regions\n```\n";
    let o = run_examples("wrong.md", doc);
    assert_eq!(o.failed.len(), 2, "failed: {:#?}", o.failed);
    assert!(o.failed[0].starts_with("wrong.md:3: `drydock no-such-command --x` exited 2"));
    assert!(o.failed[1].starts_with("wrong.md:7: `drydock instances --no-such-flag` exited 2"));
    assert_eq!(
        o.ran,
        [
            "wrong.md:2: drydock runbooks",
            "wrong.md:9: COLUMNS=80 drydock regions"
        ]
    );
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces
/// as hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .flat_map(char::to_lowercase)
        .collect()
}

/// The anchors of a document's headings (outside code blocks), with
/// GitHub's `-1`, `-2` … for repeated ones.
fn anchors(doc: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut seen = std::collections::HashMap::<String, usize>::new();
    let mut in_code = false;
    for line in doc.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if (1..=6).contains(&hashes) && line[hashes..].starts_with(' ') {
            let base = slug(&line[hashes..]);
            let times = seen.entry(base.clone()).or_insert(0);
            out.push(if *times == 0 {
                base
            } else {
                format!("{base}-{times}")
            });
            *times += 1;
        }
    }
    out
}

/// The targets of a document's inline links `[text](target)`, with their
/// line, outside code blocks and code spans.
fn links(doc: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut in_code = false;
    for (i, line) in doc.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        // Code spans removed: `[a](b)` inside backquotes is not a link.
        let prose: String = line
            .split('`')
            .enumerate()
            .filter(|(k, _)| k % 2 == 0)
            .map(|(_, s)| s)
            .collect::<Vec<_>>()
            .join(" ");
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            out.push((i + 1, after[..end].trim().to_string()));
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_of_the_documentation_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for doc in documents() {
        let text = read(&doc);
        let base = doc.parent().unwrap_or(Path::new(""));
        for (at, target) in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (file, fragment) = match target.split_once('#') {
                Some((f, a)) => (f, Some(a)),
                None => (target.as_str(), None),
            };
            let rel = if file.is_empty() {
                doc.clone()
            } else {
                normalize(&base.join(file))
            };
            let place = format!("{}:{at}: ({target})", doc.display());
            let abs = root().join(&rel);
            if !abs.exists() {
                broken.push(format!("{place}: no file {}", rel.display()));
                continue;
            }
            if let Some(fragment) = fragment {
                if rel.extension().is_some_and(|x| x == "md") {
                    let target_text = std::fs::read_to_string(&abs).unwrap();
                    if !anchors(&target_text).iter().any(|a| a == fragment) {
                        broken.push(format!(
                            "{place}: no heading #{fragment} in {}",
                            rel.display()
                        ));
                    }
                }
            }
        }
    }
    assert!(checked > 50, "only {checked} links found");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// `a/b/../c` as `a/c` (without touching the file system).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

#[test]
fn the_link_checker_sees_links_anchors_and_breakage() {
    let doc = "# Top `code` heading\n\n## Don't — stop\n\nSee [a](x.md#y) and `[not](a link)`.\n\n```sh\n[no](inside.md)\n```\n## Top code heading\n";
    assert_eq!(links(doc), [(5, "x.md#y".to_string())]);
    assert_eq!(
        anchors(doc),
        ["top-code-heading", "dont--stop", "top-code-heading-1"]
    );
    assert_eq!(
        normalize(Path::new("docs/design/../guide.md")),
        Path::new("docs/guide.md")
    );
}
