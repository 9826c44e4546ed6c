//! The VMM process: one VM per process, its console on stdin/stdout, and a
//! control interface on Unix sockets.
//!
//! The wire format follows QMP so the host's supervisor speaks to QEMU and
//! to drydock's VMM with one client: the server greets with
//! `{"QMP": {...}}`, each command is a JSON line `{"execute": NAME,
//! "arguments": {...}}` answered by `{"return": ...}` or `{"error":
//! {"class": ..., "desc": ...}}`, and events arrive in between as
//! `{"event": NAME, "data": {...}}`.
//!
//! Commands: `qmp_capabilities`, `status`, `pause`, `resume`, `stop`,
//! `reboot`, `send-break`, `attach-disk {path, serial, read_only}`,
//! `detach-disk {serial}`. Events: `BOOT {number, cause}`, `RESET {cause}`
//! (a boot after the first), `SHUTDOWN {guest, reason}` (the VM ended).
//!
//! Both sockets are 0600 and accept only this process's account and root
//! (the VMM has no sharing group: only its supervisor drives it); another
//! peer gets one QMP error line and is disconnected. `attach-disk` takes
//! only a regular file of this account directly in the spec's
//! `volumes_dir` (the host store's volumes), opened without following a
//! symbolic link.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::{Machine, MachineConfig, MachineDisk, MachineEnd, MachineEvent, MachineHandle};
use crate::backend::VmSpec;

/// Hot-plug slots every VM gets.
pub const HOTPLUG_SLOTS: u32 = 4;

/// Sessions served at once on each socket (the supervisor holds one on
/// each); more are refused.
pub const MAX_SESSIONS: usize = 8;

/// The longest command line read (one JSON message).
pub const MAX_LINE: usize = 64 * 1024;

/// How long a client may take to finish a line it has started.
const PARTIAL_LINE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// One line from a session: a whole line (without its newline), the end of
/// the connection, or an error (too long, stalled in the middle).
enum Line {
    Got(Vec<u8>),
    Eof,
}

/// Reads one line of at most [`MAX_LINE`] bytes. An idle client may wait
/// as long as it likes between lines; one that stops in the middle of a
/// line for [`PARTIAL_LINE_TIMEOUT`] is cut off.
fn next_line(reader: &mut BufReader<UnixStream>) -> std::io::Result<Line> {
    let mut buf = Vec::new();
    let mut partial_since: Option<std::time::Instant> = None;
    loop {
        let room = (MAX_LINE + 1).saturating_sub(buf.len()) as u64;
        match reader.by_ref().take(room).read_until(b'\n', &mut buf) {
            Ok(0) => return Ok(Line::Eof),
            Ok(_) if buf.ends_with(b"\n") => {
                buf.pop();
                return Ok(Line::Got(buf));
            }
            Ok(_) if buf.len() > MAX_LINE => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("a command longer than {MAX_LINE} bytes"),
                ))
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if buf.is_empty() {
                    continue;
                }
                let since = *partial_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() >= PARTIAL_LINE_TIMEOUT {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "a command line left unfinished",
                    ));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The machine a [`VmSpec`] describes.
pub fn machine_config(spec: &VmSpec) -> Result<MachineConfig, String> {
    Ok(MachineConfig {
        vcpus: u8::try_from(spec.vcpus).map_err(|_| format!("{} vCPUs is too many", spec.vcpus))?,
        memory_mib: spec.memory_mib,
        kernel: spec.kernel.clone(),
        initrd: Some(spec.initramfs.clone()),
        cmdline: spec.cmdline.clone(),
        disks: spec
            .disks
            .iter()
            .map(|d| MachineDisk {
                path: d.path.clone(),
                serial: d.serial.clone(),
                read_only: d.read_only,
            })
            .collect(),
        hotplug_slots: HOTPLUG_SLOTS,
        generation: spec.generation,
        virtio_mmio_cmdline: spec.virtio_mmio_cmdline,
        seccomp: seccomp_wanted(std::env::var("DRYDOCK_VMM_SECCOMP").ok().as_deref()),
        test_hook_forbidden_syscall_in_vcpu: std::env::var(
            "DRYDOCK_VMM_TEST_HOOK_FORBIDDEN_SYSCALL",
        )
        .is_ok_and(|v| v == "1"),
    })
}

/// Seccomp is on unless `DRYDOCK_VMM_SECCOMP` says off (`0`, `off`,
/// `false`, `no`): an operator's escape hatch while a filter misses a call.
fn seccomp_wanted(env: Option<&str>) -> bool {
    !matches!(
        env.map(|v| v.trim().to_ascii_lowercase()).as_deref(),
        Some("0" | "off" | "false" | "no")
    )
}

