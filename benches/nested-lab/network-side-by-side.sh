#!/bin/sh
# Runs inside the nested lab's L2 (scripts/nested-lab): the instance
# network on drydock's own VMM and on QEMU (KVM accelerated, the same L2)
# side by side — launch to SSH, ping to the router, 2 MiB over SSH, a
# metadata GET — on m1.small (virtio-mmio) and n2.small (virtio-pci).
#   NESTED_LAB_QEMU=1 scripts/nested-lab benches/nested-lab/network-side-by-side.sh
set -e
here="$(dirname "$0")"
image="$(drydock --json images | tr -d ' \n' | grep -o '"id":"img-[0-9a-f]*","name":"lab-image"' | sed 's/"id":"\(img-[0-9a-f]*\)".*/\1/' | head -1)"
[ -n "$image" ] || { echo "FIGURES no lab image"; exit 1; }
[ -x "$NESTED_LAB_DIR/qemu/run-qemu" ] || { echo "FIGURES run with NESTED_LAB_QEMU=1"; exit 2; }
rc=0
for backend in drydock qemu; do
    # Through a pipe: progress lines, not spinners, on the lab's console.
    { status=0
      DRYDOCK_BACKEND=$backend DRYDOCK_QEMU="$NESTED_LAB_DIR/qemu/run-qemu" \
        drydock run "$here/network-side-by-side.rhai" -p "image=$image" -p "backend=$backend" || status=$?
      echo "$status" > "/tmp/rc.$backend"; } 2>&1 | cat
    [ "$(cat "/tmp/rc.$backend")" = 0 ] || rc=1
done
exit $rc
