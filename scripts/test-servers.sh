#!/usr/bin/env bash
# Makes sure the real servers the tests talk to are installed and running, and prints the environment
# the tests read. Source it (`. scripts/test-servers.sh`) or run it; safe to run again.
#   PostgreSQL  127.0.0.1:5432          (Debian package postgresql)
#   S3          s3s-fs on 127.0.0.1:8014 (crates.io s3s-fs 0.14.1, a real S3 server that checks signatures)
#   MQTT        Mosquitto on 127.0.0.1:1883 (Debian packages mosquitto, mosquitto-clients)
# and the tools tests call: ffmpeg/ffprobe (Debian package ffmpeg, for custody-sim's real media).
set -euo pipefail

log() { printf '[test-servers] %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=""
apt_install() {
    if [ -z "$apt_updated" ]; then as_root apt-get update -qq >&2; apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >&2
}

# --- PostgreSQL -------------------------------------------------------------------------------------------
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    log "installing postgresql"
    apt_install postgresql postgresql-client
fi
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    log "starting postgresql"
    as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start
    for _ in $(seq 1 60); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done
fi
export CUSTODY_TEST_PG_URL="${CUSTODY_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
if ! psql "$CUSTODY_TEST_PG_URL" -qtAc 'select 1' >/dev/null 2>&1; then
    # A fresh Debian install does not trust TCP logins: give the postgres role a password for tests.
    log "setting a password for the postgres role (tests only)"
    as_root su postgres -c "psql -qc \"ALTER USER postgres PASSWORD 'postgres'\"" >&2
    export CUSTODY_TEST_PG_URL="postgres://postgres:postgres@127.0.0.1:5432/postgres"
fi
# Databases of earlier runs (tests name theirs custody_test_*).
psql "$CUSTODY_TEST_PG_URL" -qtAc "select datname from pg_database where datname like 'custody\_test\_%'" |
    while read -r db; do [ -n "$db" ] && psql "$CUSTODY_TEST_PG_URL" -qc "DROP DATABASE IF EXISTS \"$db\"" >/dev/null 2>&1 || true; done

# --- MQTT (Mosquitto) ------------------------------------------------------------------------------------
missing=()
command -v mosquitto >/dev/null 2>&1 || missing+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt_install "${missing[@]}"
fi
MQTT_PORT="${CUSTODY_TEST_MQTT_PORT:-1883}"
export CUSTODY_TEST_MQTT_URL="${CUSTODY_TEST_MQTT_URL:-mqtt://127.0.0.1:${MQTT_PORT}}"
if ! (exec 3<>"/dev/tcp/127.0.0.1/${MQTT_PORT}") 2>/dev/null; then
    # A fresh install's packaged service may not be running (no systemd in containers): start one with a
    # configuration of our own, on loopback only.
    conf=/var/tmp/custody-test-mosquitto.conf
    printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$MQTT_PORT" >"$conf"
    log "starting mosquitto on port ${MQTT_PORT}"
    mosquitto -d -c "$conf"
    for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/${MQTT_PORT}") 2>/dev/null && break; sleep 0.1; done
fi

# --- S3 (s3s-fs) ------------------------------------------------------------------------------------------
S3_PORT="${CUSTODY_TEST_S3_PORT:-8014}"
export CUSTODY_TEST_S3_ENDPOINT="http://127.0.0.1:${S3_PORT}"
export CUSTODY_TEST_S3_BUCKET="${CUSTODY_TEST_S3_BUCKET:-custody-test}"
export CUSTODY_TEST_S3_ACCESS_KEY="${CUSTODY_TEST_S3_ACCESS_KEY:-custody}"
export CUSTODY_TEST_S3_SECRET_KEY="${CUSTODY_TEST_S3_SECRET_KEY:-custody-secret}"
S3_DIR="${CUSTODY_TEST_S3_DIR:-/var/tmp/custody-s3}"
if ! command -v s3s-fs >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/s3s-fs" ]; then
    log "installing s3s-fs 0.14.1 from crates.io (about 2 minutes, once)"
    cargo install s3s-fs@0.14.1 --locked --features binary >&2
fi
S3S="$(command -v s3s-fs || echo "$HOME/.cargo/bin/s3s-fs")"
if ! (exec 3<>"/dev/tcp/127.0.0.1/${S3_PORT}") 2>/dev/null; then
    log "starting s3s-fs on port ${S3_PORT} with data in ${S3_DIR}"
    mkdir -p "${S3_DIR}/${CUSTODY_TEST_S3_BUCKET}"
    nohup "$S3S" --host 127.0.0.1 --port "$S3_PORT" --access-key "$CUSTODY_TEST_S3_ACCESS_KEY" \
        --secret-key "$CUSTODY_TEST_S3_SECRET_KEY" "$S3_DIR" >"${S3_DIR}.log" 2>&1 &
    for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/${S3_PORT}") 2>/dev/null && break; sleep 0.1; done
fi
mkdir -p "${S3_DIR}/${CUSTODY_TEST_S3_BUCKET}"
# Prefixes of earlier runs (each test writes under its own prefix); an hour old, so a run in progress
# keeps its own.
find "${S3_DIR}/${CUSTODY_TEST_S3_BUCKET}" -mindepth 1 -maxdepth 1 -mmin +60 -exec rm -rf {} + 2>/dev/null || true

log "postgresql: ${CUSTODY_TEST_PG_URL%%@*}@…  s3: ${CUSTODY_TEST_S3_ENDPOINT}/${CUSTODY_TEST_S3_BUCKET}  mqtt: ${CUSTODY_TEST_MQTT_URL}"
