//! Retention rows: what keeps an item (legal hold, obstruction, class), the walk over items old enough to
//! be due, and the tombstone. The decision itself is `custody_core::retention`; this module only makes
//! the guarded writes.
//!
//! Deletion is two steps so that a crash between them loses nothing and leaves nothing behind:
//! 1. [`Metadata::tombstone`] marks the row deleted and queues its `retention_delete` ledger event in one
//!    transaction, and only if the facts the decision was made on still hold (no hold, no new link, the
//!    same marks). Database triggers refuse a tombstone on an item that is held or in an open case,
//!    whatever the caller does.
//! 2. The caller deletes the bytes, then [`Metadata::mark_bytes_gone`]. Tombstones whose bytes are not
//!    yet gone are listed by [`Metadata::unfinished_deletions`] and finished on the next run.

use crate::error::StoreError;
use crate::ledger::{PendingEvent, bind_pending};
use crate::meta::{
    EvidenceRow, Metadata, PageCursor, Pool, evidence_columns, evidence_insert_columns, on_pool,
};
use custody_core::ledger::EventKind;
use custody_core::{CaseId, Evidence, EvidenceId, Timestamp};

/// An item old enough that its retention may be over, with what links it to cases.
#[derive(Debug, Clone)]
pub struct RetentionCandidate {
    pub evidence: Evidence,
    /// Active links to any case.
    pub links: u32,
    /// The open cases among them (looked up only for items that have links).
    pub open_cases: Vec<CaseId>,
}

/// The facts a deletion was decided on; the tombstone is placed only if they still hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TombstoneGuard {
    pub obstruction: bool,
    pub class: Option<String>,
    /// Active links to cases (all closed, or the item would not be due).
    pub links: u32,
}

/// How a change of retention marks went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkOutcome {
    Changed(Evidence),
    /// The item is a tombstone: nothing can be marked any more.
    Deleted(Evidence),
    NotFound,
}

#[derive(sqlx::FromRow)]
struct CandidateRow {
    #[sqlx(flatten)]
    evidence: EvidenceRow,
    links: i64,
}

const TOMBSTONE: &str = "UPDATE evidence SET deleted_at = $2, deletion_reason = $3 \
     WHERE id = $1 AND deleted_at IS NULL AND legal_hold IS NULL AND obstruction = $4 \
       AND retention_class IS NOT DISTINCT FROM $5 \
       AND (SELECT COUNT(*) FROM evidence_links l WHERE l.evidence_id = evidence.id AND l.unlinked_at IS NULL) = $6 \
       AND NOT EXISTS (SELECT 1 FROM evidence_links l JOIN cases c ON c.id = l.case_id \
           WHERE l.evidence_id = evidence.id AND l.unlinked_at IS NULL AND c.status <> 'closed')";

