//! Sessions (`/api/v1/sessions`), accounts (`/users`), the audit log (`/audit`), the officer registry
//! (`/officers`) and recorder check-outs (`/recorders/{device}/...`).

use crate::auth::{Actor, SessionToken};
use crate::error::ErrorBody;
use crate::{ApiError, ApiState};
use axum::Extension;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use custody_cases::{AuditRecord, CheckoutRecord, OfficerRecord};
use custody_cases::{NewUser, User};
use custody_core::access::{Capability, Roles, Username};
use custody_core::{BadgeNo, DeviceId, Timestamp};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

pub(crate) fn limit(l: Option<u32>) -> Result<u32, ApiError> {
    let l = l.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&l) {
        return Err(ApiError::bad_request(format!(
            "limit: must be between 1 and {MAX_LIMIT}, got {l}"
        )));
    }
    Ok(l)
}

pub(crate) fn bad<E: std::fmt::Display>(e: E) -> ApiError {
    ApiError::bad_request(e.to_string())
}

pub(crate) fn parse_time(field: &str, s: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    s.map(|s| {
        Timestamp::parse_rfc3339(s).map_err(|e| ApiError::bad_request(format!("{field}: {e}")))
    })
    .transpose()
}

/// A user account.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = User)]
pub(crate) struct UserJson {
    username: String,
    display_name: String,
    roles: Roles,
    /// The officer's badge number (警号), for a user who is an officer.
    #[serde(skip_serializing_if = "Option::is_none")]
    badge: Option<String>,
    /// When the account was disabled; absent while it may log in.
    #[serde(skip_serializing_if = "Option::is_none")]
    disabled_at: Option<Timestamp>,
}

impl UserJson {
    fn new(u: &User, disabled_at: Option<Timestamp>) -> Self {
        Self {
            username: u.username.to_string(),
            display_name: u.display_name.clone(),
            roles: u.roles,
            badge: u.badge.as_ref().map(|b| b.to_string()),
            disabled_at,
        }
    }
}

/// A user name and password.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = Login)]
pub(crate) struct LoginBody {
    username: String,
    password: String,
}

/// A new session.
#[derive(Serialize, ToSchema)]
#[schema(as = Session)]
pub(crate) struct SessionJson {
    /// Send as `Authorization: Bearer <token>`; shown once.
    token: String,
    expires_at: Timestamp,
    user: UserJson,
}

/// Log in
///
/// Starts a session with a user name and password. The token in the answer goes in
/// `Authorization: Bearer <token>` on every other `/api/v1` request.
#[utoipa::path(
    post,
    path = "/api/v1/sessions",
    tag = "sessions",
    security(()),
    request_body = LoginBody,
    responses(
        (status = 201, description = "the session", body = SessionJson),
        (status = 400, description = "the body is malformed", body = ErrorBody),
        (status = 401, description = "wrong user name or password, or the account is disabled (audited)", body = ErrorBody),
    )
)]
pub(crate) async fn login(
    State(s): State<ApiState>,
    Json(b): Json<LoginBody>,
) -> Result<(StatusCode, Json<SessionJson>), ApiError> {
    let session = s.accounts.login(&b.username, &b.password).await?;
    Ok((
        StatusCode::CREATED,
        Json(SessionJson {
            token: session.token,
            expires_at: session.expires_at,
            user: UserJson::new(&session.user, None),
        }),
    ))
}

/// Log out
///
/// Ends the session whose token the request carries.
#[utoipa::path(
    delete,
    path = "/api/v1/sessions/current",
    tag = "sessions",
    responses((status = 204, description = "the session has ended"))
)]
pub(crate) async fn logout(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Extension(token): Extension<SessionToken>,
) -> Result<StatusCode, ApiError> {
    s.accounts.logout(&token.0, actor.user()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Who am I
///
/// The user the token belongs to.
#[utoipa::path(
    get,
    path = "/api/v1/me",
    tag = "sessions",
    responses((status = 200, description = "the caller's account", body = UserJson))
)]
pub(crate) async fn me(Extension(actor): Extension<Actor>) -> Json<UserJson> {
    Json(UserJson::new(actor.user(), None))
}

