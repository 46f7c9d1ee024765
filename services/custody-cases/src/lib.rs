//! People and cases: user accounts with roles and bearer sessions, the security audit log, the officer
//! registry and recorder check-outs (领用/归还) that attribute footage to officers, and cases (案件) with
//! their steps, evidence links, status flow and recording-coverage analysis (执法全过程记录), and approval
//! before copy: requests to download an original or export a case, decided by a second supervisor; and
//! retention: the worker that deletes the bytes of evidence whose time is over (leaving a tombstone and a
//! ledger event), and the legal holds and marks that keep evidence longer.
//!
//! Every operation takes the [`User`] making it and decides, through `custody_core::access`, whether it
//! is allowed; a refusal is written to the audit log before it is returned. This crate does its SQL
//! through `custody-store` and never imports a transport (axum, tonic, rumqttc).

mod accounts;
mod cases;
mod error;
pub mod export;
mod officers;
mod requests;
mod retention;

pub use accounts::{Accounts, AccountsConfig, NewUser, Session, User};
pub use cases::{Cases, CasesConfig, CoverageReport, LinkRequest, NewCase, NewStep, StepReport};
pub use error::CasesError;
pub use export::{ExportConfig, ExportSummary, Exporter};
pub use officers::Officers;
pub use requests::{RequestQuery, Requests, RequestsConfig};
pub use retention::{DueItem, ItemOutcome, Retention, RetentionConfig, RunReport};
// The records this crate's services return, so that transports need not depend on the store.
pub use custody_store::{
    AuditRecord, CaseCursor, CaseRecord, CheckoutRecord, ExplanationRecord, LinkRecord,
    OfficerRecord, RequestCursor, RequestRecord, StatusChange, StepPlace, StepRecord,
};

/// Now, as a Timestamp. The one place this crate reads the clock.
pub(crate) fn now() -> custody_core::Timestamp {
    custody_core::Timestamp::from_datetime(chrono_now())
}

fn chrono_now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

/// A required free-text field: trimmed, 1 to `max` characters, no control characters.
pub(crate) fn check_text(field: &str, s: &str, max: usize) -> Result<String, CasesError> {
    let t = s.trim();
    if t.is_empty() || t.chars().count() > max || t.chars().any(char::is_control) {
        return Err(CasesError::InvalidArgument(format!(
            "{field}: must be 1 to {max} characters without control characters, got {s:?}"
        )));
    }
    Ok(t.to_string())
}
