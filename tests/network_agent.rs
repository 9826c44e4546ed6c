//! Instance networks for an account without CAP_NET_ADMIN: refused with
//! the fix (`drydock host setup-network --user NAME`, run as root) until
//! root starts the network agent; then the same account launches an
//! instance that gets its address and answers, through the agent. The
//! agent serves only the accounts root named, and only on their own data
//! directories' namespaces; terminate leaves no namespace, and
//! `setup-network --remove` stops the agent.

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::guest::image_cache;
use common::os_users::{connect_as, os_user, OsUser};
use common::{assert_code, bin, text, vm_lock, Drydock};
use serde_json::Value;

const R: &str = "region-a";
const SOCKET: &str = "/run/drydock/network-agent.sock";
const PIDFILE: &str = "/run/drydock/network-agent.pid";

fn setup_network(args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(["host", "setup-network"])
        .args(args)
        .output()
        .unwrap()
}

/// Stops the agent whatever happens to the test.
struct AgentGuard;

impl Drop for AgentGuard {
    fn drop(&mut self) {
        let _ = setup_network(&["--remove"]);
        for ns in UPLINKS {
            let _ = Command::new("ip").args(["netns", "delete", ns]).output();
        }
    }
}

/// Namespaces outside drydock: the first one root allows as uplink.
const UPLINKS: [&str; 2] = ["ddnet-up", "ddnet-up-other"];

fn namespaces_of(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

fn json_as(dd: &Drydock, user: &OsUser, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["--json", "--region", R];
    all.extend_from_slice(args);
    let out = dd.run_as(user, &all);
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), v)
}

/// Runs `cmd`, killed after `limit` (a guest's SSH server stalled).
fn run_for(mut cmd: Command, limit: Duration) -> std::process::Output {
    use std::process::Stdio;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let killer = std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(200));
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return;
            }
        }
        // SAFETY: signals the process group this test started.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    });
    let out = child.wait_with_output().unwrap();
    let _ = killer.join();
    out
}

