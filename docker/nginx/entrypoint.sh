#!/bin/sh
# Start nginx for the brick stack, with upstream names that follow container restarts.
#
# Docker gives a restarted or recreated app container a new address under the same name.
# nginx resolves the names in an `upstream` block once, when it loads its config, and would
# keep sending requests to the old address. Two ways out, both keeping the upstream blocks
# (and so their keep-alive connection pools):
#   nginx >= 1.27.3 (the official image): `server <name>:8000 resolve` re-resolves the name
#     through Docker's DNS (the `resolver` in nginx.conf) while it runs.
#   older nginx (Debian bookworm's 1.22, the registry-less stand-in): `resolve` is not there,
#     so a watcher looks the names up every RESOLVE_INTERVAL seconds and reloads nginx
#     (a graceful reload: requests in flight finish on the old workers) when one changed.
set -eu

conf=/etc/nginx/brick/upstreams.conf

# True when dotted version $1 >= $2.
version_ge() {
    [ "$(printf '%s\n%s\n' "$1" "$2" | sort -t. -k1,1n -k2,2n -k3,3n | head -n 1)" = "$2" ]
}

version=$(nginx -v 2>&1 | sed -n 's|^nginx version: [^/]*/\([0-9.]*\).*|\1|p')
if version_ge "${version:-0}" 1.27.3; then resolve=" resolve"; else resolve=""; fi
sed "s/@RESOLVE@/$resolve/" "$conf.in" >"$conf"

upstream_hosts() {
    sed -n 's/^[[:space:]]*server[[:space:]][[:space:]]*\([^:;[:space:]]*\).*/\1/p' "$conf" | sort -u
}

# One line per upstream name: "name=address ..."; "name=" while the name does not resolve.
addresses() {
    for host in $(upstream_hosts); do
        printf '%s=%s\n' "$host" "$(getent ahostsv4 "$host" | awk '{ print $1 }' | sort -u | tr '\n' ' ')"
    done
}

watch_upstreams() {
    last=$(addresses)
    while sleep "${RESOLVE_INTERVAL:-2}"; do
        now=$(addresses)
        [ "$now" != "$last" ] || continue
        # A name that does not resolve (its container is stopped) would fail the reload.
        if printf '%s\n' "$now" | grep -q '=$'; then continue; fi
        echo "entrypoint: upstream addresses changed, reloading nginx" >&2
        nginx -s reload && last=$now
    done
}

echo "entrypoint: nginx $version, upstream names re-resolved by ${resolve:+nginx}${resolve:-a reload watcher}" >&2
if [ "${1:-}" = nginx ] && [ -z "$resolve" ]; then
    watch_upstreams &
fi
exec "$@"
