//! The embedded endpoint, over real sockets: rumqttc and mosquitto_pub as clients, raw packets made with
//! rumqttc's codec where a client library would not misbehave on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use custody_mqtt::{EndpointConfig, QoS, Refusal};
use rumqttc::mqttbytes::v4::{Connect, ConnectReturnCode, LastWill, Packet, Publish, Subscribe};
use rumqttc::{ConnectionError, Event, Incoming, SubscribeReasonCode};
use std::time::{Duration, Instant};

const SLOTS_1: &str = "custody/v1/station/ST-1/slots";

/// A CONNECT as station-1 with the given client id, keep-alive and will.
fn connect_packet(client_id: &str, keep_alive: u16, will: Option<LastWill>) -> Packet {
    let mut c = Connect::new(client_id);
    c.keep_alive = keep_alive;
    c.last_will = will;
    c.set_login("station-1", PASSWORD);
    Packet::Connect(c)
}

async fn raw_connected(
    addr: std::net::SocketAddr,
    client_id: &str,
    keep_alive: u16,
    will: Option<LastWill>,
) -> Raw {
    let mut raw = Raw::connect(addr).await;
    raw.send(connect_packet(client_id, keep_alive, will)).await;
    match raw.recv(2000).await {
        Some(Packet::ConnAck(ack)) => assert_eq!(ack.code, ConnectReturnCode::Success),
        other => panic!("expected connack, got {other:?}"),
    }
    raw
}

#[tokio::test]
async fn a_station_publishing_qos1_to_its_own_slots_topic_is_handled_and_acked() {
    let (handler, mut calls) = TestHandler::new();
    let app = spawn_endpoint(handler).await;
    let (client, mut el) = client(app.port(), "st1", "station-1");
    client
        .publish(SLOTS_1, QoS::AtLeastOnce, true, "{\"slots\":[]}")
        .await
        .unwrap();
    wait_for(&mut el, 3000, |e| {
        matches!(e, Event::Incoming(Incoming::PubAck(_))).then_some(())
    })
    .await;

    let call = next_call(&mut calls, 1).await;
    assert_eq!(call.from, Some(station("ST-1")));
    assert_eq!(call.msg.topic, SLOTS_1);
    assert_eq!(call.msg.payload, payload("{\"slots\":[]}"));
    assert_eq!(call.msg.qos, 1);
    assert!(call.msg.retain);
    assert_eq!(
        app.endpoint
            .counters()
            .accepted
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn mosquitto_pub_with_the_right_password_exits_zero_and_with_a_wrong_one_does_not() {
    let (handler, mut calls) = TestHandler::new();
    let app = spawn_endpoint(handler).await;
    let port = app.port().to_string();
    let run = |password: &'static str| {
        let port = port.clone();
        async move {
            tokio::process::Command::new("mosquitto_pub")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-u",
                    "station-1",
                    "-P",
                    password,
                ])
                .args(["-q", "1", "-t", SLOTS_1, "-m", "from-cli"])
                .output()
                .await
                .expect("mosquitto_pub is installed (apt-get install mosquitto-clients)")
        }
    };

    let ok = run(PASSWORD).await;
    assert!(ok.status.success(), "mosquitto_pub failed: {ok:?}");
    let call = next_call(&mut calls, 1).await;
    assert_eq!(call.msg.payload, payload("from-cli"));
    assert_eq!(call.from, Some(station("ST-1")));

    let refused = run("wrong").await;
    assert!(
        !refused.status.success(),
        "wrong password accepted: {refused:?}"
    );
    assert_no_call(&mut calls, 200).await;
}

#[tokio::test]
async fn the_puback_is_not_sent_before_the_handler_returns() {
    let (handler, mut calls, gate) = TestHandler::gated();
    let app = spawn_endpoint(handler).await;
    let (client, mut el) = client(app.port(), "st1", "station-1");
    client
        .publish(SLOTS_1, QoS::AtLeastOnce, false, "slow")
        .await
        .unwrap();

    let early = tokio::time::timeout(Duration::from_millis(300), async {
        loop {
            if let Event::Incoming(Incoming::PubAck(_)) = el.poll().await.unwrap() {
                return;
            }
        }
    })
    .await;
    assert!(
        early.is_err(),
        "puback sent while the handler was still storing"
    );

    gate.add_permits(1);
    wait_for(&mut el, 3000, |e| {
        matches!(e, Event::Incoming(Incoming::PubAck(_))).then_some(())
    })
    .await;
    assert_eq!(next_call(&mut calls, 1).await.msg.payload, payload("slow"));
}

