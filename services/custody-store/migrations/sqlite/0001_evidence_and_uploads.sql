-- Evidence and resumable uploads. Instants are microseconds since the Unix epoch (UTC).

CREATE TABLE uploads (
    id              TEXT PRIMARY KEY,
    device_id       TEXT NOT NULL,
    station_id      TEXT NOT NULL,
    file_name       TEXT NOT NULL,
    size            BIGINT NOT NULL CHECK (size > 0),
    sha256          BLOB NOT NULL CHECK (length(sha256) = 32),
    sm3             BLOB CHECK (sm3 IS NULL OR length(sm3) = 32),
    captured_at     BIGINT NOT NULL,
    importance      INTEGER NOT NULL CHECK (importance BETWEEN 1 AND 3),
    media_type      TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('open', 'committing', 'committed', 'failed', 'expired')),
    committed_size  BIGINT NOT NULL CHECK (committed_size >= 0 AND committed_size <= size),
    staging         TEXT NOT NULL,
    failure         TEXT,
    evidence_id     TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL
);

CREATE INDEX uploads_resumable ON uploads (sha256, size, device_id) WHERE state IN ('open', 'committing');
CREATE INDEX uploads_expiry ON uploads (expires_at) WHERE state IN ('open', 'committing');

CREATE TABLE evidence (
    id              TEXT PRIMARY KEY,
    sha256          BLOB NOT NULL UNIQUE CHECK (length(sha256) = 32),
    sm3             BLOB CHECK (sm3 IS NULL OR length(sm3) = 32),
    size            BIGINT NOT NULL CHECK (size > 0),
    device_id       TEXT NOT NULL,
    station_id      TEXT NOT NULL,
    file_name       TEXT NOT NULL,
    media_type      TEXT NOT NULL,
    importance      INTEGER NOT NULL CHECK (importance BETWEEN 1 AND 3),
    captured_at     BIGINT NOT NULL,
    ingested_at     BIGINT NOT NULL,
    upload_id       TEXT NOT NULL
);

CREATE INDEX evidence_by_capture ON evidence (captured_at, id);
CREATE INDEX evidence_by_device ON evidence (device_id, captured_at, id);
CREATE INDEX evidence_by_station ON evidence (station_id, captured_at, id);

-- Evidence rows are never deleted, and what identifies the bytes is never rewritten. Retention (a later
-- migration) removes bytes and marks a tombstone; it does not delete rows.
CREATE TRIGGER evidence_rows_are_never_deleted BEFORE DELETE ON evidence
BEGIN
    SELECT RAISE(ABORT, 'evidence rows are never deleted');
END;

CREATE TRIGGER evidence_identity_is_immutable BEFORE UPDATE OF id, sha256, sm3, size ON evidence
BEGIN
    SELECT RAISE(ABORT, 'evidence id, hashes and size are immutable');
END;
