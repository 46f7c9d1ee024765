//! How long evidence is kept (《公安机关现场执法视音频记录工作规定》: at least six months; permanently when
//! used as evidence in a case, when it shows obstruction of duty, or covers a major incident), decided
//! from an item's facts and the configured classes. The longest applicable period wins, and nothing that
//! is on legal hold or linked to an open case is ever due.
//!
//! Pure: the caller supplies the facts and the present instant.

use crate::time::Timestamp;
use chrono::Months;
use std::collections::BTreeMap;
use std::fmt;

/// How long something is kept: a number of calendar months from capture, or for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Period {
    Months(u32),
    Forever,
}

impl Period {
    /// Parses `6`, `6m`, `24 months`, `forever` or `permanent`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim().to_ascii_lowercase();
        if matches!(t.as_str(), "forever" | "permanent") {
            return Ok(Self::Forever);
        }
        let digits = t
            .trim_end_matches("months")
            .trim_end_matches("month")
            .trim_end_matches('m')
            .trim();
        digits
            .parse::<u32>()
            .ok()
            .filter(|m| *m > 0)
            .map(Self::Months)
            .ok_or_else(|| {
                format!("retention period: expected a number of months such as \"6 months\", or \"forever\"; got {s:?}")
            })
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Months(m) => write!(f, "{m} months"),
            Self::Forever => f.write_str("forever"),
        }
    }
}

/// The configured retention classes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Everything, from capture (6 months).
    pub default: Period,
    /// Evidence linked to a case, even a closed one (forever).
    pub case_evidence: Period,
    /// Footage marked as showing obstruction of duty (妨碍执法) (forever).
    pub obstruction: Period,
    /// Named classes an item can be put in, e.g. `major_incident` → forever, `traffic` → 12 months.
    pub classes: BTreeMap<String, Period>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            default: Period::Months(6),
            case_evidence: Period::Forever,
            obstruction: Period::Forever,
            classes: BTreeMap::from([("major_incident".to_string(), Period::Forever)]),
        }
    }
}

/// What retention needs to know of one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub captured_at: Timestamp,
    /// Reason of a legal hold, when one is in place.
    pub legal_hold: Option<String>,
    /// Case numbers of open cases it is linked to.
    pub open_cases: Vec<String>,
    /// Whether it is (or was, in a closed case) linked to any case.
    pub in_a_case: bool,
    pub obstruction: bool,
    /// A named class it was put in.
    pub class: Option<String>,
}

impl Facts {
    /// An item captured at `at` with nothing else that keeps it.
    pub fn captured(at: Timestamp) -> Self {
        Self {
            captured_at: at,
            legal_hold: None,
            open_cases: Vec::new(),
            in_a_case: false,
            obstruction: false,
            class: None,
        }
    }
}

/// The decision for one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Must be kept at least until this instant, for this reason.
    KeepUntil(Timestamp, String),
    /// Must be kept for ever (or while the reason holds).
    KeepForever(String),
    /// Its time is over: the bytes may be deleted.
    Due { since: Timestamp, reason: String },
}

impl Decision {
    pub fn is_due(&self) -> bool {
        matches!(self, Self::Due { .. })
    }
}

/// Why a class name is not in the policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("retention class {0:?} is not configured (known: {1})")]
pub struct UnknownClass(pub String, pub String);

impl Policy {
    /// Checks that `class` names a configured class.
    pub fn check_class(&self, class: &str) -> Result<(), UnknownClass> {
        if self.classes.contains_key(class) {
            Ok(())
        } else {
            Err(UnknownClass(
                class.to_string(),
                self.classes.keys().cloned().collect::<Vec<_>>().join(", "),
            ))
        }
    }

    /// The end of `period` counted from `from`; `None` for ever (or past the calendar's end).
    fn end(from: Timestamp, period: Period) -> Option<Timestamp> {
        match period {
            Period::Forever => None,
            Period::Months(m) => from
                .to_datetime()
                .checked_add_months(Months::new(m))
                .map(Timestamp::from_datetime),
        }
    }

    /// Decides whether an item's bytes may be deleted at `now`. Holds and open cases keep it whatever the
    /// periods say; otherwise every applicable period is counted from capture and the longest wins.
    pub fn decide(&self, facts: &Facts, now: Timestamp) -> Decision {
        if let Some(reason) = &facts.legal_hold {
            return Decision::KeepForever(format!("on legal hold: {reason}"));
        }
        if !facts.open_cases.is_empty() {
            return Decision::KeepForever(format!(
                "linked to open case {}",
                facts.open_cases.join(", ")
            ));
        }
        let mut applicable = vec![(self.default, "the default class".to_string())];
        if facts.in_a_case {
            applicable.push((self.case_evidence, "evidence in a case".into()));
        }
        if facts.obstruction {
            applicable.push((self.obstruction, "shows obstruction of duty".into()));
        }
        if let Some(c) = &facts.class {
            // An unknown class (configuration changed since) keeps the item for ever rather than guess.
            let p = self.classes.get(c).copied().unwrap_or(Period::Forever);
            applicable.push((p, format!("class {c}")));
        }
        let (longest, why) = applicable
            .into_iter()
            .max_by_key(|(p, _)| *p)
            .unwrap_or((Period::Forever, String::new()));
        match Self::end(facts.captured_at, longest) {
            None => Decision::KeepForever(format!("{why}: kept {longest}")),
            Some(end) if end > now => {
                Decision::KeepUntil(end, format!("{why}: {longest} from capture"))
            }
            Some(end) => Decision::Due {
                since: end,
                reason: format!("{why}: {longest} from capture ended {end}"),
            },
        }
    }

