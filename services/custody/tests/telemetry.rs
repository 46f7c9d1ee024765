//! Telemetry end to end through a real server: recorders publish positions, alarms and status over
//! MQTT (rumqttc and `mosquitto_pub`, to the embedded endpoint and through the real Mosquitto) and over
//! gRPC; the command centre reads them from storage, the live WebSocket, the nearest-officer index and
//! GeoJSON tracks.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::*;
use custody_core::DeviceId;
use custody_core::position::Reject;
use custody_proto::v1 as pb;
use futures::{SinkExt, StreamExt};
use prost::Message as _;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A recorder connected over MQTT: its client, the PUBACKs it got and the commands it received.
struct Recorder {
    client: AsyncClient,
    acks: mpsc::UnboundedReceiver<u16>,
    cmds: mpsc::UnboundedReceiver<Value>,
    closed: tokio::sync::watch::Receiver<bool>,
}

/// Connects with a credential `<id>:<secret>` (or none) and waits for the CONNACK.
async fn recorder(addr: SocketAddr, credential: Option<&str>) -> Result<Recorder, String> {
    let mut opts = MqttOptions::new(
        format!("rec-{}", rand::random::<u32>()),
        addr.ip().to_string(),
        addr.port(),
    );
    if let Some(c) = credential {
        let (u, p) = c.rsplit_once(':').unwrap();
        opts.set_credentials(u, p);
    }
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut el) = AsyncClient::new(opts, 256);
    loop {
        match tokio::time::timeout(Duration::from_secs(5), el.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => break,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("no answer".into()),
        }
    }
    let (ack_tx, acks) = mpsc::unbounded_channel();
    let (cmd_tx, cmds) = mpsc::unbounded_channel();
    let (closed_tx, closed) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::PubAck(a))) => {
                    let _ = ack_tx.send(a.pkid);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = cmd_tx.send(serde_json::from_slice(&p.payload).unwrap_or(Value::Null));
                }
                Ok(_) => {}
                Err(_) => {
                    let _ = closed_tx.send(true);
                    return;
                }
            }
        }
    });
    Ok(Recorder {
        client,
        acks,
        cmds,
        closed,
    })
}

impl Recorder {
    /// Publishes QoS 1 and waits for its PUBACK.
    async fn publish(&mut self, topic: &str, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.acks.recv())
            .await
            .expect("a PUBACK within 10 s")
            .unwrap();
    }
}

fn fix(ts: i64, lat: f64, lon: f64) -> Value {
    json!({"ts": ts, "lat": lat, "lon": lon, "acc": 4.0, "speed": 1.2, "batt": 80})
}

fn proto_batch(device: &str, fixes: &[(i64, f64, f64)]) -> Vec<u8> {
    pb::PositionBatch {
        device_id: device.into(),
        seq: 1,
        positions: fixes
            .iter()
            .map(|&(ms, lat, lon)| pb::Position {
                time: Some(prost_types::Timestamp {
                    seconds: ms.div_euclid(1000),
                    nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
                }),
                lat,
                lon,
                ..Default::default()
            })
            .collect(),
    }
    .encode_to_vec()
}

async fn live(app: &TestApp, query: &str) -> Ws {
    // Browsers cannot set headers on a WebSocket: the live feed takes the token in the query.
    let url = format!(
        "{}/api/v1/live?{query}&access_token={}",
        app.http.replace("http://", "ws://"),
        app.token
    );
    let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws
}

/// Reads the live feed until `want` matches a message; panics after 10 s.
async fn next_matching(ws: &mut Ws, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("the live feed sent the awaited event within 10 s")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(&t).unwrap();
            if want(&v) {
                return v;
            }
        }
    }
}

async fn stored(app: &TestApp, device: &str) -> u64 {
    app.tracking
        .meta()
        .count_positions(Some(&DeviceId::parse(device).unwrap()))
        .await
        .unwrap()
}

async fn json_get(app: &TestApp, path: &str) -> Value {
    let r = app.get(path).await;
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap()
}

