//! People: user accounts and their sessions, the append-only security audit log, the officer registry and
//! the recorder check-out register (领用/归还), which decides whom each evidence item is attributed to.

use crate::error::StoreError;
use crate::meta::{Metadata, attribute_sql, corrupt, on_pool};
use custody_core::access::{Roles, Username};
use custody_core::{BadgeNo, DeviceId, Timestamp};

/// A user account as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub username: Username,
    pub display_name: String,
    pub roles: Roles,
    /// The officer this account belongs to.
    pub badge: Option<BadgeNo>,
    /// PHC string of the argon2id hash.
    pub password_hash: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub disabled_at: Option<Timestamp>,
}

/// One record of the security audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: i64,
    pub at: Timestamp,
    /// `user:<name>`, `anonymous`, `station:<id>`, `device:<id>`.
    pub actor: String,
    /// What was attempted, e.g. `login`, `evidence.read`, `case.status`.
    pub action: String,
    /// What it was attempted on, e.g. `evidence:<id>`, `case:<id>`.
    pub target: Option<String>,
    /// `ok`, `denied` or `failed`.
    pub outcome: String,
    pub detail: Option<String>,
}

/// An officer in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfficerRecord {
    pub badge: BadgeNo,
    pub name: String,
    pub unit: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// One period in which an officer held a recorder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutRecord {
    pub id: i64,
    pub device_id: DeviceId,
    pub badge: BadgeNo,
    pub out_at: Timestamp,
    /// Open while `None`.
    pub returned_at: Option<Timestamp>,
    pub out_by: String,
    pub returned_by: Option<String>,
    pub note: Option<String>,
}

#[derive(sqlx::FromRow)]
struct UserRow {
    username: String,
    display_name: String,
    roles: String,
    badge: Option<String>,
    password_hash: String,
    created_at: i64,
    updated_at: i64,
    disabled_at: Option<i64>,
}

impl UserRow {
    fn into_domain(self) -> Result<UserRecord, StoreError> {
        let c = corrupt("users", &self.username);
        Ok(UserRecord {
            username: Username::parse(self.username.clone()).map_err(|e| c(e.to_string()))?,
            display_name: self.display_name,
            roles: Roles::parse(&self.roles).map_err(&c)?,
            badge: self
                .badge
                .map(BadgeNo::parse)
                .transpose()
                .map_err(|e| c(e.to_string()))?,
            password_hash: self.password_hash,
            created_at: Timestamp::from_unix_micros(self.created_at),
            updated_at: Timestamp::from_unix_micros(self.updated_at),
            disabled_at: self.disabled_at.map(Timestamp::from_unix_micros),
        })
    }
}

macro_rules! user_columns {
    () => {
        "username, display_name, roles, badge, password_hash, created_at, updated_at, disabled_at"
    };
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    id: i64,
    at: i64,
    actor: String,
    action: String,
    target: Option<String>,
    outcome: String,
    detail: Option<String>,
}

#[derive(sqlx::FromRow)]
struct OfficerRow {
    badge: String,
    name: String,
    unit: String,
    created_at: i64,
    updated_at: i64,
}

impl OfficerRow {
    fn into_domain(self) -> Result<OfficerRecord, StoreError> {
        Ok(OfficerRecord {
            badge: BadgeNo::parse(self.badge.clone())
                .map_err(|e| corrupt("officers", &self.badge)(e.to_string()))?,
            name: self.name,
            unit: self.unit,
            created_at: Timestamp::from_unix_micros(self.created_at),
            updated_at: Timestamp::from_unix_micros(self.updated_at),
        })
    }
}

#[derive(sqlx::FromRow)]
struct CheckoutRow {
    id: i64,
    device_id: String,
    badge: String,
    out_at: i64,
    returned_at: Option<i64>,
    out_by: String,
    returned_by: Option<String>,
    note: Option<String>,
}

