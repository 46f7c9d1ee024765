//! Authentication. Every `/api/v1` request except logging in, the public ledger proofs and the broker
//! hooks passes through [`authenticate`], which turns the bearer token (`Authorization: Bearer <token>`)
//! into the [`Actor`] making the request and puts it into the request's extensions; handlers read it
//! from there and ask `custody-cases` whether that user may do what they ask.
//!
//! Stations and recorders are not users: their `<id>:<secret>` credentials are refused here with a
//! message saying so. WebSocket clients in browsers cannot set headers, so `/api/v1/live` alone also
//! accepts the token as `access_token` in the query.

use crate::{ApiError, ApiState};
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use custody_cases::User;
use custody_core::ErrorCode;
use custody_core::access::Capability;

/// Who is making a request: a logged-in user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub User);

impl Actor {
    /// How the actor is named in ledger events and the audit log: `user:<name>`.
    pub fn label(&self) -> String {
        self.0.actor()
    }

    pub fn user(&self) -> &User {
        &self.0
    }

    /// Refuses with 403 (audited) unless the user may `cap`.
    pub async fn require(
        &self,
        s: &ApiState,
        cap: Capability,
        action: &str,
    ) -> Result<(), ApiError> {
        Ok(s.accounts.require(&self.0, cap, action, None).await?)
    }
}

/// The bearer token of a request: from the `Authorization` header, or for the live feed from the
/// `access_token` query parameter.
pub(crate) fn bearer(req: &Request) -> Option<String> {
    if let Some(v) = req.headers().get(header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let (scheme, token) = v.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_string());
    }
    if req.uri().path().ends_with("/live") {
        return req.uri().query().and_then(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == "access_token")
                .map(|(_, v)| v.to_string())
        });
    }
    None
}

pub(crate) async fn authenticate(
    State(s): State<ApiState>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(token) = bearer(&req) else {
        return ApiError::new(
            ErrorCode::Unauthenticated,
            "this API needs a user session: send Authorization: Bearer <token> (log in with POST /api/v1/sessions)",
        )
        .into_response();
    };
    match s.accounts.authenticate(&token).await {
        Ok(user) => {
            req.extensions_mut().insert(Actor(user));
            req.extensions_mut().insert(SessionToken(token));
            next.run(req).await
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// The token a request came with, for logging out.
#[derive(Clone)]
pub(crate) struct SessionToken(pub String);

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionToken(<redacted>)")
    }
}
