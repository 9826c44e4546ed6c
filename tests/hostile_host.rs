//! The host under hostile clients and races, with real guests (issue 11):
//! a console reader that never reads while the guest prints does not stop
//! the console or a stop; parallel starts and attaches of one resource
//! have exactly one winner and leave nothing orphaned.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::scenario::Scenario;
use common::{assert_code, text, vm_lock, Drydock};
use drydock_host::console_client::{connect, ConsoleStart};

const R: &str = "region-a";

fn log_len(dd: &Drydock, id: &str) -> u64 {
    let boots = dd.instance(R, id)["boots"].as_u64().unwrap_or(1);
    let path = dd
        .data_dir()
        .join("instances")
        .join(id)
        .join("console")
        .join(format!("boot-{boots:04}.log"));
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Logs in on the console and starts a command that prints without end.
fn flood_console(dd: &Drydock, id: &str) {
    let dir = dd.data_dir().join("instances").join(id);
    let mut w = connect(&dir, id, true, "flooder", false, ConsoleStart::Now).unwrap();
    w.stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut seen = Vec::new();
    let wait_for = |s: &mut UnixStream, what: &str, seen: &mut Vec<u8>| {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(seen).contains(what) {
            assert!(Instant::now() < deadline, "no {what:?}: {}", text(seen));
            if let Ok(n) = s.read(&mut buf) {
                seen.extend_from_slice(&buf[..n]);
            }
        }
        seen.clear();
    };
    w.stream.write_all(b"\r").unwrap();
    wait_for(&mut w.stream, "login: ", &mut seen);
    w.stream.write_all(b"root\r").unwrap();
    wait_for(&mut w.stream, "Password: ", &mut seen);
    w.stream.write_all(b"pw\r").unwrap();
    wait_for(&mut w.stream, "# ", &mut seen);
    w.stream
        .write_all(b"while true; do cat /proc/kallsyms; done\r")
        .unwrap();
    // The writer leaves; the guest goes on printing.
}

#[test]
fn a_console_reader_that_never_reads_blocks_neither_the_guest_nor_a_stop() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    let id = Scenario::instance_with(&dd, &["--root-password", "pw"]);
    flood_console(&dd, &id);
    // More in the log than any socket buffer holds.
    let start = Instant::now();
    while log_len(&dd, &id) < 3 << 20 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the guest printed only {} bytes",
            log_len(&dd, &id)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A reader asks for everything from offset 0 and never reads.
    let sock = dd
        .data_dir()
        .join("instances")
        .join(&id)
        .join("console.sock");
    let mut stalled = UnixStream::connect(&sock).unwrap();
    stalled
        .write_all(b"{\"mode\": \"read\", \"who\": \"stalled\", \"from\": 0}\n")
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    // The guest's output still flows into the log.
    let before = log_len(&dd, &id);
    std::thread::sleep(Duration::from_secs(3));
    let after = log_len(&dd, &id);
    assert!(
        after > before + 10_000,
        "the console stalled behind a reader that does not read: {before} -> {after}"
    );
    // Other clients are still served: the tail over the control socket.
    assert_code(
        &dd.run(&["--region", R, "console-output", &id, "--tail", "1"]),
        0,
    );
    // And a stop ends the instance within its deadline.
    let t = Instant::now();
    let out = dd.run(&["--region", R, "instance", "stop", &id]);
    assert_code(&out, 0);
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    assert_eq!(dd.instance(R, &id)["state"], "stopped");
    drop(stalled);
}

fn stopped_record(dd: &Drydock, id: &str) {
    use drydock_host::{HostStore, InstanceConfig, InstanceRecord, InstanceState};
    let mut store = HostStore::open(&dd.data_dir()).unwrap();
    store
        .insert_instance(&InstanceRecord {
            id: id.into(),
            region: R.into(),
            instance_type: "n2.small".into(),
            image_id: "img-0000000000000000".into(),
            state: InstanceState::Stopped,
            state_reason: String::new(),
            root_volume: String::new(),
            supervisor_pid: None,
            supervisor_token: None,
            boots: 0,
            config: InstanceConfig::default(),
            created_at: 0,
            state_since: 0,
            after_host_failure: Default::default(),
            auto_recovery: false,
        })
        .unwrap();
}

/// Runs the commands all at once; returns their outputs.
fn at_once(dd: &Drydock, commands: Vec<Vec<String>>) -> Vec<std::process::Output> {
    let children: Vec<_> = commands
        .iter()
        .map(|args| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            dd.spawn(&args)
        })
        .collect();
    children.into_iter().map(common::wait_child).collect()
}

