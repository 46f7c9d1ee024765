//! The MQTT side of the fleet: one rumqttc connection per device, or per gateway of devices, each
//! driven by one task that runs two futures side by side: the *driver*, which wakes when the next of its
//! devices is due, advances that officer and publishes, and the *poller*, which keeps the rumqttc event
//! loop turning (writing, reading acks, reconnecting after the broker dropped the connection).
//!
//! What counts as delivered: a QoS 1 message once its PUBACK came back, a QoS 0 message once it was
//! written to the socket. To know which message a PUBACK is for, a [`Ledger`] follows every message from
//! the moment it is handed to the client, in the order the event loop writes them. When a connection
//! breaks, rumqttc keeps its unacknowledged QoS 1 messages for the next session, but a clean session
//! drops them at the next CONNACK: the poller takes them out first and puts them back after the CONNACK,
//! so a broker restart costs no positions, as on a recorder that buffers while offline.

use super::model::{Grid, Officer};
use super::wire::{self, TimedFix};
use super::{Format, Settings};
use custody_core::DeviceId;
use custody_mqtt::topics;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, NetworkOptions, Outgoing, Packet,
    Publish, QoS, Request,
};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The broker to publish to: `mqtt://host[:port]` (port 1883 by default; IPv6 hosts in brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub host: String,
    pub port: u16,
}

impl FromStr for BrokerUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let rest = s.strip_prefix("mqtt://").ok_or_else(|| {
            format!("expected mqtt://host:port (plain MQTT; TLS is not supported), got {s:?}")
        })?;
        if rest.contains(['@', '/', '?', '#']) {
            return Err(format!(
                "expected nothing but host:port after mqtt:// (no credentials, path or query), got {s:?}"
            ));
        }
        let (host, port) = match rest.strip_prefix('[') {
            Some(bracketed) => {
                let (host, after) = bracketed
                    .split_once(']')
                    .ok_or_else(|| format!("IPv6 host is missing its closing ']' in {s:?}"))?;
                (host, after.strip_prefix(':'))
            }
            None => match rest.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            },
        };
        if host.is_empty() {
            return Err(format!("host is empty in {s:?}"));
        }
        let port = match port {
            None => 1883,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("port must be a number from 1 to 65535, got {p:?}"))?,
        };
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "mqtt://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "mqtt://{}:{}", self.host, self.port)
        }
    }
}

/// Counters shared by every connection and read by the progress display and the final stats.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Position messages delivered (acked at QoS 1, written at QoS 0).
    pub messages: AtomicU64,
    /// Positions in those messages.
    pub positions: AtomicU64,
    /// SOS alarms delivered.
    pub alarms: AtomicU64,
    /// Messages that could not be handed to the client (its queue full while the broker was away) or
    /// were never delivered by the end.
    pub publish_errors: AtomicU64,
    /// Connections up now.
    pub connected: AtomicU64,
    /// Connections that were up at least once.
    pub ever_connected: AtomicU64,
    /// Connection attempts that failed and connections that broke.
    pub connection_errors: AtomicU64,
    /// The latest connection error, for the progress display.
    pub last_error: Mutex<Option<String>>,
}

impl Counters {
    fn deliver(&self, s: Sent) {
        if s.alarm {
            self.alarms.fetch_add(1, Ordering::Relaxed);
        } else {
            self.messages.fetch_add(1, Ordering::Relaxed);
            self.positions
                .fetch_add(u64::from(s.positions), Ordering::Relaxed);
        }
    }

    fn note_error(&self, client_id: &str, e: &ConnectionError) {
        self.connection_errors.fetch_add(1, Ordering::Relaxed);
        let what = match e {
            ConnectionError::ConnectionRefused(code) => {
                format!("broker refused the connection: {code:?}")
            }
            other => other.to_string().to_lowercase(),
        };
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(format!("{client_id}: {what}"));
    }
}

/// One message on its way, as far as the stats care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sent {
    positions: u32,
    alarm: bool,
    /// Sent with QoS 1: delivered at its PUBACK.
    needs_ack: bool,
}

