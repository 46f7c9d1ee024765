//! The bridge to an external broker (Mosquitto, EMQX): Custody connects as a client with a persistent
//! session and a shared subscription, and acknowledges each message only after the handler took it.
//!
//! The persistent session (`clean_session = 0`, a stable client id) makes the broker keep QoS 1 messages
//! published while Custody is down and deliver them when it comes back. The shared subscription
//! (`$share/{group}/{filter}`) lets several Custody instances split the load, each message going to one
//! of them. The broker's ACLs decide who may publish where, so the handler gets `from = None`.
//!
//! The bridge is one connection carrying every device's messages, so it pipelines: a worker runs up to
//! [`BridgeConfig::max_in_flight`] handler calls at once (a `FuturesOrdered`, first polled in the order
//! the messages arrived) and acknowledges them in arrival order, each only after its own call returned.
//!
//! Broker settings for high rates. A broker sends a client only so many QoS 1 messages it has not had
//! acknowledged: Mosquitto `max_inflight_messages` (default 20), EMQX `mqtt.max_inflight` (default 32).
//! That caps the pipeline, so raise it to at least `max_in_flight`, e.g. `max_inflight_messages 1000` in
//! mosquitto.conf (a global option; 0 means no limit, which is not recommended here, see `QUEUE`).
//! Messages beyond that window wait in the broker's per-client queue, and past its limit they are
//! dropped (Mosquitto `max_queued_messages`, default 1000; EMQX `mqtt.max_mqueue_len`, default 1000),
//! also while Custody is down: size it for the rate times the outage to be bridged.

use crate::endpoint::bump;
use crate::{Counters, Handler, Inbound, Refusal, topics};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use rumqttc::mqttbytes::valid_filter;
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, Publish, QoS, SubscribeFilter,
    SubscribeReasonCode,
};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep, timeout};
use tracing::{info, warn};

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Messages received and waiting for a free handler slot, beyond the `max_in_flight` being handled: the
/// queue holds `max_in_flight + QUEUE`. When it is full the bridge stops reading from the broker, which
/// also stalls its keep-alive, so a broker's window of unacknowledged QoS 1 messages should stay within
/// it (a window of 1000 does). QoS 0 messages that do not fit are dropped instead.
const QUEUE: usize = 1024;
/// How long shutdown waits for the handler calls in flight to finish and their acks to be flushed.
const DRAIN: Duration = Duration::from_secs(5);

/// Settings of the bridge.
#[derive(Clone)]
pub struct BridgeConfig {
    /// The broker, as `mqtt://host:port` (port defaults to 1883; IPv6 hosts in brackets). Credentials go
    /// in `username` and `password`, not here, so the URL can be logged. TLS is not supported yet.
    pub url: String,
    /// Client id at the broker. Must stay the same across restarts (it names the persistent session) and
    /// differ between Custody instances.
    pub client_id: String,
    /// User name at the broker, if it wants one.
    pub username: Option<String>,
    /// Password at the broker; never logged.
    pub password: Option<String>,
    /// MQTT keep-alive: zero (none) or at least one second. Default 30 s.
    pub keep_alive: Duration,
    /// Topic filters to take messages from. Default [`topics::INBOUND_FILTERS`].
    pub filters: Vec<String>,
    /// Shared-subscription group: each filter is subscribed as `$share/{group}/{filter}`, so instances
    /// in one group split the messages. Empty means plain subscriptions. Default `custody`.
    pub share_group: String,
    /// Largest packet taken or sent, in bytes. Default 1 MiB.
    pub max_packet_bytes: usize,
    /// Handler calls running at once, from 1 to 65535. Messages are acknowledged in the order they arrived,
    /// each after its own call returned, so the bridge takes at most this many messages per storage
    /// commit. The broker sends no more unacknowledged QoS 1 messages than its own limit (see the module
    /// docs); raise that to at least this. Default 64.
    pub max_in_flight: usize,
}

impl BridgeConfig {
    /// Settings with the defaults above for the broker at `url`, as client `client_id`.
    pub fn new(url: impl Into<String>, client_id: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            client_id: client_id.into(),
            username: None,
            password: None,
            keep_alive: Duration::from_secs(30),
            filters: topics::INBOUND_FILTERS
                .iter()
                .map(|f| (*f).to_owned())
                .collect(),
            share_group: "custody".to_owned(),
            max_packet_bytes: 1024 * 1024,
            max_in_flight: 64,
        }
    }
}

