//! The telemetry conformance suite: every test runs on SQLite and on PostgreSQL.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use custody_core::live::{Alarm, DeviceStatus, FenceEvent, FenceTransition, Geofence};
use custody_core::*;
use custody_store::{Metadata, StoreError, TelemetryWrite};

use custody_store::conformance;

conformance!(
    a_batch_written_twice_is_stored_once_with_every_field,
    the_latest_fix_only_moves_forward,
    positions_older_than_the_cutoff_are_purged_and_newer_ones_stay,
    an_alarm_is_stored_once_and_acknowledged_once,
    device_credentials_are_registered_rotated_and_revoked,
    geofences_and_their_events_round_trip,
    device_status_is_replaced_by_the_newest,
);

const DAY: i64 = 86_400_000_000;
/// 2026-11-23T00:00:00Z
const T0: i64 = 1_795_392_000_000_000;

fn dev(s: &str) -> DeviceId {
    DeviceId::parse(s).unwrap()
}

fn fix(d: &str, t: i64, lat: f64) -> Position {
    Position {
        device: dev(d),
        time: Timestamp::from_unix_micros(t),
        lat,
        lon: 120.15,
        alt_m: Some(12.5),
        speed_mps: Some(1.25),
        course_deg: Some(90.0),
        accuracy_m: Some(4.0),
        sos: false,
        battery_pct: Some(77),
    }
}

fn write(ps: Vec<Position>) -> TelemetryWrite {
    TelemetryWrite {
        positions: ps,
        ..Default::default()
    }
}

async fn a_batch_written_twice_is_stored_once_with_every_field(m: Metadata) {
    let mut ps: Vec<Position> = (0..500)
        .map(|i| fix("D1", T0 + i * 1_000_000, 30.0 + i as f64 * 1e-5))
        .collect();
    ps[3].sos = true;
    ps[4].alt_m = None;
    ps[4].battery_pct = None;
    // A fix just before midnight: on PostgreSQL it lands in the previous day's partition.
    ps.push(fix("D2", T0 - 1, 31.0));
    let w = write(ps.clone());
    m.write_telemetry(&w).await.unwrap();
    m.write_telemetry(&w).await.unwrap();
    assert_eq!(m.count_positions(None).await.unwrap(), 501);
    let back = m
        .positions_between(
            &dev("D1"),
            Timestamp::from_unix_micros(T0),
            Timestamp::from_unix_micros(T0 + DAY),
            10_000,
        )
        .await
        .unwrap();
    assert_eq!(back, ps[..500].to_vec());
    let d2 = m
        .positions_between(
            &dev("D2"),
            Timestamp::from_unix_micros(T0 - DAY),
            Timestamp::from_unix_micros(T0),
            10,
        )
        .await
        .unwrap();
    assert_eq!(d2, vec![ps[500].clone()]);
}

async fn the_latest_fix_only_moves_forward(m: Metadata) {
    m.write_telemetry(&write(vec![
        fix("D1", T0 + 10, 30.1),
        fix("D1", T0 + 20, 30.2),
        fix("D2", T0, 31.0),
    ]))
    .await
    .unwrap();
    // A late batch with an older fix does not replace the newest.
    m.write_telemetry(&write(vec![fix("D1", T0 + 15, 30.15)]))
        .await
        .unwrap();
    let mut latest = m.latest_positions().await.unwrap();
    latest.sort_by(|a, b| a.device.cmp(&b.device));
    assert_eq!(latest.len(), 2);
    assert_eq!(latest[0].time.unix_micros(), T0 + 20);
    assert_eq!(latest[0].lat, 30.2);
    assert_eq!(latest[1].device, dev("D2"));
}

async fn positions_older_than_the_cutoff_are_purged_and_newer_ones_stay(m: Metadata) {
    let ps: Vec<Position> = (0..5)
        .map(|d| fix("D1", T0 + d * DAY + 3_600_000_000, 30.0))
        .collect();
    m.write_telemetry(&write(ps)).await.unwrap();
    // Cut off at the start of day 3: days 0, 1 and 2 go, 3 and 4 stay.
    let purged = m
        .purge_positions_before(Timestamp::from_unix_micros(T0 + 3 * DAY), 2)
        .await
        .unwrap();
    match m.backend() {
        custody_store::Backend::Postgres => assert_eq!(purged.partitions, 3),
        custody_store::Backend::Sqlite => assert_eq!(purged.rows, 3),
    }
    assert_eq!(m.count_positions(None).await.unwrap(), 2);
    // Writing into a dropped day again recreates its partition.
    m.write_telemetry(&write(vec![fix("D1", T0 + 5, 30.0)]))
        .await
        .unwrap();
    assert_eq!(m.count_positions(Some(&dev("D1"))).await.unwrap(), 3);
}

fn alarm(d: &str, t: i64) -> Alarm {
    Alarm {
        id: AlarmId::new(),
        device_id: dev(d),
        kind: "sos".into(),
        raised_at: Timestamp::from_unix_micros(t),
        lat: Some(30.0),
        lon: None,
        note: "help".into(),
        received_at: Timestamp::from_unix_micros(t + 5),
        acked_at: None,
        acked_by: None,
        ack_note: None,
    }
}