/// Follows the messages of one connection from the client's queue to their delivery.
#[derive(Debug, Default)]
struct Ledger {
    /// Handed to the client, not yet written, in the order the event loop will write them.
    queued: VecDeque<Sent>,
    /// Written with QoS 1 and waiting for their PUBACK, by packet id.
    inflight: HashMap<u16, Sent>,
}

impl Ledger {
    fn is_empty(&self) -> bool {
        self.queued.is_empty() && self.inflight.is_empty()
    }

    fn outstanding(&self) -> u64 {
        (self.queued.len() + self.inflight.len()) as u64
    }

    /// The event loop wrote the next queued message.
    fn written(&mut self, pkid: u16, counters: &Counters) {
        let Some(s) = self.queued.pop_front() else {
            return;
        };
        if s.needs_ack && pkid != 0 {
            self.inflight.insert(pkid, s);
        } else {
            counters.deliver(s);
        }
    }

    fn acked(&mut self, pkid: u16, counters: &Counters) {
        if let Some(s) = self.inflight.remove(&pkid) {
            counters.deliver(s);
        }
    }

    /// After a broken connection: takes what rumqttc kept for the next session (`pending`: the
    /// unacknowledged publishes, then what was still in the client's queue) and returns it in the order
    /// to send again, with fresh packet ids; the ledger is put in the same order. Returns how many
    /// messages could not be followed (none, unless rumqttc changes how it keeps them).
    fn take_for_resend(
        &mut self,
        pending: VecDeque<Request>,
        collided: Option<Publish>,
    ) -> (Vec<Request>, u64) {
        let mut again = Vec::new();
        let mut front = Vec::new();
        let mut rest = Vec::new();
        let unacked = pending.into_iter().filter_map(|r| match r {
            Request::Publish(p) => Some(p),
            _ => None,
        });
        for mut p in unacked {
            if p.pkid == 0 {
                rest.push(Request::Publish(p));
            } else if let Some(s) = self.inflight.remove(&p.pkid) {
                front.push(s);
                p.pkid = 0;
                p.dup = false;
                again.push(Request::Publish(p));
            }
        }
        // A publish that waited for its packet id to be free was never written: it is still queued.
        if let Some(mut p) = collided {
            p.pkid = 0;
            again.push(Request::Publish(p));
        }
        let lost = self.inflight.len() as u64;
        self.inflight.clear();
        for s in front.into_iter().rev() {
            self.queued.push_front(s);
        }
        again.extend(rest);
        (again, lost)
    }
}

/// One simulated recorder of a connection.
#[derive(Debug)]
pub(crate) struct DeviceSim {
    pub id: String,
    pub officer: Officer,
    /// Publishes OwnTracks JSON instead of Custody's own formats.
    pub owntracks: bool,
    /// Its offset in the fix period, so that devices do not all report at the same instant.
    pub phase: Duration,
    pub pos_topic: String,
    pub alarm_topic: String,
    /// Fixes waiting to be published as one batch.
    buffer: Vec<TimedFix>,
    /// Sequence number of the next protobuf batch.
    seq: u64,
    /// When the previous fix was made.
    last: Option<Instant>,
}

impl DeviceSim {
    pub fn new(
        id: &DeviceId,
        officer: Officer,
        owntracks: bool,
        phase: Duration,
        owntracks_user: &str,
    ) -> Self {
        Self {
            pos_topic: if owntracks {
                topics::owntracks(owntracks_user, id)
            } else {
                topics::device_pos(id)
            },
            alarm_topic: topics::device_alarm(id),
            id: id.to_string(),
            officer,
            owntracks,
            phase,
            buffer: Vec::new(),
            seq: 1,
            last: None,
        }
    }

    /// OwnTracks' two-character tracker id: the end of the device id.
    fn tid(&self) -> &str {
        let start = self.id.len().saturating_sub(2);
        self.id.get(start..).unwrap_or(&self.id)
    }
}

