//! The payloads a simulated recorder publishes, in the formats Custody reads: protobuf
//! `custody.v1.PositionBatch`, the JSON fix format of `custody_core::position` ([`JsonFix`]), OwnTracks
//! `_type: location` JSON, and the alarm JSON ([`AlarmMessage`]). Pure; nothing here defines a format of
//! its own.

use super::model::Fix;
use custody_core::position::{AlarmMessage, JsonFix};
use custody_proto::v1::{Position as ProtoPosition, PositionBatch};
use prost::Message;
use serde::Serialize;
use std::time::Duration;

/// A fix with the wall-clock time it was produced at, as time since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimedFix {
    pub since_epoch: Duration,
    pub fix: Fix,
}

impl TimedFix {
    /// The time in whole milliseconds, as the JSON formats carry it.
    pub fn unix_ms(&self) -> i64 {
        i64::try_from(self.since_epoch.as_millis()).unwrap_or(i64::MAX)
    }

    fn proto_time(&self) -> prost_types::Timestamp {
        prost_types::Timestamp {
            seconds: i64::try_from(self.since_epoch.as_secs()).unwrap_or(i64::MAX),
            nanos: self.since_epoch.subsec_nanos() as i32,
        }
    }
}

/// A protobuf `PositionBatch` of `device` (the time keeps its nanoseconds).
pub fn proto_batch(device: &str, seq: u64, fixes: &[TimedFix]) -> Vec<u8> {
    PositionBatch {
        device_id: device.to_owned(),
        positions: fixes
            .iter()
            .map(|t| ProtoPosition {
                time: Some(t.proto_time()),
                lat: t.fix.lat,
                lon: t.fix.lon,
                alt_m: Some(t.fix.alt_m),
                speed_mps: Some(t.fix.speed_mps),
                course_deg: Some(t.fix.course_deg),
                accuracy_m: Some(t.fix.accuracy_m),
                sos: t.fix.sos,
                battery_pct: Some(u32::from(t.fix.battery_pct)),
            })
            .collect(),
        seq,
    }
    .encode_to_vec()
}

fn json_fix(t: &TimedFix) -> JsonFix {
    JsonFix {
        ts: t.unix_ms(),
        lat: t.fix.lat,
        lon: t.fix.lon,
        alt: Some(t.fix.alt_m),
        speed: Some(t.fix.speed_mps),
        course: Some(t.fix.course_deg),
        acc: Some(t.fix.accuracy_m),
        sos: t.fix.sos,
        batt: Some(t.fix.battery_pct),
    }
}

/// JSON fixes: one object when `array` is false (and there is exactly one fix), else an array.
pub fn json(fixes: &[TimedFix], array: bool) -> Vec<u8> {
    let r = match fixes {
        [one] if !array => serde_json::to_vec(&json_fix(one)),
        _ => serde_json::to_vec(&fixes.iter().map(json_fix).collect::<Vec<_>>()),
    };
    // Serialising plain structs of numbers cannot fail.
    r.unwrap_or_default()
}

/// An OwnTracks location message: `tst` in seconds, `vel` in km/h, `acc`, `alt` and `cog` whole
/// numbers, as the OwnTracks apps send them.
pub fn owntracks(t: &TimedFix, tid: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct Location<'a> {
        #[serde(rename = "_type")]
        kind: &'static str,
        tid: &'a str,
        tst: i64,
        lat: f64,
        lon: f64,
        acc: i64,
        alt: i64,
        vel: i64,
        cog: i64,
        batt: u8,
    }
    serde_json::to_vec(&Location {
        kind: "location",
        tid,
        tst: t.unix_ms().div_euclid(1000),
        lat: t.fix.lat,
        lon: t.fix.lon,
        acc: f64::from(t.fix.accuracy_m).round() as i64,
        alt: f64::from(t.fix.alt_m).round() as i64,
        vel: (f64::from(t.fix.speed_mps) * 3.6).round() as i64,
        cog: (f64::from(t.fix.course_deg).round() as i64).rem_euclid(360),
        batt: t.fix.battery_pct,
    })
    .unwrap_or_default()
}

/// The SOS alarm: `{"ts": <ms>, "kind": "sos", "lat": .., "lon": ..}`.
pub fn sos_alarm(t: &TimedFix) -> Vec<u8> {
    serde_json::to_vec(&AlarmMessage {
        ts: t.unix_ms(),
        kind: "sos".into(),
        lat: Some(t.fix.lat),
        lon: Some(t.fix.lon),
        note: None,
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use custody_core::DeviceId;
    use custody_core::position::{OwnTracks, parse_json, parse_owntracks};

    fn fix(ms: u64) -> TimedFix {
        TimedFix {
            since_epoch: Duration::from_millis(ms) + Duration::from_nanos(123_456),
            fix: Fix {
                lat: 30.2741,
                lon: 120.1551,
                alt_m: 12.5,
                speed_mps: 1.4,
                course_deg: 90.0,
                accuracy_m: 4.2,
                sos: true,
                battery_pct: 81,
            },
        }
    }

    #[test]
    fn a_proto_batch_decodes_with_its_device_seq_and_nanosecond_times() {
        let b = PositionBatch::decode(
            proto_batch("SIM-00001", 7, &[fix(1_000), fix(2_000)]).as_slice(),
        )
        .unwrap();
        assert_eq!(b.device_id, "SIM-00001");
        assert_eq!(b.seq, 7);
        assert_eq!(b.positions.len(), 2);
        let t = b.positions[1].time.unwrap();
        assert_eq!((t.seconds, t.nanos), (2, 123_456));
        assert!(b.positions[0].sos);
        assert_eq!(b.positions[0].battery_pct, Some(81));
    }

    #[test]
    fn json_is_one_object_unless_batching_and_parses_as_custody_reads_it() {
        let dev = DeviceId::parse("SIM-00001").unwrap();
        let one = json(&[fix(1_000)], false);
        assert!(one.starts_with(b"{"));
        let p = parse_json(&dev, &one).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].time.unix_micros(), 1_000_000);
        assert_eq!(p[0].speed_mps, Some(1.4));
        let many = json(&[fix(1_000), fix(2_000)], true);
        assert!(many.starts_with(b"["));
        assert_eq!(parse_json(&dev, &many).unwrap().len(), 2);
        assert!(json(&[fix(1_000)], true).starts_with(b"["));
    }

    #[test]
    fn owntracks_locations_parse_with_seconds_and_km_per_hour() {
        let dev = DeviceId::parse("SIM-00001").unwrap();
        let OwnTracks::Location(p) =
            parse_owntracks(&dev, &owntracks(&fix(1_700_000_000_999), "01")).unwrap()
        else {
            panic!("not a location");
        };
        assert_eq!(p.time.unix_micros(), 1_700_000_000_000_000);
        assert!(
            (p.speed_mps.unwrap() - 5.0 / 3.6).abs() < 1e-4,
            "{:?}",
            p.speed_mps
        );
        assert_eq!(p.battery_pct, Some(81));
        assert_eq!(p.accuracy_m, Some(4.0));
    }

    #[test]
    fn the_sos_alarm_is_an_alarm_custody_accepts() {
        let a = AlarmMessage::parse(&sos_alarm(&fix(5_000))).unwrap();
        assert_eq!(a.kind, "sos");
        assert_eq!(a.ts, 5_000);
        assert_eq!((a.lat, a.lon), (Some(30.2741), Some(120.1551)));
    }
}
