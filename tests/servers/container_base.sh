#!/usr/bin/env bash
# The container runtime for tests/test_container.py, and the base image it builds on:
#   - Debian's podman and runc (crun refuses this machine's hybrid cgroups), installed when
#     missing and running as root;
#   - localhost/relay-base:bookworm, a Debian bookworm with Python 3.11 made with debootstrap
#     from Debian's mirror (no image registry is reachable here), kept in podman's storage so
#     a later run reuses it.
# Nothing here fails the script: without them the container test skips (fails under CI=true).
set -uo pipefail
BASE=localhost/relay-base:bookworm
MIRROR="${RELAY_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if ! command -v podman >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "scripts/test: installing podman, runc and debootstrap from Debian for the container test" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null 2>&1 \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null; }
  fi
fi
command -v podman >/dev/null 2>&1 || { echo "scripts/test: no podman: the container test will be skipped" >&2; exit 0; }
if podman image exists "$BASE"; then
  exit 0
fi
command -v debootstrap >/dev/null 2>&1 || { echo "scripts/test: no debootstrap: no base image" >&2; exit 0; }
echo "scripts/test: making $BASE with debootstrap (about a minute, once)" >&2
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
if debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" "$MIRROR" >/dev/null 2>&1; then
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | podman import --quiet --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null \
    || echo "scripts/test: podman import of the base image failed" >&2
else
  echo "scripts/test: debootstrap failed: no base image for the container test" >&2
fi
