//! Sessions (`/api/v1/sessions`), accounts (`/users`), the audit log (`/audit`), the officer registry
//! (`/officers`) and recorder check-outs (`/recorders/{device}/...`).

use crate::auth::{Actor, SessionToken};
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

#[derive(Debug, Serialize)]
pub(crate) struct UserJson {
    username: String,
    display_name: String,
    roles: Roles,
    #[serde(skip_serializing_if = "Option::is_none")]
    badge: Option<String>,
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

#[derive(Debug, Deserialize)]
pub(crate) struct LoginBody {
    username: String,
    password: String,
}

#[derive(Serialize)]
pub(crate) struct SessionJson {
    /// Send as `Authorization: Bearer <token>`; shown once.
    token: String,
    expires_at: Timestamp,
    user: UserJson,
}

/// `POST /api/v1/sessions`: log in with a user name and password.
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

/// `DELETE /api/v1/sessions/current`: log out.
pub(crate) async fn logout(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Extension(token): Extension<SessionToken>,
) -> Result<StatusCode, ApiError> {
    s.accounts.logout(&token.0, actor.user()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/me`: who the token belongs to.
pub(crate) async fn me(Extension(actor): Extension<Actor>) -> Json<UserJson> {
    Json(UserJson::new(actor.user(), None))
}

#[derive(Debug, Deserialize)]
pub(crate) struct NewUserBody {
    username: String,
    display_name: String,
    /// Role names, e.g. `["case_handler"]`.
    roles: Vec<String>,
    badge: Option<String>,
    password: String,
}

/// `POST /api/v1/users` (admin).
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

#[derive(Debug, Deserialize)]
pub(crate) struct PageQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Page<T> {
    pub items: Vec<T>,
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

/// `GET /api/v1/users` (admin, auditor).
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

#[derive(Debug, Deserialize)]
pub(crate) struct UserPatch {
    roles: Option<Vec<String>>,
    /// `""` removes the badge.
    badge: Option<String>,
    password: Option<String>,
    disabled: Option<bool>,
}

/// `PATCH /api/v1/users/{name}` (admin).
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

#[derive(Debug, Deserialize)]
pub(crate) struct AuditQuery {
    actor: Option<String>,
    target: Option<String>,
    /// `ok`, `denied` or `failed`.
    outcome: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct AuditJson {
    id: i64,
    at: Timestamp,
    actor: String,
    action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
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

/// `GET /api/v1/audit`: the security audit log, newest first (auditor, admin).
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

#[derive(Debug, Serialize)]
pub(crate) struct OfficerJson {
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

#[derive(Debug, Deserialize)]
pub(crate) struct OfficerBody {
    name: String,
    unit: String,
}

/// `PUT /api/v1/officers/{badge}`: register or correct an officer (admin).
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

/// `GET /api/v1/officers/{badge}`.
pub(crate) async fn get_officer(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(badge): Path<String>,
) -> Result<Json<OfficerJson>, ApiError> {
    let badge = BadgeNo::parse(badge).map_err(bad)?;
    Ok(Json(s.officers.get(actor.user(), &badge).await?.into()))
}

/// `GET /api/v1/officers?limit=&cursor=`.
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

#[derive(Debug, Serialize)]
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

#[derive(Debug, Deserialize)]
pub(crate) struct CheckoutBody {
    badge: String,
    /// RFC 3339; now when absent (a check-out entered afterwards names its real time).
    at: Option<String>,
    note: Option<String>,
}

/// `POST /api/v1/recorders/{device}/checkout`: an officer takes a recorder (领用).
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

#[derive(Debug, Deserialize)]
pub(crate) struct ReturnBody {
    at: Option<String>,
}

/// `POST /api/v1/recorders/{device}/return`: the recorder comes back (归还).
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

#[derive(Debug, Deserialize)]
pub(crate) struct CheckoutQuery {
    device: Option<String>,
    badge: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// `GET /api/v1/checkouts?device=&badge=`: the register, newest first.
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
