//! drydock's VMM process (`drydock-vmm --spec`) on this machine's /dev/kvm,
//! with a tiny 64-bit "kernel" assembled here instead of Linux (which this
//! machine's software-nested KVM cannot run; the nested lab boots Linux):
//! the 64-bit boot protocol entry, serial output through the machine's
//! UART, guest power-off through the ACPI sleep register, and the control
//! socket (status, pause, resume, reboot, stop) with its events.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::os::fd::AsFd;

use drydock_host::backend::qmp::QmpClient;
use drydock_vmm::machine::control::open_volume_for_attach;
use serde_json::json;

use common::text;

const LOAD: u64 = 0x10_0000;

/// An ELF64 executable with `code` loaded and entered at 1 MiB.
fn tiny_elf(code: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 0x1000];
    f[..16].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let put =
        |f: &mut Vec<u8>, at: usize, bytes: &[u8]| f[at..at + bytes.len()].copy_from_slice(bytes);
    put(&mut f, 16, &2u16.to_le_bytes()); // ET_EXEC
    put(&mut f, 18, &0x3eu16.to_le_bytes()); // x86-64
    put(&mut f, 20, &1u32.to_le_bytes());
    put(&mut f, 24, &LOAD.to_le_bytes()); // entry
    put(&mut f, 32, &64u64.to_le_bytes()); // program headers
    put(&mut f, 52, &64u16.to_le_bytes());
    put(&mut f, 54, &56u16.to_le_bytes());
    put(&mut f, 56, &1u16.to_le_bytes());
    // PT_LOAD: file offset 0x1000 -> physical 1 MiB.
    let ph = 64;
    put(&mut f, ph, &1u32.to_le_bytes());
    put(&mut f, ph + 4, &5u32.to_le_bytes());
    put(&mut f, ph + 8, &0x1000u64.to_le_bytes());
    put(&mut f, ph + 16, &LOAD.to_le_bytes());
    put(&mut f, ph + 24, &LOAD.to_le_bytes());
    put(&mut f, ph + 32, &(code.len() as u64).to_le_bytes());
    put(&mut f, ph + 40, &(code.len() as u64).to_le_bytes());
    put(&mut f, ph + 48, &0x1000u64.to_le_bytes());
    f.extend_from_slice(code);
    f
}

/// `mov dx, port; mov al, byte; out dx, al` for each byte.
fn outb(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut c = vec![0x66, 0xba];
    c.extend_from_slice(&port.to_le_bytes());
    for b in bytes {
        c.extend_from_slice(&[0xb0, *b, 0xee]);
    }
    c
}

fn spec(dir: &Path, code: &[u8]) -> std::path::PathBuf {
    spec_with(dir, code, json!({}))
}

