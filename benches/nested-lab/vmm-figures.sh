#!/bin/sh
# Runs inside the nested lab's L2 (scripts/nested-lab): drydock's VMM and
# QEMU's microvm side by side on the same kernel, initramfs and memory,
# for Debian's cloud kernel (ELF vmlinux, PVH entry; and its compressed
# bzImage) and for drydock's minimal kernel (bzImage, no ACPI;
# scripts/minimal-kernel). drydock runs with its seccomp filters on (the
# default) and off (DRYDOCK_VMM_SECCOMP=off, which a VM spec without a
# "seccomp" field, as vmm-bench writes, takes as its default); QEMU with the
# first.
#   NESTED_LAB_QEMU=1 DRYDOCK=target/release/drydock scripts/nested-lab benches/nested-lab/vmm-figures.sh [RUNS]
set -e
runs="${1:-5}"
boot_dir_of() {
    drydock --json images | tr -d ' \n' | grep -o '"boot_dir":"[^"]*","created_at":[0-9]*,"drivers":\[[^]]*\],"id":"img-[0-9a-f]*","name":"'"$1"'"' \
        | sed 's/"boot_dir":"\([^"]*\)".*/\1/' | head -1
}
debian="$(boot_dir_of lab-image)"
minimal="$(boot_dir_of lab-minimal)"
for case in "debian $debian/vmlinux $debian/initramfs.cpio" \
    "debian-bzimage $debian/vmlinuz $debian/initramfs.cpio" \
    "minimal $minimal/vmlinuz $minimal/initramfs.cpio"; do
    set -- $case
    echo "FIGURES $1 kernel: $2, initramfs: $3, 256 MiB, 1 vCPU"
    echo "FIGURES $1 seccomp on"
    drydock vmm-bench --kernel "$2" --initrd "$3" \
        --memory-mib 256 --runs "$runs" --qemu "$NESTED_LAB_DIR/qemu/run-qemu" 2>&1 | sed "s/^/FIGURES $1 seccomp-on /"
    echo "FIGURES $1 seccomp off"
    DRYDOCK_VMM_SECCOMP=off drydock vmm-bench --kernel "$2" --initrd "$3" \
        --memory-mib 256 --runs "$runs" --qemu "" 2>&1 | sed "s/^/FIGURES $1 seccomp-off /"
done
