//! Instances boot what their root volume holds (issue 12, part 1).
//!
//! On volumes built here with `mke2fs -d`: the host's ext4 reading gives
//! the same bytes as `debugfs -R 'cat …'` (on these volumes and on the
//! image's real root volume); a missing kernel or a damaged initrd boots
//! the fallback entry; no configuration, a bad one, a volume that is not
//! ext4, a file over the size limit and a volume where nothing boots are
//! errors that say what is wrong; an entry that failed in the guest is
//! tried last.
//!
//! With real guests (QEMU TCG here): `update-initramfs` in the guest and a
//! reboot boot the new initramfs (its driver list shows in `lsmod` and
//! `lsinitramfs`); an APPEND changed with `debugfs -w` on the stopped
//! instance's volume reaches /proc/cmdline; a damaged default initramfs
//! boots the fallback entry; a volume where nothing boots fails the start
//! with the reason on the console and in the state; an initramfs whose
//! init cannot run panics the kernel, and the host boots the fallback.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::scenario::{Scenario, ROOT_PW};
use common::{assert_code, text, vm_lock, Drydock};
use drydock_images::boot_volume::{
    read_boot, BootFailure, BootMemo, FailedMark, KernelBoot, VolumeBoot, MEMO_FILE,
};
use drydock_images::{make_ext4, CpioWriter, EntryKind};

const R: &str = "region-a";

/// Deterministic bytes that do not compress or repeat (no holes).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A bzImage header over `len` bytes of noise (what the host checks of a
/// kernel it boots as given).
fn fake_bzimage(len: usize, seed: u64) -> Vec<u8> {
    let mut k = noise(len, seed);
    k[0x202..0x206].copy_from_slice(b"HdrS");
    k[0x1f1] = 1;
    let syssize = ((len - 1024) / 16) as u32;
    k[0x1f4..0x1f8].copy_from_slice(&syssize.to_le_bytes());
    k
}

fn initrd(extra: usize, seed: u64) -> Vec<u8> {
    let mut w = CpioWriter::new(Vec::new());
    w.add("init", 0o755, EntryKind::File(b"#!/bin/sh\n"))
        .unwrap();
    w.add("blob", 0o644, EntryKind::File(&noise(extra, seed)))
        .unwrap();
    w.finish().unwrap()
}

/// The boot files of a volume read with no memo and no failed entry.
fn read_fresh(volume: &Path, cache: &Path, how: KernelBoot) -> Result<VolumeBoot, BootFailure> {
    read_boot(volume, cache, how, None, &BootMemo::default())
}

const CONF: &str = "DEFAULT linux
FALLBACK previous
LABEL linux
    KERNEL /boot/vmlinuz-t
    INITRD /boot/initrd.img-t
    APPEND quiet marker=default
LABEL previous
    KERNEL /boot/vmlinuz-t
    INITRD /boot/initrd.img-t.old
    APPEND quiet marker=previous
";

/// An ext4 volume holding `files` (path, bytes), made without privileges.
fn volume(dir: &Path, files: &[(&str, Vec<u8>)]) -> PathBuf {
    let tree = dir.join("tree");
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::create_dir_all(tree.join("boot")).unwrap();
    for (path, bytes) in files {
        let p = tree.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
    }
    let out = dir.join("root.ext4");
    make_ext4(&tree, "root", 64, &out).unwrap();
    out
}

fn good_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("/boot/extlinux/extlinux.conf", CONF.as_bytes().to_vec()),
        ("/boot/vmlinuz-t", fake_bzimage(5 << 20, 1)),
        ("/boot/initrd.img-t", initrd(3 << 20, 2)),
        ("/boot/initrd.img-t.old", initrd(1 << 20, 3)),
    ]
}

