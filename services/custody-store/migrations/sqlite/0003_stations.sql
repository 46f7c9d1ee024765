-- Docking stations (采集站): their upload credential and the newest status each reported over MQTT.
-- The credential itself is never stored, only its SHA-256 (it is 32 random bytes, so a plain hash is
-- enough to make a stolen database useless for logging in). Instants are microseconds since the epoch.

CREATE TABLE stations (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    secret_sha256   BLOB NOT NULL CHECK (length(secret_sha256) = 32),
    created_at      BIGINT NOT NULL,
    -- Set when the credential was revoked: the station can no longer upload or publish.
    disabled_at     BIGINT,
    -- The newest slots report (JSON, as decoded and re-encoded by the server) and when it arrived.
    slots_report    TEXT,
    slots_at        BIGINT,
    -- The newest heartbeat (JSON) and when it arrived.
    heartbeat       TEXT,
    heartbeat_at    BIGINT
);
