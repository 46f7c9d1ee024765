-- People, access and cases (custody-cases): user accounts and their sessions, the security audit log, the
-- officer registry with recorder check-outs (领用/归还) and who held each recorder when it recorded, and
-- cases (案件) with their handlers, status history, steps, evidence links and explained recording gaps.
-- Instants are microseconds since the Unix epoch (UTC).

CREATE TABLE users (
    username        TEXT PRIMARY KEY,
    display_name    TEXT NOT NULL,
    -- custody_core::access::Roles as a comma-separated list, e.g. 'case_handler,supervisor'.
    roles           TEXT NOT NULL CHECK (roles <> ''),
    -- The officer this account belongs to: an officer sees the footage of recorders they held.
    badge           TEXT,
    -- PHC string of an argon2id hash; the password itself is never stored.
    password_hash   TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    disabled_at     BIGINT
);

-- Bearer tokens. Only the SHA-256 of a token is kept (tokens are 32 random bytes), so a copy of the
-- database does not let anyone log in.
CREATE TABLE sessions (
    token_sha256    BLOB PRIMARY KEY CHECK (length(token_sha256) = 32),
    username        TEXT NOT NULL REFERENCES users (username),
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    revoked_at      BIGINT
);

CREATE INDEX sessions_by_user ON sessions (username);

-- Security events: logins (and refused ones), refused requests, account changes, case changes. Rows are
-- only ever added; the evidence events themselves are in the ledger.
CREATE TABLE audit_log (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    at              BIGINT NOT NULL,
    actor           TEXT NOT NULL,
    action          TEXT NOT NULL,
    target          TEXT,
    outcome         TEXT NOT NULL CHECK (outcome IN ('ok', 'denied', 'failed')),
    detail          TEXT
);

CREATE INDEX audit_log_by_actor ON audit_log (actor, id);
CREATE INDEX audit_log_by_target ON audit_log (target, id);

CREATE TRIGGER audit_log_is_append_only_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit log rows are never changed');
END;

CREATE TRIGGER audit_log_is_append_only_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit log rows are never deleted');
END;

-- The officer registry (警号, name, unit).
CREATE TABLE officers (
    badge           TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    unit            TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

-- Who held which recorder when. Periods of one recorder never overlap (checked when written), and a
-- recorder has at most one open check-out.
CREATE TABLE recorder_checkouts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id       TEXT NOT NULL,
    badge           TEXT NOT NULL REFERENCES officers (badge),
    out_at          BIGINT NOT NULL,
    returned_at     BIGINT CHECK (returned_at IS NULL OR returned_at > out_at),
    out_by          TEXT NOT NULL,
    returned_by     TEXT,
    note            TEXT
);

CREATE INDEX checkouts_by_device ON recorder_checkouts (device_id, out_at);
CREATE INDEX checkouts_by_badge ON recorder_checkouts (badge, out_at);
CREATE UNIQUE INDEX checkouts_one_open_per_recorder ON recorder_checkouts (device_id) WHERE returned_at IS NULL;

