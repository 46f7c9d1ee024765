//! Cases (案件): creation, handlers, steps, evidence links (each a ledger event), the status flow with its
//! coverage gate, and recording-coverage analysis with suggestions of unlinked footage.

use crate::accounts::{User, audit, require};
use crate::error::CasesError;
use crate::{check_text, now};
use custody_core::access::{Capability, Role, Username};
use custody_core::case::{CaseNo, CaseStatus, Procedure, check_transition, requires_gap_check};
use custody_core::coverage::{
    Candidate, Explanation, Interval, OfficerCoverage, Place, Recording, Suggestion,
    corrected_start, step_coverage, suggest,
};
use custody_core::ledger::EventKind;
use custody_core::media::MediaInfo;
use custody_core::{BadgeNo, CaseId, EvidenceId, StepId, Timestamp};
use custody_ingest::Ledger;
use custody_store::{
    CaseCursor, CaseRecord, ExplanationRecord, FootageRecord, LinkRecord, Metadata, PendingEvent,
    StatusChange, StepPlace, StepRecord, StoreError,
};
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct CasesConfig {
    /// Unrecorded stretches of a step at most this long are not gaps (the moment between two segments
    /// a recorder splits a long recording into).
    pub min_gap: Duration,
    /// The longest single recording expected: footage that started this long before a step's window
    /// may still overlap it, so suggestions look back this far.
    pub max_recording: Duration,
}

impl Default for CasesConfig {
    fn default() -> Self {
        Self {
            min_gap: Duration::from_secs(10),
            max_recording: Duration::from_secs(4 * 3600),
        }
    }
}

/// Cases and their evidence.
#[derive(Debug, Clone)]
pub struct Cases {
    meta: Metadata,
    ledger: Ledger,
    config: CasesConfig,
}

/// What a handler supplies to open a case.
#[derive(Debug, Clone)]
pub struct NewCase {
    pub case_no: CaseNo,
    pub title: String,
    pub procedure: Procedure,
    /// Further handlers besides the creator.
    pub handlers: Vec<Username>,
}

/// An enforcement step to add to a case.
#[derive(Debug, Clone)]
pub struct NewStep {
    pub title: String,
    pub window: Interval,
    pub place_name: Option<String>,
    pub place: Option<Place>,
    pub continuous: bool,
    pub officers: Vec<BadgeNo>,
}

/// A link to make.
#[derive(Debug, Clone)]
pub struct LinkRequest {
    pub evidence_id: EvidenceId,
    pub step_id: Option<StepId>,
    /// What the footage shows for the case, e.g. `现场检查` or `on_site`.
    pub role: String,
    pub note: Option<String>,
}

/// Coverage of one step.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StepReport {
    pub step_id: StepId,
    pub title: String,
    pub window: Interval,
    pub continuous: bool,
    pub officers: Vec<OfficerCoverage>,
    /// Gaps no explanation covers, over all officers of the step.
    pub unexplained_gaps: usize,
    /// Unlinked footage of the step's officers that overlaps its window, best first.
    pub suggestions: Vec<Suggestion>,
}

/// Coverage of a whole case.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CoverageReport {
    pub case_id: CaseId,
    /// Pauses at most this long are not gaps.
    pub min_gap_us: i64,
    pub steps: Vec<StepReport>,
    /// Unexplained gaps in steps that need continuous recording: these block review.
    pub blocking_gaps: usize,
    /// Linked items no officer is attributed to (no check-out and no recorder binding): they cannot
    /// count for anyone's coverage until the register says who held the recorder.
    pub unattributed: Vec<EvidenceId>,
}

fn check_optional(field: &str, s: Option<&str>, max: usize) -> Result<Option<String>, CasesError> {
    match s.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) if s.chars().count() > max => Err(CasesError::InvalidArgument(format!(
            "{field}: must be at most {max} characters, got {}",
            s.chars().count()
        ))),
        Some(s) => Ok(Some(s.to_string())),
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// What coverage analysis sees of a stored item.
fn location_of(f: &FootageRecord) -> Option<(f64, f64)> {
    let info: MediaInfo = serde_json::from_str(f.media_info.as_deref()?).ok()?;
    info.location.map(|l| (l.lat, l.lon))
}

