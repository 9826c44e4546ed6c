//! Everything a VMM start needs, decided before the VMM runs (as
//! Firecracker's builder is apart from its run loop): the instance's
//! disks and their locks, what the root volume says to boot, the kernel
//! command line, the VM spec, and the command that runs the chosen VMM.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::config_disk::write_config_disk;
use super::hotplug::{absolute, device_id};
use super::locks::VolumeLock;
use super::{boot_failed, Ended};
use crate::backend::{
    choose_backend, qemu, tcg_clock_params, Accel, Backend, DeviceGeneration, DiskSpec, NicSpec,
    VmSpec, VmmPrograms,
};
use crate::boot_plan::BootPlan;
use crate::store::{new_id, now_ms, HostStore, InstanceRecord, VolumeKind, VolumeRecord};
use crate::{instance_type, HostError};

/// A VMM ready to start.
pub(super) struct Prepared {
    pub dir: PathBuf,
    pub store: HostStore,
    pub generation: DeviceGeneration,
    pub backend: Backend,
    /// Locks on the volumes the VM starts with, held while it runs.
    pub locks: Vec<VolumeLock>,
    pub boot_volumes: HashSet<String>,
    /// Network interfaces the VM starts with (on its root bus).
    pub boot_nics: HashSet<String>,
    pub plugged_at_start: HashMap<String, (u32, VolumeLock)>,
    pub boot_plan: BootPlan,
    pub root_path: PathBuf,
    pub control_socket: PathBuf,
    pub event_socket: PathBuf,
    pub vmm_log: PathBuf,
    pub command: std::process::Command,
    /// The TAPs the VMM inherits; closed here once it has started, so
    /// they go with the VMM.
    pub taps: Vec<OwnedFd>,
    /// The instance's metadata service, served while the VM runs.
    pub imds: Option<crate::network::imds::Imds>,
}

/// Where the VMM finds its TAP descriptors: this and the next numbers.
const FIRST_TAP_FD: i32 = 100;

