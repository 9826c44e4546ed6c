#!/bin/sh
# Runs inside the nested lab's L2 (see scripts/nested-lab): the instance
# lifecycle on drydock's own KVM VMM, driven by a runbook. Lines starting
# with "LAB " are what tests/nested_lab.rs checks.
set -e
here="$(dirname "$0")"
echo "LAB backend probe: $(drydock --json host-info | tr -d "\n ")"
image_named() {
    drydock --json images | tr -d ' \n' | grep -o '"id":"img-[0-9a-f]*","name":"[^"]*"' \
        | sed -n "s/\"id\":\"\(img-[0-9a-f]*\)\",\"name\":\"$1\"/\1/p" | head -1
}
image="$(image_named lab-image)"
no_pci="$(image_named lab-no-pci)"
[ -n "$image" ] || { echo "LAB FAIL no image in the lab data directory"; exit 1; }
# Through a pipe: progress lines, not spinners, on the lab's console.
{ drydock run "$here/own-vmm.rhai" -p "image=$image" -p "image_no_pci=$no_pci"; echo $? > /tmp/runbook.rc; } 2>&1 | cat
if [ "$(cat /tmp/runbook.rc)" = 0 ]; then
    echo "LAB RUNBOOK OK"
else
    drydock instances || true
    echo "LAB RUNBOOK FAILED"
    for f in "$DRYDOCK_DATA_DIR"/instances/*/supervisor.log "$DRYDOCK_DATA_DIR"/instances/*/vmm.log; do echo "== $f"; tail -20 "$f"; done
    for f in "$DRYDOCK_DATA_DIR"/instances/*/console/boot-*.log; do echo "== $f"; tail -30 "$f"; done
    exit 1
fi
