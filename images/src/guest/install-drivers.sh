#!/bin/sh
# install.sh of a drydock driver volume: installs the kernel modules on
# this volume into the system's /lib/modules/RELEASE, adds the drivers to
# /etc/initramfs/modules and rebuilds the initramfs (the one it replaces
# stays as the `previous` boot entry). Safe to run again.
#
#   sh install.sh           the running system (its kernel must be RELEASE)
#   sh install.sh ROOT      a system mounted at ROOT (offline, from a helper)
set -e
here="$(cd "$(dirname "$0")" && pwd)"
root="${1:-}"
say() { echo "install-drivers: $*"; }
die() { echo "install-drivers: $*" >&2; exit 1; }

release="$(cat "$here/RELEASE")"
[ -n "$release" ] || die "no RELEASE on the driver volume"
if [ -z "$root" ] && [ "$(uname -r)" != "$release" ]; then
    die "these drivers are for kernel $release; this system runs $(uname -r): make a driver volume for $(uname -r)"
fi
dest="$root/lib/modules/$release"
[ -d "$dest" ] || die "$dest does not exist: is ROOT the right file system, and is kernel $release installed there?"

cd "$here/modules"
for f in $(find . -name '*.ko'); do
    mkdir -p "$dest/$(dirname "$f")"
    cp "$f" "$dest/$f.new"
    mv -f "$dest/$f.new" "$dest/$f"
done
touch "$dest/modules.dep"
while IFS= read -r line; do
    grep -qxF "$line" "$dest/modules.dep" || echo "$line" >> "$dest/modules.dep"
done < "$here/modules.dep"

list="$root/etc/initramfs/modules"
mkdir -p "$(dirname "$list")"
touch "$list"
for m in $(cat "$here/drivers"); do
    grep -qx "$m" "$list" || echo "$m" >> "$list"
done
say "installed into $dest: $(cat "$here/drivers" | tr '\n' ' ')"

if [ -z "$root" ]; then
    update-initramfs -u -k "$release"
else
    chroot "$root" /usr/sbin/update-initramfs -u -k "$release"
fi
say "done"
