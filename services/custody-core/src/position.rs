//! Positions (GPS fixes) of recorders, the rules a fix must pass before it is stored, and the wire
//! formats devices send them in. Positions are stored in WGS-84, as GNSS gives them; conversion to
//! GCJ-02 happens only for display (`crate::geo`).
//!
//! A device publishes to `custody/v1/dev/{device}/pos` either a protobuf `custody.v1.PositionBatch`
//! (decoded at the transport edge) or JSON, which is parsed here so that every transport reads it the
//! same way: one fix or an array of fixes,
//!
//! ```json
//! {"ts": 1795400000123, "lat": 30.2741, "lon": 120.1551, "alt": 12.5, "speed": 1.4, "course": 87,
//!  "acc": 5, "sos": false, "batt": 81}
//! ```
//!
//! `ts` is milliseconds since the Unix epoch (UTC); `lat`/`lon` are WGS-84 degrees; `speed` is m/s,
//! `course` degrees from north, `acc` the horizontal accuracy in metres, `batt` percent. Only `ts`,
//! `lat` and `lon` are required. OwnTracks JSON (`owntracks/{user}/{device}`) is parsed by
//! [`parse_owntracks`].

use crate::ids::DeviceId;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::fmt;

/// One fix of one recorder, in WGS-84.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Position {
    pub device: DeviceId,
    /// When the fix was taken (device clock, UTC).
    pub time: Timestamp,
    /// Latitude in degrees, WGS-84.
    pub lat: f64,
    /// Longitude in degrees, WGS-84.
    pub lon: f64,
    /// Altitude in metres.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alt_m: Option<f32>,
    /// Ground speed in m/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_mps: Option<f32>,
    /// Course over ground in degrees from true north, 0–360.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub course_deg: Option<f32>,
    /// Horizontal accuracy in metres.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy_m: Option<f32>,
    /// The recorder's SOS key was pressed when this fix was taken.
    #[serde(default)]
    pub sos: bool,
    /// Battery level in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery_pct: Option<u8>,
}

/// Why a fix was not stored. Each reason is counted separately (`as_str` is the metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reject {
    /// Latitude or longitude is NaN or infinite.
    NotFinite,
    /// Latitude outside −90..=90.
    LatOutOfRange,
    /// Longitude outside −180..=180.
    LonOutOfRange,
    /// Exactly 0,0: what many GPS chips send before they have a fix.
    NullIsland,
    /// The fix time is further in the future than allowed.
    FutureTime,
    /// The fix is older than positions are kept.
    TooOld,
    /// Reaching it from the device's previous fix needs more than the allowed speed.
    TooFast,
    /// A speed, course, accuracy or altitude that cannot be (negative speed, course above 360, ...).
    BadField,
}

impl Reject {
    /// Every reason, for registering counters.
    pub const ALL: [Reject; 8] = [
        Reject::NotFinite,
        Reject::LatOutOfRange,
        Reject::LonOutOfRange,
        Reject::NullIsland,
        Reject::FutureTime,
        Reject::TooOld,
        Reject::TooFast,
        Reject::BadField,
    ];

    /// A stable snake_case name: the metric label and the `reason` in logs and acks.
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::NotFinite => "not_finite",
            Reject::LatOutOfRange => "lat_out_of_range",
            Reject::LonOutOfRange => "lon_out_of_range",
            Reject::NullIsland => "null_island",
            Reject::FutureTime => "future_time",
            Reject::TooOld => "too_old",
            Reject::TooFast => "too_fast",
            Reject::BadField => "bad_field",
        }
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The limits a fix is checked against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// How far ahead of the server clock a fix time may be, in microseconds (device clocks drift).
    pub max_future_micros: i64,
    /// How far behind the server clock a fix may be, in microseconds (positions older than the
    /// retention would be dropped at once). `None`: no limit.
    pub max_age_micros: Option<i64>,
    /// The fastest a recorder can move between two fixes, in m/s (an officer in a car: ~70 m/s).
    pub max_speed_mps: f64,
    /// Jumps shorter than this are never "too fast", whatever the time between them: GPS noise of a
    /// standing officer with two fixes in the same second is not a teleport.
    pub speed_slack_m: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_future_micros: 5 * 60 * 1_000_000,
            max_age_micros: None,
            max_speed_mps: 70.0,
            speed_slack_m: 100.0,
        }
    }
}