/// The devices of one MQTT connection and how it logs in.
#[derive(Debug)]
pub(crate) struct ConnectionPlan {
    pub client_id: String,
    /// User name and password, when the devices have credentials.
    pub login: Option<(String, String)>,
    pub devices: Vec<DeviceSim>,
}

/// What a connection needs besides its plan.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    pub broker: BrokerUrl,
    pub settings: Arc<Settings>,
    pub grid: Arc<Grid>,
    pub counters: Arc<Counters>,
    /// When the fleet started: device phases count from here.
    pub epoch: Instant,
    /// Stop producing fixes, flush, drain, disconnect.
    pub stop: CancellationToken,
    /// Stop waiting for acks (a second Ctrl-C).
    pub hurry: CancellationToken,
}

/// Runs one connection until `shared.stop`, then flushes its buffered fixes, waits (bounded) for
/// outstanding acks and disconnects. Never fails: problems are counted.
pub(crate) async fn run_connection(mut plan: ConnectionPlan, shared: Shared) {
    let settings = &*shared.settings;
    let counters = &*shared.counters;
    let mut opts = MqttOptions::new(
        plan.client_id.clone(),
        shared.broker.host.clone(),
        shared.broker.port,
    );
    opts.set_keep_alive(Duration::from_secs(60));
    opts.set_clean_session(true);
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let msgs_per_s = settings.messages_per_s(&plan.devices);
    let inflight = settings.inflight.unwrap_or_else(|| {
        // Half a second's worth of messages may wait for their acks: QoS 1 is then limited by the
        // broker, not by a window of 100 (rumqttc's default) that a busy gateway would fill in a
        // millisecond.
        (msgs_per_s / 2.0).ceil().clamp(20.0, 5_000.0) as u16
    });
    opts.set_inflight(inflight);
    if let Some((user, password)) = plan.login.take() {
        opts.set_credentials(user, password);
    }
    // Ten seconds of messages may queue while the broker is away; beyond that they are counted as
    // publish errors rather than piling up.
    let cap = (msgs_per_s * 10.0).ceil().clamp(100.0, 200_000.0) as usize;
    let (client, mut eventloop) = AsyncClient::new(opts, cap);
    let mut net = NetworkOptions::new();
    net.set_tcp_nodelay(true);
    net.set_connection_timeout(10);
    eventloop.set_network_options(net);

    let ledger = Mutex::new(Ledger::default());
    let finished = CancellationToken::new();
    let poller_done = CancellationToken::new();
    let driver = drive(
        &mut plan.devices,
        &client,
        &ledger,
        &shared,
        &finished,
        &poller_done,
    );
    let poller = poll(
        &mut eventloop,
        &plan.client_id,
        &ledger,
        counters,
        &finished,
        &poller_done,
    );
    tokio::join!(driver, poller);
    let left = ledger
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .outstanding();
    counters.publish_errors.fetch_add(left, Ordering::Relaxed);
}

/// How late a fix may be made rather than skipped.
const CATCH_UP: Duration = Duration::from_millis(100);

/// The earliest `base + k * period` (k ≥ 0) not before `now`.
fn next_slot(base: Instant, now: Instant, period: Duration) -> Instant {
    if base >= now {
        return base;
    }
    let behind = (now - base).as_secs_f64();
    let k = (behind / period.as_secs_f64()).ceil();
    base + period.mul_f64(k)
}

/// When a device whose fix was due `at` is due next, at `now`. The timer wakes on whole milliseconds,
/// so at high rates a device is often a little late: the fixes due in the last [`CATCH_UP`] are made at
/// once. A device that fell further behind (an overloaded machine) skips the fixes it missed rather than
/// bursting them out late, and keeps its phase.
fn reschedule(at: Instant, now: Instant, period: Duration) -> Instant {
    let after = at + period;
    if after + CATCH_UP > now {
        after
    } else {
        next_slot(at, now + Duration::from_nanos(1), period)
    }
}

