//! The bundled `clean-old-files` runbook against file names chosen by an
//! attacker who can create files in the cleaned directory: quotes, `$(…)`,
//! backquotes, newlines (one followed by the name of a file the runner can
//! reach), leading dashes, spaces, control characters, names that are not
//! UTF-8. The right files and only they are deleted, and nothing in a name
//! is ever executed. Runs the real `drydock run clean-old-files`.

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use common::{assert_code, text, wait_child, Drydock};

fn make_old(path: &Path) {
    std::fs::write(path, b"data\n").unwrap();
    let ten_days_ago = SystemTime::now() - Duration::from_secs(10 * 86400);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(ten_days_ago)
        .unwrap();
}

fn name(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

/// Runs clean-old-files with `cwd` as the runner's working directory; a
/// second local account approves (nobody approves their own request).
fn run_clean(dd: &Drydock, cwd: &Path, params: &[String]) -> (std::process::Output, String) {
    let alice = common::os_users::os_user("ddalice", &["ddops"]);
    let mut args = vec!["run", "clean-old-files"];
    for p in params {
        args.extend(["-p", p.as_str()]);
    }
    let child = dd
        .command(&args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let id = dd.only_execution();
    dd.wait_for_approval(&id);
    assert_code(&dd.run_as(&alice, &["approve", &id]), 0);
    (wait_child(child), id)
}

fn hostile_dd() -> Drydock {
    Drydock::shared_by("ddops")
}

/// Files that must not appear anywhere the runner or the shell could have
/// created them if a name had been executed.
fn assert_nothing_ran(dirs: &[&Path]) {
    for d in dirs {
        for marker in ["PWNED", "X", "Y", "Z"] {
            assert!(
                !d.join(marker).exists(),
                "{} exists: a file name was executed",
                d.join(marker).display()
            );
        }
    }
}

#[test]
fn hostile_names_are_deleted_exactly_and_nothing_in_them_runs() {
    let dd = hostile_dd();
    let dir = dd.work().join("logs");
    let cwd = dd.work().join("cwd");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&cwd).unwrap();
    // Targets of the newline trick: the old runbook read one "SIZE PATH" per
    // line, so a name "x\n0 important" also put `important` (relative to the
    // runner's directory, here the cleaned one) on the delete list, though
    // it is fresh.
    std::fs::write(dir.join("important"), "keep me\n").unwrap();
    std::fs::write(dir.join("fresh.log"), "new\n").unwrap();
    let hostile: Vec<&[u8]> = vec![
        b"a';touch PWNED;echo '",
        b"$(touch X)",
        b"`touch Y`",
        b"-rf",
        b"--",
        b"-",
        b"sp ace",
        b" leading",
        b"trailing ",
        b"x\n0 important",
        b"y\n0 fresh.log",
        b"multi\n\nline\n",
        b"tab\there",
        b"dq\"\\back",
        b"*",
        b"~",
        b"semi;touch Z",
        b"\x1b[31mred\x1b[0m",
        "é-ü-\u{1F600}.log".as_bytes(),
        b"plain.log",
    ];
    for n in &hostile {
        make_old(&dir.join(name(n)));
    }
    // Not UTF-8, and a real file that is its lossy twin: both are left
    // alone (and reported), never one deleted for the other.
    let not_utf8 = dir.join(name(b"bad\xffname"));
    let twin = dir.join(name("bad\u{FFFD}name".as_bytes()));
    make_old(&not_utf8);
    make_old(&twin);

    let dir_s = dir.to_str().unwrap();
    let (out, id) = run_clean(&dd, &dir, &[format!("dir={dir_s}")]);
    assert_code(&out, 0);
    let show = dd.show(&id);
    let output = &show["execution"]["output"];
    assert_eq!(output["deleted"], hostile.len(), "{show}");
    assert_eq!(output["skipped"], 2, "{show}");

    for n in &hostile {
        let p = dir.join(name(n));
        assert!(!p.exists(), "{p:?} was not deleted");
    }
    assert!(not_utf8.exists(), "a name that is not UTF-8 was deleted");
    assert!(
        twin.exists(),
        "the lossy twin of a non-UTF-8 name was deleted"
    );
    assert!(dir.join("fresh.log").exists(), "a fresh file was deleted");
    assert!(dir.join("important").exists(), "a fresh file was deleted");
    let mut left: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    left.sort();
    let mut expected = vec![
        dir.join(".drydock-clean-report"),
        dir.join("fresh.log"),
        dir.join("important"),
        not_utf8.clone(),
        twin.clone(),
    ];
    expected.sort();
    assert_eq!(left, expected);
    assert_nothing_ran(&[&dir, &cwd, &dd.work(), dd.dir.path()]);

    // What the approver saw: one line per file, names escaped.
    let progress = text(&out.stderr);
    let shown = text(&dd.run(&["executions", "show", &id]).stdout);
    assert!(
        shown.contains(r#"x\n0 important""#),
        "the newline in a name is shown escaped: {shown}\n{progress}"
    );
    assert!(
        !shown.contains('\x1b'),
        "an escape sequence in a name reached the terminal: {shown}"
    );
    assert!(
        shown.contains("skipped (name is not valid UTF-8)"),
        "{shown}"
    );
}

#[test]
fn the_newline_trick_deletes_only_the_named_file_from_the_runners_directory() {
    // The runner works in a directory holding a file the attacker names
    // after a newline; only the attacker's own file goes.
    let dd = hostile_dd();
    let dir = dd.work().join("uploads");
    std::fs::create_dir_all(&dir).unwrap();
    let cwd = dd.work().join("home");
    std::fs::create_dir_all(&cwd).unwrap();
    std::fs::write(cwd.join("precious"), "keep\n").unwrap();
    let bait = dir.join("report\n0 precious");
    make_old(&bait);
    let (out, _) = run_clean(&dd, &cwd, &[format!("dir={}", dir.display())]);
    assert_code(&out, 0);
    assert!(!bait.exists());
    assert!(
        cwd.join("precious").exists(),
        "a file outside the directory was deleted"
    );
}

#[test]
fn a_relative_directory_named_like_an_option_and_a_pattern_are_taken_literally() {
    let dd = hostile_dd();
    let cwd = dd.work();
    // Relative, starting with a dash: find must not read it as an option.
    let dir = cwd.join("-delete");
    std::fs::create_dir_all(&dir).unwrap();
    for n in ["a.tmp", "b.log", "-rf.tmp", "\u{FFFD}.tmp", "c d.tmp"] {
        make_old(&dir.join(n));
    }
    std::fs::write(dir.join("fresh.tmp"), "new\n").unwrap();
    let (out, id) = run_clean(
        &dd,
        &cwd,
        &["dir=-delete".to_string(), "pattern=*.tmp".to_string()],
    );
    assert_code(&out, 0);
    // With every name valid UTF-8, a name holding U+FFFD is an ordinary name.
    for gone in ["a.tmp", "-rf.tmp", "\u{FFFD}.tmp", "c d.tmp"] {
        assert!(!dir.join(gone).exists(), "{gone} was not deleted");
    }
    for kept in ["b.log", "fresh.tmp"] {
        assert!(dir.join(kept).exists(), "{kept} was deleted");
    }
    assert_eq!(dd.show(&id)["execution"]["output"]["deleted"], 4);
    assert_nothing_ran(&[&dir, &cwd]);
}