async fn positions_reach_storage_and_the_live_feed(backends: Backends) {
    let app = spawn_app(backends).await;
    let mqtt = app.mqtt.unwrap();
    let cred = app.add_device("REC-001").await;
    let mut ws = live(&app, "devices=REC-001").await;
    let snapshot = next_matching(&mut ws, |v| v["type"] == "snapshot").await;
    assert_eq!(snapshot["positions"], json!([]));

    let mut rec = recorder(mqtt, Some(&cred)).await.unwrap();
    let t = now_ms();
    // One JSON fix, an array of two, and a protobuf batch of two.
    rec.publish(
        "custody/v1/dev/REC-001/pos",
        fix(t, 30.2741, 120.1551).to_string().into_bytes(),
    )
    .await;
    assert_eq!(
        stored(&app, "REC-001").await,
        1,
        "durable before the PUBACK"
    );
    rec.publish(
        "custody/v1/dev/REC-001/pos",
        json!([
            fix(t + 1000, 30.2742, 120.1552),
            fix(t + 2000, 30.2743, 120.1553)
        ])
        .to_string()
        .into_bytes(),
    )
    .await;
    rec.publish(
        "custody/v1/dev/REC-001/pos",
        proto_batch(
            "REC-001",
            &[(t + 3000, 30.2744, 120.1554), (t + 4000, 30.2745, 120.1555)],
        ),
    )
    .await;
    assert_eq!(stored(&app, "REC-001").await, 5);
    // The same message again (a resend after a lost PUBACK) is stored once.
    rec.publish(
        "custody/v1/dev/REC-001/pos",
        fix(t, 30.2741, 120.1551).to_string().into_bytes(),
    )
    .await;
    assert_eq!(stored(&app, "REC-001").await, 5);

    for i in 0..5 {
        let v = next_matching(&mut ws, |v| v["type"] == "position").await;
        assert_eq!(v["device"], "REC-001");
        let expected_lat = 30.2741 + i as f64 * 0.0001;
        assert!(
            (v["lat"].as_f64().unwrap() - expected_lat).abs() < 1e-9,
            "{v}"
        );
    }

    // mosquitto_pub, a second real client, through the same endpoint with the device's login.
    let (user, secret) = cred.rsplit_once(':').unwrap();
    // tokio's Command: the server answering it runs on this test's runtime.
    let st = tokio::process::Command::new("mosquitto_pub")
        .args(["-h", &mqtt.ip().to_string(), "-p", &mqtt.port().to_string()])
        .args([
            "-u",
            user,
            "-P",
            secret,
            "-q",
            "1",
            "-t",
            "custody/v1/dev/REC-001/pos",
        ])
        .args(["-m", &fix(t + 5000, 30.2746, 120.1556).to_string()])
        .status()
        .await
        .expect("mosquitto_pub (Debian package mosquitto-clients) runs");
    assert!(st.success());
    let v = next_matching(&mut ws, |v| v["type"] == "position").await;
    assert_eq!(v["time"].as_str().map(|s| s.len() > 10), Some(true));
    assert_eq!(stored(&app, "REC-001").await, 6);

    // The latest position is what the map starts from.
    let latest = json_get(&app, "/api/v1/positions/latest").await;
    assert_eq!(latest["count"], 1);
    assert!((latest["items"][0]["lat"].as_f64().unwrap() - 30.2746).abs() < 1e-9);
    app.shutdown().await;
}

#[tokio::test]
async fn positions_reach_storage_and_the_live_feed_on_sqlite() {
    positions_reach_storage_and_the_live_feed(Backends::Embedded).await
}

#[tokio::test]
async fn positions_reach_storage_and_the_live_feed_on_postgres() {
    positions_reach_storage_and_the_live_feed(Backends::Real).await
}

