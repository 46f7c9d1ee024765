-- Telemetry: recorders' credentials, their positions, latest fix, status, alarms and geofences.
-- Instants are microseconds since the epoch (UTC). Coordinates are WGS-84 degrees.

-- Recorders that report positions over MQTT or gRPC. Only the SHA-256 of the secret is stored.
CREATE TABLE devices (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    secret_sha256   BYTEA NOT NULL CHECK (length(secret_sha256) = 32),
    created_at      BIGINT NOT NULL,
    disabled_at     BIGINT
);

-- Every accepted fix, partitioned by UTC day on t (partitions positions_pYYYYMMDD are created by the
-- server as fixes for a new day arrive, and dropped whole by retention: no giant DELETE).
-- (device_id, t) is unique, so a message delivered twice is stored once.
CREATE TABLE positions (
    device_id   TEXT NOT NULL,
    t           BIGINT NOT NULL,
    lat         DOUBLE PRECISION NOT NULL,
    lon         DOUBLE PRECISION NOT NULL,
    alt         REAL,
    speed       REAL,
    course      REAL,
    acc         REAL,
    sos         SMALLINT NOT NULL DEFAULT 0,
    batt        SMALLINT,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (device_id, t)
) PARTITION BY RANGE (t);

-- The newest fix of each device: what the live map and the nearest-officer index start from.
CREATE TABLE device_latest (
    device_id   TEXT PRIMARY KEY,
    t           BIGINT NOT NULL,
    lat         DOUBLE PRECISION NOT NULL,
    lon         DOUBLE PRECISION NOT NULL,
    alt         REAL,
    speed       REAL,
    course      REAL,
    acc         REAL,
    sos         SMALLINT NOT NULL DEFAULT 0,
    batt        SMALLINT,
    received_at BIGINT NOT NULL
);

-- The newest status a device published (retained topic custody/v1/dev/{device}/status), as JSON.
CREATE TABLE device_status (
    device_id   TEXT PRIMARY KEY,
    status      TEXT NOT NULL,
    received_at BIGINT NOT NULL
);

-- Alarms (SOS key, or any kind a device raises). A redelivered alarm has the same (device, kind,
-- raised_at) and is stored once. An operator acknowledges it once.
CREATE TABLE alarms (
    id          TEXT PRIMARY KEY,
    device_id   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    raised_at   BIGINT NOT NULL,
    lat         DOUBLE PRECISION,
    lon         DOUBLE PRECISION,
    note        TEXT NOT NULL DEFAULT '',
    received_at BIGINT NOT NULL,
    acked_at    BIGINT,
    acked_by    TEXT,
    ack_note    TEXT,
    UNIQUE (device_id, kind, raised_at)
);
CREATE INDEX alarms_open ON alarms (acked_at, raised_at);

-- Geofences (网格, 辖区): a polygon ring as JSON [[lat, lon], ...] in WGS-84.
CREATE TABLE geofences (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    ring        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- A device entering or leaving a geofence.
CREATE TABLE fence_events (
    device_id   TEXT NOT NULL,
    fence_id    TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('enter', 'leave')),
    t           BIGINT NOT NULL,
    lat         DOUBLE PRECISION NOT NULL,
    lon         DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (device_id, fence_id, t, kind)
);
CREATE INDEX fence_events_t ON fence_events (t);
