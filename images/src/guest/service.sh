#!/bin/sh
# service: the guest's services, one script each in /etc/init.d named
# S<two digits><name> (started in that order at boot by rcS). A script
# without its execute bit is disabled: not started at boot.
#
#   service                     list the services and their state
#   service NAME status|start|stop|restart|enable|disable
say() { echo "service: $*"; }
script_of() {
    for s in /etc/init.d/S[0-9][0-9]"$1"; do
        [ -e "$s" ] && { echo "$s"; return 0; }
    done
    return 1
}
if [ $# -eq 0 ]; then
    for s in /etc/init.d/S[0-9][0-9]*; do
        [ -e "$s" ] || continue
        n="${s##*/S??}"
        if [ -x "$s" ]; then e=enabled; else e=disabled; fi
        printf '%-16s %-9s %s\n' "$n" "$e" "$(sh "$s" status 2>/dev/null)"
    done
    exit 0
fi
name="$1"
action="${2:-status}"
s="$(script_of "$name")" || { say "no service $name (see: service)"; exit 2; }
case "$action" in
    enable) chmod 755 "$s" && say "$name enabled" ;;
    disable) chmod 644 "$s" && say "$name disabled" ;;
    status|start|stop|restart) exec sh "$s" "$action" ;;
    *) say "unknown action $action (status, start, stop, restart, enable, disable)"; exit 2 ;;
esac
