//! Cases (案件): the case number, the procedure a case follows, and the statuses it moves through from
//! acceptance (受案) to closing (结案).
//!
//! A case under the general procedure (一般程序) is filed, investigated, reviewed and decided; a case
//! under the simple procedure (简易程序) is decided on the spot, so it skips filing and review. The
//! transition rules live here so that every transport refuses the same moves with the same message, and
//! so that the step which needs a recording-coverage check ([`requires_gap_check`]) is decided in one
//! place.

use crate::ids::IdError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

// ---------------------------------------------------------------------------------------------------
// Case number
// ---------------------------------------------------------------------------------------------------

/// A case number (案件编号) as the issuing unit writes it, such as `深福城执罚〔2026〕123号` or
/// `2026-0042`.
///
/// It is trimmed, 1 to [`CaseNo::MAX_CHARS`] characters long, and free of control characters and of
/// `/ ? # %`, because it appears as one segment of URL paths and must not be able to split or escape
/// that segment.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CaseNo(String);

impl CaseNo {
    /// Case numbers are counted in characters, not bytes, because most of them are Chinese.
    pub const MAX_CHARS: usize = 64;

    /// Parses a case number, trimming surrounding whitespace first.
    pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        let err = |reason: String| IdError {
            field: "case_no",
            reason,
        };
        let trimmed = s.trim();
        if trimmed.is_empty() {
            return Err(err("must not be empty".into()));
        }
        let chars = trimmed.chars().count();
        if chars > Self::MAX_CHARS {
            return Err(err(format!(
                "must be at most {} characters, got {chars}",
                Self::MAX_CHARS
            )));
        }
        if let Some(c) = trimmed.chars().find(|c| c.is_control()) {
            return Err(err(format!(
                "must not contain control characters, found {c:?} in {trimmed:?}"
            )));
        }
        if let Some(c) = trimmed.chars().find(|c| matches!(c, '/' | '?' | '#' | '%')) {
            return Err(err(format!(
                "must not contain / ? # or % (it is used in URL paths), found {c:?} in {trimmed:?}"
            )));
        }
        // A path segment of "." or ".." is removed or climbs a level when URLs are normalised, so a
        // case number spelled that way would address some other resource.
        if trimmed == "." || trimmed == ".." {
            return Err(err(format!(
                "must not be a relative path segment, got {trimmed:?}"
            )));
        }
        // Only reallocate when trimming removed something.
        let owned = if trimmed.len() == s.len() {
            s
        } else {
            trimmed.to_owned()
        };
        Ok(Self(owned))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CaseNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for CaseNo {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::parse(s)
    }
}

impl TryFrom<String> for CaseNo {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(s)
    }
}

impl From<CaseNo> for String {
    fn from(c: CaseNo) -> String {
        c.0
    }
}

// ---------------------------------------------------------------------------------------------------
// Procedure
// ---------------------------------------------------------------------------------------------------

/// The administrative procedure a case follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Procedure {
    /// 一般程序: filed, investigated, reviewed, then decided.
    General,
    /// 简易程序: decided on the spot, without filing or review.
    Simple,
}

impl Procedure {
    pub const ALL: [Procedure; 2] = [Self::General, Self::Simple];

    /// The name used in the database and in APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::General => "general",
            Self::Simple => "simple",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("procedure: expected general or simple, got {s:?}"))
    }

    /// The name officers read on screens and forms.
    pub fn label_zh(self) -> &'static str {
        match self {
            Self::General => "一般程序",
            Self::Simple => "简易程序",
        }
    }

    /// The statuses a case of this procedure passes through, in order.
    pub fn path(self) -> &'static [CaseStatus] {
        use CaseStatus::*;
        match self {
            Self::General => &[
                Accepted,
                Filed,
                Investigating,
                Review,
                Decided,
                Serving,
                Closed,
            ],
            Self::Simple => &[Accepted, Investigating, Decided, Serving, Closed],
        }
    }
}

