//! Where authentication goes. Every `/api/v1` request passes through [`authenticate`], which puts the
//! [`Actor`] making the request into the request's extensions; handlers read it from there.
//!
//! Until users and roles exist (bearer tokens, station and device credentials), every caller is
//! [`Actor::Anonymous`]. The user model replaces this function and nothing else: handlers already take
//! the actor, and health, readiness and metrics sit outside this layer on purpose.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

/// Who is making a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// No credentials are checked yet.
    Anonymous,
}

impl Actor {
    /// How the actor is named in ledger events.
    pub fn label(&self) -> String {
        match self {
            Self::Anonymous => "anonymous".to_string(),
        }
    }
}

pub(crate) async fn authenticate(mut req: Request, next: Next) -> Response {
    req.extensions_mut().insert(Actor::Anonymous);
    next.run(req).await
}