#[tokio::test]
async fn a_wrong_password_is_refused_and_nothing_is_handled() {
    let (handler, mut calls) = TestHandler::new();
    let app = spawn_endpoint(handler).await;
    let (client, mut el) = rumqttc::AsyncClient::new(
        options(app.port(), "st1", "station-1", "not-the-password"),
        16,
    );
    client
        .publish(SLOTS_1, QoS::AtLeastOnce, false, "x")
        .await
        .unwrap();
    match el.poll().await {
        Err(ConnectionError::ConnectionRefused(code)) => {
            assert_eq!(code, ConnectReturnCode::BadUserNamePassword)
        }
        other => panic!("expected refusal, got {other:?}"),
    }
    assert_no_call(&mut calls, 200).await;
    assert_eq!(
        app.endpoint
            .counters()
            .refused_auth
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn publishing_under_another_stations_topic_closes_the_connection_and_nothing_is_handled() {
    let (handler, mut calls) = TestHandler::new();
    let app = spawn_endpoint(handler).await;
    let (client, mut el) = client(app.port(), "st1", "station-1");
    client
        .publish(
            "custody/v1/station/ST-2/slots",
            QoS::AtLeastOnce,
            false,
            "forged",
        )
        .await
        .unwrap();
    wait_for_close(&mut el, 3000).await;
    assert_no_call(&mut calls, 200).await;
    assert_eq!(
        app.endpoint
            .counters()
            .acl_violations
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn a_malformed_message_is_acked_dropped_and_counted() {
    let (handler, mut calls) = TestHandler::new();
    handler.refuse_next(SLOTS_1, Refusal::Malformed("not json".into()));
    let app = spawn_endpoint(handler).await;
    let (client, mut el) = client(app.port(), "st1", "station-1");
    client
        .publish(SLOTS_1, QoS::AtLeastOnce, false, "{{{")
        .await
        .unwrap();
    wait_for(&mut el, 3000, |e| {
        matches!(e, Event::Incoming(Incoming::PubAck(_))).then_some(())
    })
    .await;
    let call = next_call(&mut calls, 1).await;
    assert!(matches!(call.outcome, Err(Refusal::Malformed(_))));
    let counters = app.endpoint.counters();
    assert_eq!(
        counters
            .malformed
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        counters.accepted.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[tokio::test]
async fn an_unavailable_handler_closes_the_connection_without_ack_and_the_client_resends_after_reconnecting()
 {
    let (handler, mut calls) = TestHandler::new();
    handler.refuse_next(SLOTS_1, Refusal::Unavailable("database down".into()));
    let app = spawn_endpoint(handler).await;
    // A persistent session: rumqttc resends unacked publishes only when the server says it kept it.
    let mut o = options(app.port(), "st1-persistent", "station-1", PASSWORD);
    o.set_clean_session(false);
    let (client, mut el) = rumqttc::AsyncClient::new(o, 16);
    client
        .publish(SLOTS_1, QoS::AtLeastOnce, false, "important")
        .await
        .unwrap();

    wait_for_close(&mut el, 3000).await;
    let first = next_call(&mut calls, 1).await;
    assert!(matches!(first.outcome, Err(Refusal::Unavailable(_))));

    // Polling again reconnects and resends.
    let resumed = wait_for(&mut el, 3000, |e| match e {
        Event::Incoming(Incoming::ConnAck(ack)) => Some(ack.session_present),
        _ => None,
    })
    .await;
    assert!(resumed, "server keeps the persistent session in memory");
    wait_for(&mut el, 3000, |e| {
        matches!(e, Event::Incoming(Incoming::PubAck(_))).then_some(())
    })
    .await;
    let second = next_call(&mut calls, 1).await;
    assert_eq!(second.msg.payload, payload("important"));
    assert!(second.outcome.is_ok());
}

fn offline_will() -> LastWill {
    LastWill::new(
        "custody/v1/station/ST-1/heartbeat",
        "offline",
        QoS::AtLeastOnce,
        false,
    )
}

#[tokio::test]
async fn the_will_is_handed_over_when_the_socket_dies_without_disconnect() {
    let (handler, mut calls) = TestHandler::new();
    let app = spawn_endpoint(handler).await;
    let raw = raw_connected(app.addr, "st1-will", 30, Some(offline_will())).await;
    drop(raw);
    let call = next_call(&mut calls, 2).await;
    assert_eq!(call.from, Some(station("ST-1")));
    assert_eq!(call.msg.topic, "custody/v1/station/ST-1/heartbeat");
    assert_eq!(call.msg.payload, payload("offline"));
}

#[tokio::test]
async fn the_will_is_discarded_after_a_clean_disconnect() {
    let (handler, mut calls) = TestHandler::new();
    let app = spawn_endpoint(handler).await;
    let mut raw = raw_connected(app.addr, "st1-will", 30, Some(offline_will())).await;
    raw.send(Packet::Disconnect).await;
    assert!(
        raw.recv(2000).await.is_none(),
        "server closes after disconnect"
    );
    assert_no_call(&mut calls, 300).await;
}

#[tokio::test]
async fn a_will_outside_the_clients_own_topics_refuses_the_connect() {
    let (handler, _calls) = TestHandler::new();
    let app = spawn_endpoint(handler).await;
    let mut raw = Raw::connect(app.addr).await;
    let will = LastWill::new(
        "custody/v1/station/ST-2/heartbeat",
        "x",
        QoS::AtMostOnce,
        false,
    );
    raw.send(connect_packet("st1", 30, Some(will))).await;
    match raw.recv(2000).await {
        Some(Packet::ConnAck(ack)) => assert_eq!(ack.code, ConnectReturnCode::NotAuthorized),
        other => panic!("expected refusing connack, got {other:?}"),
    }
    assert!(raw.recv(2000).await.is_none());
}

#[tokio::test]
async fn garbage_bytes_close_that_connection_while_another_client_keeps_working() {
    let (handler, mut calls) = TestHandler::new();
    let app = spawn_endpoint(handler).await;
    let (client, mut el) = client(app.port(), "st1", "station-1");
    wait_for(&mut el, 3000, |e| {
        matches!(e, Event::Incoming(Incoming::ConnAck(_))).then_some(())
    })
    .await;

    let mut before_connect = Raw::connect(app.addr).await;
    // A complete frame of packet type 0, which does not exist.
    before_connect
        .send_bytes(&[0x00, 0x03, 0xDE, 0xAD, 0xBE])
        .await;
    assert!(before_connect.recv(2000).await.is_none());

    let mut after_connect = raw_connected(app.addr, "st2", 30, None).await;
    // A remaining length longer than the four bytes MQTT allows.
    after_connect
        .send_bytes(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01])
        .await;
    assert!(after_connect.recv(2000).await.is_none());

    client
        .publish(SLOTS_1, QoS::AtLeastOnce, false, "still here")
        .await
        .unwrap();
    wait_for(&mut el, 3000, |e| {
        matches!(e, Event::Incoming(Incoming::PubAck(_))).then_some(())
    })
    .await;
    assert_eq!(
        next_call(&mut calls, 1).await.msg.payload,
        payload("still here")
    );
}

#[tokio::test]
async fn an_oversized_packet_closes_the_connection_before_it_is_read() {
    let (handler, mut calls) = TestHandler::new();
    let config = EndpointConfig {
        max_packet_bytes: 1024,
        ..EndpointConfig::default()
    };
    let app = spawn_endpoint_with(handler, config).await;
    let mut raw = raw_connected(app.addr, "st1", 30, None).await;
    let mut big = Publish::new(SLOTS_1, QoS::AtLeastOnce, vec![b'x'; 4096]);
    big.pkid = 1;
    raw.send(Packet::Publish(big)).await;
    assert!(raw.recv(2000).await.is_none());
    assert_no_call(&mut calls, 200).await;
}

#[tokio::test]
async fn keepalive_timeout_closes_a_silent_connection() {
    let (handler, mut calls) = TestHandler::new();
    let app = spawn_endpoint(handler).await;
    let mut raw = raw_connected(app.addr, "st1-silent", 1, Some(offline_will())).await;
    let start = Instant::now();
    assert!(raw.recv(4000).await.is_none(), "silent connection closed");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(1200) && waited < Duration::from_millis(3000),
        "closed after {waited:?}, expected about 1.5 s"
    );
    // A keep-alive timeout is an unclean close: the will goes to the handler.
    assert_eq!(
        next_call(&mut calls, 1).await.msg.payload,
        payload("offline")
    );
}

#[tokio::test]
async fn a_second_connection_with_the_same_client_id_takes_over_the_first() {
    let (handler, mut calls) = TestHandler::new();
    let app = spawn_endpoint(handler).await;
    let mut first = raw_connected(app.addr, "st1-same", 30, Some(offline_will())).await;
    let _second = raw_connected(app.addr, "st1-same", 30, None).await;
    assert!(first.recv(2000).await.is_none(), "first connection closed");
    // The client is back on the new connection, so its "offline" will is not handed over.
    assert_no_call(&mut calls, 300).await;
}

#[tokio::test]
async fn a_client_subscribed_to_its_own_cmd_topic_receives_what_the_endpoint_publishes() {
    let (handler, _calls) = TestHandler::new();
    let app = spawn_endpoint(handler).await;
    let cmd = "custody/v1/station/ST-1/cmd";
    let (client, mut el) = client(app.port(), "st1", "station-1");
    client.subscribe(cmd, QoS::ExactlyOnce).await.unwrap();
    let codes = wait_for(&mut el, 3000, |e| match e {
        Event::Incoming(Incoming::SubAck(ack)) => Some(ack.return_codes.clone()),
        _ => None,
    })
    .await;
    assert_eq!(codes, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]);

    let delivered = app
        .endpoint
        .publish(cmd, payload("{\"cmd\":\"reboot\"}"), QoS::AtLeastOnce);
    assert_eq!(delivered, 1);
    let got = wait_for(&mut el, 3000, |e| match e {
        Event::Incoming(Incoming::Publish(p)) => Some(p.clone()),
        _ => None,
    })
    .await;
    assert_eq!(got.topic, cmd);
    assert_eq!(got.qos, QoS::AtLeastOnce);
    assert_eq!(got.payload, payload("{\"cmd\":\"reboot\"}"));
    // Nobody else subscribed to station 2's commands.
    assert_eq!(
        app.endpoint.publish(
            "custody/v1/station/ST-2/cmd",
            payload("x"),
            QoS::AtLeastOnce
        ),
        0
    );
}

#[tokio::test]
async fn subscribing_to_another_clients_cmd_topic_or_a_wildcard_is_refused_in_the_suback() {
    let (handler, _calls) = TestHandler::new();
    let app = spawn_endpoint(handler).await;
    let mut raw = raw_connected(app.addr, "st1", 30, None).await;
    let mut sub = Subscribe::new("custody/v1/station/ST-2/cmd", QoS::AtLeastOnce);
    sub.add("custody/v1/station/+/cmd".into(), QoS::AtLeastOnce);
    sub.add("custody/v1/station/ST-1/cmd".into(), QoS::AtMostOnce);
    sub.pkid = 7;
    raw.send(Packet::Subscribe(sub)).await;
    match raw.recv(2000).await {
        Some(Packet::SubAck(ack)) => {
            assert_eq!(ack.pkid, 7);
            assert_eq!(
                ack.return_codes,
                vec![
                    SubscribeReasonCode::Failure,
                    SubscribeReasonCode::Failure,
                    SubscribeReasonCode::Success(QoS::AtMostOnce),
                ]
            );
        }
        other => panic!("expected suback, got {other:?}"),
    }
    assert_eq!(
        app.endpoint.publish(
            "custody/v1/station/ST-2/cmd",
            payload("x"),
            QoS::AtLeastOnce
        ),
        0
    );
}

#[tokio::test]
async fn qos2_is_handed_over_once_even_when_the_publish_is_resent_before_pubrel() {
    let (handler, mut calls) = TestHandler::new();
    let app = spawn_endpoint(handler).await;
    let mut raw = raw_connected(app.addr, "st1", 30, None).await;
    let mut p = Publish::new(SLOTS_1, QoS::ExactlyOnce, "exactly");
    p.pkid = 42;
    raw.send(Packet::Publish(p.clone())).await;
    assert!(matches!(raw.recv(2000).await, Some(Packet::PubRec(r)) if r.pkid == 42));
    p.dup = true;
    raw.send(Packet::Publish(p)).await;
    assert!(matches!(raw.recv(2000).await, Some(Packet::PubRec(r)) if r.pkid == 42));
    raw.send(Packet::PubRel(rumqttc::mqttbytes::v4::PubRel::new(42)))
        .await;
    assert!(matches!(raw.recv(2000).await, Some(Packet::PubComp(c)) if c.pkid == 42));
    assert_eq!(next_call(&mut calls, 1).await.msg.qos, 2);
    assert_no_call(&mut calls, 200).await;
}

#[tokio::test]
async fn shutdown_lets_the_message_being_stored_finish_and_acks_it() {
    let (handler, mut calls, gate) = TestHandler::gated();
    let mut app = spawn_endpoint(handler).await;
    let mut raw = raw_connected(app.addr, "st1", 30, None).await;
    let mut p = Publish::new(SLOTS_1, QoS::AtLeastOnce, "in flight");
    p.pkid = 5;
    raw.send(Packet::Publish(p)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let serving = app.begin_stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!serving.is_finished(), "serve waits for the handler call");
    gate.add_permits(1);
    assert!(matches!(raw.recv(2000).await, Some(Packet::PubAck(a)) if a.pkid == 5));
    assert!(
        raw.recv(2000).await.is_none(),
        "connection closed for shutdown"
    );
    tokio::time::timeout(Duration::from_secs(3), serving)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        next_call(&mut calls, 1).await.msg.payload,
        payload("in flight")
    );
}

#[tokio::test]
async fn a_socket_that_sends_no_connect_in_time_is_closed() {
    let (handler, _calls) = TestHandler::new();
    let config = EndpointConfig {
        connect_timeout: Duration::from_millis(300),
        ..EndpointConfig::default()
    };
    let app = spawn_endpoint_with(handler, config).await;
    let mut idle = Raw::connect(app.addr).await;
    let start = Instant::now();
    assert!(idle.recv(3000).await.is_none());
    assert!(start.elapsed() < Duration::from_secs(2));
}

/// Connects as station-1 with `clean_session = 0`; returns the connection and `session_present`.
async fn raw_persistent(addr: std::net::SocketAddr, client_id: &str) -> (Raw, bool) {
    let mut raw = Raw::connect(addr).await;
    let mut c = Connect::new(client_id);
    c.keep_alive = 30;
    c.clean_session = false;
    c.set_login("station-1", PASSWORD);
    raw.send(Packet::Connect(c)).await;
    match raw.recv(2000).await {
        Some(Packet::ConnAck(ack)) => {
            assert_eq!(ack.code, ConnectReturnCode::Success);
            (raw, ack.session_present)
        }
        other => panic!("expected connack, got {other:?}"),
    }
}

fn qos1(body: &str, pkid: u16) -> Packet {
    let mut p = Publish::new(SLOTS_1, QoS::AtLeastOnce, body.as_bytes().to_vec());
    p.pkid = pkid;
    Packet::Publish(p)
}

/// Reads PUBACKs until `n` have come or the server closes; returns their packet ids in arrival order and
/// whether the connection closed. Anything else the server sends fails the test.
async fn read_acks(raw: &mut Raw, n: usize, ms: u64) -> (Vec<u16>, bool) {
    let mut acks = Vec::new();
    while acks.len() < n {
        match raw.recv(ms).await {
            Some(Packet::PubAck(ack)) => acks.push(ack.pkid),
            Some(other) => panic!("expected puback, got {other:?}"),
            None => return (acks, true),
        }
    }
    (acks, false)
}

#[tokio::test]
async fn forty_qos1_messages_from_one_client_with_a_50ms_handler_are_acked_in_far_less_than_40_times_50ms_and_in_publish_order()
 {
    // About 50 ms each, later messages a little faster, so that calls finish out of publish order.
    let (handler, mut calls) = TestHandler::slow(|msg| {
        let i: u64 = std::str::from_utf8(&msg.payload).unwrap().parse().unwrap();
        Duration::from_millis(50 + 39 - i)
    });
    let app = spawn_endpoint(handler).await;
    let mut raw = raw_connected(app.addr, "st1-fast", 30, None).await;

    let start = Instant::now();
    for i in 0..40u16 {
        raw.send(qos1(&i.to_string(), i + 1)).await;
    }
    let (acks, closed) = read_acks(&mut raw, 40, 3000).await;
    let took = start.elapsed();
    assert!(!closed, "connection closed after acks {acks:?}");
    assert_eq!(
        acks,
        (1..=40).collect::<Vec<u16>>(),
        "pubacks in publish order"
    );
    assert!(
        took < Duration::from_secs(1),
        "40 messages took {took:?}: handler calls of one connection do not overlap"
    );

    // Every call was first polled in publish order, whatever order they finished in.
    let mut seen = Vec::new();
    for _ in 0..40 {
        let call = next_call(&mut calls, 1).await;
        assert!(call.outcome.is_ok());
        let i: u64 = std::str::from_utf8(&call.msg.payload)
            .unwrap()
            .parse()
            .unwrap();
        seen.push((call.seq, i));
    }
    seen.sort();
    assert!(
        seen.iter().all(|(seq, i)| seq == i),
        "first polled out of order: {seen:?}"
    );
}

#[tokio::test]
async fn a_message_refused_as_unavailable_is_not_acked_nor_are_later_ones_and_all_are_handled_after_a_reconnect_and_resend()
 {
    // Message 5 is slow and refused, so the calls after it finish first: they must not be acked either.
    let (handler, mut calls) = TestHandler::slow(|msg| {
        Duration::from_millis(if &msg.payload[..] == b"m5" { 150 } else { 20 })
    });
    handler.refuse_payload("m5", Refusal::Unavailable("database down".into()));
    let app = spawn_endpoint(handler).await;
    let (mut raw, _) = raw_persistent(app.addr, "st1-refused").await;
    for i in 1..=10u16 {
        raw.send(qos1(&format!("m{i}"), i)).await;
    }
    let (acks, closed) = read_acks(&mut raw, 10, 3000).await;
    assert_eq!(
        acks,
        vec![1, 2, 3, 4],
        "acked: the messages before the refused one"
    );
    assert!(closed, "connection closed after the refusal");

    // The client reconnects to its session and resends what was not acknowledged.
    let (mut raw, present) = raw_persistent(app.addr, "st1-refused").await;
    assert!(present, "server keeps the persistent session in memory");
    for i in 5..=10u16 {
        let mut p = Publish::new(SLOTS_1, QoS::AtLeastOnce, format!("m{i}").into_bytes());
        p.pkid = i;
        p.dup = true;
        raw.send(Packet::Publish(p)).await;
    }
    let (acks, closed) = read_acks(&mut raw, 6, 3000).await;
    assert!(!closed);
    assert_eq!(acks, vec![5, 6, 7, 8, 9, 10]);

    // 10 calls on the first connection (m5 refused), 6 on the second.
    let mut taken = std::collections::BTreeSet::new();
    for _ in 0..16 {
        let call = next_call(&mut calls, 1).await;
        let body = String::from_utf8(call.msg.payload.to_vec()).unwrap();
        match call.outcome {
            Ok(()) => {
                taken.insert(body);
            }
            Err(refusal) => assert_eq!(
                (body.as_str(), refusal),
                ("m5", Refusal::Unavailable("database down".into()))
            ),
        }
    }
    let all: std::collections::BTreeSet<_> = (1..=10).map(|i| format!("m{i}")).collect();
    assert_eq!(taken, all);
    assert_eq!(
        app.endpoint
            .counters()
            .unavailable
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn a_pingreq_is_answered_while_a_handler_call_is_still_running() {
    let (handler, _calls, gate) = TestHandler::gated();
    let app = spawn_endpoint(handler).await;
    let mut raw = raw_connected(app.addr, "st1-ping", 30, None).await;
    raw.send(qos1("slow", 1)).await;
    raw.send(Packet::PingReq).await;
    assert!(matches!(raw.recv(1000).await, Some(Packet::PingResp)));
    gate.add_permits(1);
    assert!(matches!(raw.recv(2000).await, Some(Packet::PubAck(a)) if a.pkid == 1));
}

#[tokio::test]
async fn a_full_pipeline_stops_taking_publishes_and_the_keepalive_does_not_close_the_waiting_client()
 {
    let (handler, mut calls, gate) = TestHandler::gated();
    let config = EndpointConfig {
        max_in_flight: 2,
        ..EndpointConfig::default()
    };
    let app = spawn_endpoint_with(handler.clone(), config).await;
    // Keep-alive 1 s: the endpoint closes after 1.5 s of silence while it is reading.
    let mut raw = raw_connected(app.addr, "st1-full", 1, None).await;
    for i in 1..=4u16 {
        raw.send(qos1(&format!("m{i}"), i)).await;
    }
    // The client now waits for acks and says nothing, longer than the keep-alive window.
    assert!(
        raw.try_recv(1800).await.is_err(),
        "nothing sent back (and no close) while the handler is busy"
    );
    assert_eq!(handler.started(), 2, "only max_in_flight calls started");

    gate.add_permits(4);
    let (acks, closed) = read_acks(&mut raw, 4, 2000).await;
    assert!(!closed);
    assert_eq!(acks, vec![1, 2, 3, 4]);
    for i in 1..=4 {
        assert_eq!(
            next_call(&mut calls, 1).await.msg.payload,
            payload(&format!("m{i}"))
        );
    }
}
