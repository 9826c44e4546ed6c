#!/bin/busybox sh
# drydock initramfs: load the image's drivers, find the root volume, switch
# to it; when the root device never appears, say why and open a shell on
# the console.
/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin /proc /sys /dev /newroot
/bin/busybox --install -s
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys

root=/dev/vda
for arg in $(cat /proc/cmdline); do
    case "$arg" in root=*) root="${arg#root=}" ;; esac
done

drivers="$(cat /etc/drydock-drivers)"
# Module parameters on the kernel command line (`virtio_mmio.device=...`,
# as modprobe would pass them) go to insmod.
for m in $drivers; do
    params=""
    for arg in $(cat /proc/cmdline); do
        case "$arg" in "$m".*=*) params="$params ${arg#"$m".}" ;; esac
    done
    insmod "/lib/modules/$m.ko" $params || echo "drydock-initramfs: cannot load driver $m"
done

# root=serial:ID names the disk whose virtio serial is ID (the volume id),
# so the root is found whatever order the disks appear in.
want_serial=""
case "$root" in serial:*) want_serial="${root#serial:}" ;; esac
find_root() {
    [ -z "$want_serial" ] && return 0
    for s in /sys/class/block/*/serial; do
        [ -e "$s" ] || continue
        if [ "$(cat "$s")" = "$want_serial" ]; then
            d="${s%/serial}"
            root="/dev/${d##*/}"
            return 0
        fi
    done
    return 1
}
n=0
while [ "$n" -lt 50 ]; do
    find_root && [ -b "$root" ] && break
    sleep 0.1
    n=$((n + 1))
done

rescue() {
    echo "drydock-initramfs: $1"
    echo "drydock-initramfs: drivers in this image: $(echo $drivers)"
    echo "drydock-initramfs: block devices seen: $(ls /sys/class/block 2>/dev/null | tr '\n' ' ')"
    echo "drydock-initramfs: dropping to an emergency shell"
    exec setsid cttyhack sh
}

[ -b "$root" ] || rescue "root device $root did not appear after 5s; the instance type may need a driver this image lacks"
mount -t ext4 -o rw "$root" /newroot || rescue "cannot mount root device $root"
[ -x /newroot/sbin/init ] || rescue "root volume on $root has no /sbin/init"
mkdir -p /newroot/dev
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot /sbin/init
