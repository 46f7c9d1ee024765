//! Access requests (approval before copy): a user's request to download an original or export a case,
//! and its one decision. A decision is a compare-and-set from `pending`, so two supervisors deciding at
//! once cannot both win; the database refuses any later change to a decided request, and any delete.

use crate::error::StoreError;
use crate::meta::{Metadata, corrupt, on_pool};
use crate::people::is_unique_violation;
use custody_core::access::Username;
use custody_core::request::{CopyKind, CopyTarget, RequestState};
use custody_core::{CaseId, EvidenceId, RequestId, Timestamp};

/// An access request as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    pub id: RequestId,
    /// What is asked for: an evidence item's original (download) or a case (export).
    pub target: CopyTarget,
    pub requester: Username,
    /// Why the copy is needed, in the requester's words.
    pub reason: String,
    pub state: RequestState,
    /// The supervisor who approved or refused it, or the requester who withdrew it.
    pub decided_by: Option<Username>,
    pub decided_at: Option<Timestamp>,
    pub decision_note: Option<String>,
    pub created_at: Timestamp,
    /// Until when an approval opens copies; set only on approval.
    pub expires_at: Option<Timestamp>,
}

impl RequestRecord {
    /// A new pending request.
    pub fn pending(target: CopyTarget, requester: Username, reason: String, at: Timestamp) -> Self {
        Self {
            id: RequestId::new(),
            target,
            requester,
            reason,
            state: RequestState::Pending,
            decided_by: None,
            decided_at: None,
            decision_note: None,
            created_at: at,
            expires_at: None,
        }
    }
}

/// How a pending request is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Allowed until `until`.
    Approve {
        until: Timestamp,
    },
    Refuse,
    /// Taken back by the requester.
    Withdraw,
}

impl Decision {
    pub fn state(self) -> RequestState {
        match self {
            Self::Approve { .. } => RequestState::Approved,
            Self::Refuse => RequestState::Refused,
            Self::Withdraw => RequestState::Withdrawn,
        }
    }
}

/// Which requests a listing returns. Every condition given must hold.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestFilter<'a> {
    /// Only the requests this user made.
    pub requester: Option<&'a Username>,
    pub state: Option<RequestState>,
    /// Only pending requests this user may decide: those somebody else made.
    pub awaiting: Option<&'a Username>,
}

/// Where a request listing continues: after this (created_at, id), newest first.
pub type RequestCursor = (Timestamp, RequestId);

#[derive(sqlx::FromRow)]
struct RequestRow {
    id: String,
    kind: String,
    evidence_id: Option<String>,
    case_id: Option<String>,
    requester: String,
    reason: String,
    state: String,
    decided_by: Option<String>,
    decided_at: Option<i64>,
    decision_note: Option<String>,
    created_at: i64,
    expires_at: Option<i64>,
}

impl RequestRow {
    fn into_domain(self) -> Result<RequestRecord, StoreError> {
        let c = corrupt("access_requests", &self.id);
        let kind = CopyKind::parse(&self.kind).map_err(&c)?;
        let target = match (kind, self.evidence_id.as_deref(), self.case_id.as_deref()) {
            (CopyKind::Download, Some(e), None) => {
                CopyTarget::Evidence(EvidenceId::parse(e).map_err(|e| c(e.to_string()))?)
            }
            (CopyKind::Export, None, Some(k)) => {
                CopyTarget::Case(CaseId::parse(k).map_err(|e| c(e.to_string()))?)
            }
            _ => {
                return Err(c(format!(
                    "a {kind} request must name exactly its {}",
                    match kind {
                        CopyKind::Download => "evidence item",
                        CopyKind::Export => "case",
                    }
                )));
            }
        };
        Ok(RequestRecord {
            id: RequestId::parse(&self.id).map_err(|e| c(e.to_string()))?,
            target,
            requester: Username::parse(self.requester).map_err(|e| c(e.to_string()))?,
            reason: self.reason,
            state: RequestState::parse(&self.state).map_err(&c)?,
            decided_by: self
                .decided_by
                .map(Username::parse)
                .transpose()
                .map_err(|e| c(e.to_string()))?,
            decided_at: self.decided_at.map(Timestamp::from_unix_micros),
            decision_note: self.decision_note,
            created_at: Timestamp::from_unix_micros(self.created_at),
            expires_at: self.expires_at.map(Timestamp::from_unix_micros),
        })
    }
}

macro_rules! request_columns {
    () => {
        "id, kind, evidence_id, case_id, requester, reason, state, decided_by, decided_at, \
         decision_note, created_at, expires_at"
    };
}

