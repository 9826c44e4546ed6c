#!/bin/sh
# drydock guest boot: system mounts, instance configuration from the
# config disk (label "cidata"), /etc/fstab with the classic prompt when a
# required mount fails, then init starts the console login.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts /run /tmp
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -o remount,rw /

# Instance configuration (NoCloud-style config disk, read-only).
mkdir -p /run/drydock/config
cfgdev="$(findfs LABEL=cidata 2>/dev/null)"
if [ -n "$cfgdev" ] && mount -t ext4 -o ro "$cfgdev" /run/drydock/config; then
    meta=/run/drydock/config/meta-data
    get() { sed -n "s/^$1: *//p" "$meta"; }
    instance_id="$(get instance-id)"
    hostname="$(get local-hostname)"
    [ -n "$hostname" ] && echo "$hostname" > /etc/hostname
    if [ -s /run/drydock/config/root-password-hash ]; then
        hash="$(cat /run/drydock/config/root-password-hash)"
        sed -i "s|^root:[^:]*:|root:$hash:|" /etc/shadow
    fi
    if [ -s /run/drydock/config/authorized_keys ]; then
        mkdir -p /root/.ssh
        cp /run/drydock/config/authorized_keys /root/.ssh/authorized_keys
        chmod 700 /root/.ssh
        chmod 600 /root/.ssh/authorized_keys
    fi
    cp "$meta" /run/drydock/meta-data
    if [ -s /run/drydock/config/user-data ] && [ ! -e "/var/lib/drydock/user-data-done-$instance_id" ]; then
        mkdir -p /var/lib/drydock
        echo "drydock: running user-data of $instance_id"
        sh /run/drydock/config/user-data && touch "/var/lib/drydock/user-data-done-$instance_id"
    fi
else
    echo "drydock: no config disk found; keeping the image's defaults"
fi
hostname -F /etc/hostname

# Disks that come and go while the instance runs are announced on the console.
mdev -d

# /etc/fstab: every entry but the root; a failing required mount stops the
# boot at a prompt on the console, as classic init systems do.
grep -v '^[[:space:]]*#' /etc/fstab | while read -r dev mnt fstype opts rest; do
    [ -z "$dev" ] && continue
    [ "$mnt" = "/" ] && continue
    mkdir -p "$mnt"
    if ! mount -t "$fstype" -o "$opts" "$dev" "$mnt" 2>/dev/null; then
        case ",$opts," in *,nofail,*) echo "drydock: skipping $dev on $mnt (nofail)"; continue ;; esac
        echo "mount: $mnt: cannot mount $dev"
        while true; do
            echo "Press S to skip mounting or M for manual recovery"
            # One key, no Enter needed (as systemd's emergency prompt).
            saved="$(stty -g < /dev/console)"
            stty -icanon min 1 < /dev/console
            key="$(dd bs=1 count=1 2>/dev/null < /dev/console)"
            stty "$saved" < /dev/console
            case "$key" in
                S|s) echo "skipping $mnt"; break ;;
                M|m) echo "manual recovery: exit the shell to continue booting"; setsid cttyhack sh; break ;;
            esac
        done
    fi
done

# Services: /etc/init.d/S<NN><name>, in order; not executable = disabled.
for s in /etc/init.d/S[0-9][0-9]*; do
    [ -e "$s" ] || continue
    name="${s##*/S??}"
    if [ ! -x "$s" ]; then
        echo "drydock: service $name is disabled"
    elif "$s" start > /dev/null 2>&1; then
        echo "drydock: service $name started"
    else
        echo "drydock: service $name failed to start"
    fi
done

disks=""
for s in /sys/block/vd*/serial; do
    [ -e "$s" ] || continue
    d="${s%/serial}"
    disks="$disks ${d##*/}=$(cat "$s")"
done
echo "drydock: disks:$disks"
addrs="$(ip -4 -o addr show scope global 2>/dev/null | awk '{ printf " %s=%s", $2, $4 }')"
echo "drydock: network:${addrs:- none}"
echo "drydock: $(hostname) is up ($(uname -r))"

