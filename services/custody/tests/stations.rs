//! Docking stations over MQTT and HTTP: a registered station logs in to the embedded endpoint with its
//! credential, its retained slot report and heartbeats are recorded and served at /api/v1/stations; the
//! same through an external broker (the real Mosquitto).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::*;
use custody_core::station::{
    Heartbeat, OfficerBinding, REPORT_VERSION, SlotState, SlotStatus, SlotsReport,
};
use custody_core::{BadgeNo, DeviceId, StationId, Timestamp};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::time::Duration;

fn report(station: &str, files_pending: u64) -> SlotsReport {
    SlotsReport {
        v: REPORT_VERSION,
        station_id: StationId::parse(station).unwrap(),
        at: Timestamp::from_unix_micros(1_795_000_000_000_000),
        slots: vec![SlotStatus {
            slot: "01".into(),
            state: SlotState::Offloading,
            device_id: Some(DeviceId::parse("ZFY00012").unwrap()),
            officer: Some(OfficerBinding {
                badge: BadgeNo::parse("0123456").unwrap(),
                name: "张三".into(),
                unit_no: "440304000000".into(),
                unit_name: "福田大队".into(),
            }),
            docked_at: None,
            clock_offset_ms: Some(1200),
            files_pending,
            bytes_pending: 1000,
            files_done: 2,
            bytes_done: 500,
            progress: 0.33,
            last_error: None,
        }],
    }
}

fn heartbeat(station: &str) -> Heartbeat {
    Heartbeat {
        v: REPORT_VERSION,
        station_id: StationId::parse(station).unwrap(),
        at: Timestamp::from_unix_micros(1_795_000_000_000_000),
        online: true,
        version: "test".into(),
        uptime_s: 5,
        interval_s: 10,
        uploads_active: 1,
        files_pending: 3,
        bytes_pending: 1000,
    }
}

/// Connects as `user`/`password` and waits for the broker's answer: Ok once accepted.
async fn connect(
    addr: std::net::SocketAddr,
    user: &str,
    password: &str,
) -> Result<AsyncClient, String> {
    let mut opts = MqttOptions::new(
        format!("t-{}", rand::random::<u32>()),
        addr.ip().to_string(),
        addr.port(),
    );
    opts.set_credentials(user, password);
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut el) = AsyncClient::new(opts, 16);
    loop {
        match tokio::time::timeout(Duration::from_secs(5), el.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => break,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("no answer".into()),
        }
    }
    tokio::spawn(async move { while el.poll().await.is_ok() {} });
    Ok(client)
}

async fn station_json(app: &TestApp, id: &str) -> serde_json::Value {
    app.get(&format!("/api/v1/stations/{id}"))
        .await
        .json()
        .await
        .unwrap()
}

/// Polls the station until `ok` holds for its JSON.
async fn wait_for(
    app: &TestApp,
    id: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    for _ in 0..250 {
        let v = station_json(app, id).await;
        if ok(&v) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "station {id} never got there: {}",
        station_json(app, id).await
    );
}