impl Cases {
    pub fn new(meta: Metadata, ledger: Ledger, config: CasesConfig) -> Self {
        Self {
            meta,
            ledger,
            config,
        }
    }

    pub fn config(&self) -> &CasesConfig {
        &self.config
    }

    /// Opens a case; its creator handles it, with the other named handlers.
    pub async fn create(&self, by: &User, new: NewCase) -> Result<CaseRecord, CasesError> {
        require(&self.meta, by, Capability::ManageCases, "case.create", None).await?;
        let title = check_text("title", &new.title, 200)?;
        let mut handlers = vec![by.username.clone()];
        for h in new.handlers {
            let Some(u) = self.meta.get_user(&h).await? else {
                return Err(CasesError::NotFound(format!("user {h}")));
            };
            if !(u.roles.has(Role::CaseHandler) || u.roles.has(Role::Supervisor)) {
                return Err(CasesError::InvalidArgument(format!(
                    "handlers: user {h} is not a case handler or supervisor"
                )));
            }
            if !handlers.contains(&h) {
                handlers.push(h);
            }
        }
        let t = now();
        let case = CaseRecord {
            id: CaseId::new(),
            case_no: new.case_no,
            title,
            procedure: new.procedure,
            status: CaseStatus::Accepted,
            created_by: by.actor(),
            created_at: t,
            updated_at: t,
            handlers,
        };
        self.meta.insert_case(&case).await?;
        audit(
            &self.meta,
            &by.actor(),
            "case.create",
            Some(&format!("case:{}", case.id)),
            "ok",
            Some(case.case_no.as_str()),
        )
        .await;
        tracing::info!(case = %case.id, case_no = %case.case_no, by = %by.username, "case opened");
        Ok(case)
    }

    /// A case, if `by` may read it: a handler of it, or a user who reads every case. Anyone else gets
    /// `PermissionDenied`, audited.
    pub async fn get(&self, by: &User, id: CaseId) -> Result<CaseRecord, CasesError> {
        let case = self
            .meta
            .get_case(id)
            .await?
            .ok_or_else(|| CasesError::NotFound(format!("case {id}")))?;
        if !(by.can(Capability::ReadAllCases) || case.handlers.contains(&by.username)) {
            let why = format!("user {} does not handle case {}", by.username, case.case_no);
            audit(
                &self.meta,
                &by.actor(),
                "case.read",
                Some(&format!("case:{id}")),
                "denied",
                Some(&why),
            )
            .await;
            return Err(CasesError::PermissionDenied(why));
        }
        Ok(case)
    }

    /// A case that `by` may change: a handler (with the case-handling role) or a supervisor.
    async fn get_for_change(
        &self,
        by: &User,
        id: CaseId,
        action: &str,
    ) -> Result<CaseRecord, CasesError> {
        require(
            &self.meta,
            by,
            Capability::ManageCases,
            action,
            Some(&format!("case:{id}")),
        )
        .await?;
        let case = self.get(by, id).await?;
        if !(case.handlers.contains(&by.username) || by.roles.has(Role::Supervisor)) {
            let why = format!("user {} does not handle case {}", by.username, case.case_no);
            audit(
                &self.meta,
                &by.actor(),
                action,
                Some(&format!("case:{id}")),
                "denied",
                Some(&why),
            )
            .await;
            return Err(CasesError::PermissionDenied(why));
        }
        if !case.status.is_open() {
            return Err(CasesError::FailedPrecondition(format!(
                "case {} is closed (结案); it can no longer change",
                case.case_no
            )));
        }
        Ok(case)
    }

    /// Cases `by` may read, newest first: all of them for auditors and supervisors, else their own.
    pub async fn list(
        &self,
        by: &User,
        status: Option<CaseStatus>,
        case_no: Option<&CaseNo>,
        after: Option<CaseCursor>,
        limit: u32,
    ) -> Result<Vec<CaseRecord>, CasesError> {
        let handler = if by.can(Capability::ReadAllCases) {
            None
        } else if by.can(Capability::ManageCases) {
            Some(&by.username)
        } else {
            return Err(self.deny(by, "case.list", None, "may not read cases").await);
        };
        Ok(self
            .meta
            .list_cases(handler, status, case_no, after, limit)
            .await?)
    }