impl fmt::Debug for BridgeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BridgeConfig")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("keep_alive", &self.keep_alive)
            .field("filters", &self.filters)
            .field("share_group", &self.share_group)
            .field("max_packet_bytes", &self.max_packet_bytes)
            .field("max_in_flight", &self.max_in_flight)
            .finish()
    }
}

/// Why the bridge could not start or publish.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The broker URL is not `mqtt://host[:port]`.
    #[error("bridge url {url:?}: {reason}")]
    BadUrl {
        /// The URL as given, with any credentials masked.
        url: String,
        /// What was wrong and what was expected.
        reason: String,
    },
    /// Another setting is unusable.
    #[error("bridge config: {0}")]
    BadConfig(String),
    /// The bridge has stopped, so nothing can be published through it.
    #[error("bridge stopped, cannot publish to {topic:?}")]
    Stopped {
        /// The topic of the message that was not sent.
        topic: String,
    },
}

/// A configured bridge, not yet running.
pub struct Bridge {
    config: BridgeConfig,
    handler: Arc<dyn Handler>,
    client: AsyncClient,
    eventloop: EventLoop,
    counters: Arc<Counters>,
}

impl fmt::Debug for Bridge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bridge")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Publishes through a bridge, for server-to-client messages. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BridgeHandle {
    client: AsyncClient,
}

impl BridgeHandle {
    /// Queues a message for the broker. While the broker is unreachable messages wait in a small queue
    /// and this call waits for room; QoS 1 messages are resent after a reconnect.
    pub async fn publish(&self, topic: &str, payload: Bytes, qos: QoS) -> Result<(), BridgeError> {
        self.client
            .publish_bytes(topic, qos, false, payload)
            .await
            .map_err(|_| BridgeError::Stopped {
                topic: topic.to_owned(),
            })
    }
}

/// Runs a bridge until `shutdown` completes; see [`Bridge::run`].
pub async fn run_bridge(
    config: BridgeConfig,
    handler: Arc<dyn Handler>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), BridgeError> {
    Bridge::new(config, handler)?.run(shutdown).await
}

impl Bridge {
    /// Checks `config` and prepares the client; nothing connects until [`Bridge::run`].
    pub fn new(config: BridgeConfig, handler: Arc<dyn Handler>) -> Result<Self, BridgeError> {
        let (host, port) = parse_url(&config.url)?;
        if config.client_id.is_empty() {
            return Err(BridgeError::BadConfig(
                "client_id must not be empty: it names the persistent session".into(),
            ));
        }
        // rumqttc panics on a keep-alive under a second, so refuse it here.
        if !config.keep_alive.is_zero() && config.keep_alive < Duration::from_secs(1) {
            return Err(BridgeError::BadConfig(format!(
                "keep_alive must be zero or at least 1 s, got {:?}",
                config.keep_alive
            )));
        }
        if config.filters.is_empty() {
            return Err(BridgeError::BadConfig("filters must not be empty".into()));
        }
        if let Some(f) = config.filters.iter().find(|f| !valid_filter(f)) {
            return Err(BridgeError::BadConfig(format!(
                "filter {f:?} is not a valid MQTT topic filter"
            )));
        }
        // A broker cannot have more unacknowledged messages to one client than there are packet ids.
        if !(1..=usize::from(u16::MAX)).contains(&config.max_in_flight) {
            return Err(BridgeError::BadConfig(format!(
                "max_in_flight must be from 1 to 65535, got {}",
                config.max_in_flight
            )));
        }
        if config.share_group.contains(['/', '+', '#']) {
            return Err(BridgeError::BadConfig(format!(
                "share_group {:?} must not contain '/', '+' or '#'",
                config.share_group
            )));
        }
        let mut options = MqttOptions::new(config.client_id.clone(), host, port);
        options
            .set_clean_session(false)
            .set_manual_acks(true)
            .set_keep_alive(config.keep_alive)
            .set_max_packet_size(config.max_packet_bytes, config.max_packet_bytes);
        if config.username.is_some() || config.password.is_some() {
            options.set_credentials(
                config.username.clone().unwrap_or_default(),
                config.password.clone().unwrap_or_default(),
            );
        }
        let (client, eventloop) = AsyncClient::new(options, 64);
        Ok(Self {
            config,
            handler,
            client,
            eventloop,
            counters: Arc::new(Counters::default()),
        })
    }

    /// A handle to publish through this bridge while it runs.
    pub fn handle(&self) -> BridgeHandle {
        BridgeHandle {
            client: self.client.clone(),
        }
    }

