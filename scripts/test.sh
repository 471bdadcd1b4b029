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
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace -- --test-threads="${HUTCH_TEST_THREADS:-2}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# One closing line for the whole suite (cargo prints one per test binary, the last often empty).
awk '/^test result: /{for(i=1;i<=NF;i++){if($(i+1)~/^passed/)p+=$i; if($(i+1)~/^failed/)f+=$i}} END{printf "tests: %d passed, %d failed\n", p, f}' "$log"
exit "$status"