fn debugfs_cat(volume: &Path, path: &str) -> Vec<u8> {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(format!("cat {path}"))
        .arg(volume)
        .output()
        .expect("debugfs (e2fsprogs) runs");
    assert!(out.status.success(), "debugfs: {}", text(&out.stderr));
    out.stdout
}

fn with_files(
    files: &[(&'static str, Vec<u8>)],
    change: &[(&'static str, Option<Vec<u8>>)],
) -> Vec<(&'static str, Vec<u8>)> {
    let mut files = files.to_vec();
    for (path, bytes) in change {
        files.retain(|(p, _)| p != path);
        if let Some(b) = bytes {
            files.push((path, b.clone()));
        }
    }
    files
}

#[test]
fn the_host_reads_the_same_bytes_as_debugfs() {
    let dir = tempfile::tempdir().unwrap();
    let vol = volume(dir.path(), &good_files());
    let cache = dir.path().join("cache");
    let boot = read_fresh(&vol, &cache, KernelBoot::AsGiven).unwrap();
    assert_eq!(boot.label, "linux");
    assert_eq!(boot.append, "quiet marker=default");
    assert!(boot.skipped.is_empty(), "{:?}", boot.skipped);
    assert_eq!(
        std::fs::read(&boot.kernel).unwrap(),
        debugfs_cat(&vol, "/boot/vmlinuz-t")
    );
    assert_eq!(
        std::fs::read(&boot.initrd).unwrap(),
        debugfs_cat(&vol, "/boot/initrd.img-t")
    );
    // Content-addressed: the same files give the same cache entries.
    let again = read_fresh(&vol, &cache, KernelBoot::AsGiven).unwrap();
    assert_eq!((again.kernel, again.initrd), (boot.kernel, boot.initrd));
}

#[test]
fn the_image_root_volume_is_read_like_debugfs_and_fast_when_cached() {
    let dd = Drydock::new();
    dd.image(R);
    let images = dd.json(&["--region", R, "images"]);
    let boot_dir = PathBuf::from(images["images"][0]["boot_dir"].as_str().unwrap());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(boot_dir.join("manifest.json")).unwrap()).unwrap();
    let release = manifest["kernel_release"].as_str().unwrap();
    let root = boot_dir.join("root.ext4");
    let cache = tempfile::tempdir().unwrap();
    let given = read_fresh(&root, cache.path(), KernelBoot::AsGiven).unwrap();
    let vmlinuz = debugfs_cat(&root, &format!("/boot/vmlinuz-{release}"));
    assert_eq!(std::fs::read(&given.kernel).unwrap(), vmlinuz);
    let initrd = debugfs_cat(&root, &format!("/boot/initrd.img-{release}"));
    assert_eq!(std::fs::read(&given.initrd).unwrap(), initrd);
    assert_eq!(
        initrd,
        std::fs::read(boot_dir.join("initramfs.cpio")).unwrap()
    );
    // Debian's kernel boots through its PVH entry: the ELF extracted from
    // the volume's bzImage is the one the image build extracted.
    let start = Instant::now();
    let pvh = read_fresh(&root, cache.path(), KernelBoot::PreferPvh).unwrap();
    let first = start.elapsed();
    assert_eq!(
        std::fs::read(&pvh.kernel).unwrap(),
        std::fs::read(boot_dir.join("vmlinux")).unwrap()
    );
    // Launched from the build, the volume's files are the build's own:
    // with the build's memo nothing is read, hashed or extracted.
    let seed = BootMemo::load(&boot_dir.join(MEMO_FILE));
    assert_eq!(seed.len(), 4, "{seed:?}");
    let start = Instant::now();
    let seeded = read_boot(&root, cache.path(), KernelBoot::PreferPvh, None, &seed).unwrap();
    let with_memo = start.elapsed();
    assert_eq!(seeded.kernel, boot_dir.join("vmlinux"));
    assert_eq!(seeded.initrd, boot_dir.join("initramfs.cpio"));
    let start = Instant::now();
    let cached = read_fresh(&root, cache.path(), KernelBoot::PreferPvh).unwrap();
    let hit = start.elapsed();
    assert_eq!(cached.kernel, pvh.kernel);
    assert_eq!(cached.append, "quiet cryptomgr.notests");
    println!(
        "boot files from the root volume: first read {:.0} ms (extracts the ELF), cached {:.0} ms (read and hashed), with the build's memo {:.0} ms",
        first.as_secs_f64() * 1000.0,
        hit.as_secs_f64() * 1000.0,
        with_memo.as_secs_f64() * 1000.0
    );
}

#[test]
fn a_memo_is_used_only_while_the_files_are_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let vol = volume(dir.path(), &good_files());
    // A memo saying the volume's files are these two host files.
    let (k, i) = (dir.path().join("k"), dir.path().join("i"));
    std::fs::write(&k, b"kernel").unwrap();
    std::fs::write(&i, b"initrd").unwrap();
    let memo = BootMemo::for_image(
        &vol,
        "/boot/vmlinuz-t",
        &[(KernelBoot::AsGiven, k.clone())],
        &["/boot/initrd.img-t"],
        &i,
    )
    .unwrap();
    let boot = read_boot(&vol, &cache, KernelBoot::AsGiven, None, &memo).unwrap();
    assert_eq!((&boot.kernel, &boot.initrd), (&k, &i));
    // What was used is remembered for the next start.
    assert_eq!(boot.memo.len(), 2);
    // Another initrd in the volume (another size and time): read again.
    let vol = volume(
        dir.path(),
        &with_files(
            &good_files(),
            &[("/boot/initrd.img-t", Some(initrd(2 << 20, 8)))],
        ),
    );
    let boot = read_boot(&vol, &cache, KernelBoot::AsGiven, None, &memo).unwrap();
    assert_ne!(boot.initrd, i);
    assert_eq!(
        std::fs::read(&boot.initrd).unwrap(),
        debugfs_cat(&vol, "/boot/initrd.img-t")
    );
}

#[test]
fn a_missing_kernel_or_a_damaged_initrd_boots_the_fallback_entry() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    // The default entry's kernel is another file, which is missing.
    let conf = CONF.replacen("KERNEL /boot/vmlinuz-t", "KERNEL /boot/vmlinuz-new", 1);
    let vol = volume(
        dir.path(),
        &with_files(
            &good_files(),
            &[("/boot/extlinux/extlinux.conf", Some(conf.into_bytes()))],
        ),
    );
    let boot = read_fresh(&vol, &cache, KernelBoot::AsGiven).unwrap();
    assert_eq!(boot.label, "previous");
    assert_eq!(boot.append, "quiet marker=previous");
    assert!(
        boot.skipped[0].contains("entry `linux`: /boot/vmlinuz-new: not found"),
        "{:?}",
        boot.skipped
    );
    assert_eq!(
        std::fs::read(&boot.initrd).unwrap(),
        debugfs_cat(&vol, "/boot/initrd.img-t.old")
    );
    // Damaged initrds: garbage, a cpio archive cut short, one without init.
    let mut cut = initrd(1 << 20, 4);
    cut.truncate(300_000);
    let mut no_init = CpioWriter::new(Vec::new());
    no_init.add("bin", 0o755, EntryKind::Dir).unwrap();
    for (bad, why) in [
        (noise(100_000, 5), "not an initramfs"),
        (cut, "truncated cpio archive"),
        (no_init.finish().unwrap(), "has no init"),
    ] {
        let vol = volume(
            dir.path(),
            &with_files(&good_files(), &[("/boot/initrd.img-t", Some(bad))]),
        );
        let boot = read_fresh(&vol, &cache, KernelBoot::AsGiven).unwrap();
        assert_eq!(boot.label, "previous", "{why}");
        assert!(
            boot.skipped[0].contains("initrd /boot/initrd.img-t: ")
                && boot.skipped[0].contains(why),
            "{why}: {:?}",
            boot.skipped
        );
    }
    // A kernel cut short is not booted either.
    let mut kernel = fake_bzimage(5 << 20, 1);
    kernel.truncate(1 << 20);
    let vol = volume(
        dir.path(),
        &with_files(&good_files(), &[("/boot/vmlinuz-t", Some(kernel))]),
    );
    let err = read_fresh(&vol, &cache, KernelBoot::AsGiven).unwrap_err();
    assert!(
        matches!(err, BootFailure::NoBootableEntry(_))
            && err
                .to_string()
                .contains("entry `linux`: kernel /boot/vmlinuz-t: a truncated bzImage")
            && err
                .to_string()
                .contains("entry `previous`: kernel /boot/vmlinuz-t"),
        "{err}"
    );
}

#[test]
fn what_cannot_boot_is_named_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let read = |files: &[(&'static str, Vec<u8>)]| {
        let vol = volume(dir.path(), files);
        read_fresh(&vol, &cache, KernelBoot::AsGiven)
            .unwrap_err()
            .to_string()
    };
    let err = read(&with_files(
        &good_files(),
        &[("/boot/extlinux/extlinux.conf", None)],
    ));
    assert!(
        err.starts_with(
            "no boot configuration: /boot/extlinux/extlinux.conf is not on the root volume"
        ) && err.contains("rescue instance"),
        "{err}"
    );
    let err = read(&with_files(
        &good_files(),
        &[(
            "/boot/extlinux/extlinux.conf",
            Some(b"DEFAULT linux\nLABEL linux\n  KERNEL /boot/../etc/shadow\n".to_vec()),
        )],
    ));
    assert!(
        err.starts_with("bad boot configuration: /boot/extlinux/extlinux.conf line 3:")
            && err.contains("not a plain path under /boot/"),
        "{err}"
    );
    let err = read(&with_files(
        &good_files(),
        &[(
            "/boot/extlinux/extlinux.conf",
            Some(b"DEFAULT nothing\nLABEL linux\n  KERNEL /boot/vmlinuz-t\n".to_vec()),
        )],
    ));
    assert!(err.contains("DEFAULT `nothing` names no LABEL"), "{err}");
    // Nothing bootable: both entries' initrds are gone.
    let err = read(&with_files(
        &good_files(),
        &[
            ("/boot/initrd.img-t", None),
            ("/boot/initrd.img-t.old", None),
        ],
    ));
    assert!(
        err.starts_with("no bootable entry in /boot/extlinux/extlinux.conf: entry `linux`: /boot/initrd.img-t: not found; entry `previous`: /boot/initrd.img-t.old: not found"),
        "{err}"
    );
    // An empty kernel file.
    let err = read(&with_files(
        &good_files(),
        &[("/boot/vmlinuz-t", Some(Vec::new()))],
    ));
    assert!(err.contains("not a kernel"), "{err}");
    // A volume that is not ext4 at all.
    let junk = dir.path().join("junk.raw");
    std::fs::write(&junk, noise(1 << 20, 9)).unwrap();
    let err = read_fresh(&junk, &cache, KernelBoot::AsGiven)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("unreadable file system on the root volume") && err.contains("e2fsck"),
        "{err}"
    );
}

