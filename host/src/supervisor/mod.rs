//! The process that runs one instance. It starts the VMM, keeps every
//! byte of the serial console in a log file per boot, serves a control
//! socket (stop, reboot) and records how the VM ended: guest power-off,
//! stop by the user, or an unexpected VMM exit. The VMM dies with it.
//!
//! - [`builder`] decides everything a VMM start needs (disks, boot files,
//!   command line, VM spec, the VMM's command);
//! - this file runs it: the console pump, the VMM's events, the sockets,
//!   waiting for the end and saying why;
//! - [`running`] is the running VM's state and what each command does;
//!   [`hotplug`] plugs volumes in and out;
//! - [`command`] the typed control commands; [`control`] the control
//!   socket (client, server);
//! - [`locks`] the instance and volume locks.

mod builder;
mod command;
mod control;
mod hotplug;
mod locks;
mod nic_hotplug;
mod running;
mod vm_health;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drydock_runtime::runner::RunnerIdentity;

pub use command::ControlCommand;
pub use control::send_control;
pub use locks::{instance_process_running, VolumeLock};
pub use vm_health::{VmHealth, PROBE_TIMEOUT};

use super::config_disk;
use super::console_hub::ConsoleHub;
use super::store::{HostStore, InstanceRecord, InstanceState, VolumeKind};
use super::HostError;
use crate::backend::qmp::QmpClient;
use crate::backend::VmmPrograms;
use builder::Prepared;
use control::serve_control;
use locks::lock_instance;
use running::Shared;

/// The supervisor process recorded for an instance.
pub fn identity(i: &InstanceRecord) -> Option<RunnerIdentity> {
    Some(RunnerIdentity {
        pid: i.supervisor_pid?,
        token: i.supervisor_token.clone()?,
    })
}

/// The console log of boot number `boot`.
pub fn console_log_path(instance_dir: &Path, boot: u32) -> PathBuf {
    instance_dir
        .join("console")
        .join(format!("boot-{boot:04}.log"))
}

/// Runs instance `id` until its VM ends, then records why.
pub fn supervise(data_dir: &Path, id: &str, programs: &VmmPrograms) -> Result<(), HostError> {
    // Nothing is touched before the instance lock is held: a second
    // supervisor (two starts at once) leaves the first one's VM, volumes
    // and state alone.
    let dir = data_dir.join("instances").join(id);
    let Some(_instance_lock) = lock_instance(&dir)? else {
        tracing::warn!(
            instance = id,
            "another instance process runs this instance; leaving"
        );
        return Err(HostError::Conflict(format!(
            "instance {id} is already run by another instance process"
        )));
    };
    let mut store = HostStore::open(data_dir)?;
    let inst = store.instance(id)?;
    if inst.state != InstanceState::Pending {
        return Err(HostError::Conflict(format!(
            "instance {id} is {}, not pending: nothing to start",
            inst.state
        )));
    }
    let me = RunnerIdentity::current();
    store.set_supervisor(id, Some(me.pid), Some(&me.token))?;
    let result = loop {
        match run_vm(data_dir, &inst, programs) {
            // The guest reset and its volume says to boot other files: a
            // new VMM boots them (see `Shared::reboot_from_volume`).
            Ok(Ended::Restart(why)) => {
                tracing::info!(instance = id, "restarting the VMM: {why}");
                HostStore::open(data_dir)?.set_state(
                    id,
                    InstanceState::Pending,
                    &format!("rebooting: {why}"),
                )?;
            }
            Ok(Ended::Stopped(reason)) => break Ok(reason),
            Err(e) => break Err(e),
        }
    };
    let mut store = HostStore::open(data_dir)?;
    let reason = match &result {
        Ok(reason) => reason.clone(),
        Err(e) => format!("could not run: {e}"),
    };
    // Instance-store volumes are wiped at stop: before the instance is
    // seen stopped.
    for v in store.attached(id)? {
        if v.kind == VolumeKind::InstanceStore {
            let _ = std::fs::remove_file(&v.path);
        }
    }
    store.set_state(id, InstanceState::Stopped, &reason)?;
    store.set_supervisor(id, None, None)?;
    // The VPC's namespace goes with its last running instance.
    for iface in store.interfaces(id).unwrap_or_default() {
        if let Err(e) = crate::network::release_if_idle(data_dir, &iface.vpc_id) {
            tracing::warn!(
                instance = id,
                "cannot remove the network of {}: {e}",
                iface.vpc_id
            );
        }
    }
    result.map(|_| ())
}