async fn an_alarm_is_stored_once_and_acknowledged_once(m: Metadata) {
    let a = alarm("D1", T0);
    m.write_telemetry(&TelemetryWrite {
        alarms: vec![a.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    // Redelivered: same device, kind and time, a new id; it is not stored again.
    m.write_telemetry(&TelemetryWrite {
        alarms: vec![alarm("D1", T0)],
        ..Default::default()
    })
    .await
    .unwrap();
    m.write_telemetry(&TelemetryWrite {
        alarms: vec![alarm("D2", T0 + 1)],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        m.find_alarm(&dev("D1"), "sos", a.raised_at)
            .await
            .unwrap()
            .unwrap(),
        a
    );
    let open = m.list_alarms(true, None, None, 10).await.unwrap();
    assert_eq!(open.len(), 2);
    assert_eq!(open[0].device_id, dev("D2"), "newest first");
    let page = m
        .list_alarms(
            true,
            None,
            Some(custody_store::AlarmCursor {
                raised_at: open[0].raised_at,
                id: open[0].id,
            }),
            10,
        )
        .await
        .unwrap();
    assert_eq!(page, vec![a.clone()]);

    let (acked, first) = m
        .ack_alarm(
            &a.id,
            "op-1",
            "on my way",
            Timestamp::from_unix_micros(T0 + 9),
        )
        .await
        .unwrap();
    assert!(first);
    assert_eq!(acked.acked_by.as_deref(), Some("op-1"));
    let (again, first) = m
        .ack_alarm(&a.id, "op-2", "late", Timestamp::from_unix_micros(T0 + 99))
        .await
        .unwrap();
    assert!(!first);
    assert_eq!(
        again.acked_by.as_deref(),
        Some("op-1"),
        "the first ack stands"
    );
    assert_eq!(
        m.list_alarms(true, Some(&dev("D1")), None, 10)
            .await
            .unwrap(),
        vec![]
    );
    assert_eq!(
        m.list_alarms(false, Some(&dev("D1")), None, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(matches!(
        m.ack_alarm(&AlarmId::new(), "x", "", Timestamp::from_unix_micros(T0))
            .await,
        Err(StoreError::NotFound(_))
    ));
}

async fn device_credentials_are_registered_rotated_and_revoked(m: Metadata) {
    let now = Timestamp::from_unix_micros(T0);
    m.insert_device(&dev("D1"), "recorder 1", &[1; 32], now)
        .await
        .unwrap();
    assert!(matches!(
        m.insert_device(&dev("D1"), "again", &[2; 32], now).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert_eq!(
        m.device_secret(&dev("D1")).await.unwrap().unwrap().sha256,
        [1; 32]
    );
    m.disable_device(&dev("D1"), now).await.unwrap();
    assert!(m.device_secret(&dev("D1")).await.unwrap().unwrap().disabled);
    m.set_device_secret(&dev("D1"), &[3; 32]).await.unwrap();
    let s = m.device_secret(&dev("D1")).await.unwrap().unwrap();
    assert_eq!((s.sha256, s.disabled), ([3; 32], false));
    assert!(m.device_secret(&dev("D9")).await.unwrap().is_none());
    assert!(matches!(
        m.disable_device(&dev("D9"), now).await,
        Err(StoreError::NotFound(_))
    ));
    // A station of the same name is another principal.
    assert!(
        m.station_secret(&StationId::parse("D1").unwrap())
            .await
            .unwrap()
            .is_none()
    );
    let list = m.list_devices(None, 10).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].name, "recorder 1");
}

async fn geofences_and_their_events_round_trip(m: Metadata) {
    let f = Geofence {
        id: FenceId::new(),
        name: "西湖网格 3".into(),
        kind: "grid".into(),
        ring: vec![(30.0, 120.0), (30.0, 120.1), (30.1, 120.1)],
        created_at: Timestamp::from_unix_micros(T0),
    };
    m.insert_geofence(&f).await.unwrap();
    assert_eq!(m.list_geofences().await.unwrap(), vec![f.clone()]);
    let e = FenceEvent {
        device_id: dev("D1"),
        fence_id: f.id,
        kind: FenceTransition::Enter,
        t: Timestamp::from_unix_micros(T0 + 1),
        lat: 30.05,
        lon: 120.05,
    };
    let w = TelemetryWrite {
        fence_events: vec![e.clone()],
        ..Default::default()
    };
    m.write_telemetry(&w).await.unwrap();
    m.write_telemetry(&w).await.unwrap();
    let got = m
        .fence_events(
            Some(&dev("D1")),
            Timestamp::from_unix_micros(T0),
            Timestamp::from_unix_micros(T0 + DAY),
            10,
        )
        .await
        .unwrap();
    assert_eq!(got, vec![e]);
    m.delete_geofence(&f.id).await.unwrap();
    assert!(m.list_geofences().await.unwrap().is_empty());
    assert!(matches!(
        m.delete_geofence(&f.id).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn device_status_is_replaced_by_the_newest(m: Metadata) {
    for (i, batt) in [90, 80].into_iter().enumerate() {
        m.upsert_device_status(&DeviceStatus {
            device_id: dev("D1"),
            status: serde_json::json!({ "batt": batt }),
            received_at: Timestamp::from_unix_micros(T0 + i as i64),
        })
        .await
        .unwrap();
    }
    let s = m.device_statuses().await.unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].status["batt"], 80);
}