#[test]
fn an_unprivileged_account_gets_networks_through_the_agent_root_set_up() {
    let _vm = vm_lock();
    let user = os_user("ddnet", &[]);
    let stranger = os_user("ddnet2", &[]);
    // A leftover agent of an earlier failed run.
    let _ = setup_network(&["--remove"]);

    let dd = Drydock::new();
    // The image is built by root (the shared cache is root's and private),
    // its build copied where the account can read it and registered from
    // there; then the data directory is handed to the account: its own.
    Drydock::new().image(R);
    let top = dd.dir.path();
    let cache = top.join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    for e in std::fs::read_dir(image_cache()).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().starts_with("build-") {
            let ok = Command::new("cp")
                .arg("-a")
                .arg(e.path())
                .arg(&cache)
                .status()
                .unwrap();
            assert!(ok.success());
        }
    }
    let out = dd
        .command(&["--json", "--region", R, "image", "build"])
        .env("DRYDOCK_IMAGE_CACHE", &cache)
        .output()
        .unwrap();
    assert_code(&out, 0);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let img = v["image"]["id"].as_str().unwrap().to_string();
    let ok = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(&cache)
        .status()
        .unwrap();
    assert!(ok.success());
    for (p, mode) in [(top.to_path_buf(), "0755"), (dd.work(), "0777")] {
        assert!(Command::new("chmod")
            .arg(mode)
            .arg(&p)
            .status()
            .unwrap()
            .success());
    }
    let data = dd.data_dir();
    assert!(Command::new("chown")
        .args(["-R", &user.name])
        .arg(&data)
        .status()
        .unwrap()
        .success());
    let prefix = {
        // The namespace prefix drydock derives from the data directory.
        let out = dd.run_as(&user, &["--json", "--region", R, "vpcs"]);
        assert_code(&out, 0);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let ns = v["vpcs"][0]["namespace"].as_str().unwrap().to_string();
        ns[..ns.len() - ns.rsplit('-').next().unwrap().len() - 4].to_string()
    };
    assert!(
        prefix.starts_with("drydock-") && prefix.ends_with('-'),
        "{prefix}"
    );

    // Without the agent: refused with the fix, exit 2.
    let out = dd.run_as(
        &user,
        &["--region", R, "instance", "launch", "--image", &img],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("drydock host setup-network --user ddnet") && err.contains("--no-network"),
        "{err}"
    );
    // Refused before anything was made.
    let (_, list) = json_as(&dd, &user, &["instances"]);
    assert_eq!(
        list["instances"].as_array().map(Vec::len),
        Some(0),
        "{list}"
    );

    // Only root sets it up.
    let out = dd.run_as(&user, &["host", "setup-network", "--user", "ddnet"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("must run as root"),
        "{}",
        text(&out.stderr)
    );

    let guard = AgentGuard;
    for ns in UPLINKS {
        let _ = Command::new("ip").args(["netns", "delete", ns]).output();
        let out = Command::new("ip")
            .args(["netns", "add", ns])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let out = setup_network(&["--user", "ddnet", "--uplink", UPLINKS[0]]);
    assert_code(&out, 0);
    assert!(Path::new(SOCKET).exists());

    // An account root did not name is told so at launch, nothing made.
    let theirs = Drydock::new();
    let ok = Command::new("chmod")
        .arg("0755")
        .arg(theirs.dir.path())
        .status()
        .unwrap();
    assert!(ok.success());
    std::fs::create_dir(theirs.data_dir()).unwrap();
    let ok = Command::new("chown")
        .arg(&stranger.name)
        .arg(theirs.data_dir())
        .status()
        .unwrap();
    assert!(ok.success());
    let out = theirs
        .command_as(&stranger, &["--json", "--region", R, "image", "build"])
        .env("DRYDOCK_IMAGE_CACHE", &cache)
        .output()
        .unwrap();
    assert_code(&out, 0);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let their_img = v["image"]["id"].as_str().unwrap().to_string();
    let out = theirs.run_as(
        &stranger,
        &["--region", R, "instance", "launch", "--image", &their_img],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("may not use the network agent"),
        "{}",
        text(&out.stderr)
    );

    // Now the account launches an instance with a network.
    let key = dd.work().join("id_ed25519");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "agent", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pubkey = format!("{}.pub", key.display());
    for f in [key.display().to_string(), pubkey.clone()] {
        assert!(Command::new("chown")
            .args([&user.name, &f])
            .status()
            .unwrap()
            .success());
    }
    let out = dd.run_as(
        &user,
        &[
            "--json",
            "--region",
            R,
            "instance",
            "launch",
            "--image",
            &img,
            "--ssh-key",
            &pubkey,
        ],
    );
    assert_code(&out, 0);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = v["id"].as_str().unwrap().to_string();
    let ns = namespaces_of(&prefix);
    assert_eq!(ns.len(), 1, "{ns:?}");
    // It gets its address and answers on it (the health check connects
    // from inside the VPC, through the agent).
    let start = Instant::now();
    loop {
        let (_, st) = json_as(&dd, &user, &["instance-status", &id]);
        let s = st.to_string();
        if st["statuses"][0]["status"] == "ok" && s.contains("answers") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "never answered: {st}"
        );
        std::thread::sleep(Duration::from_secs(3));
    }

    // The metadata service's listener, bound by the agent inside the
    // namespace and held by the account's instance process.
    let out = Command::new("ip")
        .args(["netns", "exec", &ns[0], "ss", "-Hltn"])
        .output()
        .unwrap();
    assert!(
        text(&out.stdout).contains("169.254.169.254:"),
        "{}",
        text(&out.stdout)
    );

    // `drydock ssh` from the account, its connection made by the agent:
    // once the guest is at its login prompt (its SSH server set up).
    let start = Instant::now();
    loop {
        let out = dd.run_as(&user, &["--region", R, "console-output", &id]);
        if text(&out.stdout).contains(&format!("{id} login:")) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "{}",
            text(&out.stdout)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let key_s = key.display().to_string();
    let start = Instant::now();
    loop {
        let out = run_for(
            dd.command_as(
                &user,
                &[
                    "--region",
                    R,
                    "ssh",
                    &id,
                    "-i",
                    &key_s,
                    "--",
                    "cat",
                    "/etc/hostname",
                ],
            ),
            Duration::from_secs(60),
        );
        if out.status.code() == Some(0) {
            assert!(text(&out.stdout).contains(&id), "{}", text(&out.stdout));
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "ssh never got in: {}",
            text(&out.stderr)
        );
        std::thread::sleep(Duration::from_secs(3));
    }

    // An uplink root allowed is plumbed by the agent; another is refused
    // (and the VPC keeps the one it had).
    let vpc_id = ns[0].strip_prefix(&prefix).unwrap().to_string();
    let out = dd.run_as(&user, &["vpc", "uplink", &vpc_id, "--netns", UPLINKS[0]]);
    assert_code(&out, 0);
    let out = Command::new("ip")
        .args(["-n", UPLINKS[0], "-br", "link"])
        .output()
        .unwrap();
    assert!(text(&out.stdout).contains("dd-"), "{}", text(&out.stdout));
    let out = dd.run_as(&user, &["vpc", "uplink", &vpc_id, "--netns", UPLINKS[1]]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("not one root allowed"),
        "{}",
        text(&out.stderr)
    );
    let out = Command::new("ip")
        .args(["-n", UPLINKS[1], "-br", "link"])
        .output()
        .unwrap();
    assert!(!text(&out.stdout).contains("dd-"), "{}", text(&out.stdout));
    let out = dd.run_as(&user, &["vpc", "uplink", &vpc_id, "--none"]);
    assert_code(&out, 0);

    // The agent refuses an account root did not name…
    let canon = std::fs::canonicalize(&data).unwrap();
    let release = |dir: &Path| {
        serde_json::json!({"op": "release", "vpc": {"data_dir": dir, "vpc_id": vpc_id}}).to_string()
    };
    let reply = connect_as(&stranger, Path::new(SOCKET), &release(&canon));
    assert!(reply.contains("may not use the network agent"), "{reply}");
    // …and a named account asking for another data directory's namespace
    // (the test's own, root's).
    let other = Drydock::new();
    let root_dir = std::fs::canonicalize(other.dir.path()).unwrap();
    let reply = connect_as(&user, Path::new(SOCKET), &release(&root_dir));
    assert!(
        reply.contains("not a data directory of the caller"),
        "{reply}"
    );
    let reply = connect_as(&user, Path::new(SOCKET), "{\"op\":\"make_tap\"");
    assert!(reply.contains("error"), "{reply}");

    // Terminate leaves no namespace.
    let out = dd.run_as(&user, &["--region", R, "instance", "terminate", &id]);
    assert_code(&out, 0);
    let start = Instant::now();
    while !namespaces_of(&prefix).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "left: {:?}",
            namespaces_of(&prefix)
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // --remove stops the agent.
    let pid: i32 = std::fs::read_to_string(PIDFILE)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let out = setup_network(&["--remove"]);
    assert_code(&out, 0);
    assert!(!Path::new(SOCKET).exists());
    assert!(!Path::new("/etc/drydock/network-agent.json").exists());
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists() || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.contains(") Z")
        }
    );
    drop(guard);
}
