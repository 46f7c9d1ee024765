//! What a docking station (采集站) reports about itself: the state of each slot, and a heartbeat. The
//! station agent publishes these as JSON over MQTT (`custody/v1/station/{id}/slots`, retained, and
//! `custody/v1/station/{id}/heartbeat`); the server records them and serves them to the command centre.
//! Both sides use these types, so the format is defined once. Every message carries its format version
//! `v`; readers refuse a version they do not know instead of guessing.

use crate::ids::{BadgeNo, DeviceId, StationId};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

pub use crate::credential::StationCredential;

/// The report format version written today.
pub const REPORT_VERSION: u32 = 1;

/// What is happening in one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum SlotState {
    /// No recorder docked.
    Empty,
    /// A recorder is docked and its files are being hashed, uploaded or freed.
    Offloading,
    /// Every file of the docked recorder has a verified receipt and was freed: it may be undocked.
    Done,
    /// Work is stuck on an error (`last_error` says which); the station retries.
    Error,
}

/// The officer a docked recorder is bound to, as its device-info file says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OfficerBinding {
    /// Badge number (警号).
    pub badge: BadgeNo,
    pub name: String,
    pub unit_no: String,
    pub unit_name: String,
}

/// One slot of a station.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SlotStatus {
    /// The slot's name in the station's configuration (e.g. `01`).
    pub slot: String,
    pub state: SlotState,
    /// The docked recorder.
    pub device_id: Option<DeviceId>,
    pub officer: Option<OfficerBinding>,
    /// When the recorder was docked (station clock).
    pub docked_at: Option<Timestamp>,
    /// The recorder's clock minus the station's at docking, in milliseconds, when the recorder told it.
    pub clock_offset_ms: Option<i64>,
    /// Files of the docked recorder without a verified receipt yet.
    pub files_pending: u64,
    pub bytes_pending: u64,
    /// Files of the docked recorder that have a verified receipt (freed or kept, per policy).
    pub files_done: u64,
    pub bytes_done: u64,
    /// Share of the docked recorder's bytes done, 0 to 1.
    pub progress: f64,
    /// The newest error that stopped a file of this slot, until the file gets past it.
    pub last_error: Option<String>,
}

/// The retained report of all slots of a station.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SlotsReport {
    /// Always [`REPORT_VERSION`].
    pub v: u32,
    pub station_id: StationId,
    /// When the station made the report (station clock).
    pub at: Timestamp,
    pub slots: Vec<SlotStatus>,
}

/// A station's periodic sign of life. A station that stops without saying so gets an MQTT last will with
/// `online: false` published for it by the broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Heartbeat {
    /// Always [`REPORT_VERSION`].
    pub v: u32,
    pub station_id: StationId,
    pub at: Timestamp,
    pub online: bool,
    /// The agent's version.
    pub version: String,
    /// Seconds since the agent started.
    pub uptime_s: u64,
    /// Seconds between heartbeats: a station silent for three of them is shown offline.
    pub interval_s: u64,
    /// Uploads running now.
    pub uploads_active: u32,
    /// Files and bytes waiting on every slot.
    pub files_pending: u64,
    pub bytes_pending: u64,
}

/// Why a station report was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ReportError(pub String);

fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, ReportError> {
    #[derive(Deserialize)]
    struct Version {
        v: u32,
    }
    let v: Version = serde_json::from_slice(bytes)
        .map_err(|e| ReportError(format!("{what}: not JSON with a version field v: {e}")))?;
    if v.v != REPORT_VERSION {
        return Err(ReportError(format!(
            "{what}: version {} is not understood; this build reads version {REPORT_VERSION}",
            v.v
        )));
    }
    serde_json::from_slice(bytes).map_err(|e| ReportError(format!("{what}: {e}")))
}

impl SlotsReport {
    pub fn decode(bytes: &[u8]) -> Result<Self, ReportError> {
        let r: Self = decode("slots report", bytes)?;
        for s in &r.slots {
            if !(0.0..=1.0).contains(&s.progress) {
                return Err(ReportError(format!(
                    "slots report: slot {}: progress must be between 0 and 1, got {}",
                    s.slot, s.progress
                )));
            }
        }
        Ok(r)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

impl Heartbeat {
    pub fn decode(bytes: &[u8]) -> Result<Self, ReportError> {
        decode("heartbeat", bytes)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> SlotsReport {
        SlotsReport {
            v: REPORT_VERSION,
            station_id: StationId::parse("ST-01").unwrap(),
            at: Timestamp::from_unix_micros(1_795_000_000_000_000),
            slots: vec![SlotStatus {
                slot: "01".into(),
                state: SlotState::Offloading,
                device_id: Some(DeviceId::parse("ZFY1").unwrap()),
                officer: Some(OfficerBinding {
                    badge: BadgeNo::parse("0123456").unwrap(),
                    name: "张三".into(),
                    unit_no: "4403".into(),
                    unit_name: "城管".into(),
                }),
                docked_at: None,
                clock_offset_ms: Some(-1500),
                files_pending: 3,
                bytes_pending: 300,
                files_done: 1,
                bytes_done: 100,
                progress: 0.25,
                last_error: None,
            }],
        }
    }

    #[test]
    fn a_slots_report_round_trips_as_json() {
        let r = report();
        assert_eq!(SlotsReport::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn a_report_of_another_version_or_shape_is_refused_saying_why() {
        let mut j: serde_json::Value = serde_json::from_slice(&report().encode()).unwrap();
        j["v"] = 2.into();
        let e = SlotsReport::decode(&serde_json::to_vec(&j).unwrap()).unwrap_err();
        assert!(e.0.contains("version 2"), "{e}");
        let e = SlotsReport::decode(b"{not json").unwrap_err();
        assert!(e.0.contains("not JSON"), "{e}");
        j["v"] = 1.into();
        j["slots"][0]["progress"] = 7.into();
        let e = SlotsReport::decode(&serde_json::to_vec(&j).unwrap()).unwrap_err();
        assert!(e.0.contains("progress"), "{e}");
        j["station_id"] = "bad id!".into();
        assert!(SlotsReport::decode(&serde_json::to_vec(&j).unwrap()).is_err());
    }
}
