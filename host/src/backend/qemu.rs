//! The QEMU backend: a `VmSpec` as a `qemu-system-x86_64` command line.
//! The old device generation uses the `microvm` machine (virtio-mmio), the
//! new one `q35` (virtio-pci). The serial console is QEMU's stdio; QMP
//! listens on the spec's control socket.

use std::process::Command;

use super::{Accel, DeviceGeneration, VmSpec};

/// The QEMU binary, overridable with `DRYDOCK_QEMU`.
pub fn qemu_binary() -> String {
    std::env::var("DRYDOCK_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".to_string())
}

/// QEMU's minimal firmware, if installed (`DRYDOCK_QEMU_BIOS` overrides).
pub fn minimal_bios() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("DRYDOCK_QEMU_BIOS") {
        return Some(p.into());
    }
    let p = std::path::Path::new("/usr/share/qemu/qboot.rom");
    p.exists().then(|| p.to_path_buf())
}

/// How many disks can be hot-plugged into a running new-generation VM.
pub const HOTPLUG_SLOTS: u32 = 4;

/// The id of hot-plug port `slot`.
pub fn hotplug_port(slot: u32) -> String {
    format!("hotplug{slot}")
}

/// QMP commands that hot-plug `disk` as device `id` into port `port`.
pub fn hotplug_commands(
    disk: &crate::backend::DiskSpec,
    id: &str,
    port: &str,
) -> Vec<(&'static str, serde_json::Value)> {
    vec![
        (
            "blockdev-add",
            serde_json::json!({
                "driver": "raw", "node-name": format!("node-{id}"), "read-only": disk.read_only,
                "file": { "driver": "file", "filename": disk.path, "locking": "off" }
            }),
        ),
        (
            "device_add",
            serde_json::json!({
                "driver": "virtio-blk-pci", "id": id, "drive": format!("node-{id}"),
                "serial": disk.serial, "bus": port
            }),
        ),
    ]
}