impl Limits {
    /// Checks one fix on its own: coordinates and fields in range, time not too far ahead or behind
    /// `now`.
    pub fn check(&self, p: &Position, now: Timestamp) -> Result<(), Reject> {
        if !p.lat.is_finite() || !p.lon.is_finite() {
            return Err(Reject::NotFinite);
        }
        if !(-90.0..=90.0).contains(&p.lat) {
            return Err(Reject::LatOutOfRange);
        }
        if !(-180.0..=180.0).contains(&p.lon) {
            return Err(Reject::LonOutOfRange);
        }
        if p.lat == 0.0 && p.lon == 0.0 {
            return Err(Reject::NullIsland);
        }
        let bad = |v: Option<f32>, ok: fn(f32) -> bool| v.is_some_and(|v| !v.is_finite() || !ok(v));
        if bad(p.speed_mps, |v| v >= 0.0)
            || bad(p.course_deg, |v| (0.0..=360.0).contains(&v))
            || bad(p.accuracy_m, |v| v >= 0.0)
            || bad(p.alt_m, |v| (-1000.0..=20_000.0).contains(&v))
            || p.battery_pct.is_some_and(|b| b > 100)
        {
            return Err(Reject::BadField);
        }
        let ahead = p.time.unix_micros().saturating_sub(now.unix_micros());
        if ahead > self.max_future_micros {
            return Err(Reject::FutureTime);
        }
        if let Some(max_age) = self.max_age_micros
            && -ahead > max_age
        {
            return Err(Reject::TooOld);
        }
        Ok(())
    }

    /// Checks the move from the device's previous accepted fix `prev` to `p`. Only a fix newer than
    /// `prev` is checked: older ones (a device sending what it buffered while offline) are taken as
    /// they come.
    pub fn check_move(&self, prev: &Position, p: &Position) -> Result<(), Reject> {
        let dt = p.time.unix_micros() - prev.time.unix_micros();
        if dt <= 0 {
            return Ok(());
        }
        let d = crate::geo::haversine_m(prev.lat, prev.lon, p.lat, p.lon);
        if d > self.speed_slack_m && d / (dt as f64 / 1e6) > self.max_speed_mps {
            return Err(Reject::TooFast);
        }
        Ok(())
    }
}

/// One fix as JSON on the wire (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonFix {
    /// Milliseconds since the Unix epoch, UTC.
    pub ts: i64,
    pub lat: f64,
    pub lon: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alt: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub course: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acc: Option<f32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sos: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batt: Option<u8>,
}

impl JsonFix {
    pub fn into_position(self, device: DeviceId) -> Position {
        Position {
            device,
            time: Timestamp::from_unix_micros(self.ts.saturating_mul(1000)),
            lat: self.lat,
            lon: self.lon,
            alt_m: self.alt,
            speed_mps: self.speed,
            course_deg: self.course,
            accuracy_m: self.acc,
            sos: self.sos,
            battery_pct: self.batt,
        }
    }

    pub fn from_position(p: &Position) -> Self {
        Self {
            ts: p.time.unix_micros().div_euclid(1000),
            lat: p.lat,
            lon: p.lon,
            alt: p.alt_m,
            speed: p.speed_mps,
            course: p.course_deg,
            acc: p.accuracy_m,
            sos: p.sos,
            batt: p.battery_pct,
        }
    }
}

/// Whether a payload is JSON (its first non-blank byte opens an object or array) rather than protobuf.
/// A protobuf `PositionBatch` never starts with `{` or `[`: as a tag, those bytes would be a group
/// start of field 15 and a varint of field 11, neither of which the message has.
pub fn looks_like_json(payload: &[u8]) -> bool {
    matches!(
        payload.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'{' | b'[')
    )
}

/// Parses the JSON position payload of `device`: one fix or an array of fixes. The error names what
/// was wrong (it is logged and counted, never fatal).
pub fn parse_json(device: &DeviceId, payload: &[u8]) -> Result<Vec<Position>, String> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<JsonFix>),
        One(JsonFix),
    }
    // Parse strictly once for the error message: untagged enums swallow the field-level reason.
    let v: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| format!("position JSON: {e}"))?;
    let fixes = if v.is_array() {
        serde_json::from_value::<Vec<JsonFix>>(v).map(OneOrMany::Many)
    } else {
        serde_json::from_value::<JsonFix>(v).map(OneOrMany::One)
    }
    .map_err(|e| format!("position JSON: {e}"))?;
    Ok(match fixes {
        OneOrMany::Many(v) => v
            .into_iter()
            .map(|f| f.into_position(device.clone()))
            .collect(),
        OneOrMany::One(f) => vec![f.into_position(device.clone())],
    })
}

/// What an OwnTracks message turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum OwnTracks {
    /// `_type: "location"`.
    Location(Position),
    /// Any other `_type` (waypoint, transition, lwt, card...): not a position, ignored.
    Other(String),
}

