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
//! peer gets one QMP error line (naming it by uid: the VMM resolves no
//! account names, which would open `/etc/passwd` and NSS modules) and is
//! disconnected.
//!
//! The VMM opens no file by path once its seccomp filter is on, so
//! `attach-disk` comes with the volume already open: its descriptor is
//! passed with the command line (`SCM_RIGHTS`, as QEMU's `getfd`; see
//! [`open_volume_for_attach`] and `QmpClient::execute_with_fd`). It is
//! taken only if it is a regular file of this account that is the entry
//! `path` names directly in the spec's `volumes_dir` (the host store's
//! volumes), that entry not a symbolic link, and open for writing unless
//! `read_only`.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use serde_json::{json, Value};

use super::{
    Machine, MachineConfig, MachineDisk, MachineEnd, MachineEvent, MachineHandle, MachineNic,
};
use crate::spec::VmSpec;

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
fn next_line<R: Read>(reader: &mut BufReader<R>) -> std::io::Result<Line> {
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
    let nics = spec
        .nics
        .iter()
        .enumerate()
        .map(|(i, n)| {
            Ok(MachineNic {
                mac: parse_mac(&n.mac).map_err(|e| format!("network interface {i}: {e}"))?,
                tap_fd: n.tap_fd,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
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
        nics,
        generation: spec.generation,
        virtio_mmio_cmdline: spec.virtio_mmio_cmdline,
        // The host's choice, in the spec (`DRYDOCK_VMM_SECCOMP` reaches
        // this process only through it, or as the default of a spec that
        // does not say).
        seccomp: spec.seccomp,
        test_hook_forbidden_syscall_in_vcpu: test_hook() == Some(TestHook::SyscallInVcpu),
        test_hook_open_after_boot: test_hook() == Some(TestHook::OpenAfterBoot),
    })
}

/// A MAC address written `02:00:0a:01:01:04`.
pub fn parse_mac(text: &str) -> Result<[u8; 6], String> {
    let bad =
        || format!("`{text}` is not a MAC address; write six hex bytes like 02:00:0a:01:01:04");
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for b in &mut mac {
        let p = parts.next().ok_or_else(bad)?;
        if p.len() != 2 {
            return Err(bad());
        }
        *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(mac)
}

/// TEST HOOKS ONLY, and only in a VMM built with the `test-hooks` feature
/// (the workspace's tests turn it on; a release build never reads the
/// variable): `DRYDOCK_VMM_TEST_HOOK_FORBIDDEN_SYSCALL=1` makes vCPU 0 call
/// what its filter forbids; `=open` makes the main thread open a file by
/// path once the guest runs.
#[derive(Debug, PartialEq, Eq)]
enum TestHook {
    SyscallInVcpu,
    OpenAfterBoot,
}

fn test_hook() -> Option<TestHook> {
    if !cfg!(feature = "test-hooks") {
        return None;
    }
    match std::env::var("DRYDOCK_VMM_TEST_HOOK_FORBIDDEN_SYSCALL").as_deref() {
        Ok("1") => Some(TestHook::SyscallInVcpu),
        Ok("open") => Some(TestHook::OpenAfterBoot),
        _ => None,
    }
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

/// The volumes directory of the spec, opened (as a path handle) before the
/// filter goes on, so that a disk passed to `attach-disk` can be checked
/// against the entry it claims to be without opening anything.
pub struct VolumesDir {
    path: PathBuf,
    dir: File,
}

impl VolumesDir {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            dir,
        })
    }

    /// lstat of `name` in the directory (`fstatat` with
    /// `AT_SYMLINK_NOFOLLOW`): no open, no link followed.
    fn entry(&self, name: &std::ffi::OsStr) -> std::io::Result<libc::stat> {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::CString::new(name.as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        // SAFETY: zeroed stat is a valid out-parameter.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: the directory descriptor is open for the life of `self`,
        // `name` is a NUL-terminated string and `st` is writable.
        let rc = unsafe {
            libc::fstatat(
                self.dir.as_raw_fd(),
                name.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(st)
    }
}

/// Opens a volume for `attach-disk` on the client's side (the supervisor,
/// or a test): readable, writable unless `read_only`, without following a
/// symbolic link and without blocking on a FIFO put in its place
/// (O_NONBLOCK has no effect on a regular file's reads and writes).
pub fn open_volume_for_attach(path: &Path, read_only: bool) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(!read_only)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
}

/// Checks a disk passed open for `attach-disk`: `file` must be the regular
/// file `disk.path` names directly in `volumes_dir` (that entry not a
/// symbolic link), belong to this process's account, and be open for
/// writing unless the disk is read-only.
pub fn check_hotplug_disk(
    volumes: Option<&VolumesDir>,
    disk: &MachineDisk,
    file: File,
) -> Result<File, String> {
    use std::os::unix::fs::MetadataExt;
    let refused = |why: String| format!("attach-disk refused: {why}");
    let volumes = volumes.ok_or_else(|| {
        refused("this VM has no volumes directory (`volumes_dir` in its spec)".into())
    })?;
    let path = &disk.path;
    let outside = || {
        refused(format!(
            "{} is not a volume: only files directly in {} can be attached",
            path.display(),
            volumes.path.display()
        ))
    };
    let name = path.file_name().ok_or_else(outside)?;
    let parent = path
        .parent()
        .filter(|p| path.is_absolute() && !p.as_os_str().is_empty())
        .ok_or_else(outside)?;
    // The directory named is the volumes directory (the same inode: a
    // path through a symbolic link to it is fine, `..` out of it is not).
    let dir = volumes
        .dir
        .metadata()
        .map_err(|e| refused(format!("the volumes directory: {e}")))?;
    match std::fs::metadata(parent) {
        Ok(p) if (p.dev(), p.ino()) == (dir.dev(), dir.ino()) => {}
        _ => return Err(outside()),
    }
    let entry = volumes
        .entry(name)
        .map_err(|e| refused(format!("cannot stat {}: {e}", path.display())))?;
    match entry.st_mode & libc::S_IFMT {
        libc::S_IFREG => {}
        libc::S_IFLNK => {
            return Err(refused(format!(
                "{} is a symbolic link; volumes are regular files",
                path.display()
            )))
        }
        _ => return Err(refused(format!("{} is not a regular file", path.display()))),
    }
    let meta = file
        .metadata()
        .map_err(|e| refused(format!("the descriptor passed for {}: {e}", path.display())))?;
    if !meta.file_type().is_file() {
        return Err(refused(format!("{} is not a regular file", path.display())));
    }
    if (meta.dev(), meta.ino()) != (entry.st_dev, entry.st_ino) {
        return Err(refused(format!(
            "the descriptor passed is not {}",
            path.display()
        )));
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
    // SAFETY: F_GETFL on a descriptor this function owns; no pointers.
    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    let mode = flags & libc::O_ACCMODE;
    let ok = match disk.read_only {
        true => mode == libc::O_RDONLY || mode == libc::O_RDWR,
        false => mode == libc::O_RDWR,
    };
    if flags < 0 || !ok {
        return Err(refused(format!(
            "{} was passed open {}; a {} disk needs it open for reading{}",
            path.display(),
            match mode {
                libc::O_RDONLY => "read-only",
                libc::O_WRONLY => "write-only",
                _ => "in an unknown mode",
            },
            if disk.read_only {
                "read-only"
            } else {
                "writable"
            },
            if disk.read_only { "" } else { " and writing" },
        )));
    }
    Ok(file)
}

/// Admits a peer of the control sockets: this process's account or root.
/// A refusal names the peer by uid (resolving a name would open files).
fn admit(stream: &UnixStream) -> bool {
    // SAFETY: getuid has no preconditions and cannot fail.
    let me = unsafe { libc::getuid() };
    let why = match drydock_sockets::peer_uid(stream.as_fd()) {
        Ok(uid) if uid == me || uid == 0 => return true,
        Ok(uid) => format!("uid {uid} may not use this socket: it belongs to uid {me}"),
        Err(e) => format!("cannot read the peer's credentials: {e}"),
    };
    tracing::warn!(socket = "vmm control", "connection refused: {why}");
    let line = json!({"error": {"class": "GenericError", "desc": why}}).to_string() + "\n";
    let mut s = stream;
    let _ = s.set_write_timeout(Some(std::time::Duration::from_secs(1)));
    let _ = s.write_all(line.as_bytes());
    let _ = stream.shutdown(std::net::Shutdown::Both);
    false
}

/// Descriptors a session keeps at most (received and not yet used).
const MAX_PASSED_FDS: usize = 2;

/// A session's socket read with `recvmsg`: the bytes, and the descriptors
/// passed with them (`SCM_RIGHTS`), in the order they came.
struct FdStream {
    stream: UnixStream,
    fds: VecDeque<File>,
}

impl Read for FdStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut fd = [-1; 1];
        let mut iov = [libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        }];
        // SAFETY: the iovec points at `buf`, writable for its length and
        // borrowed for this call; any bytes may be written to it.
        let (n, nfds) = unsafe { self.stream.recv_with_fds(&mut iov, &mut fd) }
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
        if nfds == 1 {
            // SAFETY: recvmsg just installed this descriptor in this
            // process; nothing else owns it.
            let file = unsafe { File::from_raw_fd(fd[0]) };
            if self.fds.len() < MAX_PASSED_FDS {
                self.fds.push_back(file);
            }
        }
        Ok(n)
    }
}

/// What the control sockets act on.
struct Control {
    h: Arc<MachineHandle>,
    volumes_dir: Option<VolumesDir>,
}

/// Runs one command; `fds` holds the descriptors passed with it.
fn execute(
    c: &Control,
    cmd: &str,
    args: &Value,
    fds: &mut VecDeque<File>,
) -> Result<Value, String> {
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
            let file = fds.pop_front().ok_or_else(|| {
                format!(
                    "attach-disk refused: {} was not passed open with the command (SCM_RIGHTS); the VMM opens no file by path",
                    disk.path.display()
                )
            });
            let file = file
                .and_then(|f| check_hotplug_disk(c.volumes_dir.as_ref(), &disk, f))
                .inspect_err(|e| tracing::warn!("{e}"))?;
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
    if !admit(&stream) {
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
    let mut reader = BufReader::new(FdStream {
        stream,
        fds: VecDeque::new(),
    });
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
                let r = execute(&c, &cmd, &msg["arguments"], &mut reader.get_mut().fds);
                match r {
                    Ok(v) => json!({ "return": v }),
                    Err(desc) => json!({"error": {"class": "GenericError", "desc": desc}}),
                }
            }
            Err(e) => json!({"error": {"class": "GenericError", "desc": format!("not JSON: {e}")}}),
        };
        // Descriptors that came with a command that took none are closed
        // (unless the next command, already read, brought its own).
        if reader.buffer().is_empty() {
            reader.get_mut().fds.clear();
        }
        if !send(&writer, &reply) {
            return;
        }
    }
}