/// An account to create.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = NewUser)]
pub(crate) struct NewUserBody {
    username: String,
    display_name: String,
    /// Role names, e.g. `["case_handler"]`.
    #[schema(value_type = Vec<custody_core::access::Role>)]
    roles: Vec<String>,
    /// The officer's badge number (警号), for a user who is an officer.
    badge: Option<String>,
    password: String,
}

/// Create a user
///
/// Admins only.
#[utoipa::path(
    post,
    path = "/api/v1/users",
    tag = "people",
    request_body = NewUserBody,
    responses(
        (status = 201, description = "the account", body = UserJson),
        (status = 400, description = "a field is malformed", body = ErrorBody),
        (status = 403, description = "the caller is not an admin (audited)", body = ErrorBody),
        (status = 409, description = "the user name is taken", body = ErrorBody),
    )
)]
pub(crate) async fn add_user(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Json(b): Json<NewUserBody>,
) -> Result<(StatusCode, Json<UserJson>), ApiError> {
    actor
        .require(&s, Capability::ManagePeople, "user.create")
        .await?;
    let roles = Roles::parse(&b.roles.join(",")).map_err(ApiError::bad_request)?;
    let user = s
        .accounts
        .add_user(NewUser {
            username: Username::parse(b.username).map_err(bad)?,
            display_name: b.display_name,
            roles,
            badge: b.badge.map(BadgeNo::parse).transpose().map_err(bad)?,
            password: b.password,
        })
        .await?;
    s.accounts
        .audit(
            &actor.label(),
            "user.create",
            Some(&user.actor()),
            "ok",
            Some(&roles.to_list()),
        )
        .await;
    Ok((StatusCode::CREATED, Json(UserJson::new(&user, None))))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageQuery {
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// A page of a listing.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// A page of `rows` asked for with `limit`: a full page names the cursor of its last row, since
    /// more may follow.
    pub fn of<R>(
        rows: Vec<R>,
        limit: u32,
        cursor: impl Fn(&R) -> String,
        item: impl Fn(R) -> T,
    ) -> Self {
        let next_cursor = (rows.len() == limit as usize)
            .then(|| rows.last().map(&cursor))
            .flatten();
        Self {
            items: rows.into_iter().map(item).collect(),
            next_cursor,
        }
    }
}

/// List users
///
/// Admins and auditors; by user name.
#[utoipa::path(
    get,
    path = "/api/v1/users",
    tag = "people",
    params(PageQuery),
    responses(
        (status = 200, description = "a page of accounts", body = Page<UserJson>),
        (status = 400, description = "the limit or the cursor is malformed", body = ErrorBody),
        (status = 403, description = "the caller is neither admin nor auditor (audited)", body = ErrorBody),
    )
)]
pub(crate) async fn list_users(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<UserJson>>, ApiError> {
    if !actor.user().can(Capability::ReadAudit) {
        actor
            .require(&s, Capability::ManagePeople, "user.list")
            .await?;
    }
    let limit = limit(q.limit)?;
    let after = q.cursor.map(Username::parse).transpose().map_err(bad)?;
    let users = s.accounts.list(after.as_ref(), limit).await?;
    Ok(Json(Page::of(
        users,
        limit,
        |(u, _)| u.username.to_string(),
        |(u, d)| UserJson::new(&u, d),
    )))
}

/// Changes to an account; absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct UserPatch {
    #[schema(value_type = Option<Vec<custody_core::access::Role>>)]
    roles: Option<Vec<String>>,
    /// `""` removes the badge.
    badge: Option<String>,
    password: Option<String>,
    /// Disabling ends the account's sessions and stops it logging in.
    disabled: Option<bool>,
}