    async fn deny(&self, by: &User, action: &str, target: Option<&str>, what: &str) -> CasesError {
        let why = format!("user {} ({}) {what}", by.username, by.roles.to_list());
        audit(
            &self.meta,
            &by.actor(),
            action,
            target,
            "denied",
            Some(&why),
        )
        .await;
        CasesError::PermissionDenied(why)
    }

    pub async fn history(&self, by: &User, id: CaseId) -> Result<Vec<StatusChange>, CasesError> {
        self.get(by, id).await?;
        Ok(self.meta.case_history(id).await?)
    }

    /// Adds an enforcement step. Its officers must be registered.
    pub async fn add_step(
        &self,
        by: &User,
        case: CaseId,
        new: NewStep,
    ) -> Result<StepRecord, CasesError> {
        self.get_for_change(by, case, "case.step").await?;
        if new.officers.is_empty() {
            return Err(CasesError::InvalidArgument(
                "officers: a step needs at least one officer present".into(),
            ));
        }
        let step = StepRecord {
            id: StepId::new(),
            case_id: case,
            title: check_text("title", &new.title, 200)?,
            starts_at: new.window.start(),
            ends_at: new.window.end(),
            place: StepPlace {
                name: check_optional("place_name", new.place_name.as_deref(), 200)?,
                point: new.place.map(|p| (p.lat(), p.lon(), p.radius_m())),
            },
            continuous: new.continuous,
            officers: {
                let mut o = new.officers;
                o.sort();
                o.dedup();
                o
            },
            created_by: by.actor(),
            created_at: now(),
        };
        self.meta.insert_step(&step).await?;
        audit(
            &self.meta,
            &by.actor(),
            "case.step",
            Some(&format!("case:{case}")),
            "ok",
            Some(&step.title),
        )
        .await;
        Ok(step)
    }

    pub async fn steps(&self, by: &User, case: CaseId) -> Result<Vec<StepRecord>, CasesError> {
        self.get(by, case).await?;
        Ok(self.meta.steps_of(case).await?)
    }

    /// Links an item to a case; the `link` ledger event is queued with the link, in one transaction.
    ///
    /// A handler may link footage they can already see, or footage of an officer present at one of the
    /// case's steps (what coverage suggests); anything else is refused and audited, so that linking is
    /// not a way around the officer scoping.
    pub async fn link(
        &self,
        by: &User,
        case_id: CaseId,
        req: LinkRequest,
    ) -> Result<LinkRecord, CasesError> {
        let case = self.get_for_change(by, case_id, "case.link").await?;
        let role = check_text("role", &req.role, 64)?;
        let note = check_optional("note", req.note.as_deref(), 1000)?;
        let evidence = self
            .meta
            .get_evidence(req.evidence_id)
            .await?
            .ok_or_else(|| CasesError::NotFound(format!("evidence {}", req.evidence_id)))?;
        if let Some(d) = evidence.deleted() {
            return Err(CasesError::Gone(format!(
                "evidence {} cannot be linked: its bytes were deleted at {} when its retention ended ({})",
                evidence.id, d.at, d.reason
            )));
        }
        let steps = self.meta.steps_of(case_id).await?;
        if let Some(s) = req.step_id
            && !steps.iter().any(|x| x.id == s)
        {
            return Err(CasesError::NotFound(format!(
                "step {s} of case {}",
                case.case_no
            )));
        }
        let on_a_step = evidence
            .attribution
            .officer
            .as_ref()
            .is_some_and(|o| steps.iter().any(|s| s.officers.contains(o)));
        if !on_a_step
            && !self
                .meta
                .evidence_in_scope(evidence.id, &by.scope())
                .await?
        {
            return Err(self
                .deny(
                    by,
                    "case.link",
                    Some(&format!("evidence:{}", evidence.id)),
                    &format!(
                        "may not link evidence {}: it is not theirs to see and not by an officer present at a step of case {}",
                        evidence.id, case.case_no
                    ),
                )
                .await);
        }
        let t = now();
        let detail = serde_json::json!({
            "case_id": case.id,
            "case_no": case.case_no,
            "step_id": req.step_id,
            "role": role,
            "note": note,
        })
        .to_string();
        let link = LinkRecord {
            id: 0,
            case_id,
            evidence_id: evidence.id,
            step_id: req.step_id,
            role,
            note,
            linked_by: by.actor(),
            linked_at: t,
            unlinked_by: None,
            unlinked_at: None,
            unlink_reason: None,
        };
        let event = PendingEvent {
            kind: EventKind::Link,
            evidence_id: evidence.id,
            actor: by.actor(),
            officer: evidence.attribution.officer.as_ref().map(|b| b.to_string()),
            detail: Some(detail),
            server_time: t,
        };
        let link = self.meta.link_evidence(&link, &event).await?;
        self.ledger.notify_queued();
        tracing::info!(case = %case.case_no, evidence = %evidence.id, by = %by.username, "evidence linked");
        Ok(link)
    }

