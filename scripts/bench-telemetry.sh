#!/usr/bin/env bash
# The telemetry benchmark: starts the test servers (PostgreSQL, Mosquitto), a private Mosquitto for the
# throughput runs, builds release binaries and runs `custody bench telemetry`. Arguments are passed on
# (see `custody bench telemetry --help`), e.g. --skip-postgres --latency-devices 2000 --json out.json.
#
# The private Mosquitto (127.0.0.1:$CUSTODY_BENCH_MQTT_PORT, default 18830) lets each client have 1000
# unacknowledged QoS 1 messages in flight (Mosquitto's default is 20, which caps any single subscriber
# at 20 messages per round trip) and queue a million: a receiver that falls behind 100 000 positions/s
# by half builds a backlog near 100 000 messages in a 20 s run, and with max_queued_messages 100000
# Mosquitto dropped some ("Outgoing messages are being dropped"), so the bench counted as lost what
# was the broker's doing. mosquitto_sub, custody's bridge and the fleet all use it, so the comparison is
# fair. It is stopped when the bench ends.
. "$(dirname "$0")/common.sh"
. scripts/test-servers.sh
cargo build --release -p custody -p custody-sim

port="${CUSTODY_BENCH_MQTT_PORT:-18830}"
if (exec 3<>"/dev/tcp/127.0.0.1/${port}") 2>/dev/null; then
    echo "bench-telemetry.sh: port ${port} is taken; set CUSTODY_BENCH_MQTT_PORT to a free port" >&2
    exit 1
fi
conf="/var/tmp/custody-bench-mosquitto-${port}.conf"
printf '%s\n' \
    "listener ${port} 127.0.0.1" \
    "allow_anonymous true" \
    "persistence false" \
    "max_inflight_messages 1000" \
    "max_queued_messages 1000000" \
    "log_type error" \
    "log_type warning" >"$conf"
mosquitto -c "$conf" >"/var/tmp/custody-bench-mosquitto-${port}.log" 2>&1 &
broker_pid=$!
trap 'kill "$broker_pid" 2>/dev/null || true; wait "$broker_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/${port}") 2>/dev/null && break; sleep 0.1; done
if ! kill -0 "$broker_pid" 2>/dev/null; then
    echo "bench-telemetry.sh: mosquitto did not start; its log:" >&2
    cat "/var/tmp/custody-bench-mosquitto-${port}.log" >&2
    exit 1
fi
echo "[bench] private mosquitto on 127.0.0.1:${port} (pid ${broker_pid}, max_inflight_messages 1000)" >&2

# 10 000 recorders need 10 000 sockets in the server and as many in the fleet.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
"$CARGO_TARGET_DIR/release/custody" bench telemetry \
    --broker "mqtt://127.0.0.1:${port}" --broker-max-inflight 1000 --broker-pid "$broker_pid" "$@"