/// Parses an OwnTracks JSON message (`owntracks/{user}/{device}`): `_type: "location"` with `lat`,
/// `lon`, `tst` (epoch seconds) required and `acc`, `alt`, `vel` (km/h), `cog`, `batt` optional.
pub fn parse_owntracks(device: &DeviceId, payload: &[u8]) -> Result<OwnTracks, String> {
    #[derive(Deserialize)]
    struct Msg {
        #[serde(rename = "_type")]
        kind: String,
        lat: Option<f64>,
        lon: Option<f64>,
        tst: Option<i64>,
        acc: Option<f32>,
        alt: Option<f32>,
        vel: Option<f32>,
        cog: Option<f32>,
        batt: Option<u8>,
    }
    let m: Msg = serde_json::from_slice(payload).map_err(|e| format!("OwnTracks JSON: {e}"))?;
    if m.kind != "location" {
        return Ok(OwnTracks::Other(m.kind));
    }
    let need = |v: Option<f64>, name: &str| {
        v.ok_or_else(|| format!("OwnTracks location: missing field `{name}`"))
    };
    let tst = m
        .tst
        .ok_or_else(|| "OwnTracks location: missing field `tst`".to_string())?;
    Ok(OwnTracks::Location(Position {
        device: device.clone(),
        time: Timestamp::from_unix_micros(tst.saturating_mul(1_000_000)),
        lat: need(m.lat, "lat")?,
        lon: need(m.lon, "lon")?,
        alt_m: m.alt,
        speed_mps: m.vel.map(|kmh| kmh / 3.6),
        course_deg: m.cog,
        accuracy_m: m.acc,
        sos: false,
        battery_pct: m.batt,
    }))
}

