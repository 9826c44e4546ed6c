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

/// Builds the QEMU command for `spec`.
pub fn command(spec: &VmSpec) -> Command {
    let mut cmd = Command::new(qemu_binary());
    let accel = match spec.accel {
        Accel::Kvm => "kvm",
        Accel::Tcg => "tcg",
    };
    let (machine, blk) = match spec.generation {
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
    for (i, disk) in spec.disks.iter().enumerate() {
        let ro = if disk.read_only { ",read-only=on" } else { "" };
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
            disks: vec![DiskSpec {
                path: "/v.raw".into(),
                serial: "vol-1".into(),
                read_only: true,
            }],
            control_socket: "/run/q.sock".into(),
            event_socket: "/run/e.sock".into(),
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
    fn generations_pick_machine_and_disk_transport() {
        let old = args(&spec(DeviceGeneration::Mmio));
        assert!(old.contains("-machine microvm,accel=tcg"));
        assert!(old.contains("virtio-blk-device,drive=disk0,serial=vol-1"));
        let new = args(&spec(DeviceGeneration::Pci));
        assert!(new.contains("-machine q35,accel=tcg"));
        assert!(new.contains("virtio-blk-pci,drive=disk0,serial=vol-1"));
        assert!(new.contains("read-only=on"));
        assert!(new.contains("-qmp unix:/run/q.sock,server=on,wait=off"));
    }
}