    /// Unlinks an item (the link row is kept as history); the `unlink` ledger event goes with it.
    pub async fn unlink(
        &self,
        by: &User,
        case_id: CaseId,
        evidence: EvidenceId,
        reason: &str,
    ) -> Result<(), CasesError> {
        let case = self.get_for_change(by, case_id, "case.unlink").await?;
        let reason = check_text("reason", reason, 1000)?;
        let e = self
            .meta
            .get_evidence(evidence)
            .await?
            .ok_or_else(|| CasesError::NotFound(format!("evidence {evidence}")))?;
        let t = now();
        let event = PendingEvent {
            kind: EventKind::Unlink,
            evidence_id: evidence,
            actor: by.actor(),
            officer: e.attribution.officer.as_ref().map(|b| b.to_string()),
            detail: Some(
                serde_json::json!({"case_id": case.id, "case_no": case.case_no, "reason": reason})
                    .to_string(),
            ),
            server_time: t,
        };
        self.meta
            .unlink_evidence(case_id, evidence, &by.actor(), &reason, t, &event)
            .await?;
        self.ledger.notify_queued();
        tracing::info!(case = %case.case_no, evidence = %evidence, by = %by.username, "evidence unlinked");
        Ok(())
    }

    pub async fn links(
        &self,
        by: &User,
        case: CaseId,
        history: bool,
    ) -> Result<Vec<LinkRecord>, CasesError> {
        self.get(by, case).await?;
        Ok(self.meta.links_of(case, history).await?)
    }

    /// Records why part of a step was not recorded. `badge` `None` explains it for every officer.
    pub async fn explain_gap(
        &self,
        by: &User,
        case: CaseId,
        step: StepId,
        badge: Option<BadgeNo>,
        interval: Interval,
        reason: &str,
    ) -> Result<ExplanationRecord, CasesError> {
        self.get_for_change(by, case, "case.explain").await?;
        let reason = check_text("reason", reason, 1000)?;
        let steps = self.meta.steps_of(case).await?;
        let Some(s) = steps.iter().find(|s| s.id == step) else {
            return Err(CasesError::NotFound(format!("step {step} of case {case}")));
        };
        if let Some(b) = &badge
            && !s.officers.contains(b)
        {
            return Err(CasesError::InvalidArgument(format!(
                "badge: officer {b} is not present at step {:?}",
                s.title
            )));
        }
        let mut x = ExplanationRecord {
            id: 0,
            step_id: step,
            badge,
            starts_at: interval.start(),
            ends_at: interval.end(),
            reason,
            explained_by: by.actor(),
            explained_at: now(),
        };
        x.id = self.meta.insert_explanation(&x).await?;
        audit(
            &self.meta,
            &by.actor(),
            "case.explain",
            Some(&format!("case:{case}")),
            "ok",
            Some(&x.reason),
        )
        .await;
        Ok(x)
    }

