//! The bridge, against the real Mosquitto at `CUSTODY_TEST_MQTT_URL` (default mqtt://127.0.0.1:1883,
//! anonymous access). Set `CUSTODY_TEST_MQTT_URL=none` to skip these tests on a machine without it.
//!
//! Each test uses its own station id, share group and client id, so tests can run in parallel with each
//! other and with anything else using that broker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use custody_core::StationId;
use custody_mqtt::{Bridge, BridgeConfig, Counters, QoS, Refusal, topics};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;

fn broker_url() -> Option<String> {
    match std::env::var("CUSTODY_TEST_MQTT_URL") {
        Ok(url) if url == "none" => {
            eprintln!("CUSTODY_TEST_MQTT_URL=none: skipping a test that needs an MQTT broker");
            None
        }
        Ok(url) => Some(url),
        Err(_) => Some("mqtt://127.0.0.1:1883".to_owned()),
    }
}

fn host_port(url: &str) -> (String, u16) {
    let rest = url.strip_prefix("mqtt://").expect("mqtt:// url");
    match rest.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.parse().unwrap()),
        None => (rest.to_owned(), 1883),
    }
}

/// One test's corner of the broker: a fresh station and the bridge settings that take only its topics.
struct Fixture {
    url: String,
    station: StationId,
    config: BridgeConfig,
}

impl Fixture {
    fn new(url: String) -> Self {
        init_test_logging();
        let tag = format!("{:08x}", rand::random::<u32>());
        let station = StationId::parse(format!("ST-T{tag}")).unwrap();
        let mut config = BridgeConfig::new(url.clone(), format!("custody-test-{tag}"));
        config.filters = vec![
            topics::station_slots(&station),
            topics::station_heartbeat(&station),
        ];
        config.share_group = format!("custody-test-{tag}");
        Self {
            url,
            station,
            config,
        }
    }

    fn slots(&self) -> String {
        topics::station_slots(&self.station)
    }

    /// Starts the bridge and waits until its subscriptions are in place, found by publishing probes to the
    /// heartbeat topic until one comes through. Probe calls are taken off `calls`; other calls seen
    /// meanwhile (messages the broker kept for the session) are in `Running::early`.
    async fn start(
        &self,
        handler: Arc<TestHandler>,
        calls: &mut mpsc::UnboundedReceiver<Call>,
    ) -> Running {
        let bridge = Bridge::new(self.config.clone(), handler).unwrap();
        let counters = bridge.counters();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(bridge.run(async move {
            let _ = stopped.await;
        }));
        let heartbeat = topics::station_heartbeat(&self.station);
        let (publisher, mut el) = self.publisher("probe");
        let pump = tokio::spawn(async move { while el.poll().await.is_ok() {} });
        let mut early = Vec::new();
        let ready = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                publisher
                    .publish(&heartbeat, QoS::AtMostOnce, false, "probe")
                    .await
                    .unwrap();
                while let Ok(Some(call)) =
                    tokio::time::timeout(Duration::from_millis(100), calls.recv()).await
                {
                    if call.msg.topic == heartbeat {
                        return;
                    }
                    early.push(call);
                }
            }
        })
        .await;
        pump.abort();
        ready.expect("bridge subscribed within 5 s");
        // Probes already in flight may still arrive; let them, then drop them.
        tokio::time::sleep(Duration::from_millis(100)).await;
        while let Ok(call) = calls.try_recv() {
            if call.msg.topic != heartbeat {
                early.push(call);
            }
        }
        Running {
            stop: Some(stop),
            task,
            counters,
            early,
        }
    }

    fn publisher(&self, name: &str) -> (AsyncClient, rumqttc::EventLoop) {
        let (host, port) = host_port(&self.url);
        let id = format!("{}-{name}", self.config.client_id);
        AsyncClient::new(MqttOptions::new(id, host, port), 16)
    }

    /// Publishes one QoS 1 message with rumqttc and waits for the broker's PUBACK.
    async fn publish_qos1(&self, topic: &str, body: &str) {
        let (client, mut el) = self.publisher("pub");
        client
            .publish(topic, QoS::AtLeastOnce, false, body)
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                if let Event::Incoming(Incoming::PubAck(_)) = el.poll().await.unwrap() {
                    return;
                }
            }
        })
        .await
        .expect("broker acked the publish");
    }

    /// Publishes QoS 1 messages in this order, all at once, and waits for the broker's PUBACKs.
    async fn publish_many(&self, topic: &str, bodies: &[String]) {
        let (client, mut el) = self.publisher("pub-many");
        let (topic, bodies_out) = (topic.to_owned(), bodies.to_vec());
        // The client's request channel is small: queue from a task while this one polls.
        let sender = tokio::spawn(async move {
            for body in bodies_out {
                client
                    .publish(&topic, QoS::AtLeastOnce, false, body)
                    .await
                    .unwrap();
            }
            client
        });
        let mut acked = 0;
        tokio::time::timeout(Duration::from_secs(5), async {
            while acked < bodies.len() {
                if let Event::Incoming(Incoming::PubAck(_)) = el.poll().await.unwrap() {
                    acked += 1;
                }
            }
        })
        .await
        .expect("broker acked every publish");
        drop(sender.await.unwrap());
    }

    /// Publishes one QoS 1 message with the mosquitto_pub CLI.
    async fn mosquitto_pub(&self, topic: &str, body: &str) {
        let (host, port) = host_port(&self.url);
        let out = tokio::process::Command::new("mosquitto_pub")
            .args([
                "-h",
                &host,
                "-p",
                &port.to_string(),
                "-q",
                "1",
                "-t",
                topic,
                "-m",
                body,
            ])
            .output()
            .await
            .expect("mosquitto_pub is installed (apt-get install mosquitto-clients)");
        assert!(out.status.success(), "mosquitto_pub failed: {out:?}");
    }

    /// Ends the bridge's persistent session at the broker, so tests leave nothing behind.
    async fn forget_session(&self) {
        let (host, port) = host_port(&self.url);
        let mut o = MqttOptions::new(self.config.client_id.clone(), host, port);
        o.set_clean_session(true);
        let (client, mut el) = AsyncClient::new(o, 4);
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Ok(event) = el.poll().await {
                if let Event::Incoming(Incoming::ConnAck(_)) = event {
                    let _ = client.try_disconnect();
                }
                if let Event::Outgoing(rumqttc::Outgoing::Disconnect) = event {
                    break;
                }
            }
        })
        .await;
    }
}