    /// Running totals of messages taken, malformed and unavailable (the connection counters stay zero).
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Connects, subscribes and hands messages to the handler until `shutdown` completes, reconnecting
    /// with backoff (100 ms doubling to 5 s) whenever the broker is unreachable. Up to `max_in_flight`
    /// handler calls run at once. Each message is acknowledged after the handler returned `Ok` or
    /// `Malformed` for it, and after every message that arrived before it was acknowledged; on
    /// `Unavailable` the handler is retried with the same backoff, and the acks of later messages wait
    /// behind it. At shutdown the calls in flight finish (one waiting out a backoff gives up) and are
    /// acknowledged up to the first message not taken; what is not acknowledged is redelivered by the
    /// broker when the bridge comes back.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), BridgeError> {
        let Bridge {
            config,
            handler,
            client,
            mut eventloop,
            counters,
        } = self;
        let url = config.url.as_str();
        let client_id = config.client_id.as_str();
        let subscriptions: Vec<SubscribeFilter> = config
            .filters
            .iter()
            .map(|f| {
                let path = if config.share_group.is_empty() {
                    f.clone()
                } else {
                    format!("$share/{}/{f}", config.share_group)
                };
                SubscribeFilter::new(path, QoS::AtLeastOnce)
            })
            .collect();
        let max_in_flight = config.max_in_flight;
        let (queue_tx, queue_rx) = mpsc::channel(max_in_flight + QUEUE);
        let (stop_tx, stop_rx) = watch::channel(false);
        let worker = Worker {
            handler,
            acks: Acks::new(client.clone()),
            queue: queue_rx,
            stop: stop_rx,
            counters,
            max_in_flight,
        };
        let mut worker = tokio::spawn(worker.work());
        tokio::pin!(shutdown);
        let mut delay = BACKOFF_MIN;
        loop {
            let event = tokio::select! {
                biased;
                _ = &mut shutdown => break,
                event = eventloop.poll() => event,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    delay = BACKOFF_MIN;
                    info!(%url, %client_id, session_present = ack.session_present, "connected to mqtt broker");
                    // Subscribing again after every connect is harmless with a resumed session and needed
                    // when the broker lost it. Spawned because this loop is what drains the client's
                    // request channel: awaiting the send here could deadlock.
                    let (client, subscriptions) = (client.clone(), subscriptions.clone());
                    tokio::spawn(async move {
                        if let Err(error) = client.subscribe_many(subscriptions).await {
                            warn!(%error, "could not queue mqtt subscriptions");
                        }
                    });
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    if publish.qos == QoS::AtMostOnce {
                        // Nobody resends QoS 0 anyway: drop it rather than stall the connection.
                        if queue_tx.try_send(publish).is_err() {
                            warn!(%url, "handler queue full, qos 0 message dropped");
                        }
                    } else {
                        tokio::select! {
                            biased;
                            _ = &mut shutdown => break,
                            sent = queue_tx.send(publish) => if sent.is_err() {
                                // Only if the worker panicked in the handler; nothing is acked anymore.
                                warn!(%url, %client_id, "mqtt bridge worker stopped, bridge stopping");
                                break;
                            },
                        }
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    if ack.return_codes.contains(&SubscribeReasonCode::Failure) {
                        warn!(%url, %client_id, "mqtt broker refused a subscription, check its acls");
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    warn!(%url, %client_id, %error, retry_in = ?delay, "mqtt broker connection failed");
                    tokio::select! {
                        biased;
                        _ = &mut shutdown => break,
                        _ = sleep(delay) => {}
                    }
                    delay = (delay * 2).min(BACKOFF_MAX);
                }
            }
        }

        // Let the worker finish the calls in flight, and keep polling so that their acks and our DISCONNECT
        // reach the broker. Anything still queued is not acked and comes back with the next session.
        drop(queue_tx);
        let _ = stop_tx.send(true);
        let drained = timeout(DRAIN, async {
            let mut connected = true;
            loop {
                tokio::select! {
                    _ = &mut worker => break,
                    event = eventloop.poll(), if connected => connected = event.is_ok(),
                }
            }
            if connected && client.try_disconnect().is_ok() {
                while let Ok(event) = eventloop.poll().await {
                    if event == Event::Outgoing(Outgoing::Disconnect) {
                        break;
                    }
                }
                // Wait for the broker to close the connection, which it does once it has read our
                // DISCONNECT and so the acks before it. Closing first would reset the connection if
                // anything from the broker is still unread, and the broker could lose the last acks.
                while eventloop.poll().await.is_ok() {}
            }
        })
        .await;
        if drained.is_err() {
            warn!(%url, %client_id, "mqtt bridge did not drain in time");
            worker.abort();
        }
        info!(%url, %client_id, "mqtt bridge stopped");
        Ok(())
    }
}