/// How one VMM run ended.
enum Ended {
    /// The instance stopped, for this reason.
    Stopped(String),
    /// A guest reset found other boot files on the root volume: run again.
    Restart(String),
}

/// A start whose root volume cannot be booted ends as a real machine's
/// would: the reason on this boot's console and in the state reason.
fn boot_failed(
    store: &mut HostStore,
    dir: &Path,
    id: &str,
    e: &drydock_images::boot_volume::BootFailure,
) -> Result<Ended, HostError> {
    let boot = store.count_boot(id)?;
    let path = console_log_path(dir, boot);
    std::fs::write(&path, format!("drydock boot: {e}\r\n"))
        .map_err(|err| HostError::io("write", &path, err))?;
    tracing::warn!(instance = id, "boot failed: {e}");
    Ok(Ended::Stopped(format!("boot failed: {e}")))
}

fn run_vm(
    data_dir: &Path,
    inst: &InstanceRecord,
    programs: &VmmPrograms,
) -> Result<Ended, HostError> {
    let id = &inst.id;
    let Prepared {
        dir,
        mut store,
        generation,
        backend,
        locks,
        boot_volumes,
        boot_nics,
        plugged_at_start,
        boot_plan,
        root_path,
        control_socket,
        event_socket,
        vmm_log,
        command: mut cmd,
        taps,
        imds: _metadata_service,
    } = match builder::prepare(data_dir, inst, programs)? {
        Ok(prepared) => prepared,
        Err(ended) => return Ok(ended),
    };
    let spawned = cmd.spawn();
    // The VMM holds its own copies: the TAPs now live exactly as long as it.
    drop(taps);
    let mut child = spawned.map_err(|e| {
        HostError::Vmm(format!(
            "cannot start the {} VMM ({:?}): {e}",
            backend.name(),
            cmd.get_program()
        ))
    })?;
    let boot = store.count_boot(id)?;
    let log_path = console_log_path(&dir, boot);
    let log =
        std::fs::File::create(&log_path).map_err(|e| HostError::io("create", &log_path, e))?;
    let shared = Arc::new(Shared {
        data_dir: data_dir.to_path_buf(),
        id: id.clone(),
        dir: dir.clone(),
        console: Arc::new(ConsoleHub::new(
            log,
            log_path.clone(),
            boot,
            child.stdin.take(),
        )),
        control: Mutex::new(None),
        stop_reason: Mutex::new(None),
        exited: AtomicBool::new(false),
        pauses: std::sync::atomic::AtomicU64::new(0),
        vmm_pid: child.id(),
        reaped: Mutex::new(false),
        guest_shutdown: AtomicBool::new(false),
        generation,
        backend,
        end_reason: Mutex::new(None),
        hotplugged: Mutex::new(plugged_at_start),
        boot_volumes,
        boot_nics,
        hot_nics: Mutex::new(std::collections::HashMap::new()),
        deleted_devices: (
            Mutex::new(std::collections::HashSet::new()),
            std::sync::Condvar::new(),
        ),
        boot_plan: boot_plan.clone(),
        root_volume: root_path.clone(),
        restart: Mutex::new(None),
        probe: Mutex::new(None),
    });

    shared.console.output(boot_plan.console.as_bytes());
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let pump = {
        let shared = shared.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                shared.console.output(&buf[..n]);
            }
        })
    };
    match QmpClient::connect(&control_socket, Duration::from_secs(20)) {
        Ok(c) => {
            *shared.control.lock().unwrap() = Some(c);
            // QEMU creates its QMP sockets itself (with the umask's mode)
            // and cannot check peers: only this account may connect. Its
            // monitor serves one client at a time, and this supervisor
            // holds both connections for the life of the VM.
            for s in [&control_socket, &event_socket] {
                if let Err(e) = std::fs::set_permissions(s, std::fs::Permissions::from_mode(0o600))
                {
                    tracing::debug!("cannot narrow {}: {e}", s.display());
                }
            }
        }
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(HostError::Vmm(format!(
                "the VMM did not open its control socket: {e}; see {}",
                vmm_log.display()
            )));
        }
    }
    let event_reader = {
        let shared = shared.clone();
        std::thread::spawn(move || {
            let Ok(mut events) = QmpClient::connect(&event_socket, Duration::from_secs(20)) else {
                return;
            };
            // Events come whenever the VM does something: no read deadline.
            let _ = events.set_read_timeout(None);
            while let Ok(msg) = events.read_message() {
                match msg.get("event").and_then(|e| e.as_str()) {
                    Some("RESET") => {
                        if shared.reboot_from_volume() {
                            continue;
                        }
                        if let Err(e) = shared.new_boot() {
                            tracing::error!("cannot start a new console log: {e}");
                        }
                    }
                    Some("DEVICE_DELETED") => {
                        if let Some(dev) = msg["data"]["device"].as_str() {
                            let (set, cond) = &shared.deleted_devices;
                            set.lock().unwrap().insert(dev.to_string());
                            cond.notify_all();
                        }
                    }
                    Some("SHUTDOWN") => {
                        let guest = msg["data"]["guest"].as_bool().unwrap_or(false);
                        shared.guest_shutdown.store(guest, Ordering::SeqCst);
                        if let Some(reason) = msg["data"]["reason"].as_str() {
                            *shared.end_reason.lock().unwrap() = Some(reason.to_string());
                        }
                    }
                    _ => {}
                }
            }
        })
    };
    // The console and control sockets: the owner, root and the sharing
    // group, each connection checked against its peer's credentials.
    let console_path = dir.join("console.sock");
    let console_listener = drydock_runtime::private::listen(
        &console_path,
        drydock_runtime::private::shared_socket_mode(),
    )
    .map_err(|e| HostError::io("listen on", &console_path, e))?;
    {
        let hub = shared.console.clone();
        std::thread::spawn(move || hub.serve(console_listener));
    }
    let control_path = dir.join("control.sock");
    let listener = drydock_runtime::private::listen(
        &control_path,
        drydock_runtime::private::shared_socket_mode(),
    )
    .map_err(|e| HostError::io("listen on", &control_path, e))?;
    {
        let shared = shared.clone();
        std::thread::spawn(move || serve_control(shared, listener));
    }
    HostStore::open(data_dir)?.set_state(id, InstanceState::Running, "")?;

    let status = {
        // Wait without reaping, then reap under the lock `kill_vmm` takes.
        let mut info: libc::siginfo_t = unsafe_zeroed_siginfo();
        // SAFETY: waitid on our own child with WNOWAIT leaves it unreaped;
        // `info` is a valid, writable siginfo_t.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                child.id() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        let mut reaped = shared.reaped.lock().unwrap_or_else(|e| e.into_inner());
        if rc != 0 {
            tracing::warn!("waitid: {}", std::io::Error::last_os_error());
        }
        let status = child.wait().map_err(|e| HostError::Vmm(e.to_string()))?;
        *reaped = true;
        status
    };
    // The VMM's last events (why it ended) arrive before its socket closes.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while !event_reader.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(locks);
    shared.exited.store(true, Ordering::SeqCst);
    let _ = pump.join();
    let _ = std::fs::remove_file(dir.join("control.sock"));
    let _ = std::fs::remove_file(dir.join("console.sock"));
    let requested = shared.stop_reason.lock().unwrap().clone();
    if requested.is_none() {
        if let Some(why) = shared.restart.lock().unwrap().take() {
            return Ok(Ended::Restart(why));
        }
    }
    Ok(Ended::Stopped(match requested {
        Some(reason) => reason,
        None if status.success() && shared.guest_shutdown.load(Ordering::SeqCst) => {
            "guest powered off".to_string()
        }
        None if status.success() => "VMM exited".to_string(),
        None => {
            let said = shared.end_reason.lock().unwrap().clone();
            format!(
                "VMM exited unexpectedly ({status}{}); see {}",
                said.map(|r| format!(": {r}")).unwrap_or_default(),
                vmm_log.display()
            )
        }
    }))
}

fn unsafe_zeroed_siginfo() -> libc::siginfo_t {
    // SAFETY: siginfo_t is a plain C struct for which all zero bytes is a
    // valid value.
    unsafe { std::mem::zeroed() }
}
