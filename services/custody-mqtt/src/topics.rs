//! The topic scheme and who may use which topic.
//!
//! Inbound (client to server):
//! - `custody/v1/station/{station}/slots`: slot status of a docking station, published retained
//! - `custody/v1/station/{station}/heartbeat`
//! - `custody/v1/dev/{device}/pos`, `.../alarm`, `.../status`
//! - `owntracks/{user}/{device}`: positions from OwnTracks-compatible firmware
//!
//! Outbound (server to client): `custody/v1/station/{station}/cmd` and `custody/v1/dev/{device}/cmd`.
//!
//! Station and device ids cannot hold `/`, `+` or `#` (custody-core checks them), so a topic built from
//! a valid id is always a plain topic with exactly the levels shown.

use crate::Principal;
use custody_core::{DeviceId, StationId};

/// The topic filters the bridge subscribes to on an external broker: every inbound topic.
pub const INBOUND_FILTERS: &[&str] = &[
    "custody/v1/station/+/slots",
    "custody/v1/station/+/heartbeat",
    "custody/v1/dev/+/pos",
    "custody/v1/dev/+/alarm",
    "custody/v1/dev/+/status",
    "owntracks/+/+",
];

/// `custody/v1/station/{station}/slots`: a station's slot status (retained).
pub fn station_slots(station: &StationId) -> String {
    format!("custody/v1/station/{station}/slots")
}

/// `custody/v1/station/{station}/heartbeat`.
pub fn station_heartbeat(station: &StationId) -> String {
    format!("custody/v1/station/{station}/heartbeat")
}

/// `custody/v1/station/{station}/cmd`: commands from the server to a station.
pub fn station_cmd(station: &StationId) -> String {
    format!("custody/v1/station/{station}/cmd")
}

/// `custody/v1/dev/{device}/pos`: a recorder's position.
pub fn device_pos(device: &DeviceId) -> String {
    format!("custody/v1/dev/{device}/pos")
}

/// `custody/v1/dev/{device}/alarm`: an alarm raised on a recorder (SOS key, tamper).
pub fn device_alarm(device: &DeviceId) -> String {
    format!("custody/v1/dev/{device}/alarm")
}

/// `custody/v1/dev/{device}/status`: a recorder's status (battery, storage, recording).
pub fn device_status(device: &DeviceId) -> String {
    format!("custody/v1/dev/{device}/status")
}

/// `custody/v1/dev/{device}/cmd`: commands from the server to a recorder.
pub fn device_cmd(device: &DeviceId) -> String {
    format!("custody/v1/dev/{device}/cmd")
}

/// `owntracks/{user}/{device}`: the OwnTracks location topic. `user` is whatever the firmware is
/// configured with; Custody identifies the recorder by `device` only.
pub fn owntracks(user: &str, device: &DeviceId) -> String {
    format!("owntracks/{user}/{device}")
}

/// An inbound topic, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// `custody/v1/station/{station}/slots`
    StationSlots(StationId),
    /// `custody/v1/station/{station}/heartbeat`
    StationHeartbeat(StationId),
    /// `custody/v1/dev/{device}/pos`
    DevicePos(DeviceId),
    /// `custody/v1/dev/{device}/alarm`
    DeviceAlarm(DeviceId),
    /// `custody/v1/dev/{device}/status`
    DeviceStatus(DeviceId),
    /// `owntracks/{user}/{device}`
    OwnTracks {
        /// The OwnTracks user level, as published.
        user: String,
        /// The recorder.
        device: DeviceId,
    },
}

/// Parses an inbound topic. Anything else (cmd topics included), and a topic whose id is not a valid
/// station or device id, is `None`.
pub fn parse(topic: &str) -> Option<Topic> {
    let levels: Vec<&str> = topic.split('/').collect();
    let station = |s: &str| StationId::parse(s).ok();
    let device = |s: &str| DeviceId::parse(s).ok();
    match levels.as_slice() {
        ["custody", "v1", "station", id, "slots"] => station(id).map(Topic::StationSlots),
        ["custody", "v1", "station", id, "heartbeat"] => station(id).map(Topic::StationHeartbeat),
        ["custody", "v1", "dev", id, "pos"] => device(id).map(Topic::DevicePos),
        ["custody", "v1", "dev", id, "alarm"] => device(id).map(Topic::DeviceAlarm),
        ["custody", "v1", "dev", id, "status"] => device(id).map(Topic::DeviceStatus),
        // The user level is free-form, but it must be a real level: not empty, and no wildcard (a PUBLISH
        // topic may not hold one) or `$` prefix (reserved for broker topics).
        ["owntracks", user, id]
            if !user.is_empty() && !user.starts_with('$') && !user.contains(['+', '#']) =>
        {
            device(id).map(|device| Topic::OwnTracks {
                user: (*user).to_owned(),
                device,
            })
        }
        _ => None,
    }
}

