#!/bin/sh
# sshd: the SSH server (Dropbear). Its host key is made at the first boot
# and announced on the serial console at every start, between the markers
# cloud-init uses, so that the host can pin it without trusting the network.
key=/etc/dropbear/dropbear_ed25519_host_key
announce() {
    pub="$(dropbearkey -y -f "$key" 2>/dev/null)"
    {
        echo "-----BEGIN SSH HOST KEY FINGERPRINTS-----"
        echo "$pub" | sed -n 's/^Fingerprint: //p'
        echo "-----END SSH HOST KEY FINGERPRINTS-----"
        echo "-----BEGIN SSH HOST KEY KEYS-----"
        echo "$pub" | grep '^ssh-' | cut -d' ' -f1,2
        echo "-----END SSH HOST KEY KEYS-----"
    } > /dev/console
}
case "$1" in
    start)
        pidof dropbear >/dev/null && exit 0
        mkdir -p /etc/dropbear
        # A key of its own per instance: an instance launched from an
        # image made of another one does not keep that one's key.
        instance="$(sed -n 's/^instance-id: *//p' /run/drydock/meta-data 2>/dev/null)"
        if [ ! -s "$key" ] || [ "$(cat "$key.instance" 2>/dev/null)" != "$instance" ]; then
            rm -f "$key"
            dropbearkey -t ed25519 -f "$key" >/dev/null 2>&1 || exit 1
            echo "$instance" > "$key.instance"
        fi
        announce
        dropbear -r "$key" -p 22 || exit 1
        ;;
    stop)
        killall dropbear 2>/dev/null
        while pidof dropbear >/dev/null; do sleep 0.1; done
        ;;
    restart)
        "$0" stop
        "$0" start
        ;;
    status)
        if pidof dropbear >/dev/null; then echo running; else echo stopped; exit 3; fi
        ;;
    *)
        echo "usage: $0 start|stop|restart|status" >&2
        exit 2
        ;;
esac
