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
CREATE FUNCTION custody_refuse_access_request_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'access requests are never deleted';
    END IF;
    IF OLD.state <> 'pending'
       OR NEW.id IS DISTINCT FROM OLD.id OR NEW.kind IS DISTINCT FROM OLD.kind
       OR NEW.evidence_id IS DISTINCT FROM OLD.evidence_id OR NEW.case_id IS DISTINCT FROM OLD.case_id
       OR NEW.requester IS DISTINCT FROM OLD.requester OR NEW.reason IS DISTINCT FROM OLD.reason
       OR NEW.created_at IS DISTINCT FROM OLD.created_at THEN
        RAISE EXCEPTION 'an access request is decided once and what it asks for never changes';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER access_requests_decisions_are_final BEFORE UPDATE OR DELETE ON access_requests
    FOR EACH ROW EXECUTE FUNCTION custody_refuse_access_request_change();
