//! `/api/v1/evidence/{id}/retention`, `/hold` and `/release`: how long an item is kept and why, legal
//! holds (supervisors; each a `legal_hold` ledger event) and the marks that keep an item longer
//! (obstruction of duty, a retention class). Deleted items answer 410 on their content routes.

use crate::auth::Actor;
use crate::error::ErrorBody;
use crate::evidence::parse_id;
use crate::openapi::{DeletedBytes, EvidencePath, EvidenceRefusals};
use crate::{ApiError, ApiState};
use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use custody_cases::Retention;
use custody_core::retention::Decision;
use custody_core::{EvidenceId, RetentionMarks, Timestamp};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

/// How long an item is kept, as of now.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RetentionJson {
    evidence_id: EvidenceId,
    /// `until` (kept at least until `until`), `forever` (while `reason` holds), `due` (its time is
    /// over; the retention worker deletes its bytes at its next pass) or `deleted`.
    #[schema(value_type = String, pattern = "^(until|forever|due|deleted)$")]
    keep: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    until: Option<Timestamp>,
    reason: String,
    marks: RetentionMarks,
}

/// How long `e` is kept as of now: its deletion, or the policy's decision.
async fn current(
    retention: &Retention,
    e: custody_core::Evidence,
) -> Result<RetentionJson, ApiError> {
    let (keep, until, reason) = match &e.retention.deleted {
        Some(d) => ("deleted", None, d.reason.clone()),
        None => match retention.decision_now(&e).await? {
            Decision::KeepUntil(t, r) => ("until", Some(t), r),
            Decision::KeepForever(r) => ("forever", None, r),
            Decision::Due { since, reason } => ("due", Some(since), reason),
        },
    };
    Ok(RetentionJson {
        evidence_id: e.id,
        keep,
        until,
        reason,
        marks: e.retention,
    })
}

#[utoipa::path(
    get,
    path = "/api/v1/evidence/{id}/retention",
    operation_id = "get_retention",
    tag = "evidence",
    params(EvidencePath),
    responses(
        (status = 200, description = "how long the item is kept and why, with its marks", body = RetentionJson),
        EvidenceRefusals,
    )
)]
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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HoldBody {
    /// Why the item must be kept (诉讼保全, 复议, 信访 ...).
    reason: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/evidence/{id}/hold",
    operation_id = "place_legal_hold",
    tag = "evidence",
    params(EvidencePath),
    request_body = HoldBody,
    responses(
        (status = 200, description = "held: kept whatever its age until released (a legal_hold ledger event)", body = RetentionJson),
        EvidenceRefusals,
        (status = 403, description = "only supervisors place holds, on what they can see (audited)", body = ErrorBody),
        DeletedBytes,
    )
)]
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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReleaseBody {
    /// Why the hold ends.
    note: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/evidence/{id}/release",
    operation_id = "release_legal_hold",
    tag = "evidence",
    params(EvidencePath),
    request_body = ReleaseBody,
    responses(
        (status = 200, description = "released (a legal_hold ledger event); retention applies again", body = RetentionJson),
        EvidenceRefusals,
        (status = 403, description = "only supervisors release holds (audited)", body = ErrorBody),
        (status = 409, description = "the item is not on hold", body = ErrorBody),
        DeletedBytes,
    )
)]
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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MarksBody {
    /// Shows obstruction of duty (妨碍执法): kept for the configured period (for ever by default).
    #[serde(default)]
    obstruction: Option<bool>,
    /// A configured retention class, or `null` to clear it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    class: Option<Option<String>>,
}

#[utoipa::path(
    patch,
    path = "/api/v1/evidence/{id}/retention",
    operation_id = "set_retention_marks",
    tag = "evidence",
    params(EvidencePath),
    request_body = MarksBody,
    responses(
        (status = 200, description = "marked (in the audit log)", body = RetentionJson),
        EvidenceRefusals,
        (status = 400, description = "neither field given, or the class is not configured (the message lists the known ones)", body = ErrorBody),
        (status = 403, description = "marking needs a case handler or supervisor; clearing a mark a supervisor (audited)", body = ErrorBody),
        DeletedBytes,
    )
)]
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
