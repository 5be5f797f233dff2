#!/usr/bin/env bash
# make-base-images.sh - build the Debian 12 base images the Dockerfile names (debian:12 and
# debian:12-slim) from this machine's Debian archive, for Docker engines without a registry:
# debootstrap a minimal bookworm root file system and `docker import` it under both tags.
# With a registry at hand this step is not needed: `docker build` pulls the official images.
# Also golang:1.26-bookworm, the build stage of the Go example verifier's image
# (reward/examples/go-verifier/Dockerfile): debian:12 plus this host's Go toolchain
# (/usr/local/go or the go on PATH, version >= 1.26), made only when that tag is missing.
# Idempotent: does nothing when the tags exist (use --force to rebuild).
set -euo pipefail
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
GO_TAG=golang:1.26-bookworm

# golang:1.26-bookworm from debian:12 and the host's Go
make_go_image() {
  if [ "${1:-}" != "--force" ] && docker image inspect "$GO_TAG" >/dev/null 2>&1; then
    echo "make-base-images: $GO_TAG exists"; return 0
  fi
  local go goroot ver ctx
  go=$(command -v go || true)
  [ -n "$go" ] || { [ -x /usr/local/go/bin/go ] && go=/usr/local/go/bin/go; }
  if [ -z "$go" ]; then
    echo "make-base-images: no Go on this host: $GO_TAG not made (the go-verifier image needs it)" >&2
    return 1
  fi
  goroot=$("$go" env GOROOT)
  ver=$("$go" env GOVERSION)
  case "$ver" in go1.2[6-9]*|go1.[3-9][0-9]*) ;; *)
    echo "make-base-images: host Go is $ver; $GO_TAG needs >= go1.26" >&2; return 1 ;; esac
  ctx=$(mktemp -d)
  cp -a "$goroot" "$ctx/go"
  # this host's own certificate authorities (e.g. a proxy's in front of the Go module proxy):
  # what the host trusts, the image's go command trusts too
  mkdir -p "$ctx/ca"
  cp /usr/local/share/ca-certificates/*.crt "$ctx/ca/" 2>/dev/null || true
  cat > "$ctx/Dockerfile" <<'DOCKERFILE'
FROM debian:12
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      ca-certificates git > /dev/null && rm -rf /var/lib/apt/lists/*
COPY ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates > /dev/null
COPY go /usr/local/go
ENV PATH=/usr/local/go/bin:/go/bin:$PATH GOPATH=/go GOTOOLCHAIN=local
DOCKERFILE
  docker build -q -t "$GO_TAG" "$ctx" 2>&1 >/dev/null \
    | grep -v -e DEPRECATED -e "legacy builder" -e buildx -e "docs.docker.com" -e '^ *$' >&2 || true
  docker image inspect "$GO_TAG" >/dev/null 2>&1 || { rm -rf "$ctx"; echo "make-base-images: building $GO_TAG failed" >&2; return 1; }
  rm -rf "$ctx"
  echo "make-base-images: $GO_TAG from debian:12 and this host's $ver"
}

if [ "${1:-}" != "--force" ] && docker image inspect debian:12 >/dev/null 2>&1 \
   && docker image inspect debian:12-slim >/dev/null 2>&1; then
  echo "make-base-images: debian:12 and debian:12-slim exist"
  make_go_image "${1:-}"
  exit $?
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
make_go_image --force