impl CheckoutRow {
    fn into_domain(self) -> Result<CheckoutRecord, StoreError> {
        let key = self.id.to_string();
        let c = corrupt("recorder_checkouts", &key);
        Ok(CheckoutRecord {
            id: self.id,
            device_id: DeviceId::parse(self.device_id).map_err(|e| c(e.to_string()))?,
            badge: BadgeNo::parse(self.badge).map_err(|e| c(e.to_string()))?,
            out_at: Timestamp::from_unix_micros(self.out_at),
            returned_at: self.returned_at.map(Timestamp::from_unix_micros),
            out_by: self.out_by,
            returned_by: self.returned_by,
            note: self.note,
        })
    }
}

macro_rules! checkout_columns {
    () => {
        "id, device_id, badge, out_at, returned_at, out_by, returned_by, note"
    };
}

/// Whether a database error is a unique-constraint violation (SQLite 2067/1555, PostgreSQL 23505).
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d)
        if matches!(d.code().as_deref(), Some("2067") | Some("1555") | Some("23505")))
}

impl Metadata {
    /// Creates an account. `AlreadyExists` when the name is taken.
    pub async fn insert_user(&self, u: &UserRecord) -> Result<(), StoreError> {
        let sql = concat!(
            "INSERT INTO users (",
            user_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (username) DO NOTHING"
        );
        let n = on_pool!(self, p => sqlx::query(sql)
            .bind(u.username.as_str())
            .bind(&u.display_name)
            .bind(u.roles.to_list())
            .bind(u.badge.as_ref().map(BadgeNo::as_str))
            .bind(&u.password_hash)
            .bind(u.created_at.unix_micros())
            .bind(u.updated_at.unix_micros())
            .bind(u.disabled_at.map(Timestamp::unix_micros))
            .execute(p)
            .await
            .map(|r| r.rows_affected()))
        .map_err(StoreError::db("creating a user"))?;
        if n == 0 {
            return Err(StoreError::AlreadyExists(format!("user {}", u.username)));
        }
        Ok(())
    }

