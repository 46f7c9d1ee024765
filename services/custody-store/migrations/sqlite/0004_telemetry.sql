-- Telemetry: recorders' credentials, their positions, latest fix, status, alarms and geofences.
-- Instants are microseconds since the epoch (UTC). Coordinates are WGS-84 degrees.

-- Recorders that report positions over MQTT or gRPC. Only the SHA-256 of the secret is stored.
CREATE TABLE devices (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    secret_sha256   BLOB NOT NULL CHECK (length(secret_sha256) = 32),
    created_at      BIGINT NOT NULL,
    disabled_at     BIGINT
);

-- Every accepted fix. (device_id, t) is unique, so a message delivered twice is stored once.
-- Rows arrive roughly in time order, so rowid order is time order and the retention worker deletes
-- old rows from the front of the table in small chunks.
CREATE TABLE positions (
    device_id   TEXT NOT NULL,
    t           BIGINT NOT NULL,
    lat         DOUBLE NOT NULL,
    lon         DOUBLE NOT NULL,
    alt         REAL,
    speed       REAL,
    course      REAL,
    acc         REAL,
    sos         INTEGER NOT NULL DEFAULT 0,
    batt        INTEGER,
    received_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX positions_device_t ON positions (device_id, t);

-- The newest fix of each device: what the live map and the nearest-officer index start from.
CREATE TABLE device_latest (
    device_id   TEXT PRIMARY KEY,
    t           BIGINT NOT NULL,
    lat         DOUBLE NOT NULL,
    lon         DOUBLE NOT NULL,
    alt         REAL,
    speed       REAL,
    course      REAL,
    acc         REAL,
    sos         INTEGER NOT NULL DEFAULT 0,
    batt        INTEGER,
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
    lat         DOUBLE,
    lon         DOUBLE,
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
    lat         DOUBLE NOT NULL,
    lon         DOUBLE NOT NULL,
    PRIMARY KEY (device_id, fence_id, t, kind)
);
CREATE INDEX fence_events_t ON fence_events (t);