/// [`spec`] with more fields (`extra` overrides).
fn spec_with(dir: &Path, code: &[u8], extra: serde_json::Value) -> std::path::PathBuf {
    std::fs::write(dir.join("kernel"), tiny_elf(code)).unwrap();
    std::fs::write(dir.join("initrd"), vec![0u8; 4096]).unwrap();
    std::fs::write(dir.join("disk.raw"), vec![0u8; 1 << 20]).unwrap();
    let mut spec = json!({
        "name": "tiny", "vcpus": 1, "memory_mib": 64, "generation": "mmio", "accel": "kvm",
        "kernel": dir.join("kernel"), "initramfs": dir.join("initrd"), "cmdline": "console=ttyS0",
        "disks": [{"path": dir.join("disk.raw"), "serial": "vol-tiny", "read_only": false}],
        "control_socket": dir.join("control.sock"), "event_socket": dir.join("events.sock"),
        "volumes_dir": dir.join("volumes"),
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    std::fs::create_dir_all(dir.join("volumes")).unwrap();
    let path = dir.join("spec.json");
    std::fs::write(&path, spec.to_string()).unwrap();
    path
}

fn vmm(spec: &Path) -> std::process::Child {
    Command::new(common::vmm_bin())
        .arg("--spec")
        .arg(spec)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_tiny_kernel_prints_on_the_serial_console_and_powers_off_through_acpi() {
    let dir = tempfile::tempdir().unwrap();
    // Long mode from the first instruction: write to COM1, then S5 | SLP_EN
    // to the ACPI sleep control register.
    let mut code = outb(0x3f8, b"tiny kernel up\n");
    code.extend(outb(0x3c0, &[(5 << 2) | 0x20]));
    code.push(0xf4);
    let out = vmm(&spec(dir.path(), &code)).wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "tiny kernel up\n");
    assert!(
        text(&out.stderr).contains(r#"{"kind":"guest_power_off"}"#),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_control_socket_reports_pauses_reboots_and_stops_the_vm() {
    let dir = tempfile::tempdir().unwrap();
    // Print a line, then halt with interrupts off: the vCPU sleeps in KVM
    // until the VMM kicks it.
    let mut code = outb(0x3f8, b"boot\n");
    code.extend_from_slice(&[0xfa, 0xf4, 0xeb, 0xfd]); // cli; hlt; jmp hlt
    let mut child = vmm(&spec(dir.path(), &code));
    let console = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    {
        let mut out = child.stdout.take().unwrap();
        let console = console.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                console
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
    }
    let console_has = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !console.lock().unwrap().contains(want) {
            assert!(Instant::now() < deadline, "console never showed {want:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let mut control = QmpClient::connect(&dir.path().join("control.sock"), Duration::from_secs(20))
        .expect("the VMM opens its control socket");
    let mut events = QmpClient::connect(&dir.path().join("events.sock"), Duration::from_secs(5))
        .expect("events socket");

    let wait_status = |c: &mut QmpClient, pred: &dyn Fn(&serde_json::Value) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = c.execute("status", json!({})).unwrap();
            if pred(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "status never matched: {s}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let s = wait_status(&mut control, &|s| {
        s["first_entry_unix_us"].as_u64() > Some(0)
    });
    assert_eq!(s["boots"], 1);
    assert_eq!(s["vcpus"], 1);
    assert_eq!(s["disks"][0]["serial"], "vol-tiny");
    assert_eq!(
        s["disks"].as_array().unwrap().len(),
        5,
        "1 disk + 4 hot-plug slots"
    );

    control.execute("pause", json!({})).unwrap();
    assert_eq!(
        control.execute("status", json!({})).unwrap()["state"],
        "paused"
    );
    control.execute("resume", json!({})).unwrap();
    assert_eq!(
        control.execute("status", json!({})).unwrap()["state"],
        "running"
    );

    // Hot attach into an empty slot, then detach.
    let hot = dir.path().join("volumes").join("hot.raw");
    std::fs::write(&hot, vec![0u8; 1 << 20]).unwrap();
    // The volume comes open with the command: the VMM opens nothing.
    let file = open_volume_for_attach(&hot, false).unwrap();
    let slot = control
        .execute_with_fd(
            "attach-disk",
            json!({"path": hot, "serial": "vol-hot", "read_only": false}),
            file.as_fd(),
        )
        .unwrap();
    drop(file);
    assert_eq!(slot["slot"], 1);
    let s = control.execute("status", json!({})).unwrap();
    assert_eq!(s["disks"][1]["capacity_bytes"], 1 << 20);
    let d = control
        .execute("detach-disk", json!({"serial": "vol-hot"}))
        .unwrap();
    assert_eq!(d["was_mounted"], false);
    let err = control
        .execute("detach-disk", json!({"serial": "vol-hot"}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no disk with serial vol-hot"), "{err}");

    console_has("boot\n");
    control.execute("reboot", json!({})).unwrap();
    wait_status(&mut control, &|s| s["boots"] == 2);
    console_has("boot\nboot\n");
    control.execute("stop", json!({})).unwrap();

    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        *console.lock().unwrap(),
        "boot\nboot\n",
        "one line per boot"
    );
    assert!(text(&out.stderr).contains(r#"{"kind":"stopped"}"#));

    // Events: the reboot, then the end.
    let mut seen = Vec::new();
    while let Ok(m) = events.read_message() {
        seen.push(m["event"].as_str().unwrap_or_default().to_string());
        if m["event"] == "SHUTDOWN" {
            assert_eq!(m["data"]["guest"], false);
            break;
        }
    }
    assert!(seen.contains(&"RESET".to_string()), "{seen:?}");
    assert_eq!(seen.last().map(String::as_str), Some("SHUTDOWN"));
}

#[test]
fn a_spec_that_cannot_be_read_is_a_usage_error() {
    let out = Command::new(common::vmm_bin())
        .args(["--spec", "/nonexistent/spec.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("cannot open the VM spec /nonexistent/spec.json"),
        "{}",
        text(&out.stderr)
    );
    // No spec, an unknown flag: usage errors naming the fix.
    for args in [&[][..], &["--spce", "x"][..]] {
        let out = Command::new(common::vmm_bin()).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            text(&out.stderr).contains("drydock-vmm"),
            "{}",
            text(&out.stderr)
        );
    }
    // The drydock CLI no longer runs VMs itself.
    let out = Command::new(common::bin())
        .args(["vmm", "--spec", "/nonexistent/spec.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn host_info_names_this_machines_kvm_and_the_backend_each_generation_gets() {
    let info = |backend: Option<&str>| {
        let mut cmd = Command::new(common::bin());
        cmd.args(["--json", "host-info"]);
        match backend {
            Some(b) => cmd.env("DRYDOCK_BACKEND", b),
            None => cmd.env_remove("DRYDOCK_BACKEND"),
        };
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let probed = info(None);
    let kvm = probed["kvm"].as_str().unwrap().to_string();
    assert!(["hardware", "software_nested", "unavailable"].contains(&kvm.as_str()));
    // drydock's VMM only where KVM is hardware-backed, for both generations.
    let expected = if kvm == "hardware" {
        "drydock-kvm"
    } else {
        "qemu-tcg"
    };
    assert_eq!(probed["backend_m1"], expected, "{probed}");
    assert_eq!(probed["backend_n2"], expected, "{probed}");

    let forced = info(Some("drydock"));
    assert_eq!(forced["backend_m1"], "drydock-kvm");
    assert_eq!(forced["backend_n2"], "drydock-kvm");
    let qemu = info(Some("qemu"));
    assert!(qemu["backend_n2"].as_str().unwrap().starts_with("qemu-"));
    let bogus = info(Some("firecracker"));
    assert!(bogus["backend_m1"]
        .as_str()
        .unwrap()
        .contains("DRYDOCK_BACKEND=firecracker is not a backend; use drydock or qemu"));
}

#[test]
fn the_control_socket_refuses_other_accounts_and_attaches_only_volumes() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mut code = outb(0x3f8, b"boot\n");
    code.extend_from_slice(&[0xfa, 0xf4, 0xeb, 0xfd]); // cli; hlt; jmp hlt
    let child = vmm(&spec(dir.path(), &code));
    let socket = dir.path().join("control.sock");
    let mut control = QmpClient::connect(&socket, Duration::from_secs(20))
        .expect("the VMM opens its control socket");
    for s in ["control.sock", "events.sock"] {
        let mode = std::fs::metadata(dir.path().join(s))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{s} is private");
    }

    // Another account that reaches the socket (modes loosened by hand) is
    // refused by its credentials, in QMP's framing, and the VM goes on.
    let mallory = common::os_users::os_user("ddmallory", &[]);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let reply = common::os_users::connect_as(&mallory, &socket, r#"{"execute": "stop"}"#);
    let v: serde_json::Value =
        serde_json::from_str(&reply).unwrap_or_else(|e| panic!("not one QMP line ({e}): {reply}"));
    let desc = v["error"]["desc"].as_str().unwrap_or_default();
    // (By uid: the VMM resolves no account names, that would open files.)
    assert!(
        desc.contains(&format!("uid {} may not use this socket", mallory.uid)),
        "{reply}"
    );
    assert_eq!(
        control.execute("status", json!({})).unwrap()["state"],
        "running"
    );

    // attach-disk takes the volume open (passed with the command), and
    // only a regular file of this account that is the entry the path names
    // directly in the volumes directory.
    let volumes = dir.path().join("volumes");
    let outside = dir.path().join("secret.raw");
    std::fs::write(&outside, vec![0u8; 1 << 20]).unwrap();
    let attach_fd = |c: &mut QmpClient, path: &Path, file: &std::fs::File| {
        c.execute_with_fd(
            "attach-disk",
            json!({"path": path, "serial": "vol-x", "read_only": false}),
            file.as_fd(),
        )
        .map(|v| v.to_string())
        .map_err(|e| e.to_string())
    };
    // Opened as a client would that follows links and opens anything.
    let open_any = |path: &Path| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .or_else(|_| std::fs::File::open(path))
            .unwrap()
    };
    let attach = |c: &mut QmpClient, path: &Path| attach_fd(c, path, &open_any(path));
    use std::os::unix::fs::OpenOptionsExt;
    let err = attach(&mut control, &outside).unwrap_err();
    assert!(
        err.contains("attach-disk refused") && err.contains("is not a volume"),
        "{err}"
    );
    let err = attach_fd(
        &mut control,
        &volumes.join("../secret.raw"),
        &open_any(&outside),
    )
    .unwrap_err();
    assert!(err.contains("is not a volume"), "{err}");
    let err = attach(&mut control, Path::new("/etc/shadow")).unwrap_err();
    assert!(err.contains("is not a volume"), "{err}");
    let err = attach_fd(&mut control, Path::new("relative.raw"), &open_any(&outside)).unwrap_err();
    assert!(err.contains("is not a volume"), "{err}");
    std::os::unix::fs::symlink(&outside, volumes.join("link.raw")).unwrap();
    let err = attach(&mut control, &volumes.join("link.raw")).unwrap_err();
    assert!(err.contains("is a symbolic link"), "{err}");
    let fifo = volumes.join("fifo.raw");
    let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    let err = attach(&mut control, &fifo).unwrap_err();
    assert!(err.contains("is not a regular file"), "{err}");
    std::fs::create_dir(volumes.join("dir.raw")).unwrap();
    let err = attach(&mut control, &volumes.join("dir.raw")).unwrap_err();
    assert!(err.contains("attach-disk refused"), "{err}");
    let theirs = volumes.join("theirs.raw");
    std::fs::write(&theirs, vec![0u8; 1 << 20]).unwrap();
    std::os::unix::fs::chown(&theirs, Some(mallory.uid), None).unwrap();
    let err = attach(&mut control, &theirs).unwrap_err();
    assert!(
        err.contains(&format!("belongs to uid {}", mallory.uid)),
        "{err}"
    );
    let ok = volumes.join("vol-ok.raw");
    std::fs::write(&ok, vec![0u8; 1 << 20]).unwrap();
    // A volume's name with another file's descriptor.
    let err = attach_fd(&mut control, &ok, &open_any(&outside)).unwrap_err();
    assert!(err.contains("the descriptor passed is not"), "{err}");
    // Read-only for a writable disk.
    let err = attach_fd(&mut control, &ok, &std::fs::File::open(&ok).unwrap()).unwrap_err();
    assert!(err.contains("passed open read-only"), "{err}");
    // No descriptor at all: the VMM does not open the path itself.
    let err = control
        .execute(
            "attach-disk",
            json!({"path": ok, "serial": "vol-x", "read_only": false}),
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("was not passed open with the command"),
        "{err}"
    );
    let slot = attach_fd(
        &mut control,
        &ok,
        &open_volume_for_attach(&ok, false).unwrap(),
    )
    .unwrap();
    assert!(slot.contains("\"slot\":1"), "{slot}");
    let s = control.execute("status", json!({})).unwrap();
    assert_eq!(s["disks"][1]["capacity_bytes"], 1 << 20, "{s}");
    assert!(
        s["disks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["path"] != json!(outside)),
        "{s}"
    );

    control.execute("stop", json!({})).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("connection refused"),
        "the refusal is logged: {}",
        text(&out.stderr)
    );
}

/// The `Seccomp:`, `Seccomp_filters:` and `NoNewPrivs:` lines of each
/// thread of `pid`, by thread name.
fn thread_security(pid: u32) -> Vec<(String, String, String, String)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(task.join("status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        out.push((
            comm.trim().to_string(),
            field("Seccomp:"),
            field("Seccomp_filters:"),
            field("NoNewPrivs:"),
        ));
    }
    out
}

/// Waits for `child` to end, at most `secs` seconds (then kills it).
fn wait_for(child: &mut std::process::Child, secs: u64) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the VMM did not end within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Seccomp (issue 11): every thread of the VMM runs under its filter with
/// no new privileges (vCPU threads under a second, narrower one); the
/// spec's `seccomp` field turns it off (the host writes it; the operator's
/// `DRYDOCK_VMM_SECCOMP=off` reaches the VMM through it, or as the default
/// of a spec without the field, never against what a spec says); and a system call outside the vCPU filter,
/// made from a vCPU thread (`DRYDOCK_VMM_TEST_HOOK_FORBIDDEN_SYSCALL`, a
/// test-only hook), kills the whole VMM with SIGSYS, the exit status the
/// supervisor records as the instance's end ("VMM exited unexpectedly
/// (signal: 31 (SIGSYS))").
#[test]
fn the_vmm_runs_under_seccomp_and_a_forbidden_syscall_from_a_vcpu_kills_it() {
    use std::os::unix::process::ExitStatusExt;
    let mut code = outb(0x3f8, b"boot\n");
    code.extend_from_slice(&[0xfa, 0xf4, 0xeb, 0xfd]); // cli; hlt; jmp hlt
    let run_spec = |extra: serde_json::Value, env: &[(&str, &str)]| {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec_with(dir.path(), &code, extra);
        let child = Command::new(common::vmm_bin())
            .arg("--spec")
            .arg(&spec)
            .envs(env.iter().copied())
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        (dir, child)
    };
    let run = |env: &[(&str, &str)]| run_spec(json!({}), env);
    // Running, with its vCPU thread started and named (the state turns
    // "running" as the threads are being spawned).
    let running = |dir: &Path, pid: u32| {
        let mut control = QmpClient::connect(&dir.join("control.sock"), Duration::from_secs(20))
            .expect("the VMM opens its control socket");
        let deadline = Instant::now() + Duration::from_secs(20);
        while control.execute("status", json!({})).unwrap()["state"] != "running"
            || !thread_security(pid).iter().any(|t| t.0 == "vcpu0")
        {
            assert!(
                Instant::now() < deadline,
                "the VM never ran: {:?}",
                thread_security(pid)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        control
    };

    // On by default.
    let (dir, mut child) = run(&[]);
    let mut control = running(dir.path(), child.id());
    let threads = thread_security(child.id());
    assert!(
        threads.iter().any(|t| t.0 == "vcpu0"),
        "a vCPU thread: {threads:?}"
    );
    for (name, mode, filters, nnp) in &threads {
        assert_eq!(
            (mode.as_str(), nnp.as_str()),
            ("2", "1"),
            "{name}: {threads:?}"
        );
        // (KVM's own worker threads, e.g. kvm-nx-lpage-recovery, inherit
        // whichever filters the thread that created them had.)
        let want = match name.as_str() {
            n if n.starts_with("vcpu") => "2",
            "drydock-vmm" => "1",
            _ => continue,
        };
        assert_eq!(filters, want, "{name}: {threads:?}");
    }
    control.execute("stop", json!({})).unwrap();
    let status = wait_for(&mut child, 20);
    assert_eq!(status.code(), Some(0));

    // Off when the spec says so: no filter on any thread, and no new
    // privileges not asked for either.
    let (dir, mut child) = run_spec(json!({"seccomp": false}), &[]);
    let mut control = running(dir.path(), child.id());
    let threads = thread_security(child.id());
    assert!(threads.iter().any(|t| t.0 == "vcpu0"), "{threads:?}");
    assert!(
        threads
            .iter()
            .all(|t| (t.1.as_str(), t.2.as_str()) == ("0", "0")),
        "{threads:?}"
    );
    control.execute("stop", json!({})).unwrap();
    assert_eq!(wait_for(&mut child, 20).code(), Some(0));

    // The operator's switch is the default of a spec that does not say…
    let (dir, mut child) = run(&[("DRYDOCK_VMM_SECCOMP", "off")]);
    let mut control = running(dir.path(), child.id());
    let threads = thread_security(child.id());
    assert!(threads.iter().all(|t| t.1 == "0"), "{threads:?}");
    control.execute("stop", json!({})).unwrap();
    assert_eq!(wait_for(&mut child, 20).code(), Some(0));

    // …but never overrides a spec that says on.
    let (dir, mut child) = run_spec(json!({"seccomp": true}), &[("DRYDOCK_VMM_SECCOMP", "off")]);
    let mut control = running(dir.path(), child.id());
    let threads = thread_security(child.id());
    assert!(
        threads
            .iter()
            .filter(|t| t.0 == "drydock-vmm" || t.0.starts_with("vcpu"))
            .all(|t| t.1 == "2"),
        "{threads:?}"
    );
    control.execute("stop", json!({})).unwrap();
    assert_eq!(wait_for(&mut child, 20).code(), Some(0));

    // Opening a file by path from the main thread once the guest runs
    // (`DRYDOCK_VMM_TEST_HOOK_FORBIDDEN_SYSCALL=open`: the kernel file the
    // VMM itself booted from): without the filter it works…
    let hook = ("DRYDOCK_VMM_TEST_HOOK_FORBIDDEN_SYSCALL", "open");
    let (dir, mut child) = run_spec(json!({"seccomp": false}), &[hook]);
    let mut control = running(dir.path(), child.id());
    control.execute("stop", json!({})).unwrap();
    assert_eq!(wait_for(&mut child, 20).code(), Some(0));
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        stderr.contains("test hook: opened") && stderr.contains("after boot (no filter)"),
        "{stderr}"
    );
    // …and under it the VMM dies of SIGSYS (the guest ran first).
    let (_dir, mut child) = run(&[hook]);
    let status = wait_for(&mut child, 20);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.signal(), Some(libc::SIGSYS), "{status}: {stderr}");
    assert!(!stderr.contains("test hook: open"), "{stderr}");
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out, "boot\n", "the guest ran before the open");

    // A forbidden call from vCPU 0 ends the VMM at once, by SIGSYS.
    let (_dir, mut child) = run(&[("DRYDOCK_VMM_TEST_HOOK_FORBIDDEN_SYSCALL", "1")]);
    let status = wait_for(&mut child, 20);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.signal(), Some(libc::SIGSYS), "{status}: {stderr}");
    assert!(status.to_string().contains("SIGSYS"), "{status}");
}

/// The process that runs an untrusted guest links none of the runbook
/// engine, SQLite, the async runtime, HTTP or SSH: their symbols are not
/// in the `drydock-vmm` binary (the `drydock` binary, which has them all,
/// shows the check finds them).
#[test]
fn the_vmm_binary_links_no_runbook_engine_database_async_runtime_http_or_ssh() {
    // Legacy Rust mangling names each symbol's crate: `_ZN` + length + name.
    let mangled = |krate: &str| format!("_ZN{}{krate}", krate.len()).into_bytes();
    let has = |bytes: &[u8], krate: &str| {
        let needle = mangled(krate);
        bytes.windows(needle.len()).any(|w| w == needle.as_slice())
    };
    let vmm = std::fs::read(common::vmm_bin()).unwrap();
    let cli = std::fs::read(common::bin()).unwrap();
    assert!(has(&vmm, "drydock_vmm") && has(&vmm, "kvm_ioctls"));
    for krate in [
        "rhai",
        "rusqlite",
        "tokio",
        "axum",
        "hyper",
        "ssh2",
        "drydock_runtime",
        "drydock_host",
    ] {
        assert!(has(&cli, krate), "the check cannot see {krate} in drydock");
        assert!(!has(&vmm, krate), "drydock-vmm links {krate}");
    }
}
