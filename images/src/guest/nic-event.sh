#!/bin/sh
# An interface other than the instance's primary one appeared or went
# (run by mdev; at boot by the network service for each one present). Its
# address comes from the metadata service
# (meta-data/network/interfaces/macs/MAC/), as EC2's guest agents do: the
# address on the interface, and a routing table of its own for traffic
# from that address (answers leave by the interface they came in on).
# Announced on the console.
dev="${1:-$MDEV}"
action="${ACTION:-add}"
[ -n "$dev" ] || exit 0
[ "$dev" = lo ] && exit 0
NET_MAC=""
[ -s /run/drydock/config/network ] && . /run/drydock/config/network
index="$(cat "/sys/class/net/$dev/ifindex" 2>/dev/null)"
table=$((100 + ${index:-0}))
case "$action" in
    add)
        mac="$(cat "/sys/class/net/$dev/address" 2>/dev/null)"
        [ -n "$mac" ] && [ "$mac" != "$NET_MAC" ] || exit 0
        # Each interface answers ARP only for its own addresses.
        sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 2>/dev/null
        base="http://169.254.169.254/latest/meta-data/network/interfaces/macs/$mac"
        tries=0
        while :; do
            token="$( (printf 'PUT /latest/api/token HTTP/1.0\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n\r\n'; sleep 1) | nc 169.254.169.254 80 | tail -1)"
            ip4="$(wget -q -O - --header "X-aws-ec2-metadata-token: $token" "$base/local-ipv4s" 2>/dev/null | head -1)"
            cidr="$(wget -q -O - --header "X-aws-ec2-metadata-token: $token" "$base/subnet-ipv4-cidr-block" 2>/dev/null)"
            [ -n "$ip4" ] && [ -n "$cidr" ] && break
            tries=$((tries + 1))
            if [ "$tries" -ge 10 ]; then
                echo "drydock: interface $dev ($mac): the metadata service does not describe it" > /dev/console
                exit 1
            fi
            sleep 1
        done
        prefix="${cidr#*/}"
        ip link set "$dev" up
        ip addr replace "$ip4/$prefix" dev "$dev"
        ip route replace "$cidr" dev "$dev" src "$ip4" table "$table"
        ip rule del from "$ip4" table "$table" 2>/dev/null
        ip rule add from "$ip4" table "$table"
        echo "drydock: interface $dev attached ($mac $ip4/$prefix)" > /dev/console
        ;;
    remove)
        ip rule del table "$table" 2>/dev/null
        ip route flush table "$table" 2>/dev/null
        echo "drydock: interface $dev detached" > /dev/console
        ;;
esac
exit 0
