-- Evidence and resumable uploads. Instants are microseconds since the Unix epoch (UTC).

CREATE TABLE uploads (
    id              TEXT PRIMARY KEY,
    device_id       TEXT NOT NULL,
    station_id      TEXT NOT NULL,
    file_name       TEXT NOT NULL,
    size            BIGINT NOT NULL CHECK (size > 0),
    sha256          BYTEA NOT NULL CHECK (length(sha256) = 32),
    sm3             BYTEA CHECK (sm3 IS NULL OR length(sm3) = 32),
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
    sha256          BYTEA NOT NULL UNIQUE CHECK (length(sha256) = 32),
    sm3             BYTEA CHECK (sm3 IS NULL OR length(sm3) = 32),
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
CREATE FUNCTION custody_refuse_evidence_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'evidence rows are never deleted';
    END IF;
    IF NEW.id <> OLD.id OR NEW.sha256 <> OLD.sha256 OR NEW.sm3 IS DISTINCT FROM OLD.sm3 OR NEW.size <> OLD.size THEN
        RAISE EXCEPTION 'evidence id, hashes and size are immutable';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER evidence_rows_are_never_deleted BEFORE DELETE OR UPDATE ON evidence
    FOR EACH ROW EXECUTE FUNCTION custody_refuse_evidence_change();
