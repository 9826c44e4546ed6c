//! SSH with a real OpenSSH server started by the test on 127.0.0.1 with a
//! generated host key and client key: exec with exit codes, upload,
//! download, an expect-driven shell, and a wrong key refused clearly.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_code, text, Drydock};

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
    keygen(&dir.join("host_key"));
    keygen(&dir.join("client_key"));
    keygen(&dir.join("other_key"));
    std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
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
    let child = Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(dir.join("sshd_config"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("sshd.log")).unwrap())
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
let s = ssh::connect("127.0.0.1", #{ user: params.user, key: params.key, port: params.port });
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
ssh::connect("127.0.0.1", #{ user: "root", key: params.key, port: params.port });
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
    assert_code(&out, 1);
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "ssh root@127.0.0.1:{}: the server refused key",
            sshd.port
        )),
        "{err}"
    );
    assert!(err.contains("other_key"), "{err}");
}