#[test]
fn an_oversized_kernel_is_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    for (path, bytes) in good_files() {
        let p = tree.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
    }
    // 65 MiB, sparse: mke2fs -d keeps the hole, the volume stays small.
    let big = std::fs::OpenOptions::new()
        .write(true)
        .open(tree.join("boot/vmlinuz-t"))
        .unwrap();
    big.set_len(65 << 20).unwrap();
    drop(big);
    let vol = dir.path().join("root.ext4");
    make_ext4(&tree, "root", 64, &vol).unwrap();
    let err = read_fresh(&vol, &dir.path().join("cache"), KernelBoot::AsGiven)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/boot/vmlinuz-t is 65 MiB, more than the 64 MiB drydock reads"),
        "{err}"
    );
}

#[test]
fn an_entry_that_failed_in_the_guest_is_tried_last_while_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let vol = volume(dir.path(), &good_files());
    let first = read_fresh(&vol, &cache, KernelBoot::AsGiven).unwrap();
    let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
    let mark = FailedMark {
        label: "linux".into(),
        kernel: name(&first.kernel),
        initrd: name(&first.initrd),
    };
    let boot = read_boot(
        &vol,
        &cache,
        KernelBoot::AsGiven,
        Some(&mark),
        &BootMemo::default(),
    )
    .unwrap();
    assert_eq!(boot.label, "previous");
    assert!(
        boot.skipped[0].contains("entry `linux` failed in the guest at its last boot"),
        "{:?}",
        boot.skipped
    );
    // A new initramfs in the default entry: the mark no longer applies.
    let vol = volume(
        dir.path(),
        &with_files(
            &good_files(),
            &[("/boot/initrd.img-t", Some(initrd(2 << 20, 7)))],
        ),
    );
    assert_eq!(
        read_boot(
            &vol,
            &cache,
            KernelBoot::AsGiven,
            Some(&mark),
            &BootMemo::default()
        )
        .unwrap()
        .label,
        "linux"
    );
    // No other entry: the failed one boots again, saying so.
    let only = b"LABEL linux\n  KERNEL /boot/vmlinuz-t\n  INITRD /boot/initrd.img-t\n".to_vec();
    let vol = volume(
        dir.path(),
        &with_files(
            &good_files(),
            &[("/boot/extlinux/extlinux.conf", Some(only))],
        ),
    );
    let boot = read_boot(
        &vol,
        &cache,
        KernelBoot::AsGiven,
        Some(&mark),
        &BootMemo::default(),
    )
    .unwrap();
    assert_eq!(boot.label, "linux");
    assert!(
        boot.skipped
            .last()
            .unwrap()
            .contains("booting `linux` again"),
        "{:?}",
        boot.skipped
    );
}

