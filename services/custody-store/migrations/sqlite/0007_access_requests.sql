-- Approval before copy (四眼原则): a request to download the original of an evidence item or to export a
-- case, decided by a supervisor who is not the requester. Viewing needs no request; copying does.
-- Instants are microseconds since the Unix epoch (UTC).
CREATE TABLE access_requests (
    -- UUIDv7, so ids follow creation time.
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL CHECK (kind IN ('download', 'export')),
    -- What is asked for: a download names an evidence item, an export a case (and nothing else).
    evidence_id     TEXT REFERENCES evidence (id),
    case_id         TEXT REFERENCES cases (id),
    requester       TEXT NOT NULL REFERENCES users (username),
    reason          TEXT NOT NULL CHECK (reason <> ''),
    state           TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'refused', 'withdrawn')),
    -- Who decided (a supervisor) or withdrew (the requester), when and why.
    decided_by      TEXT REFERENCES users (username),
    decided_at      BIGINT,
    decision_note   TEXT,
    created_at      BIGINT NOT NULL,
    -- Until when an approval opens copies (set at approval: decided_at + approval_ttl).
    expires_at      BIGINT,
    CHECK ((kind = 'download' AND evidence_id IS NOT NULL AND case_id IS NULL)
        OR (kind = 'export' AND case_id IS NOT NULL AND evidence_id IS NULL)),
    -- Decided exactly when no longer pending; only an approval has an expiry.
    CHECK ((state = 'pending') = (decided_by IS NULL)),
    CHECK ((state = 'pending') = (decided_at IS NULL)),
    CHECK ((state = 'approved') = (expires_at IS NOT NULL)),
    -- Four eyes, in the database too: nobody approves their own request.
    CHECK (state <> 'approved' OR decided_by <> requester)
);

CREATE INDEX access_requests_by_requester ON access_requests (requester, created_at, id);
CREATE INDEX access_requests_by_state ON access_requests (state, created_at, id);
CREATE INDEX access_requests_by_evidence ON access_requests (evidence_id, requester) WHERE evidence_id IS NOT NULL;
CREATE INDEX access_requests_by_case ON access_requests (case_id, requester) WHERE case_id IS NOT NULL;

-- A request is decided once: what it asks for never changes, a decided request never changes, and no
-- request is ever deleted.
CREATE TRIGGER access_requests_decisions_are_final BEFORE UPDATE ON access_requests
WHEN OLD.state <> 'pending'
  OR NEW.id IS NOT OLD.id OR NEW.kind IS NOT OLD.kind OR NEW.evidence_id IS NOT OLD.evidence_id
  OR NEW.case_id IS NOT OLD.case_id OR NEW.requester IS NOT OLD.requester
  OR NEW.reason IS NOT OLD.reason OR NEW.created_at IS NOT OLD.created_at
BEGIN
    SELECT RAISE(ABORT, 'an access request is decided once and what it asks for never changes');
END;

CREATE TRIGGER access_requests_are_never_deleted BEFORE DELETE ON access_requests
BEGIN
    SELECT RAISE(ABORT, 'access requests are never deleted');
END;