fn serve(c: Arc<Control>, path: &Path) -> std::io::Result<()> {
    let listener = drydock_sockets::listen(path, 0o600)?;
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
    let volumes_dir = match &spec.volumes_dir {
        Some(p) => Some(
            VolumesDir::open(p)
                .map_err(|e| format!("cannot open the volumes directory {}: {e}", p.display()))?,
        ),
        None => None,
    };
    let control = Arc::new(Control {
        h: h.clone(),
        volumes_dir,
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
        // glibc's malloc counts the CPUs the first time a new thread needs
        // an arena of its own, by opening /sys/devices/system/cpu/online;
        // under the filter that open kills the VMM. With the limit set
        // here (glibc's own default: 8 arenas per CPU) it never asks.
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        #[cfg(target_env = "gnu")]
        // SAFETY: mallopt only sets a malloc tunable of this process.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, (8 * cpus).min(1024) as libc::c_int);
        }
        #[cfg(not(target_env = "gnu"))]
        let _ = cpus;
        // A panic (caught on vCPU threads, a device bug a guest found) is
        // reported without a backtrace: symbolising one opens the binary,
        // which the filter forbids (RUST_BACKTRACE may be inherited).
        std::panic::set_hook(Box::new(|info| eprintln!("drydock-vmm: {info}")));
        // Every thread started so far (control, events, console input) and
        // every later one: the VMM filter. vCPU threads add their own.
        super::seccomp::install(super::seccomp::ThreadKind::Vmm)?;
        tracing::info!("seccomp filters on (vmm, vcpu)");
    } else {
        tracing::warn!("seccomp filters off (\"seccomp\": false in the VM spec)");
    }
    let end = machine.run().map_err(|e| e.to_string());
    // Let event subscribers see the end before the process goes. The
    // socket files stay (the filter allows no unlink); whoever listens
    // there next removes them first (`drydock_sockets::listen`).
    std::thread::sleep(std::time::Duration::from_millis(50));
    end
}
