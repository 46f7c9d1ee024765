//! User accounts, password logins and bearer sessions, and the audit log they write to.
//!
//! Passwords are kept only as argon2id hashes, computed on a blocking thread (tens of milliseconds of
//! CPU). A session token is 32 random bytes shown once; the database keeps its SHA-256.

use crate::error::CasesError;
use crate::now;
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use custody_core::access::{Capability, EvidenceScope, Roles, Username};
use custody_core::{BadgeNo, Timestamp};
use custody_store::{AuditRecord, Metadata, UserRecord};
use rand_core_06::RngCore;
use sha2::Digest;
use std::time::Duration;

/// Shortest password accepted for a new account or a password change.
pub const MIN_PASSWORD_CHARS: usize = 10;

#[derive(Debug, Clone)]
pub struct AccountsConfig {
    /// How long a session token stays valid after login.
    pub session_ttl: Duration,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        Self {
            session_ttl: Duration::from_secs(12 * 3600),
        }
    }
}

/// Accounts and sessions.
#[derive(Debug, Clone)]
pub struct Accounts {
    meta: Metadata,
    config: AccountsConfig,
}

/// The user making a request, as established from their session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub username: Username,
    pub display_name: String,
    pub roles: Roles,
    /// The officer this account belongs to.
    pub badge: Option<BadgeNo>,
}

impl User {
    /// How the user is named in ledger events and the audit log.
    pub fn actor(&self) -> String {
        self.username.actor()
    }

    pub fn can(&self, cap: Capability) -> bool {
        self.roles.can(cap)
    }

    /// Which evidence this user may see.
    pub fn scope(&self) -> EvidenceScope {
        EvidenceScope::of(self.roles, self.badge.as_ref(), &self.username)
    }

    fn from_record(r: UserRecord) -> Self {
        Self {
            username: r.username,
            display_name: r.display_name,
            roles: r.roles,
            badge: r.badge,
        }
    }
}

/// What `custody admin user add` (or an admin) supplies for a new account.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: Username,
    pub display_name: String,
    pub roles: Roles,
    pub badge: Option<BadgeNo>,
    pub password: String,
}

/// A new session: the token is shown once and never stored.
#[derive(Clone)]
pub struct Session {
    pub token: String,
    pub expires_at: Timestamp,
    pub user: User,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("user", &self.user.username)
            .finish()
    }
}

fn token_sha256(token: &str) -> [u8; 32] {
    sha2::Sha256::digest(token.as_bytes()).into()
}

fn check_password(password: &str) -> Result<(), CasesError> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_CHARS {
        return Err(CasesError::InvalidArgument(format!(
            "password: must be at least {MIN_PASSWORD_CHARS} characters, got {n}"
        )));
    }
    Ok(())
}

async fn hash_password(password: String) -> Result<String, CasesError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut rand_core_06::OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| CasesError::Internal(format!("hashing a password: {e}")))
    })
    .await
    .map_err(|e| CasesError::Internal(format!("password hashing task: {e}")))?
}

