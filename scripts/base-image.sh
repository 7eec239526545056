#!/usr/bin/env bash
# Build the services' base image from Debian packages (no registry pull needed)
# and load it into the local Docker engine with `docker import`.
#
#   scripts/base-image.sh [image-name]        default: boutique/base:bookworm
#
# The image is a minimal Debian bookworm (debootstrap --variant=minbase) plus
# python3 (3.11), python3-venv and ca-certificates: exactly what the Dockerfile's
# builder and final stages need (`--build-arg BASE_IMAGE=boutique/base:bookworm`).
# Debian's python is /usr/bin/python3; the Dockerfile only ever calls `python3`,
# so it works with this image and with the public python:3.11-slim-bookworm.
#
# Cached: if the image already exists in the engine nothing is done
# (BOUTIQUE_BASE_REBUILD=1 forces a rebuild).
#
# Environment:
#   DEBIAN_MIRROR          mirror URL; default: the Debian URI apt uses here
#                          (/etc/apt/sources.list.d/*.sources or sources.list)
#   DEBIAN_SUITE           default bookworm
#   BOUTIQUE_BASE_REBUILD  1 = rebuild even if the image exists
# Needs root (debootstrap) and a running Docker engine (scripts/dockerd.sh).
set -euo pipefail

IMAGE="${1:-boutique/base:bookworm}"
SUITE="${DEBIAN_SUITE:-bookworm}"
PACKAGES="python3,python3-venv,ca-certificates"

die() { echo "base-image: $*" >&2; exit 1; }

command -v docker >/dev/null 2>&1 || die "the docker CLI is not installed (apt-get install docker.io)"
docker info >/dev/null 2>&1 || die "no Docker engine answers (start one with scripts/dockerd.sh)"

if [ "${BOUTIQUE_BASE_REBUILD:-0}" != "1" ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "base-image: $IMAGE already exists (BOUTIQUE_BASE_REBUILD=1 rebuilds it)"
  exit 0
fi

[ "$(id -u)" -eq 0 ] || die "debootstrap needs root; run: sudo $0 $*"
DEBOOTSTRAP="$(command -v debootstrap || echo /usr/sbin/debootstrap)"
[ -x "$DEBOOTSTRAP" ] || die "debootstrap is not installed (apt-get install debootstrap)"

# The mirror apt already uses (deb822 .sources first, then one-line sources.list).
apt_mirror() {
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    uri="$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) { print $i; exit } }' "$f")"
    if [ -n "$uri" ]; then echo "${uri%/}"; return; fi
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    uri="$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:\/\/.*\/debian\/?$/) { print $i; exit } }' "$f")"
    if [ -n "$uri" ]; then echo "${uri%/}"; return; fi
  done
}
MIRROR="${DEBIAN_MIRROR:-$(apt_mirror)}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"

KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
keyring_opt=()
[ -f "$KEYRING" ] && keyring_opt=(--keyring="$KEYRING")

ROOTFS="$(mktemp -d /tmp/boutique-base.XXXXXX)"
trap 'rm -rf "$ROOTFS"' EXIT
start=$(date +%s)
echo "base-image: debootstrap $SUITE from $MIRROR (+ $PACKAGES) ..."
if ! "$DEBOOTSTRAP" --variant=minbase --include="$PACKAGES" "${keyring_opt[@]}" \
      "$SUITE" "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1; then
  tail -n 30 "$ROOTFS.log" >&2
  rm -f "$ROOTFS.log"
  die "debootstrap failed (log above); set DEBIAN_MIRROR to a reachable Debian mirror"
fi
rm -f "$ROOTFS.log"

# Trim what a container never needs: package caches, docs, man pages, locales.
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/lib/apt/lists/* \
       "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* \
       "$ROOTFS"/var/log/*.log "$ROOTFS"/var/log/apt/* "$ROOTFS"/tmp/* "$ROOTFS"/root/.cache
find "$ROOTFS"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'en*' ! -name locale.alias -exec rm -rf {} + 2>/dev/null || true
find "$ROOTFS"/usr/lib/python3* -name __pycache__ -prune -exec rm -rf {} + 2>/dev/null || true
# The mirror used at build time is the one apt should use inside, too.
printf 'deb %s %s main\n' "$MIRROR" "$SUITE" >"$ROOTFS/etc/apt/sources.list"

tar -C "$ROOTFS" --numeric-owner -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --change "LABEL org.opencontainers.image.description=\"Debian $SUITE minbase + $PACKAGES (debootstrap)\"" \
  --change "LABEL org.opencontainers.image.source=\"$MIRROR\"" \
  - "$IMAGE" >/dev/null
echo "base-image: $IMAGE imported in $(( $(date +%s) - start ))s ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