fn event_json(e: &MachineEvent) -> Vec<Value> {
    match e {
        MachineEvent::Boot { number, cause } => {
            let mut v = vec![json!({"event": "BOOT", "data": {"number": number, "cause": cause}})];
            if *number > 1 {
                v.push(json!({"event": "RESET", "data": {"cause": cause}}));
            }
            v
        }
        MachineEvent::End { end } => {
            let (guest, reason) = match end {
                MachineEnd::GuestPowerOff => (true, "guest powered off".to_string()),
                MachineEnd::Stopped => (false, "stopped".to_string()),
                MachineEnd::InternalError { detail } => (false, detail.clone()),
            };
            vec![json!({"event": "SHUTDOWN", "data": {"guest": guest, "reason": reason}})]
        }
    }
}

/// Opens a disk for `attach-disk`: a regular file owned by this process's
/// account, directly in `volumes_dir`, opened without following a
/// symbolic link (the file opened is the one checked).
pub fn open_hotplug_disk(volumes_dir: Option<&Path>, disk: &MachineDisk) -> Result<File, String> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let refused = |why: String| format!("attach-disk refused: {why}");
    let dir = volumes_dir.ok_or_else(|| {
        refused("this VM has no volumes directory (`volumes_dir` in its spec)".into())
    })?;
    let dir = dir.canonicalize().map_err(|e| {
        refused(format!(
            "cannot resolve the volumes directory {}: {e}",
            dir.display()
        ))
    })?;
    let outside = || {
        refused(format!(
            "{} is not a volume: only files directly in {} can be attached",
            disk.path.display(),
            dir.display()
        ))
    };
    let name = disk.path.file_name().ok_or_else(outside)?;
    let parent = disk
        .path
        .parent()
        .filter(|p| disk.path.is_absolute() && !p.as_os_str().is_empty())
        .ok_or_else(outside)?;
    if parent.canonicalize().ok().as_deref() != Some(dir.as_path()) {
        return Err(outside());
    }
    let path = dir.join(name);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(!disk.read_only)
        // No symbolic link, and no blocking on a FIFO put in its place
        // (O_NONBLOCK has no effect on a regular file's reads and writes).
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => refused(format!(
                "{} is a symbolic link; volumes are regular files",
                path.display()
            )),
            _ => refused(format!("cannot open {}: {e}", path.display())),
        })?;
    let meta = file
        .metadata()
        .map_err(|e| refused(format!("cannot stat {}: {e}", path.display())))?;
    if !meta.file_type().is_file() {
        return Err(refused(format!("{} is not a regular file", path.display())));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(refused(format!(
            "{} belongs to uid {}, not to this VMM's account (uid {me})",
            path.display(),
            meta.uid()
        )));
    }
    Ok(file)
}

/// What the control sockets act on.
struct Control {
    h: Arc<MachineHandle>,
    volumes_dir: Option<PathBuf>,
}

fn execute(c: &Control, cmd: &str, args: &Value) -> Result<Value, String> {
    let h = &c.h;
    match cmd {
        "qmp_capabilities" => Ok(json!({})),
        "status" => serde_json::to_value(h.status()).map_err(|e| e.to_string()),
        "pause" => h.pause().map(|_| json!({})),
        "resume" => {
            h.resume();
            Ok(json!({}))
        }
        "stop" => {
            h.stop();
            Ok(json!({}))
        }
        "reboot" => {
            h.reboot();
            Ok(json!({}))
        }
        "send-break" => h.send_break().map(|_| json!({})),
        "attach-disk" => {
            let disk: MachineDisk = serde_json::from_value(args.clone())
                .map_err(|e| format!("attach-disk needs path, serial, read_only: {e}"))?;
            let file = open_hotplug_disk(c.volumes_dir.as_deref(), &disk).inspect_err(|e| {
                tracing::warn!("{e}");
            })?;
            h.attach_disk(&disk, file).map(|slot| json!({ "slot": slot }))
        }
        "detach-disk" => {
            let serial = args["serial"]
                .as_str()
                .ok_or("detach-disk needs a serial")?;
            let d = h.detach_disk(serial)?;
            serde_json::to_value(d).map_err(|e| e.to_string())
        }
        other => Err(format!(
            "unknown command `{other}`; known: status, pause, resume, stop, reboot, send-break, attach-disk, detach-disk"
        )),
    }
}

