//! Cases (案件): their handlers and status history, their steps (enforcement actions with a window, a
//! place and officers), evidence links and explained recording gaps. Linking and unlinking queue their
//! ledger event in the same transaction as the link row, so no link exists without its ledger entry.

use crate::error::StoreError;
use crate::ledger::{PendingEvent, bind_pending};
use crate::meta::{Metadata, corrupt, on_pool};
use crate::people::is_unique_violation;
use custody_core::access::Username;
use custody_core::case::{CaseNo, CaseStatus, Procedure};
use custody_core::ledger::EventKind;
use custody_core::{BadgeNo, CaseId, EvidenceId, StepId, Timestamp};

/// A case as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseRecord {
    pub id: CaseId,
    pub case_no: CaseNo,
    pub title: String,
    pub procedure: Procedure,
    pub status: CaseStatus,
    pub created_by: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub handlers: Vec<Username>,
}

/// Where a step took place.
#[derive(Debug, Clone, PartialEq)]
pub struct StepPlace {
    pub name: Option<String>,
    /// WGS-84, with the radius within which footage counts as "near".
    pub point: Option<(f64, f64, f64)>,
}

/// A step of a case.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    pub id: StepId,
    pub case_id: CaseId,
    pub title: String,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    pub place: StepPlace,
    /// Needs uninterrupted audio-video.
    pub continuous: bool,
    pub officers: Vec<BadgeNo>,
    pub created_by: String,
    pub created_at: Timestamp,
}

/// An evidence link (active while `unlinked_at` is `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRecord {
    pub id: i64,
    pub case_id: CaseId,
    pub evidence_id: EvidenceId,
    pub step_id: Option<StepId>,
    pub role: String,
    pub note: Option<String>,
    pub linked_by: String,
    pub linked_at: Timestamp,
    pub unlinked_by: Option<String>,
    pub unlinked_at: Option<Timestamp>,
    pub unlink_reason: Option<String>,
}

/// A recorded reason for a recording gap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExplanationRecord {
    pub id: i64,
    pub step_id: StepId,
    /// `None`: for every officer of the step.
    pub badge: Option<BadgeNo>,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    pub reason: String,
    pub explained_by: String,
    pub explained_at: Timestamp,
}

/// One status change of a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    pub from: Option<CaseStatus>,
    pub to: CaseStatus,
    pub at: Timestamp,
    pub actor: String,
    pub note: Option<String>,
}

/// What coverage analysis needs of one evidence item.
#[derive(Debug, Clone, PartialEq)]
pub struct FootageRecord {
    pub evidence_id: EvidenceId,
    pub officer: Option<BadgeNo>,
    pub media_type: String,
    /// By the recorder's clock.
    pub captured_at: Timestamp,
    pub clock_offset_ms: Option<i64>,
    /// From the media probe; `None` until probed (or when probing failed).
    pub duration_us: Option<i64>,
    /// `custody_core::media::MediaInfo` JSON, for the embedded location.
    pub media_info: Option<String>,
}

#[derive(sqlx::FromRow)]
struct CaseRow {
    id: String,
    case_no: String,
    title: String,
    procedure: String,
    status: String,
    created_by: String,
    created_at: i64,
    updated_at: i64,
}

impl CaseRow {
    fn into_domain(self, handlers: Vec<Username>) -> Result<CaseRecord, StoreError> {
        let c = corrupt("cases", &self.id);
        Ok(CaseRecord {
            id: CaseId::parse(&self.id).map_err(|e| c(e.to_string()))?,
            case_no: CaseNo::parse(self.case_no).map_err(|e| c(e.to_string()))?,
            title: self.title,
            procedure: Procedure::parse(&self.procedure).map_err(|e| c(e.to_string()))?,
            status: CaseStatus::parse(&self.status).map_err(|e| c(e.to_string()))?,
            created_by: self.created_by,
            created_at: Timestamp::from_unix_micros(self.created_at),
            updated_at: Timestamp::from_unix_micros(self.updated_at),
            handlers,
        })
    }
}

macro_rules! case_columns {
    () => {
        "id, case_no, title, procedure, status, created_by, created_at, updated_at"
    };
}

