#!/bin/bash
# nginx health check that needs no curl: GET /nginx-health through bash's /dev/tcp.
set -u
exec 3<>/dev/tcp/127.0.0.1/8080 || exit 1
printf 'GET /nginx-health HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
IFS= read -r -t 3 status <&3 || exit 1
case $status in
"HTTP/1."?" 200 "*) exit 0 ;;
*)
    echo "unhealthy: $status" >&2
    exit 1
    ;;
esac
