//! The guest's root file system: busybox userland, an init that reads the
//! instance configuration and /etc/fstab, a login on the serial console,
//! and what it boots — the kernel, its modules, the initramfs, the boot
//! configuration and the tools that rebuild the initramfs; made into an
//! ext4 volume with `mke2fs -d` (no root privileges needed).

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::ImageError;

const RCS: &str = include_str!("guest/rcS.sh");
/// `service NAME status|start|stop|…` over /etc/init.d/S<NN><name>.
pub(super) const SERVICE: &str = include_str!("guest/service.sh");
/// The one service every image has: the system log.
pub(super) const SYSLOGD: &str = include_str!("guest/syslogd.sh");
/// The instance's network interface, from the config disk.
pub(super) const NETWORK: &str = include_str!("guest/network.sh");
/// The SSH server, its host key announced on the console.
pub(super) const SSHD: &str = include_str!("guest/sshd.sh");
/// In the guest: rebuilds the initramfs from /etc/initramfs/modules.
pub(super) const UPDATE_INITRAMFS: &str = include_str!("guest/update-initramfs.sh");
/// In the guest: lists what an initramfs holds.
pub(super) const LSINITRAMFS: &str = include_str!("guest/lsinitramfs.sh");
/// What the host passes on every kernel command line of drydock's own
/// images besides the platform's part (console, root, reboot, panic).
pub const DEFAULT_APPEND: &str = "quiet cryptomgr.notests";

/// Run by mdev (and the network service at boot) for an interface other
/// than the primary one: configured from the metadata service.
pub(super) const NIC_EVENT: &str = include_str!("guest/nic-event.sh");
/// Run by mdev when a virtio disk appears or goes.
const DISK_EVENT: &str = "#!/bin/sh
serial=\"$(cat /sys/block/$MDEV/serial 2>/dev/null)\"
case \"$ACTION\" in
    add) echo \"drydock: disk $MDEV attached (serial $serial)\" > /dev/console ;;
    remove) echo \"drydock: disk $MDEV detached\" > /dev/console ;;
esac
";

const INITTAB: &str = "\
::sysinit:/etc/init.d/rcS
ttyS0::respawn:/sbin/getty -L 115200 ttyS0 vt100
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/umount -a -r
";

fn write(path: &Path, text: &str, mode: u32) -> Result<(), ImageError> {
    // Never through an applet's symbolic link into busybox itself.
    if path
        .symlink_metadata()
        .is_ok_and(|m| m.file_type().is_symlink())
    {
        std::fs::remove_file(path).map_err(|e| ImageError::io("replace", path, e))?;
    }
    std::fs::write(path, text).map_err(|e| ImageError::io("write", path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| ImageError::io("chmod", path, e))
}

/// Lays out the root tree in `tree` with busybox from `busybox_bin`.
pub fn populate(tree: &Path, busybox_bin: &Path) -> Result<(), ImageError> {
    for dir in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "etc/init.d",
        "etc/dropbear",
        "root",
        "tmp",
        "var/lib/drydock",
        "var/log",
        "proc",
        "sys",
        "dev",
        "run",
        "mnt",
        "home",
    ] {
        let p = tree.join(dir);
        std::fs::create_dir_all(&p).map_err(|e| ImageError::io("create", &p, e))?;
    }
    std::fs::set_permissions(tree.join("tmp"), std::fs::Permissions::from_mode(0o1777))
        .map_err(|e| ImageError::io("chmod", &tree.join("tmp"), e))?;
    let bb = tree.join("bin/busybox");
    std::fs::copy(busybox_bin, &bb).map_err(|e| ImageError::io("copy busybox to", &bb, e))?;
    // The guest's mode, whatever the (private) package cache has.
    std::fs::set_permissions(&bb, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| ImageError::io("chmod", &bb, e))?;
    let list = Command::new(busybox_bin)
        .arg("--list-full")
        .output()
        .map_err(|e| ImageError::Tool {
            what: "busybox --list-full".into(),
            detail: e.to_string(),
        })?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = tree.join(applet);
        if applet.is_empty() || link.exists() {
            continue;
        }
        symlink("/bin/busybox", &link).map_err(|e| ImageError::io("link", &link, e))?;
    }
    let etc = tree.join("etc");
    write(&etc.join("init.d/rcS"), RCS, 0o755)?;
    write(&etc.join("inittab"), INITTAB, 0o644)?;
    write(
        &etc.join("passwd"),
        "root:x:0:0:root:/root:/bin/sh\n",
        0o644,
    )?;
    write(&etc.join("group"), "root:x:0:\n", 0o644)?;
    // Locked until the instance configuration sets a password hash.
    write(&etc.join("shadow"), "root:*:19000:0:99999:7:::\n", 0o600)?;
    write(&etc.join("fstab"), "/dev/vda / ext4 rw 0 1\n", 0o644)?;
    write(&etc.join("hostname"), "drydock\n", 0o644)?;
    write(
        &etc.join("profile"),
        "export PATH=/sbin:/usr/sbin:/bin:/usr/bin\nexport PS1='\\h:\\w\\$ '\n",
        0o644,
    )?;
    write(&etc.join("issue"), "drydock guest \\n on \\l\n", 0o644)?;
    write(&etc.join("shells"), "/bin/sh\n", 0o644)?;
    write(
        &etc.join("mdev.conf"),
        "vd[a-z]+ 0:0 660 */etc/drydock-disk-event\n$INTERFACE=eth[0-9]+ 0:0 660 */etc/drydock-nic-event\n",
        0o644,
    )?;
    write(&etc.join("drydock-disk-event"), DISK_EVENT, 0o755)?;
    write(&etc.join("drydock-nic-event"), NIC_EVENT, 0o755)?;
    write(&etc.join("init.d/S05network"), NETWORK, 0o755)?;
    write(&etc.join("init.d/S10syslogd"), SYSLOGD, 0o755)?;
    write(&etc.join("init.d/S20sshd"), SSHD, 0o755)?;
    write(&tree.join("usr/sbin/service"), SERVICE, 0o755)?;
    Ok(())
}