#[derive(sqlx::FromRow)]
struct StepRow {
    id: String,
    case_id: String,
    title: String,
    starts_at: i64,
    ends_at: i64,
    place_name: Option<String>,
    lat: Option<f64>,
    lon: Option<f64>,
    radius_m: Option<f64>,
    continuous: bool,
    created_by: String,
    created_at: i64,
}

macro_rules! step_columns {
    () => {
        "id, case_id, title, starts_at, ends_at, place_name, lat, lon, radius_m, continuous, created_by, created_at"
    };
}

#[derive(sqlx::FromRow)]
struct LinkRow {
    id: i64,
    case_id: String,
    evidence_id: String,
    step_id: Option<String>,
    role: String,
    note: Option<String>,
    linked_by: String,
    linked_at: i64,
    unlinked_by: Option<String>,
    unlinked_at: Option<i64>,
    unlink_reason: Option<String>,
}

impl LinkRow {
    fn into_domain(self) -> Result<LinkRecord, StoreError> {
        let key = self.id.to_string();
        let c = corrupt("evidence_links", &key);
        Ok(LinkRecord {
            id: self.id,
            case_id: CaseId::parse(&self.case_id).map_err(|e| c(e.to_string()))?,
            evidence_id: EvidenceId::parse(&self.evidence_id).map_err(|e| c(e.to_string()))?,
            step_id: self
                .step_id
                .as_deref()
                .map(StepId::parse)
                .transpose()
                .map_err(|e| c(e.to_string()))?,
            role: self.role,
            note: self.note,
            linked_by: self.linked_by,
            linked_at: Timestamp::from_unix_micros(self.linked_at),
            unlinked_by: self.unlinked_by,
            unlinked_at: self.unlinked_at.map(Timestamp::from_unix_micros),
            unlink_reason: self.unlink_reason,
        })
    }
}

macro_rules! link_columns {
    () => {
        "id, case_id, evidence_id, step_id, role, note, linked_by, linked_at, unlinked_by, unlinked_at, unlink_reason"
    };
}

/// `case_status_history`: from, to, at, actor, note.
type StatusRow = (Option<String>, String, i64, String, Option<String>);
/// `gap_explanations`: id, step, badge, starts, ends, reason, by, at.
type ExplanationRow = (i64, String, Option<String>, i64, i64, String, String, i64);

/// Where a case listing continues: after this (created_at, id).
pub type CaseCursor = (Timestamp, CaseId);

/// Marks a case changed (a link, an unlink, a step), as the first statement of the changing transaction:
/// `updated_at` moves forward at least one microsecond, so a status change checked against what it read
/// (the review gate) fails instead of passing over the change. On PostgreSQL it also locks the case row
/// until the change commits, so a status change waits for it and then sees it.
const TOUCH_CASE: &str = "UPDATE cases SET updated_at = CASE WHEN updated_at >= $2 THEN updated_at + 1 ELSE $2 END WHERE id = $1";

