-- The media pipeline (custody-media): what each evidence file is, as probed from its own bytes, the files
-- made from it for viewing, and the durable jobs that make them. Instants are microseconds since the epoch.

-- The probe result lives on the evidence row. These columns describe the bytes; they never change the
-- evidence's identity (id, hashes and size stay immutable, see 0001).
ALTER TABLE evidence ADD COLUMN media_state TEXT NOT NULL DEFAULT 'pending'
    CHECK (media_state IN ('pending', 'ready', 'failed'));
-- custody_core::media::MediaInfo as JSON.
ALTER TABLE evidence ADD COLUMN media_info TEXT;
-- custody_core::media::Playback as JSON: how a browser shows the file, or why it cannot.
ALTER TABLE evidence ADD COLUMN media_playback TEXT;
-- Why probing failed (a damaged or non-media file): shown to the case handler.
ALTER TABLE evidence ADD COLUMN media_error TEXT;
-- Duration and embedded creation time, as columns because coverage analysis queries them.
ALTER TABLE evidence ADD COLUMN media_duration_us BIGINT;
ALTER TABLE evidence ADD COLUMN media_created_at BIGINT;
ALTER TABLE evidence ADD COLUMN media_probed_at BIGINT;

-- Files made from an evidence item for viewing (poster frame, thumbnail strip, browser proxy). They live
-- under derived/ in the object store, never replace the original, and carry their own SHA-256.
CREATE TABLE derived_media (
    evidence_id     TEXT NOT NULL REFERENCES evidence (id),
    kind            TEXT NOT NULL CHECK (kind IN ('poster', 'thumbs', 'proxy')),
    path            TEXT NOT NULL,
    sha256          BLOB NOT NULL CHECK (length(sha256) = 32),
    size            BIGINT NOT NULL CHECK (size > 0),
    content_type    TEXT NOT NULL,
    width           INTEGER,
    height          INTEGER,
    -- Kind-specific facts as JSON (a strip's tile count and spacing, a proxy's duration).
    detail          TEXT,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (evidence_id, kind)
);

-- Background jobs, one row per evidence item and kind. A job is queued by the transaction that commits
-- its evidence, so no committed file is ever missed; a worker claims it under a lease, and a job whose
-- worker died is claimed again once the lease has run out. 'attempts' counts claims, so a file that
-- kills its worker every time is given up after the configured number of attempts.
CREATE TABLE media_jobs (
    evidence_id     TEXT NOT NULL REFERENCES evidence (id),
    kind            TEXT NOT NULL CHECK (kind IN ('probe', 'proxy')),
    state           TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- Not before this instant (backoff after a failure that may pass).
    run_after       BIGINT NOT NULL,
    -- The claim: who holds it, and until when.
    worker          TEXT,
    lease_until     BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (evidence_id, kind)
);

CREATE INDEX media_jobs_due ON media_jobs (state, run_after);

-- Evidence committed before this migration gets its probe job too.
INSERT INTO media_jobs (evidence_id, kind, state, attempts, run_after, created_at, updated_at)
    SELECT id, 'probe', 'queued', 0, 0, ingested_at, ingested_at FROM evidence;
