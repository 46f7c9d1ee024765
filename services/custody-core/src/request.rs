//! Approval before copy (四眼原则): what a request for a copy of evidence asks for, the states it moves
//! through, and when an approval still opens the copy.
//!
//! Viewing evidence in the browser needs no request. Taking a copy out of the system does: downloading
//! an original (`download`, of one evidence item) or exporting a case (`export`, of one case). A
//! request starts `pending` and is decided once: `approved` or `refused` by a supervisor other than
//! the requester (the rule is [`crate::access::may_decide`]), or `withdrawn` by the requester. An
//! approval is valid until its `expires_at` and covers any number of copies by the requester until
//! then. Nothing here reads the clock: callers pass "now".

use crate::ids::{CaseId, EvidenceId};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::fmt;

/// What kind of copy a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum CopyKind {
    /// The original bytes of one evidence item (`GET /api/v1/evidence/{id}/content`).
    Download,
    /// An export package of one case.
    Export,
}

impl CopyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Download => "download",
            Self::Export => "export",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "download" => Ok(Self::Download),
            "export" => Ok(Self::Export),
            _ => Err(format!("kind: {s:?} is not one of download, export")),
        }
    }
}

impl fmt::Display for CopyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a request asks to copy. A download always names an evidence item and an export a case, so the
/// kind and its target cannot disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CopyTarget {
    /// Download the original of this evidence item.
    Evidence(EvidenceId),
    /// Export this case.
    Case(CaseId),
}

impl CopyTarget {
    pub fn kind(self) -> CopyKind {
        match self {
            Self::Evidence(_) => CopyKind::Download,
            Self::Case(_) => CopyKind::Export,
        }
    }

    pub fn evidence_id(self) -> Option<EvidenceId> {
        match self {
            Self::Evidence(id) => Some(id),
            Self::Case(_) => None,
        }
    }

    pub fn case_id(self) -> Option<CaseId> {
        match self {
            Self::Case(id) => Some(id),
            Self::Evidence(_) => None,
        }
    }

    /// How the target is named in the audit log: `evidence:<id>` or `case:<id>`.
    pub fn label(self) -> String {
        match self {
            Self::Evidence(id) => format!("evidence:{id}"),
            Self::Case(id) => format!("case:{id}"),
        }
    }
}

impl fmt::Display for CopyTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Evidence(id) => write!(f, "evidence {id}"),
            Self::Case(id) => write!(f, "case {id}"),
        }
    }
}

/// Where a request stands. Only `pending` ever changes, and only once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum RequestState {
    /// Waiting for a supervisor.
    Pending,
    /// A supervisor other than the requester allowed it, until the request's `expires_at`.
    Approved,
    /// A supervisor other than the requester declined it.
    Refused,
    /// The requester took it back before it was decided.
    Withdrawn,
}

impl RequestState {
    pub const ALL: [RequestState; 4] = [
        Self::Pending,
        Self::Approved,
        Self::Refused,
        Self::Withdrawn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Refused => "refused",
            Self::Withdrawn => "withdrawn",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("state: {s:?} is not one of pending, approved, refused, withdrawn")
            })
    }
}

impl fmt::Display for RequestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a request in `state` that expires at `expires_at` opens a copy at `now`: approved and not
/// yet expired (the expiry instant itself is already too late).
pub fn opens_copy(state: RequestState, expires_at: Option<Timestamp>, now: Timestamp) -> bool {
    state == RequestState::Approved && expires_at.is_some_and(|e| now < e)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_states_round_trip_through_their_names() {
        for k in [CopyKind::Download, CopyKind::Export] {
            assert_eq!(CopyKind::parse(k.as_str()).unwrap(), k);
        }
        for s in RequestState::ALL {
            assert_eq!(RequestState::parse(s.as_str()).unwrap(), s);
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        assert!(
            CopyKind::parse("copy")
                .unwrap_err()
                .contains("not one of download, export")
        );
        assert!(
            RequestState::parse("done")
                .unwrap_err()
                .contains("\"done\"")
        );
    }

    #[test]
    fn a_download_names_evidence_and_an_export_a_case() {
        let e = EvidenceId::new();
        let c = CaseId::new();
        assert_eq!(CopyTarget::Evidence(e).kind(), CopyKind::Download);
        assert_eq!(CopyTarget::Evidence(e).evidence_id(), Some(e));
        assert_eq!(CopyTarget::Evidence(e).case_id(), None);
        assert_eq!(CopyTarget::Case(c).kind(), CopyKind::Export);
        assert_eq!(CopyTarget::Case(c).label(), format!("case:{c}"));
    }

    #[test]
    fn only_an_approval_that_has_not_expired_opens_a_copy() {
        let t = Timestamp::from_unix_micros(1_000);
        let later = Some(Timestamp::from_unix_micros(2_000));
        assert!(opens_copy(RequestState::Approved, later, t));
        assert!(!opens_copy(
            RequestState::Approved,
            Some(Timestamp::from_unix_micros(1_000)),
            t
        ));
        assert!(!opens_copy(RequestState::Approved, None, t));
        for s in [
            RequestState::Pending,
            RequestState::Refused,
            RequestState::Withdrawn,
        ] {
            assert!(!opens_copy(s, later, t), "{s}");
        }
    }
}