/// Hands a message to the client, recording it in the ledger first (the poller may write it before
/// `try_publish` returns).
fn publish(
    client: &AsyncClient,
    ledger: &Mutex<Ledger>,
    counters: &Counters,
    topic: &str,
    qos: QoS,
    payload: Vec<u8>,
    sent: Sent,
) {
    let mut l = ledger.lock().unwrap_or_else(PoisonError::into_inner);
    l.queued.push_back(sent);
    if client.try_publish(topic, qos, false, payload).is_err() {
        l.queued.pop_back();
        counters.publish_errors.fetch_add(1, Ordering::Relaxed);
    }
}

fn flush(
    d: &mut DeviceSim,
    settings: &Settings,
    client: &AsyncClient,
    ledger: &Mutex<Ledger>,
    counters: &Counters,
) {
    if d.buffer.is_empty() {
        return;
    }
    let payload = match settings.format {
        Format::Proto => wire::proto_batch(&d.id, d.seq, &d.buffer),
        Format::Json => wire::json(&d.buffer, settings.batch > 1),
    };
    d.seq += 1;
    let sent = Sent {
        positions: d.buffer.len() as u32,
        alarm: false,
        needs_ack: settings.qos == QoS::AtLeastOnce,
    };
    d.buffer.clear();
    publish(
        client,
        ledger,
        counters,
        &d.pos_topic,
        settings.qos,
        payload,
        sent,
    );
}

/// Makes one fix of `d` and publishes what is due: the alarm if SOS was pressed, the fix itself
/// (OwnTracks) or the batch once full.
fn tick(
    d: &mut DeviceSim,
    now: Instant,
    grid: &Grid,
    settings: &Settings,
    client: &AsyncClient,
    ledger: &Mutex<Ledger>,
    counters: &Counters,
) {
    let dt = d.last.map_or(0.0, |l| (now - l).as_secs_f64());
    d.last = Some(now);
    let step = d.officer.advance(grid, dt);
    let t = TimedFix {
        since_epoch: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default(),
        fix: step.fix,
    };
    if step.sos_raised {
        let sent = Sent {
            positions: 0,
            alarm: true,
            needs_ack: true,
        };
        let payload = wire::sos_alarm(&t);
        publish(
            client,
            ledger,
            counters,
            &d.alarm_topic,
            QoS::AtLeastOnce,
            payload,
            sent,
        );
    }
    if d.owntracks {
        let sent = Sent {
            positions: 1,
            alarm: false,
            needs_ack: settings.qos == QoS::AtLeastOnce,
        };
        let payload = wire::owntracks(&t, d.tid());
        publish(
            client,
            ledger,
            counters,
            &d.pos_topic,
            settings.qos,
            payload,
            sent,
        );
        return;
    }
    d.buffer.push(t);
    if d.buffer.len() >= settings.batch {
        flush(d, settings, client, ledger, counters);
    }
}