/// An alarm a device raises on `custody/v1/dev/{device}/alarm`, as JSON:
/// `{"ts": <ms>, "kind": "sos", "lat": .., "lon": .., "note": ".."}`; `kind` defaults to `sos`, the
/// location is optional (the server then uses the device's last known position).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmMessage {
    pub ts: i64,
    #[serde(default = "AlarmMessage::sos")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lat: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lon: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl AlarmMessage {
    fn sos() -> String {
        "sos".into()
    }

    /// Parses and checks an alarm payload: `kind` is a short snake_case word, the location (if any) is
    /// in range.
    pub fn parse(payload: &[u8]) -> Result<Self, String> {
        let m: Self = serde_json::from_slice(payload).map_err(|e| format!("alarm JSON: {e}"))?;
        if m.kind.is_empty()
            || m.kind.len() > 32
            || !m
                .kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit())
        {
            return Err(format!(
                "alarm JSON: kind must be a short snake_case word such as \"sos\", got {:?}",
                m.kind
            ));
        }
        match (m.lat, m.lon) {
            (None, None) => {}
            (Some(lat), Some(lon))
                if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon) => {}
            _ => {
                return Err(
                    "alarm JSON: lat and lon must both be given, in range, or neither".into(),
                );
            }
        }
        if m.note.as_ref().is_some_and(|n| n.len() > 1000) {
            return Err("alarm JSON: note is longer than 1000 bytes".into());
        }
        Ok(m)
    }

    pub fn time(&self) -> Timestamp {
        Timestamp::from_unix_micros(self.ts.saturating_mul(1000))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn dev() -> DeviceId {
        DeviceId::parse("D1").unwrap()
    }

    fn fix(t_s: i64, lat: f64, lon: f64) -> Position {
        Position {
            device: dev(),
            time: Timestamp::from_unix_micros(t_s * 1_000_000),
            lat,
            lon,
            alt_m: None,
            speed_mps: None,
            course_deg: None,
            accuracy_m: None,
            sos: false,
            battery_pct: None,
        }
    }

    #[test]
    fn impossible_fixes_are_rejected_with_their_reason() {
        let l = Limits::default();
        let now = Timestamp::from_unix_micros(1_000_000 * 1_000_000);
        let ok = fix(1_000_000, 30.27, 120.15);
        assert_eq!(l.check(&ok, now), Ok(()));
        assert_eq!(
            l.check(&fix(1_000_000, 91.0, 0.5), now),
            Err(Reject::LatOutOfRange)
        );
        assert_eq!(
            l.check(&fix(1_000_000, 1.0, -180.5), now),
            Err(Reject::LonOutOfRange)
        );
        assert_eq!(
            l.check(&fix(1_000_000, f64::NAN, 1.0), now),
            Err(Reject::NotFinite)
        );
        assert_eq!(
            l.check(&fix(1_000_000, 0.0, 0.0), now),
            Err(Reject::NullIsland)
        );
        assert_eq!(
            l.check(&fix(1_000_000 + 301, 30.0, 120.0), now),
            Err(Reject::FutureTime)
        );
        assert_eq!(l.check(&fix(1_000_000 + 299, 30.0, 120.0), now), Ok(()));
        let mut bad = ok.clone();
        bad.speed_mps = Some(-1.0);
        assert_eq!(l.check(&bad, now), Err(Reject::BadField));
        let old = Limits {
            max_age_micros: Some(86_400_000_000),
            ..l
        };
        assert_eq!(
            old.check(&fix(1_000_000 - 86_401, 30.0, 120.0), now),
            Err(Reject::TooOld)
        );
    }

    #[test]
    fn a_jump_faster_than_the_limit_is_too_fast_but_noise_and_late_fixes_are_not() {
        let l = Limits::default();
        let a = fix(100, 30.0, 120.0);
        // ~1.1 km in 10 s = 111 m/s.
        assert_eq!(
            l.check_move(&a, &fix(110, 30.01, 120.0)),
            Err(Reject::TooFast)
        );
        // ~1.1 km in 60 s = 18.5 m/s: a car.
        assert_eq!(l.check_move(&a, &fix(160, 30.01, 120.0)), Ok(()));
        // 50 m in the same second: noise, inside the slack.
        assert_eq!(l.check_move(&a, &fix(100, 30.00045, 120.0)), Ok(()));
        // An older fix is not checked against a newer one.
        assert_eq!(l.check_move(&a, &fix(50, 31.0, 120.0)), Ok(()));
    }

    #[test]
    fn json_positions_parse_one_or_many_and_say_what_is_wrong() {
        let one = parse_json(&dev(), br#"{"ts":1000,"lat":30.5,"lon":120.5,"sos":true}"#).unwrap();
        assert_eq!(one.len(), 1);
        assert!(one[0].sos);
        assert_eq!(one[0].time.unix_micros(), 1_000_000);
        let many = parse_json(
            &dev(),
            br#"[{"ts":1000,"lat":30.5,"lon":120.5},{"ts":2000,"lat":30.6,"lon":120.6,"speed":1.5}]"#,
        )
        .unwrap();
        assert_eq!(many.len(), 2);
        assert_eq!(many[1].speed_mps, Some(1.5));
        let e = parse_json(&dev(), br#"{"ts":1000,"lat":30.5}"#).unwrap_err();
        assert!(e.contains("lon"), "{e}");
        let e = parse_json(&dev(), b"{nope").unwrap_err();
        assert!(e.starts_with("position JSON"), "{e}");
        let e = parse_json(&dev(), br#"{"ts":1,"lat":1,"lon":1,"colour":"red"}"#).unwrap_err();
        assert!(e.contains("colour"), "{e}");
        let back = JsonFix::from_position(&many[1]).into_position(dev());
        assert_eq!(back, many[1]);
    }

    #[test]
    fn json_is_told_apart_from_protobuf() {
        assert!(looks_like_json(b"  {\"ts\":1}"));
        assert!(looks_like_json(b"[]"));
        assert!(!looks_like_json(&[0x0a, 0x02, 0x44, 0x31]));
        assert!(!looks_like_json(b""));
    }

    #[test]
    fn owntracks_locations_parse_and_other_types_are_told_apart() {
        let p = parse_owntracks(
            &dev(),
            br#"{"_type":"location","lat":39.9,"lon":116.4,"tst":1700000000,"vel":36,"batt":50,"tid":"ab"}"#,
        )
        .unwrap();
        let OwnTracks::Location(p) = p else {
            panic!("not a location")
        };
        assert_eq!(p.time.unix_micros(), 1_700_000_000_000_000);
        assert!((p.speed_mps.unwrap() - 10.0).abs() < 1e-4);
        assert_eq!(
            parse_owntracks(&dev(), br#"{"_type":"waypoint","desc":"x"}"#).unwrap(),
            OwnTracks::Other("waypoint".into())
        );
        let e = parse_owntracks(&dev(), br#"{"_type":"location","lat":1,"lon":2}"#).unwrap_err();
        assert!(e.contains("tst"), "{e}");
    }

    #[test]
    fn alarm_messages_are_checked() {
        let a = AlarmMessage::parse(br#"{"ts":5000}"#).unwrap();
        assert_eq!(a.kind, "sos");
        assert_eq!(a.time().unix_micros(), 5_000_000);
        assert!(AlarmMessage::parse(br#"{"ts":1,"kind":"DROP TABLE"}"#).is_err());
        assert!(AlarmMessage::parse(br#"{"ts":1,"lat":1}"#).is_err());
        assert!(AlarmMessage::parse(br#"{"ts":1,"lat":100,"lon":1}"#).is_err());
        assert!(AlarmMessage::parse(br#"{"ts":1,"lat":1,"lon":1,"note":"help"}"#).is_ok());
    }
}