/// Prepares instance `inst`'s next VMM start; `Err(Ended)` when its root
/// volume cannot be booted (said on the console, as a real machine's).
pub(super) fn prepare(
    data_dir: &Path,
    inst: &InstanceRecord,
    programs: &VmmPrograms,
) -> Result<Result<Prepared, Ended>, HostError> {
    let id = &inst.id;
    let dir = data_dir.join("instances").join(id);
    std::fs::create_dir_all(dir.join("console")).map_err(|e| HostError::io("create", &dir, e))?;
    // An instance directory of an older drydock may be open to others.
    drydock_runtime::private::tighten_tree(&dir);
    let itype = instance_type(&inst.instance_type).map_err(HostError::Invalid)?;
    let mut store = HostStore::open(data_dir)?;
    let image = store.image(&inst.image_id)?;

    if itype.instance_store_mib > 0
        && !store
            .attached(id)?
            .iter()
            .any(|v| v.kind == VolumeKind::InstanceStore)
    {
        store.insert_volume(&VolumeRecord {
            id: new_id("vol"),
            region: inst.region.clone(),
            size_mib: itype.instance_store_mib,
            kind: VolumeKind::InstanceStore,
            path: dir.join("instance-store.raw"),
            attached_to: Some(id.clone()),
            attach_index: Some(100),
            delete_on_termination: true,
            created_at: now_ms(),
        })?;
    }
    // Chosen before the disks: on QEMU's new generation, data volumes go
    // onto hot-plug ports at start, so that they can be detached while the
    // instance runs (after a restart, as if hot-plugged).
    let backend = choose_backend().map_err(HostError::Invalid)?;
    let ports_at_start =
        matches!(backend, Backend::Qemu(_)) && itype.generation == DeviceGeneration::Pci;
    // The network: a TAP per interface in the VPC's namespace, handed to
    // the VMM open; the guest learns its address from the config disk.
    let mut taps = Vec::new();
    let mut nics = Vec::new();
    let mut boot_nics = HashSet::new();
    let mut guest_network = String::new();
    let mut imds = None;
    for iface in store.interfaces(id)? {
        boot_nics.insert(iface.id.clone());
        let subnet = store.subnet(&iface.subnet_id)?;
        let attached = crate::network::attach(data_dir, &iface, &subnet)?;
        nics.push(NicSpec {
            mac: attached.mac,
            tap_fd: FIRST_TAP_FD + taps.len() as i32,
        });
        if guest_network.is_empty() {
            guest_network = attached.guest_config;
            // The metadata service of this instance, on its primary
            // interface's VPC.
            match iface.private_ip.parse() {
                Ok(ip) => match crate::network::imds::start(data_dir, &iface.vpc_id, id, ip) {
                    Ok(service) => imds = Some(service),
                    Err(e) => {
                        tracing::warn!(instance = %id, "the metadata service cannot start: {e}")
                    }
                },
                Err(_) => {
                    tracing::warn!(instance = %id, "a stored address is damaged: no metadata service")
                }
            }
        }
        taps.push(attached.tap);
    }
    let config_disk = dir.join("config.ext4");
    write_config_disk(
        inst,
        (!guest_network.is_empty()).then_some(guest_network.as_str()),
        &config_disk,
    )?;
    let mut disks = Vec::new();
    let mut locks = Vec::new();
    let mut boot_volumes = std::collections::HashSet::new();
    let mut plugged_at_start = std::collections::HashMap::new();
    for v in store.attached(id)? {
        if v.kind == VolumeKind::InstanceStore {
            // Created empty at every start.
            let _ = std::fs::remove_file(&v.path);
            let f =
                std::fs::File::create(&v.path).map_err(|e| HostError::io("create", &v.path, e))?;
            f.set_len(v.size_mib << 20)
                .map_err(|e| HostError::io("size", &v.path, e))?;
        }
        let lock = VolumeLock::acquire(&v.path, &v.id)?;
        let slot = (ports_at_start && v.kind == VolumeKind::Network && v.attach_index != Some(0))
            .then_some(plugged_at_start.len() as u32)
            .filter(|s| *s < qemu::HOTPLUG_SLOTS);
        let hotplug = match slot {
            Some(slot) => {
                plugged_at_start.insert(v.id.clone(), (slot, lock));
                Some(crate::backend::HotplugPlace {
                    port: qemu::hotplug_port(slot),
                    device_id: device_id(&v.id),
                })
            }
            None => {
                boot_volumes.insert(v.id.clone());
                locks.push(lock);
                None
            }
        };
        disks.push(DiskSpec {
            path: v.path.clone(),
            serial: v.id.clone(),
            read_only: false,
            hotplug,
        });
    }
    disks.insert(
        1.min(disks.len()),
        DiskSpec {
            path: config_disk,
            serial: "cidata".into(),
            read_only: true,
            hotplug: None,
        },
    );
    // What the root volume says to boot, read at every start.
    let root_path = store.volume(&inst.root_volume)?.path;
    // An unclean stop leaves a journal to replay before the host reads the
    // boot files (the guest's kernel would replay it at mount anyway).
    let replayed = match crate::journal_replay::replay_if_needed(&root_path) {
        Ok(replayed) => replayed,
        Err(e) => {
            tracing::warn!("{e}");
            false
        }
    };
    let mut boot_plan = match crate::boot_plan::plan(data_dir, &dir, &image.boot_dir, &root_path) {
        Ok(plan) => plan,
        Err(e) => return boot_failed(&mut store, &dir, id, &e).map(Err),
    };
    if replayed {
        boot_plan.console.insert_str(
            0,
            "drydock boot: replayed the root volume's journal (its last stop was unclean)\r\n",
        );
    }
    let control_socket = dir.join("qmp.sock");
    let event_socket = dir.join("qmp-events.sock");
    for s in [
        &control_socket,
        &event_socket,
        &dir.join("control.sock"),
        &dir.join("console.sock"),
    ] {
        let _ = std::fs::remove_file(s);
    }
    let accel = match backend {
        Backend::Drydock => Accel::Kvm,
        Backend::Qemu(accel) => accel,
    };
    // drydock's VMM resets through the ACPI reset register; QEMU's microvm
    // by triple fault.
    let reboot = if backend == Backend::Drydock {
        "a"
    } else {
        "t"
    };
    // The platform's part; the boot entry's APPEND (`quiet
    // cryptomgr.notests` in drydock's images) comes last.
    let mut cmdline = format!(
        "console=ttyS0 root=serial:{} reboot={reboot} panic=-1 sysrq_always_enabled",
        inst.root_volume
    );
    if backend == Backend::Drydock {
        // drydock's i8042 has no keyboard or mouse behind it: a kernel that
        // probes it (one without ACPI) skips the mouse port and keyboard
        // control instead of waiting for answers (as with Firecracker).
        cmdline.push_str(" i8042.noaux i8042.nomux i8042.dumbkbd");
    }
    if backend == Backend::Drydock && itype.generation == DeviceGeneration::Mmio {
        // No PCI bus on the old generation: do not probe for one.
        cmdline.push_str(" pci=off");
    }
    if accel == Accel::Tcg {
        cmdline = format!("{cmdline} {}", tcg_clock_params());
    }
    if !boot_plan.append.is_empty() {
        cmdline = format!("{cmdline} {}", boot_plan.append);
    }
    let spec = VmSpec {
        name: id.clone(),
        vcpus: itype.vcpus,
        memory_mib: itype.memory_mib,
        generation: itype.generation,
        accel,
        // From the host's boot cache: the uncompressed ELF (PVH entry)
        // of the volume's kernel when it has one, its initrd.
        kernel: boot_plan.kernel.clone(),
        initramfs: boot_plan.initrd.clone(),
        cmdline,
        virtio_mmio_cmdline: boot_plan.virtio_mmio_cmdline,
        disks,
        nics,
        control_socket: control_socket.clone(),
        event_socket: event_socket.clone(),
        // drydock's VMM attaches (while the VM runs) only files in here.
        volumes_dir: Some(absolute(&data_dir.join("volumes"))),
        // The host decides (the operator's DRYDOCK_VMM_SECCOMP=off turns
        // it off), and the spec file shows it.
        seccomp: crate::backend::seccomp_from_env(),
    };
    // Appended to, never truncated: the log of a VMM that crashed is the
    // evidence the next start must not erase.
    let vmm_log = dir.join("vmm.log");
    let mut vmm_err = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&vmm_log)
        .map_err(|e| HostError::io("open", &vmm_log, e))?;
    let _ = writeln!(
        vmm_err,
        "drydock: start at {}, backend {}",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
        backend.name()
    );
    let mut cmd = match backend {
        Backend::Drydock => {
            let spec_path = dir.join("vm-spec.json");
            let text = serde_json::to_vec_pretty(&spec).expect("a VM spec serializes");
            std::fs::write(&spec_path, text).map_err(|e| HostError::io("write", &spec_path, e))?;
            let exe = &programs.drydock_vmm;
            if !exe.is_file() {
                return Err(HostError::Vmm(format!(
                    "drydock's VMM {} is missing: build it (`cargo build`, which builds \
                     drydock-vmm beside drydock) or name it with DRYDOCK_VMM",
                    exe.display()
                )));
            }
            let mut cmd = std::process::Command::new(exe);
            cmd.arg("--spec").arg(&spec_path);
            cmd
        }
        Backend::Qemu(_) => qemu::command(&spec),
    };
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(vmm_err);
    let tap_fds: Vec<i32> = taps.iter().map(|t| t.as_raw_fd()).collect();
    // prctl(PR_SET_PDEATHSIG) only sets a flag on the child; fcntl and
    // dup2 only change the child's descriptor table (the TAPs go to fixed
    // numbers without close-on-exec).
    // SAFETY: all async-signal-safe; the closure allocates nothing (a fixed
    // array) and touches no memory of the parent.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            // First every TAP above the target range (close-on-exec), so
            // that no dup2 below overwrites a TAP still to be placed.
            let above = FIRST_TAP_FD + tap_fds.len() as i32;
            let mut moved = [0i32; 16];
            for (i, fd) in tap_fds.iter().take(moved.len()).enumerate() {
                let m = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, above);
                if m < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                moved[i] = m;
            }
            for (i, fd) in moved.iter().take(tap_fds.len()).enumerate() {
                if libc::dup2(*fd, FIRST_TAP_FD + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    tracing::info!(instance = %id, "starting VMM: {:?}", cmd);
    Ok(Ok(Prepared {
        dir,
        store,
        generation: itype.generation,
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
        command: cmd,
        taps,
        imds,
    }))
}