/// Change a user
///
/// Admins only.
#[utoipa::path(
    patch,
    path = "/api/v1/users/{name}",
    tag = "people",
    params(("name" = String, Path, description = "user name")),
    request_body = UserPatch,
    responses(
        (status = 200, description = "the account, changed", body = UserJson),
        (status = 400, description = "a field is malformed", body = ErrorBody),
        (status = 403, description = "the caller is not an admin (audited)", body = ErrorBody),
        (status = 404, description = "no such user", body = ErrorBody),
    )
)]
pub(crate) async fn update_user(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
    Json(b): Json<UserPatch>,
) -> Result<Json<UserJson>, ApiError> {
    actor
        .require(&s, Capability::ManagePeople, "user.update")
        .await?;
    let name = Username::parse(name).map_err(bad)?;
    let roles = b
        .roles
        .map(|r| Roles::parse(&r.join(",")))
        .transpose()
        .map_err(ApiError::bad_request)?;
    let badge = b
        .badge
        .map(|b| {
            if b.is_empty() {
                Ok(None)
            } else {
                BadgeNo::parse(b).map(Some)
            }
        })
        .transpose()
        .map_err(bad)?;
    let user = s
        .accounts
        .update(&name, roles, badge, b.password, b.disabled)
        .await?;
    s.accounts
        .audit(
            &actor.label(),
            "user.update",
            Some(&name.actor()),
            "ok",
            None,
        )
        .await;
    let (_, disabled) = s.accounts.user(&name).await?;
    Ok(Json(UserJson::new(&user, disabled)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// Only records of this actor, e.g. `user:alice`.
    actor: Option<String>,
    /// Only records about this target, e.g. `case:<id>`.
    target: Option<String>,
    /// `ok`, `denied` or `failed`.
    #[param(pattern = "^(ok|denied|failed)$")]
    outcome: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// A record of the security audit log.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AuditRecord)]
pub(crate) struct AuditJson {
    id: i64,
    at: Timestamp,
    actor: String,
    /// E.g. `evidence.download`, `user.create`.
    action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    /// `ok`, `denied` or `failed`.
    outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

impl From<AuditRecord> for AuditJson {
    fn from(r: AuditRecord) -> Self {
        Self {
            id: r.id,
            at: r.at,
            actor: r.actor,
            action: r.action,
            target: r.target,
            outcome: r.outcome,
            detail: r.detail,
        }
    }
}

/// The audit log
///
/// The security audit log, newest first. Auditors and admins.
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "people",
    params(AuditQuery),
    responses(
        (status = 200, description = "a page of audit records", body = Page<AuditJson>),
        (status = 400, description = "a filter, the limit or the cursor is malformed", body = ErrorBody),
        (status = 403, description = "the caller is neither auditor nor admin (audited)", body = ErrorBody),
    )
)]
pub(crate) async fn audit_log(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Page<AuditJson>>, ApiError> {
    actor
        .require(&s, Capability::ReadAudit, "audit.read")
        .await?;
    let limit = limit(q.limit)?;
    if let Some(o) = &q.outcome
        && !matches!(o.as_str(), "ok" | "denied" | "failed")
    {
        return Err(ApiError::bad_request(format!(
            "outcome: must be ok, denied or failed, got {o:?}"
        )));
    }
    let before = q
        .cursor
        .map(|c| c.parse::<i64>())
        .transpose()
        .map_err(|_| ApiError::bad_request("cursor: expected a next_cursor value"))?;
    let rows = s
        .accounts
        .audit_log(
            q.actor.as_deref(),
            q.target.as_deref(),
            q.outcome.as_deref(),
            before,
            limit,
        )
        .await?;
    Ok(Json(Page::of(
        rows,
        limit,
        |r| r.id.to_string(),
        AuditJson::from,
    )))
}

/// An officer of the registry.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Officer)]
pub(crate) struct OfficerJson {
    /// Badge number (警号).
    badge: String,
    name: String,
    unit: String,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl From<OfficerRecord> for OfficerJson {
    fn from(o: OfficerRecord) -> Self {
        Self {
            badge: o.badge.to_string(),
            name: o.name,
            unit: o.unit,
            created_at: o.created_at,
            updated_at: o.updated_at,
        }
    }
}

/// An officer's name and unit.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = OfficerDetails)]
pub(crate) struct OfficerBody {
    name: String,
    unit: String,
}

/// Register or correct an officer
///
/// Admins only.
#[utoipa::path(
    put,
    path = "/api/v1/officers/{badge}",
    tag = "people",
    params(("badge" = BadgeNo, Path, description = "badge number (警号)")),
    request_body = OfficerBody,
    responses(
        (status = 200, description = "the officer", body = OfficerJson),
        (status = 400, description = "a field is malformed", body = ErrorBody),
        (status = 403, description = "the caller is not an admin (audited)", body = ErrorBody),
    )
)]
pub(crate) async fn put_officer(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(badge): Path<String>,
    Json(b): Json<OfficerBody>,
) -> Result<Json<OfficerJson>, ApiError> {
    let badge = BadgeNo::parse(badge).map_err(bad)?;
    let o = s
        .officers
        .upsert(actor.user(), &badge, &b.name, &b.unit)
        .await?;
    Ok(Json(o.into()))
}

/// One officer
#[utoipa::path(
    get,
    path = "/api/v1/officers/{badge}",
    tag = "people",
    params(("badge" = BadgeNo, Path, description = "badge number (警号)")),
    responses(
        (status = 200, description = "the officer", body = OfficerJson),
        (status = 400, description = "the badge number is malformed", body = ErrorBody),
        (status = 403, description = "the caller may not read the registry (audited)", body = ErrorBody),
        (status = 404, description = "no such officer", body = ErrorBody),
    )
)]
pub(crate) async fn get_officer(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(badge): Path<String>,
) -> Result<Json<OfficerJson>, ApiError> {
    let badge = BadgeNo::parse(badge).map_err(bad)?;
    Ok(Json(s.officers.get(actor.user(), &badge).await?.into()))
}

