//! `/api/v1/cases`: cases, their status flow, steps, evidence links, gap explanations and coverage.

use crate::auth::Actor;
use crate::error::ErrorBody;
use crate::openapi::{CaseChangeRefusals, CasePath, CaseRefusals};
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
use utoipa::{IntoParams, ToSchema};

fn case_id(s: &str) -> Result<CaseId, ApiError> {
    CaseId::parse(s).map_err(bad)
}

fn interval(from: &str, to: &str, a: Option<&str>, b: Option<&str>) -> Result<Interval, ApiError> {
    let start =
        parse_time(from, a)?.ok_or_else(|| ApiError::bad_request(format!("{from}: required")))?;
    let end = parse_time(to, b)?.ok_or_else(|| ApiError::bad_request(format!("{to}: required")))?;
    Interval::new(start, end).map_err(|e| ApiError::bad_request(format!("{from}/{to}: {e}")))
}

/// A case (案件) and where it stands in its procedure.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Case)]
pub(crate) struct CaseJson {
    id: CaseId,
    /// The case number (案件编号).
    case_no: String,
    title: String,
    procedure: Procedure,
    /// The procedure's name on screens and forms, e.g. 一般程序.
    procedure_zh: &'static str,
    status: CaseStatus,
    /// The status's name on screens and forms, e.g. 调查取证.
    status_zh: &'static str,
    /// Where the status may go next.
    next_statuses: Vec<CaseStatus>,
    /// User names of the case's handlers.
    handlers: Vec<String>,
    /// Who opened it: `user:<name>`.
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

/// A case to open.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = NewCase)]
pub(crate) struct NewCaseBody {
    case_no: String,
    title: String,
    /// `general` (一般程序, the default) or `simple` (简易程序).
    #[schema(value_type = Option<Procedure>)]
    procedure: Option<String>,
    /// User names of further handlers (case handlers or supervisors); the creator always handles it.
    #[serde(default)]
    handlers: Vec<String>,
}

/// Open a case
#[utoipa::path(
    post,
    path = "/api/v1/cases",
    operation_id = "create_case",
    tag = "cases",
    request_body = NewCaseBody,
    responses(
        (status = 201, description = "the case, opened", body = CaseJson),
        (status = 400, description = "a field is malformed", body = ErrorBody),
        (status = 403, description = "the caller may not manage cases (audited)", body = ErrorBody),
        (status = 404, description = "a named handler does not exist", body = ErrorBody),
        (status = 409, description = "a case with this number exists", body = ErrorBody),
    )
)]
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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only cases in this status.
    #[param(value_type = Option<CaseStatus>)]
    status: Option<String>,
    /// Only the case with this number.
    case_no: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// List cases
///
/// Newest first; a handler sees their own cases, supervisors and auditors every case.
#[utoipa::path(
    get,
    path = "/api/v1/cases",
    operation_id = "list_cases",
    tag = "cases",
    params(ListQuery),
    responses(
        (status = 200, description = "a page of cases", body = Page<CaseJson>),
        (status = 400, description = "a filter, the limit or the cursor is malformed", body = ErrorBody),
    )
)]
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

/// One case
#[utoipa::path(
    get,
    path = "/api/v1/cases/{id}",
    operation_id = "get_case",
    tag = "cases",
    params(CasePath),
    responses(
        (status = 200, description = "the case", body = CaseJson),
        CaseRefusals,
    )
)]
pub(crate) async fn get_one(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Json<CaseJson>, ApiError> {
    Ok(Json(s.cases.get(actor.user(), case_id(&id)?).await?.into()))
}

/// Where to move a case.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = StatusChangeRequest)]
pub(crate) struct StatusBody {
    #[schema(value_type = CaseStatus)]
    status: String,
    note: Option<String>,
}

/// Move a case along its flow
///
/// 409 when the procedure's flow or an unexplained recording gap forbids the move, with the reason.
#[utoipa::path(
    post,
    path = "/api/v1/cases/{id}/status",
    tag = "cases",
    params(CasePath),
    request_body = StatusBody,
    responses(
        (status = 200, description = "the case, moved", body = CaseJson),
        CaseChangeRefusals,
        (status = 409, description = "the case is closed, or the flow or an unexplained recording gap forbids the move", body = ErrorBody),
    )
)]
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

/// One status change of a case.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = StatusChange)]
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

/// Status history of a case
#[utoipa::path(
    get,
    path = "/api/v1/cases/{id}/history",
    operation_id = "case_history",
    tag = "cases",
    params(CasePath),
    responses(
        (status = 200, description = "every status change, oldest first", body = Vec<StatusChangeJson>),
        CaseRefusals,
    )
)]
pub(crate) async fn history(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Json<Vec<StatusChangeJson>>, ApiError> {
    let h = s.cases.history(actor.user(), case_id(&id)?).await?;
    Ok(Json(h.into_iter().map(StatusChangeJson::from).collect()))
}

/// Where a step happened: a name, a point, or both.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = Place)]
pub(crate) struct PlaceJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    /// WGS-84 latitude; with `lon`, or neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lat: Option<f64>,
    /// WGS-84 longitude; with `lat`, or neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lon: Option<f64>,
    /// How near footage must be to count as taken here (metres; default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    radius_m: Option<f64>,
}

