#!/usr/bin/env bash
# Builds and starts Custody on embedded defaults: SQLite and local disk under ./custody-data,
# HTTP on :8080, gRPC on :50051. Arguments are passed to `custody serve` (see `--help`).
. "$(dirname "$0")/common.sh"
cargo build --release -p custody --bin custody
exec "$CARGO_TARGET_DIR/release/custody" serve "$@"
