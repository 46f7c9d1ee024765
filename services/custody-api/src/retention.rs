//! `/api/v1/evidence/{id}/retention`, `/hold` and `/release`: how long an item is kept and why, legal
//! holds (supervisors; each a `legal_hold` ledger event) and the marks that keep an item longer
//! (obstruction of duty, a retention class). Deleted items answer 410 on their content routes.

use crate::auth::Actor;
use crate::evidence::parse_id;
use crate::{ApiError, ApiState};
use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use custody_cases::Retention;
use custody_core::retention::Decision;
use custody_core::{EvidenceId, RetentionMarks, Timestamp};
use serde::{Deserialize, Deserializer, Serialize};

/// How long an item is kept, as of now.
#[derive(Debug, Serialize)]
pub(crate) struct RetentionJson {
    evidence_id: EvidenceId,
    /// `until` (kept at least until `until`), `forever` (while `reason` holds), `due` (its time is
    /// over; the retention worker deletes its bytes at its next pass) or `deleted`.
    keep: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    until: Option<Timestamp>,
    reason: String,
    marks: RetentionMarks,
}

fn answer(e: custody_core::Evidence, d: Option<Decision>) -> RetentionJson {
    let (keep, until, reason) = match (&e.retention.deleted, d) {
        (Some(del), _) => ("deleted", None, del.reason.clone()),
        (None, Some(Decision::KeepUntil(t, r))) => ("until", Some(t), r),
        (None, Some(Decision::KeepForever(r))) => ("forever", None, r),
        (None, Some(Decision::Due { since, reason })) => ("due", Some(since), reason),
        (None, None) => ("forever", None, String::new()),
    };
    RetentionJson {
        evidence_id: e.id,
        keep,
        until,
        reason,
        marks: e.retention,
    }
}

async fn current(
    retention: &Retention,
    e: custody_core::Evidence,
) -> Result<RetentionJson, ApiError> {
    let d = if e.deleted().is_some() {
        None
    } else {
        Some(retention.decision_now(&e).await?)
    };
    Ok(answer(e, d))
}

pub(crate) async fn get_one(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Json<RetentionJson>, ApiError> {
    let id = parse_id(&id)?;
    s.cases
        .check_evidence_access(actor.user(), id, "evidence.read")
        .await?;
    let e = s.ingest.evidence(id).await?;
    Ok(Json(current(&s.retention, e).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HoldBody {
    /// Why the item must be kept (诉讼保全, 复议, 信访 ...).
    reason: String,
}

pub(crate) async fn hold(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    Json(body): Json<HoldBody>,
) -> Result<Json<RetentionJson>, ApiError> {
    let id = parse_id(&id)?;
    let e = s
        .retention
        .set_hold(actor.user(), &s.cases, id, Some(&body.reason), &body.reason)
        .await?;
    Ok(Json(current(&s.retention, e).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReleaseBody {
    /// Why the hold ends.
    note: String,
}

pub(crate) async fn release(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    Json(body): Json<ReleaseBody>,
) -> Result<Json<RetentionJson>, ApiError> {
    let id = parse_id(&id)?;
    let e = s
        .retention
        .set_hold(actor.user(), &s.cases, id, None, &body.note)
        .await?;
    Ok(Json(current(&s.retention, e).await?))
}

/// `Some(None)` for an explicit `null`, `None` when the field is absent.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MarksBody {
    /// Shows obstruction of duty (妨碍执法): kept for the configured period (for ever by default).
    #[serde(default)]
    obstruction: Option<bool>,
    /// A configured retention class, or `null` to clear it.
    #[serde(default, deserialize_with = "present")]
    class: Option<Option<String>>,
}

pub(crate) async fn set_marks(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    Json(body): Json<MarksBody>,
) -> Result<Json<RetentionJson>, ApiError> {
    let id = parse_id(&id)?;
    let class = body.class.as_ref().map(|c| c.as_deref());
    let e = s
        .retention
        .set_marks(actor.user(), &s.cases, id, body.obstruction, class)
        .await?;
    Ok(Json(current(&s.retention, e).await?))
}
