//! What an instance boots at each start: the boot entry read from its
//! root volume (`drydock_images::boot_volume`), remembered failures of
//! earlier boots, and the lines the console shows about it.

use std::path::{Path, PathBuf};

use drydock_images::boot_volume::{
    read_boot, BootFailure, BootMemo, FailedMark, KernelBoot, MEMO_FILE,
};

/// What an instance process gives its VMM, decided at every start.
#[derive(Debug, Clone)]
pub struct BootPlan {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The guest's part of the kernel command line (the entry's `APPEND`).
    pub append: String,
    /// The kernel takes its virtio-mmio disks on the command line.
    pub virtio_mmio_cmdline: bool,
    /// The entry booted (none for an image that predates boot from the
    /// volume).
    pub label: Option<String>,
    /// Lines for the console before the guest's own output.
    pub console: String,
}

/// The file in an instance's directory naming the entry whose last boot
/// failed in the guest.
pub const FAILED_MARK: &str = "boot-failed";

/// Decides what instance `instance_dir` boots: from its root volume
/// `root` for images that put their boot files there, else (an image
/// built before) the host-side files of the image's build in `boot_dir`.
pub fn plan(
    data_dir: &Path,
    instance_dir: &Path,
    boot_dir: &Path,
    root: &Path,
) -> Result<BootPlan, BootFailure> {
    let manifest = drydock_images::BuiltImage::open(boot_dir)
        .ok()
        .map(|b| b.manifest);
    let image_features = manifest.as_ref().map(|m| m.features.clone());
    if !manifest.as_ref().is_some_and(|m| m.boot_from_volume) {
        let elf = boot_dir.join("vmlinux");
        return Ok(BootPlan {
            kernel: if elf.exists() {
                elf
            } else {
                boot_dir.join("vmlinuz")
            },
            initrd: boot_dir.join("initramfs.cpio"),
            append: drydock_images::DEFAULT_APPEND.to_string(),
            virtio_mmio_cmdline: image_features.is_some_and(|f| f.virtio_mmio_on_cmdline()),
            label: None,
            console: String::new(),
        });
    }
    let how = if manifest.as_ref().is_some_and(|m| m.recipe.kernel.is_some()) {
        KernelBoot::AsGiven
    } else {
        KernelBoot::PreferPvh
    };
    let failed = std::fs::read(instance_dir.join(FAILED_MARK))
        .ok()
        .and_then(|b| FailedMark::parse(&String::from_utf8_lossy(&b[..b.len().min(4096)])));
    // The instance's memo over the image build's: the pristine files of
    // a launched volume are the build's own, nothing to read or extract.
    let mut memo = BootMemo::load(&boot_dir.join(MEMO_FILE));
    memo.extend(BootMemo::load(&instance_dir.join(MEMO_FILE)));
    let boot = read_boot(
        root,
        &data_dir.join("boot-cache"),
        how,
        failed.as_ref(),
        &memo,
    )?;
    if let Err(e) = boot.memo.save(&instance_dir.join(MEMO_FILE)) {
        tracing::warn!("cannot keep what was read of the root volume: {e}");
    }
    let mut console = String::new();
    for why in &boot.skipped {
        console.push_str(&format!("drydock boot: {why}\r\n"));
    }
    console.push_str(&format!("drydock boot: booting entry `{}`\r\n", boot.label));
    // What the kernel says of itself wins over what the image was built
    // with (the guest may have installed another kernel).
    let features = boot.features.clone().or(image_features);
    Ok(BootPlan {
        kernel: boot.kernel,
        initrd: boot.initrd,
        append: boot.append,
        virtio_mmio_cmdline: features.is_some_and(|f| f.virtio_mmio_on_cmdline()),
        label: Some(boot.label),
        console,
    })
}

/// Records that the boot of `plan` failed in the guest (see
/// [`failed_in_guest`]); the next boot tries the other entry first.
pub fn mark_failed(instance_dir: &Path, plan: &BootPlan) -> std::io::Result<()> {
    let Some(label) = &plan.label else {
        return Ok(());
    };
    FailedMark::new(label, &plan.kernel, &plan.initrd).save(&instance_dir.join(FAILED_MARK))
}

/// Whether a boot's console shows it failed before the root volume's init
/// ran: a kernel panic (no working init, no root, a module that oopses in
/// the initramfs) before the guest's `drydock: HOST is up` line.
pub fn failed_in_guest(console: &str) -> bool {
    match console.find("Kernel panic - not syncing") {
        Some(at) => !(console[..at].contains("drydock: ") && console[..at].contains(" is up (")),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_before_the_root_init_is_a_failed_boot() {
        assert!(failed_in_guest(
            "[    1.2] Kernel panic - not syncing: No working init found."
        ));
        assert!(!failed_in_guest(
            "drydock: i-1 is up (6.1)\nlogin: \nKernel panic - not syncing: sysrq triggered crash"
        ));
        assert!(!failed_in_guest("drydock: i-1 is up (6.1)\nlogin:"));
    }

    #[test]
    fn a_failed_boot_is_marked_with_its_files_and_an_old_image_marks_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut plan = BootPlan {
            kernel: "/cache/kernel-aa".into(),
            initrd: "/cache/initrd-bb".into(),
            append: String::new(),
            virtio_mmio_cmdline: false,
            label: None,
            console: String::new(),
        };
        mark_failed(dir.path(), &plan).unwrap();
        assert!(!dir.path().join(FAILED_MARK).exists());
        plan.label = Some("linux".into());
        mark_failed(dir.path(), &plan).unwrap();
        let text = std::fs::read_to_string(dir.path().join(FAILED_MARK)).unwrap();
        let mark = FailedMark::parse(&text).unwrap();
        assert_eq!(mark, FailedMark::new("linux", &plan.kernel, &plan.initrd));
    }
}