/// Checks `password` against a stored PHC hash on a blocking thread.
async fn verify_password(password: String, phc: String) -> Result<bool, CasesError> {
    tokio::task::spawn_blocking(move || {
        let parsed = PasswordHash::new(&phc)
            .map_err(|e| CasesError::Internal(format!("stored password hash is malformed: {e}")))?;
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await
    .map_err(|e| CasesError::Internal(format!("password check task: {e}")))?
}

impl Accounts {
    pub fn new(meta: Metadata, config: AccountsConfig) -> Self {
        Self { meta, config }
    }

    /// Creates an account. `AlreadyExists` when the name is taken.
    pub async fn add_user(&self, new: NewUser) -> Result<User, CasesError> {
        check_password(&new.password)?;
        if new.display_name.trim().is_empty() {
            return Err(CasesError::InvalidArgument(
                "display_name: must not be empty".into(),
            ));
        }
        let t = now();
        let record = UserRecord {
            username: new.username,
            display_name: new.display_name.trim().to_string(),
            roles: new.roles,
            badge: new.badge,
            password_hash: hash_password(new.password).await?,
            created_at: t,
            updated_at: t,
            disabled_at: None,
        };
        self.meta.insert_user(&record).await?;
        tracing::info!(user = %record.username, roles = %record.roles.to_list(), "user created");
        Ok(User::from_record(record))
    }

    async fn record(&self, name: &Username) -> Result<UserRecord, CasesError> {
        self.meta
            .get_user(name)
            .await?
            .ok_or_else(|| CasesError::NotFound(format!("user {name}")))
    }

    /// One account, without its password hash.
    pub async fn user(&self, name: &Username) -> Result<(User, Option<Timestamp>), CasesError> {
        let r = self.record(name).await?;
        let disabled = r.disabled_at;
        Ok((User::from_record(r), disabled))
    }

    /// Accounts in name order, with when each was disabled.
    pub async fn list(
        &self,
        after: Option<&Username>,
        limit: u32,
    ) -> Result<Vec<(User, Option<Timestamp>)>, CasesError> {
        Ok(self
            .meta
            .list_users(after, limit)
            .await?
            .into_iter()
            .map(|r| {
                let d = r.disabled_at;
                (User::from_record(r), d)
            })
            .collect())
    }

    /// Changes an account's roles, officer badge, password or disabled state. A password change or a
    /// disable ends every session of the account.
    pub async fn update(
        &self,
        name: &Username,
        roles: Option<Roles>,
        badge: Option<Option<BadgeNo>>,
        password: Option<String>,
        disabled: Option<bool>,
    ) -> Result<User, CasesError> {
        let mut r = self.record(name).await?;
        let t = now();
        let mut end_sessions = false;
        if let Some(roles) = roles {
            r.roles = roles;
        }
        if let Some(b) = badge {
            r.badge = b;
        }
        if let Some(pw) = password {
            check_password(&pw)?;
            r.password_hash = hash_password(pw).await?;
            end_sessions = true;
        }
        match disabled {
            Some(true) => {
                r.disabled_at.get_or_insert(t);
                end_sessions = true;
            }
            Some(false) => r.disabled_at = None,
            None => {}
        }
        r.updated_at = t;
        self.meta.update_user(&r).await?;
        if end_sessions {
            self.meta.revoke_sessions_of(name, t).await?;
        }
        tracing::info!(user = %name, roles = %r.roles.to_list(), disabled = r.disabled_at.is_some(), "user changed");
        Ok(User::from_record(r))
    }

    /// Logs in with a password. A wrong password, an unknown name and a disabled account answer alike,
    /// and each refusal is audited.
    pub async fn login(&self, username: &str, password: &str) -> Result<Session, CasesError> {
        let refused = || CasesError::Unauthenticated("wrong user name or password".into());
        let record = match Username::parse(username) {
            Ok(name) => self.meta.get_user(&name).await?,
            Err(_) => None,
        };
        let ok = match &record {
            Some(r) if r.disabled_at.is_none() => {
                verify_password(password.to_string(), r.password_hash.clone()).await?
            }
            _ => false,
        };
        let actor = record
            .as_ref()
            .map(|r| r.username.actor())
            .unwrap_or_else(|| "anonymous".into());
        if !ok {
            let why = match &record {
                None => "unknown user",
                Some(r) if r.disabled_at.is_some() => "account disabled",
                Some(_) => "wrong password",
            };
            self.audit(
                &actor,
                "login",
                Some(&format!("user:{username}")),
                "denied",
                Some(why),
            )
            .await;
            return Err(refused());
        }
        let Some(record) = record else {
            return Err(refused());
        };
        let session = self.issue(User::from_record(record), None).await?;
        self.audit(&actor, "login", Some(&actor), "ok", None).await;
        Ok(session)
    }

    /// Issues a session for a user without a password (the `custody admin user token` command, run by
    /// someone who holds the server's configuration). `ttl` overrides the configured lifetime.
    pub async fn issue_for(
        &self,
        name: &Username,
        ttl: Option<Duration>,
    ) -> Result<Session, CasesError> {
        let r = self.record(name).await?;
        if r.disabled_at.is_some() {
            return Err(CasesError::FailedPrecondition(format!(
                "user {name} is disabled"
            )));
        }
        let s = self.issue(User::from_record(r), ttl).await?;
        self.audit("system", "session.issue", Some(&name.actor()), "ok", None)
            .await;
        Ok(s)
    }

    async fn issue(&self, user: User, ttl: Option<Duration>) -> Result<Session, CasesError> {
        let mut secret = [0u8; 32];
        rand_core_06::OsRng.fill_bytes(&mut secret);
        let token = hex::encode(secret);
        let t = now();
        let ttl = ttl.unwrap_or(self.config.session_ttl);
        let expires_at =
            t.saturating_add_micros(i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX));
        self.meta
            .insert_session(&token_sha256(&token), &user.username, t, expires_at)
            .await?;
        Ok(Session {
            token,
            expires_at,
            user,
        })
    }

    /// The user behind a bearer token.
    pub async fn authenticate(&self, token: &str) -> Result<User, CasesError> {
        if token.contains(':') {
            return Err(CasesError::Unauthenticated(
                "this is a station or recorder credential; user APIs need a session token from POST /api/v1/sessions"
                    .into(),
            ));
        }
        self.meta
            .session_user(&token_sha256(token), now())
            .await?
            .map(User::from_record)
            .ok_or_else(|| {
                CasesError::Unauthenticated(
                    "the session token is unknown, expired or revoked; log in again with POST /api/v1/sessions"
                        .into(),
                )
            })
    }

    /// Ends the session of `token`.
    pub async fn logout(&self, token: &str, user: &User) -> Result<(), CasesError> {
        self.meta
            .revoke_session(&token_sha256(token), now())
            .await?;
        self.audit(&user.actor(), "logout", None, "ok", None).await;
        Ok(())
    }

    /// Appends to the audit log. A failure to write is logged as an error and does not change the answer
    /// the caller gets: refusals are refused either way.
    pub async fn audit(
        &self,
        actor: &str,
        action: &str,
        target: Option<&str>,
        outcome: &str,
        detail: Option<&str>,
    ) {
        audit(&self.meta, actor, action, target, outcome, detail).await;
    }

    /// Refuses with `PermissionDenied` (and an audit record) unless `user` may `cap`.
    pub async fn require(
        &self,
        user: &User,
        cap: Capability,
        action: &str,
        target: Option<&str>,
    ) -> Result<(), CasesError> {
        require(&self.meta, user, cap, action, target).await
    }

    /// Audit records, newest first.
    pub async fn audit_log(
        &self,
        actor: Option<&str>,
        target: Option<&str>,
        outcome: Option<&str>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, CasesError> {
        Ok(self
            .meta
            .list_audit(actor, target, outcome, before, limit)
            .await?)
    }
}

pub(crate) async fn audit(
    meta: &Metadata,
    actor: &str,
    action: &str,
    target: Option<&str>,
    outcome: &str,
    detail: Option<&str>,
) {
    if outcome != "ok" {
        tracing::warn!(actor, action, target, outcome, detail, "access refused");
    }
    if let Err(e) = meta
        .audit(now(), actor, action, target, outcome, detail)
        .await
    {
        tracing::error!(error = %e, actor, action, target, outcome, "could not write the audit log");
    }
}

pub(crate) async fn require(
    meta: &Metadata,
    user: &User,
    cap: Capability,
    action: &str,
    target: Option<&str>,
) -> Result<(), CasesError> {
    if user.can(cap) {
        return Ok(());
    }
    let why = format!(
        "user {} ({}) may not {action}",
        user.username,
        user.roles.to_list()
    );
    audit(meta, &user.actor(), action, target, "denied", Some(&why)).await;
    Err(CasesError::PermissionDenied(why))
}