/// List officers
///
/// By badge number.
#[utoipa::path(
    get,
    path = "/api/v1/officers",
    tag = "people",
    params(PageQuery),
    responses(
        (status = 200, description = "a page of officers", body = Page<OfficerJson>),
        (status = 400, description = "the limit or the cursor is malformed", body = ErrorBody),
        (status = 403, description = "the caller may not read the registry (audited)", body = ErrorBody),
    )
)]
pub(crate) async fn list_officers(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<OfficerJson>>, ApiError> {
    let limit = limit(q.limit)?;
    let after = q.cursor.map(BadgeNo::parse).transpose().map_err(bad)?;
    let rows = s.officers.list(actor.user(), after.as_ref(), limit).await?;
    Ok(Json(Page::of(
        rows,
        limit,
        |o| o.badge.to_string(),
        OfficerJson::from,
    )))
}

/// A check-out of the register: who held a recorder, from when until when.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Checkout)]
pub(crate) struct CheckoutJson {
    id: i64,
    device_id: String,
    badge: String,
    out_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    returned_at: Option<Timestamp>,
    out_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    returned_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

impl From<CheckoutRecord> for CheckoutJson {
    fn from(c: CheckoutRecord) -> Self {
        Self {
            id: c.id,
            device_id: c.device_id.to_string(),
            badge: c.badge.to_string(),
            out_at: c.out_at,
            returned_at: c.returned_at,
            out_by: c.out_by,
            returned_by: c.returned_by,
            note: c.note,
        }
    }
}

/// An officer taking a recorder.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = NewCheckout)]
pub(crate) struct CheckoutBody {
    /// Badge number (警号) of the officer.
    badge: String,
    /// RFC 3339; now when absent (a check-out entered afterwards names its real time).
    #[schema(format = DateTime)]
    at: Option<String>,
    note: Option<String>,
}

/// Check a recorder out
///
/// An officer takes a recorder (领用); footage it records from then on is attributed to them.
#[utoipa::path(
    post,
    path = "/api/v1/recorders/{device}/checkout",
    tag = "people",
    params(("device" = DeviceId, Path, description = "the recorder's serial number")),
    request_body = CheckoutBody,
    responses(
        (status = 201, description = "the check-out", body = CheckoutJson),
        (status = 400, description = "a field is malformed", body = ErrorBody),
        (status = 403, description = "the caller is not an admin (audited)", body = ErrorBody),
        (status = 404, description = "no such officer", body = ErrorBody),
        (status = 409, description = "the recorder is checked out already, or the time overlaps another check-out", body = ErrorBody),
    )
)]
pub(crate) async fn checkout(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(device): Path<String>,
    Json(b): Json<CheckoutBody>,
) -> Result<(StatusCode, Json<CheckoutJson>), ApiError> {
    let device = DeviceId::parse(device).map_err(bad)?;
    let badge = BadgeNo::parse(b.badge).map_err(bad)?;
    let at = parse_time("at", b.at.as_deref())?;
    let c = s
        .officers
        .checkout(actor.user(), &device, &badge, at, b.note.as_deref())
        .await?;
    Ok((StatusCode::CREATED, Json(c.into())))
}