impl Metadata {
    /// Live items, not on legal hold, captured before `before`, in capture order after `after`: the only
    /// items whose retention can be over (every item keeps at least the default period).
    pub async fn retention_candidates(
        &self,
        before: Timestamp,
        after: Option<PageCursor>,
        limit: u32,
    ) -> Result<Vec<RetentionCandidate>, StoreError> {
        let sql = concat!(
            "SELECT ",
            evidence_columns!(),
            ", (SELECT COUNT(*) FROM evidence_links l WHERE l.evidence_id = evidence.id AND l.unlinked_at IS NULL) AS links \
             FROM evidence WHERE deleted_at IS NULL AND legal_hold IS NULL AND captured_at < $1 \
               AND (CAST($2 AS BIGINT) IS NULL OR (captured_at, id) > ($2, $3)) \
             ORDER BY captured_at, id LIMIT $4"
        );
        let rows: Vec<CandidateRow> = on_pool!(self, p => sqlx::query_as(sql)
            .bind(before.unix_micros())
            .bind(after.map(|c| c.captured_at.unix_micros()))
            .bind(after.map(|c| c.id.to_string()).unwrap_or_default())
            .bind(i64::from(limit.max(1)))
            .fetch_all(p)
            .await)
        .map_err(StoreError::db("listing evidence due for retention"))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let evidence = r.evidence.into_domain()?;
            let links = u32::try_from(r.links).unwrap_or(u32::MAX);
            let open_cases = if links > 0 {
                self.open_cases_of(evidence.id).await?
            } else {
                Vec::new()
            };
            out.push(RetentionCandidate {
                evidence,
                links,
                open_cases,
            });
        }
        Ok(out)
    }

    /// Marks an item deleted (`reason`: the rule that ended) and queues its `retention_delete` event, in
    /// one transaction, if it is still live and `guard` still describes it. Returns false, changing
    /// nothing, when something changed since the decision (a hold, a link, a mark): the next run decides
    /// again. On PostgreSQL the row is locked first, so a concurrent hold or link either commits before
    /// the guard is evaluated (and is seen) or waits for the tombstone (and is refused).
    pub async fn tombstone(
        &self,
        id: EvidenceId,
        guard: &TombstoneGuard,
        reason: &str,
        event: &PendingEvent,
    ) -> Result<bool, StoreError> {
        debug_assert_eq!(event.kind, EventKind::RetentionDelete);
        let at = event.server_time;
        let placed = on_pool!(self, p => async {
            let mut tx = p.begin().await?;
            if matches!(self.pool, Pool::Postgres(_)) {
                sqlx::query("SELECT id FROM evidence WHERE id = $1 FOR UPDATE")
                    .bind(id.to_string())
                    .fetch_optional(&mut *tx)
                    .await?;
            }
            let n = sqlx::query(TOMBSTONE)
                .bind(id.to_string())
                .bind(at.unix_micros())
                .bind(reason)
                .bind(guard.obstruction)
                .bind(guard.class.as_deref())
                .bind(i64::from(guard.links))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 1 {
                bind_pending!(event).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(n == 1)
        }.await)
        .map_err(StoreError::db("marking evidence deleted"))?;
        Ok(placed)
    }

    /// Tombstones whose bytes are not yet confirmed gone (a crash stopped the deletion), oldest first.
    pub async fn unfinished_deletions(&self, limit: u32) -> Result<Vec<Evidence>, StoreError> {
        let sql = concat!(
            "SELECT ",
            evidence_columns!(),
            " FROM evidence WHERE deleted_at IS NOT NULL AND bytes_gone_at IS NULL ORDER BY deleted_at, id LIMIT $1"
        );
        let rows: Vec<EvidenceRow> = on_pool!(self, p => sqlx::query_as(sql)
            .bind(i64::from(limit.max(1)))
            .fetch_all(p)
            .await)
        .map_err(StoreError::db("listing unfinished deletions"))?;
        rows.into_iter().map(EvidenceRow::into_domain).collect()
    }

    /// Records that a tombstone's bytes and derived files are gone: forgets its derived files and media
    /// jobs (a running job's claim is lost, so it stores nothing more) and sets `bytes_gone_at`.
    pub async fn mark_bytes_gone(&self, id: EvidenceId, at: Timestamp) -> Result<(), StoreError> {
        on_pool!(self, p => async {
            let mut tx = p.begin().await?;
            let n = sqlx::query(
                "UPDATE evidence SET bytes_gone_at = $2 WHERE id = $1 AND deleted_at IS NOT NULL AND bytes_gone_at IS NULL")
                .bind(id.to_string())
                .bind(at.unix_micros())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 1 {
                sqlx::query("DELETE FROM derived_media WHERE evidence_id = $1")
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM media_jobs WHERE evidence_id = $1")
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        }.await)
        .map_err(StoreError::db("recording deleted bytes"))
    }

    /// Places (`Some(reason)`) or releases (`None`) a legal hold and queues its `legal_hold` ledger event
    /// (`detail` says which), in one transaction. A tombstone cannot be held: its bytes are gone.
    pub async fn set_legal_hold(
        &self,
        id: EvidenceId,
        hold: Option<&str>,
        event: &PendingEvent,
    ) -> Result<MarkOutcome, StoreError> {
        debug_assert_eq!(event.kind, EventKind::LegalHold);
        let by = event.actor.as_str();
        let at = event.server_time.unix_micros();
        let sql = "UPDATE evidence SET legal_hold = $2, legal_hold_by = $3, legal_hold_at = $4 \
                   WHERE id = $1 AND deleted_at IS NULL";
        let changed = on_pool!(self, p => async {
            let mut tx = p.begin().await?;
            let n = sqlx::query(sql)
                .bind(id.to_string())
                .bind(hold)
                .bind(hold.map(|_| by))
                .bind(hold.map(|_| at))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 1 {
                bind_pending!(event).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(n == 1)
        }.await)
        .map_err(StoreError::db("placing or releasing a legal hold"))?;
        self.mark_outcome(id, changed).await
    }

    /// Sets the obstruction mark and/or the retention class (`Some(None)` clears the class).
    pub async fn set_retention_marks(
        &self,
        id: EvidenceId,
        obstruction: Option<bool>,
        class: Option<Option<&str>>,
    ) -> Result<MarkOutcome, StoreError> {
        let sql = "UPDATE evidence SET obstruction = COALESCE($2, obstruction), \
                   retention_class = CASE WHEN $3 THEN $4 ELSE retention_class END \
                   WHERE id = $1 AND deleted_at IS NULL";
        let n = on_pool!(self, p => sqlx::query(sql)
            .bind(id.to_string())
            .bind(obstruction)
            .bind(class.is_some())
            .bind(class.flatten())
            .execute(p)
            .await
            .map(|r| r.rows_affected()))
        .map_err(StoreError::db("setting retention marks"))?;
        self.mark_outcome(id, n == 1).await
    }

    async fn mark_outcome(&self, id: EvidenceId, changed: bool) -> Result<MarkOutcome, StoreError> {
        Ok(match self.get_evidence(id).await? {
            None => MarkOutcome::NotFound,
            Some(e) if changed => MarkOutcome::Changed(e),
            Some(e) => MarkOutcome::Deleted(e),
        })
    }

    /// Active links of an item to any case.
    pub async fn active_link_count(&self, id: EvidenceId) -> Result<u32, StoreError> {
        let n: i64 = on_pool!(self, p => sqlx::query_scalar(
            "SELECT COUNT(*) FROM evidence_links WHERE evidence_id = $1 AND unlinked_at IS NULL")
            .bind(id.to_string())
            .fetch_one(p)
            .await)
        .map_err(StoreError::db("counting links"))?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Evidence ids whose `retention_delete` event is queued but not yet in the ledger.
    pub async fn pending_deletions(&self) -> Result<Vec<EvidenceId>, StoreError> {
        let ids: Vec<String> = on_pool!(self, p => sqlx::query_scalar(
            "SELECT evidence_id FROM ledger_pending WHERE kind = 'retention_delete'")
            .fetch_all(p)
            .await)
        .map_err(StoreError::db("reading queued deletions"))?;
        ids.iter()
            .map(|s| {
                EvidenceId::parse(s)
                    .map_err(|e| crate::meta::corrupt("ledger_pending", s)(e.to_string()))
            })
            .collect()
    }
}