/// Takes queued messages into the handler, up to `max_in_flight` at once, and acks them in order.
struct Worker {
    handler: Arc<dyn Handler>,
    acks: Acks,
    queue: mpsc::Receiver<Publish>,
    stop: watch::Receiver<bool>,
    counters: Arc<Counters>,
    max_in_flight: usize,
}

impl Worker {
    async fn work(self) {
        let Worker {
            handler,
            mut acks,
            mut queue,
            stop,
            counters,
            max_in_flight,
        } = self;
        let mut stopped = stop.clone();
        // Calls in arrival order. `FuturesOrdered` first polls each call after the ones pushed before it
        // and yields results in push order, so acks come out in arrival order whatever order the calls
        // finish in. A finished call keeps its slot until the ones before it have finished too.
        let mut calls = FuturesOrdered::new();
        loop {
            tokio::select! {
                biased;
                _ = stopped.wait_for(|stopped| *stopped) => break,
                Some(taken) = calls.next(), if !calls.is_empty() => match taken {
                    Some(publish) => acks.push(publish),
                    // Only when the bridge stops during a backoff.
                    None => break,
                },
                () = acks.send_next(), if !acks.is_idle() => {}
                next = queue.recv(), if calls.len() < max_in_flight => match next {
                    Some(publish) => calls.push_back(take(
                        handler.clone(),
                        publish,
                        stop.clone(),
                        counters.clone(),
                    )),
                    None => break,
                },
            }
        }
        // Stopping: no new calls; those in flight finish (one waiting out a backoff gives up at once),
        // and are acked in order up to the first that was not taken.
        let mut taking = true;
        while let Some(taken) = calls.next().await {
            match taken {
                Some(publish) if taking => acks.push(publish),
                _ => taking = false,
            }
        }
        while !acks.is_idle() {
            acks.send_next().await;
        }
    }
}

