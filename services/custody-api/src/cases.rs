//! `/api/v1/cases`: cases, their status flow, steps, evidence links, gap explanations and coverage.

use crate::auth::Actor;
use crate::people::{Page, bad, limit, parse_time};
use crate::{ApiError, ApiState};
use axum::Extension;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use custody_cases::{
    CaseRecord, CoverageReport, ExplanationRecord, LinkRecord, LinkRequest, NewCase, NewStep,
    StatusChange, StepRecord,
};
use custody_core::access::Username;
use custody_core::case::{CaseNo, CaseStatus, Procedure, next_statuses};
use custody_core::coverage::{Interval, Place};
use custody_core::{BadgeNo, CaseId, EvidenceId, StepId, Timestamp};
use serde::{Deserialize, Serialize};

fn case_id(s: &str) -> Result<CaseId, ApiError> {
    CaseId::parse(s).map_err(bad)
}

fn interval(from: &str, to: &str, a: Option<&str>, b: Option<&str>) -> Result<Interval, ApiError> {
    let start =
        parse_time(from, a)?.ok_or_else(|| ApiError::bad_request(format!("{from}: required")))?;
    let end = parse_time(to, b)?.ok_or_else(|| ApiError::bad_request(format!("{to}: required")))?;
    Interval::new(start, end).map_err(|e| ApiError::bad_request(format!("{from}/{to}: {e}")))
}