    /// Replaces an account's display name, roles, badge, password hash and disabled mark. `NotFound` for
    /// an unknown user.
    pub async fn update_user(&self, u: &UserRecord) -> Result<(), StoreError> {
        let sql = "UPDATE users SET display_name = $2, roles = $3, badge = $4, password_hash = $5, \
                   updated_at = $6, disabled_at = $7 WHERE username = $1";
        let n = on_pool!(self, p => sqlx::query(sql)
            .bind(u.username.as_str())
            .bind(&u.display_name)
            .bind(u.roles.to_list())
            .bind(u.badge.as_ref().map(BadgeNo::as_str))
            .bind(&u.password_hash)
            .bind(u.updated_at.unix_micros())
            .bind(u.disabled_at.map(Timestamp::unix_micros))
            .execute(p)
            .await
            .map(|r| r.rows_affected()))
        .map_err(StoreError::db("updating a user"))?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("user {}", u.username)));
        }
        Ok(())
    }

    pub async fn get_user(&self, name: &Username) -> Result<Option<UserRecord>, StoreError> {
        let sql = concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE username = $1"
        );
        let row: Option<UserRow> = on_pool!(self, p => sqlx::query_as(sql)
            .bind(name.as_str())
            .fetch_optional(p)
            .await)
        .map_err(StoreError::db("reading a user"))?;
        row.map(UserRow::into_domain).transpose()
    }

    /// Accounts in name order, `limit` at a time after `after`.
    pub async fn list_users(
        &self,
        after: Option<&Username>,
        limit: u32,
    ) -> Result<Vec<UserRecord>, StoreError> {
        let sql = concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE username > $1 ORDER BY username LIMIT $2"
        );
        let rows: Vec<UserRow> = on_pool!(self, p => sqlx::query_as(sql)
            .bind(after.map(Username::as_str).unwrap_or(""))
            .bind(i64::from(limit.max(1)))
            .fetch_all(p)
            .await)
        .map_err(StoreError::db("listing users"))?;
        rows.into_iter().map(UserRow::into_domain).collect()
    }

    /// Stores a session under the SHA-256 of its token.
    pub async fn insert_session(
        &self,
        token_sha256: &[u8; 32],
        user: &Username,
        created_at: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        on_pool!(self, p => sqlx::query(
            "INSERT INTO sessions (token_sha256, username, created_at, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(token_sha256.to_vec())
            .bind(user.as_str())
            .bind(created_at.unix_micros())
            .bind(expires_at.unix_micros())
            .execute(p)
            .await
            .map(|_| ()))
        .map_err(StoreError::db("creating a session"))?;
        Ok(())
    }

    /// The account behind a live session: not expired at `now`, not revoked, account not disabled.
    pub async fn session_user(
        &self,
        token_sha256: &[u8; 32],
        now: Timestamp,
    ) -> Result<Option<UserRecord>, StoreError> {
        let sql = "SELECT u.username, u.display_name, u.roles, u.badge, u.password_hash, u.created_at, \
                   u.updated_at, u.disabled_at FROM sessions s JOIN users u ON u.username = s.username \
                   WHERE s.token_sha256 = $1 AND s.revoked_at IS NULL AND s.expires_at > $2 \
                   AND u.disabled_at IS NULL";
        let row: Option<UserRow> = on_pool!(self, p => sqlx::query_as(sql)
            .bind(token_sha256.to_vec())
            .bind(now.unix_micros())
            .fetch_optional(p)
            .await)
        .map_err(StoreError::db("reading a session"))?;
        row.map(UserRow::into_domain).transpose()
    }

    /// Revokes one session (logout). Returns whether a live session was revoked.
    pub async fn revoke_session(
        &self,
        token_sha256: &[u8; 32],
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let n = on_pool!(self, p => sqlx::query(
            "UPDATE sessions SET revoked_at = $2 WHERE token_sha256 = $1 AND revoked_at IS NULL")
            .bind(token_sha256.to_vec())
            .bind(now.unix_micros())
            .execute(p)
            .await
            .map(|r| r.rows_affected()))
        .map_err(StoreError::db("revoking a session"))?;
        Ok(n > 0)
    }

    /// Revokes every session of a user (on disable or password change).
    pub async fn revoke_sessions_of(
        &self,
        user: &Username,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        on_pool!(self, p => sqlx::query(
            "UPDATE sessions SET revoked_at = $2 WHERE username = $1 AND revoked_at IS NULL")
            .bind(user.as_str())
            .bind(now.unix_micros())
            .execute(p)
            .await
            .map(|r| r.rows_affected()))
        .map_err(StoreError::db("revoking sessions"))
    }

    /// Appends to the audit log.
    pub async fn audit(
        &self,
        at: Timestamp,
        actor: &str,
        action: &str,
        target: Option<&str>,
        outcome: &str,
        detail: Option<&str>,
    ) -> Result<(), StoreError> {
        on_pool!(self, p => sqlx::query(
            "INSERT INTO audit_log (at, actor, action, target, outcome, detail) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(at.unix_micros())
            .bind(actor)
            .bind(action)
            .bind(target)
            .bind(outcome)
            .bind(detail)
            .execute(p)
            .await
            .map(|_| ()))
        .map_err(StoreError::db("writing the audit log"))?;
        Ok(())
    }

    /// Audit records, newest first, optionally of one actor, target or outcome, `limit` at a time
    /// before record `before`.
    pub async fn list_audit(
        &self,
        actor: Option<&str>,
        target: Option<&str>,
        outcome: Option<&str>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let sql = "SELECT id, at, actor, action, target, outcome, detail FROM audit_log \
                   WHERE (CAST($1 AS TEXT) IS NULL OR actor = $1) \
                     AND (CAST($2 AS TEXT) IS NULL OR target = $2) \
                     AND (CAST($3 AS TEXT) IS NULL OR outcome = $3) \
                     AND (CAST($4 AS BIGINT) IS NULL OR id < $4) \
                   ORDER BY id DESC LIMIT $5";
        let rows: Vec<AuditRow> = on_pool!(self, p => sqlx::query_as(sql)
            .bind(actor)
            .bind(target)
            .bind(outcome)
            .bind(before)
            .bind(i64::from(limit.max(1)))
            .fetch_all(p)
            .await)
        .map_err(StoreError::db("reading the audit log"))?;
        Ok(rows
            .into_iter()
            .map(|r| AuditRecord {
                id: r.id,
                at: Timestamp::from_unix_micros(r.at),
                actor: r.actor,
                action: r.action,
                target: r.target,
                outcome: r.outcome,
                detail: r.detail,
            })
            .collect())
    }

    /// Adds an officer, or updates the name and unit of one already registered.
    pub async fn upsert_officer(
        &self,
        badge: &BadgeNo,
        name: &str,
        unit: &str,
        now: Timestamp,
    ) -> Result<OfficerRecord, StoreError> {
        on_pool!(self, p => sqlx::query(
            "INSERT INTO officers (badge, name, unit, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
             ON CONFLICT (badge) DO UPDATE SET name = excluded.name, unit = excluded.unit, updated_at = excluded.updated_at")
            .bind(badge.as_str())
            .bind(name)
            .bind(unit)
            .bind(now.unix_micros())
            .execute(p)
            .await
            .map(|_| ()))
        .map_err(StoreError::db("registering an officer"))?;
        self.get_officer(badge)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("officer {badge}")))
    }

    pub async fn get_officer(&self, badge: &BadgeNo) -> Result<Option<OfficerRecord>, StoreError> {
        let row: Option<OfficerRow> = on_pool!(self, p => sqlx::query_as(
            "SELECT badge, name, unit, created_at, updated_at FROM officers WHERE badge = $1")
            .bind(badge.as_str())
            .fetch_optional(p)
            .await)
        .map_err(StoreError::db("reading an officer"))?;
        row.map(OfficerRow::into_domain).transpose()
    }

    /// Officers in badge order, `limit` at a time after `after`.
    pub async fn list_officers(
        &self,
        after: Option<&BadgeNo>,
        limit: u32,
    ) -> Result<Vec<OfficerRecord>, StoreError> {
        let rows: Vec<OfficerRow> = on_pool!(self, p => sqlx::query_as(
            "SELECT badge, name, unit, created_at, updated_at FROM officers WHERE badge > $1 \
             ORDER BY badge LIMIT $2")
            .bind(after.map(BadgeNo::as_str).unwrap_or(""))
            .bind(i64::from(limit.max(1)))
            .fetch_all(p)
            .await)
        .map_err(StoreError::db("listing officers"))?;
        rows.into_iter().map(OfficerRow::into_domain).collect()
    }

    /// Records that `badge` took `device` at `out_at`, and re-attributes the recorder's evidence, in one
    /// transaction. Refused (`Conflict`) when the period would overlap another check-out of the same
    /// recorder, including one still open.
    pub async fn checkout_recorder(
        &self,
        device: &DeviceId,
        badge: &BadgeNo,
        out_at: Timestamp,
        by: &str,
        note: Option<&str>,
    ) -> Result<CheckoutRecord, StoreError> {
        let id = on_pool!(self, p => async {
            let mut tx = p.begin().await?;
            // A write first, so SQLite takes its write lock now and the overlap check below cannot race.
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO recorder_checkouts (device_id, badge, out_at, out_by, note) \
                 VALUES ($1, $2, $3, $4, $5) RETURNING id")
                .bind(device.as_str())
                .bind(badge.as_str())
                .bind(out_at.unix_micros())
                .bind(by)
                .bind(note)
                .fetch_one(&mut *tx)
                .await?;
            let overlapping: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM recorder_checkouts WHERE device_id = $1 AND id <> $2 \
                 AND (returned_at IS NULL OR returned_at > $3) LIMIT 1")
                .bind(device.as_str())
                .bind(id)
                .bind(out_at.unix_micros())
                .fetch_optional(&mut *tx)
                .await?;
            if overlapping.is_some() {
                tx.rollback().await?;
                return Ok(None);
            }
            sqlx::query(attribute_sql!("e.device_id = $1"))
                .bind(device.as_str())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Some(id))
        }.await)
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Conflict(format!("recorder {device} is already checked out; return it first"))
            } else if matches!(&e, sqlx::Error::Database(d) if d.message().contains("FOREIGN KEY") || d.code().as_deref() == Some("23503")) {
                StoreError::NotFound(format!("officer {badge}"))
            } else {
                StoreError::db("checking out a recorder")(e)
            }
        })?
        .ok_or_else(|| {
            StoreError::Conflict(format!(
                "recorder {device} is held by another officer at {out_at}: a check-out may not overlap another"
            ))
        })?;
        self.get_checkout(id).await
    }

    /// Closes the open check-out of `device` at `returned_at` and re-attributes its evidence.
    /// `NotFound` when the recorder is not checked out; `Conflict` when `returned_at` is not after the
    /// check-out.
    pub async fn return_recorder(
        &self,
        device: &DeviceId,
        returned_at: Timestamp,
        by: &str,
    ) -> Result<CheckoutRecord, StoreError> {
        let outcome = on_pool!(self, p => async {
            let mut tx = p.begin().await?;
            let id: Option<i64> = sqlx::query_scalar(
                "UPDATE recorder_checkouts SET returned_at = $2, returned_by = $3 \
                 WHERE device_id = $1 AND returned_at IS NULL AND out_at < $2 RETURNING id")
                .bind(device.as_str())
                .bind(returned_at.unix_micros())
                .bind(by)
                .fetch_optional(&mut *tx)
                .await?;
            if id.is_some() {
                sqlx::query(attribute_sql!("e.device_id = $1"))
                    .bind(device.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(id)
        }.await)
        .map_err(StoreError::db("returning a recorder"))?;
        match outcome {
            Some(id) => self.get_checkout(id).await,
            None => match self.open_checkout(device).await? {
                Some(c) => Err(StoreError::Conflict(format!(
                    "recorder {device} was checked out at {}; it cannot be returned at {returned_at}, before that",
                    c.out_at
                ))),
                None => Err(StoreError::NotFound(format!(
                    "open check-out of recorder {device}"
                ))),
            },
        }
    }

    async fn get_checkout(&self, id: i64) -> Result<CheckoutRecord, StoreError> {
        let sql = concat!(
            "SELECT ",
            checkout_columns!(),
            " FROM recorder_checkouts WHERE id = $1"
        );
        let row: CheckoutRow = on_pool!(self, p => sqlx::query_as(sql)
            .bind(id)
            .fetch_one(p)
            .await)
        .map_err(StoreError::db("reading a check-out"))?;
        row.into_domain()
    }

    /// The open check-out of a recorder, if any.
    pub async fn open_checkout(
        &self,
        device: &DeviceId,
    ) -> Result<Option<CheckoutRecord>, StoreError> {
        let sql = concat!(
            "SELECT ",
            checkout_columns!(),
            " FROM recorder_checkouts WHERE device_id = $1 AND returned_at IS NULL"
        );
        let row: Option<CheckoutRow> = on_pool!(self, p => sqlx::query_as(sql)
            .bind(device.as_str())
            .fetch_optional(p)
            .await)
        .map_err(StoreError::db("reading a check-out"))?;
        row.map(CheckoutRow::into_domain).transpose()
    }

    /// Check-outs of a recorder or of an officer (or all), newest first, `limit` at a time.
    pub async fn list_checkouts(
        &self,
        device: Option<&DeviceId>,
        badge: Option<&BadgeNo>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<CheckoutRecord>, StoreError> {
        let sql = concat!(
            "SELECT ",
            checkout_columns!(),
            " FROM recorder_checkouts WHERE (CAST($1 AS TEXT) IS NULL OR device_id = $1) \
              AND (CAST($2 AS TEXT) IS NULL OR badge = $2) AND (CAST($3 AS BIGINT) IS NULL OR id < $3) \
              ORDER BY id DESC LIMIT $4"
        );
        let rows: Vec<CheckoutRow> = on_pool!(self, p => sqlx::query_as(sql)
            .bind(device.map(DeviceId::as_str))
            .bind(badge.map(BadgeNo::as_str))
            .bind(before)
            .bind(i64::from(limit.max(1)))
            .fetch_all(p)
            .await)
        .map_err(StoreError::db("listing check-outs"))?;
        rows.into_iter().map(CheckoutRow::into_domain).collect()
    }
}
