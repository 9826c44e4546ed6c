#!/bin/sh
# network: the instance's primary interface, as the config disk describes
# it (/run/drydock/config/network: NET_MAC, NET_ADDRESS, NET_GATEWAY),
# configured on the NIC with that MAC address once its driver is loaded.
# /etc/network.local, when present, overrides those settings by hand (as
# a hand-edited interfaces file would) — and can be wrong.
conf=/run/drydock/config/network
local=/etc/network.local
settings() {
    . "$conf"
    if [ -s "$local" ]; then . "$local"; fi
}
nic() {
    for a in /sys/class/net/*/address; do
        [ -e "$a" ] || continue
        if [ "$(cat "$a")" = "$NET_MAC" ]; then d="${a%/address}"; echo "${d##*/}"; return 0; fi
    done
    return 1
}
case "$1" in
    start)
        ip link set lo up
        [ -s "$conf" ] || { echo "network: the instance has no network interface"; exit 0; }
        settings
        modprobe virtio_net 2>/dev/null
        tries=0
        until dev="$(nic)"; do
            tries=$((tries + 1))
            if [ "$tries" -gt 50 ]; then
                echo "network: no interface with MAC $NET_MAC (is the NIC driver missing?)"
                exit 1
            fi
            sleep 0.1
        done
        ip link set "$dev" up || exit 1
        ip addr replace "$NET_ADDRESS" dev "$dev" || exit 1
        ip route replace default via "$NET_GATEWAY" dev "$dev" || exit 1
        echo "network: $dev $NET_ADDRESS via $NET_GATEWAY"
        # Other interfaces the instance started with: from the metadata
        # service, as those attached while it runs.
        for a in /sys/class/net/*/address; do
            other="${a%/address}"; other="${other##*/}"
            [ "$other" = "$dev" ] || [ "$other" = lo ] && continue
            ACTION=add /etc/drydock-nic-event "$other"
        done
        ;;
    stop)
        [ -s "$conf" ] || exit 0
        settings
        dev="$(nic)" || exit 0
        ip addr flush dev "$dev"
        ip link set "$dev" down
        ;;
    restart)
        "$0" stop
        "$0" start
        ;;
    status)
        [ -s "$conf" ] || { echo "no interface"; exit 3; }
        settings
        if dev="$(nic)" && ip addr show dev "$dev" | grep -q "inet ${NET_ADDRESS%/*}/"; then
            echo "running: $dev $NET_ADDRESS"
        else
            echo stopped
            exit 3
        fi
        ;;
    *)
        echo "usage: $0 start|stop|restart|status" >&2
        exit 2
        ;;
esac