-- What the docking station reported with each file: the officer bound on the recorder (ZFY_INFO) and the
-- recorder's clock offset (recorder clock minus station clock, measured at docking).
ALTER TABLE uploads ADD COLUMN reported_badge TEXT;
ALTER TABLE uploads ADD COLUMN clock_offset_ms BIGINT;
ALTER TABLE evidence ADD COLUMN reported_badge TEXT;
ALTER TABLE evidence ADD COLUMN clock_offset_ms BIGINT;
-- The officer the item is attributed to, and how: 'checkout' (held the recorder at capture time, by the
-- check-out register), 'recorder' (no check-out covers it; the recorder's own binding), or 'none'.
-- 'attribution_conflict' is set when the register and the recorder's binding name different officers.
-- Recomputed whenever the register changes; never part of the evidence's identity.
ALTER TABLE evidence ADD COLUMN officer_badge TEXT;
ALTER TABLE evidence ADD COLUMN attribution TEXT NOT NULL DEFAULT 'none'
    CHECK (attribution IN ('checkout', 'recorder', 'none'));
ALTER TABLE evidence ADD COLUMN attribution_conflict INTEGER NOT NULL DEFAULT 0;

CREATE INDEX evidence_by_officer ON evidence (officer_badge, captured_at, id);

CREATE TABLE cases (
    id              TEXT PRIMARY KEY,
    case_no         TEXT NOT NULL UNIQUE,
    title           TEXT NOT NULL,
    procedure       TEXT NOT NULL CHECK (procedure IN ('general', 'simple')),
    status          TEXT NOT NULL CHECK (status IN ('accepted', 'filed', 'investigating', 'review', 'decided', 'serving', 'closed')),
    created_by      TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE TABLE case_handlers (
    case_id         TEXT NOT NULL REFERENCES cases (id),
    username        TEXT NOT NULL REFERENCES users (username),
    PRIMARY KEY (case_id, username)
);

CREATE INDEX case_handlers_by_user ON case_handlers (username, case_id);

-- Every status change, with who made it and why.
CREATE TABLE case_status_history (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    case_id         TEXT NOT NULL REFERENCES cases (id),
    from_status     TEXT,
    to_status       TEXT NOT NULL,
    at              BIGINT NOT NULL,
    actor           TEXT NOT NULL,
    note            TEXT
);

CREATE INDEX case_status_history_by_case ON case_status_history (case_id, id);

-- Enforcement actions (e.g. on-site inspection 10:02–10:40): a time window, a place, the officers present.
CREATE TABLE case_steps (
    id              TEXT PRIMARY KEY,
    case_id         TEXT NOT NULL REFERENCES cases (id),
    title           TEXT NOT NULL,
    starts_at       BIGINT NOT NULL,
    ends_at         BIGINT NOT NULL CHECK (ends_at > starts_at),
    place_name      TEXT,
    lat             DOUBLE PRECISION,
    lon             DOUBLE PRECISION,
    radius_m        DOUBLE PRECISION,
    -- Needs uninterrupted audio-video (无间断): unexplained gaps block review.
    continuous      INTEGER NOT NULL,
    created_by      TEXT NOT NULL,
    created_at      BIGINT NOT NULL
);

CREATE INDEX case_steps_by_case ON case_steps (case_id, starts_at);

CREATE TABLE step_officers (
    step_id         TEXT NOT NULL REFERENCES case_steps (id),
    badge           TEXT NOT NULL REFERENCES officers (badge),
    PRIMARY KEY (step_id, badge)
);

-- Evidence linked to a case, with its role. An unlink closes the row; rows are kept as history.
CREATE TABLE evidence_links (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    case_id         TEXT NOT NULL REFERENCES cases (id),
    evidence_id     TEXT NOT NULL REFERENCES evidence (id),
    step_id         TEXT REFERENCES case_steps (id),
    role            TEXT NOT NULL,
    note            TEXT,
    linked_by       TEXT NOT NULL,
    linked_at       BIGINT NOT NULL,
    unlinked_by     TEXT,
    unlinked_at     BIGINT,
    unlink_reason   TEXT
);

CREATE UNIQUE INDEX evidence_links_one_active ON evidence_links (case_id, evidence_id) WHERE unlinked_at IS NULL;
CREATE INDEX evidence_links_by_evidence ON evidence_links (evidence_id) WHERE unlinked_at IS NULL;

-- Why a recording gap is acceptable (e.g. the party asked to stop filming), stated on the record.
CREATE TABLE gap_explanations (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    step_id         TEXT NOT NULL REFERENCES case_steps (id),
    -- NULL: the explanation holds for every officer of the step.
    badge           TEXT,
    starts_at       BIGINT NOT NULL,
    ends_at         BIGINT NOT NULL CHECK (ends_at > starts_at),
    reason          TEXT NOT NULL CHECK (reason <> ''),
    explained_by    TEXT NOT NULL,
    explained_at    BIGINT NOT NULL
);

CREATE INDEX gap_explanations_by_step ON gap_explanations (step_id);
