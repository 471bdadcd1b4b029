#!/usr/bin/env bash
# Run the benchmarks in a release build, with runc and bwrap installed as peers.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then exec sudo -E "$0" "$@"; fi
./scripts/deps.sh
for pkg in runc bubblewrap; do
  dpkg -s "$pkg" >/dev/null 2>&1 || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg"; }
done
cargo build --release -p hutch
bin=target/x86_64-unknown-linux-gnu/release/hutch
"$bin" bench engine "$@"