    /// Moves a case along its status flow. Entering review (or, under the simple procedure, the decision)
    /// is refused while a step that needs continuous recording has unexplained gaps.
    pub async fn set_status(
        &self,
        by: &User,
        id: CaseId,
        to: CaseStatus,
        note: Option<&str>,
    ) -> Result<CaseRecord, CasesError> {
        let case = self.get_for_change(by, id, "case.status").await?;
        check_transition(case.procedure, case.status, to)
            .map_err(|e| CasesError::FailedPrecondition(e.to_string()))?;
        if requires_gap_check(case.procedure, to) {
            let report = self.compute(id, false).await?;
            if report.blocking_gaps > 0 {
                let mut listed = Vec::new();
                for s in report.steps.iter().filter(|s| s.continuous) {
                    for o in &s.officers {
                        for g in o.unexplained_gaps() {
                            listed.push(format!(
                                "step {:?}, officer {}: {} to {}",
                                s.title,
                                o.officer,
                                g.interval.start(),
                                g.interval.end()
                            ));
                        }
                    }
                }
                return Err(CasesError::FailedPrecondition(format!(
                    "case {} cannot move to {} ({}): {} unexplained recording gap(s) in steps that need continuous recording; link the footage or explain each gap: {}",
                    case.case_no,
                    to,
                    to.label_zh(),
                    report.blocking_gaps,
                    listed.join("; ")
                )));
            }
        }
        let note = check_optional("note", note, 1000)?;
        self.meta
            // Against the case as read above: a link, unlink or step added while coverage was being
            // checked makes this a conflict instead of passing over it.
            .set_case_status(
                id,
                case.status,
                to,
                &by.actor(),
                note.as_deref(),
                now(),
                Some(case.updated_at),
            )
            .await?;
        audit(
            &self.meta,
            &by.actor(),
            "case.status",
            Some(&format!("case:{id}")),
            "ok",
            Some(&format!("{} -> {to}", case.status)),
        )
        .await;
        tracing::info!(case = %case.case_no, from = %case.status, to = %to, by = %by.username, "case status changed");
        self.get(by, id).await
    }

    /// The coverage of every step of a case by its linked recordings, with suggestions.
    pub async fn coverage(&self, by: &User, id: CaseId) -> Result<CoverageReport, CasesError> {
        self.get(by, id).await?;
        self.compute(id, true).await
    }

    /// Computes coverage; `with_suggestions` also looks up unlinked footage for each step.
    pub async fn compute(
        &self,
        id: CaseId,
        with_suggestions: bool,
    ) -> Result<CoverageReport, CasesError> {
        let steps = self.meta.steps_of(id).await?;
        let footage = self.meta.linked_footage(id).await?;
        let explanations = self.meta.explanations_of(id).await?;
        let min_gap_us = micros(self.config.min_gap);
        let mut unattributed = Vec::new();
        let recordings: Vec<Recording> = footage
            .iter()
            .filter_map(|f| {
                let Some(officer) = f.officer.clone() else {
                    unattributed.push(f.evidence_id);
                    return None;
                };
                Some(Recording {
                    evidence_id: f.evidence_id,
                    officer,
                    start: corrected_start(f.captured_at, f.clock_offset_ms),
                    duration_us: f.duration_us.unwrap_or(0),
                    location: location_of(f),
                })
            })
            .collect();
        // Unlinked footage of the case's officers over the whole case, in one lookup per officer; each
        // step then picks what overlaps its own window.
        let candidates = if with_suggestions && !steps.is_empty() {
            Some(self.candidates(id, &steps).await?)
        } else {
            None
        };
        let mut reports = Vec::with_capacity(steps.len());
        let mut blocking = 0;
        for s in &steps {
            let window = Interval::new(s.starts_at, s.ends_at)
                .map_err(|e| StoreError::Corrupt(format!("case_steps row {}: {e}", s.id)))?;
            let x: Vec<Explanation> = explanations
                .iter()
                .filter(|x| x.step_id == s.id)
                .filter_map(|x| {
                    Some(Explanation {
                        officer: x.badge.clone(),
                        interval: Interval::new(x.starts_at, x.ends_at).ok()?,
                    })
                })
                .collect();
            let officers = step_coverage(window, &s.officers, &recordings, min_gap_us, &x);
            let unexplained: usize = officers.iter().map(|o| o.unexplained_gaps().count()).sum();
            if s.continuous {
                blocking += unexplained;
            }
            let suggestions = match &candidates {
                Some(c) => self.suggestions(s, window, &officers, c),
                None => Vec::new(),
            };
            reports.push(StepReport {
                step_id: s.id,
                title: s.title.clone(),
                window,
                continuous: s.continuous,
                officers,
                unexplained_gaps: unexplained,
                suggestions,
            });
        }
        Ok(CoverageReport {
            case_id: id,
            min_gap_us,
            steps: reports,
            blocking_gaps: blocking,
            unattributed,
        })
    }