// ---- real guests ----

/// Replaces a file of a stopped instance's root volume with `debugfs -w`.
fn debugfs_write(volume: &Path, path: &str, bytes: &[u8]) {
    let src = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(src.path(), bytes).unwrap();
    for req in [
        format!("rm {path}"),
        format!("write {} {path}", src.path().display()),
    ] {
        let out = Command::new("debugfs")
            .args(["-w", "-R", &req])
            .arg(volume)
            .output()
            .unwrap();
        assert!(out.status.success(), "debugfs {req}: {}", text(&out.stderr));
    }
}

#[test]
fn a_guest_boots_its_volume_its_new_initramfs_its_append_and_its_fallback() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    let id = Scenario::instance(&dd, "m1.small");
    assert!(dd
        .console(R, &id, None)
        .contains("drydock boot: booting entry `linux`"));

    // update-initramfs without virtio_pci (an m1 has no PCI), then reboot:
    // the new initramfs boots and the old one is the fallback.
    let out = dd.in_guest(R, &id, "bfv-update", ROOT_PW,
        &[
            ("before", "lsmod | grep -c '^virtio_pci '"),
            // Built in the guest from the same module list, the
            // initramfs holds what the host built.
            (
                "same",
                "update-initramfs -n | grep -v '^update-initramfs:' | sort > /tmp/a && lsinitramfs | sort > /tmp/b && cmp /tmp/a /tmp/b && wc -l < /tmp/a",
            ),
            ("listed", "lsinitramfs | grep -c virtio_pci"),
            (
                "update",
                "sed -i '/^virtio_pci$/d' /etc/initramfs/modules && update-initramfs",
            ),
            ("drivers", "lsinitramfs -l"),
            ("conf", "cat /boot/extlinux/extlinux.conf"),
        ],
    );
    assert_eq!(out["before"], "1\n", "{out}");
    // bin, dev, etc, lib, lib/modules, newroot, proc, sys, the console,
    // busybox, sh, 7 modules, the driver list, init.
    assert_eq!(out["same"], "20\n", "{out}");
    assert_ne!(out["listed"], "0\n", "{out}");
    let drivers = out["drivers"].as_str().unwrap();
    assert!(
        drivers.contains("virtio_mmio")
            && drivers.contains("virtio_blk")
            && !drivers.contains("virtio_pci\n"),
        "{out}"
    );
    let conf = out["conf"].as_str().unwrap();
    assert!(
        conf.contains("FALLBACK previous") && conf.contains(".old"),
        "{conf}"
    );
    let before = dd.boots(R, &id);
    let reboot = dd.run(&["--region", R, "instance", "reboot", &id]);
    assert_code(&reboot, 0);
    dd.wait_login_of_boot(R, &id, before + 1);
    let out = dd.in_guest(
        R,
        &id,
        "bfv-after",
        ROOT_PW,
        &[
            ("lsmod", "lsmod"),
            ("listed", "lsinitramfs | grep -c virtio_pci || true"),
            (
                "old",
                "lsinitramfs /boot/initrd.img-$(uname -r).old | grep -c virtio_pci",
            ),
        ],
    );
    let lsmod = out["lsmod"].as_str().unwrap();
    assert!(
        lsmod.contains("virtio_mmio") && !lsmod.contains("virtio_pci "),
        "{lsmod}"
    );
    assert_eq!(out["listed"], "0\n", "{out}");
    assert_ne!(out["old"], "0\n", "{out}");

    // The APPEND of the stopped instance's volume, changed with debugfs.
    dd.stop_instance(R, &id);
    let vol = dd.root_volume_path(R, &id);
    let conf = String::from_utf8(debugfs_cat(&vol, "/boot/extlinux/extlinux.conf")).unwrap();
    let conf = conf.replace(
        "APPEND quiet cryptomgr.notests",
        "APPEND quiet cryptomgr.notests drydock.test=from-volume",
    );
    debugfs_write(&vol, "/boot/extlinux/extlinux.conf", conf.as_bytes());
    dd.start_instance(R, &id);
    let out = dd.in_guest(
        R,
        &id,
        "bfv-cmdline",
        ROOT_PW,
        &[("cmdline", "cat /proc/cmdline")],
    );
    assert!(
        out["cmdline"]
            .as_str()
            .unwrap()
            .contains("drydock.test=from-volume"),
        "{out}"
    );

    // A damaged default initramfs: the fallback entry boots.
    dd.stop_instance(R, &id);
    let release = conf
        .lines()
        .find_map(|l| l.trim().strip_prefix("INITRD /boot/initrd.img-"))
        .unwrap()
        .trim()
        .to_string();
    debugfs_write(
        &vol,
        &format!("/boot/initrd.img-{release}"),
        b"not an initramfs at all",
    );
    dd.start_instance(R, &id);
    dd.wait_login(R, &id);
    let console = dd.console(R, &id, None);
    assert!(
        console.contains(&format!(
            "drydock boot: entry `linux`: initrd /boot/initrd.img-{release}: not an initramfs"
        )) && console.contains("drydock boot: booting entry `previous`"),
        "{console}"
    );
    let out = dd.in_guest(R, &id, "bfv-fallback", ROOT_PW, &[("lsmod", "lsmod")]);
    // The previous initramfs is the one with virtio_pci.
    assert!(
        out["lsmod"].as_str().unwrap().contains("virtio_pci "),
        "{out}"
    );

    // Nothing bootable: the start fails like a machine's, saying why.
    dd.stop_instance(R, &id);
    debugfs_write(&vol, &format!("/boot/initrd.img-{release}.old"), b"");
    let start = dd.run(&["--region", R, "instance", "start", &id]);
    assert_code(&start, 1);
    let err = text(&start.stderr);
    assert!(err.contains("boot failed: no bootable entry"), "{err}");
    let inst = dd.instance(R, &id);
    assert_eq!(inst["state"], "stopped");
    assert!(
        inst["state_reason"]
            .as_str()
            .unwrap()
            .starts_with("boot failed: no bootable entry in /boot/extlinux/extlinux.conf"),
        "{inst}"
    );
    let console = dd.console(R, &id, None);
    assert!(
        console.contains("drydock boot: no bootable entry") && console.contains("not an initramfs"),
        "{console}"
    );
}

