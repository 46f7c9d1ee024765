#!/usr/bin/env bash
# Installs what is missing, starts the real test servers (PostgreSQL, an S3 server), and runs every test.
# Arguments are passed to `cargo test` (e.g. a test name filter).
. "$(dirname "$0")/common.sh"
. scripts/test-servers.sh
cargo fmt --all -- --check
cargo build --workspace --all-targets
# End-to-end tests start the real binary as a child process.
cargo build -p custody --bin custody
cargo test --workspace --no-fail-fast "$@"
