#!/usr/bin/env bash
# Install what the tests need and run the whole suite (as root: the tests create real sandboxes).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then exec sudo -E "$0" "$@"; fi
./scripts/deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# Build the static binary first: engine and server tests use it as the in-sandbox guest.
cargo build -p hutch
cargo test --workspace -- --test-threads="${HUTCH_TEST_THREADS:-2}"
