-- The station journal, format 1. One row per file version found on a recorder; a row moves
-- found -> hashed -> uploading (offset) -> receipted -> freed, or ends superseded (the file changed
-- before it was freed; its new content has a row of its own) or vanished (it disappeared from a docked
-- recorder before its receipt). Errors never change the state: they are noted beside it with a retry time.
-- Instants are microseconds since the Unix epoch (UTC).

CREATE TABLE journal_meta (
    key     TEXT PRIMARY KEY,
    value   TEXT NOT NULL
);
INSERT INTO journal_meta (key, value) VALUES ('format', '1');

-- Each time a recorder was docked.
CREATE TABLE docks (
    id              INTEGER PRIMARY KEY,
    slot            TEXT NOT NULL,
    device_id       TEXT NOT NULL,
    badge           TEXT NOT NULL,
    officer_name    TEXT NOT NULL,
    unit_no         TEXT NOT NULL,
    unit_name       TEXT NOT NULL,
    -- The recorder's clock minus the station's when docked, when the recorder told its clock.
    clock_offset_ms INTEGER,
    docked_at       INTEGER NOT NULL,
    undocked_at     INTEGER
);

CREATE TABLE files (
    id              INTEGER PRIMARY KEY,
    device_id       TEXT NOT NULL,
    -- Path inside the recorder's mount, '/'-separated.
    rel_path        TEXT NOT NULL,
    -- The version of the file this row is about: size and modification time (ns) as found. -1 and 0
    -- when the file's metadata could not be read.
    size            INTEGER NOT NULL,
    mtime_ns        INTEGER NOT NULL,
    state           TEXT NOT NULL CHECK (state IN
                        ('found', 'hashed', 'uploading', 'receipted', 'freed', 'superseded', 'vanished')),
    -- The declaration: from the file name (or the modification time when the name is not in the
    -- recorder format) and the device-info binding of the dock it was found in.
    file_name       TEXT NOT NULL,
    media_type      TEXT NOT NULL,
    importance      INTEGER NOT NULL CHECK (importance BETWEEN 1 AND 3),
    captured_at     INTEGER NOT NULL,
    dock_id         INTEGER NOT NULL REFERENCES docks (id),
    sha256          BLOB CHECK (sha256 IS NULL OR length(sha256) = 32),
    sm3             BLOB CHECK (sm3 IS NULL OR length(sm3) = 32),
    upload_id       TEXT,
    -- Bytes the server has acknowledged as durable.
    uploaded        INTEGER NOT NULL DEFAULT 0,
    evidence_id     TEXT,
    -- The verified receipt: a custody-ledger-proof/v1 JSON document, checkable offline.
    receipt         TEXT,
    duplicate       INTEGER,
    -- deleted, moved or kept, per the free policy in force when it was freed.
    freed_how       TEXT,
    freed_at        INTEGER,
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- The newest error that stopped this file, what kind it was, and when to try again.
    last_error      TEXT,
    error_kind      TEXT,
    retry_at        INTEGER NOT NULL DEFAULT 0,
    found_at        INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    UNIQUE (device_id, rel_path, size, mtime_ns),
    CHECK (state NOT IN ('receipted', 'freed') OR receipt IS NOT NULL)
);

CREATE INDEX files_work ON files (device_id, state, importance DESC, captured_at)
    WHERE state IN ('found', 'hashed', 'uploading', 'receipted');

-- A file is never freed without a receipt: even a bug in the agent cannot record it.
CREATE TRIGGER files_freed_only_with_receipt BEFORE UPDATE OF state ON files
    WHEN NEW.state = 'freed' AND (OLD.state NOT IN ('receipted', 'freed') OR NEW.receipt IS NULL)
BEGIN
    SELECT RAISE(ABORT, 'a file is freed only after its receipt was verified');
END;