#[tokio::test]
async fn an_unauthenticated_device_is_refused_and_may_not_publish_as_another() {
    let app = spawn_app(Backends::Embedded).await;
    let mqtt = app.mqtt.unwrap();
    let cred = app.add_device("REC-A").await;
    app.add_device("REC-B").await;
    assert!(recorder(mqtt, None).await.is_err(), "no credential");
    let (user, _) = cred.rsplit_once(':').unwrap();
    assert!(
        recorder(mqtt, Some(&format!("{user}:{}", "0".repeat(64))))
            .await
            .is_err()
    );
    // A station credential is not a device credential for another id.
    assert!(
        recorder(
            mqtt,
            Some(&format!("REC-Z:{}", cred.rsplit_once(':').unwrap().1))
        )
        .await
        .is_err()
    );

    let rec = recorder(mqtt, Some(&cred)).await.unwrap();
    let mut closed = rec.closed.clone();
    rec.client
        .publish(
            "custody/v1/dev/REC-B/pos",
            QoS::AtLeastOnce,
            false,
            fix(now_ms(), 30.0, 120.0).to_string(),
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), closed.wait_for(|c| *c))
        .await
        .expect("the endpoint closes a connection that publishes under another device")
        .unwrap();
    assert_eq!(stored(&app, "REC-B").await, 0);

    // A revoked device cannot log in again.
    app.devices
        .disable(&DeviceId::parse("REC-A").unwrap())
        .await
        .unwrap();
    assert!(recorder(mqtt, Some(&cred)).await.is_err());
    app.shutdown().await;
}

#[tokio::test]
async fn malformed_payloads_and_impossible_fixes_are_counted_and_ignored() {
    let app = spawn_app(Backends::Embedded).await;
    let mqtt = app.mqtt.unwrap();
    let cred = app.add_device("REC-M").await;
    let mut rec = recorder(mqtt, Some(&cred)).await.unwrap();
    let topic = "custody/v1/dev/REC-M/pos";
    // Each is acknowledged (so the device does not resend it forever) and dropped.
    rec.publish(topic, b"{\"ts\": 1, \"lat\": ".to_vec()).await;
    rec.publish(topic, vec![0xff, 0xff, 0xff, 0x01]).await;
    rec.publish(topic, proto_batch("REC-OTHER", &[(now_ms(), 30.0, 120.0)]))
        .await;
    rec.publish("owntracks/me/REC-M", b"[1,2]".to_vec()).await;
    rec.publish(
        "custody/v1/dev/REC-M/alarm",
        br#"{"ts":1,"kind":"Not Snake"}"#.to_vec(),
    )
    .await;
    let m = app.tracking.metrics();
    assert_eq!(m.malformed_count("mqtt_json"), 1);
    assert_eq!(m.malformed_count("mqtt_proto"), 2);
    assert_eq!(m.malformed_count("owntracks"), 1);
    assert_eq!(m.malformed_count("alarm"), 1);

    // Impossible fixes in one batch: only the good one is stored; each reason is counted.
    let t = now_ms();
    rec.publish(
        topic,
        json!([
            fix(t, 30.0, 120.0),
            fix(t + 1000, 91.0, 120.0),
            fix(t + 3_600_000, 30.0, 120.0),
            fix(t + 2000, 31.0, 120.0),
            fix(t + 3000, 0.0, 0.0),
        ])
        .to_string()
        .into_bytes(),
    )
    .await;
    assert_eq!(stored(&app, "REC-M").await, 1);
    for r in [
        Reject::LatOutOfRange,
        Reject::FutureTime,
        Reject::TooFast,
        Reject::NullIsland,
    ] {
        assert_eq!(m.rejected(r), 1, "{r}");
    }
    // The connection survived all of it, and the counters are exported.
    rec.publish(
        topic,
        fix(t + 4000, 30.00001, 120.0).to_string().into_bytes(),
    )
    .await;
    assert_eq!(stored(&app, "REC-M").await, 2);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("custody_telemetry_positions_rejected_total{reason=\"too_fast\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("custody_telemetry_messages_malformed_total{source=\"mqtt_proto\"} 2")
    );
    app.shutdown().await;
}

