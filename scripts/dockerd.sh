#!/usr/bin/env bash
# Start a Docker engine in the background unless one already answers; wait for it.
# Idempotent: a second call (or an engine started some other way) is a no-op.
#
#   scripts/dockerd.sh            start (if needed) and wait until `docker info` works
#   scripts/dockerd.sh --stop     stop the engine this script started (by its pid file)
#
# Environment:
#   DOCKER_HOST              socket to use (default unix:///var/run/docker.sock)
#   BOUTIQUE_DOCKERD_ARGS    extra dockerd flags (e.g. "--iptables=false --bridge=none"
#                            where the kernel has no netfilter; then run containers with
#                            --network host)
#   BOUTIQUE_DOCKERD_LOG     log file (default /var/log/boutique-dockerd.log, or /tmp)
#   BOUTIQUE_DOCKERD_TIMEOUT seconds to wait for the engine (default 60)
# Needs root (dockerd manages namespaces, cgroups and iptables).
set -euo pipefail

SOCK="${DOCKER_HOST:-unix:///var/run/docker.sock}"
SOCK_PATH="${SOCK#unix://}"
PIDFILE="/var/run/boutique-dockerd.pid"
TIMEOUT="${BOUTIQUE_DOCKERD_TIMEOUT:-60}"
die() { echo "dockerd.sh: $*" >&2; exit 1; }
engine_up() { docker -H "$SOCK" info >/dev/null 2>&1; }

command -v docker >/dev/null 2>&1 || die "the docker CLI is not installed (apt-get install docker.io)"

if [ "${1:-}" = "--stop" ]; then
  pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    rm -f "$PIDFILE"
    echo "dockerd.sh: stopped"
  else
    echo "dockerd.sh: no engine started by this script is running"
  fi
  exit 0
fi

if engine_up; then
  echo "dockerd.sh: engine already running at $SOCK"
  exit 0
fi
case "$SOCK" in unix://*) ;; *) die "DOCKER_HOST=$SOCK is not a local unix socket; start that engine yourself" ;; esac
[ "$(id -u)" -eq 0 ] || die "dockerd needs root; run: sudo $0"
DOCKERD="$(command -v dockerd || echo /usr/sbin/dockerd)"
[ -x "$DOCKERD" ] || die "dockerd is not installed (apt-get install docker.io)"

LOG="${BOUTIQUE_DOCKERD_LOG:-/var/log/boutique-dockerd.log}"
touch "$LOG" 2>/dev/null || LOG="/tmp/boutique-dockerd.log"
# A stale socket/pid from a killed engine would make dockerd refuse to start.
if [ -S "$SOCK_PATH" ] && ! engine_up; then rm -f "$SOCK_PATH"; fi
# shellcheck disable=SC2086  # BOUTIQUE_DOCKERD_ARGS is a list of flags
setsid "$DOCKERD" --host "$SOCK" --pidfile "$PIDFILE" ${BOUTIQUE_DOCKERD_ARGS:-} >>"$LOG" 2>&1 < /dev/null &
for _ in $(seq "$TIMEOUT"); do
  if engine_up; then
    echo "dockerd.sh: engine up at $SOCK (log $LOG)"
    exit 0
  fi
  kill -0 $! 2>/dev/null || break
  sleep 1
done
tail -n 20 "$LOG" >&2
die "dockerd did not come up within ${TIMEOUT}s (log above: $LOG)"
