//! SSH with a real OpenSSH server started by the test on 127.0.0.1 with a
//! generated host key and client key: exec with exit codes, upload,
//! download, an expect-driven shell, and a wrong key refused clearly;
//! host-key checking (strict by default, accept-new, pinned, a changed key
//! refused before any authentication), timeouts that follow the step,
//! exact bytes for non-UTF-8 output, and stdout and stderr read together.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::serve::free_port;
use common::{assert_code, assert_stderr, text, Drydock};

struct Sshd {
    child: Child,
    port: u16,
    key: PathBuf,
    other_key: PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .stdout(Stdio::null())
        .status()
        .expect("ssh-keygen (openssh-client) is installed by scripts/setup");
    assert!(st.success());
}

fn start_sshd(dir: &Path) -> Sshd {
    start_sshd_on(dir, free_port())
}

/// Starts sshd on `port` with the host key `dir/host_key` (made if absent),
/// so a test can restart "the same host" with another key.
fn start_sshd_on(dir: &Path, port: u16) -> Sshd {
    for k in ["host_key", "client_key", "other_key"] {
        if !dir.join(k).exists() {
            keygen(&dir.join(k));
        }
    }
    std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "root".into());
    let config = format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPidFile {}\n\
         UsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
         PermitRootLogin yes\nAllowUsers {user}\nSubsystem sftp /usr/lib/openssh/sftp-server\n",
        dir.join("host_key").display(),
        dir.join("authorized_keys").display(),
        dir.join("sshd.pid").display()
    );
    std::fs::write(dir.join("sshd_config"), config).unwrap();
    let _ = std::fs::create_dir_all("/run/sshd");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("sshd.log"))
        .unwrap();
    let child = Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(dir.join("sshd_config"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("sshd (openssh-server) is installed by scripts/setup");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "sshd did not start: {}",
            std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Sshd {
        child,
        port,
        key: dir.join("client_key"),
        other_key: dir.join("other_key"),
    }
}

#[test]
fn exec_upload_download_and_a_shell_over_real_ssh() {
    let dd = Drydock::new();
    let sshd = start_sshd(&dd.work());
    let local = dd.work().join("local.txt");
    std::fs::write(&local, "payload from drydock\n").unwrap();
    dd.write_runbook(
        "ssh-check.rhai",
        r#"
runbook(#{ name: "ssh-check", params: #{ port: #{ type: "int" }, key: #{ type: "string" }, work: #{ type: "string" }, user: #{ type: "string" } } });
let s = ssh::connect("127.0.0.1", #{ user: params.user, key: params.key, port: params.port, host_key: "accept-new" });
let ok = s.exec("echo hello; echo oops >&2; exit 3");
s.upload(`${params.work}/local.txt`, `${params.work}/remote.txt`);
let back = s.download(`${params.work}/remote.txt`, `${params.work}/back.txt`);
let sh = s.shell();
sh.expect([re("[#$] ")], "10s");
let r = sh.run("echo $((6 * 7))", "10s");
let bad = sh.run("false", "10s");
#{ stdout: ok.stdout, stderr: ok.stderr, code: ok.exit_code, bytes: back, shell: r.stdout, shell_code: r.exit_code, false_code: bad.exit_code }
"#,
    );
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "root".into());
    let out = dd.run(&[
        "--json",
        "run",
        "ssh-check",
        "-p",
        &format!("port={}", sshd.port),
        "-p",
        &format!("key={}", sshd.key.display()),
        "-p",
        &format!("work={}", dd.work().display()),
        "-p",
        &format!("user={user}"),
    ]);
    assert_code(&out, 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let o = &v["output"];
    assert_eq!(o["stdout"], "hello\n");
    assert_eq!(o["stderr"], "oops\n");
    assert_eq!(o["code"], 3);
    assert_eq!(o["bytes"], 21);
    assert_eq!(
        std::fs::read_to_string(dd.work().join("back.txt")).unwrap(),
        "payload from drydock\n"
    );
    assert_eq!(o["shell"], "42\n");
    assert_eq!(o["shell_code"], 0);
    assert_eq!(o["false_code"], 1);
}

#[test]
fn a_wrong_key_is_refused_with_a_clear_error() {
    let dd = Drydock::new();
    let sshd = start_sshd(&dd.work());
    dd.write_runbook(
        "ssh-wrong.rhai",
        r#"
runbook(#{ name: "ssh-wrong", params: #{ port: #{ type: "int" }, key: #{ type: "string" } } });
ssh::connect("127.0.0.1", #{ user: "root", key: params.key, port: params.port, host_key: "accept-new" });
"#,
    );
    let out = dd.run(&[
        "run",
        "ssh-wrong",
        "-p",
        &format!("port={}", sshd.port),
        "-p",
        &format!("key={}", sshd.other_key.display()),
    ]);
    let err = assert_stderr(
        &out,
        1,
        &[&format!(
            "ssh root@127.0.0.1:{}: the server refused key",
            sshd.port
        )],
    );
    assert!(err.contains("other_key"), "{err}");
}

fn user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "root".into())
}

/// `SHA256:…` of a public key file, as `ssh-keygen -lf` prints it.
fn fingerprint(pub_key: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(pub_key)
        .output()
        .unwrap();
    assert!(out.status.success());
    text(&out.stdout)
        .split_whitespace()
        .nth(1)
        .expect("ssh-keygen -lf prints BITS FINGERPRINT …")
        .to_string()
}

/// Writes and runs a runbook whose body can call `opts(#{ … })`: the
/// connect options for this sshd (user, key, port) plus the given ones.
fn run_ssh(dd: &Drydock, sshd: &Sshd, name: &str, body: &str) -> std::process::Output {
    let src = format!(
        "runbook(#{{ name: \"{name}\" }});\n\
         fn opts(extra) {{ let m = #{{ user: \"{}\", key: \"{}\", port: {} }}; m.mixin(extra); m }}\n{body}\n",
        user(),
        sshd.key.display(),
        sshd.port
    );
    dd.write_runbook(&format!("{name}.rhai"), &src);
    dd.run(&["--json", "run", name])
}

/// What the run printed, stdout (JSON with the error) and stderr (logs).
fn printed(out: &std::process::Output) -> String {
    format!("{}\n{}", text(&out.stdout), text(&out.stderr))
}

fn output(out: &std::process::Output) -> serde_json::Value {
    assert_code(out, 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["output"].clone()
}

/// sshd's log written since `from` bytes (it logs each accepted login).
fn log_since(dir: &Path, from: usize) -> String {
    std::thread::sleep(Duration::from_millis(300));
    let log = std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default();
    log.get(from..).unwrap_or_default().to_string()
}

fn log_len(dir: &Path) -> usize {
    std::fs::metadata(dir.join("sshd.log"))
        .map(|m| m.len() as usize)
        .unwrap_or(0)
}

#[test]
fn strict_by_default_refuses_an_unknown_host_before_authenticating_and_accept_new_records_it() {
    use std::os::unix::fs::PermissionsExt;
    let dd = Drydock::new();
    let dir = dd.work();
    let sshd = start_sshd(&dir);
    let fp = fingerprint(&dir.join("host_key.pub"));
    let known = dd.data_dir().join("ssh").join("known_hosts");

    let out = run_ssh(
        &dd,
        &sshd,
        "strict",
        r#"ssh::connect("127.0.0.1", opts(#{})).exec("echo hi").stdout"#,
    );
    assert_code(&out, 1);
    let err = printed(&out);
    for want in [
        &format!("127.0.0.1:{}", sshd.port),
        "not known",
        "ssh-ed25519",
        &fp,
        "accept-new",
        &known.display().to_string(),
    ] {
        assert!(err.contains(want), "missing {want:?} in: {err}");
    }
    let log = log_since(&dir, 0);
    assert!(!log.contains("Accepted"), "authenticated anyway: {log}");
    assert!(!known.exists(), "strict mode must not record keys");

    let out = run_ssh(
        &dd,
        &sshd,
        "accept",
        r#"ssh::connect("127.0.0.1", opts(#{ host_key: "accept-new" })).exec("echo hi").stdout"#,
    );
    assert_eq!(output(&out), "hi\n");
    let line = std::fs::read_to_string(&known).unwrap();
    let host_pub = std::fs::read_to_string(dir.join("host_key.pub")).unwrap();
    let b64 = host_pub.split_whitespace().nth(1).unwrap();
    assert_eq!(
        line,
        format!("[127.0.0.1]:{} ssh-ed25519 {b64}\n", sshd.port)
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&known), 0o600);
    assert_eq!(mode(known.parent().unwrap()), 0o700);

    // Known now: the strict default connects.
    let out = run_ssh(
        &dd,
        &sshd,
        "strict-again",
        r#"ssh::connect("127.0.0.1", opts(#{})).exec("echo again").stdout"#,
    );
    assert_eq!(output(&out), "again\n");
    assert!(log_since(&dir, 0).contains("Accepted publickey"));
}

#[test]
fn a_changed_host_key_is_refused_loudly_and_never_gets_credentials() {
    let dd = Drydock::new();
    let dir = dd.work();
    let sshd = start_sshd(&dir);
    let port = sshd.port;
    let known = dd.data_dir().join("ssh").join("known_hosts");
    let old_fp = fingerprint(&dir.join("host_key.pub"));
    let out = run_ssh(
        &dd,
        &sshd,
        "first",
        r#"ssh::connect("127.0.0.1", opts(#{ host_key: "accept-new" })).exec("echo first").stdout"#,
    );
    assert_eq!(output(&out), "first\n");

    // The same host:port comes back with another host key (an impostor,
    // or a reinstalled server).
    drop(sshd);
    std::fs::remove_file(dir.join("host_key")).unwrap();
    std::fs::remove_file(dir.join("host_key.pub")).unwrap();
    let sshd = start_sshd_on(&dir, port);
    let new_fp = fingerprint(&dir.join("host_key.pub"));
    assert_ne!(old_fp, new_fp);
    let from = log_len(&dir);
    for (name, policy) in [
        ("changed-accept", "accept-new"),
        ("changed-strict", "strict"),
    ] {
        let out = run_ssh(
            &dd,
            &sshd,
            name,
            &format!(
                r#"ssh::connect("127.0.0.1", opts(#{{ host_key: "{policy}" }})).exec("echo impostor").stdout"#
            ),
        );
        assert_code(&out, 1);
        let err = printed(&out);
        for want in [
            &format!("127.0.0.1:{port}"),
            "CHANGED",
            "impersonating",
            &known.display().to_string(),
            "line 1",
            &old_fp,
            &new_fp,
        ] {
            assert!(err.contains(want), "{policy}: missing {want:?} in: {err}");
        }
    }
    let log = log_since(&dir, from);
    assert!(
        !log.contains("Accepted"),
        "authenticated to the changed host: {log}"
    );
    assert_eq!(
        std::fs::read_to_string(&known).unwrap().lines().count(),
        1,
        "the changed key must not be recorded"
    );
}

#[test]
fn a_pinned_fingerprint_is_the_only_key_accepted() {
    let dd = Drydock::new();
    let dir = dd.work();
    let sshd = start_sshd(&dir);
    let fp = fingerprint(&dir.join("host_key.pub"));
    let wrong = fingerprint(&dir.join("other_key.pub"));
    let out = run_ssh(
        &dd,
        &sshd,
        "pinned",
        &format!(
            r#"ssh::connect("127.0.0.1", opts(#{{ host_key: "{fp}" }})).exec("echo pinned").stdout"#
        ),
    );
    assert_eq!(output(&out), "pinned\n");
    assert!(!dd.data_dir().join("ssh").join("known_hosts").exists());

    let from = log_len(&dir);
    let out = run_ssh(
        &dd,
        &sshd,
        "wrong-pin",
        &format!(
            r#"ssh::connect("127.0.0.1", opts(#{{ host_key: "{wrong}" }})).exec("echo no").stdout"#
        ),
    );
    assert_code(&out, 1);
    let err = printed(&out);
    assert!(err.contains(&format!("127.0.0.1:{}", sshd.port)), "{err}");
    assert!(
        err.contains(&fp) && err.contains(&wrong) && err.contains("pins"),
        "{err}"
    );
    assert!(!log_since(&dir, from).contains("Accepted"));

    let out = run_ssh(
        &dd,
        &sshd,
        "bad-policy",
        r#"ssh::connect("127.0.0.1", opts(#{ host_key: "no" }))"#,
    );
    assert_code(&out, 1);
    assert!(printed(&out).contains("accept-new"), "{}", printed(&out));
}

#[test]
fn a_step_timeout_stops_a_remote_command_and_a_call_timeout_leaves_the_session_usable() {
    let dd = Drydock::new();
    let sshd = start_sshd(&dd.work());
    let start = Instant::now();
    let out = run_ssh(
        &dd,
        &sshd,
        "step-timeout",
        r#"let s = ssh::connect("127.0.0.1", opts(#{ host_key: "accept-new" }));
step("slow", #{ timeout: "1s" }, || s.exec("sleep 30").stdout);"#,
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert_code(&out, 4);
    assert!(printed(&out).contains("timed out"), "{}", printed(&out));
    assert_eq!(dd.state(&dd.only_execution()), "TimedOut");

    let start = Instant::now();
    let out = run_ssh(
        &dd,
        &sshd,
        "call-timeout",
        r#"let s = ssh::connect("127.0.0.1", opts(#{ host_key: "accept-new" }));
let err = "";
try { s.exec("sleep 30", #{ timeout: "1s" }); } catch (e) { err = `${e}`; }
#{ err: err, after: s.exec("echo still here").stdout }"#,
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    let o = output(&out);
    let err = o["err"].as_str().unwrap();
    assert!(err.contains(&format!("127.0.0.1:{}", sshd.port)), "{err}");
    assert!(err.contains("did not finish within"), "{err}");
    assert_eq!(o["after"], "still here\n");
}

#[test]
fn a_quiet_command_runs_as_long_as_its_step_allows() {
    let dd = Drydock::new();
    let sshd = start_sshd(&dd.work());
    let out = run_ssh(
        &dd,
        &sshd,
        "quiet",
        r#"let s = ssh::connect("127.0.0.1", opts(#{ host_key: "accept-new" }));
s.exec("sleep 35; echo done").stdout"#,
    );
    assert_eq!(output(&out), "done\n");
}

#[test]
fn non_utf8_output_is_kept_byte_for_byte() {
    let dd = Drydock::new();
    let sshd = start_sshd(&dd.work());
    let all: Vec<u8> = (0..=255u8).collect();
    std::fs::write(dd.work().join("all.bin"), &all).unwrap();
    let w = dd.work().display().to_string();
    let out = run_ssh(
        &dd,
        &sshd,
        "bytes",
        &format!(
            r#"let s = ssh::connect("127.0.0.1", opts(#{{ host_key: "accept-new" }}));
let r = s.exec("printf '\\377\\376ok'; printf '\\200' >&2", #{{ bytes: true }});
let a = []; for i in 0..r.stdout_bytes.len() {{ a.push(r.stdout_bytes[i]); }}
let e = []; for i in 0..r.stderr_bytes.len() {{ e.push(r.stderr_bytes[i]); }}
let journaled = step("journaled", || s.exec("printf '\\377'"));
s.download("{w}/all.bin", "{w}/down.bin");
s.upload("{w}/all.bin", "{w}/up.bin");
#{{ out: a, err: e, text: r.stdout, utf8: r.utf8, code: r.exit_code,
   plain: journaled.stdout, plain_utf8: journaled.utf8, plain_has_bytes: "stdout_bytes" in journaled }}"#
        ),
    );
    let o = output(&out);
    assert_eq!(o["out"], serde_json::json!([255, 254, 111, 107]));
    assert_eq!(o["err"], serde_json::json!([128]));
    assert_eq!(o["text"], "\u{FFFD}\u{FFFD}ok");
    assert_eq!(o["utf8"], false);
    assert_eq!(o["code"], 0);
    assert_eq!(o["plain"], "\u{FFFD}");
    assert_eq!(o["plain_utf8"], false);
    assert_eq!(o["plain_has_bytes"], false);
    assert_eq!(std::fs::read(dd.work().join("down.bin")).unwrap(), all);
    assert_eq!(std::fs::read(dd.work().join("up.bin")).unwrap(), all);
}

#[test]
fn stdout_and_stderr_are_read_together() {
    let dd = Drydock::new();
    let sshd = start_sshd(&dd.work());
    // 8 MiB on stderr before anything on stdout: more than the SSH window,
    // so a client that reads stdout to its end first never sees the end.
    let out = run_ssh(
        &dd,
        &sshd,
        "big",
        r#"let s = ssh::connect("127.0.0.1", opts(#{ host_key: "accept-new" }));
step("big", #{ timeout: "60s" }, || {
    let r = s.exec("head -c 8388608 /dev/zero | tr '\\000' e >&2; head -c 1048576 /dev/zero | tr '\\000' o; echo end >&2");
    #{ out: r.stdout.len(), err: r.stderr.len(), code: r.exit_code }
})"#,
    );
    let o = output(&out);
    assert_eq!(o["out"], 1048576);
    assert_eq!(o["err"], 8388608 + 4);
    assert_eq!(o["code"], 0);
}

#[test]
fn cancel_stops_a_remote_command_promptly() {
    let dd = Drydock::new();
    let sshd = start_sshd(&dd.work());
    let marker = dd.work().join("started");
    let src = format!(
        "runbook(#{{ name: \"cancel-ssh\" }});\n\
         let s = ssh::connect(\"127.0.0.1\", #{{ user: \"{}\", key: \"{}\", port: {}, host_key: \"accept-new\" }});\n\
         write_file(\"{}\", \"yes\");\n\
         step(\"wait\", || s.exec(\"sleep 60\").stdout);\n",
        user(),
        sshd.key.display(),
        sshd.port,
        marker.display()
    );
    dd.write_runbook("cancel-ssh.rhai", &src);
    let child = dd.spawn(&["run", "cancel-ssh"]);
    dd.wait_until("the runbook to start its remote command", || {
        marker.exists()
    });
    std::thread::sleep(Duration::from_millis(500));
    let id = dd.only_execution();
    let start = Instant::now();
    assert_code(&dd.run(&["cancel", &id]), 0);
    let run = common::wait_child(child);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert_code(&run, 5);
    assert_eq!(dd.state(&id), "Cancelled");
}