#[tokio::test]
async fn grpc_report_acks_each_batch_after_it_is_durable_and_names_rejected_fixes() {
    let app = spawn_app(Backends::Embedded).await;
    let cred = app.add_device("REC-G").await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let token: tonic::metadata::MetadataValue<_> = format!("Bearer {cred}").parse().unwrap();
    let mut client = pb::telemetry_client::TelemetryClient::with_interceptor(
        channel.clone(),
        move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", token.clone());
            Ok(r)
        },
    );
    let t = now_ms();
    let batches = vec![
        pb::PositionBatch::decode(
            &proto_batch("REC-G", &[(t, 30.1, 120.1), (t + 1000, 30.1001, 120.1)])[..],
        )
        .unwrap(),
        pb::PositionBatch {
            seq: 2,
            ..pb::PositionBatch::decode(
                &proto_batch("", &[(t + 2000, 30.1002, 120.1), (t + 3000, -91.0, 120.1)])[..],
            )
            .unwrap()
        },
    ];
    let mut acks = client
        .report(futures::stream::iter(batches))
        .await
        .unwrap()
        .into_inner();
    let a1 = acks.next().await.unwrap().unwrap();
    assert_eq!((a1.seq, a1.accepted, a1.rejected.len()), (1, 2, 0));
    let a2 = acks.next().await.unwrap().unwrap();
    assert_eq!((a2.seq, a2.accepted), (2, 1));
    assert_eq!(a2.rejected[0].index, 1);
    assert_eq!(a2.rejected[0].reason, "lat_out_of_range");
    assert_eq!(stored(&app, "REC-G").await, 3);

    // Another device's batch on this credential is refused; no credential is UNAUTHENTICATED.
    let err = client
        .report(futures::stream::iter(vec![
            pb::PositionBatch::decode(&proto_batch("REC-X", &[(t + 5000, 30.1, 120.1)])[..])
                .unwrap(),
        ]))
        .await
        .unwrap()
        .into_inner()
        .next()
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    let mut anon = pb::telemetry_client::TelemetryClient::new(channel);
    let err = anon
        .report(futures::stream::iter(Vec::<pb::PositionBatch>::new()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    // Watch streams live events filtered by device.
    let mut watch = anon
        .watch(pb::WatchRequest {
            device_ids: vec!["REC-G".into()],
            area: None,
        })
        .await
        .unwrap()
        .into_inner();
    let mut rec = recorder(app.mqtt.unwrap(), Some(&cred)).await.unwrap();
    rec.publish(
        "custody/v1/dev/REC-G/pos",
        fix(t + 6000, 30.1003, 120.1).to_string().into_bytes(),
    )
    .await;
    let e = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match e.event.unwrap() {
        pb::live_event::Event::Position(p) => {
            assert_eq!(p.device_id, "REC-G");
            assert!((p.position.unwrap().lat - 30.1003).abs() < 1e-9);
        }
        other => panic!("expected a position, got {other:?}"),
    }
    app.shutdown().await;
}

#[tokio::test]
async fn an_sos_is_stored_pushed_live_and_its_acknowledgement_reaches_the_device() {
    let app = spawn_app(Backends::Embedded).await;
    let mqtt = app.mqtt.unwrap();
    let cred = app.add_device("REC-S").await;
    let mut ws = live(&app, "snapshot=false").await;
    let mut rec = recorder(mqtt, Some(&cred)).await.unwrap();
    rec.client
        .subscribe("custody/v1/dev/REC-S/cmd", QoS::AtLeastOnce)
        .await
        .unwrap();
    let t = now_ms();
    rec.publish(
        "custody/v1/dev/REC-S/pos",
        fix(t, 30.2, 120.2).to_string().into_bytes(),
    )
    .await;
    // The SOS key: on the alarm topic without a location (the last fix is used)...
    rec.publish(
        "custody/v1/dev/REC-S/alarm",
        json!({"ts": t + 500, "note": "被围堵"})
            .to_string()
            .into_bytes(),
    )
    .await;
    let a = next_matching(&mut ws, |v| v["type"] == "alarm").await;
    assert_eq!(a["device_id"], "REC-S");
    assert_eq!(a["kind"], "sos");
    assert_eq!(a["lat"], 30.2);
    assert_eq!(a["note"], "被围堵");
    // The SOS-flagged fixes sent with that press are the same alarm, not a second one...
    let flagged = |dt: i64, lat: f64| {
        let mut f = fix(t + dt, lat, 120.2);
        f["sos"] = true.into();
        f
    };
    rec.publish(
        "custody/v1/dev/REC-S/pos",
        json!([flagged(1000, 30.2001), flagged(2000, 30.2002)])
            .to_string()
            .into_bytes(),
    )
    .await;
    // ...while a press two minutes later is a new one: one alarm per press, not per fix.
    rec.publish(
        "custody/v1/dev/REC-S/pos",
        json!([
            fix(t + 60_000, 30.2003, 120.2),
            flagged(122_000, 30.2004),
            flagged(123_000, 30.2005)
        ])
        .to_string()
        .into_bytes(),
    )
    .await;
    next_matching(&mut ws, |v| v["type"] == "alarm" && v["lat"] == 30.2004).await;

    let open = json_get(&app, "/api/v1/alarms?open=true").await;
    let items = open["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{open}");
    let id = items[1]["id"].as_str().unwrap().to_string();
    let r = app
        .http_client
        .post(format!("{}/api/v1/alarms/{id}/ack", app.http))
        .json(&json!({"note": "已派 2 组"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["first"], true);
    assert_eq!(body["sent_to_device"], true);
    let cmd = tokio::time::timeout(Duration::from_secs(5), rec.cmds.recv())
        .await
        .expect("the device gets the acknowledgement on its cmd topic")
        .unwrap();
    assert_eq!(cmd["type"], "alarm_ack");
    assert_eq!(cmd["alarm_id"], id.as_str());
    // The acknowledgement names the logged-in operator, whatever the body says.
    assert_eq!(cmd["acked_by"], "tester");
    let acked = next_matching(&mut ws, |v| {
        v["type"] == "alarm" && !v["acked_at"].is_null()
    })
    .await;
    assert_eq!(acked["id"], id.as_str());
    // A second ack keeps the first; a body that is not JSON is a 400 naming it; an unknown alarm a 404.
    let again: Value = app
        .http_client
        .post(format!("{}/api/v1/alarms/{id}/ack", app.http))
        .json(&json!({"note": "again"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["first"], false);
    assert_eq!(again["alarm"]["acked_by"], "tester");
    let r = app
        .http_client
        .post(format!("{}/api/v1/alarms/{id}/ack", app.http))
        .header("content-type", "application/json")
        .body("{\"note\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("body"));
    let r = app
        .http_client
        .post(format!(
            "{}/api/v1/alarms/{}/ack",
            app.http,
            custody_core::AlarmId::new()
        ))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        json_get(&app, "/api/v1/alarms?open=true").await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    app.shutdown().await;
}

#[tokio::test]
async fn geofences_raise_enter_and_leave_events() {
    let app = spawn_app(Backends::Embedded).await;
    let cred = app.add_device("REC-F").await;
    let r = app
        .http_client
        .post(format!("{}/api/v1/geofences", app.http))
        .json(&json!({
            "name": "西湖区 网格 7",
            "kind": "grid",
            "geometry": {"type": "Polygon", "coordinates": [[[120.10, 30.20], [120.12, 30.20], [120.12, 30.22], [120.10, 30.22], [120.10, 30.20]]]}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let fence: Value = r.json().await.unwrap();
    let mut ws = live(&app, "snapshot=false").await;
    let mut rec = recorder(app.mqtt.unwrap(), Some(&cred)).await.unwrap();
    let t = now_ms();
    for (i, lon) in [120.095, 120.101, 120.105, 120.119, 120.125]
        .into_iter()
        .enumerate()
    {
        rec.publish(
            "custody/v1/dev/REC-F/pos",
            fix(t + i as i64 * 60_000 - 600_000, 30.21, lon)
                .to_string()
                .into_bytes(),
        )
        .await;
    }
    let enter = next_matching(&mut ws, |v| v["type"] == "fence").await;
    assert_eq!(
        (enter["kind"].as_str(), enter["fence_name"].as_str()),
        (Some("enter"), Some("西湖区 网格 7"))
    );
    let leave = next_matching(&mut ws, |v| v["type"] == "fence").await;
    assert_eq!(leave["kind"], "leave");
    let from = chrono::DateTime::from_timestamp_millis(t - 3_600_000)
        .unwrap()
        .to_rfc3339();
    let to = chrono::DateTime::from_timestamp_millis(t + 60_000)
        .unwrap()
        .to_rfc3339();
    let events = json_get(
        &app,
        &format!(
            "/api/v1/geofences/events?device_id=REC-F&from={}&to={}",
            urlenc(&from),
            urlenc(&to)
        ),
    )
    .await;
    let kinds: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["enter", "leave"]);
    assert_eq!(events["items"][0]["fence_id"], fence["id"]);
    // A polygon with two points is refused, naming why.
    let r = app
        .http_client
        .post(format!("{}/api/v1/geofences", app.http))
        .json(&json!({"name": "bad", "geometry": {"type": "Polygon", "coordinates": [[[120.1, 30.2], [120.2, 30.2]]]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("3 distinct points"));
    app.shutdown().await;
}

fn urlenc(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn nearest_officers_and_tracks_answer_in_wgs84_and_gcj02() {
    let app = spawn_app(Backends::Embedded).await;
    let t = now_ms();
    // Three recorders around West Lake, reporting over gRPC-free MQTT JSON.
    for (id, lat, lon) in [
        ("N1", 30.2590, 120.1400),
        ("N2", 30.2600, 120.1500),
        ("N3", 30.3000, 120.2000),
    ] {
        let cred = app.add_device(id).await;
        let mut rec = recorder(app.mqtt.unwrap(), Some(&cred)).await.unwrap();
        rec.publish(
            &format!("custody/v1/dev/{id}/pos"),
            fix(t, lat, lon).to_string().into_bytes(),
        )
        .await;
    }
    let near = json_get(
        &app,
        "/api/v1/officers/nearest?lat=30.2600&lon=120.1490&n=2",
    )
    .await;
    let ids: Vec<&str> = near["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["position"]["device"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["N2", "N1"]);
    let d = near["items"][0]["distance_m"].as_f64().unwrap();
    assert!(
        (d - custody_core::geo::haversine_m(30.26, 120.149, 30.26, 120.15)).abs() < 0.01,
        "{d}"
    );
    // The same question asked on a GCJ-02 map gets the same devices, answered in GCJ-02.
    let (glat, glon) = custody_core::geo::wgs84_to_gcj02(30.2600, 120.1490);
    let near_gcj = json_get(
        &app,
        &format!("/api/v1/officers/nearest?lat={glat}&lon={glon}&n=1&crs=gcj02"),
    )
    .await;
    assert_eq!(near_gcj["items"][0]["position"]["device"], "N2");
    let (elat, elon) = custody_core::geo::wgs84_to_gcj02(30.2600, 120.1500);
    assert!((near_gcj["items"][0]["position"]["lat"].as_f64().unwrap() - elat).abs() < 1e-9);
    assert!((near_gcj["items"][0]["position"]["lon"].as_f64().unwrap() - elon).abs() < 1e-9);
    let r = app.get("/api/v1/officers/nearest?lat=91&lon=0").await;
    assert_eq!(r.status(), 400);

    // A patrol: 10 minutes walking east 1.4 m/s, a 5 minute stop, GPS jitter while standing.
    let cred = app.add_device("WALK").await;
    let mut rec = recorder(app.mqtt.unwrap(), Some(&cred)).await.unwrap();
    let start = t - 3_600_000;
    let m_per_deg_lon = 111_320.0 * 30.25f64.to_radians().cos();
    let mut fixes = Vec::new();
    for s in 0..600 {
        fixes.push(fix(
            start + s * 1000,
            30.25,
            120.10 + 1.4 * s as f64 / m_per_deg_lon,
        ));
    }
    let end_lon = 120.10 + 1.4 * 599.0 / m_per_deg_lon;
    for s in 0..300 {
        let jitter = if s % 2 == 0 { 0.00001 } else { -0.00001 };
        fixes.push(fix(start + (600 + s) * 1000, 30.25 + jitter, end_lon));
    }
    for chunk in fixes.chunks(100) {
        rec.publish(
            "custody/v1/dev/WALK/pos",
            json!(chunk).to_string().into_bytes(),
        )
        .await;
    }
    let from = chrono::DateTime::from_timestamp_millis(start)
        .unwrap()
        .to_rfc3339();
    let to = chrono::DateTime::from_timestamp_millis(t)
        .unwrap()
        .to_rfc3339();
    let q = format!("from={}&to={}", urlenc(&from), urlenc(&to));
    let track = json_get(&app, &format!("/api/v1/devices/WALK/track?{q}&simplify=5")).await;
    assert_eq!(track["type"], "FeatureCollection");
    let line = &track["features"][0];
    assert_eq!(line["geometry"]["type"], "LineString");
    assert_eq!(line["properties"]["points_stored"], 900);
    let dist = line["properties"]["distance_m"].as_f64().unwrap();
    assert!(
        (dist - 1.4 * 599.0).abs() < 1.4 * 599.0 * 0.01,
        "mileage {dist}"
    );
    assert!(
        line["geometry"]["coordinates"].as_array().unwrap().len() <= 4,
        "a straight walk simplifies"
    );
    let stop = &track["features"][1];
    assert_eq!(stop["properties"]["kind"], "stop");
    assert!(stop["properties"]["duration_s"].as_f64().unwrap() >= 290.0);
    let gcj = json_get(&app, &format!("/api/v1/devices/WALK/track?{q}&crs=gcj02")).await;
    let c0 = &gcj["features"][0]["geometry"]["coordinates"][0];
    let (g_lat, g_lon) = custody_core::geo::wgs84_to_gcj02(30.25, 120.10);
    assert!(
        (c0[0].as_f64().unwrap() - g_lon).abs() < 1e-9
            && (c0[1].as_f64().unwrap() - g_lat).abs() < 1e-9
    );
    let r = app
        .get(&format!(
            "/api/v1/devices/WALK/track?from={}&to={}",
            urlenc(&to),
            urlenc(&from)
        ))
        .await;
    assert_eq!(r.status(), 400);
    app.shutdown().await;
}

#[tokio::test]
async fn a_slow_live_client_is_told_it_lagged_and_never_slows_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(Backends::Embedded, dir.path().join("data"));
    config.live_queue = 16;
    let app = spawn_with(config, Some(dir)).await;
    let cred = app.add_device("REC-L").await;
    let mut ws = live(&app, "snapshot=false").await;
    let mut rec = recorder(app.mqtt.unwrap(), Some(&cred)).await.unwrap();
    let t = now_ms() - 600_000;
    // The client reads nothing while 400 fixes are stored.
    let started = std::time::Instant::now();
    for b in 0..4 {
        let batch: Vec<Value> = (0..100)
            .map(|i| {
                fix(
                    t + (b * 100 + i) * 1000,
                    30.0 + (b * 100 + i) as f64 * 1e-5,
                    120.0,
                )
            })
            .collect();
        rec.publish(
            "custody/v1/dev/REC-L/pos",
            json!(batch).to_string().into_bytes(),
        )
        .await;
    }
    assert_eq!(stored(&app, "REC-L").await, 400);
    assert!(started.elapsed() < Duration::from_secs(10));
    // How many events the socket buffers absorb varies; the writer publishes each batch of 100 at
    // once, far more than the 16 this client may fall behind.
    let lagged = next_matching(&mut ws, |v| v["type"] == "lagged").await;
    assert!(lagged["missed"].as_u64().unwrap() >= 1, "{lagged}");
    assert!(app.tracking.metrics().live_lagged.get() >= 1);
    // After the lag notice the client is served again, from the oldest event still held.
    let p = next_matching(&mut ws, |v| v["type"] == "position").await;
    assert_eq!(p["device"], "REC-L");
    ws.send(Message::Close(None)).await.unwrap();
    app.shutdown().await;
}

#[tokio::test]
async fn owntracks_and_status_arrive_through_the_real_mosquitto() {
    let broker =
        std::env::var("CUSTODY_TEST_MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into());
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(Backends::Real, dir.path().join("data"));
    config.database_url = Some(custody_store::testing::fresh_postgres_url().await);
    let tag = format!("{:08x}", rand::random::<u32>());
    config.mqtt_url = Some(broker.clone());
    config.mqtt_client_id = format!("custody-test-{tag}");
    config.mqtt_share_group = format!("g{tag}");
    let app = spawn_with(config, Some(dir)).await;
    let device = format!("OT-{tag}");
    let mut ws = live(&app, &format!("devices={device}&snapshot=false")).await;
    let (host, port) = broker
        .strip_prefix("mqtt://")
        .unwrap()
        .rsplit_once(':')
        .unwrap();
    let pubm = |topic: String, msg: String, retain: bool| {
        let mut c = std::process::Command::new("mosquitto_pub");
        c.args(["-h", host, "-p", port, "-q", "1", "-t", &topic, "-m", &msg]);
        if retain {
            c.arg("-r");
        }
        assert!(c.status().expect("mosquitto_pub runs").success());
    };
    let tst = now_ms() / 1000;
    // The bridge subscribes after connecting: publish until the first fix shows.
    let mut seen = false;
    for i in 0..50 {
        pubm(
            format!("owntracks/alice/{device}"),
            json!({"_type": "location", "lat": 39.9087, "lon": 116.3975, "tst": tst - 50 + i, "vel": 18, "tid": "al"}).to_string(),
            false,
        );
        if stored(&app, &device).await > 0 {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "an OwnTracks fix published to Mosquitto was stored");
    let p = next_matching(&mut ws, |v| v["type"] == "position").await;
    assert!((p["speed_mps"].as_f64().unwrap() - 5.0).abs() < 1e-4, "{p}");
    pubm(
        format!("custody/v1/dev/{device}/status"),
        json!({"batt": 64, "recording": true}).to_string(),
        true,
    );
    let s = next_matching(&mut ws, |v| v["type"] == "status").await;
    assert_eq!(s["status"]["batt"], 64);
    // Clear the retained status so that the broker does not keep it forever.
    pubm(
        format!("custody/v1/dev/{device}/status"),
        String::new(),
        true,
    );
    app.shutdown().await;
}

#[tokio::test]
async fn the_broker_hooks_let_devices_in_with_their_credential_and_only_under_their_topics() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("mqtt.pw");
    std::fs::write(&pw, "bridge-secret\n").unwrap();
    let mut config = config_for(Backends::Embedded, dir.path().join("data"));
    config.mqtt_password_file = Some(pw);
    let app = spawn_with(config, Some(dir)).await;
    let cred = app.add_device("REC-H").await;
    let (user, secret) = cred.rsplit_once(':').unwrap();
    let post = |path: &'static str, body: Value| {
        let c = app.http_client.clone();
        let url = format!("{}{path}", app.http);
        async move {
            c.post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()["result"]
                .clone()
        }
    };
    assert_eq!(
        post(
            "/api/v1/mqtt/auth",
            json!({"username": user, "password": secret, "clientid": "x"})
        )
        .await,
        "allow"
    );
    assert_eq!(
        post(
            "/api/v1/mqtt/auth",
            json!({"username": user, "password": "0".repeat(64)})
        )
        .await,
        "deny"
    );
    assert_eq!(
        post(
            "/api/v1/mqtt/auth",
            json!({"username": "custody", "password": "bridge-secret"})
        )
        .await,
        "allow"
    );
    assert_eq!(
        post(
            "/api/v1/mqtt/auth",
            json!({"username": "custody", "password": "guess"})
        )
        .await,
        "deny"
    );
    let (st_user, st_secret) = app.station_credential.rsplit_once(':').unwrap();
    assert_eq!(
        post(
            "/api/v1/mqtt/auth",
            json!({"username": st_user, "password": st_secret})
        )
        .await,
        "allow"
    );
    let acl =
        |topic: &str, action: &str| json!({"username": user, "topic": topic, "action": action});
    assert_eq!(
        post(
            "/api/v1/mqtt/acl",
            acl("custody/v1/dev/REC-H/pos", "publish")
        )
        .await,
        "allow"
    );
    assert_eq!(
        post(
            "/api/v1/mqtt/acl",
            acl("custody/v1/dev/REC-X/pos", "publish")
        )
        .await,
        "deny"
    );
    assert_eq!(
        post(
            "/api/v1/mqtt/acl",
            acl("custody/v1/dev/REC-H/cmd", "subscribe")
        )
        .await,
        "allow"
    );
    assert_eq!(
        post("/api/v1/mqtt/acl", acl("custody/v1/dev/+/pos", "subscribe")).await,
        "deny"
    );
    assert_eq!(
        post("/api/v1/mqtt/acl", json!({"username": "custody", "topic": "$share/custody/custody/v1/dev/+/pos", "action": "subscribe"})).await,
        "allow"
    );
    assert_eq!(
        post(
            "/api/v1/mqtt/acl",
            json!({"username": "nobody", "topic": "custody/v1/dev/nobody/pos", "action": "publish"})
        )
        .await,
        "deny"
    );
    app.shutdown().await;
}