impl fmt::Display for Procedure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Procedure {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

// ---------------------------------------------------------------------------------------------------
// Status
// ---------------------------------------------------------------------------------------------------

/// Where a case stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum CaseStatus {
    /// 受案: the matter has been received.
    Accepted,
    /// 立案: the case has been formally filed (general procedure only).
    Filed,
    /// 调查取证: evidence is being gathered.
    Investigating,
    /// 审核: a legal reviewer checks the evidence (general procedure only).
    Review,
    /// 决定: the penalty or other decision has been made.
    Decided,
    /// 送达执行: the decision is served and enforced.
    Serving,
    /// 结案: the case is closed.
    Closed,
}

impl CaseStatus {
    pub const ALL: [CaseStatus; 7] = [
        Self::Accepted,
        Self::Filed,
        Self::Investigating,
        Self::Review,
        Self::Decided,
        Self::Serving,
        Self::Closed,
    ];

    /// The name used in the database and in APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Filed => "filed",
            Self::Investigating => "investigating",
            Self::Review => "review",
            Self::Decided => "decided",
            Self::Serving => "serving",
            Self::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "case_status: expected one of accepted, filed, investigating, review, decided, \
                 serving, closed, got {s:?}"
                )
            })
    }

    /// The name officers read on screens and forms.
    pub fn label_zh(self) -> &'static str {
        match self {
            Self::Accepted => "受案",
            Self::Filed => "立案",
            Self::Investigating => "调查取证",
            Self::Review => "审核",
            Self::Decided => "决定",
            Self::Serving => "送达执行",
            Self::Closed => "结案",
        }
    }

    /// Whether the case is still being worked on: every status but [`CaseStatus::Closed`].
    pub fn is_open(self) -> bool {
        self != Self::Closed
    }
}

impl fmt::Display for CaseStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CaseStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

// ---------------------------------------------------------------------------------------------------
// Transitions
// ---------------------------------------------------------------------------------------------------

/// A status change the procedure does not allow. The message names both statuses, in English and
/// Chinese, and lists where the case may go instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "status: a {procedure} procedure case cannot move from {from} ({from_zh}) to {to} ({to_zh}); \
     from {from} it may move {allowed_list}",
    from_zh = .from.label_zh(),
    to_zh = .to.label_zh(),
    allowed_list = describe_allowed(.allowed),
)]
pub struct TransitionError {
    pub procedure: Procedure,
    pub from: CaseStatus,
    pub to: CaseStatus,
    /// What [`next_statuses`] gives for `procedure` and `from`.
    pub allowed: Vec<CaseStatus>,
}

fn describe_allowed(allowed: &[CaseStatus]) -> String {
    if allowed.is_empty() {
        return "nowhere".into();
    }
    let names: Vec<String> = allowed
        .iter()
        .map(|s| format!("{s} ({})", s.label_zh()))
        .collect();
    format!("only to {}", names.join(" or "))
}

/// The statuses a case may move to from `from`, in the order of [`CaseStatus::ALL`].
///
/// A case moves forward one step along [`Procedure::path`]. Under the general procedure a reviewer may
/// also send a case back from review to investigation, to gather more evidence. A closed case moves
/// nowhere, and neither does a simple-procedure case in a status that procedure never uses.
pub fn next_statuses(procedure: Procedure, from: CaseStatus) -> Vec<CaseStatus> {
    let path = procedure.path();
    let mut next: Vec<CaseStatus> = path
        .iter()
        .position(|&s| s == from)
        .and_then(|i| path.get(i + 1))
        .copied()
        .into_iter()
        .collect();
    if procedure == Procedure::General && from == CaseStatus::Review {
        next.push(CaseStatus::Investigating);
    }
    next.sort();
    next
}

/// Checks that a case of `procedure` may move from `from` to `to`; see [`next_statuses`] for the rules.
/// Staying in the same status is not a transition and is refused too.
pub fn check_transition(
    procedure: Procedure,
    from: CaseStatus,
    to: CaseStatus,
) -> Result<(), TransitionError> {
    let allowed = next_statuses(procedure, from);
    if allowed.contains(&to) {
        Ok(())
    } else {
        Err(TransitionError {
            procedure,
            from,
            to,
            allowed,
        })
    }
}