#[tokio::test]
async fn a_station_publishing_over_the_embedded_endpoint_is_shown_with_its_slots_and_heartbeat() {
    let app = spawn_app(Backends::Embedded).await;
    let mqtt = app.mqtt.expect("the embedded endpoint runs by default");
    let (user, secret) = app.station_credential.rsplit_once(':').unwrap();
    let client = connect(mqtt, user, secret).await.unwrap();

    let before = station_json(&app, "ST-01").await;
    assert_eq!(before["online"], false, "{before}");
    assert!(before["slots"].is_null(), "{before}");

    client
        .publish(
            "custody/v1/station/ST-01/slots",
            QoS::AtLeastOnce,
            true,
            report("ST-01", 3).encode(),
        )
        .await
        .unwrap();
    client
        .publish(
            "custody/v1/station/ST-01/heartbeat",
            QoS::AtLeastOnce,
            false,
            heartbeat("ST-01").encode(),
        )
        .await
        .unwrap();
    let v = wait_for(&app, "ST-01", |v| {
        v["online"] == true && !v["slots"].is_null()
    })
    .await;
    let slot = &v["slots"]["slots"][0];
    assert_eq!(slot["device_id"], "ZFY00012");
    assert_eq!(slot["officer"]["badge"], "0123456");
    assert_eq!(slot["officer"]["name"], "张三");
    assert_eq!(slot["files_pending"], 3);
    assert_eq!(slot["state"], "offloading");
    assert_eq!(v["heartbeat"]["uploads_active"], 1);

    // A report naming another station is dropped; the one shown stays.
    client
        .publish(
            "custody/v1/station/ST-01/slots",
            QoS::AtLeastOnce,
            true,
            report("ST-02", 9).encode(),
        )
        .await
        .unwrap();
    client
        .publish(
            "custody/v1/station/ST-01/slots",
            QoS::AtLeastOnce,
            true,
            report("ST-01", 1).encode(),
        )
        .await
        .unwrap();
    let v = wait_for(&app, "ST-01", |v| {
        v["slots"]["slots"][0]["files_pending"] == 1
    })
    .await;
    assert_eq!(v["id"], "ST-01");

    // The station list pages, and an unknown station is a 404 naming it.
    app.add_station("ST-02").await;
    let page: serde_json::Value = app
        .get("/api/v1/stations?limit=1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["next_cursor"], "ST-01");
    let rest: serde_json::Value = app
        .get("/api/v1/stations?limit=1&cursor=ST-01")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rest["items"][0]["id"], "ST-02");
    assert!(rest["next_cursor"].is_null());
    let missing = app.get("/api/v1/stations/ST-99").await;
    assert_eq!(missing.status(), 404);
    assert!(missing.text().await.unwrap().contains("ST-99"));
    app.shutdown().await;
}

#[tokio::test]
async fn a_wrong_or_revoked_station_credential_cannot_log_in_to_mqtt() {
    let app = spawn_app(Backends::Embedded).await;
    let mqtt = app.mqtt.unwrap();
    let (user, secret) = app.station_credential.rsplit_once(':').unwrap();
    assert!(connect(mqtt, user, &"0".repeat(64)).await.is_err());
    assert!(connect(mqtt, "ST-77", secret).await.is_err());
    assert!(connect(mqtt, user, "not-hex").await.is_err());
    app.stations
        .disable(&StationId::parse("ST-01").unwrap())
        .await
        .unwrap();
    assert!(connect(mqtt, user, secret).await.is_err());
    app.shutdown().await;
}

#[tokio::test]
async fn station_status_arrives_through_an_external_broker() {
    let broker =
        std::env::var("CUSTODY_TEST_MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into());
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(Backends::Embedded, dir.path().join("data"));
    let tag = format!("{:08x}", rand::random::<u32>());
    config.mqtt_url = Some(broker.clone());
    config.mqtt_client_id = format!("custody-test-{tag}");
    config.mqtt_share_group = format!("g{tag}");
    let app = spawn_with(config, Some(dir)).await;
    assert!(
        app.mqtt.is_none(),
        "no embedded endpoint beside an external broker"
    );
    // Retained messages outlive test runs on a real broker: a fresh station id per run.
    let id = format!("ST-{tag}");
    app.add_station(&id).await;
    // The bridge subscribes after connecting; publish until the report shows.
    let (host, port) = broker
        .strip_prefix("mqtt://")
        .unwrap()
        .rsplit_once(':')
        .unwrap();
    let payload = String::from_utf8(report(&id, 4).encode()).unwrap();
    for _ in 0..50 {
        let st = std::process::Command::new("mosquitto_pub")
            .args(["-h", host, "-p", port, "-q", "1", "-r"])
            .args([
                "-t",
                &format!("custody/v1/station/{id}/slots"),
                "-m",
                &payload,
            ])
            .status()
            .expect("mosquitto_pub (Debian package mosquitto-clients) runs");
        assert!(st.success());
        let v = station_json(&app, &id).await;
        if !v["slots"].is_null() {
            assert_eq!(v["slots"]["slots"][0]["files_pending"], 4);
            // Clear the retained message so that the broker does not keep it forever.
            std::process::Command::new("mosquitto_pub")
                .args(["-h", host, "-p", port, "-r", "-n"])
                .args(["-t", &format!("custody/v1/station/{id}/slots")])
                .status()
                .unwrap();
            app.shutdown().await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the slots report never arrived through {broker}");
}

#[tokio::test]
async fn a_malformed_broker_url_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(Backends::Embedded, dir.path().join("data"));
    config.mqtt_url = Some("tcp://broker:1883".into());
    let e = custody::build(config).await.unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("mqtt_url") && msg.contains("tcp://broker:1883"),
        "{msg}"
    );
}