struct Running {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), custody_mqtt::BridgeError>>,
    counters: Arc<Counters>,
    /// Calls other than probes seen while waiting for the subscriptions.
    early: Vec<Call>,
}

impl Running {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(7), &mut self.task)
            .await
            .expect("bridge returns after shutdown")
            .unwrap()
            .unwrap();
    }
}

#[tokio::test]
async fn messages_published_with_mosquitto_pub_and_rumqttc_reach_the_handler_through_the_bridge() {
    let Some(url) = broker_url() else { return };
    let f = Fixture::new(url);
    let (handler, mut calls) = TestHandler::new();
    let bridge = f.start(handler, &mut calls).await;

    f.mosquitto_pub(&f.slots(), "from-cli").await;
    let call = next_call(&mut calls, 3).await;
    assert_eq!(call.from, None, "the broker's acls vouch for the topic");
    assert_eq!(call.msg.topic, f.slots());
    assert_eq!(call.msg.payload, payload("from-cli"));
    assert_eq!(call.msg.qos, 1);

    f.publish_qos1(&f.slots(), "from-rumqttc").await;
    assert_eq!(
        next_call(&mut calls, 3).await.msg.payload,
        payload("from-rumqttc")
    );

    bridge.stop().await;
    f.forget_session().await;
}

#[tokio::test]
async fn a_qos1_message_published_while_the_bridge_is_stopped_is_delivered_after_it_restarts() {
    let Some(url) = broker_url() else { return };
    let f = Fixture::new(url);
    let (handler, mut calls) = TestHandler::new();
    // A first run creates the persistent session and its shared subscription at the broker.
    f.start(handler.clone(), &mut calls).await.stop().await;

    f.mosquitto_pub(&f.slots(), "while-down").await;
    assert_no_call(&mut calls, 100).await;

    let bridge = f.start(handler, &mut calls).await;
    // The broker sends what it kept for the session right after CONNACK, before any probe.
    let kept: Vec<_> = bridge.early.iter().map(|c| c.msg.payload.clone()).collect();
    assert_eq!(kept, vec![payload("while-down")]);
    assert_eq!(bridge.early[0].msg.topic, f.slots());
    bridge.stop().await;
    f.forget_session().await;
}

