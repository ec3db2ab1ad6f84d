#!/usr/bin/env bash
# Make sure a Docker engine answers, for `make build` and the local-mode tests: install the
# Debian packages it needs when missing (as root: docker.io, docker-compose, debootstrap),
# start dockerd in the background when it is not running, and wait for it.
# Exit 1, saying why, when no engine can be had.
set -uo pipefail
LOG=${DOCKERD_LOG:-/tmp/dogbreed-dockerd.log}
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 || missing+=(docker-compose)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "error: missing ${missing[*]}; install them (apt-get install ${missing[*]})" >&2; exit 1
  fi
  echo "installing ${missing[*]}"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
    || { echo "error: apt-get install ${missing[*]} failed" >&2; exit 1; }
fi
if docker info >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "error: the Docker engine is not running and only root can start it here" >&2; exit 1
fi
echo "starting dockerd (log: $LOG)"
nohup dockerd >"$LOG" 2>&1 &
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && { echo "dockerd is up"; exit 0; }
  sleep 1
done
echo "error: dockerd did not answer within 60 s; its log ($LOG) ends with:" >&2
tail -5 "$LOG" >&2
exit 1
