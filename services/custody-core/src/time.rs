//! Instants as microseconds since the Unix epoch: one integer that both SQLite and PostgreSQL store
//! exactly, and that sorts the same everywhere.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// An instant in UTC with microsecond precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    schema(value_type = String, format = DateTime)
)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_unix_micros(micros: i64) -> Self {
        Self(micros)
    }

    pub const fn unix_micros(self) -> i64 {
        self.0
    }

    /// Builds a timestamp from whole seconds and nanoseconds, as protobuf's `Timestamp` carries them.
    /// Returns `None` when the instant is outside what an `i64` of microseconds holds.
    pub fn from_unix_parts(seconds: i64, nanos: i32) -> Option<Self> {
        seconds
            .checked_mul(1_000_000)
            .and_then(|m| m.checked_add(i64::from(nanos) / 1_000))
            .map(Self)
    }

    /// Whole seconds and the nanoseconds within them.
    pub fn unix_parts(self) -> (i64, i32) {
        let secs = self.0.div_euclid(1_000_000);
        // rem_euclid is in 0..1_000_000, so times 1000 fits an i32.
        let nanos = (self.0.rem_euclid(1_000_000) * 1_000) as i32;
        (secs, nanos)
    }

    pub fn to_datetime(self) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(self.0).unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    pub fn from_datetime(dt: DateTime<Utc>) -> Self {
        Self(dt.timestamp_micros())
    }

    /// Parses RFC 3339 (`2026-11-22T08:30:00+08:00`).
    pub fn parse_rfc3339(s: &str) -> Result<Self, String> {
        DateTime::parse_from_rfc3339(s)
            .map(|d| Self::from_datetime(d.with_timezone(&Utc)))
            .map_err(|e| {
                format!(
                    "expected an RFC 3339 time such as 2026-11-22T08:30:00+08:00, got {s:?}: {e}"
                )
            })
    }

    /// This instant plus a duration, saturating at the end of time.
    pub fn saturating_add_micros(self, micros: i64) -> Self {
        Self(self.0.saturating_add(micros))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            &self
                .to_datetime()
                .to_rfc3339_opts(SecondsFormat::AutoSi, true),
        )
    }
}

impl From<Timestamp> for String {
    fn from(t: Timestamp) -> Self {
        t.to_string()
    }
}

impl TryFrom<String> for Timestamp {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse_rfc3339(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_with_china_offset_round_trips_through_utc() {
        let t = Timestamp::parse_rfc3339("2026-11-22T08:30:00.123456+08:00").unwrap();
        assert_eq!(t.to_string(), "2026-11-22T00:30:00.123456Z");
        assert_eq!(Timestamp::parse_rfc3339(&t.to_string()).unwrap(), t);
    }

    #[test]
    fn protobuf_parts_round_trip_including_before_the_epoch() {
        for micros in [0, 1, -1, 1_700_000_000_123_456, -86_400_000_001] {
            let t = Timestamp::from_unix_micros(micros);
            let (s, n) = t.unix_parts();
            assert!((0..1_000_000_000).contains(&n));
            assert_eq!(Timestamp::from_unix_parts(s, n), Some(t));
        }
    }

    #[test]
    fn a_garbled_time_is_refused_with_the_expected_form() {
        let err = Timestamp::parse_rfc3339("yesterday").unwrap_err();
        assert!(err.contains("RFC 3339"), "{err}");
    }
}
