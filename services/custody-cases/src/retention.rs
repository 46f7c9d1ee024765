//! Retention of evidence (《公安机关现场执法视音频记录工作规定》): the worker that deletes the bytes of items
//! whose time is over, and the marks that keep items longer (legal hold, obstruction, class).
//!
//! What is due is decided by `custody_core::retention::Policy` from the item's facts. A deletion removes
//! only bytes: the evidence row stays as a tombstone saying when and why, and a `retention_delete` event
//! is queued in the ledger in the same transaction that places the tombstone. The store refuses the
//! tombstone if anything the decision rested on changed meanwhile (a hold, a link, a mark), and database
//! triggers refuse it outright for an item on hold or linked to an open case. Bytes are deleted after the
//! tombstone commits; a crash in between is finished by the next run.

use crate::accounts::{User, audit, require};
use crate::error::CasesError;
use crate::{check_text, now};
use custody_core::access::Capability;
use custody_core::ledger::EventKind;
use custody_core::retention::{Decision, Facts, Policy};
use custody_core::{Evidence, EvidenceId, Timestamp, content_path};
use custody_ingest::Ledger;
use custody_store::{
    Blobs, MarkOutcome, Metadata, PageCursor, PendingEvent, RetentionCandidate, TombstoneGuard,
};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct RetentionConfig {
    pub policy: Policy,
    /// How often the worker runs; zero runs no worker in this process.
    pub interval: Duration,
    /// Items read per page of the walk.
    pub page: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            interval: Duration::from_secs(3600),
            page: 500,
        }
    }
}

/// The retention worker and the marks.
#[derive(Debug, Clone)]
pub struct Retention {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    meta: Metadata,
    blobs: Blobs,
    /// Woken after queueing events; `None` from the command line, where the serving process's
    /// sequencer takes the events at its next poll.
    ledger: Option<Ledger>,
    config: RetentionConfig,
}

/// One item whose retention is over.
#[derive(Debug, Clone)]
pub struct DueItem {
    pub evidence: Evidence,
    /// When its longest applicable period ended.
    pub since: Timestamp,
    /// The rule that ended.
    pub reason: String,
}

/// What happened to a due item in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemOutcome {
    /// A dry run: it would be deleted.
    WouldDelete,
    /// Tombstone placed, bytes deleted.
    Deleted,
    /// Something changed since the decision (a hold, a link, a mark): kept; the next run decides again.
    Changed,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Items old enough to be looked at (live, not held, captured before the default period's cut-off).
    pub examined: u64,
    /// Of those, items whose retention is over, and their size.
    pub due: u64,
    pub due_bytes: u64,
    pub deleted: u64,
    pub bytes_deleted: u64,
    /// Due items kept because something changed during the run.
    pub changed: u64,
    /// Deletions a previous run (or a crash) left unfinished, finished now.
    pub finished: u64,
    pub dry_run: bool,
}