/// Acks handed to the client one at a time, in the order pushed. Separate from taking messages so that
/// a full client request channel never stops the worker from draining the queue: the request channel
/// is emptied by the connection loop, which may itself be waiting for room in the queue.
struct Acks {
    client: AsyncClient,
    /// Messages taken whose ack is not yet being handed to the client, oldest first. Bounded by the
    /// broker's window of unacknowledged messages.
    waiting: VecDeque<Publish>,
    /// The ack being handed to the client. Kept across `send_next` calls so that cancelling one (it runs
    /// in a `select!`) neither loses nor reorders an ack.
    sending: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl Acks {
    fn new(client: AsyncClient) -> Self {
        Self {
            client,
            waiting: VecDeque::new(),
            sending: None,
        }
    }

    fn push(&mut self, publish: Publish) {
        // A QoS 0 message has no ack.
        if publish.qos != QoS::AtMostOnce {
            self.waiting.push_back(publish);
        }
    }

    fn is_idle(&self) -> bool {
        self.sending.is_none() && self.waiting.is_empty()
    }

    /// Hands the oldest ack to the client. Cancel-safe.
    async fn send_next(&mut self) {
        if self.sending.is_none() {
            let Some(publish) = self.waiting.pop_front() else {
                return;
            };
            let client = self.client.clone();
            self.sending = Some(Box::pin(async move {
                if let Err(error) = client.ack(&publish).await {
                    warn!(%error, topic = %publish.topic, "could not queue mqtt ack");
                }
            }));
        }
        if let Some(sending) = self.sending.as_mut() {
            sending.await;
        }
        self.sending = None;
    }
}

/// Hands one message to the handler until it is taken or refused as malformed (`Some`: to be acked), or
/// the bridge stops first (`None`: not to be acked).
async fn take(
    handler: Arc<dyn Handler>,
    p: Publish,
    mut stop: watch::Receiver<bool>,
    counters: Arc<Counters>,
) -> Option<Publish> {
    let mut delay = BACKOFF_MIN;
    loop {
        let msg = Inbound {
            topic: p.topic.clone(),
            payload: p.payload.clone(),
            qos: p.qos as u8,
            retain: p.retain,
        };
        match handler.publish(None, msg).await {
            Ok(()) => {
                bump(&counters.accepted);
                return Some(p);
            }
            Err(Refusal::Malformed(reason)) => {
                bump(&counters.malformed);
                warn!(topic = %p.topic, %reason, "malformed message acknowledged and dropped");
                return Some(p);
            }
            Err(Refusal::Unavailable(reason)) => {
                bump(&counters.unavailable);
                warn!(topic = %p.topic, %reason, retry_in = ?delay, "message not stored, retrying");
                tokio::select! {
                    biased;
                    _ = stop.wait_for(|stopped| *stopped) => return None,
                    _ = sleep(delay) => {}
                }
                delay = (delay * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Splits `mqtt://host[:port]` into host and port.
fn parse_url(url: &str) -> Result<(String, u16), BridgeError> {
    let bad = |reason: String| BridgeError::BadUrl {
        url: mask_credentials(url),
        reason,
    };
    let Some(rest) = url.strip_prefix("mqtt://") else {
        let reason = if url.starts_with("mqtts://") || url.starts_with("ssl://") {
            "TLS is not supported yet; expected mqtt://host:port".to_owned()
        } else {
            "expected mqtt://host:port".to_owned()
        };
        return Err(bad(reason));
    };
    if rest.contains('@') {
        return Err(bad(
            "must not carry credentials; set username and password instead".into(),
        ));
    }
    if rest.contains(['/', '?', '#']) {
        return Err(bad(
            "expected nothing after host:port (no path, query or fragment)".into(),
        ));
    }
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| bad("IPv6 host is missing its closing ']'".into()))?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(bad(format!("expected ':port' after ']', got {after:?}"))),
            },
        }
    } else {
        match rest.split_once(':') {
            Some((_, port)) if port.contains(':') => {
                return Err(bad("an IPv6 host must be in brackets, as [::1]:1883".into()));
            }
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err(bad("host is empty".into()));
    }
    let port = match port {
        None => 1883,
        Some(p) => match p.parse::<u16>() {
            Ok(port) if port != 0 => port,
            _ => {
                return Err(bad(format!(
                    "port must be a number from 1 to 65535, got {p:?}"
                )));
            }
        },
    };
    Ok((host.to_owned(), port))
}

/// The URL with anything between `://` and `@` replaced, for error messages.
fn mask_credentials(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn broker_urls_parse_to_host_and_port() {
        let ok = |u: &str| parse_url(u).unwrap();
        assert_eq!(ok("mqtt://127.0.0.1:1883"), ("127.0.0.1".into(), 1883));
        assert_eq!(ok("mqtt://broker.local"), ("broker.local".into(), 1883));
        assert_eq!(ok("mqtt://broker:8883"), ("broker".into(), 8883));
        assert_eq!(ok("mqtt://[::1]:1884"), ("::1".into(), 1884));
        assert_eq!(ok("mqtt://[::1]"), ("::1".into(), 1883));
    }

    #[test]
    fn a_bad_broker_url_is_refused_naming_what_is_wrong() {
        let reason = |u: &str| match parse_url(u).unwrap_err() {
            BridgeError::BadUrl { reason, .. } => reason,
            other => panic!("{other:?}"),
        };
        assert!(reason("tcp://h:1883").contains("expected mqtt://"));
        assert!(reason("mqtts://h:8883").contains("TLS"));
        assert!(reason("mqtt://:1883").contains("host is empty"));
        assert!(reason("mqtt://h:0").contains("port must be"));
        assert!(reason("mqtt://h:99999").contains("port must be"));
        assert!(reason("mqtt://h:x").contains("port must be"));
        assert!(reason("mqtt://h:1883/path").contains("nothing after"));
        assert!(reason("mqtt://::1:1883").contains("brackets"));
        assert!(reason("mqtt://[::1:1883").contains("']'"));
    }

    struct NoHandler;

    #[async_trait::async_trait]
    impl Handler for NoHandler {
        async fn authenticate(
            &self,
            _: &str,
            _: &str,
            _: &str,
        ) -> Result<crate::Principal, String> {
            Err("none".into())
        }
        async fn publish(&self, _: Option<&crate::Principal>, _: Inbound) -> Result<(), Refusal> {
            Ok(())
        }
    }

    #[test]
    fn max_in_flight_outside_1_to_65535_is_refused() {
        for (n, ok) in [(0, false), (1, true), (65535, true), (65536, false)] {
            let mut config = BridgeConfig::new("mqtt://127.0.0.1:1883", "c");
            config.max_in_flight = n;
            match Bridge::new(config, Arc::new(NoHandler)) {
                Ok(_) => assert!(ok, "{n} accepted"),
                Err(e) => {
                    assert!(!ok, "{n} refused: {e}");
                    assert!(e.to_string().contains("max_in_flight"), "{e}");
                }
            }
        }
    }

    #[test]
    fn credentials_in_a_url_are_refused_and_never_echoed() {
        let e = parse_url("mqtt://user:hunter2@h:1883").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("credentials"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}
