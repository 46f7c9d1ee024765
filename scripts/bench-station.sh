#!/usr/bin/env bash
# The docking-station benchmark: installs what it needs (ffmpeg for the simulated recorders, rclone for
# the comparison, the S3 test server), builds release binaries and runs `custody-sim bench station`.
# Arguments are passed on (see `custody-sim bench station --help`), e.g. --hours 1 --sm3 false.
. "$(dirname "$0")/common.sh"
. scripts/test-servers.sh
if ! command -v rclone >/dev/null 2>&1; then
    echo "[bench] installing rclone" >&2
    as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq rclone >&2
fi
cargo build --release -p custody -p custody-sim
exec "$CARGO_TARGET_DIR/release/custody-sim" bench station "$@"
