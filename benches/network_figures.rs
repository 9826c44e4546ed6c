//! Network figures of instances (QEMU backend here; accelerator chosen by
//! probing): launch to the first SSH command that succeeds (OpenSSH's
//! client through `drydock ssh`, host key pinned from the console), per
//! instance type; host to guest TCP connect time (`net::tcp_check`, 20
//! samples); guest to guest ping RTT and TCP throughput (32 MiB with
//! busybox nc); a metadata request (token, then a GET) timed in the guest.
//!
//! Run with `cargo bench --bench network_figures` as root (instance
//! networks need CAP_NET_ADMIN; `scripts/setup` installs what it needs).
//! Every packet stays in the VPC's network namespace; the run is bounded
//! and tears everything down.

#[path = "support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::Bench;

const PW: &str = "bench-pw";

/// Written by user-data: `sh /root/imds-time.sh` times 20 metadata GETs.
const IMDS_SCRIPT: &str = r#"#!/bin/sh
cat > /root/imds-time.sh <<'SCRIPT'
#!/bin/sh
token=$( (printf 'PUT /latest/api/token HTTP/1.0\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n\r\n'; sleep 1) | nc 169.254.169.254 80 | tail -1)
export token
# busybox time -f %e: elapsed seconds, to the hundredth.
time -f "imds-seconds-for-20=%e" sh -c 'i=0; while [ $i -lt 20 ]; do wget -q -O /dev/null --header "X-aws-ec2-metadata-token: $token" http://169.254.169.254/latest/meta-data/instance-id; i=$((i + 1)); done'
SCRIPT
"#;

impl Bench {
    /// Runs `cmd` as root on the instance's console; its stdout.
    fn guest(&self, id: &str, cmd: &str) -> String {
        let script = "let c = console::open(env(\"B_ID\")); c.wait_for_boot(\"300s\"); c.login(\"root\", env(\"B_PW\")); c.run(env(\"B_CMD\"), \"300s\").stdout";
        let out = self
            .cmd(&["repl", "-c", script])
            .env("B_ID", id)
            .env("B_PW", PW)
            .env("B_CMD", cmd)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let b = Bench::new();
    let work = tempfile::tempdir().unwrap();
    let key = work.path().join("key");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success());
    let pubkey = format!("{}.pub", key.display());
    let user_data = work.path().join("ud.sh");
    std::fs::write(&user_data, IMDS_SCRIPT).unwrap();
    let img = b.image();

    println!(
        "network figures (backend {})",
        b.json(&["host-info"])["backend_m1"]
    );
    let mut ids = Vec::new();
    for ty in ["m1.small", "n2.small"] {
        let started = Instant::now();
        let launched = b.json(&[
            "instance",
            "launch",
            "--image",
            &img,
            "--type",
            ty,
            "--root-password",
            PW,
            "--ssh-key",
            &pubkey,
            "--user-data",
            user_data.to_str().unwrap(),
        ]);
        let id = launched["id"].as_str().unwrap().to_string();
        let key_s = key.display().to_string();
        loop {
            let out = b.run(&["ssh", &id, "-i", &key_s, "--", "true"]);
            if out.status.success() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "no SSH to {id}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        println!(
            "  launch -> first SSH command ({ty}): {:.1} s",
            started.elapsed().as_secs_f64()
        );
        ids.push(id);
    }
    let (a, n2) = (&ids[0], &ids[1]);

    let out = b.run(&[
        "--json",
        "repl",
        "-c",
        &format!("let us = []; for i in 0..20 {{ us.push(net::tcp_check(\"{n2}\", 22, \"5s\").us); }} us"),
    ]);
    let samples: Vec<f64> = serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap_or_default()
        .as_array()
        .map(|v| v.iter().filter_map(|x| x.as_f64()).collect())
        .unwrap_or_default();
    if !samples.is_empty() {
        println!(
            "  host -> guest TCP connect (net::tcp_check, inside the VPC): median {:.2} ms of {}",
            median(samples.clone()) / 1000.0,
            samples.len()
        );
    }

    let ip_of = |id: &str| -> String {
        b.json(&["instances"])["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == id)
            .unwrap()["private_ip"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let ip_n2 = ip_of(n2);
    let ping = b.guest(a, &format!("ping -c 10 -q {ip_n2} | tail -1"));
    println!("  guest -> guest ping, m1 -> n2 (10): {}", ping.trim());

    // n2 sends zeros for ever; m1 reads 32 MiB of them and hangs up.
    b.guest(
        n2,
        "setsid sh -c 'nc -l -p 9000 < /dev/zero' </dev/null >/dev/null 2>&1 & sleep 1",
    );
    let t = b.guest(
        a,
        &format!("time -f secs=%e sh -c 'nc {ip_n2} 9000 | head -c 33554432 | wc -c' 2>&1"),
    );
    let mut words = t.split_whitespace();
    let bytes = words.next().and_then(|w| w.parse::<u64>().ok());
    let secs = t
        .split("secs=")
        .nth(1)
        .and_then(|x| x.split_whitespace().next()?.parse::<f64>().ok());
    match (secs, bytes) {
        (Some(secs), Some(bytes)) if bytes == 32 << 20 => println!(
            "  guest -> guest TCP, 32 MiB n2 -> m1: {:.1} MiB/s",
            32.0 / secs.max(0.01)
        ),
        _ => println!("  guest -> guest TCP: not measured ({})", t.trim()),
    }

    let imds = b.guest(a, "sh /root/imds-time.sh 2>&1");
    match imds
        .split("imds-seconds-for-20=")
        .nth(1)
        .and_then(|x| x.split_whitespace().next()?.parse::<f64>().ok())
    {
        Some(secs) => println!(
            "  metadata GET with a token, from the guest (busybox wget, 20): {:.1} ms each",
            secs * 1000.0 / 20.0
        ),
        None => println!("  metadata: not measured ({})", imds.trim()),
    }

    for id in &ids {
        b.run(&["instance", "terminate", id]);
    }
}
