//! `drydock repl` driven in a real terminal (a pty opened by the test):
//! completion of functions and instance ids, multi-line input, Ctrl-C
//! stopping a long entry without leaving, `:console` to a real guest and
//! back, an approval decided from the REPL while a runbook waits in
//! another process, `:save` producing a runbook that validates and runs,
//! and the session found in the journal afterwards.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::serve::iso;
use common::{assert_code, assert_stdout, text, Drydock};

/// A program running on a pty: what it printed (escapes stripped) and a
/// way to type.
struct Term {
    master: File,
    out: Arc<Mutex<Vec<u8>>>,
    child: Child,
    /// How much of the output earlier waits consumed.
    seen: usize,
}

fn strip_ansi(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            match chars.peek() {
                Some('[') => {
                    chars.next();
                    while let Some(&d) = chars.peek() {
                        chars.next();
                        if ('@'..='~').contains(&d) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    for d in chars.by_ref() {
                        if d == '\x07' {
                            break;
                        }
                    }
                }
                _ => {
                    chars.next();
                }
            }
        } else if c != '\r' {
            out.push(c);
        }
    }
    out
}

impl Term {
    fn spawn(mut cmd: Command) -> Term {
        let (mut master, mut slave) = (0, 0);
        let ws = libc::winsize {
            ws_row: 40,
            ws_col: 160,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty writes two descriptors into our ints; the name
        // and termios may be null; the winsize is ours.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &ws,
            )
        };
        assert_eq!(rc, 0, "openpty failed");
        // SAFETY: fcntl on a descriptor we own.
        unsafe { libc::fcntl(master, libc::F_SETFD, libc::FD_CLOEXEC) };
        // SAFETY: `slave` is a fresh descriptor; each Stdio gets a dup.
        let (i, o, e) = unsafe {
            (
                File::from_raw_fd(libc::dup(slave)),
                File::from_raw_fd(libc::dup(slave)),
                File::from_raw_fd(slave),
            )
        };
        cmd.stdin(Stdio::from(i))
            .stdout(Stdio::from(o))
            .stderr(Stdio::from(e))
            .env("TERM", "xterm-256color");
        // SAFETY: between fork and exec only async-signal-safe calls:
        // a new session whose controlling terminal is the pty (stdin).
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        // SAFETY: `master` is ours from openpty.
        let master = unsafe { File::from_raw_fd(master) };
        let out = Arc::new(Mutex::new(Vec::new()));
        let (mut reader, sink) = (master.try_clone().unwrap(), out.clone());
        let mut answer = master.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            // The last bytes of the previous chunk: a query split across
            // two reads is still seen once.
            let mut tail: Vec<u8> = Vec::new();
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let chunk = &buf[..n];
                // crossterm asks where the cursor is: answer every query,
                // like a terminal (two may come in one read).
                let mut seen = tail.clone();
                seen.extend_from_slice(chunk);
                let queries = seen.windows(4).filter(|w| *w == b"\x1b[6n").count();
                for _ in 0..queries {
                    let _ = answer.write_all(b"\x1b[1;1R");
                }
                tail = seen[seen.len().saturating_sub(3)..].to_vec();
                // A query wholly inside the kept tail was answered already.
                if tail.windows(4).any(|w| w == b"\x1b[6n") {
                    tail.clear();
                }
                sink.lock().unwrap().extend_from_slice(chunk);
            }
        });
        Term {
            master,
            out,
            child,
            seen: 0,
        }
    }

    fn screen(&self) -> String {
        strip_ansi(&self.out.lock().unwrap())
    }

    /// Waits for `pattern` in the output after what earlier waits saw.
    fn wait_for(&mut self, pattern: &str, secs: u64) -> String {
        let start = Instant::now();
        loop {
            let all = self.screen();
            let from = self.seen.min(all.len());
            if let Some(i) = all.get(from..).and_then(|s| s.find(pattern)) {
                self.seen = from + i + pattern.len();
                return all[from..from + i + pattern.len()].to_string();
            }
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "no {pattern:?} within {secs}s; output since the last match:\n{}",
                all.get(from..).unwrap_or("")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn send(&mut self, s: &str) {
        self.master.write_all(s.as_bytes()).unwrap();
        self.master.flush().unwrap();
    }

    /// Whether the terminal is in raw mode: the line editor is reading.
    fn raw(&self) -> bool {
        // SAFETY: termios is plain data; tcgetattr writes it for the pty
        // (the master shares the slave's settings).
        let mut tio: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: the descriptor is the open master; `tio` is writable.
        let rc = unsafe { libc::tcgetattr(self.master.as_raw_fd(), &mut tio) };
        rc == 0 && tio.c_lflag & libc::ICANON == 0
    }

    /// Waits until the REPL reads keys again (raw mode, the screen quiet
    /// for a moment), as a person waits for the prompt before typing: keys
    /// typed while it evaluates reach the terminal in cooked mode, where
    /// Ctrl-D is an end-of-file nobody reads and Enter a line feed.
    fn ready(&mut self) {
        let start = Instant::now();
        let quiet = Duration::from_millis(300);
        let mut last = (self.screen().len(), Instant::now());
        loop {
            let len = self.screen().len();
            if len != last.0 {
                last = (len, Instant::now());
            }
            if self.raw() && last.1.elapsed() >= quiet {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the REPL never came back to its prompt:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Types a line and Enter, slowly enough for the editor to read the
    /// keys one by one.
    fn line(&mut self, s: &str) {
        self.send(s);
        std::thread::sleep(Duration::from_millis(50));
        self.send("\r");
    }

    /// Closes a completion menu (Esc) and empties the line (Ctrl-A Ctrl-K).
    fn clear_line(&mut self) {
        std::thread::sleep(Duration::from_millis(100));
        self.send("\x1b");
        std::thread::sleep(Duration::from_millis(150));
        self.send("\x01\x0b");
        std::thread::sleep(Duration::from_millis(100));
    }

    fn exited(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(secs) {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.master.as_raw_fd();
    }
}

const PROMPT: &str = "@region-a";

#[test]
fn completion_multiline_ctrl_c_save_and_the_journal() {
    let dd = Drydock::new();
    let started = Instant::now();
    let mut t = Term::spawn(dd.command(&["repl"]));
    let banner = t.wait_for("Ctrl-D leaves", 30);
    eprintln!("REPL start to banner: {:?} ({banner})", started.elapsed());
    t.wait_for(" > ", 10);

    // A function name: Tab completes it in the buffer.
    t.send("instance::desc");
    std::thread::sleep(Duration::from_millis(100));
    t.send("\t");
    t.wait_for("instance::describe", 10);
    // Clear the line (Ctrl-U / Ctrl-A Ctrl-K) and go on.
    t.clear_line();

    // Multi-line input: an open block continues on the next line.
    t.line("fn twice(a) {");
    t.wait_for("… ", 10);
    t.line("  a * 2");
    t.line("}");
    std::thread::sleep(Duration::from_millis(100));
    t.ready();
    t.line("twice(21)");
    t.wait_for("42", 10);

    // Keystroke to echo, measured on the real terminal.
    let mut worst = Duration::ZERO;
    for c in "let zz = 1".chars() {
        let before = t.screen().matches(c).count();
        let at = Instant::now();
        t.send(&c.to_string());
        while t.screen().matches(c).count() <= before {
            assert!(at.elapsed() < Duration::from_secs(5), "no echo of {c:?}");
            std::thread::sleep(Duration::from_micros(200));
        }
        worst = worst.max(at.elapsed());
    }
    eprintln!("keystroke to redraw on the pty (no host): worst {worst:?}");
    t.send("\r");
    std::thread::sleep(Duration::from_millis(100));
    t.ready();

    // Ctrl-C stops a long sleep and a long shell command; the REPL stays.
    for entry in ["sleep(600)", "shell(\"sleep 600\")"] {
        t.line(entry);
        std::thread::sleep(Duration::from_millis(700));
        let at = Instant::now();
        t.send("\x03");
        t.wait_for("interrupted (Ctrl-C)", 10);
        assert!(at.elapsed() < Duration::from_secs(5));
        assert!(t.alive(), "the REPL left on Ctrl-C");
        t.ready();
    }
    // Ctrl-C on an idle prompt does not leave either.
    t.send("\x03");
    t.send("\x03");
    std::thread::sleep(Duration::from_millis(300));
    assert!(t.alive());
    t.ready();
    t.line("40 + 2");
    t.wait_for("42", 10);
    t.ready();

    // A statement that changes something, then :save.
    let marker = dd.work().join("fixed.txt");
    t.line(&format!(
        "write_file(\"{}\", \"fixed by hand\\n\")",
        marker.display()
    ));
    std::thread::sleep(Duration::from_millis(100));
    t.ready();
    t.line(
        "let seen = read_file(`MARKER`);"
            .replace("MARKER", &marker.display().to_string())
            .as_str(),
    );
    std::thread::sleep(Duration::from_millis(100));
    t.ready();
    let saved = dd.work().join("fix-it.rhai");
    t.line(&format!(":save {}", saved.display()));
    t.wait_for("wrote", 10);
    t.ready();
    t.line(":history");
    t.wait_for("twice(21)", 10);
    t.ready();
    t.send("\x04");
    let status = t.exited(10).expect("Ctrl-D leaves");
    assert!(status.success(), "{status:?}");

    let runbook = std::fs::read_to_string(&saved).unwrap();
    assert!(runbook.contains("step(\"write_file("), "{runbook}");
    let out = dd.run(&["validate", saved.to_str().unwrap()]);
    assert_code(&out, 0);
    std::fs::remove_file(&marker).unwrap();
    let out = dd.run(&["run", saved.to_str().unwrap()]);
    assert_code(&out, 0);
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "fixed by hand\n");

    // The session is in the journal, with every entry.
    let list = text(&dd.run(&["executions"]).stdout);
    let id = list
        .split_whitespace()
        .find(|w| w.starts_with("repl-"))
        .unwrap_or_else(|| panic!("no REPL session listed:\n{list}"))
        .to_string();
    let shown = dd.json(&["executions", "show", &id]);
    let entries = shown["entries"].as_array().unwrap();
    let inputs: Vec<&str> = entries
        .iter()
        .map(|e| e["input"].as_str().unwrap())
        .collect();
    assert!(inputs.contains(&"twice(21)"), "{inputs:?}");
    assert!(inputs.contains(&"sleep(600)"), "{inputs:?}");
    let sleep = entries.iter().find(|e| e["input"] == "sleep(600)").unwrap();
    assert_eq!(sleep["ok"], false);
    assert!(shown["session"]["ended_at"].is_i64());
    assert_eq!(
        shown["session"]["started_by"],
        drydock_runtime::identity::Identity::current().name
    );
}

#[test]
fn without_a_terminal_from_stdin_and_dash_c() {
    let dd = Drydock::new();
    let out = dd.run(&[
        "repl",
        "-c",
        "let x = 20; x * 2 + 2",
        "-c",
        ":functions volume",
    ]);
    assert_code(&out, 0);
    let o = text(&out.stdout);
    assert!(o.starts_with("42\n"), "{o}");
    assert!(o.contains("volume::attach(volume, instance)"), "{o}");
    let out = dd.run(&["repl", "-c", "file_exist(\"/\")"]);
    assert_code(&out, 1);
    let e = text(&out.stderr);
    assert!(e.contains("did you mean `file_exists`"), "{e}");
    let mut child = dd
        .command(&["repl"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"let m = #{ a: 1,\n  b: [1, 2] };\nm\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_stdout(&out, 0, &["\"b\": ["]);
}

const GATED: &str = r#"
runbook(#{ name: "gated", params: #{} });
step("before", || 1);
// The message carries a terminal escape (an OSC that retitles the
// window): the REPL shows it escaped, never obeys it.
let d = approve(#{ message: "Restart the web tier?\x1b]0;pwned\x07", approvers: ["ddalice"] });
step("after", || 2);
d.decision
"#;

#[test]
fn an_approval_decided_from_the_repl_while_a_runbook_waits() {
    let alice = common::os_users::os_user("ddalice", &["ddops"]);
    let dd = Drydock::shared_by("ddops");
    dd.write_runbook("gated.rhai", GATED);
    let runner = dd.spawn(&["run", "gated"]);
    let id = dd.only_execution();
    dd.wait_for_approval(&id);

    let mut t = Term::spawn(dd.command_as(&alice, &["repl"]));
    t.wait_for("Ctrl-D leaves", 30);
    t.line(":approvals");
    t.wait_for("may decide", 10);
    t.line(&format!(":show {id}"));
    t.wait_for("approval pending", 10);
    let raw = t.out.lock().unwrap().clone();
    assert!(
        !raw.windows(9).any(|w| w == b"\x1b]0;pwned"),
        "the runbook's escape reached the terminal"
    );
    assert!(t.screen().contains("\\x1b]0;pwned"), "{}", t.screen());
    // The next prompt counts what waits for this account.
    t.wait_for("(1 approval waits for you)", 15);
    t.line(&format!(":approve {id} looks fine"));
    t.wait_for("approved by ddalice", 10);
    let out = common::wait_child(runner);
    assert_code(&out, 0);
    assert_eq!(dd.state(&id), "Success");
    let shown = dd.show(&id);
    let d = &shown["approvals"][0]["decisions"][0];
    assert_eq!(d["approver"], "ddalice");
    assert_eq!(d["comment"], "looks fine");
    t.ready();
    t.send("\x04");
    assert!(t.exited(10).is_some());
}

/// The prompt names the change calendars closed now; `:calendars` says
/// why; `:serve` asks the running `drydock serve` over its socket.
#[test]
fn the_prompt_shows_a_closed_calendar_and_serve_answers_over_its_socket() {
    let dd = Drydock::new();
    assert_code(
        &dd.run(&["calendar", "add", "prod", "--default", "open"]),
        0,
    );
    assert_code(
        &dd.run(&["calendar", "add", "staging", "--default", "open"]),
        0,
    );
    let (start, end) = (iso(-3600), iso(3600));
    assert_code(
        &dd.run(&[
            "calendar",
            "event",
            "prod",
            "--start",
            &start,
            "--end",
            &end,
            "--summary",
            "Year-end freeze",
        ]),
        0,
    );
    let out = dd.run(&["repl", "-c", ":calendars", "-c", ":serve"]);
    assert_code(&out, 0);
    let o = text(&out.stdout);
    let prod = o.lines().find(|l| l.contains("prod")).unwrap_or_default();
    assert!(
        prod.contains("closed") && prod.contains("Year-end freeze"),
        "{o}"
    );
    let staging = o
        .lines()
        .find(|l| l.contains("staging"))
        .unwrap_or_default();
    assert!(staging.contains("open"), "{o}");
    assert!(o.contains("no `drydock serve` runs"), "{o}");

    let mut serve = dd.serve("off");
    dd.wait_until("serve to answer", || {
        dd.run(&["serve", "status"]).status.code() == Some(0)
    });
    let mut t = Term::spawn(dd.command(&["repl"]));
    t.wait_for("Ctrl-D leaves", 30);
    t.line(":serve");
    t.wait_for(&format!("drydock serve, pid {}", serve.id()), 10);
    t.wait_for("you are      root", 10);
    // The next prompt (from the background cache) names the closed
    // calendar.
    t.wait_for("{change calendar prod closed}", 15);
    t.ready();
    t.send("\x04");
    assert!(t.exited(10).is_some());
    serve.kill().unwrap();
    let _ = serve.wait();
}

/// One real guest: an instance id completes with its state, `:use`
/// focuses it, `:console` attaches inside the REPL and Ctrl-] q returns
/// to the prompt, and a long `expect` on the console stops on Ctrl-C.
#[test]
fn console_to_a_real_guest_and_back() {
    let _vm = common::vm_lock();
    let dd = Drydock::new();
    let image = dd.image("region-a");
    let id = dd.launch("region-a", &image, &["--root-password", "pw"]);
    dd.wait_console("region-a", &id, "login:");

    let mut t = Term::spawn(dd.command(&["repl"]));
    t.wait_for("Ctrl-D leaves", 30);
    std::thread::sleep(Duration::from_millis(500));
    // The instance id completes inside a string, with its state.
    t.send("instance::describe(\"i-");
    std::thread::sleep(Duration::from_millis(100));
    t.send("\t");
    t.wait_for(&id, 10);
    t.clear_line();
    t.line(&format!(":use {}", &id));
    t.wait_for(&format!("[{id}]"), 10);
    t.line("instance::describe().state");
    t.wait_for("running", 10);

    t.line(":console");
    t.wait_for("Ctrl-] then q returns", 10);
    std::thread::sleep(Duration::from_millis(300));
    t.send("\r");
    t.wait_for("login:", 20);
    t.send("\x1dq");
    t.wait_for("[back from the console of", 10);
    t.wait_for(PROMPT, 10);
    assert!(t.alive());

    // A long expect on the console, stopped by Ctrl-C.
    t.line("let c = console::open();");
    t.line("c.expect(\"never printed\", \"10m\")");
    std::thread::sleep(Duration::from_millis(1500));
    t.send("\x03");
    t.wait_for("interrupted (Ctrl-C)", 10);
    // The handle still works after the interruption.
    t.line("c.send_line(\"\"); c.expect(\"login:\", \"30s\").matched");
    t.wait_for("login:", 30);
    t.ready();
    t.send("\x04");
    assert!(t.exited(10).is_some());
    let out = dd.run(&["--region", "region-a", "instance", "terminate", &id]);
    assert_code(&out, 0);
}

/// The README's "Rhai with every primitive above": `calendar::state` and
/// `calendar::reason` work in the REPL and `:help` lists the module;
/// `run_runbook`, `approve` and `cleanup` answer with why they exist only
/// in runbooks and what to use instead, not "Function not found".
#[test]
fn calendar_functions_work_and_runbook_only_functions_say_why() {
    let dd = Drydock::new();
    assert_code(
        &dd.run(&["calendar", "add", "prod", "--default", "open"]),
        0,
    );
    let (start, end) = (iso(-3600), iso(3600));
    assert_code(
        &dd.run(&[
            "calendar",
            "event",
            "prod",
            "--start",
            &start,
            "--end",
            &end,
            "--summary",
            "Freeze",
        ]),
        0,
    );
    let out = dd.run(&[
        "repl",
        "-c",
        "calendar::state(\"prod\") + \"/\" + calendar::reason(\"prod\")",
        "-c",
        ":help",
        "-c",
        ":help calendar",
    ]);
    assert_code(&out, 0);
    let o = text(&out.stdout);
    assert!(o.starts_with("closed/") && o.contains("Freeze"), "{o}");
    let modules = o.lines().find(|l| l.starts_with("modules:")).unwrap_or("");
    assert!(modules.contains("calendar"), "{o}");
    assert!(o.contains("calendar::state(name)"), "{o}");
    for (entry, says) in [
        (
            "run_runbook(\"clean-old-files\")",
            "run_runbook exists only in runbooks",
        ),
        ("run_runbook(\"clean-old-files\", #{})", ":run NAME"),
        (
            "approve(#{ message: \"ok?\" })",
            "approve exists only in runbooks",
        ),
        ("approve()", "`drydock approve`"),
        ("cleanup(\"c\", || 1)", "cleanup exists only in runbooks"),
    ] {
        let out = dd.run(&["repl", "-c", entry]);
        assert_code(&out, 1);
        let e = text(&out.stderr);
        assert!(e.contains(says), "{entry}: {e}");
        assert!(!e.contains("not found"), "{entry}: {e}");
    }
}
