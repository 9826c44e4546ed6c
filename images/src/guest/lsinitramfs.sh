#!/bin/sh
# lsinitramfs: what an initramfs holds, one path a line (the DEFAULT boot
# entry's initramfs when no FILE is given); -l prints the drivers its init
# loads, in order.
#
#   lsinitramfs [-l] [FILE]
set -e
conf=/boot/extlinux/extlinux.conf
drivers=0
[ "$1" = "-l" ] && { drivers=1; shift; }
file="$1"
if [ -z "$file" ]; then
    file="$(awk '
        { key = tolower($1); $1 = ""; sub(/^[ \t]+/, ""); val = $0 }
        key == "default" { def = val }
        key == "label" { label = val; if (first == "") first = val }
        key == "initrd" { v[label] = val }
        END { if (def == "") def = first; print v[def] }' "$conf")"
fi
[ -r "$file" ] || { echo "lsinitramfs: cannot read ${file:-the default initramfs}" >&2; exit 1; }
unpack() {
    case "$(hexdump -n 2 -e '2/1 "%02x"' "$file")" in
        1f8b) zcat "$file" ;;
        *) cat "$file" ;;
    esac
}
if [ "$drivers" = 1 ]; then
    work="$(mktemp -d /tmp/lsinitramfs.XXXXXX)"
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && unpack | cpio -i -d etc/drydock-drivers 2>/dev/null) || true
    cat "$work/etc/drydock-drivers" 2>/dev/null
else
    unpack | cpio -t 2>/dev/null
fi