/// A recorder coming back.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = RecorderReturn)]
pub(crate) struct ReturnBody {
    /// RFC 3339; now when absent.
    #[schema(format = DateTime)]
    at: Option<String>,
}

/// Return a recorder
///
/// The recorder comes back (归还): its open check-out ends.
#[utoipa::path(
    post,
    path = "/api/v1/recorders/{device}/return",
    tag = "people",
    params(("device" = DeviceId, Path, description = "the recorder's serial number")),
    request_body = ReturnBody,
    responses(
        (status = 200, description = "the check-out, ended", body = CheckoutJson),
        (status = 400, description = "a field is malformed", body = ErrorBody),
        (status = 403, description = "the caller is not an admin (audited)", body = ErrorBody),
        (status = 404, description = "the recorder is not checked out", body = ErrorBody),
        (status = 409, description = "the return time is before the check-out", body = ErrorBody),
    )
)]
pub(crate) async fn return_recorder(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(device): Path<String>,
    Json(b): Json<ReturnBody>,
) -> Result<Json<CheckoutJson>, ApiError> {
    let device = DeviceId::parse(device).map_err(bad)?;
    let at = parse_time("at", b.at.as_deref())?;
    Ok(Json(
        s.officers
            .return_recorder(actor.user(), &device, at)
            .await?
            .into(),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct CheckoutQuery {
    /// Only check-outs of this recorder.
    device: Option<String>,
    /// Only check-outs by this officer.
    badge: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The check-out register
///
/// Newest first.
#[utoipa::path(
    get,
    path = "/api/v1/checkouts",
    tag = "people",
    params(CheckoutQuery),
    responses(
        (status = 200, description = "a page of check-outs", body = Page<CheckoutJson>),
        (status = 400, description = "a filter, the limit or the cursor is malformed", body = ErrorBody),
        (status = 403, description = "the caller may not read the register, except an officer their own check-outs (audited)", body = ErrorBody),
    )
)]
pub(crate) async fn checkouts(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<CheckoutQuery>,
) -> Result<Json<Page<CheckoutJson>>, ApiError> {
    let limit = limit(q.limit)?;
    let device = q.device.map(DeviceId::parse).transpose().map_err(bad)?;
    let badge = q.badge.map(BadgeNo::parse).transpose().map_err(bad)?;
    let before = q
        .cursor
        .map(|c| c.parse::<i64>())
        .transpose()
        .map_err(|_| ApiError::bad_request("cursor: expected a next_cursor value"))?;
    let rows = s
        .officers
        .checkouts(actor.user(), device.as_ref(), badge.as_ref(), before, limit)
        .await?;
    Ok(Json(Page::of(
        rows,
        limit,
        |c| c.id.to_string(),
        CheckoutJson::from,
    )))
}