#[tokio::test]
async fn a_message_the_handler_cannot_store_yet_is_retried_until_taken_and_acked_only_then() {
    let Some(url) = broker_url() else { return };
    let f = Fixture::new(url);
    let (handler, mut calls) = TestHandler::new();
    handler.refuse_next(&f.slots(), Refusal::Unavailable("database down".into()));
    handler.refuse_next(&f.slots(), Refusal::Unavailable("still down".into()));
    let bridge = f.start(handler.clone(), &mut calls).await;

    f.publish_qos1(&f.slots(), "keep-me").await;
    for expected in ["database down", "still down"] {
        let call = next_call(&mut calls, 3).await;
        assert_eq!(call.outcome, Err(Refusal::Unavailable(expected.into())));
    }
    let taken = next_call(&mut calls, 3).await;
    assert_eq!(taken.msg.payload, payload("keep-me"));
    assert!(taken.outcome.is_ok());
    assert_eq!(bridge.counters.unavailable.load(Ordering::Relaxed), 2);
    bridge.stop().await;

    // Acked once taken: a restart with the same session does not bring it back.
    let again = f.start(handler, &mut calls).await;
    assert!(again.early.is_empty(), "redelivered: {:?}", again.early);
    assert_no_call(&mut calls, 300).await;
    again.stop().await;
    f.forget_session().await;
}

#[tokio::test]
async fn a_hundred_qos1_messages_through_the_bridge_with_a_50ms_handler_are_handled_in_well_under_100_times_50ms_and_none_is_lost()
 {
    let Some(url) = broker_url() else { return };
    let f = Fixture::new(url);
    let (handler, mut calls) = TestHandler::slow(|_| Duration::from_millis(50));
    let bridge = f.start(handler.clone(), &mut calls).await;

    let bodies: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    let start = std::time::Instant::now();
    f.publish_many(&f.slots(), &bodies).await;
    let mut taken = std::collections::BTreeSet::new();
    while taken.len() < bodies.len() {
        let call = next_call(&mut calls, 5).await;
        assert!(call.outcome.is_ok());
        taken.insert(String::from_utf8(call.msg.payload.to_vec()).unwrap());
    }
    let took = start.elapsed();
    assert_eq!(taken, bodies.iter().cloned().collect());
    // One at a time would take 5 s; Mosquitto's default window of 20 unacked messages allows ~250 ms.
    assert!(
        took < Duration::from_secs(2),
        "100 messages took {took:?}: the bridge does not overlap handler calls"
    );
    bridge.stop().await;

    // Each was acked (a restart brings none back), and only once taken: nothing was called twice.
    let again = f.start(handler, &mut calls).await;
    assert!(again.early.is_empty(), "redelivered: {:?}", again.early);
    assert_no_call(&mut calls, 300).await;
    again.stop().await;
    f.forget_session().await;
}

#[tokio::test]
async fn acks_of_later_messages_wait_behind_one_the_handler_cannot_store_yet() {
    let Some(url) = broker_url() else { return };
    let f = Fixture::new(url);
    let (handler, mut calls) = TestHandler::slow(|_| Duration::from_millis(20));
    // m3 stays refused (retried with backoff) for the whole first run.
    for _ in 0..20 {
        handler.refuse_payload("m3", Refusal::Unavailable("database down".into()));
    }
    let bridge = f.start(handler, &mut calls).await;

    let bodies: Vec<String> = (1..=8).map(|i| format!("m{i}")).collect();
    f.publish_many(&f.slots(), &bodies).await;
    // Everything but m3 is taken, and m3 has been refused at least once.
    let mut taken = std::collections::BTreeSet::new();
    let mut refused = false;
    while taken.len() < 7 || !refused {
        let call = next_call(&mut calls, 3).await;
        let body = String::from_utf8(call.msg.payload.to_vec()).unwrap();
        match call.outcome {
            Ok(()) => assert!(taken.insert(body)),
            Err(_) => {
                assert_eq!(body, "m3");
                refused = true;
            }
        }
    }
    assert!(!taken.contains("m3"));
    // Stopping gives up on m3; the later messages were taken but must not have been acked before it.
    bridge.stop().await;

    let (handler, mut calls) = TestHandler::new();
    let again = f.start(handler, &mut calls).await;
    let redelivered: Vec<_> = again
        .early
        .iter()
        .map(|c| String::from_utf8(c.msg.payload.to_vec()).unwrap())
        .collect();
    assert_eq!(
        redelivered,
        bodies[2..].to_vec(),
        "m3 and everything after it"
    );
    again.stop().await;
    f.forget_session().await;
}
