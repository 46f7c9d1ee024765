//! Approval before copy (四眼原则): requests to download an original or export a case, their decision by
//! a second user with the supervisor role, and the checks the download and export paths make.
//!
//! Viewing needs no request. A copy needs an approved request of the user taking it, live at that
//! moment: approved by a supervisor who is not the requester, and at most `approval_ttl` old. One
//! approval covers any number of copies by its requester until it expires (each download is still its
//! own ledger event). Who may ask, decide and read is decided in `custody_core::access`; every refusal
//! is audited before it is returned.

use crate::accounts::{User, audit, require};
use crate::cases::Cases;
use crate::error::CasesError;
use crate::{check_text, now};
use custody_core::access::{Capability, may_decide};
use custody_core::request::{CopyKind, CopyTarget, RequestState, opens_copy};
use custody_core::{CaseId, EvidenceId, RequestId, Timestamp};
use custody_store::{Decision, Metadata, RequestCursor, RequestFilter, RequestRecord, StoreError};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RequestsConfig {
    /// How long an approval opens copies after it was given.
    pub approval_ttl: Duration,
}

impl Default for RequestsConfig {
    fn default() -> Self {
        Self {
            approval_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// Access requests and the approval checks of the copy paths.
#[derive(Debug, Clone)]
pub struct Requests {
    meta: Metadata,
    /// For the same evidence and case read checks the rest of the API makes.
    cases: Cases,
    config: RequestsConfig,
}

/// Which requests to list.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestQuery {
    pub state: Option<RequestState>,
    /// Only the caller's own requests (always so for a user who may not read everyone's).
    pub mine: bool,
    /// Only pending requests of others, which the caller (a supervisor) may decide.
    pub awaiting: bool,
}

fn request_label(id: RequestId) -> String {
    format!("request:{id}")
}

impl Requests {
    pub fn new(meta: Metadata, cases: Cases, config: RequestsConfig) -> Self {
        Self {
            meta,
            cases,
            config,
        }
    }

    pub fn config(&self) -> &RequestsConfig {
        &self.config
    }

    /// Asks for a copy of `target`. The requester must be allowed to ask for copies and to read what
    /// they ask for: the evidence item (their scope) or the case (a handler of it, or a reader of every
    /// case). The request starts pending.
    pub async fn create(
        &self,
        by: &User,
        target: CopyTarget,
        reason: &str,
    ) -> Result<RequestRecord, CasesError> {
        let label = target.label();
        require(
            &self.meta,
            by,
            Capability::RequestCopy,
            "request.create",
            Some(&label),
        )
        .await?;
        let reason = check_text("reason", reason, 1000)?;
        match target {
            CopyTarget::Evidence(id) => {
                self.cases
                    .check_evidence_access(by, id, "request.create")
                    .await?;
                if let Some(d) = self
                    .meta
                    .get_evidence(id)
                    .await?
                    .and_then(|e| e.retention.deleted)
                {
                    return Err(CasesError::Gone(format!(
                        "evidence {id} cannot be copied: its bytes were deleted at {} when its retention ended ({})",
                        d.at, d.reason
                    )));
                }
            }
            CopyTarget::Case(id) => {
                self.cases.get(by, id).await?;
            }
        }
        let r = RequestRecord::pending(target, by.username.clone(), reason, now());
        self.meta.insert_request(&r).await?;
        audit(
            &self.meta,
            &by.actor(),
            "request.create",
            Some(&request_label(r.id)),
            "ok",
            Some(&format!("{} of {label}: {}", target.kind(), r.reason)),
        )
        .await;
        tracing::info!(request = %r.id, kind = %target.kind(), target = %label, by = %by.username, "copy requested");
        Ok(r)
    }

    async fn record(&self, id: RequestId) -> Result<RequestRecord, CasesError> {
        self.meta
            .get_request(id)
            .await?
            .ok_or_else(|| CasesError::NotFound(format!("access request {id}")))
    }

    /// One request: for its requester, and for users who read every request (supervisors, auditors).
    pub async fn get(&self, by: &User, id: RequestId) -> Result<RequestRecord, CasesError> {
        let r = self.record(id).await?;
        if r.requester != by.username && !by.can(Capability::ReadAllRequests) {
            let why = format!(
                "user {} ({}) may not read access request {id} of user {}",
                by.username,
                by.roles.to_list(),
                r.requester
            );
            audit(
                &self.meta,
                &by.actor(),
                "request.read",
                Some(&request_label(id)),
                "denied",
                Some(&why),
            )
            .await;
            return Err(CasesError::PermissionDenied(why));
        }
        Ok(r)
    }

    /// Requests newest first: a user who may not read every request sees only their own.
    pub async fn list(
        &self,
        by: &User,
        q: RequestQuery,
        after: Option<RequestCursor>,
        limit: u32,
    ) -> Result<Vec<RequestRecord>, CasesError> {
        if q.awaiting {
            require(
                &self.meta,
                by,
                Capability::ApproveRequests,
                "request.list",
                None,
            )
            .await?;
        }
        let own = q.mine || !by.can(Capability::ReadAllRequests);
        let filter = RequestFilter {
            requester: own.then_some(&by.username),
            state: q.state,
            awaiting: q.awaiting.then_some(&by.username),
        };
        Ok(self.meta.list_requests(&filter, after, limit).await?)
    }

    /// Approves a pending request of someone else (supervisors only). The approval opens copies for
    /// the requester for `approval_ttl`.
    pub async fn approve(
        &self,
        by: &User,
        id: RequestId,
        note: Option<&str>,
    ) -> Result<RequestRecord, CasesError> {
        // The approval runs from the instant it is recorded as given.
        let t = now();
        let until = t.saturating_add_micros(
            i64::try_from(self.config.approval_ttl.as_micros()).unwrap_or(i64::MAX),
        );
        self.decide(by, id, Decision::Approve { until }, note, t)
            .await
    }

    /// Refuses a pending request of someone else (supervisors only), saying why.
    pub async fn refuse(
        &self,
        by: &User,
        id: RequestId,
        note: &str,
    ) -> Result<RequestRecord, CasesError> {
        check_text("note", note, 1000)?;
        self.decide(by, id, Decision::Refuse, Some(note), now())
            .await
    }

    async fn decide(
        &self,
        by: &User,
        id: RequestId,
        decision: Decision,
        note: Option<&str>,
        at: Timestamp,
    ) -> Result<RequestRecord, CasesError> {
        let action = match decision {
            Decision::Approve { .. } => "request.approve",
            Decision::Refuse => "request.refuse",
            Decision::Withdraw => "request.withdraw",
        };
        let note = optional_text("note", note, 1000)?;
        let r = self.record(id).await?;
        if let Err(refusal) = may_decide(by.roles, &by.username, &r.requester) {
            let why = format!(
                "user {} ({}) may not decide access request {id}: {refusal}",
                by.username,
                by.roles.to_list()
            );
            audit(
                &self.meta,
                &by.actor(),
                action,
                Some(&request_label(id)),
                "denied",
                Some(&why),
            )
            .await;
            return Err(CasesError::PermissionDenied(why));
        }
        self.close(by, r, decision, note.as_deref(), action, at)
            .await
    }

    /// Takes back one's own pending request.
    pub async fn withdraw(&self, by: &User, id: RequestId) -> Result<RequestRecord, CasesError> {
        let r = self.record(id).await?;
        if r.requester != by.username {
            let why = format!(
                "user {} may not withdraw access request {id}: only its requester {} may",
                by.username, r.requester
            );
            audit(
                &self.meta,
                &by.actor(),
                "request.withdraw",
                Some(&request_label(id)),
                "denied",
                Some(&why),
            )
            .await;
            return Err(CasesError::PermissionDenied(why));
        }
        self.close(by, r, Decision::Withdraw, None, "request.withdraw", now())
            .await
    }

    async fn close(
        &self,
        by: &User,
        r: RequestRecord,
        decision: Decision,
        note: Option<&str>,
        action: &str,
        at: Timestamp,
    ) -> Result<RequestRecord, CasesError> {
        if r.state != RequestState::Pending {
            return Err(already_decided(&r));
        }
        let decided = self
            .meta
            .decide_request(r.id, decision, &by.username, at, note)
            .await
            .map_err(|e| match e {
                // Someone else decided it in the meantime.
                StoreError::Conflict(m) => CasesError::FailedPrecondition(m),
                e => CasesError::from(e),
            })?;
        audit(
            &self.meta,
            &by.actor(),
            action,
            Some(&request_label(r.id)),
            "ok",
            Some(&format!(
                "{} of {} requested by {}{}",
                r.target.kind(),
                r.target.label(),
                r.requester,
                note.map(|n| format!(": {n}")).unwrap_or_default()
            )),
        )
        .await;
        tracing::info!(request = %r.id, state = %decided.state, by = %by.username, requester = %r.requester, "access request decided");
        Ok(decided)
    }

    /// The live approved download request of `by` for evidence `id`; without one the download is
    /// refused (`PermissionDenied`, audited) with a message saying how to ask. The caller checks first
    /// that `by` may see the item at all.
    pub async fn require_download(
        &self,
        by: &User,
        id: EvidenceId,
    ) -> Result<RequestRecord, CasesError> {
        self.require(by, CopyTarget::Evidence(id), "evidence.download")
            .await
    }

    /// The live approved export request of `by` for case `id`; without one the export is refused
    /// (`PermissionDenied`, audited).
    pub async fn require_export(&self, by: &User, id: CaseId) -> Result<RequestRecord, CasesError> {
        self.require(by, CopyTarget::Case(id), "case.export").await
    }

    async fn require(
        &self,
        by: &User,
        target: CopyTarget,
        action: &str,
    ) -> Result<RequestRecord, CasesError> {
        let t = now();
        if let Some(r) = self.meta.live_approval(&by.username, target, t).await?
            && opens_copy(r.state, r.expires_at, t)
        {
            return Ok(r);
        }
        let (what, body) = match target {
            CopyTarget::Evidence(id) => (
                format!("downloading the original of evidence {id}"),
                format!(r#"{{"kind":"download","evidence_id":"{id}","reason":"…"}}"#),
            ),
            CopyTarget::Case(id) => (
                format!("exporting case {id}"),
                format!(r#"{{"kind":"export","case_id":"{id}","reason":"…"}}"#),
            ),
        };
        let why = format!(
            "{what} needs an approved request of user {} and they hold none that is live: ask with POST /api/v1/requests {body}, and have a supervisor other than the requester approve it (POST /api/v1/requests/{{id}}/approve); an approval is valid for {}{}",
            by.username,
            humanize(self.config.approval_ttl),
            match target.kind() {
                CopyKind::Download => "; viewing in the browser needs no request",
                CopyKind::Export => "",
            }
        );
        audit(
            &self.meta,
            &by.actor(),
            action,
            Some(&target.label()),
            "denied",
            Some(&why),
        )
        .await;
        Err(CasesError::PermissionDenied(why))
    }
}

fn already_decided(r: &RequestRecord) -> CasesError {
    CasesError::FailedPrecondition(format!(
        "access request {} is already {}{}; a request is decided once (ask again with POST /api/v1/requests)",
        r.id,
        r.state,
        r.decided_by
            .as_ref()
            .map(|u| format!(" by {u}"))
            .unwrap_or_default()
    ))
}

fn optional_text(field: &str, s: Option<&str>, max: usize) -> Result<Option<String>, CasesError> {
    match s.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => check_text(field, s, max).map(Some),
    }
}

/// A duration as people write it: `24h`, `90s`, `1h30m`.
fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (h, m, sec) = (s / 3600, s % 3600 / 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if sec > 0 {
        out.push_str(&format!("{sec}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(humanize(Duration::from_secs(24 * 3600)), "24h");
        assert_eq!(humanize(Duration::from_secs(5400)), "1h30m");
        assert_eq!(humanize(Duration::from_secs(2)), "2s");
        assert_eq!(humanize(Duration::from_millis(300)), "300ms");
    }
}
