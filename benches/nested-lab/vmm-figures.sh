#!/bin/sh
# Runs inside the nested lab's L2 (scripts/nested-lab): drydock's VMM and
# QEMU's microvm side by side on the project's kernel and initramfs.
#   scripts/nested-lab benches/nested-lab/vmm-figures.sh [RUNS]
# (NESTED_LAB_QEMU=1 scripts/nested-lab benches/nested-lab/vmm-figures.sh)
set -e
boot_dir="$(drydock --json images | sed -n 's/.*"boot_dir": *"\([^"]*\)".*/\1/p' | head -1)"
echo "FIGURES kernel: $boot_dir/vmlinux, initramfs: $boot_dir/initramfs.cpio, 256 MiB, 1 vCPU"
drydock vmm-bench --kernel "$boot_dir/vmlinux" --initrd "$boot_dir/initramfs.cpio" \
    --memory-mib 256 --runs "${1:-5}" --qemu "$NESTED_LAB_DIR/qemu/run-qemu" 2>&1 | sed "s/^/FIGURES /"
