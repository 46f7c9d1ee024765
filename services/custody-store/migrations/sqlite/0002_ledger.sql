-- The tamper-evident ledger: events waiting to be sequenced, the log itself (entries and RFC 6962 stored
-- hashes), how far tiles and checkpoints have caught up, and every signed checkpoint.

-- Events appended by any replica, waiting for the sequencer. Rows leave only by becoming log entries.
CREATE TABLE ledger_pending (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    kind            TEXT NOT NULL,
    evidence_id     TEXT NOT NULL REFERENCES evidence (id),
    actor           TEXT NOT NULL,
    officer         TEXT,
    detail          TEXT,
    server_time     BIGINT NOT NULL
);

-- The log. `idx` is the leaf index; `entry` the canonical bytes that were hashed.
CREATE TABLE ledger_entries (
    idx             BIGINT PRIMARY KEY CHECK (idx >= 0),
    kind            TEXT NOT NULL,
    evidence_id     TEXT NOT NULL,
    device_id       TEXT NOT NULL,
    entry           BLOB NOT NULL
);

CREATE INDEX ledger_entries_by_evidence ON ledger_entries (evidence_id, idx);
CREATE INDEX ledger_entries_by_device ON ledger_entries (device_id, idx);

-- Every stored hash of the tree, by tlog stored-hash index.
CREATE TABLE ledger_hashes (
    id              BIGINT PRIMARY KEY CHECK (id >= 0),
    hash            BLOB NOT NULL CHECK (length(hash) = 32)
);

-- One row. size: entries in the log; tiles_size: entries whose tiles are in the object store;
-- checkpoint_size: size of the newest signed checkpoint. checkpoint_size <= tiles_size <= size.
CREATE TABLE ledger_state (
    singleton       INTEGER PRIMARY KEY CHECK (singleton = 1),
    size            BIGINT NOT NULL,
    tiles_size      BIGINT NOT NULL,
    checkpoint_size BIGINT NOT NULL
);

INSERT INTO ledger_state (singleton, size, tiles_size, checkpoint_size) VALUES (1, 0, 0, 0);

CREATE TABLE ledger_checkpoints (
    size            BIGINT PRIMARY KEY CHECK (size > 0),
    root            BLOB NOT NULL CHECK (length(root) = 32),
    note            TEXT NOT NULL,
    created_at      BIGINT NOT NULL
);

-- No code path deletes or rewrites the log.
CREATE TRIGGER ledger_entries_are_append_only_d BEFORE DELETE ON ledger_entries
BEGIN
    SELECT RAISE(ABORT, 'ledger entries are never deleted');
END;

CREATE TRIGGER ledger_entries_are_append_only_u BEFORE UPDATE ON ledger_entries
BEGIN
    SELECT RAISE(ABORT, 'ledger entries are never rewritten');
END;

CREATE TRIGGER ledger_hashes_are_append_only_d BEFORE DELETE ON ledger_hashes
BEGIN
    SELECT RAISE(ABORT, 'ledger hashes are never deleted');
END;

CREATE TRIGGER ledger_hashes_are_append_only_u BEFORE UPDATE ON ledger_hashes
BEGIN
    SELECT RAISE(ABORT, 'ledger hashes are never rewritten');
END;

CREATE TRIGGER ledger_checkpoints_are_append_only_d BEFORE DELETE ON ledger_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'ledger checkpoints are never deleted');
END;

CREATE TRIGGER ledger_checkpoints_are_append_only_u BEFORE UPDATE ON ledger_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'ledger checkpoints are never rewritten');
END;
