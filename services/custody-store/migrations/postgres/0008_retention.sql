-- Retention (《公安机关现场执法视音频记录工作规定》): what keeps an item beyond the default period, and the
-- tombstone left when its time is over. Instants are microseconds since the epoch.
--
-- Deleting evidence removes its bytes (and the files made from them) from the object store; the row stays
-- as a tombstone with when and why, and a `retention_delete` ledger event is queued in the same
-- transaction that marks it. None of these columns is part of the evidence's identity (see 0001).

-- A legal hold keeps the item whatever its age, until released: the reason, who placed it and when.
ALTER TABLE evidence ADD COLUMN legal_hold TEXT;
ALTER TABLE evidence ADD COLUMN legal_hold_by TEXT;
ALTER TABLE evidence ADD COLUMN legal_hold_at BIGINT;
-- Footage showing obstruction of duty (妨碍执法) is kept for the configured period (for ever by default).
ALTER TABLE evidence ADD COLUMN obstruction BOOLEAN NOT NULL DEFAULT FALSE;
-- A named class from the configuration (`retention_classes`), e.g. major_incident.
ALTER TABLE evidence ADD COLUMN retention_class TEXT;
-- The tombstone: when the item was marked deleted and which rule ended, then when its bytes were gone.
ALTER TABLE evidence ADD COLUMN deleted_at BIGINT;
ALTER TABLE evidence ADD COLUMN deletion_reason TEXT;
ALTER TABLE evidence ADD COLUMN bytes_gone_at BIGINT;

-- The retention worker walks live items in capture order, older than the default period.
CREATE INDEX evidence_retention_walk ON evidence (captured_at, id) WHERE deleted_at IS NULL;
-- Deletions whose bytes a crash left behind.
CREATE INDEX evidence_deletions_unfinished ON evidence (deleted_at) WHERE deleted_at IS NOT NULL AND bytes_gone_at IS NULL;

-- Whatever the code above does: an item on legal hold or linked to an open case is never marked deleted,
-- and a tombstone is final (never lifted or rewritten; the bytes are gone only after it is placed).
CREATE FUNCTION custody_guard_retention() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL AND (NEW.legal_hold IS NOT NULL OR EXISTS (
        SELECT 1 FROM evidence_links l JOIN cases c ON c.id = l.case_id
        WHERE l.evidence_id = NEW.id AND l.unlinked_at IS NULL AND c.status <> 'closed')) THEN
        RAISE EXCEPTION 'evidence on legal hold or linked to an open case is never deleted';
    END IF;
    IF (OLD.deleted_at IS NOT NULL AND (NEW.deleted_at IS DISTINCT FROM OLD.deleted_at
            OR NEW.deletion_reason IS DISTINCT FROM OLD.deletion_reason))
       OR (OLD.bytes_gone_at IS NOT NULL AND NEW.bytes_gone_at IS DISTINCT FROM OLD.bytes_gone_at)
       OR (NEW.bytes_gone_at IS NOT NULL AND NEW.deleted_at IS NULL) THEN
        RAISE EXCEPTION 'a retention tombstone is never lifted or rewritten';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER evidence_retention_guard BEFORE UPDATE OF deleted_at, deletion_reason, bytes_gone_at ON evidence
    FOR EACH ROW EXECUTE FUNCTION custody_guard_retention();

-- Deleted footage cannot be linked to a case: there is nothing left to show.
CREATE FUNCTION custody_refuse_link_to_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM evidence e WHERE e.id = NEW.evidence_id AND e.deleted_at IS NOT NULL) THEN
        RAISE EXCEPTION 'evidence deleted by retention cannot be linked';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER evidence_links_need_live_evidence BEFORE INSERT ON evidence_links
    FOR EACH ROW EXECUTE FUNCTION custody_refuse_link_to_deleted();