/// Builds the QEMU command for `spec`.
pub fn command(spec: &VmSpec) -> Command {
    let mut cmd = Command::new(qemu_binary());
    let accel = match spec.accel {
        Accel::Kvm => "kvm",
        Accel::Tcg => "tcg",
    };
    let (machine, blk) = match spec.generation {
        // A kernel without ACPI: microvm then lists its virtio-mmio devices
        // on the kernel command line itself (auto-kernel-cmdline).
        DeviceGeneration::Mmio if spec.virtio_mmio_cmdline => (
            format!("microvm,accel={accel},acpi=off"),
            "virtio-blk-device",
        ),
        DeviceGeneration::Mmio => (format!("microvm,accel={accel}"), "virtio-blk-device"),
        DeviceGeneration::Pci => (format!("q35,accel={accel}"), "virtio-blk-pci"),
    };
    cmd.args(["-machine", &machine])
        .args(["-name", &spec.name])
        .args(["-smp", &spec.vcpus.to_string()])
        .args(["-m", &format!("{}M", spec.memory_mib)])
        .args([
            "-display",
            "none",
            "-vga",
            "none",
            "-nodefaults",
            "-no-user-config",
        ])
        .args([
            "-chardev",
            "stdio,id=console,signal=off",
            "-serial",
            "chardev:console",
        ])
        .args(["-monitor", "none"])
        .arg("-qmp")
        .arg(format!(
            "unix:{},server=on,wait=off",
            spec.control_socket.display()
        ))
        .arg("-qmp")
        .arg(format!(
            "unix:{},server=on,wait=off",
            spec.event_socket.display()
        ))
        .arg("-kernel")
        .arg(&spec.kernel)
        .arg("-initrd")
        .arg(&spec.initramfs)
        .args(["-append", &spec.cmdline]);
    if spec.accel == Accel::Kvm {
        cmd.args(["-cpu", "host"]);
    }
    if spec.generation == DeviceGeneration::Pci {
        // qboot instead of SeaBIOS: the guest kernel is loaded directly, so
        // the BIOS only has to hand over (0.6 s less under emulation).
        if let Some(bios) = minimal_bios() {
            cmd.arg("-bios").arg(bios);
        }
        // Empty PCIe root ports: slots that data disks are hot-plugged into.
        for slot in 0..HOTPLUG_SLOTS {
            cmd.arg("-device").arg(format!(
                "pcie-root-port,id={},chassis={},slot={},bus=pcie.0,addr=0x{:x}",
                hotplug_port(slot),
                slot + 1,
                slot + 1,
                0x10 + slot
            ));
        }
    }
    // Network interfaces: the TAPs the host made, inherited open.
    let nic = match spec.generation {
        DeviceGeneration::Mmio => "virtio-net-device",
        DeviceGeneration::Pci => "virtio-net-pci",
    };
    for (i, n) in spec.nics.iter().enumerate() {
        cmd.arg("-netdev")
            .arg(format!("tap,id=net{i},fd={},vhost=off", n.tap_fd));
        cmd.arg("-device")
            .arg(format!("{nic},netdev=net{i},mac={}", n.mac));
    }
    for (i, disk) in spec.disks.iter().enumerate() {
        let ro = if disk.read_only { ",read-only=on" } else { "" };
        match &disk.hotplug {
            // On a hot-plug port, named as a disk hot-plugged later
            // ([`hotplug_commands`]): unpluggable while the VM runs.
            Some(place) if spec.generation == DeviceGeneration::Pci => {
                cmd.arg("-blockdev").arg(format!(
                    "driver=raw,node-name=node-{},file.driver=file,file.filename={},file.locking=off{ro}",
                    place.device_id,
                    disk.path.display()
                ));
                cmd.arg("-device").arg(format!(
                    "{blk},drive=node-{id},serial={},id={id},bus={}",
                    disk.serial,
                    place.port,
                    id = place.device_id
                ));
            }
            _ => {
                cmd.arg("-blockdev").arg(format!(
                    "driver=file,node-name=file{i},filename={},locking=off{ro}",
                    disk.path.display()
                ));
                cmd.arg("-blockdev")
                    .arg(format!("driver=raw,node-name=disk{i},file=file{i}{ro}"));
                cmd.arg("-device").arg(format!(
                    "{blk},drive=disk{i},serial={},id=dev{i}",
                    disk.serial
                ));
            }
        }
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::DiskSpec;

    fn spec(generation: DeviceGeneration) -> VmSpec {
        VmSpec {
            name: "i-0123abcd".into(),
            vcpus: 2,
            memory_mib: 256,
            generation,
            accel: Accel::Tcg,
            kernel: "/k".into(),
            initramfs: "/i".into(),
            cmdline: "console=ttyS0".into(),
            virtio_mmio_cmdline: false,
            disks: vec![DiskSpec {
                path: "/v.raw".into(),
                serial: "vol-1".into(),
                read_only: true,
                hotplug: None,
            }],
            nics: vec![crate::backend::NicSpec {
                mac: "02:00:00:00:00:01".into(),
                tap_fd: 100,
            }],
            control_socket: "/run/q.sock".into(),
            event_socket: "/run/e.sock".into(),
            volumes_dir: None,
            seccomp: true,
        }
    }

    fn args(spec: &VmSpec) -> String {
        command(spec)
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn a_data_disk_on_a_hotplug_port_is_named_as_a_hotplugged_one() {
        let mut spec = spec(DeviceGeneration::Pci);
        spec.disks[0].hotplug = Some(crate::backend::HotplugPlace {
            port: hotplug_port(1),
            device_id: "disk-vol-1".into(),
        });
        let a = args(&spec);
        assert!(
            a.contains(
                "driver=raw,node-name=node-disk-vol-1,file.driver=file,file.filename=/v.raw"
            ),
            "{a}"
        );
        assert!(
            a.contains(
                "virtio-blk-pci,drive=node-disk-vol-1,serial=vol-1,id=disk-vol-1,bus=hotplug1"
            ),
            "{a}"
        );
    }

    #[test]
    fn generations_pick_machine_and_disk_transport() {
        let old = args(&spec(DeviceGeneration::Mmio));
        assert!(old.contains("-machine microvm,accel=tcg"));
        assert!(old.contains("virtio-blk-device,drive=disk0,serial=vol-1"));
        let new = args(&spec(DeviceGeneration::Pci));
        assert!(new.contains("-machine q35,accel=tcg"));
        assert!(new.contains("virtio-blk-pci,drive=disk0,serial=vol-1"));
        assert!(new.contains("read-only=on"));
        assert!(new.contains("-qmp unix:/run/q.sock,server=on,wait=off"));
        assert!(old.contains("-netdev tap,id=net0,fd=100,vhost=off"));
        assert!(old.contains("virtio-net-device,netdev=net0,mac=02:00:00:00:00:01"));
        assert!(new.contains("virtio-net-pci,netdev=net0,mac=02:00:00:00:00:01"));
    }
}
