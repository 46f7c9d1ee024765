//! `/api/v1/requests`: approval before copy. A user asks to download an original or export a case; a
//! supervisor other than the requester approves or refuses; the requester may withdraw a pending one.

use crate::auth::Actor;
use crate::error::ErrorBody;
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
use utoipa::{IntoParams, ToSchema};

fn request_id(s: &str) -> Result<RequestId, ApiError> {
    RequestId::parse(s).map_err(bad)
}

/// A request for a copy: to download an original, or to export a case.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = CopyRequest)]
pub(crate) struct RequestJson {
    id: RequestId,
    kind: CopyKind,
    /// The original asked for (`download`).
    #[serde(skip_serializing_if = "Option::is_none")]
    evidence_id: Option<EvidenceId>,
    /// The case asked for (`export`).
    #[serde(skip_serializing_if = "Option::is_none")]
    case_id: Option<CaseId>,
    /// User name of who asked.
    requester: String,
    reason: String,
    state: RequestState,
    /// User name of the supervisor who approved or refused it.
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

/// A copy to ask for.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = NewCopyRequest)]
pub(crate) struct NewRequestBody {
    /// `download` (with `evidence_id`) or `export` (with `case_id`).
    #[schema(value_type = CopyKind)]
    kind: String,
    #[schema(value_type = Option<EvidenceId>)]
    evidence_id: Option<String>,
    #[schema(value_type = Option<CaseId>)]
    case_id: Option<String>,
    /// Why the copy is needed; the approver reads it.
    reason: String,
}

/// Ask for a copy
///
/// Approval before copy: an original leaves, or a case is exported, only on a request approved by a
/// supervisor other than the requester.
#[utoipa::path(
    post,
    path = "/api/v1/requests",
    operation_id = "create_request",
    tag = "requests",
    request_body = NewRequestBody,
    responses(
        (status = 201, description = "the request, pending", body = RequestJson),
        (status = 400, description = "a field is malformed, or the kind and the id do not go together", body = ErrorBody),
        (status = 403, description = "the caller may not ask for this copy (audited)", body = ErrorBody),
        (status = 404, description = "no such evidence or case", body = ErrorBody),
    )
)]
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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only requests in this state.
    #[param(value_type = Option<RequestState>)]
    state: Option<String>,
    /// Only the caller's own requests.
    mine: Option<bool>,
    /// Only pending requests of others that the caller may decide.
    awaiting: Option<bool>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// List copy requests
///
/// Newest first. Supervisors and auditors see everyone's, others their own.
#[utoipa::path(
    get,
    path = "/api/v1/requests",
    operation_id = "list_requests",
    tag = "requests",
    params(ListQuery),
    responses(
        (status = 200, description = "a page of requests", body = Page<RequestJson>),
        (status = 400, description = "a filter, the limit or the cursor is malformed", body = ErrorBody),
    )
)]
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

/// One copy request
#[utoipa::path(
    get,
    path = "/api/v1/requests/{id}",
    operation_id = "get_request",
    tag = "requests",
    params(("id" = RequestId, Path, description = "request id")),
    responses(
        (status = 200, description = "the request", body = RequestJson),
        (status = 400, description = "the id is not a UUID", body = ErrorBody),
        (status = 403, description = "not the caller's to read (audited)", body = ErrorBody),
        (status = 404, description = "no such request", body = ErrorBody),
    )
)]
pub(crate) async fn get_one(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Json<RequestJson>, ApiError> {
    Ok(Json(
        s.requests.get(actor.user(), request_id(&id)?).await?.into(),
    ))
}

/// A decision's note: optional for an approval, the reason for a refusal.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = Decision)]
pub(crate) struct DecisionBody {
    note: Option<String>,
}

/// Approve a copy request
///
/// A supervisor other than the requester. The approval opens copies until `expires_at`.
#[utoipa::path(
    post,
    path = "/api/v1/requests/{id}/approve",
    tag = "requests",
    params(("id" = RequestId, Path, description = "request id")),
    request_body = DecisionBody,
    responses(
        (status = 200, description = "the request, approved", body = RequestJson),
        (status = 400, description = "the id or the note is malformed", body = ErrorBody),
        (status = 403, description = "the caller is not a supervisor, or is the requester (audited)", body = ErrorBody),
        (status = 404, description = "no such request", body = ErrorBody),
        (status = 409, description = "the request is no longer pending", body = ErrorBody),
    )
)]
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

/// Refuse a copy request
///
/// A supervisor other than the requester, saying why in `note`.
#[utoipa::path(
    post,
    path = "/api/v1/requests/{id}/refuse",
    tag = "requests",
    params(("id" = RequestId, Path, description = "request id")),
    request_body = DecisionBody,
    responses(
        (status = 200, description = "the request, refused", body = RequestJson),
        (status = 400, description = "the id is malformed, or the note is missing", body = ErrorBody),
        (status = 403, description = "the caller is not a supervisor, or is the requester (audited)", body = ErrorBody),
        (status = 404, description = "no such request", body = ErrorBody),
        (status = 409, description = "the request is no longer pending", body = ErrorBody),
    )
)]
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

/// Withdraw a copy request
///
/// The requester takes back a pending request.
#[utoipa::path(
    post,
    path = "/api/v1/requests/{id}/withdraw",
    tag = "requests",
    params(("id" = RequestId, Path, description = "request id")),
    responses(
        (status = 200, description = "the request, withdrawn", body = RequestJson),
        (status = 400, description = "the id is not a UUID", body = ErrorBody),
        (status = 403, description = "the caller is not the requester (audited)", body = ErrorBody),
        (status = 404, description = "no such request", body = ErrorBody),
        (status = 409, description = "the request is no longer pending", body = ErrorBody),
    )
)]
pub(crate) async fn withdraw(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Json<RequestJson>, ApiError> {
    let r = s.requests.withdraw(actor.user(), request_id(&id)?).await?;
    Ok(Json(r.into()))
}
