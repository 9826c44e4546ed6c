//! The serial console with real guests: a runbook waits for boot, logs in,
//! runs commands with exit codes, survives a reboot, answers the fstab
//! prompt; two readers see the same bytes; a second writer is refused.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::scenario::Scenario;
use common::{assert_code, text, vm_lock, Drydock};
use drydock_host::console_client::{connect, ConsoleStart};

const R: &str = "region-a";

#[test]
fn a_runbook_logs_in_on_the_console_runs_commands_and_survives_a_reboot() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    let img = dd.image(R);
    // The root password comes from the parameter store, not the command line.
    let mut put = dd
        .command(&["param", "put", "console/root", "--secure"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut put.stdin.take().unwrap(), b"s3cret\n").unwrap();
    assert!(put.wait().unwrap().success());
    let id = dd.launch(R, &img, &["--root-password", "param:console/root"]);
    dd.write_runbook(
        "console-check.rhai",
        r#"
runbook(#{ name: "console-check", params: #{ instance: #{ type: "instance" } } });
let c = console::open(params.instance);
c.wait_for_boot("120s");
c.login("root", "s3cret");
let kernel = c.run("uname -r");
let missing = c.run("ls /nonexistent");
let written = c.run("echo hello > /root/f && cat /root/f");
let hash = c.run("echo a # not a comment of the sentinel");
let quote = c.run("echo 'unbalanced");
let backslash = c.run("echo trailing \\");
// A second handle of the same execution is not refused as held by itself.
let c2 = console::open(params.instance);
let second = c2.run("echo from the second handle");
c = c2;
c.send_line("reboot");
c.wait_for_boot("120s");
c.login("root", "s3cret");
let after = c.run("cat /root/f");
#{ kernel: kernel, missing: missing.exit_code, written: written, after: after,
   hash: hash, quote: quote, backslash: backslash, second: second }
"#,
    );
    let out = dd.run(&[
        "--json",
        "run",
        "console-check",
        "-p",
        &format!("instance={id}"),
    ]);
    assert_code(&out, 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let o = &v["output"];
    assert_eq!(o["kernel"]["exit_code"], 0);
    assert!(
        o["kernel"]["stdout"]
            .as_str()
            .unwrap()
            .contains("cloud-amd64"),
        "{o}"
    );
    assert_ne!(o["missing"], 0);
    assert_eq!(o["written"]["stdout"], "hello\n");
    assert_eq!(o["hash"]["stdout"], "a\n", "{o}");
    assert_eq!(o["hash"]["exit_code"], 0);
    assert_eq!(o["quote"]["exit_code"], 2, "{o}");
    assert!(o["quote"]["stdout"]
        .as_str()
        .unwrap()
        .contains("cannot parse"));
    assert_eq!(o["backslash"]["exit_code"], 2, "{o}");
    assert_eq!(o["second"]["stdout"], "from the second handle\n", "{o}");
    assert_eq!(
        o["after"]["stdout"], "hello\n",
        "the file survived the reboot"
    );
    assert_eq!(dd.instance(R, &id)["boots"], 2);
    let transcript = dd
        .data_dir()
        .join("transcripts")
        .join(format!("{}-{id}.log", v["execution_id"].as_str().unwrap()));
    let t = std::fs::read_to_string(transcript).unwrap();
    assert!(
        t.contains("--- sent") && t.contains("login:"),
        "the transcript keeps what was read and sent"
    );

    // The runbook logged out when it ended: the next person on the
    // console finds a login prompt, not a root shell.
    let repl = |script: &str| {
        let out = dd
            .command(&["--region", R, "repl", "-c", script])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert_code(&out, 0);
        text(&out.stdout)
    };
    let at = repl(&format!(
        "let c = console::open(\"{id}\"); c.drain(); c.send(\"\\r\"); c.expect([\"login: \", re(\"[#$] $\")], \"60s\").index"
    ));
    assert_eq!(at.trim(), "0", "the console was left at: {at}");
    // A password prompt someone else caused (a user name typed, then
    // left): a login does not answer it with the password.
    repl(&format!(
        "let c = console::open(\"{id}\"); c.drain(); c.send(\"\\r\"); c.expect([\"login: \"], \"60s\"); c.send(\"root\\r\"); c.expect([\"Password: \"], \"60s\").index"
    ));
    dd.write_runbook(
        "again.rhai",
        r#"
runbook(#{ name: "again", params: #{ instance: #{ type: "instance" } } });
let c = console::open(params.instance);
c.login("root", "s3cret");
c.run("echo logged-in-again").stdout
"#,
    );
    let out = dd.run(&["--json", "run", "again", "-p", &format!("instance={id}")]);
    assert_code(&out, 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["output"], "logged-in-again\n", "{v}");
    // No password in any console log.
    let logs = dd.data_dir().join("instances").join(&id).join("console");
    for e in std::fs::read_dir(&logs).unwrap() {
        let p = e.unwrap().path();
        let bytes = std::fs::read(&p).unwrap();
        if let Some(at) = bytes.windows(6).position(|w| w == b"s3cret") {
            let from = at.saturating_sub(300);
            panic!(
                "the password is in {}: …{}…",
                p.display(),
                String::from_utf8_lossy(&bytes[from..(at + 100).min(bytes.len())]).escape_debug()
            );
        }
    }
}

#[test]
fn the_fstab_prompt_is_answered_with_s_and_the_boot_finishes() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    let img = dd.image(R);
    let script = dd.work().join("user-data.sh");
    std::fs::write(
        &script,
        "echo '/dev/vdz /data ext4 defaults 0 2' >> /etc/fstab\n",
    )
    .unwrap();
    let id = dd.launch(R, &img, &["--user-data", script.to_str().unwrap()]);
    dd.write_runbook(
        "answer.rhai",
        r#"
runbook(#{ name: "answer", params: #{ instance: #{ type: "instance" } } });
let c = console::open(params.instance);
let m = c.expect(["Press S to skip mounting or M for manual recovery", "login: "], "120s");
if m.index == 0 { c.send_key("S"); }
c.wait_for_boot("60s");
m.index
"#,
    );
    let out = dd.run(&["--json", "run", "answer", "-p", &format!("instance={id}")]);
    assert_code(&out, 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["output"], 0, "the prompt was there and answered");
    let console = dd.console(R, &id, None);
    assert!(console.contains("skipping /data"), "{console}");
    assert!(console.contains("login:"), "{console}");
}

#[test]
fn readers_see_the_same_bytes_and_a_second_writer_is_refused() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    let id = Scenario::instance_with(&dd, &["--root-password", "pw"]);
    let dir = dd.data_dir().join("instances").join(&id);
    let read = |who: &str| connect(&dir, &id, false, who, false, ConsoleStart::Now).unwrap();
    let mut r1 = read("reader one");
    let mut r2 = read("reader two");
    let mut w = connect(&dir, &id, true, "writer one", false, ConsoleStart::Now).unwrap();

    let refused = connect(&dir, &id, true, "writer two", false, ConsoleStart::Now)
        .err()
        .unwrap()
        .to_string();
    assert!(refused.contains("held by writer one"), "{refused}");
    let out = dd.run(&["--region", R, "console", &id]);
    assert_code(&out, 2);
    assert!(
        text(&out.stderr).contains("held by writer one") && text(&out.stderr).contains("--force")
    );

    std::io::Write::write_all(&mut w.stream, b"root\r").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let collect = |s: &mut std::os::unix::net::UnixStream, until: &str| -> Vec<u8> {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline && !String::from_utf8_lossy(&got).contains(until) {
            if let Ok(n) = s.read(&mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
        }
        got
    };
    let a = collect(&mut r1.stream, "Password: ");
    let b = collect(&mut r2.stream, "Password: ");
    assert!(!a.is_empty());
    assert_eq!(a, b, "both readers saw the same bytes");

    // --force takes the console over; the old writer is told and cut off.
    let taker = connect(&dir, &id, true, "operator two", true, ConsoleStart::Now).unwrap();
    let told = collect(&mut w.stream, "taken over");
    assert!(String::from_utf8_lossy(&told).contains("console taken over by operator two"));
    drop(taker);
}

/// Logins under CPU load, and with their runner killed at many points of
/// the login and resumed: every run reaches the shell, and no console log
/// holds the password (busybox's login prints `Password:` before it turns
/// echo off; a password typed too early would be echoed in clear).
#[test]
fn logins_under_load_and_cut_off_at_any_point_never_echo_the_password() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    let id = Scenario::instance_with(&dd, &["--root-password", "pw-Zq81x"]);
    dd.write_runbook(
        "logins.rhai",
        r#"
runbook(#{ name: "logins", params: #{ instance: #{ type: "instance" }, password: #{ type: "secret" } } });
let out = [];
for n in 0..3 {
    out.push(step(`login ${n}`, || {
        let c = console::open(params.instance);
        c.login("root", params.password);
        c.run("echo in").stdout
    }));
}
out
"#,
    );
    // Two busy loops: the guest and the runner compete for the CPUs.
    let hogs: Vec<std::process::Child> = (0..2)
        .map(|_| {
            std::process::Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .spawn()
                .unwrap()
        })
        .collect();
    let p_instance = format!("instance={id}");
    let run = |args: &[&str]| {
        dd.command(args)
            .env("LOGIN_PW", "pw-Zq81x")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut child = run(&[
        "--json",
        "--region",
        R,
        "run",
        "logins",
        "-p",
        &p_instance,
        "-p",
        "password=env:LOGIN_PW",
    ]);
    let ex = dd.only_execution_of("logins");
    // Killed at points spread over the logins (a login takes 1–3 s here).
    for (n, ms) in [150u64, 400, 700, 1100, 1600, 2300, 900].iter().enumerate() {
        std::thread::sleep(Duration::from_millis(*ms));
        if child.try_wait().unwrap().is_some() {
            break;
        }
        child.kill().unwrap();
        let _ = child.wait();
        eprintln!("kill {n} after {ms} ms");
        child = run(&["--json", "--region", R, "resume", &ex]);
    }
    let out = child.wait_with_output().unwrap();
    for mut h in hogs {
        let _ = h.kill();
        let _ = h.wait();
    }
    assert_code(&out, 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["output"],
        serde_json::json!(["in\n", "in\n", "in\n"]),
        "{v}"
    );
    let logs = dd.data_dir().join("instances").join(&id).join("console");
    for e in std::fs::read_dir(&logs).unwrap() {
        let p = e.unwrap().path();
        let bytes = std::fs::read(&p).unwrap();
        assert!(
            !bytes.windows(8).any(|w| w == b"pw-Zq81x"),
            "the password is in {}",
            p.display()
        );
    }
}
