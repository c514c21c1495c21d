#!/usr/bin/env bash
# Base images for machines that reach a Debian mirror but no container registry.
#
# The Dockerfiles start FROM the official `python` and `nginx` images. Where those cannot be
# pulled, this script makes stand-ins from Debian packages: debootstrap a minimal bookworm,
# strip what a container never reads (apt lists, docs, man pages, locales), `docker import`
# the tree and tag it with the very name the Dockerfile asks for. Docker then finds the image
# locally and never tries to pull it.
#
#   base-images.sh ensure   each image: already here -> keep; `docker pull` works -> use it;
#                           otherwise build it from Debian packages
#   base-images.sh build    build from Debian packages every image that is not here yet
#
# The stand-ins differ from the official images in ways the Dockerfiles allow for:
#   python  Debian's python3 (3.11) in /usr/bin, pip only through `python3 -m venv`
#           (python3-venv); `python` comes from python-is-python3.
#   nginx   Debian's nginx (1.22 on bookworm) instead of nginx.org's build; see
#           docker/nginx/entrypoint.sh for how the config copes with both.
#
# Environment: PYTHON_IMAGE, NGINX_IMAGE (default: the Dockerfiles' defaults),
# DEBIAN_SUITE (bookworm), DEBIAN_MIRROR (http://deb.debian.org/debian),
# OFFLINE_WORKDIR (.cache/offline), FORCE=1 rebuilds images that already exist.
set -euo pipefail

cd "$(dirname "$0")/../.."

mode=${1:-ensure}
suite=${DEBIAN_SUITE:-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
workdir=${OFFLINE_WORKDIR:-.cache/offline}

# The Dockerfiles are the one place the default image names are written down.
dockerfile_default() { sed -n "s/^ARG $1=//p" "$2" | head -n 1; }
python_image=${PYTHON_IMAGE:-$(dockerfile_default PYTHON_IMAGE docker/Dockerfile)}
nginx_image=${NGINX_IMAGE:-$(dockerfile_default NGINX_IMAGE docker/nginx/Dockerfile)}

log() { printf 'base-images: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi
}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# debootstrap comes from Debian's packages; a fresh machine may not have it yet.
need_debootstrap() {
    command -v debootstrap >/dev/null 2>&1 && return
    command -v apt-get >/dev/null 2>&1 || { log "debootstrap is missing and apt-get is not here"; exit 1; }
    log "installing debootstrap from Debian's packages"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}

# A registry that is unreachable fails fast (DNS); one that hangs must not hang us.
try_pull() { timeout "${PULL_TIMEOUT:-300}" docker pull -q "$1" >/dev/null 2>&1; }

# debootstrap a minimal $suite with extra packages into $workdir/$name, then strip it.
make_rootfs() {
    local name=$1 packages=$2
    local root="$workdir/$name"
    mkdir -p "$workdir/debs"
    as_root rm -rf --one-file-system "$root"
    need_debootstrap
    log "debootstrap $suite ($packages) from $mirror"
    as_root debootstrap --variant=minbase --include="$packages" \
        --cache-dir="$(realpath "$workdir/debs")" "$suite" "$root" "$mirror" >"$workdir/$name.log" 2>&1 || {
        tail -n 30 "$workdir/$name.log" >&2
        return 1
    }
    as_root chroot "$root" apt-get clean
    as_root sh -c "cd '$root' && rm -rf var/lib/apt/lists/* var/cache/apt/*.bin var/log/*.log \
        usr/share/doc/* usr/share/man/* usr/share/info/* usr/share/locale/* \
        usr/share/lintian usr/share/linda tmp/* run/*"
}

# docker import the tree under $tag, with the image config given as Dockerfile lines.
import_rootfs() {
    local name=$1 tag=$2
    shift 2
    local changes=()
    for change in "$@" "LABEL org.opencontainers.image.description=\"$tag stand-in built from Debian $suite packages\""; do
        changes+=(--change "$change")
    done
    # /dev, /proc and /sys are the engine's to fill; leave them empty.
    as_root tar --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
        -C "$workdir/$name" -c . | docker import "${changes[@]}" - "$tag" >/dev/null
    as_root rm -rf --one-file-system "${workdir:?}/$name"
    log "tagged $tag ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%d MB", $1 / 1e6}'))"
}

build_python() {
    case $python_image in
    *:3.11*) ;;
    *) log "warning: $python_image will hold Debian $suite's python3, not the version its tag names" ;;
    esac
    make_rootfs python python3,python3-venv,python-is-python3,passwd
    import_rootfs python "$python_image" \
        'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        'ENV LANG=C.UTF-8' \
        'CMD ["python3"]'
}

build_nginx() {
    make_rootfs nginx nginx,passwd
    # Like the official image: the default log files are the container's stdout and stderr.
    as_root ln -sf /dev/stdout "$workdir/nginx/var/log/nginx/access.log"
    as_root ln -sf /dev/stderr "$workdir/nginx/var/log/nginx/error.log"
    # (docker import takes no STOPSIGNAL: docker/nginx/Dockerfile sets SIGQUIT.)
    import_rootfs nginx "$nginx_image" \
        'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        'EXPOSE 80' \
        'CMD ["nginx", "-g", "daemon off;"]'
}

need_offline() {
    local tag=$1
    if [ "${FORCE:-}" = 1 ]; then return 0; fi
    if have_image "$tag"; then
        log "$tag: present"
        return 1
    fi
    if [ "$mode" = ensure ]; then
        log "$tag: not here, trying docker pull"
        if try_pull "$tag"; then
            log "$tag: pulled"
            return 1
        fi
        log "$tag: cannot be pulled, building it from Debian packages"
    fi
    return 0
}

case $mode in
ensure | build) ;;
*)
    echo "usage: $0 [ensure|build]" >&2
    exit 2
    ;;
esac

start=$SECONDS
built=0
if need_offline "$python_image"; then
    build_python
    built=1
fi
if need_offline "$nginx_image"; then
    build_nginx
    built=1
fi
if [ "$built" = 1 ]; then log "done in $((SECONDS - start)) s"; fi