impl Metadata {
    /// Creates a case with its first status and handlers. `AlreadyExists` when the case number is taken.
    pub async fn insert_case(&self, case: &CaseRecord) -> Result<(), StoreError> {
        let insert = concat!(
            "INSERT INTO cases (",
            case_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        );
        on_pool!(self, p => async {
            let mut tx = p.begin().await?;
            sqlx::query(insert)
                .bind(case.id.to_string())
                .bind(case.case_no.as_str())
                .bind(&case.title)
                .bind(case.procedure.as_str())
                .bind(case.status.as_str())
                .bind(&case.created_by)
                .bind(case.created_at.unix_micros())
                .bind(case.updated_at.unix_micros())
                .execute(&mut *tx)
                .await?;
            for h in &case.handlers {
                sqlx::query("INSERT INTO case_handlers (case_id, username) VALUES ($1, $2)")
                    .bind(case.id.to_string())
                    .bind(h.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(
                "INSERT INTO case_status_history (case_id, from_status, to_status, at, actor) \
                 VALUES ($1, NULL, $2, $3, $4)")
                .bind(case.id.to_string())
                .bind(case.status.as_str())
                .bind(case.created_at.unix_micros())
                .bind(&case.created_by)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        }.await)
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::AlreadyExists(format!("case number {}", case.case_no))
            } else {
                StoreError::db("creating a case")(e)
            }
        })
    }

    async fn handlers_of(&self, id: &str) -> Result<Vec<Username>, StoreError> {
        let names: Vec<String> = on_pool!(self, p => sqlx::query_scalar(
            "SELECT username FROM case_handlers WHERE case_id = $1 ORDER BY username")
            .bind(id)
            .fetch_all(p)
            .await)
        .map_err(StoreError::db("reading case handlers"))?;
        names
            .into_iter()
            .map(|n| Username::parse(n).map_err(|e| corrupt("case_handlers", id)(e.to_string())))
            .collect()
    }

    pub async fn get_case(&self, id: CaseId) -> Result<Option<CaseRecord>, StoreError> {
        let sql = concat!("SELECT ", case_columns!(), " FROM cases WHERE id = $1");
        let row: Option<CaseRow> = on_pool!(self, p => sqlx::query_as(sql)
            .bind(id.to_string())
            .fetch_optional(p)
            .await)
        .map_err(StoreError::db("reading a case"))?;
        match row {
            None => Ok(None),
            Some(r) => {
                let handlers = self.handlers_of(&r.id).await?;
                r.into_domain(handlers).map(Some)
            }
        }
    }

    /// Cases, newest first, optionally only those `handler` handles, of one status or case number.
    pub async fn list_cases(
        &self,
        handler: Option<&Username>,
        status: Option<CaseStatus>,
        case_no: Option<&CaseNo>,
        after: Option<CaseCursor>,
        limit: u32,
    ) -> Result<Vec<CaseRecord>, StoreError> {
        let sql = concat!(
            "SELECT ",
            case_columns!(),
            " FROM cases WHERE (CAST($1 AS TEXT) IS NULL OR EXISTS (SELECT 1 FROM case_handlers h \
               WHERE h.case_id = cases.id AND h.username = $1)) \
              AND (CAST($2 AS TEXT) IS NULL OR status = $2) \
              AND (CAST($3 AS TEXT) IS NULL OR case_no = $3) \
              AND (CAST($4 AS BIGINT) IS NULL OR (created_at, id) < ($4, $5)) \
             ORDER BY created_at DESC, id DESC LIMIT $6"
        );
        let rows: Vec<CaseRow> = on_pool!(self, p => sqlx::query_as(sql)
            .bind(handler.map(Username::as_str))
            .bind(status.map(CaseStatus::as_str))
            .bind(case_no.map(CaseNo::as_str))
            .bind(after.map(|(t, _)| t.unix_micros()))
            .bind(after.map(|(_, id)| id.to_string()).unwrap_or_default())
            .bind(i64::from(limit.max(1)))
            .fetch_all(p)
            .await)
        .map_err(StoreError::db("listing cases"))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let handlers = self.handlers_of(&r.id).await?;
            out.push(r.into_domain(handlers)?);
        }
        Ok(out)
    }

    /// Whether `user` handles case `id`.
    pub async fn is_handler(&self, id: CaseId, user: &Username) -> Result<bool, StoreError> {
        let n: i64 = on_pool!(self, p => sqlx::query_scalar(
            "SELECT COUNT(*) FROM case_handlers WHERE case_id = $1 AND username = $2")
            .bind(id.to_string())
            .bind(user.as_str())
            .fetch_one(p)
            .await)
        .map_err(StoreError::db("reading case handlers"))?;
        Ok(n > 0)
    }

    /// Moves a case from `from` to `to` and records the change. A compare-and-set: `Conflict` when it is
    /// no longer at `from`, or, with `seen` (its `updated_at` when the caller read it), when it changed
    /// since (a link, unlink or step added while the caller checked its coverage).
    #[allow(clippy::too_many_arguments)]
    pub async fn set_case_status(
        &self,
        id: CaseId,
        from: CaseStatus,
        to: CaseStatus,
        actor: &str,
        note: Option<&str>,
        at: Timestamp,
        seen: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        let n = on_pool!(self, p => async {
            let mut tx = p.begin().await?;
            let n = sqlx::query("UPDATE cases SET status = $3, updated_at = CASE WHEN updated_at >= $4 THEN updated_at + 1 ELSE $4 END \
                                 WHERE id = $1 AND status = $2 AND (CAST($5 AS BIGINT) IS NULL OR updated_at = $5)")
                .bind(id.to_string())
                .bind(from.as_str())
                .bind(to.as_str())
                .bind(at.unix_micros())
                .bind(seen.map(Timestamp::unix_micros))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 1 {
                sqlx::query(
                    "INSERT INTO case_status_history (case_id, from_status, to_status, at, actor, note) \
                     VALUES ($1, $2, $3, $4, $5, $6)")
                    .bind(id.to_string())
                    .bind(from.as_str())
                    .bind(to.as_str())
                    .bind(at.unix_micros())
                    .bind(actor)
                    .bind(note)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(n)
        }.await)
        .map_err(StoreError::db("changing a case's status"))?;
        if n == 0 {
            return Err(StoreError::Conflict(format!(
                "case {id} changed while this status change was being checked (it is no longer {from}, or \
                 footage or a step was added or removed); read it again and retry"
            )));
        }
        Ok(())
    }

    pub async fn case_history(&self, id: CaseId) -> Result<Vec<StatusChange>, StoreError> {
        let rows: Vec<StatusRow> = on_pool!(self, p => sqlx::query_as(
                "SELECT from_status, to_status, at, actor, note FROM case_status_history \
                 WHERE case_id = $1 ORDER BY id")
                .bind(id.to_string())
                .fetch_all(p)
                .await)
        .map_err(StoreError::db("reading a case's history"))?;
        let key = id.to_string();
        let c = corrupt("case_status_history", &key);
        rows.into_iter()
            .map(|(from, to, at, actor, note)| {
                Ok(StatusChange {
                    from: from
                        .as_deref()
                        .map(CaseStatus::parse)
                        .transpose()
                        .map_err(|e| c(e.to_string()))?,
                    to: CaseStatus::parse(&to).map_err(|e| c(e.to_string()))?,
                    at: Timestamp::from_unix_micros(at),
                    actor,
                    note,
                })
            })
            .collect()
    }

    /// Adds a step with its officers. `NotFound` when an officer is not registered.
    pub async fn insert_step(&self, s: &StepRecord) -> Result<(), StoreError> {
        let insert = concat!(
            "INSERT INTO case_steps (",
            step_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        );
        let (lat, lon, radius) = match s.place.point {
            Some((a, b, r)) => (Some(a), Some(b), Some(r)),
            None => (None, None, None),
        };
        on_pool!(self, p => async {
            let mut tx = p.begin().await?;
            sqlx::query(TOUCH_CASE)
                .bind(s.case_id.to_string())
                .bind(s.created_at.unix_micros())
                .execute(&mut *tx)
                .await?;
            sqlx::query(insert)
                .bind(s.id.to_string())
                .bind(s.case_id.to_string())
                .bind(&s.title)
                .bind(s.starts_at.unix_micros())
                .bind(s.ends_at.unix_micros())
                .bind(s.place.name.as_deref())
                .bind(lat)
                .bind(lon)
                .bind(radius)
                .bind(s.continuous)
                .bind(&s.created_by)
                .bind(s.created_at.unix_micros())
                .execute(&mut *tx)
                .await?;
            for b in &s.officers {
                sqlx::query("INSERT INTO step_officers (step_id, badge) VALUES ($1, $2)")
                    .bind(s.id.to_string())
                    .bind(b.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        }.await)
        .map_err(|e| {
            if matches!(&e, sqlx::Error::Database(d) if d.message().contains("FOREIGN KEY") || d.code().as_deref() == Some("23503")) {
                StoreError::NotFound(format!(
                    "one of the officers {} (register them first)",
                    s.officers.iter().map(BadgeNo::as_str).collect::<Vec<_>>().join(", ")
                ))
            } else {
                StoreError::db("adding a step")(e)
            }
        })
    }

    /// The steps of a case in time order, each with its officers.
    pub async fn steps_of(&self, case: CaseId) -> Result<Vec<StepRecord>, StoreError> {
        let sql = concat!(
            "SELECT ",
            step_columns!(),
            " FROM case_steps WHERE case_id = $1 ORDER BY starts_at, id"
        );
        let rows: Vec<StepRow> = on_pool!(self, p => sqlx::query_as(sql)
            .bind(case.to_string())
            .fetch_all(p)
            .await)
        .map_err(StoreError::db("reading steps"))?;
        let officers: Vec<(String, String)> = on_pool!(self, p => sqlx::query_as(
            "SELECT o.step_id, o.badge FROM step_officers o JOIN case_steps s ON s.id = o.step_id \
             WHERE s.case_id = $1 ORDER BY o.badge")
            .bind(case.to_string())
            .fetch_all(p)
            .await)
        .map_err(StoreError::db("reading step officers"))?;
        rows.into_iter()
            .map(|r| {
                let c = corrupt("case_steps", &r.id);
                Ok(StepRecord {
                    officers: officers
                        .iter()
                        .filter(|(s, _)| *s == r.id)
                        .map(|(_, b)| BadgeNo::parse(b.clone()).map_err(|e| c(e.to_string())))
                        .collect::<Result<_, _>>()?,
                    id: StepId::parse(&r.id).map_err(|e| c(e.to_string()))?,
                    case_id: CaseId::parse(&r.case_id).map_err(|e| c(e.to_string()))?,
                    title: r.title,
                    starts_at: Timestamp::from_unix_micros(r.starts_at),
                    ends_at: Timestamp::from_unix_micros(r.ends_at),
                    place: StepPlace {
                        name: r.place_name,
                        point: match (r.lat, r.lon, r.radius_m) {
                            (Some(a), Some(b), Some(rad)) => Some((a, b, rad)),
                            _ => None,
                        },
                    },
                    continuous: r.continuous,
                    created_by: r.created_by,
                    created_at: Timestamp::from_unix_micros(r.created_at),
                })
            })
            .collect()
    }

    /// Links evidence to a case and queues the `link` ledger event, in one transaction. `AlreadyExists`
    /// when the item is already linked to the case.
    pub async fn link_evidence(
        &self,
        link: &LinkRecord,
        event: &PendingEvent,
    ) -> Result<LinkRecord, StoreError> {
        debug_assert_eq!(event.kind, EventKind::Link);
        let id = on_pool!(self, p => async {
            let mut tx = p.begin().await?;
            // On PostgreSQL the evidence row is locked first, so that a retention tombstone being placed
            // concurrently either commits first (and the trigger below refuses the link) or sees this link.
            // SQLite runs one writer at a time.
            if matches!(self.pool, crate::meta::Pool::Postgres(_)) {
                sqlx::query("SELECT id FROM evidence WHERE id = $1 FOR UPDATE")
                    .bind(link.evidence_id.to_string())
                    .fetch_optional(&mut *tx)
                    .await?;
            }
            sqlx::query(TOUCH_CASE)
                .bind(link.case_id.to_string())
                .bind(link.linked_at.unix_micros())
                .execute(&mut *tx)
                .await?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO evidence_links (case_id, evidence_id, step_id, role, note, linked_by, linked_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id")
                .bind(link.case_id.to_string())
                .bind(link.evidence_id.to_string())
                .bind(link.step_id.map(|s| s.to_string()))
                .bind(&link.role)
                .bind(link.note.as_deref())
                .bind(&link.linked_by)
                .bind(link.linked_at.unix_micros())
                .fetch_one(&mut *tx)
                .await?;
            bind_pending!(event).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(id)
        }.await)
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::AlreadyExists(format!(
                    "a link of evidence {} to case {}",
                    link.evidence_id, link.case_id
                ))
            } else if e.to_string().contains("deleted by retention") {
                StoreError::Gone(format!(
                    "evidence {} was deleted by retention and cannot be linked",
                    link.evidence_id
                ))
            } else {
                StoreError::db("linking evidence")(e)
            }
        })?;
        Ok(LinkRecord { id, ..link.clone() })
    }

    /// Closes the active link of `evidence` to `case` and queues the `unlink` ledger event, in one
    /// transaction. `NotFound` when there is no active link.
    pub async fn unlink_evidence(
        &self,
        case: CaseId,
        evidence: EvidenceId,
        by: &str,
        reason: &str,
        at: Timestamp,
        event: &PendingEvent,
    ) -> Result<(), StoreError> {
        debug_assert_eq!(event.kind, EventKind::Unlink);
        let n = on_pool!(self, p => async {
            let mut tx = p.begin().await?;
            sqlx::query(TOUCH_CASE)
                .bind(case.to_string())
                .bind(at.unix_micros())
                .execute(&mut *tx)
                .await?;
            let n = sqlx::query(
                "UPDATE evidence_links SET unlinked_by = $3, unlinked_at = $4, unlink_reason = $5 \
                 WHERE case_id = $1 AND evidence_id = $2 AND unlinked_at IS NULL")
                .bind(case.to_string())
                .bind(evidence.to_string())
                .bind(by)
                .bind(at.unix_micros())
                .bind(reason)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 1 {
                bind_pending!(event).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(n)
        }.await)
        .map_err(StoreError::db("unlinking evidence"))?;
        if n == 0 {
            return Err(StoreError::NotFound(format!(
                "an active link of evidence {evidence} to case {case}"
            )));
        }
        Ok(())
    }

    /// The links of a case (active ones only, or all with history), in link order.
    pub async fn links_of(
        &self,
        case: CaseId,
        include_unlinked: bool,
    ) -> Result<Vec<LinkRecord>, StoreError> {
        let sql = concat!(
            "SELECT ",
            link_columns!(),
            " FROM evidence_links WHERE case_id = $1 AND ($2 OR unlinked_at IS NULL) ORDER BY id"
        );
        let rows: Vec<LinkRow> = on_pool!(self, p => sqlx::query_as(sql)
            .bind(case.to_string())
            .bind(include_unlinked)
            .fetch_all(p)
            .await)
        .map_err(StoreError::db("reading links"))?;
        rows.into_iter().map(LinkRow::into_domain).collect()
    }

    /// The open cases evidence is actively linked to.
    pub async fn open_cases_of(&self, evidence: EvidenceId) -> Result<Vec<CaseId>, StoreError> {
        let ids: Vec<String> = on_pool!(self, p => sqlx::query_scalar(
            "SELECT DISTINCT l.case_id FROM evidence_links l JOIN cases c ON c.id = l.case_id \
             WHERE l.evidence_id = $1 AND l.unlinked_at IS NULL AND c.status <> 'closed'")
            .bind(evidence.to_string())
            .fetch_all(p)
            .await)
        .map_err(StoreError::db("reading links"))?;
        ids.iter()
            .map(|s| CaseId::parse(s).map_err(|e| corrupt("evidence_links", s)(e.to_string())))
            .collect()
    }

    /// Records why a gap is acceptable.
    pub async fn insert_explanation(&self, x: &ExplanationRecord) -> Result<i64, StoreError> {
        on_pool!(self, p => sqlx::query_scalar(
            "INSERT INTO gap_explanations (step_id, badge, starts_at, ends_at, reason, explained_by, explained_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id")
            .bind(x.step_id.to_string())
            .bind(x.badge.as_ref().map(BadgeNo::as_str))
            .bind(x.starts_at.unix_micros())
            .bind(x.ends_at.unix_micros())
            .bind(&x.reason)
            .bind(&x.explained_by)
            .bind(x.explained_at.unix_micros())
            .fetch_one(p)
            .await)
        .map_err(StoreError::db("recording a gap explanation"))
    }

    /// Every gap explanation of a case's steps.
    pub async fn explanations_of(
        &self,
        case: CaseId,
    ) -> Result<Vec<ExplanationRecord>, StoreError> {
        let rows: Vec<ExplanationRow> =
            on_pool!(self, p => sqlx::query_as(
                "SELECT x.id, x.step_id, x.badge, x.starts_at, x.ends_at, x.reason, x.explained_by, x.explained_at \
                 FROM gap_explanations x JOIN case_steps s ON s.id = x.step_id WHERE s.case_id = $1 ORDER BY x.id")
                .bind(case.to_string())
                .fetch_all(p)
                .await)
            .map_err(StoreError::db("reading gap explanations"))?;
        rows.into_iter()
            .map(|(id, step, badge, s, e, reason, by, at)| {
                let key = id.to_string();
                let c = corrupt("gap_explanations", &key);
                Ok(ExplanationRecord {
                    id,
                    step_id: StepId::parse(&step).map_err(|x| c(x.to_string()))?,
                    badge: badge
                        .map(BadgeNo::parse)
                        .transpose()
                        .map_err(|x| c(x.to_string()))?,
                    starts_at: Timestamp::from_unix_micros(s),
                    ends_at: Timestamp::from_unix_micros(e),
                    reason,
                    explained_by: by,
                    explained_at: Timestamp::from_unix_micros(at),
                })
            })
            .collect()
    }

    /// What coverage needs of the evidence actively linked to a case.
    pub async fn linked_footage(&self, case: CaseId) -> Result<Vec<FootageRecord>, StoreError> {
        self.footage(
            "e.id IN (SELECT l.evidence_id FROM evidence_links l WHERE l.case_id = $1 AND l.unlinked_at IS NULL)",
            case.to_string(),
            None,
        )
        .await
    }

    /// Footage attributed to `officers` captured (by the recorder's clock) in `[from, to)`, not linked to
    /// `case` and not deleted by retention: the candidates for suggestions.
    pub async fn unlinked_footage(
        &self,
        case: CaseId,
        officers: &[BadgeNo],
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<FootageRecord>, StoreError> {
        let mut out = Vec::new();
        for b in officers {
            out.extend(
                self.footage(
                    "e.officer_badge = $2 AND e.captured_at >= $3 AND e.captured_at < $4 \
                     AND e.deleted_at IS NULL AND e.id NOT IN (SELECT l.evidence_id FROM evidence_links l WHERE l.case_id = $1 AND l.unlinked_at IS NULL)",
                    case.to_string(),
                    Some((b.as_str().to_string(), from, to)),
                )
                .await?,
            );
        }
        Ok(out)
    }

    async fn footage(
        &self,
        condition: &'static str,
        case: String,
        officer_window: Option<(String, Timestamp, Timestamp)>,
    ) -> Result<Vec<FootageRecord>, StoreError> {
        let sql = format!(
            "SELECT e.id, e.officer_badge, e.media_type, e.captured_at, e.clock_offset_ms, e.media_duration_us, \
             e.media_info FROM evidence e WHERE {condition} ORDER BY e.captured_at, e.id"
        );
        type Row = (
            String,
            Option<String>,
            String,
            i64,
            Option<i64>,
            Option<i64>,
            Option<String>,
        );
        // Only the fixed conditions of this module are formatted into SQL; values are bound.
        let rows: Vec<Row> = match officer_window {
            None => on_pool!(self, p => sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
                .bind(&case)
                .fetch_all(p)
                .await),
            Some((b, from, to)) => {
                on_pool!(self, p => sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
                .bind(&case)
                .bind(&b)
                .bind(from.unix_micros())
                .bind(to.unix_micros())
                .fetch_all(p)
                .await)
            }
        }
        .map_err(StoreError::db("reading footage"))?;
        rows.into_iter()
            .map(
                |(id, badge, media_type, captured_at, offset, duration, info)| {
                    let c = corrupt("evidence", &id);
                    Ok(FootageRecord {
                        evidence_id: EvidenceId::parse(&id).map_err(|e| c(e.to_string()))?,
                        officer: badge
                            .map(BadgeNo::parse)
                            .transpose()
                            .map_err(|e| c(e.to_string()))?,
                        media_type,
                        captured_at: Timestamp::from_unix_micros(captured_at),
                        clock_offset_ms: offset,
                        duration_us: duration,
                        media_info: info,
                    })
                },
            )
            .collect()
    }
}