impl Metadata {
    /// Stores a new request. `NotFound` when its evidence item, case or requester does not exist;
    /// `AlreadyExists` when the id is taken.
    pub async fn insert_request(&self, r: &RequestRecord) -> Result<(), StoreError> {
        let sql = concat!(
            "INSERT INTO access_requests (",
            request_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        );
        on_pool!(self, p => sqlx::query(sql)
            .bind(r.id.to_string())
            .bind(r.target.kind().as_str())
            .bind(r.target.evidence_id().map(|e| e.to_string()))
            .bind(r.target.case_id().map(|c| c.to_string()))
            .bind(r.requester.as_str())
            .bind(&r.reason)
            .bind(r.state.as_str())
            .bind(r.decided_by.as_ref().map(Username::as_str))
            .bind(r.decided_at.map(Timestamp::unix_micros))
            .bind(r.decision_note.as_deref())
            .bind(r.created_at.unix_micros())
            .bind(r.expires_at.map(Timestamp::unix_micros))
            .execute(p)
            .await
            .map(|_| ()))
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::AlreadyExists(format!("access request {}", r.id))
            } else if matches!(&e, sqlx::Error::Database(d) if d.message().contains("FOREIGN KEY") || d.code().as_deref() == Some("23503")) {
                StoreError::NotFound(format!("{} or user {}", r.target, r.requester))
            } else {
                StoreError::db("storing an access request")(e)
            }
        })
    }

    pub async fn get_request(&self, id: RequestId) -> Result<Option<RequestRecord>, StoreError> {
        let sql = concat!(
            "SELECT ",
            request_columns!(),
            " FROM access_requests WHERE id = $1"
        );
        let row: Option<RequestRow> = on_pool!(self, p => sqlx::query_as(sql)
            .bind(id.to_string())
            .fetch_optional(p)
            .await)
        .map_err(StoreError::db("reading an access request"))?;
        row.map(RequestRow::into_domain).transpose()
    }

    /// Requests matching `filter`, newest first, `limit` at a time after `after`.
    pub async fn list_requests(
        &self,
        filter: &RequestFilter<'_>,
        after: Option<RequestCursor>,
        limit: u32,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        let sql = concat!(
            "SELECT ",
            request_columns!(),
            " FROM access_requests \
             WHERE (CAST($1 AS TEXT) IS NULL OR requester = $1) \
               AND (CAST($2 AS TEXT) IS NULL OR state = $2) \
               AND (CAST($3 AS TEXT) IS NULL OR (state = 'pending' AND requester <> $3)) \
               AND (CAST($4 AS BIGINT) IS NULL OR (created_at, id) < ($4, $5)) \
             ORDER BY created_at DESC, id DESC LIMIT $6"
        );
        let rows: Vec<RequestRow> = on_pool!(self, p => sqlx::query_as(sql)
            .bind(filter.requester.map(Username::as_str))
            .bind(filter.state.map(RequestState::as_str))
            .bind(filter.awaiting.map(Username::as_str))
            .bind(after.map(|(t, _)| t.unix_micros()))
            .bind(after.map(|(_, id)| id.to_string()).unwrap_or_default())
            .bind(i64::from(limit.max(1)))
            .fetch_all(p)
            .await)
        .map_err(StoreError::db("listing access requests"))?;
        rows.into_iter().map(RequestRow::into_domain).collect()
    }

    /// Closes a pending request: compare-and-set from `pending`, so of two decisions at once only one
    /// is kept. `NotFound` for an unknown id; `Conflict` (naming the state it is in) when it is no
    /// longer pending. Returns the request as decided.
    pub async fn decide_request(
        &self,
        id: RequestId,
        decision: Decision,
        by: &Username,
        at: Timestamp,
        note: Option<&str>,
    ) -> Result<RequestRecord, StoreError> {
        let until = match decision {
            Decision::Approve { until } => Some(until.unix_micros()),
            Decision::Refuse | Decision::Withdraw => None,
        };
        let n = on_pool!(self, p => sqlx::query(
            "UPDATE access_requests SET state = $2, decided_by = $3, decided_at = $4, \
             decision_note = $5, expires_at = $6 WHERE id = $1 AND state = 'pending'")
            .bind(id.to_string())
            .bind(decision.state().as_str())
            .bind(by.as_str())
            .bind(at.unix_micros())
            .bind(note)
            .bind(until)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))
        .map_err(StoreError::db("deciding an access request"))?;
        let current = self
            .get_request(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("access request {id}")))?;
        if n == 0 {
            return Err(StoreError::Conflict(format!(
                "access request {id} is already {}; a request is decided once",
                current.state
            )));
        }
        Ok(current)
    }

    /// The approved request of `user` for `target` that is live at `at` (approved, and `at` before
    /// its expiry), the one expiring last when there are several.
    pub async fn live_approval(
        &self,
        user: &Username,
        target: CopyTarget,
        at: Timestamp,
    ) -> Result<Option<RequestRecord>, StoreError> {
        let sql = concat!(
            "SELECT ",
            request_columns!(),
            " FROM access_requests \
             WHERE requester = $1 AND kind = $2 \
               AND (evidence_id = $3 OR case_id = $4) \
               AND state = 'approved' AND expires_at > $5 \
             ORDER BY expires_at DESC, id DESC LIMIT 1"
        );
        let row: Option<RequestRow> = on_pool!(self, p => sqlx::query_as(sql)
            .bind(user.as_str())
            .bind(target.kind().as_str())
            .bind(target.evidence_id().map(|e| e.to_string()))
            .bind(target.case_id().map(|c| c.to_string()))
            .bind(at.unix_micros())
            .fetch_optional(p)
            .await)
        .map_err(StoreError::db("looking up an approved access request"))?;
        row.map(RequestRow::into_domain).transpose()
    }
}