/// The driver: a timer wheel over the connection's devices (a heap of due times), then the shutdown.
async fn drive(
    devices: &mut [DeviceSim],
    client: &AsyncClient,
    ledger: &Mutex<Ledger>,
    shared: &Shared,
    finished: &CancellationToken,
    poller_done: &CancellationToken,
) {
    let settings = &*shared.settings;
    let counters = &*shared.counters;
    let period = settings.period;
    let start = Instant::now();
    let mut due: BinaryHeap<Reverse<(Instant, usize)>> = devices
        .iter()
        .enumerate()
        .map(|(k, d)| Reverse((next_slot(shared.epoch + d.phase, start, period), k)))
        .collect();
    while let Some(&Reverse((next, _))) = due.peek() {
        tokio::select! {
            biased;
            () = shared.stop.cancelled() => break,
            () = tokio::time::sleep_until(next) => {}
        }
        let now = Instant::now();
        while let Some(&Reverse((at, k))) = due.peek() {
            if at > now {
                break;
            }
            due.pop();
            tick(
                &mut devices[k],
                now,
                &shared.grid,
                settings,
                client,
                ledger,
                counters,
            );
            let after = reschedule(at, now, period);
            due.push(Reverse((after, k)));
        }
    }

    // Shutdown: publish what is buffered, wait for the acks (bounded), disconnect.
    for d in devices.iter_mut() {
        flush(d, settings, client, ledger, counters);
    }
    let deadline = Instant::now() + settings.drain_timeout;
    while !ledger
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .is_empty()
    {
        tokio::select! {
            () = shared.hurry.cancelled() => break,
            () = poller_done.cancelled() => break,
            () = tokio::time::sleep_until(deadline) => break,
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    if client.try_disconnect().is_ok() {
        tokio::select! {
            () = poller_done.cancelled() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    finished.cancel();
}

/// Applies one event to the ledger. Returns true when the DISCONNECT went out.
fn apply(ev: &Event, ledger: &Mutex<Ledger>, counters: &Counters) -> bool {
    match ev {
        Event::Outgoing(Outgoing::Publish(pkid)) => ledger
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .written(*pkid, counters),
        Event::Incoming(Packet::PubAck(ack)) => ledger
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .acked(ack.pkid, counters),
        Event::Outgoing(Outgoing::Disconnect) => return true,
        _ => {}
    }
    false
}

/// The poller: turns the event loop until the driver is finished, reconnecting with a backoff.
async fn poll(
    eventloop: &mut EventLoop,
    client_id: &str,
    ledger: &Mutex<Ledger>,
    counters: &Counters,
    finished: &CancellationToken,
    done: &CancellationToken,
) {
    let mut resend: Vec<Request> = Vec::new();
    let mut up = false;
    let mut ever_up = false;
    let mut failures: u32 = 0;
    loop {
        let polled = tokio::select! {
            biased;
            () = finished.cancelled() => break,
            ev = eventloop.poll() => ev,
        };
        match polled {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                if !up {
                    up = true;
                    counters.connected.fetch_add(1, Ordering::Relaxed);
                }
                if !ever_up {
                    ever_up = true;
                    counters.ever_connected.fetch_add(1, Ordering::Relaxed);
                }
                failures = 0;
                // The clean session dropped what rumqttc kept; send it now, before anything newer.
                eventloop.pending.extend(resend.drain(..));
            }
            Ok(ev) => {
                if apply(&ev, ledger, counters) {
                    break;
                }
            }
            Err(e) => {
                if up {
                    up = false;
                    counters.connected.fetch_sub(1, Ordering::Relaxed);
                }
                counters.note_error(client_id, &e);
                // Events rumqttc produced but had not returned yet (a write that failed after its
                // packet was recorded, acks read in the same batch) belong to the old session.
                let stale: Vec<Event> = eventloop.state.events.drain(..).collect();
                for ev in &stale {
                    apply(ev, ledger, counters);
                }
                let pending = std::mem::take(&mut eventloop.pending);
                let collided = eventloop.state.collision.take();
                let (again, lost) = ledger
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take_for_resend(pending, collided);
                counters.publish_errors.fetch_add(lost, Ordering::Relaxed);
                resend.extend(again);
                failures = failures.saturating_add(1);
                // 0.5 s, 1 s, 2 s ... up to 10 s, with jitter so that thousands of connections do not
                // come back in the same instant.
                let base = (0.5 * 2f64.powi(failures.min(6) as i32 - 1)).min(10.0);
                let wait = Duration::from_secs_f64(base * (0.75 + rand::random::<f64>() * 0.5));
                tokio::select! {
                    () = finished.cancelled() => break,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
    if up {
        counters.connected.fetch_sub(1, Ordering::Relaxed);
    }
    done.cancel();
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn broker_urls_parse_to_host_and_port_and_say_what_is_wrong() {
        let ok = |s: &str| s.parse::<BrokerUrl>().unwrap();
        assert_eq!(
            ok("mqtt://127.0.0.1:1883"),
            BrokerUrl {
                host: "127.0.0.1".into(),
                port: 1883
            }
        );
        assert_eq!(ok("mqtt://broker").port, 1883);
        assert_eq!(ok("mqtt://[::1]:1884").host, "::1");
        assert_eq!(ok("mqtt://[::1]:1884").to_string(), "mqtt://[::1]:1884");
        let err = |s: &str| s.parse::<BrokerUrl>().unwrap_err();
        assert!(err("tcp://h:1883").contains("expected mqtt://"));
        assert!(err("mqtt://u:p@h:1883").contains("no credentials"));
        assert!(err("mqtt://h:0").contains("port must be"));
        assert!(err("mqtt://:1883").contains("host is empty"));
    }

    fn sent(positions: u32) -> Sent {
        Sent {
            positions,
            alarm: false,
            needs_ack: true,
        }
    }

    fn publish_req(pkid: u16, payload: &'static [u8]) -> Request {
        let mut p = Publish::new("t", QoS::AtLeastOnce, payload);
        p.pkid = pkid;
        Request::Publish(p)
    }

    #[test]
    fn a_qos1_message_is_delivered_at_its_puback_with_its_own_position_count() {
        let c = Counters::default();
        let mut l = Ledger::default();
        l.queued.extend([sent(10), sent(3)]);
        l.written(1, &c);
        l.written(2, &c);
        assert_eq!(c.messages.load(Ordering::Relaxed), 0);
        l.acked(2, &c);
        assert_eq!(c.positions.load(Ordering::Relaxed), 3);
        l.acked(1, &c);
        assert_eq!(c.positions.load(Ordering::Relaxed), 13);
        assert_eq!(c.messages.load(Ordering::Relaxed), 2);
        assert!(l.is_empty());
    }

    #[test]
    fn after_a_broken_connection_unacked_messages_go_again_first_and_the_ledger_follows() {
        let c = Counters::default();
        let mut l = Ledger::default();
        // Two written and unacked (5 and 6 positions), one still queued (7).
        l.queued.extend([sent(5), sent(6), sent(7)]);
        l.written(1, &c);
        l.written(2, &c);
        let pending: VecDeque<Request> = [
            publish_req(1, b"a"),
            publish_req(2, b"b"),
            publish_req(0, b"c"),
            Request::PingReq(rumqttc::PingReq),
        ]
        .into();
        let (again, lost) = l.take_for_resend(pending, None);
        assert_eq!(lost, 0);
        let payloads: Vec<&[u8]> = again
            .iter()
            .map(|r| match r {
                Request::Publish(p) => {
                    assert_eq!(p.pkid, 0, "a resent message gets a fresh packet id");
                    &p.payload[..]
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(payloads, [b"a", b"b", b"c"]);
        assert_eq!(l.queued, [sent(5), sent(6), sent(7)]);
        assert!(l.inflight.is_empty());
        // In the new session they are written and acked again, in that order.
        for pkid in [10, 11, 12] {
            l.written(pkid, &c);
        }
        l.acked(11, &c);
        assert_eq!(c.positions.load(Ordering::Relaxed), 6);
    }

    #[test]
    fn a_device_that_fell_behind_keeps_its_phase() {
        let base = Instant::now();
        let p = Duration::from_secs(1);
        assert_eq!(next_slot(base, base, p), base);
        assert_eq!(
            next_slot(base, base + Duration::from_millis(2500), p),
            base + Duration::from_secs(3)
        );
        let later = base + Duration::from_secs(5);
        assert_eq!(next_slot(later, base, p), later);
    }

    #[test]
    fn a_device_a_little_late_still_makes_its_fixes_and_one_far_behind_skips_them() {
        let at = Instant::now();
        let ms = Duration::from_millis;
        // 1000 Hz, woken 3 ms late: the next fix is due at once (already past), not skipped.
        assert_eq!(reschedule(at, at + ms(3), ms(1)), at + ms(1));
        // 1 Hz, on time.
        assert_eq!(reschedule(at, at + ms(2), ms(1000)), at + ms(1000));
        // 10 Hz, half a second behind: the missed fixes are skipped, the phase kept.
        assert_eq!(reschedule(at, at + ms(550), ms(100)), at + ms(600));
    }
}