    /// Unlinked footage of every officer present at a step of the case, over the case's whole span.
    async fn candidates(
        &self,
        case: CaseId,
        steps: &[StepRecord],
    ) -> Result<Vec<Candidate>, CasesError> {
        let mut officers: Vec<BadgeNo> = steps
            .iter()
            .flat_map(|s| s.officers.iter().cloned())
            .collect();
        officers.sort();
        officers.dedup();
        // Device clocks drift both ways, so the lookup is widened by the longest recording before and a
        // margin after; the exact overlap test runs on corrected times in `suggest`.
        let margin = 3600 * 1_000_000;
        let first = steps
            .iter()
            .map(|s| s.starts_at.unix_micros())
            .min()
            .unwrap_or(0);
        let last = steps
            .iter()
            .map(|s| s.ends_at.unix_micros())
            .max()
            .unwrap_or(0);
        let from = Timestamp::from_unix_micros(
            first
                .saturating_sub(micros(self.config.max_recording))
                .saturating_sub(margin),
        );
        let to = Timestamp::from_unix_micros(last.saturating_add(margin));
        let found = self
            .meta
            .unlinked_footage(case, &officers, from, to)
            .await?;
        Ok(found
            .iter()
            .filter_map(|f| {
                Some(Candidate {
                    evidence_id: f.evidence_id,
                    officer: f.officer.clone()?,
                    start: corrected_start(f.captured_at, f.clock_offset_ms),
                    duration_us: f.duration_us.unwrap_or(0),
                    location: location_of(f),
                })
            })
            .collect())
    }

    fn suggestions(
        &self,
        s: &StepRecord,
        window: Interval,
        coverage: &[OfficerCoverage],
        candidates: &[Candidate],
    ) -> Vec<Suggestion> {
        let place = s
            .place
            .point
            .and_then(|(lat, lon, r)| Place::new(lat, lon, r).ok());
        let gaps: Vec<_> = coverage
            .iter()
            .flat_map(|o| o.gaps.iter().cloned())
            .collect();
        suggest(window, &s.officers, place.as_ref(), &gaps, candidates)
    }

    /// Audit: `by` was refused `action` on `target`. For transports that refuse before calling in.
    pub async fn audit_denied(&self, by: &User, action: &str, target: Option<&str>, why: &str) {
        audit(&self.meta, &by.actor(), action, target, "denied", Some(why)).await;
    }

    /// Whether `by` may see evidence `id`; a refusal is audited. Every evidence read goes through this
    /// (or through a listing with the same scope condition).
    pub async fn check_evidence_access(
        &self,
        by: &User,
        id: EvidenceId,
        action: &str,
    ) -> Result<(), CasesError> {
        if self.meta.evidence_in_scope(id, &by.scope()).await? {
            return Ok(());
        }
        if self.meta.get_evidence(id).await?.is_none() {
            return Err(CasesError::NotFound(format!("evidence {id}")));
        }
        Err(self
            .deny(
                by,
                action,
                Some(&format!("evidence:{id}")),
                &format!(
                    "may not see evidence {id}: it was not recorded by their recorder and is not linked to a case they handle"
                ),
            )
            .await)
    }
}
