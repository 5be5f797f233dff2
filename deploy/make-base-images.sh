#!/usr/bin/env bash
# make-base-images.sh - build the Debian 12 base images the Dockerfile names (debian:12 and
# debian:12-slim) from this machine's Debian archive, for Docker engines without a registry:
# debootstrap a minimal bookworm root file system and `docker import` it under both tags.
# With a registry at hand this step is not needed: `docker build` pulls the official images.
# Idempotent: does nothing when both tags exist (use --force to rebuild).
set -euo pipefail
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if [ "${1:-}" != "--force" ] && docker image inspect debian:12 >/dev/null 2>&1 \
   && docker image inspect debian:12-slim >/dev/null 2>&1; then
  echo "make-base-images: debian:12 and debian:12-slim exist"
  exit 0
fi
command -v debootstrap >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
ROOT=$(mktemp -d)
trap 'rm -rf "$ROOT"' EXIT
echo "make-base-images: debootstrap bookworm (minbase) from $MIRROR"
debootstrap --variant=minbase bookworm "$ROOT" "$MIRROR" > "$ROOT.log" 2>&1 \
  || { tail -20 "$ROOT.log"; exit 1; }
# the slim convention: no documentation, no apt lists
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/var/cache/apt/*.bin
tar -C "$ROOT" -c . | docker import --change 'CMD ["bash"]' - debian:12 >/dev/null
docker tag debian:12 debian:12-slim
rm -f "$ROOT.log"
docker images debian --format '{{.Repository}}:{{.Tag}} {{.Size}}'
