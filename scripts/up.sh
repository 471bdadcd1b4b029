#!/usr/bin/env bash
# Build Hutch and run the server with the default (offline) template. Prints the URL and, on
# first start, the admin API key. Run as root (sandboxes need namespaces, mounts and cgroups).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then exec sudo -E "$0" "$@"; fi
./scripts/deps.sh
cargo build --release -p hutch
bin=target/x86_64-unknown-linux-gnu/release/hutch
install -m 0755 "$bin" /usr/local/bin/hutch
exec /usr/local/bin/hutch server "$@"