/// Whether entering `to` requires that no enforcement step needing continuous recording has
/// unexplained gaps in its coverage (see [`crate::coverage`]).
///
/// The check sits where the evidence is judged: at review under the general procedure, and at the
/// decision under the simple procedure, which has no review.
pub fn requires_gap_check(procedure: Procedure, to: CaseStatus) -> bool {
    matches!(
        (procedure, to),
        (Procedure::General, CaseStatus::Review) | (Procedure::Simple, CaseStatus::Decided)
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::CaseStatus::*;
    use super::*;

    #[test]
    fn a_chinese_penalty_decision_number_is_accepted_and_trimmed() {
        let c = CaseNo::parse("  深福城执罚〔2026〕123号 \n").unwrap();
        assert_eq!(c.as_str(), "深福城执罚〔2026〕123号");
        assert_eq!(CaseNo::parse("2026-0042").unwrap().to_string(), "2026-0042");
    }

    #[test]
    fn a_case_number_is_limited_in_characters_not_bytes() {
        // 64 Chinese characters are 192 bytes of UTF-8, and still allowed.
        assert!(CaseNo::parse("案".repeat(64)).is_ok());
        let e = CaseNo::parse("案".repeat(65)).unwrap_err();
        assert_eq!(e.field, "case_no");
        assert!(
            e.to_string()
                .starts_with("case_no: must be at most 64 characters, got 65"),
            "{e}"
        );
    }

    #[test]
    fn an_empty_or_blank_case_number_is_refused() {
        for s in ["", "   ", "\t\n"] {
            let e = CaseNo::parse(s).unwrap_err();
            assert_eq!(e.to_string(), "case_no: must not be empty");
        }
    }

    #[test]
    fn characters_that_would_break_a_url_path_are_refused() {
        for (s, c) in [
            ("2026/42", "'/'"),
            ("42?x", "'?'"),
            ("42#1", "'#'"),
            ("42%2F", "'%'"),
        ] {
            let e = CaseNo::parse(s).unwrap_err();
            assert_eq!(e.field, "case_no");
            assert!(e.to_string().contains(c), "{e}");
        }
        assert!(CaseNo::parse("..").is_err());
        assert!(CaseNo::parse(".").is_err());
        assert!(CaseNo::parse("2026.42").is_ok());
    }

    #[test]
    fn control_characters_inside_a_case_number_are_refused() {
        let e = CaseNo::parse("2026\u{0}42").unwrap_err();
        assert!(e.to_string().contains("control characters"), "{e}");
        assert!(CaseNo::parse("2026\n42").is_err());
    }

    #[test]
    fn a_case_number_is_a_json_string_checked_on_the_way_in() {
        let c = CaseNo::parse("2026-0042").unwrap();
        assert_eq!(serde_json::to_string(&c).unwrap(), r#""2026-0042""#);
        assert_eq!(
            serde_json::from_str::<CaseNo>(r#"" 2026-0042 ""#).unwrap(),
            c
        );
        let e = serde_json::from_str::<CaseNo>(r#""a/b""#).unwrap_err();
        assert!(e.to_string().contains("case_no"), "{e}");
    }

    #[test]
    fn procedures_round_trip_through_their_names_and_serde() {
        for p in Procedure::ALL {
            assert_eq!(Procedure::parse(p.as_str()).unwrap(), p);
            assert_eq!(
                serde_json::to_string(&p).unwrap(),
                format!("\"{}\"", p.as_str())
            );
        }
        assert_eq!(Procedure::General.label_zh(), "一般程序");
        assert_eq!(Procedure::Simple.label_zh(), "简易程序");
        let e = Procedure::parse("summary").unwrap_err();
        assert_eq!(e, r#"procedure: expected general or simple, got "summary""#);
    }

    #[test]
    fn statuses_round_trip_through_their_names_and_serde() {
        for s in CaseStatus::ALL {
            assert_eq!(CaseStatus::parse(s.as_str()).unwrap(), s);
            assert_eq!(s.as_str().parse::<CaseStatus>().unwrap(), s);
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(serde_json::from_str::<CaseStatus>(&json).unwrap(), s);
        }
        let e = CaseStatus::parse("Closed").unwrap_err();
        assert!(
            e.starts_with("case_status: expected one of accepted,"),
            "{e}"
        );
        assert!(e.contains("closed"), "{e}");
        assert_eq!(Serving.label_zh(), "送达执行");
    }

    #[test]
    fn only_a_closed_case_is_not_open() {
        for s in CaseStatus::ALL {
            assert_eq!(s.is_open(), s != Closed);
        }
    }

    #[test]
    fn a_general_procedure_case_moves_forward_one_step_at_a_time() {
        let path = Procedure::General.path();
        for pair in path.windows(2) {
            check_transition(Procedure::General, pair[0], pair[1]).unwrap();
        }
    }

    #[test]
    fn a_reviewer_may_return_a_general_case_for_more_evidence() {
        check_transition(Procedure::General, Review, Investigating).unwrap();
        assert_eq!(
            next_statuses(Procedure::General, Review),
            vec![Investigating, Decided]
        );
    }

    #[test]
    fn a_simple_procedure_case_skips_filing_and_review() {
        let p = Procedure::Simple;
        check_transition(p, Accepted, Investigating).unwrap();
        check_transition(p, Investigating, Decided).unwrap();
        check_transition(p, Decided, Serving).unwrap();
        check_transition(p, Serving, Closed).unwrap();
        assert!(check_transition(p, Accepted, Filed).is_err());
        assert!(check_transition(p, Investigating, Review).is_err());
        assert!(check_transition(p, Review, Investigating).is_err());
        assert!(next_statuses(p, Filed).is_empty());
    }

    #[test]
    fn a_general_case_may_not_skip_filing_or_review() {
        assert!(check_transition(Procedure::General, Accepted, Investigating).is_err());
        assert!(check_transition(Procedure::General, Investigating, Decided).is_err());
    }

    #[test]
    fn every_transition_not_in_the_table_is_refused() {
        // The complete table, written out once more by hand so that a change to the rules shows here.
        let general = [
            (Accepted, Filed),
            (Filed, Investigating),
            (Investigating, Review),
            (Review, Investigating),
            (Review, Decided),
            (Decided, Serving),
            (Serving, Closed),
        ];
        let simple = [
            (Accepted, Investigating),
            (Investigating, Decided),
            (Decided, Serving),
            (Serving, Closed),
        ];
        for (p, table) in [
            (Procedure::General, &general[..]),
            (Procedure::Simple, &simple[..]),
        ] {
            for from in CaseStatus::ALL {
                for to in CaseStatus::ALL {
                    let want = table.contains(&(from, to));
                    assert_eq!(
                        check_transition(p, from, to).is_ok(),
                        want,
                        "{p}: {from} -> {to}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_refused_transition_names_both_statuses_and_what_is_allowed() {
        let e = check_transition(Procedure::General, Investigating, Closed).unwrap_err();
        assert_eq!(e.allowed, vec![Review]);
        assert_eq!(
            e.to_string(),
            "status: a general procedure case cannot move from investigating (调查取证) to closed \
             (结案); from investigating it may move only to review (审核)"
        );
        let e = check_transition(Procedure::General, Review, Review).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("only to investigating (调查取证) or decided (决定)"),
            "{e}"
        );
    }

    #[test]
    fn a_closed_case_cannot_move_anywhere() {
        for p in Procedure::ALL {
            for to in CaseStatus::ALL {
                let e = check_transition(p, Closed, to).unwrap_err();
                assert!(e.allowed.is_empty());
                assert!(
                    e.to_string().ends_with("from closed it may move nowhere"),
                    "{e}"
                );
            }
        }
    }

    #[test]
    fn gaps_are_checked_on_entering_review_or_a_simple_decision() {
        for p in Procedure::ALL {
            for to in CaseStatus::ALL {
                let want = matches!(
                    (p, to),
                    (Procedure::General, Review) | (Procedure::Simple, Decided)
                );
                assert_eq!(requires_gap_check(p, to), want, "{p} -> {to}");
            }
        }
    }
}
