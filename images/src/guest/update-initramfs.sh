#!/bin/sh
# update-initramfs: rebuilds /boot/initrd.img-VERSION from the modules named
# in /etc/initramfs/modules (one a line; their dependencies are added) and
# the modules present in /lib/modules/VERSION, with drydock's initramfs init
# (/usr/share/drydock/initramfs-init). The initramfs it replaces becomes
# /boot/initrd.img-VERSION.old, which the `previous` entry of
# /boot/extlinux/extlinux.conf boots when the new one cannot be (the host
# reads that file at every start: DEFAULT, then FALLBACK).
#
#   update-initramfs [-u] [-k VERSION] [-n]
#     -k VERSION  the kernel release (default: the DEFAULT entry's)
#     -n          build, check and list only; replace nothing
set -e
conf=/boot/extlinux/extlinux.conf
list=/etc/initramfs/modules
init=/usr/share/drydock/initramfs-init
say() { echo "update-initramfs: $*"; }
die() { echo "update-initramfs: $*" >&2; exit 1; }

version=""
dry=0
while [ $# -gt 0 ]; do
    case "$1" in
        -k) [ -n "$2" ] || die "-k needs a kernel release"; version="$2"; shift 2 ;;
        -n) dry=1; shift ;;
        -u|-c) shift ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (use -k VERSION, -n)" ;;
    esac
done
[ -r "$conf" ] || die "no boot configuration at $conf"
[ -r "$init" ] || die "no initramfs init at $init"

# A field (kernel, initrd, append) of the DEFAULT entry (the first when
# there is no DEFAULT).
entry_field() {
    awk -v want="$1" '
        { key = tolower($1); $1 = ""; sub(/^[ \t]+/, ""); val = $0 }
        key == "default" { def = val }
        key == "label" { label = val; if (first == "") first = val }
        key == want || (want == "kernel" && key == "linux") { v[label] = val }
        END { if (def == "") def = first; print v[def] }' "$conf"
}
kernel="$(entry_field kernel)"
append="$(entry_field append)"
if [ -z "$version" ]; then
    current="$(entry_field initrd)"
    case "$current" in
        /boot/initrd.img-*) version="${current#/boot/initrd.img-}"; version="${version%.old}" ;;
        *) version="$(uname -r)" ;;
    esac
fi
[ -n "$kernel" ] || kernel="/boot/vmlinuz-$version"
moddir="/lib/modules/$version"
out="/boot/initrd.img-$version"

find_module() {
    [ -d "$moddir" ] || return 0
    find "$moddir" \( -name "$1.ko" -o -name "$(echo "$1" | tr _ -).ko" \) | head -n 1
}

# Dependencies first (from each module's own `depends=`), each once.
order=""
seen=" "
add_module() {
    local m f d
    m="$(echo "$1" | tr - _)"
    case "$seen" in *" $m "*) return 0 ;; esac
    seen="$seen$m "
    f="$(find_module "$m")"
    [ -n "$f" ] || die "module $m (from $list or a dependency) is not in $moddir; install it there first"
    for d in $(strings "$f" | sed -n 's/^depends=//p' | tr ',' ' '); do
        add_module "$d"
    done
    order="$order $m"
}
if [ -r "$list" ]; then
    for m in $(sed 's/#.*//' "$list"); do
        add_module "$m"
    done
fi

work="$(mktemp -d /tmp/initramfs.XXXXXX)"
trap 'rm -rf "$work"; rm -f "$out.new"' EXIT
mkdir -p "$work/bin" "$work/dev" "$work/etc" "$work/lib/modules" "$work/newroot" "$work/proc" "$work/sys"
cp /bin/busybox "$work/bin/busybox"
ln -s busybox "$work/bin/sh"
mknod -m 600 "$work/dev/console" c 5 1
for m in $order; do
    cp "$(find_module "$m")" "$work/lib/modules/$m.ko"
done
: > "$work/etc/drydock-drivers"
for m in $order; do echo "$m" >> "$work/etc/drydock-drivers"; done
cp "$init" "$work/init"
chmod 755 "$work/init"
(cd "$work" && find . | sed -n 's|^\./||p' | cpio -o -H newc 2>/dev/null) > "$out.new"
cpio -t < "$out.new" 2>/dev/null | grep -qx init || die "the new initramfs has no init; nothing replaced"
say "built $out with drivers:${order:- none}"
if [ "$dry" = 1 ]; then
    cpio -t < "$out.new" 2>/dev/null
    say "-n: nothing replaced (above: what the new initramfs would hold)"
    exit 0
fi
[ -e "$out" ] && mv -f "$out" "$out.old"
mv "$out.new" "$out"

{
    echo "# drydock boot configuration (extlinux.conf syntax), read by the host"
    echo "# at every start: DEFAULT boots; FALLBACK when the default's kernel or"
    echo "# initrd is missing or damaged, or it failed at the last boot."
    echo "# Written by update-initramfs."
    echo "DEFAULT linux"
    [ -e "$out.old" ] && echo "FALLBACK previous"
    echo "LABEL linux"
    echo "    KERNEL $kernel"
    echo "    INITRD $out"
    echo "    APPEND $append"
    if [ -e "$out.old" ]; then
        echo "LABEL previous"
        echo "    KERNEL $kernel"
        echo "    INITRD $out.old"
        echo "    APPEND $append"
    fi
} > "$conf.new"
mv "$conf.new" "$conf"
sync
say "previous initramfs kept as $out.old (entry \`previous\`); reboot to use the new one"
