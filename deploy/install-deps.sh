#!/usr/bin/env bash
# Install the Debian 12 packages Cohort needs to build, test and run, when they are missing.
# Idempotent and quick when everything is present (one dpkg query). Needs root (or sudo).
set -euo pipefail

PKGS=(build-essential cmake pkg-config libopenblas-dev libcmocka-dev libcjson-dev zlib1g-dev
      libgrpc-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler grpc-proto libuv1-dev
      python3 python3-numpy python3-grpcio python3-protobuf python3-grpc-tools openssl
      python3-yaml gnuplot-nox libmicrohttpd-dev libpcre2-dev libutf8proc-dev clang)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
