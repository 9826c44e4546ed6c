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
minimal="$(image_named lab-minimal)"
[ -n "$image" ] || { echo "LAB FAIL no image in the lab data directory"; exit 1; }
dump_logs() {
    for f in "$DRYDOCK_DATA_DIR"/instances/*/supervisor.log "$DRYDOCK_DATA_DIR"/instances/*/vmm.log; do echo "== $f"; tail -20 "$f"; done
    for f in "$DRYDOCK_DATA_DIR"/instances/*/console/boot-*.log; do echo "== $f"; tail -30 "$f"; done
}
# A run that hangs would otherwise end in the lab's timeout with nothing to
# show: before that, print where every drydock thread is waiting.
(
    sleep "${LAB_WATCHDOG_S:-420}"
    echo "LAB WATCHDOG: the runbook is still running after ${LAB_WATCHDOG_S:-420} s"
    ps
    for p in /proc/[0-9]*; do
        grep -q drydock "$p/cmdline" 2>/dev/null || continue
        echo "== process ${p#/proc/}: $(tr '\0' ' ' < "$p/cmdline")"
        for t in "$p"/task/*; do
            echo "-- thread ${t##*/} $(cat "$t/comm") state=$(sed -n 's/^State:\t//p' "$t/status") wchan=$(cat "$t/wchan") syscall=$(cut -d' ' -f1 "$t/syscall")"
            sed 's/^/     /' "$t/stack" 2>/dev/null | head -8
        done
    done
    dump_logs
) &
watchdog=$!
# Through a pipe: progress lines, not spinners, on the lab's console.
{ drydock run "$here/own-vmm.rhai" -p "image=$image" -p "image_no_pci=$no_pci" -p "image_minimal=$minimal"; echo $? > /tmp/runbook.rc; } 2>&1 | cat
if [ "$(cat /tmp/runbook.rc)" = 0 ]; then
    kill "$watchdog" 2>/dev/null
    echo "LAB RUNBOOK OK"
else
    drydock instances || true
    echo "LAB RUNBOOK FAILED"
    kill "$watchdog" 2>/dev/null
    dump_logs
    exit 1
fi