fn session(c: Arc<Control>, stream: UnixStream) {
    let refused = |why: &str| json!({"error": {"class": "GenericError", "desc": why}}).to_string();
    if crate::private::admit("vmm control", &stream, refused).is_none() {
        return;
    }
    let h = &c.h;
    let writer = Arc::new(Mutex::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    }));
    let send = |w: &Arc<Mutex<UnixStream>>, v: &Value| {
        let mut w = w.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        w.write_all(format!("{v}\n").as_bytes()).is_ok()
    };
    let greeting =
        json!({"QMP": {"version": {"drydock": env!("CARGO_PKG_VERSION")}, "capabilities": []}});
    if !send(&writer, &greeting) {
        return;
    }
    {
        let events = h.subscribe();
        let w = writer.clone();
        std::thread::spawn(move || {
            for e in events {
                for v in event_json(&e) {
                    if !send(&w, &v) {
                        return;
                    }
                }
            }
        });
    }
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
    let mut reader = BufReader::new(stream);
    loop {
        let line = match next_line(&mut reader) {
            Ok(Line::Got(line)) => line,
            Ok(Line::Eof) => return,
            Err(e) => {
                tracing::warn!("control session ended: {e}");
                let _ = send(
                    &writer,
                    &json!({"error": {"class": "GenericError", "desc": e.to_string()}}),
                );
                return;
            }
        };
        let line = String::from_utf8_lossy(&line);
        if line.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<Value>(&line) {
            Ok(msg) => {
                let cmd = msg["execute"].as_str().unwrap_or_default().to_string();
                match execute(&c, &cmd, &msg["arguments"]) {
                    Ok(v) => json!({ "return": v }),
                    Err(desc) => json!({"error": {"class": "GenericError", "desc": desc}}),
                }
            }
            Err(e) => json!({"error": {"class": "GenericError", "desc": format!("not JSON: {e}")}}),
        };
        if !send(&writer, &reply) {
            return;
        }
    }
}

fn serve(c: Arc<Control>, path: &Path) -> std::io::Result<()> {
    let listener = crate::private::listen(path, 0o600)?;
    let sessions = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            use std::sync::atomic::Ordering;
            let _ = stream.set_write_timeout(Some(std::time::Duration::from_secs(10)));
            if sessions.fetch_add(1, Ordering::SeqCst) >= MAX_SESSIONS {
                sessions.fetch_sub(1, Ordering::SeqCst);
                let refused = json!({"error": {"class": "GenericError",
                    "desc": format!("too many sessions ({MAX_SESSIONS})")}});
                let _ = (&stream).write_all(format!("{refused}\n").as_bytes());
                continue;
            }
            let c = c.clone();
            let sessions = sessions.clone();
            std::thread::spawn(move || {
                session(c, stream);
                sessions.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Ok(())
}

/// Runs the VM `spec` describes in this process until it ends: console on
/// stdin/stdout, control on the spec's sockets. Returns how it ended.
pub fn run_vmm_process(spec: &VmSpec) -> Result<MachineEnd, String> {
    let config = machine_config(spec)?;
    let filter = config.seccomp;
    let mut machine =
        Machine::new(config, Box::new(std::io::stdout())).map_err(|e| e.to_string())?;
    let h = machine.handle();
    let control = Arc::new(Control {
        h: h.clone(),
        volumes_dir: spec.volumes_dir.clone(),
    });
    for socket in [&spec.control_socket, &spec.event_socket] {
        serve(control.clone(), socket)
            .map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;
    }
    {
        let h = h.clone();
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 1024];
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 {
                    break;
                }
                h.console_input(&buf[..n]);
            }
        });
    }
    // No core dumps: a VMM killed by its filter (SIGSYS) or a crash must
    // not write the guest's memory to disk.
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads the rlimit we pass and changes only this
    // process's limit.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) } != 0 {
        tracing::warn!("RLIMIT_CORE: {}", std::io::Error::last_os_error());
    }
    if filter {
        // Every thread started so far (control, events, console input) and
        // every later one: the VMM filter. vCPU threads add their own.
        super::seccomp::install(super::seccomp::ThreadKind::Vmm)?;
        tracing::info!("seccomp filters on (vmm, vcpu)");
    } else {
        tracing::warn!("seccomp filters off (DRYDOCK_VMM_SECCOMP)");
    }
    let end = machine.run().map_err(|e| e.to_string());
    // Let event subscribers see the end before the sockets go away.
    std::thread::sleep(std::time::Duration::from_millis(50));
    for socket in [&spec.control_socket, &spec.event_socket] {
        let _ = std::fs::remove_file(socket);
    }
    end
}
