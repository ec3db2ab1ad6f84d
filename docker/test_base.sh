#!/usr/bin/env bash
# The base OS image for tests and CI, made without a registry: debootstrap a minimal
# Debian bookworm (Python 3.11, like the production default debian:bookworm-slim) and
# import it as dogbreed-test-base:bookworm. Skipped when the engine already has it.
set -euo pipefail
IMAGE=${TEST_BASE_IMAGE:-dogbreed-test-base:bookworm}
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "$IMAGE already present"; exit 0
fi
command -v debootstrap >/dev/null || { echo "error: debootstrap missing: apt-get install debootstrap" >&2; exit 1; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >/dev/null
tar -C "$root" -c . | docker import - "$IMAGE" >/dev/null
echo "imported $IMAGE"
