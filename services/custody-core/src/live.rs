//! What the command centre sees besides positions: alarms, geofences and the events they raise, and
//! recorders' self-reported status. Plain data; storing and pushing them is `custody-tracking`'s job.

use crate::ids::{AlarmId, DeviceId, FenceId};
use crate::position::Position;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

/// An alarm (SOS) raised by a recorder, from its alarm topic or the SOS flag of a fix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Alarm {
    pub id: AlarmId,
    pub device_id: DeviceId,
    /// `sos`, or another snake_case kind the device sent.
    pub kind: String,
    /// When the device raised it.
    pub raised_at: Timestamp,
    /// Where, WGS-84, when known.
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub note: String,
    pub received_at: Timestamp,
    /// Set once an operator acknowledged it.
    pub acked_at: Option<Timestamp>,
    pub acked_by: Option<String>,
    pub ack_note: Option<String>,
}

/// A polygon on the map (网格 grid cell, 辖区 precinct) whose entries and exits are reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Geofence {
    pub id: FenceId,
    pub name: String,
    /// Free-form category such as `grid` or `precinct`.
    pub kind: String,
    /// The outer ring as (lat, lon) pairs, WGS-84, not repeating the first point at the end.
    pub ring: Vec<(f64, f64)>,
    pub created_at: Timestamp,
}

/// The most points a fence ring may have.
pub const MAX_RING_POINTS: usize = 10_000;

impl Geofence {
    /// Checks a ring: at least 3 distinct points, all in range and finite, at most
    /// [`MAX_RING_POINTS`]. A closing point equal to the first is dropped.
    pub fn check_ring(mut ring: Vec<(f64, f64)>) -> Result<Vec<(f64, f64)>, String> {
        if ring.len() > 1 && ring.first() == ring.last() {
            ring.pop();
        }
        if ring.len() > MAX_RING_POINTS {
            return Err(format!(
                "a geofence may have at most {MAX_RING_POINTS} points, got {}",
                ring.len()
            ));
        }
        for (i, &(lat, lon)) in ring.iter().enumerate() {
            if !lat.is_finite()
                || !lon.is_finite()
                || !(-90.0..=90.0).contains(&lat)
                || !(-180.0..=180.0).contains(&lon)
            {
                return Err(format!(
                    "geofence point {i} ({lat}, {lon}) is not a valid latitude, longitude"
                ));
            }
        }
        let mut distinct = ring.clone();
        distinct.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        distinct.dedup();
        if distinct.len() < 3 {
            return Err("a geofence needs at least 3 distinct points".into());
        }
        Ok(ring)
    }
}

/// Whether a device went into or out of a fence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum FenceTransition {
    Enter,
    Leave,
}

impl FenceTransition {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enter => "enter",
            Self::Leave => "leave",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "enter" => Ok(Self::Enter),
            "leave" => Ok(Self::Leave),
            _ => Err(format!(
                "fence event kind must be enter or leave, got {s:?}"
            )),
        }
    }
}

/// A device entering or leaving a fence, at the fix that crossed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FenceEvent {
    pub device_id: DeviceId,
    pub fence_id: FenceId,
    pub kind: FenceTransition,
    pub t: Timestamp,
    pub lat: f64,
    pub lon: f64,
}

/// The newest status a device published on its retained status topic: a JSON object, kept as sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceStatus {
    pub device_id: DeviceId,
    pub status: serde_json::Value,
    pub received_at: Timestamp,
}

/// The most bytes a status message may have.
pub const MAX_STATUS_BYTES: usize = 16 * 1024;

impl DeviceStatus {
    /// Parses a status payload: a JSON object of at most [`MAX_STATUS_BYTES`].
    pub fn parse_payload(payload: &[u8]) -> Result<serde_json::Value, String> {
        if payload.len() > MAX_STATUS_BYTES {
            return Err(format!(
                "status is {} bytes, more than the {MAX_STATUS_BYTES} allowed",
                payload.len()
            ));
        }
        let v: serde_json::Value =
            serde_json::from_slice(payload).map_err(|e| format!("status JSON: {e}"))?;
        if !v.is_object() {
            return Err("status JSON must be an object".into());
        }
        Ok(v)
    }
}

/// One thing the live feed carries.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LiveEvent {
    Position(Position),
    Alarm(Alarm),
    Status(DeviceStatus),
    Fence {
        #[serde(flatten)]
        event: FenceEvent,
        fence_name: String,
    },
}

impl LiveEvent {
    /// The device it is about.
    pub fn device(&self) -> &DeviceId {
        match self {
            Self::Position(p) => &p.device,
            Self::Alarm(a) => &a.device_id,
            Self::Status(s) => &s.device_id,
            Self::Fence { event, .. } => &event.device_id,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_ring_is_closed_checked_and_needs_three_distinct_points() {
        let r = Geofence::check_ring(vec![
            (30.0, 120.0),
            (30.0, 120.1),
            (30.1, 120.1),
            (30.0, 120.0),
        ])
        .unwrap();
        assert_eq!(r.len(), 3);
        assert!(Geofence::check_ring(vec![(30.0, 120.0), (30.0, 120.0), (30.1, 120.1)]).is_err());
        let e =
            Geofence::check_ring(vec![(30.0, 120.0), (95.0, 120.0), (30.1, 120.1)]).unwrap_err();
        assert!(e.contains("point 1"), "{e}");
    }

    #[test]
    fn status_must_be_a_small_json_object() {
        assert!(DeviceStatus::parse_payload(br#"{"batt":50}"#).is_ok());
        assert!(DeviceStatus::parse_payload(b"[1]").is_err());
        assert!(DeviceStatus::parse_payload(b"{").is_err());
        assert!(DeviceStatus::parse_payload(&vec![b' '; MAX_STATUS_BYTES + 1]).is_err());
    }

    #[test]
    fn live_events_serialize_with_their_type() {
        let e = LiveEvent::Status(DeviceStatus {
            device_id: DeviceId::parse("D1").unwrap(),
            status: serde_json::json!({"rec": true}),
            received_at: Timestamp::from_unix_micros(0),
        });
        let j = serde_json::to_value(&e).unwrap();
        assert_eq!(j["type"], "status");
        assert_eq!(j["device_id"], "D1");
    }
}
