//! `/api/v1/requests`: approval before copy. A user asks to download an original or export a case; a
//! supervisor other than the requester approves or refuses; the requester may withdraw a pending one.

use crate::auth::Actor;
use crate::people::{Page, bad, limit};
use crate::{ApiError, ApiState};
use axum::Extension;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use custody_cases::{RequestQuery, RequestRecord};
use custody_core::request::{CopyKind, CopyTarget, RequestState};
use custody_core::{CaseId, EvidenceId, RequestId, Timestamp};
use serde::{Deserialize, Serialize};

fn request_id(s: &str) -> Result<RequestId, ApiError> {
    RequestId::parse(s).map_err(bad)
}

#[derive(Debug, Serialize)]
pub(crate) struct RequestJson {
    id: RequestId,
    kind: CopyKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    evidence_id: Option<EvidenceId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    case_id: Option<CaseId>,
    requester: String,
    reason: String,
    state: RequestState,
    #[serde(skip_serializing_if = "Option::is_none")]
    decided_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    decided_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    decision_note: Option<String>,
    created_at: Timestamp,
    /// Until when an approval opens copies.
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<Timestamp>,
}

impl From<RequestRecord> for RequestJson {
    fn from(r: RequestRecord) -> Self {
        Self {
            id: r.id,
            kind: r.target.kind(),
            evidence_id: r.target.evidence_id(),
            case_id: r.target.case_id(),
            requester: r.requester.to_string(),
            reason: r.reason,
            state: r.state,
            decided_by: r.decided_by.map(|u| u.to_string()),
            decided_at: r.decided_at,
            decision_note: r.decision_note,
            created_at: r.created_at,
            expires_at: r.expires_at,
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct NewRequestBody {
    /// `download` (with `evidence_id`) or `export` (with `case_id`).
    kind: String,
    evidence_id: Option<String>,
    case_id: Option<String>,
    reason: String,
}

/// `POST /api/v1/requests`: ask for a copy.
pub(crate) async fn create(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Json(b): Json<NewRequestBody>,
) -> Result<(StatusCode, Json<RequestJson>), ApiError> {
    let target = match (
        CopyKind::parse(&b.kind).map_err(ApiError::bad_request)?,
        b.evidence_id,
        b.case_id,
    ) {
        (CopyKind::Download, Some(e), None) => {
            CopyTarget::Evidence(EvidenceId::parse(&e).map_err(bad)?)
        }
        (CopyKind::Export, None, Some(c)) => CopyTarget::Case(CaseId::parse(&c).map_err(bad)?),
        (CopyKind::Download, _, _) => {
            return Err(ApiError::bad_request(
                "a download request names the evidence item in evidence_id, and no case_id",
            ));
        }
        (CopyKind::Export, _, _) => {
            return Err(ApiError::bad_request(
                "an export request names the case in case_id, and no evidence_id",
            ));
        }
    };
    let r = s.requests.create(actor.user(), target, &b.reason).await?;
    Ok((StatusCode::CREATED, Json(r.into())))
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    state: Option<String>,
    /// Only the caller's own requests.
    mine: Option<bool>,
    /// Only pending requests of others that the caller may decide.
    awaiting: Option<bool>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// `GET /api/v1/requests?state=&mine=&awaiting=&limit=&cursor=`: newest first. Supervisors and auditors
/// see everyone's, others their own.
pub(crate) async fn list(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Page<RequestJson>>, ApiError> {
    let limit = limit(q.limit)?;
    let state = q
        .state
        .as_deref()
        .map(RequestState::parse)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let after = q
        .cursor
        .as_deref()
        .map(|c| {
            let bad = || ApiError::bad_request("cursor: expected a next_cursor value");
            let (t, id) = c.split_once('_').ok_or_else(bad)?;
            Ok::<_, ApiError>((
                Timestamp::from_unix_micros(t.parse().map_err(|_| bad())?),
                RequestId::parse(id).map_err(|_| bad())?,
            ))
        })
        .transpose()?;
    let rows = s
        .requests
        .list(
            actor.user(),
            RequestQuery {
                state,
                mine: q.mine.unwrap_or(false),
                awaiting: q.awaiting.unwrap_or(false),
            },
            after,
            limit,
        )
        .await?;
    Ok(Json(Page::of(
        rows,
        limit,
        |r| format!("{}_{}", r.created_at.unix_micros(), r.id),
        RequestJson::from,
    )))
}

/// `GET /api/v1/requests/{id}`.
pub(crate) async fn get_one(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Json<RequestJson>, ApiError> {
    Ok(Json(
        s.requests.get(actor.user(), request_id(&id)?).await?.into(),
    ))
}

#[derive(Debug, Deserialize)]
pub(crate) struct DecisionBody {
    note: Option<String>,
}

/// `POST /api/v1/requests/{id}/approve` `{"note"?}`: a supervisor other than the requester.
pub(crate) async fn approve(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    Json(b): Json<DecisionBody>,
) -> Result<Json<RequestJson>, ApiError> {
    let r = s
        .requests
        .approve(actor.user(), request_id(&id)?, b.note.as_deref())
        .await?;
    Ok(Json(r.into()))
}

/// `POST /api/v1/requests/{id}/refuse` `{"note"}`: a supervisor other than the requester, saying why.
pub(crate) async fn refuse(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    Json(b): Json<DecisionBody>,
) -> Result<Json<RequestJson>, ApiError> {
    let note = b
        .note
        .ok_or_else(|| ApiError::bad_request("note: a refusal says why"))?;
    let r = s
        .requests
        .refuse(actor.user(), request_id(&id)?, &note)
        .await?;
    Ok(Json(r.into()))
}

/// `POST /api/v1/requests/{id}/withdraw`: the requester takes back a pending request.
pub(crate) async fn withdraw(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Json<RequestJson>, ApiError> {
    let r = s.requests.withdraw(actor.user(), request_id(&id)?).await?;
    Ok(Json(r.into()))
}
