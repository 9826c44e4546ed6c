//! Physical serial ports: a pty pair stands in for the cable, a small fake
//! device answers on the other end, and a runbook logs in through
//! `serial::open`.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;

use common::{assert_code, Drydock};

/// Opens a pty pair: (master, slave path).
fn pty() -> (File, String) {
    let (mut master, mut slave) = (0, 0);
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: openpty writes two descriptors and a NUL-terminated name into
    // buffers we own; termios and winsize may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            name.as_mut_ptr(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty failed");
    // SAFETY: `name` was NUL-terminated by openpty.
    let path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    // Keep both ends out of the processes the test starts.
    // SAFETY: fcntl on descriptors we own.
    unsafe {
        libc::fcntl(master, libc::F_SETFD, libc::FD_CLOEXEC);
        libc::fcntl(slave, libc::F_SETFD, libc::FD_CLOEXEC);
    }
    // A serial line does not echo: make the tty raw before the device talks.
    // SAFETY: termios calls on the slave descriptor we own, with a struct
    // that tcgetattr fills before cfmakeraw edits it.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        libc::tcgetattr(slave, &mut t);
        libc::cfmakeraw(&mut t);
        libc::tcsetattr(slave, libc::TCSANOW, &t);
    }
    // SAFETY: `master` is a fresh descriptor we now own.
    let master = unsafe { File::from_raw_fd(master) };
    // Our slave descriptor stays open for the test's life: with no slave
    // open, reads on the master fail with EIO before the runbook opens it.
    let _ = slave;
    (master, path)
}

/// A device with a login prompt: user admin, password pw, prompt `router> `.
fn fake_device(mut master: File, password: &'static str) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        master
            .write_all(b"\r\nBooting RouterOS\r\n\x1b[1mfake-router\x1b[0m login: ")
            .unwrap();
        let mut line = Vec::new();
        let mut buf = [0u8; 256];
        let mut stage = 0;
        let started = std::time::Instant::now();
        loop {
            // EIO means no one has the line open right now (the runbook is
            // still opening it): a device on a cable just waits.
            let n = match master.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e)
                    if e.raw_os_error() == Some(libc::EIO)
                        && started.elapsed() < std::time::Duration::from_secs(20) =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                }
                Err(_) => break,
            };
            for &b in &buf[..n] {
                if b != b'\r' && b != b'\n' {
                    line.push(b);
                    continue;
                }
                let got = String::from_utf8_lossy(&line).into_owned();
                line.clear();
                seen.push(got.clone());
                let reply: &[u8] = match (stage, got.as_str()) {
                    (0, "admin") => b"\r\nPassword: ",
                    (1, p) if p == password => b"\r\nWelcome\r\nrouter> ",
                    (2, "show version") => b"\r\nversion 7.1\r\nrouter> ",
                    _ => b"\r\nLogin incorrect\r\nlogin: ",
                };
                stage += 1;
                if master.write_all(reply).is_err() {
                    return seen;
                }
                if stage == 3 {
                    // Stay on the line: closing the master hangs the tty up
                    // and drops what the runbook has not read yet.
                    std::thread::sleep(std::time::Duration::from_secs(2));
                    return seen;
                }
            }
        }
        seen
    })
}

