#!/bin/sh
# syslogd: the system log, /var/log/messages (busybox syslogd).
case "$1" in
    start)
        pidof syslogd >/dev/null && exit 0
        syslogd -O /var/log/messages
        ;;
    stop)
        killall syslogd 2>/dev/null
        while pidof syslogd >/dev/null; do sleep 0.1; done
        ;;
    restart)
        "$0" stop
        "$0" start
        ;;
    status)
        if pidof syslogd >/dev/null; then echo running; else echo stopped; exit 3; fi
        ;;
    *)
        echo "usage: $0 start|stop|restart|status" >&2
        exit 2
        ;;
esac