    /// A capture instant before which every item due at `now` was captured: only items captured
    /// earlier need a decision. Every item is kept at least the default period (the longest applicable
    /// period wins). Adding calendar months clamps to the month's end (31 August + 6 months is
    /// 28 February, and 28 February + 6 months is 28 August), so `now - default` is not exact: the bound
    /// adds four days, more than any clamp, and the decision itself is exact. With a default of for ever,
    /// nothing is ever due.
    pub fn earliest_cutoff(&self, now: Timestamp) -> Option<Timestamp> {
        match self.default {
            Period::Forever => None,
            Period::Months(m) => now
                .to_datetime()
                .checked_sub_months(Months::new(m))
                .map(|t| t + chrono::Duration::days(4))
                .map(Timestamp::from_datetime),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap()
    }

    fn facts(captured: &str) -> Facts {
        Facts::captured(t(captured))
    }

    #[test]
    fn periods_parse_in_months_or_forever() {
        assert_eq!(Period::parse("6").unwrap(), Period::Months(6));
        assert_eq!(Period::parse("24 months").unwrap(), Period::Months(24));
        assert_eq!(Period::parse("1 month").unwrap(), Period::Months(1));
        assert_eq!(Period::parse("Permanent").unwrap(), Period::Forever);
        assert!(Period::parse("0").is_err());
        assert!(Period::parse("six").unwrap_err().contains("\"six\""));
        assert!(Period::Forever > Period::Months(1200));
    }

    #[test]
    fn ordinary_footage_is_due_six_calendar_months_after_capture() {
        let p = Policy::default();
        let f = facts("2026-01-31T10:00:00Z");
        // 31 January + 6 months is 31 July.
        assert!(!p.decide(&f, t("2026-07-31T09:59:59Z")).is_due());
        match p.decide(&f, t("2026-07-31T10:00:00Z")) {
            Decision::Due { since, .. } => assert_eq!(since, t("2026-07-31T10:00:00Z")),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn a_hold_or_an_open_case_keeps_footage_whatever_its_age() {
        let p = Policy::default();
        let late = t("2040-01-01T00:00:00Z");
        let mut f = facts("2026-01-01T00:00:00Z");
        f.legal_hold = Some("诉讼保全".into());
        assert!(matches!(p.decide(&f, late), Decision::KeepForever(r) if r.contains("诉讼保全")));
        let mut f = facts("2026-01-01T00:00:00Z");
        f.open_cases = vec!["C-1".into()];
        f.in_a_case = true;
        assert!(matches!(p.decide(&f, late), Decision::KeepForever(r) if r.contains("C-1")));
    }

    #[test]
    fn the_longest_applicable_period_wins() {
        let mut p = Policy {
            case_evidence: Period::Months(36),
            ..Default::default()
        };
        p.classes.insert("traffic".into(), Period::Months(12));
        let mut f = facts("2026-01-01T00:00:00Z");
        f.class = Some("traffic".into());
        assert!(matches!(
            p.decide(&f, t("2026-12-31T00:00:00Z")),
            Decision::KeepUntil(..)
        ));
        assert!(p.decide(&f, t("2027-01-01T00:00:00Z")).is_due());
        // Evidence of a closed case: 36 months beats 12.
        f.in_a_case = true;
        assert!(!p.decide(&f, t("2028-12-31T00:00:00Z")).is_due());
        assert!(p.decide(&f, t("2029-01-01T00:00:00Z")).is_due());
        // Obstruction is kept for ever by default.
        f.obstruction = true;
        assert!(matches!(
            p.decide(&f, t("2099-01-01T00:00:00Z")),
            Decision::KeepForever(_)
        ));
    }

    #[test]
    fn an_unknown_class_keeps_rather_than_guesses() {
        let p = Policy::default();
        let mut f = facts("2020-01-01T00:00:00Z");
        f.class = Some("renamed".into());
        assert!(matches!(
            p.decide(&f, t("2030-01-01T00:00:00Z")),
            Decision::KeepForever(_)
        ));
        assert!(
            p.check_class("renamed")
                .unwrap_err()
                .to_string()
                .contains("major_incident")
        );
    }

    #[test]
    fn the_cutoff_follows_the_default_period_that_every_item_has() {
        let mut p = Policy::default();
        p.classes.insert("short".into(), Period::Months(1));
        assert_eq!(
            p.earliest_cutoff(t("2026-12-01T00:00:00Z")),
            Some(t("2026-06-05T00:00:00Z"))
        );
        // Every item due at an instant was captured before the cut-off, also where adding months
        // clamps to the end of a shorter month, and exactly six months after capture.
        for now in [
            "2026-08-31T12:00:00Z",
            "2026-07-10T08:00:00Z",
            "2027-02-28T23:59:59Z",
        ] {
            let now = t(now);
            let cutoff = p.earliest_cutoff(now).unwrap();
            let mut at = t("2026-01-01T00:00:00Z");
            while at < now {
                if p.decide(&Facts::captured(at), now).is_due() {
                    assert!(
                        at < cutoff,
                        "captured {at} is due at {now} but not before {cutoff}"
                    );
                }
                at = at.saturating_add_micros(3_600_000_000);
            }
        }
        p.default = Period::Forever;
        assert_eq!(p.earliest_cutoff(t("2026-12-01T00:00:00Z")), None);
    }
}