#[test]
fn parallel_attaches_of_one_volume_have_one_winner_and_distinct_slots() {
    let dd = Drydock::new();
    assert_code(&dd.run(&["--region", R, "instances"]), 0);
    let instances: Vec<String> = (0..8).map(|n| format!("i-00000000000000c{n}")).collect();
    for i in &instances {
        stopped_record(&dd, i);
    }
    let vol = dd.json(&["--region", R, "volume", "create", "--size", "1"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    // One volume, eight instances at once: exactly one wins.
    let outs = at_once(
        &dd,
        instances
            .iter()
            .map(|i| {
                ["--region", R, "volume", "attach", &vol, i]
                    .map(String::from)
                    .to_vec()
            })
            .collect(),
    );
    let won: Vec<_> = outs.iter().filter(|o| o.status.success()).collect();
    assert_eq!(won.len(), 1, "exactly one attach wins");
    for o in outs.iter().filter(|o| !o.status.success()) {
        assert_code(o, 2);
        assert!(
            text(&o.stderr).contains(&format!("volume {vol} is attached to i-")),
            "{}",
            text(&o.stderr)
        );
    }
    let list = dd.json(&["--region", R, "volumes"]);
    let v = list["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == vol.as_str())
        .unwrap()
        .clone();
    assert!(v["attached_to"]
        .as_str()
        .unwrap()
        .starts_with("i-00000000000000c"));

    // Eight volumes, one instance, at once: eight distinct slots.
    let vols: Vec<String> = (0..8)
        .map(|_| {
            dd.json(&["--region", R, "volume", "create", "--size", "1"])["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let target = "i-00000000000000d0";
    stopped_record(&dd, target);
    let outs = at_once(
        &dd,
        vols.iter()
            .map(|v| {
                ["--region", R, "volume", "attach", v, target]
                    .map(String::from)
                    .to_vec()
            })
            .collect(),
    );
    for o in &outs {
        assert_code(o, 0);
    }
    let list = dd.json(&["--region", R, "volumes"]);
    let mut slots: Vec<u64> = list["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["attached_to"] == target)
        .map(|v| v["attach_index"].as_u64().unwrap())
        .collect();
    slots.sort();
    slots.dedup();
    assert_eq!(slots.len(), 8, "{list}");
    // Attaching again where it already is changes nothing (a re-run).
    assert_code(
        &dd.run(&["--region", R, "volume", "attach", &vols[0], target]),
        0,
    );
    // Detaching what is not attached is done already (a re-run).
    assert_code(&dd.run(&["--region", R, "volume", "detach", &vols[0]]), 0);
    assert_code(&dd.run(&["--region", R, "volume", "detach", &vols[0]]), 0);
}

/// Supervisors (instance processes) running for `id`.
fn supervisors(dd: &Drydock, id: &str) -> usize {
    let out = std::process::Command::new("pgrep")
        .args([
            "-f",
            "--",
            &format!("--data-dir {} --instance {id}", dd.data_dir().display()),
        ])
        .output()
        .unwrap();
    text(&out.stdout).lines().count()
}

#[test]
fn parallel_starts_of_one_instance_start_one_vm_and_orphan_nothing() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    let img = dd.image(R);
    let id = dd.launch(R, &img, &["--type", "m1.medium"]);
    dd.force_stop(R, &id);
    let vmm_log = dd.data_dir().join("instances").join(&id).join("vmm.log");
    let starts = || {
        std::fs::read_to_string(&vmm_log)
            .unwrap_or_default()
            .matches("drydock: start at")
            .count()
    };
    assert_eq!(starts(), 1, "vmm.log is appended to across starts");
    let outs = at_once(
        &dd,
        (0..8)
            .map(|_| {
                ["--region", R, "instance", "start", &id]
                    .map(String::from)
                    .to_vec()
            })
            .collect(),
    );
    let mut won = 0;
    for o in &outs {
        if o.status.success() {
            won += 1;
        } else {
            assert_code(o, 2);
            assert!(
                text(&o.stderr).contains("already being started by another command"),
                "{}",
                text(&o.stderr)
            );
        }
    }
    assert!(won >= 1, "one start wins");
    assert_eq!(starts(), 2, "exactly one VMM was started");
    assert_eq!(dd.instance(R, &id)["state"], "running");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(supervisors(&dd, &id), 1, "one instance process, no orphan");
    // A snapshot of the running VM's root pauses it for the copy.
    let root = dd.root_volume(R, &id);
    let snap = dd.json(&["--region", R, "snapshot", "create", &root]);
    assert!(snap["paused_ms"].is_u64(), "{snap}");

    // The instance-store volume of the running VM is intact (a losing
    // supervisor used to delete it).
    let store_file = dd
        .data_dir()
        .join("instances")
        .join(&id)
        .join("instance-store.raw");
    assert!(store_file.exists());
    dd.terminate(R, &id);
    dd.wait_until("the instance process to end", || supervisors(&dd, &id) == 0);
}
