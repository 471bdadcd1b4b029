#!/usr/bin/env bash
# Install what building and testing Hutch needs on Debian 12 (idempotent). Run as root.
set -euo pipefail
need=()
for pkg in build-essential pkg-config python3 procps iproute2 nftables ca-certificates git; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install the Rust toolchain (rustup) first" >&2
  exit 1
fi