/// What an image boots, laid out in its root volume.
pub struct BootLayout<'a> {
    /// The kernel release (`uname -r`), in every file name.
    pub release: &'a str,
    /// `vmlinuz` (a bzImage) or `vmlinux` (an ELF).
    pub kernel_name: &'a str,
    pub kernel: &'a [u8],
    /// The initramfs built for the image (the same as update-initramfs
    /// builds in the guest).
    pub initramfs: &'a [u8],
    /// Modules as (path under /lib/modules/RELEASE, file to copy).
    pub modules: Vec<(PathBuf, PathBuf)>,
    /// `modules.dep` for them (modprobe's format).
    pub modules_dep: String,
    /// The drivers the initramfs loads (/etc/initramfs/modules).
    pub drivers: &'a [String],
    /// The initramfs's init script.
    pub init: &'a str,
}

/// The boot configuration of a new image: the initramfs built with it is
/// also the previous one, so the fallback entry exists from the start.
pub fn extlinux_conf(kernel: &str, initrd: &str) -> String {
    format!(
        "# drydock boot configuration (extlinux.conf syntax), read by the host\n\
         # at every start: DEFAULT boots; FALLBACK when the default's kernel or\n\
         # initrd is missing or damaged, or it failed at the last boot.\n\
         # update-initramfs keeps the initramfs it replaces as `previous`.\n\
         DEFAULT linux\n\
         FALLBACK previous\n\
         LABEL linux\n    KERNEL {kernel}\n    INITRD {initrd}\n    APPEND {DEFAULT_APPEND}\n\
         LABEL previous\n    KERNEL {kernel}\n    INITRD {initrd}.old\n    APPEND {DEFAULT_APPEND}\n"
    )
}

