#!/usr/bin/env bash
# Builds and starts Custody on embedded defaults: SQLite and local disk under ./custody-data,
# HTTP on :8080, gRPC on :50051. Arguments are passed to `custody serve` (see `--help`).
#
# The server never makes its own ledger key. On the first run in a data directory without one, this
# script makes it with `custody admin keygen` (and says so); back up DATA_DIR/keys/ledger.key.
. "$(dirname "$0")/common.sh"
cargo build --release -p custody --bin custody
exe="$CARGO_TARGET_DIR/release/custody"

data_dir="${CUSTODY_DATA_DIR:-./custody-data}"
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[i]}" in
        --data-dir) data_dir="${args[i + 1]:-$data_dir}" ;;
        --data-dir=*) data_dir="${args[i]#--data-dir=}" ;;
    esac
done
if [ -z "${CUSTODY_LEDGER_KEY_FILE:-}" ] && [ ! -e "$data_dir/keys/ledger.key" ]; then
    origin="${CUSTODY_LEDGER_ORIGIN:-$(hostname -f 2>/dev/null || hostname)/custody-ledger}"
    echo "run.sh: no ledger key in $data_dir/keys; creating one for the log named $origin" >&2
    "$exe" admin keygen --origin "$origin" --out "$data_dir/keys"
fi
exec "$exe" serve "$@"