#[derive(Debug, Serialize)]
pub(crate) struct CaseJson {
    id: CaseId,
    case_no: String,
    title: String,
    procedure: Procedure,
    procedure_zh: &'static str,
    status: CaseStatus,
    status_zh: &'static str,
    /// Where the status may go next.
    next_statuses: Vec<CaseStatus>,
    handlers: Vec<String>,
    created_by: String,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl From<CaseRecord> for CaseJson {
    fn from(c: CaseRecord) -> Self {
        Self {
            id: c.id,
            case_no: c.case_no.to_string(),
            title: c.title,
            procedure: c.procedure,
            procedure_zh: c.procedure.label_zh(),
            status: c.status,
            status_zh: c.status.label_zh(),
            next_statuses: next_statuses(c.procedure, c.status),
            handlers: c.handlers.iter().map(|h| h.to_string()).collect(),
            created_by: c.created_by,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct NewCaseBody {
    case_no: String,
    title: String,
    /// `general` (一般程序, the default) or `simple` (简易程序).
    procedure: Option<String>,
    #[serde(default)]
    handlers: Vec<String>,
}

/// `POST /api/v1/cases`.
pub(crate) async fn create(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Json(b): Json<NewCaseBody>,
) -> Result<(StatusCode, Json<CaseJson>), ApiError> {
    let new = NewCase {
        case_no: CaseNo::parse(b.case_no).map_err(bad)?,
        title: b.title,
        procedure: b
            .procedure
            .as_deref()
            .map(Procedure::parse)
            .transpose()
            .map_err(ApiError::bad_request)?
            .unwrap_or(Procedure::General),
        handlers: b
            .handlers
            .into_iter()
            .map(Username::parse)
            .collect::<Result<_, _>>()
            .map_err(bad)?,
    };
    let c = s.cases.create(actor.user(), new).await?;
    Ok((StatusCode::CREATED, Json(c.into())))
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    status: Option<String>,
    case_no: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// `GET /api/v1/cases?status=&case_no=&limit=&cursor=`: newest first; a handler sees their own cases.
pub(crate) async fn list(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Page<CaseJson>>, ApiError> {
    let limit = limit(q.limit)?;
    let status = q
        .status
        .as_deref()
        .map(CaseStatus::parse)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let case_no = q.case_no.map(CaseNo::parse).transpose().map_err(bad)?;
    let after = q
        .cursor
        .as_deref()
        .map(|c| {
            let bad = || ApiError::bad_request("cursor: expected a next_cursor value");
            let (t, id) = c.split_once('_').ok_or_else(bad)?;
            Ok::<_, ApiError>((
                Timestamp::from_unix_micros(t.parse().map_err(|_| bad())?),
                CaseId::parse(id).map_err(|_| bad())?,
            ))
        })
        .transpose()?;
    let rows = s
        .cases
        .list(actor.user(), status, case_no.as_ref(), after, limit)
        .await?;
    Ok(Json(Page::of(
        rows,
        limit,
        |c| format!("{}_{}", c.created_at.unix_micros(), c.id),
        CaseJson::from,
    )))
}

/// `GET /api/v1/cases/{id}`.
pub(crate) async fn get_one(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Json<CaseJson>, ApiError> {
    Ok(Json(s.cases.get(actor.user(), case_id(&id)?).await?.into()))
}

#[derive(Debug, Deserialize)]
pub(crate) struct StatusBody {
    status: String,
    note: Option<String>,
}

/// `POST /api/v1/cases/{id}/status`: move the case along its flow (409 when the flow or a recording gap
/// forbids it, with the reason).
pub(crate) async fn set_status(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    Json(b): Json<StatusBody>,
) -> Result<Json<CaseJson>, ApiError> {
    let to = CaseStatus::parse(&b.status).map_err(ApiError::bad_request)?;
    let c = s
        .cases
        .set_status(actor.user(), case_id(&id)?, to, b.note.as_deref())
        .await?;
    Ok(Json(c.into()))
}

#[derive(Debug, Serialize)]
pub(crate) struct StatusChangeJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<CaseStatus>,
    to: CaseStatus,
    at: Timestamp,
    actor: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

impl From<StatusChange> for StatusChangeJson {
    fn from(c: StatusChange) -> Self {
        Self {
            from: c.from,
            to: c.to,
            at: c.at,
            actor: c.actor,
            note: c.note,
        }
    }
}

/// `GET /api/v1/cases/{id}/history`: every status change.
pub(crate) async fn history(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Json<Vec<StatusChangeJson>>, ApiError> {
    let h = s.cases.history(actor.user(), case_id(&id)?).await?;
    Ok(Json(h.into_iter().map(StatusChangeJson::from).collect()))
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PlaceJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lat: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lon: Option<f64>,
    /// How near footage must be to count as taken here (metres; default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    radius_m: Option<f64>,
}

#[derive(Debug, Serialize)]
pub(crate) struct StepJson {
    id: StepId,
    title: String,
    from: Timestamp,
    to: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    place: Option<PlaceJson>,
    continuous: bool,
    officers: Vec<String>,
    created_by: String,
    created_at: Timestamp,
}

impl From<StepRecord> for StepJson {
    fn from(s: StepRecord) -> Self {
        let place = (s.place.name.is_some() || s.place.point.is_some()).then(|| PlaceJson {
            name: s.place.name.clone(),
            lat: s.place.point.map(|p| p.0),
            lon: s.place.point.map(|p| p.1),
            radius_m: s.place.point.map(|p| p.2),
        });
        Self {
            id: s.id,
            title: s.title,
            from: s.starts_at,
            to: s.ends_at,
            place,
            continuous: s.continuous,
            officers: s.officers.iter().map(|b| b.to_string()).collect(),
            created_by: s.created_by,
            created_at: s.created_at,
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct StepBody {
    title: String,
    /// RFC 3339 start and end of the action.
    from: String,
    to: String,
    place: Option<PlaceJson>,
    /// Needs uninterrupted audio-video (default true).
    continuous: Option<bool>,
    officers: Vec<String>,
}

/// `POST /api/v1/cases/{id}/steps`.
pub(crate) async fn add_step(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    Json(b): Json<StepBody>,
) -> Result<(StatusCode, Json<StepJson>), ApiError> {
    let window = interval("from", "to", Some(&b.from), Some(&b.to))?;
    let (place_name, place) = match b.place {
        None => (None, None),
        Some(p) => {
            let point = match (p.lat, p.lon) {
                (Some(lat), Some(lon)) => Some(
                    Place::new(lat, lon, p.radius_m.unwrap_or(300.0))
                        .map_err(|e| ApiError::bad_request(format!("place: {e}")))?,
                ),
                (None, None) => None,
                _ => {
                    return Err(ApiError::bad_request(
                        "place: give both lat and lon, or neither",
                    ));
                }
            };
            (p.name, point)
        }
    };
    let step = s
        .cases
        .add_step(
            actor.user(),
            case_id(&id)?,
            NewStep {
                title: b.title,
                window,
                place_name,
                place,
                continuous: b.continuous.unwrap_or(true),
                officers: b
                    .officers
                    .into_iter()
                    .map(BadgeNo::parse)
                    .collect::<Result<_, _>>()
                    .map_err(bad)?,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(step.into())))
}

/// `GET /api/v1/cases/{id}/steps`.
pub(crate) async fn steps(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Json<Vec<StepJson>>, ApiError> {
    let steps = s.cases.steps(actor.user(), case_id(&id)?).await?;
    Ok(Json(steps.into_iter().map(StepJson::from).collect()))
}

#[derive(Debug, Serialize)]
pub(crate) struct LinkJson {
    evidence_id: EvidenceId,
    #[serde(skip_serializing_if = "Option::is_none")]
    step_id: Option<StepId>,
    role: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
    linked_by: String,
    linked_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    unlinked_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unlinked_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unlink_reason: Option<String>,
}

impl From<LinkRecord> for LinkJson {
    fn from(l: LinkRecord) -> Self {
        Self {
            evidence_id: l.evidence_id,
            step_id: l.step_id,
            role: l.role,
            note: l.note,
            linked_by: l.linked_by,
            linked_at: l.linked_at,
            unlinked_by: l.unlinked_by,
            unlinked_at: l.unlinked_at,
            unlink_reason: l.unlink_reason,
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct LinkBody {
    evidence_id: String,
    step_id: Option<String>,
    role: String,
    note: Option<String>,
}

/// `POST /api/v1/cases/{id}/links`: link evidence (a `link` ledger event).
pub(crate) async fn link(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    Json(b): Json<LinkBody>,
) -> Result<(StatusCode, Json<LinkJson>), ApiError> {
    let l = s
        .cases
        .link(
            actor.user(),
            case_id(&id)?,
            LinkRequest {
                evidence_id: EvidenceId::parse(&b.evidence_id).map_err(bad)?,
                step_id: b
                    .step_id
                    .as_deref()
                    .map(StepId::parse)
                    .transpose()
                    .map_err(bad)?,
                role: b.role,
                note: b.note,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(l.into())))
}

#[derive(Debug, Deserialize)]
pub(crate) struct LinksQuery {
    /// Include unlinked items, with who unlinked them and why.
    history: Option<bool>,
}

/// `GET /api/v1/cases/{id}/links?history=`.
pub(crate) async fn links(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    Query(q): Query<LinksQuery>,
) -> Result<Json<Vec<LinkJson>>, ApiError> {
    let l = s
        .cases
        .links(actor.user(), case_id(&id)?, q.history.unwrap_or(false))
        .await?;
    Ok(Json(l.into_iter().map(LinkJson::from).collect()))
}

#[derive(Debug, Deserialize)]
pub(crate) struct UnlinkBody {
    reason: String,
}

/// `DELETE /api/v1/cases/{id}/links/{evidence}` with `{"reason": …}` (an `unlink` ledger event).
pub(crate) async fn unlink(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path((id, evidence)): Path<(String, String)>,
    Json(b): Json<UnlinkBody>,
) -> Result<StatusCode, ApiError> {
    s.cases
        .unlink(
            actor.user(),
            case_id(&id)?,
            EvidenceId::parse(&evidence).map_err(bad)?,
            &b.reason,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
pub(crate) struct ExplainBody {
    /// The officer it concerns; absent for every officer of the step.
    badge: Option<String>,
    from: String,
    to: String,
    reason: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct ExplanationJson {
    step_id: StepId,
    #[serde(skip_serializing_if = "Option::is_none")]
    badge: Option<String>,
    from: Timestamp,
    to: Timestamp,
    reason: String,
    explained_by: String,
    explained_at: Timestamp,
}

impl From<ExplanationRecord> for ExplanationJson {
    fn from(x: ExplanationRecord) -> Self {
        Self {
            step_id: x.step_id,
            badge: x.badge.map(|b| b.to_string()),
            from: x.starts_at,
            to: x.ends_at,
            reason: x.reason,
            explained_by: x.explained_by,
            explained_at: x.explained_at,
        }
    }
}

/// `POST /api/v1/cases/{id}/steps/{step}/explanations`: why part of a step was not recorded.
pub(crate) async fn explain(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path((id, step)): Path<(String, String)>,
    Json(b): Json<ExplainBody>,
) -> Result<(StatusCode, Json<ExplanationJson>), ApiError> {
    let x = s
        .cases
        .explain_gap(
            actor.user(),
            case_id(&id)?,
            StepId::parse(&step).map_err(bad)?,
            b.badge.map(BadgeNo::parse).transpose().map_err(bad)?,
            interval("from", "to", Some(&b.from), Some(&b.to))?,
            &b.reason,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(x.into())))
}

/// `GET /api/v1/cases/{id}/coverage`: per step and officer, what linked recordings cover, the gaps, and
/// unlinked footage that would fill them.
pub(crate) async fn coverage(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Json<CoverageReport>, ApiError> {
    Ok(Json(s.cases.coverage(actor.user(), case_id(&id)?).await?))
}