/// An enforcement step (执法环节) of a case: an action that should have been recorded.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Step)]
pub(crate) struct StepJson {
    id: StepId,
    title: String,
    from: Timestamp,
    to: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    place: Option<PlaceJson>,
    /// Needs uninterrupted audio-video.
    continuous: bool,
    /// Badge numbers of the officers present.
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

/// A step to add.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = NewStep)]
pub(crate) struct StepBody {
    title: String,
    /// RFC 3339 start of the action.
    #[schema(format = DateTime)]
    from: String,
    /// RFC 3339 end of the action, after `from`.
    #[schema(format = DateTime)]
    to: String,
    place: Option<PlaceJson>,
    /// Needs uninterrupted audio-video (default true).
    continuous: Option<bool>,
    /// Badge numbers of the officers present.
    officers: Vec<String>,
}

/// Add a step to a case
#[utoipa::path(
    post,
    path = "/api/v1/cases/{id}/steps",
    tag = "cases",
    params(CasePath),
    request_body = StepBody,
    responses(
        (status = 201, description = "the step, added", body = StepJson),
        CaseChangeRefusals,
        (status = 400, description = "the id or a field is malformed, or the window is empty", body = ErrorBody),
    )
)]
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

/// Steps of a case
#[utoipa::path(
    get,
    path = "/api/v1/cases/{id}/steps",
    tag = "cases",
    params(CasePath),
    responses(
        (status = 200, description = "the steps", body = Vec<StepJson>),
        CaseRefusals,
    )
)]
pub(crate) async fn steps(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Json<Vec<StepJson>>, ApiError> {
    let steps = s.cases.steps(actor.user(), case_id(&id)?).await?;
    Ok(Json(steps.into_iter().map(StepJson::from).collect()))
}

/// Evidence linked to a case (and unlinked, in the history).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Link)]
pub(crate) struct LinkJson {
    evidence_id: EvidenceId,
    #[serde(skip_serializing_if = "Option::is_none")]
    step_id: Option<StepId>,
    /// What the footage shows for the case, e.g. `现场检查` or `on_site`.
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

/// Evidence to link.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = NewLink)]
pub(crate) struct LinkBody {
    #[schema(value_type = EvidenceId)]
    evidence_id: String,
    /// The step it records, if one.
    #[schema(value_type = Option<StepId>)]
    step_id: Option<String>,
    /// What the footage shows for the case, e.g. `现场检查` or `on_site`.
    role: String,
    note: Option<String>,
}

/// Link evidence to a case
///
/// A `link` event in the item's ledger history.
#[utoipa::path(
    post,
    path = "/api/v1/cases/{id}/links",
    tag = "cases",
    params(CasePath),
    request_body = LinkBody,
    responses(
        (status = 201, description = "the link", body = LinkJson),
        CaseChangeRefusals,
        (status = 403, description = "the caller may not manage this case, or not see the evidence (audited)", body = ErrorBody),
        (status = 404, description = "no such case, evidence or step", body = ErrorBody),
        (status = 409, description = "the case is closed, or the evidence is linked already", body = ErrorBody),
    )
)]
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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct LinksQuery {
    /// Include unlinked items, with who unlinked them and why.
    history: Option<bool>,
}

/// Evidence linked to a case
#[utoipa::path(
    get,
    path = "/api/v1/cases/{id}/links",
    tag = "cases",
    params(CasePath, LinksQuery),
    responses(
        (status = 200, description = "the links", body = Vec<LinkJson>),
        CaseRefusals,
    )
)]
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

/// Why evidence is unlinked.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = Unlink)]
pub(crate) struct UnlinkBody {
    reason: String,
}

/// Unlink evidence from a case
///
/// An `unlink` event in the item's ledger history; the link stays in the case's link history with the
/// reason.
#[utoipa::path(
    delete,
    path = "/api/v1/cases/{id}/links/{evidence}",
    tag = "cases",
    params(CasePath, ("evidence" = EvidenceId, Path, description = "evidence id")),
    request_body = UnlinkBody,
    responses(
        (status = 204, description = "unlinked"),
        CaseChangeRefusals,
        (status = 404, description = "no such case, or the evidence is not linked to it", body = ErrorBody),
    )
)]
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

/// Why part of a step was not recorded.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = NewExplanation)]
pub(crate) struct ExplainBody {
    /// The officer it concerns; absent for every officer of the step.
    badge: Option<String>,
    /// RFC 3339 start of the unrecorded span.
    #[schema(format = DateTime)]
    from: String,
    /// RFC 3339 end of the unrecorded span.
    #[schema(format = DateTime)]
    to: String,
    /// E.g. a flat battery, or a conversation the law exempts from recording.
    reason: String,
}

/// A recorded explanation of a gap.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Explanation)]
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

/// Explain a recording gap
///
/// Why part of a step was not recorded; an explained gap no longer blocks review.
#[utoipa::path(
    post,
    path = "/api/v1/cases/{id}/steps/{step}/explanations",
    tag = "cases",
    params(CasePath, ("step" = StepId, Path, description = "step id")),
    request_body = ExplainBody,
    responses(
        (status = 201, description = "the explanation", body = ExplanationJson),
        CaseChangeRefusals,
        (status = 400, description = "the id or a field is malformed, the span is empty, or the officer is not present at the step", body = ErrorBody),
        (status = 404, description = "no such case or step", body = ErrorBody),
    )
)]
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

/// Recording coverage of a case
///
/// Per step and officer: what linked recordings cover, the gaps, and unlinked footage that would fill
/// them.
#[utoipa::path(
    get,
    path = "/api/v1/cases/{id}/coverage",
    tag = "cases",
    params(CasePath),
    responses(
        (status = 200, description = "the coverage report", body = CoverageReport),
        CaseRefusals,
    )
)]
pub(crate) async fn coverage(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Json<CoverageReport>, ApiError> {
    Ok(Json(s.cases.coverage(actor.user(), case_id(&id)?).await?))
}