#[test]
fn a_runbook_logs_in_over_a_serial_port() {
    let dd = Drydock::new();
    let (master, path) = pty();
    let device = fake_device(master, "pw");
    dd.write_runbook(
        "serial-check.rhai",
        r#"
runbook(#{ name: "serial-check", params: #{ port: #{ type: "string" } } });
let s = serial::open(params.port, 115200);
s.expect(["login: "], "10s");
s.send_line("admin");
s.expect(["Password: "], "10s");
s.send_line("pw");
let m = s.expect([re("(\\w+)> ")], "10s");
s.send_line("show version");
let v = s.expect([re("version ([0-9.]+)")], "10s");
#{ prompt: m.captures[0], version: v.captures[0] }
"#,
    );
    let out = dd.run(&[
        "--json",
        "run",
        "serial-check",
        "-p",
        &format!("port={path}"),
    ]);
    assert_code(&out, 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["output"]["prompt"], "router");
    assert_eq!(v["output"]["version"], "7.1");
    assert_eq!(device.join().unwrap(), ["admin", "pw", "show version"]);
}

#[test]
fn a_missing_serial_port_is_a_clear_error() {
    let dd = Drydock::new();
    dd.write_runbook(
        "serial-missing.rhai",
        "runbook(#{ name: \"serial-missing\" });\nserial::open(\"/dev/ttyNOPE9\", 9600);\n",
    );
    let out = dd.run(&["run", "serial-missing"]);
    assert_code(&out, 1);
    assert!(
        common::text(&out.stderr).contains("cannot open serial port /dev/ttyNOPE9 at 9600 baud")
    );
}

#[test]
fn timeout_and_eof_are_outcomes_a_runbook_can_branch_on() {
    let dd = Drydock::new();
    let (mut master, path) = pty();
    master.write_all(b"still booting\r\n").unwrap();
    dd.write_runbook(
        "serial-outcomes.rhai",
        r#"
runbook(#{ name: "serial-outcomes", params: #{ port: #{ type: "string" } } });
let s = serial::open(params.port, 9600);
let t = s.expect(["login: ", console::TIMEOUT], "300ms");
print("timed out, saw: " + t.before);
let e = s.expect(["login: ", console::EOF], "10s");
[t.index, e.index]
"#,
    );
    let closer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(1500));
        drop(master);
    });
    let out = dd.run(&[
        "--json",
        "run",
        "serial-outcomes",
        "-p",
        &format!("port={path}"),
    ]);
    closer.join().unwrap();
    assert_code(&out, 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["output"], serde_json::json!([1, 1]));
    let show = dd.show(v["execution_id"].as_str().unwrap());
    assert!(show["events"][0]["message"]
        .as_str()
        .unwrap()
        .contains("still booting"));
}

#[test]
fn a_secret_sent_over_the_line_is_masked_in_the_transcript_and_journal() {
    const PASSWORD: &str = "Tr0ub4dor&3-serial";
    let dd = Drydock::new();
    let mut put = dd
        .command(&["param", "put", "router/admin", "--secure"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    put.stdin
        .take()
        .unwrap()
        .write_all(PASSWORD.as_bytes())
        .unwrap();
    assert!(put.wait().unwrap().success());
    let (master, path) = pty();
    let device = fake_device(master, PASSWORD);
    dd.write_runbook(
        "serial-secret.rhai",
        r#"
runbook(#{ name: "serial-secret", params: #{
    port: #{ type: "string" },
    password: #{ type: "secret", default_value: "param:router/admin" },
} });
let s = serial::open(params.port, 115200);
s.expect(["login: "], "10s");
s.send_line("admin");
s.expect(["Password: "], "10s");
s.send_line(params.password);
s.expect([re("(\\w+)> ")], "10s");
print(`logged in with ${params.password}`);
s.send_line("show version");
s.expect([re("version ([0-9.]+)")], "10s").captures[0]
"#,
    );
    let out = dd.run(&[
        "--json",
        "run",
        "serial-secret",
        "-p",
        &format!("port={path}"),
    ]);
    assert_code(&out, 0);
    assert_eq!(device.join().unwrap(), ["admin", PASSWORD, "show version"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = v["execution_id"].as_str().unwrap();
    let transcript = std::fs::read_to_string(dd.data_dir().join("transcripts").join(format!(
        "{id}-serial-{}.log",
        path.trim_start_matches("/dev/").replace('/', "-")
    )))
    .or_else(|_| {
        // The transcript's name follows the port; find it.
        let dir = dd.data_dir().join("transcripts");
        let entry = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap();
        std::fs::read_to_string(entry.path())
    })
    .unwrap();
    assert!(!transcript.contains(PASSWORD), "{transcript}");
    assert!(transcript.contains("****"), "{transcript}");
    let show = common::text(&dd.run(&["executions", "show", id]).stdout);
    assert!(
        !show.contains(PASSWORD) && show.contains("logged in with ****"),
        "{show}"
    );
    assert!(show.contains("**** (param:router/admin v1)"), "{show}");
}