impl Retention {
    pub fn new(
        meta: Metadata,
        blobs: Blobs,
        ledger: Option<Ledger>,
        config: RetentionConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                meta,
                blobs,
                ledger,
                config,
            }),
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.inner.config.policy
    }

    /// The facts retention decides on for one candidate.
    fn facts(c: &RetentionCandidate) -> Facts {
        let r = &c.evidence.retention;
        Facts {
            captured_at: c.evidence.captured_at,
            legal_hold: r.legal_hold.as_ref().map(|h| h.reason.clone()),
            open_cases: c.open_cases.iter().map(|id| id.to_string()).collect(),
            in_a_case: c.links > 0,
            obstruction: r.obstruction,
            class: r.class.clone(),
        }
    }

    /// The decision for one item now (for `GET /evidence/{id}/retention`).
    pub async fn decision_now(&self, evidence: &Evidence) -> Result<Decision, CasesError> {
        self.decision_for(evidence, now()).await
    }

    /// The decision for one item at `now`.
    pub async fn decision_for(
        &self,
        evidence: &Evidence,
        now: Timestamp,
    ) -> Result<Decision, CasesError> {
        let open = self.inner.meta.open_cases_of(evidence.id).await?;
        let links = self.inner.meta.active_link_count(evidence.id).await?;
        let c = RetentionCandidate {
            evidence: evidence.clone(),
            links,
            open_cases: open,
        };
        Ok(self.policy().decide(&Self::facts(&c), now))
    }

    /// One pass at `now`: finishes deletions a crash left behind, then walks every item old enough to
    /// be due, in capture order, and deletes (or, with `dry_run`, only reports) those whose retention
    /// is over. `on_item` hears of every due item as it is handled (progress, the dry-run listing).
    pub async fn run_once(
        &self,
        now: Timestamp,
        dry_run: bool,
        mut on_item: impl FnMut(&DueItem, ItemOutcome),
    ) -> Result<RunReport, CasesError> {
        let mut report = RunReport {
            dry_run,
            ..Default::default()
        };
        if !dry_run {
            report.finished = self.finish_deletions().await?;
        }
        let Some(cutoff) = self.policy().earliest_cutoff(now) else {
            return Ok(report);
        };
        let mut after: Option<PageCursor> = None;
        loop {
            let page = self
                .inner
                .meta
                .retention_candidates(cutoff, after, self.inner.config.page)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(PageCursor {
                captured_at: last.evidence.captured_at,
                id: last.evidence.id,
            });
            for c in page {
                report.examined += 1;
                let Decision::Due { since, reason } = self.policy().decide(&Self::facts(&c), now)
                else {
                    continue;
                };
                report.due += 1;
                report.due_bytes += c.evidence.size;
                let item = DueItem {
                    since,
                    reason,
                    evidence: c.evidence.clone(),
                };
                if dry_run {
                    on_item(&item, ItemOutcome::WouldDelete);
                    continue;
                }
                let guard = TombstoneGuard {
                    obstruction: c.evidence.retention.obstruction,
                    class: c.evidence.retention.class.clone(),
                    links: c.links,
                };
                if self.delete(&item, &guard, now).await? {
                    report.deleted += 1;
                    report.bytes_deleted += item.evidence.size;
                    on_item(&item, ItemOutcome::Deleted);
                } else {
                    report.changed += 1;
                    on_item(&item, ItemOutcome::Changed);
                }
            }
        }
        if report.deleted > 0 || report.finished > 0 || report.due > 0 {
            tracing::info!(
                examined = report.examined,
                due = report.due,
                deleted = report.deleted,
                bytes = report.bytes_deleted,
                changed = report.changed,
                finished = report.finished,
                dry_run,
                "retention pass done"
            );
        }
        Ok(report)
    }

    /// Places the tombstone (with its ledger event), then deletes the bytes. False when the guard no
    /// longer held.
    async fn delete(
        &self,
        item: &DueItem,
        guard: &TombstoneGuard,
        now: Timestamp,
    ) -> Result<bool, CasesError> {
        let e = &item.evidence;
        let reason = format!("retention ended: {}", item.reason);
        let event = PendingEvent {
            kind: EventKind::RetentionDelete,
            evidence_id: e.id,
            actor: "system:retention".into(),
            officer: e.attribution.officer.as_ref().map(|b| b.to_string()),
            detail: Some(
                serde_json::json!({ "reason": reason, "since": item.since, "size": e.size })
                    .to_string(),
            ),
            server_time: now,
        };
        if !self
            .inner
            .meta
            .tombstone(e.id, guard, &reason, &event)
            .await?
        {
            tracing::info!(evidence = %e.id, "retention: the item changed since it was found due; kept");
            return Ok(false);
        }
        self.notify();
        tracing::info!(evidence = %e.id, sha256 = %e.sha256, size = e.size, captured_at = %e.captured_at,
            reason = %reason, "retention: evidence deleted (tombstone kept)");
        self.remove_bytes(e).await?;
        Ok(true)
    }

    /// Deletes a tombstone's bytes and every file made from them, then records that they are gone.
    async fn remove_bytes(&self, e: &Evidence) -> Result<(), CasesError> {
        let blobs = &self.inner.blobs;
        blobs.delete(&content_path(&e.sha256)).await?;
        // Everything under the original's derived folder, including a file a media worker stored but
        // never recorded.
        for key in blobs
            .list(&custody_core::media::derived_dir(&e.sha256))
            .await?
        {
            blobs.delete(&key).await?;
        }
        self.inner.meta.mark_bytes_gone(e.id, now()).await?;
        Ok(())
    }

    /// Finishes deletions whose bytes a crash (or a failing object store) left behind.
    async fn finish_deletions(&self) -> Result<u64, CasesError> {
        let mut n = 0;
        loop {
            let batch = self
                .inner
                .meta
                .unfinished_deletions(self.inner.config.page)
                .await?;
            if batch.is_empty() {
                return Ok(n);
            }
            for e in &batch {
                tracing::info!(evidence = %e.id, "retention: finishing an interrupted deletion");
                self.remove_bytes(e).await?;
                n += 1;
            }
        }
    }

    /// Runs a pass every `interval` until `stop`. A failing pass is logged and tried again at the next
    /// interval; nothing it did is lost (tombstones are finished by the next pass).
    pub async fn run(self, stop: CancellationToken) {
        let interval = self.inner.config.interval;
        if interval.is_zero() {
            return;
        }
        tracing::info!(every = ?interval, default = %self.policy().default, "retention worker started");
        loop {
            match self.run_once(now(), false, |_, _| {}).await {
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "retention pass failed; retrying at the next interval")
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Reads an item for a change of its marks: it must exist and be the caller's to see.
    async fn item_for_change(
        &self,
        by: &User,
        cases: &crate::Cases,
        id: EvidenceId,
        action: &str,
    ) -> Result<Evidence, CasesError> {
        cases.check_evidence_access(by, id, action).await?;
        self.inner
            .meta
            .get_evidence(id)
            .await?
            .ok_or_else(|| CasesError::NotFound(format!("evidence {id}")))
    }

    /// Places a legal hold (`Some(reason)`) or releases one (`None` with the release `note`): supervisors
    /// only. Each is a `legal_hold` ledger event naming who and why.
    pub async fn set_hold(
        &self,
        by: &User,
        cases: &crate::Cases,
        id: EvidenceId,
        hold: Option<&str>,
        note: &str,
    ) -> Result<Evidence, CasesError> {
        let target = format!("evidence:{id}");
        let action = if hold.is_some() {
            "evidence.hold"
        } else {
            "evidence.release"
        };
        require(
            &self.inner.meta,
            by,
            Capability::HoldEvidence,
            action,
            Some(&target),
        )
        .await?;
        let e = self.item_for_change(by, cases, id, action).await?;
        let reason = hold.map(|r| check_text("reason", r, 500)).transpose()?;
        let note = check_text(if hold.is_some() { "reason" } else { "note" }, note, 500)?;
        if hold.is_none() && e.retention.legal_hold.is_none() {
            return Err(CasesError::FailedPrecondition(format!(
                "evidence {id} is not on legal hold"
            )));
        }
        let detail = match &reason {
            Some(r) => serde_json::json!({ "hold": "placed", "reason": r }),
            None => serde_json::json!({ "hold": "released", "note": note,
                "was": e.retention.legal_hold.as_ref().map(|h| h.reason.clone()) }),
        };
        let event = PendingEvent {
            kind: EventKind::LegalHold,
            evidence_id: id,
            actor: by.actor(),
            officer: e.attribution.officer.as_ref().map(|b| b.to_string()),
            detail: Some(detail.to_string()),
            server_time: now(),
        };
        let out = self
            .inner
            .meta
            .set_legal_hold(id, reason.as_deref(), &event)
            .await?;
        let e = Self::changed(id, out)?;
        self.notify();
        audit(
            &self.inner.meta,
            &by.actor(),
            action,
            Some(&target),
            "ok",
            Some(&note),
        )
        .await;
        tracing::info!(evidence = %id, by = %by.username, held = reason.is_some(), "legal hold changed");
        Ok(e)
    }

    /// Sets the obstruction mark and/or the retention class (`Some(None)` clears it). Marking only keeps
    /// an item longer, so case handlers may do it for what they can see; clearing a mark needs a
    /// supervisor. Every change is in the audit log.
    pub async fn set_marks(
        &self,
        by: &User,
        cases: &crate::Cases,
        id: EvidenceId,
        obstruction: Option<bool>,
        class: Option<Option<&str>>,
    ) -> Result<Evidence, CasesError> {
        let target = format!("evidence:{id}");
        if obstruction.is_none() && class.is_none() {
            return Err(CasesError::InvalidArgument(
                "give obstruction (true or false) or class (a configured class, or null to clear it)"
                    .into(),
            ));
        }
        if let Some(Some(c)) = class {
            self.policy()
                .check_class(c)
                .map_err(|e| CasesError::InvalidArgument(format!("class: {e}")))?;
        }
        let clearing = obstruction == Some(false) || matches!(class, Some(None));
        let cap = if clearing {
            Capability::HoldEvidence
        } else {
            Capability::MarkRetention
        };
        require(&self.inner.meta, by, cap, "evidence.mark", Some(&target)).await?;
        self.item_for_change(by, cases, id, "evidence.mark").await?;
        let out = self
            .inner
            .meta
            .set_retention_marks(id, obstruction, class)
            .await?;
        let e = Self::changed(id, out)?;
        let detail = serde_json::json!({ "obstruction": obstruction, "class": class }).to_string();
        audit(
            &self.inner.meta,
            &by.actor(),
            "evidence.mark",
            Some(&target),
            "ok",
            Some(&detail),
        )
        .await;
        Ok(e)
    }

    fn notify(&self) {
        if let Some(l) = &self.inner.ledger {
            l.notify_queued();
        }
    }

    fn changed(id: EvidenceId, out: MarkOutcome) -> Result<Evidence, CasesError> {
        match out {
            MarkOutcome::Changed(e) => Ok(e),
            MarkOutcome::NotFound => Err(CasesError::NotFound(format!("evidence {id}"))),
            MarkOutcome::Deleted(e) => Err(CasesError::Gone(format!(
                "evidence {id} was deleted by retention at {}; a tombstone keeps no marks",
                e.deleted().map(|d| d.at.to_string()).unwrap_or_default()
            ))),
        }
    }
}