/// Whether `p` may publish to `topic`: a station only to its own slots and heartbeat topics; a device
/// only to its own pos, alarm and status topics and to `owntracks/<any user>/{its id}`.
pub fn may_publish(p: &Principal, topic: &str) -> bool {
    match (p, parse(topic)) {
        (Principal::Station(me), Some(Topic::StationSlots(s) | Topic::StationHeartbeat(s))) => {
            s == *me
        }
        (
            Principal::Device(me),
            Some(
                Topic::DevicePos(d)
                | Topic::DeviceAlarm(d)
                | Topic::DeviceStatus(d)
                | Topic::OwnTracks { device: d, .. },
            ),
        ) => d == *me,
        _ => false,
    }
}

/// Whether `p` may subscribe to `filter`: only its own cmd topic, spelled exactly (no wildcards).
pub fn may_subscribe(p: &Principal, filter: &str) -> bool {
    match p {
        Principal::Station(id) => filter == station_cmd(id),
        Principal::Device(id) => filter == device_cmd(id),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn st(s: &str) -> StationId {
        StationId::parse(s).unwrap()
    }
    fn dev(s: &str) -> DeviceId {
        DeviceId::parse(s).unwrap()
    }

    #[test]
    fn every_inbound_topic_parses_to_its_kind() {
        assert_eq!(
            parse(&station_slots(&st("ST-1"))),
            Some(Topic::StationSlots(st("ST-1")))
        );
        assert_eq!(
            parse("custody/v1/station/ST-1/heartbeat"),
            Some(Topic::StationHeartbeat(st("ST-1")))
        );
        assert_eq!(
            parse(&device_pos(&dev("D1"))),
            Some(Topic::DevicePos(dev("D1")))
        );
        assert_eq!(
            parse(&device_alarm(&dev("D1"))),
            Some(Topic::DeviceAlarm(dev("D1")))
        );
        assert_eq!(
            parse(&device_status(&dev("D1"))),
            Some(Topic::DeviceStatus(dev("D1")))
        );
        assert_eq!(
            parse(&owntracks("alice", &dev("D1"))),
            Some(Topic::OwnTracks {
                user: "alice".into(),
                device: dev("D1")
            })
        );
    }

    #[test]
    fn unknown_topics_bad_ids_and_cmd_topics_do_not_parse() {
        for t in [
            "",
            "custody/v1/station/ST-1",
            "custody/v1/station/ST-1/slots/extra",
            "custody/v2/station/ST-1/slots",
            "custody/v1/station//slots",
            "custody/v1/station/+/slots",
            "custody/v1/station/ST 1/slots",
            "custody/v1/dev/D1/cmd",
            "custody/v1/station/ST-1/cmd",
            "owntracks//D1",
            "owntracks/+/D1",
            "owntracks/$SYS/D1",
            "owntracks/alice/#",
        ] {
            assert_eq!(parse(t), None, "{t:?}");
        }
    }

    #[test]
    fn a_station_may_publish_only_under_its_own_topics() {
        let p = Principal::Station(st("ST-1"));
        assert!(may_publish(&p, "custody/v1/station/ST-1/slots"));
        assert!(may_publish(&p, "custody/v1/station/ST-1/heartbeat"));
        assert!(!may_publish(&p, "custody/v1/station/ST-2/slots"));
        assert!(!may_publish(&p, "custody/v1/station/ST-1/cmd"));
        assert!(!may_publish(&p, "custody/v1/dev/ST-1/pos"));
        assert!(!may_publish(&p, "owntracks/u/ST-1"));
    }

    #[test]
    fn a_device_may_publish_only_under_its_own_topics() {
        let p = Principal::Device(dev("D1"));
        for t in ["pos", "alarm", "status"] {
            assert!(may_publish(&p, &format!("custody/v1/dev/D1/{t}")));
            assert!(!may_publish(&p, &format!("custody/v1/dev/D2/{t}")));
        }
        assert!(may_publish(&p, "owntracks/anyone/D1"));
        assert!(!may_publish(&p, "owntracks/anyone/D2"));
        assert!(!may_publish(&p, "custody/v1/dev/D1/cmd"));
        assert!(!may_publish(&p, "custody/v1/station/D1/slots"));
    }

    #[test]
    fn a_client_may_subscribe_only_to_its_own_cmd_topic_without_wildcards() {
        let s = Principal::Station(st("ST-1"));
        let d = Principal::Device(dev("D1"));
        assert!(may_subscribe(&s, "custody/v1/station/ST-1/cmd"));
        assert!(!may_subscribe(&s, "custody/v1/station/ST-2/cmd"));
        assert!(!may_subscribe(&s, "custody/v1/station/+/cmd"));
        assert!(!may_subscribe(&s, "#"));
        assert!(may_subscribe(&d, "custody/v1/dev/D1/cmd"));
        assert!(!may_subscribe(&d, "custody/v1/dev/D1/#"));
        assert!(!may_subscribe(&d, "custody/v1/station/D1/cmd"));
    }
}