#[test]
fn an_initramfs_that_panics_the_kernel_boots_the_fallback_entry() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    let id = Scenario::instance(&dd, "m1.small");
    let first = dd.boots(R, &id);
    // A "bad upgrade": an initramfs whose init cannot run, then a reboot.
    dd.in_guest(R, &id, "bfv-break", ROOT_PW,
        &[(
            "break",
            "mkdir -p /tmp/bad && printf '#!/nonexistent\\n' > /tmp/bad/init && chmod 755 /tmp/bad/init && (cd /tmp/bad && echo init | cpio -o -H newc > /boot/initrd.img-$(uname -r)) && sync",
        )],
    );
    dd.reboot_instance(R, &id);
    // The new initramfs boots and panics; the host sees the panic at the
    // reset and boots the fallback entry.
    let start = Instant::now();
    loop {
        let console = dd.console(R, &id, None);
        if console.contains(&format!("{id} login:")) && dd.boots(R, &id) >= first + 2 {
            assert!(
                console
                    .contains("drydock boot: entry `linux` failed in the guest at its last boot")
                    && console.contains("drydock boot: booting entry `previous`"),
                "{console}"
            );
            break;
        }
        assert!(
            start.elapsed().as_secs() < 180,
            "no fallback boot; console:\n{console}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let n = dd.boots(R, &id);
    let panicked = (first + 1..n).any(|b| {
        dd.console(R, &id, Some(b as u32))
            .contains("Kernel panic - not syncing")
    });
    assert!(panicked, "no boot between {first} and {n} shows the panic");
    assert_eq!(dd.instance(R, &id)["state"], "running");
}

#[test]
fn an_instance_stopped_while_writing_starts_again_with_its_synced_data() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    let id = Scenario::instance(&dd, "m1.small");
    // Synced data, then metadata churn (directories made and removed:
    // revoke records in the journal) still going when the VM is killed.
    dd.in_guest(R, &id, "bfv-churn", ROOT_PW,
        &[
            ("kept", "echo kept-before-the-cut > /root/kept && sync && cat /root/kept"),
            (
                "churn",
                "sh -c 'while :; do for i in 1 2 3 4 5 6 7 8; do mkdir -p /churn/$i/a/b; echo x > /churn/$i/a/b/f; done; rm -rf /churn; done' > /dev/null 2>&1 & echo started",
            ),
        ],
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    let first = dd.boots(R, &id);
    dd.force_stop(R, &id);
    let root = dd.root_volume_path(R, &id);
    assert!(
        drydock_host::journal_replay::needs_recovery(&root).unwrap(),
        "a volume mounted read-write and cut off needs its journal replayed"
    );
    dd.start_instance(R, &id);
    dd.wait_login_of_boot(R, &id, first + 1);
    let console = dd.console(R, &id, None);
    assert!(
        console.contains("drydock boot: replayed the root volume's journal")
            && console.contains("drydock boot: booting entry `linux`"),
        "{console}"
    );
    let out = dd.in_guest(R, &id, "bfv-kept", ROOT_PW, &[("kept", "cat /root/kept")]);
    assert_eq!(out["kept"].as_str().unwrap().trim(), "kept-before-the-cut");
}
