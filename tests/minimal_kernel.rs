//! Images on a kernel of the operator's own: drydock's minimal kernel
//! (scripts/minimal-kernel: tinyconfig, no ACPI, drivers built in, a
//! bzImage) becomes an image with `image build --kernel`, which reads the
//! kernel's embedded configuration to know how to boot it, and an instance
//! of it boots to a login under QEMU on this machine with its disks on the
//! kernel command line. (On drydock's own VMM the nested lab boots it.)
//! Bad kernels are refused with the fix.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{assert_code, assert_stderr, image_cache, text, vm_lock, Drydock};

const R: &str = "region-a";

/// Builds (once; cached with the images) and returns the minimal kernel.
fn minimal_kernel() -> PathBuf {
    let out = Command::new("scripts/minimal-kernel")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("DRYDOCK_IMAGE_CACHE", image_cache())
        .output()
        .expect("scripts/minimal-kernel runs");
    assert!(
        out.status.success(),
        "scripts/minimal-kernel failed:\n{}",
        text(&out.stderr)
    );
    PathBuf::from(text(&out.stdout).trim())
}

#[test]
fn an_image_on_the_minimal_kernel_boots_with_its_disks_on_the_command_line() {
    let kernel = minimal_kernel();
    let _vm = vm_lock();
    let dd = Drydock::new();
    let out = dd
        .command(&[
            "--json",
            "--region",
            R,
            "image",
            "build",
            "--name",
            "minimal",
            "--kernel",
            kernel.to_str().unwrap(),
        ])
        .env("DRYDOCK_IMAGE_CACHE", image_cache())
        .output()
        .unwrap();
    assert_code(&out, 0);
    let built: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let manifest = &built["manifest"];
    assert_eq!(manifest["load_order"], serde_json::json!([]), "no modules");
    assert_eq!(manifest["features"]["acpi"], false, "{manifest}");
    assert_eq!(manifest["features"]["virtio_mmio_cmdline"], true);
    assert_eq!(manifest["features"]["builtin_virtio"], true);
    assert!(manifest["kernel_release"]
        .as_str()
        .unwrap()
        .starts_with("6.1."));
    let img = built["image"]["id"].as_str().unwrap().to_string();

    let id = dd.launch(
        R,
        &img,
        &["--type", "m1.medium", "--root-password", "tiny-pass"],
    );
    let runbook = dd.write_runbook(
        "look.rhai",
        r#"
        runbook(#{ name: "look", params: #{ id: #{ type: "string" } } });
        let c = console::open(params.id);
        c.wait_for_boot("90s");
        c.login("root", "tiny-pass");
        let r = c.run("echo KERNEL=$(uname -r) CMDLINE_DISKS=$(tr ' ' '\\n' < /proc/cmdline | grep -c '^virtio_mmio.device=') ROOT=$(awk '$2 == \"/\" {print $1}' /proc/mounts | tail -1) DISKS=$(ls /sys/block | tr '\\n' ,)", "60s");
        print("LOOK " + r.stdout);
        "#,
    );
    let out = dd.run(&["run", runbook.to_str().unwrap(), "-p", &format!("id={id}")]);
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_code(&out, 0);
    let look = all
        .lines()
        .find(|l| l.contains("LOOK "))
        .unwrap_or_else(|| panic!("no LOOK line:\n{all}"));
    assert!(look.contains("KERNEL=6.1."), "{look}");
    assert!(!look.contains("cloud-amd64"), "{look}");
    assert!(
        !look.contains("CMDLINE_DISKS=0"),
        "disks on the command line: {look}"
    );
    assert!(look.contains("ROOT=/dev/vd"), "{look}");
    assert!(
        look.contains("vdc"),
        "root, config and instance-store disks: {look}"
    );

    // No ACPI: the guest syncs and then cannot power off by itself; the
    // stop still ends with the instance stopped.
    let out = dd.run(&["--region", R, "instance", "stop", &id]);
    assert_code(&out, 0);
    let i = dd.instance(R, &id);
    assert_eq!(i["state"], "stopped", "{i}");
    assert_eq!(i["state_reason"], "stopped by user");
}

#[test]
fn kernels_that_cannot_be_used_are_refused_with_the_fix() {
    let dd = Drydock::new();
    let build = |extra: &[&str]| {
        let mut args = vec!["--region", R, "image", "build", "--name", "k"];
        args.extend_from_slice(extra);
        dd.command(&args)
            .env("DRYDOCK_IMAGE_CACHE", image_cache())
            .output()
            .unwrap()
    };
    let out = build(&["--kernel", "/nonexistent/bzImage"]);
    assert_code(&out, 2);
    assert!(
        text(&out.stderr).contains("--kernel /nonexistent/bzImage: No such file")
            && text(&out.stderr).contains("scripts/minimal-kernel"),
        "{}",
        text(&out.stderr)
    );

    let junk = dd.work().join("not-a-kernel");
    std::fs::write(&junk, b"#!/bin/sh\necho hello\n").unwrap();
    let out = build(&["--kernel", junk.to_str().unwrap()]);
    assert_stderr(&out, 1, &["is neither a bzImage nor an ELF vmlinux"]);

    let out = build(&[
        "--kernel",
        junk.to_str().unwrap(),
        "--drivers",
        "virtio_blk",
    ]);
    assert_stderr(&out, 2, &["cannot be used with"]);
}