/// Puts the kernel, its modules, the initramfs (current and previous),
/// the boot configuration and the initramfs tools into the root tree.
pub fn install_boot(tree: &Path, boot: &BootLayout<'_>) -> Result<(), ImageError> {
    let release = boot.release;
    let modules_root = tree.join("lib/modules").join(release);
    for dir in [
        tree.join("boot/extlinux"),
        tree.join("etc/initramfs"),
        tree.join("usr/share/drydock"),
        modules_root.clone(),
    ] {
        std::fs::create_dir_all(&dir).map_err(|e| ImageError::io("create", &dir, e))?;
    }
    let bytes = |path: &Path, data: &[u8], mode: u32| {
        std::fs::write(path, data).map_err(|e| ImageError::io("write", path, e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| ImageError::io("chmod", path, e))
    };
    let kernel = format!("/boot/{}-{release}", boot.kernel_name);
    let initrd = format!("/boot/initrd.img-{release}");
    bytes(&tree.join(&kernel[1..]), boot.kernel, 0o644)?;
    bytes(&tree.join(&initrd[1..]), boot.initramfs, 0o644)?;
    bytes(
        &tree.join(format!("{}.old", &initrd[1..])),
        boot.initramfs,
        0o644,
    )?;
    write(
        &tree.join("boot/extlinux/extlinux.conf"),
        &extlinux_conf(&kernel, &initrd),
        0o644,
    )?;
    for (rel, from) in &boot.modules {
        let to = modules_root.join(rel);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| ImageError::io("create", parent, e))?;
        }
        let data = std::fs::read(from).map_err(|e| ImageError::io("read", from, e))?;
        bytes(&to, &data, 0o644)?;
    }
    write(&modules_root.join("modules.dep"), &boot.modules_dep, 0o644)?;
    let list: String = boot.drivers.iter().map(|d| format!("{d}\n")).collect();
    write(
        &tree.join("etc/initramfs/modules"),
        &format!(
            "# Drivers the initramfs loads (dependencies are added); run\n\
             # update-initramfs after changing this list, then reboot.\n{list}"
        ),
        0o644,
    )?;
    write(
        &tree.join("usr/share/drydock/initramfs-init"),
        boot.init,
        0o755,
    )?;
    write(
        &tree.join("usr/sbin/update-initramfs"),
        UPDATE_INITRAMFS,
        0o755,
    )?;
    write(&tree.join("usr/sbin/lsinitramfs"), LSINITRAMFS, 0o755)?;
    Ok(())
}

/// Gives every directory of a guest's root tree its conventional mode,
/// whatever the umask of the process that built it (a build under a
/// sharing group's umask made /root group-writable, and the SSH server
/// then refuses root's keys): 0755, /root 0700, /tmp 1777.
pub fn normalize_dir_modes(tree: &Path) -> Result<(), ImageError> {
    fn walk(tree: &Path, dir: &Path) -> Result<(), ImageError> {
        let mode = match dir.strip_prefix(tree).ok().and_then(|r| r.to_str()) {
            Some("root") => 0o700,
            Some("tmp") => 0o1777,
            _ => 0o755,
        };
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
            .map_err(|e| ImageError::io("chmod", dir, e))?;
        for entry in std::fs::read_dir(dir).map_err(|e| ImageError::io("read", dir, e))? {
            let entry = entry.map_err(|e| ImageError::io("read", dir, e))?;
            let kind = entry
                .file_type()
                .map_err(|e| ImageError::io("stat", &entry.path(), e))?;
            if kind.is_dir() {
                walk(tree, &entry.path())?;
            }
        }
        Ok(())
    }
    walk(tree, tree)
}

/// Makes an ext4 file system image of `size_mib` MiB from `tree`.
pub fn make_ext4(tree: &Path, label: &str, size_mib: u64, out: &Path) -> Result<(), ImageError> {
    let status = Command::new("mke2fs")
        .args([
            "-q",
            "-F",
            "-t",
            "ext4",
            "-L",
            label,
            "-E",
            "root_owner=0:0",
            "-d",
        ])
        .arg(tree)
        .arg(out)
        .arg(format!("{size_mib}M"))
        .output()
        .map_err(|e| ImageError::Tool {
            what: "mke2fs".into(),
            detail: format!("{e} (install e2fsprogs)"),
        })?;
    if !status.status.success() {
        return Err(ImageError::Tool {
            what: "mke2fs".into(),
            detail: String::from_utf8_lossy(&status.stderr).trim().to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_modes_do_not_depend_on_the_builders_umask() {
        let tree = tempfile::tempdir().unwrap();
        for d in ["root/.ssh", "tmp", "etc/init.d", "lib/x86_64-linux-gnu"] {
            std::fs::create_dir_all(tree.path().join(d)).unwrap();
        }
        for d in ["root", "tmp", "etc", "root/.ssh"] {
            std::fs::set_permissions(tree.path().join(d), std::fs::Permissions::from_mode(0o770))
                .unwrap();
        }
        normalize_dir_modes(tree.path()).unwrap();
        let mode = |d: &str| {
            std::fs::metadata(tree.path().join(d))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("root"), 0o700);
        assert_eq!(mode("tmp"), 0o1777);
        assert_eq!(mode("etc"), 0o755);
        assert_eq!(mode("root/.ssh"), 0o755);
        assert_eq!(mode(""), 0o755);
    }
}
