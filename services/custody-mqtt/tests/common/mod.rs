//! What the MQTT tests share: a recording handler, an endpoint on a random port, raw-socket and rumqttc
//! clients.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use bytes::{Bytes, BytesMut};
use custody_core::{DeviceId, StationId};
use custody_mqtt::{Endpoint, EndpointConfig, Handler, Inbound, Principal, Refusal};
use rumqttc::mqttbytes::v4::Packet;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};

pub const PASSWORD: &str = "secret";

pub fn init_test_logging() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_test_writer()
            .try_init();
    }
}

/// One handler call as the test sees it.
#[derive(Debug, Clone)]
pub struct Call {
    pub from: Option<Principal>,
    pub msg: Inbound,
    /// What the handler answered.
    pub outcome: Result<(), Refusal>,
    /// When the call was first polled, counting from 0 over all calls to this handler.
    pub seq: u64,
}

/// How long a slow handler takes for a message.
pub type Delay = Arc<dyn Fn(&Inbound) -> Duration + Send + Sync>;

/// Accepts `station-1`/`secret` as station ST-1, `station-2`/`secret` as ST-2, `device-1`/`secret` as
/// device D1, and `station:<id>`/`secret` as any station; records every publish call.
///
/// Like the real handlers, a publish call does its bookkeeping (numbering the call, picking a refusal)
/// synchronously when first polled, then waits for the gate and the delay, if any, then records itself.
pub struct TestHandler {
    calls: mpsc::UnboundedSender<Call>,
    /// Refusals to answer, in order, for calls on a topic; when none is left the call succeeds.
    refusals: Mutex<HashMap<String, VecDeque<Refusal>>>,
    /// Refusals to answer, in order, for calls with a payload; checked before those by topic.
    payload_refusals: Mutex<HashMap<Bytes, VecDeque<Refusal>>>,
    /// When set, each publish waits for a permit before answering.
    gate: Option<Arc<Semaphore>>,
    /// When set, each publish takes this long before answering.
    delay: Option<Delay>,
    /// Publish calls first polled so far.
    started: AtomicU64,
}

impl TestHandler {
    pub fn new() -> (Arc<Self>, mpsc::UnboundedReceiver<Call>) {
        Self::build(None, None)
    }

    /// A handler whose publish calls block until the test adds permits to the returned semaphore.
    pub fn gated() -> (Arc<Self>, mpsc::UnboundedReceiver<Call>, Arc<Semaphore>) {
        let gate = Arc::new(Semaphore::new(0));
        let (h, rx) = Self::build(Some(gate.clone()), None);
        (h, rx, gate)
    }

    /// A handler whose publish calls take `delay(msg)` each, like one waiting for a storage commit.
    pub fn slow(
        delay: impl Fn(&Inbound) -> Duration + Send + Sync + 'static,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Call>) {
        Self::build(None, Some(Arc::new(delay)))
    }

    fn build(
        gate: Option<Arc<Semaphore>>,
        delay: Option<Delay>,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Call>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let h = Self {
            calls: tx,
            refusals: Mutex::new(HashMap::new()),
            payload_refusals: Mutex::new(HashMap::new()),
            gate,
            delay,
            started: AtomicU64::new(0),
        };
        (Arc::new(h), rx)
    }

    /// The next publish call with payload `body` answers `refusal`.
    pub fn refuse_payload(&self, body: &str, refusal: Refusal) {
        self.payload_refusals
            .lock()
            .unwrap()
            .entry(payload(body))
            .or_default()
            .push_back(refusal);
    }

    /// How many publish calls have started.
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::SeqCst)
    }

    /// The next publish call on `topic` answers `refusal`.
    pub fn refuse_next(&self, topic: &str, refusal: Refusal) {
        self.refusals
            .lock()
            .unwrap()
            .entry(topic.to_owned())
            .or_default()
            .push_back(refusal);
    }
}

#[async_trait::async_trait]
impl Handler for TestHandler {
    async fn authenticate(
        &self,
        _client_id: &str,
        username: &str,
        password: &str,
    ) -> Result<Principal, String> {
        if password != PASSWORD {
            return Err(format!("wrong password for {username:?}"));
        }
        match username {
            "station-1" => Ok(Principal::Station(StationId::parse("ST-1").unwrap())),
            "station-2" => Ok(Principal::Station(StationId::parse("ST-2").unwrap())),
            "device-1" => Ok(Principal::Device(DeviceId::parse("D1").unwrap())),
            u => match u.strip_prefix("station:") {
                Some(id) => StationId::parse(id)
                    .map(Principal::Station)
                    .map_err(|e| e.to_string()),
                None => Err(format!("unknown user {u:?}")),
            },
        }
    }

    async fn publish(&self, from: Option<&Principal>, msg: Inbound) -> Result<(), Refusal> {
        let seq = self.started.fetch_add(1, Ordering::SeqCst);
        let by_payload = self
            .payload_refusals
            .lock()
            .unwrap()
            .get_mut(&msg.payload)
            .and_then(VecDeque::pop_front);
        let outcome = match by_payload {
            Some(refusal) => Err(refusal),
            None => match self.refusals.lock().unwrap().get_mut(&msg.topic) {
                Some(queue) => queue.pop_front().map_or(Ok(()), Err),
                None => Ok(()),
            },
        };
        let delay = self.delay.as_ref().map(|d| d(&msg));
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let _ = self.calls.send(Call {
            from: from.cloned(),
            msg,
            outcome: outcome.clone(),
            seq,
        });
        outcome
    }
}

/// The next handler call, failing the test after `secs`.
pub async fn next_call(rx: &mut mpsc::UnboundedReceiver<Call>, secs: u64) -> Call {
    tokio::time::timeout(Duration::from_secs(secs), rx.recv())
        .await
        .expect("a handler call in time")
        .expect("handler alive")
}

/// Asserts that no handler call arrives within `ms`.
pub async fn assert_no_call(rx: &mut mpsc::UnboundedReceiver<Call>, ms: u64) {
    if let Ok(Some(call)) = tokio::time::timeout(Duration::from_millis(ms), rx.recv()).await {
        panic!("expected no handler call, got {call:?}");
    }
}

pub fn station(id: &str) -> Principal {
    Principal::Station(StationId::parse(id).unwrap())
}

/// An endpoint serving on 127.0.0.1:0 until dropped or stopped.
pub struct TestEndpoint {
    pub addr: SocketAddr,
    pub endpoint: Endpoint,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestEndpoint {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Triggers shutdown and waits for `serve` to return.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("serve returns after shutdown")
                .unwrap()
                .unwrap();
        }
    }

    /// Triggers shutdown and hands back the task still draining.
    pub fn begin_stop(&mut self) -> tokio::task::JoinHandle<std::io::Result<()>> {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap()
    }
}

pub async fn spawn_endpoint(handler: Arc<TestHandler>) -> TestEndpoint {
    spawn_endpoint_with(handler, EndpointConfig::default()).await
}

pub async fn spawn_endpoint_with(
    handler: Arc<TestHandler>,
    config: EndpointConfig,
) -> TestEndpoint {
    init_test_logging();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let endpoint = Endpoint::new(handler, config);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let e = endpoint.clone();
    let task = tokio::spawn(async move {
        e.serve(listener, async move {
            let _ = rx.await;
        })
        .await
    });
    TestEndpoint {
        addr,
        endpoint,
        stop: Some(tx),
        task: Some(task),
    }
}

/// rumqttc options for the test endpoint.
pub fn options(port: u16, client_id: &str, user: &str, password: &str) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
    o.set_credentials(user, password)
        .set_keep_alive(Duration::from_secs(5));
    o
}

pub fn client(port: u16, client_id: &str, user: &str) -> (AsyncClient, EventLoop) {
    AsyncClient::new(options(port, client_id, user, PASSWORD), 16)
}

/// Polls until `pick` returns Some for an event; fails the test on a connection error or after `ms`.
pub async fn wait_for<T>(
    el: &mut EventLoop,
    ms: u64,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> T {
    let found = tokio::time::timeout(Duration::from_millis(ms), async {
        loop {
            let event = el.poll().await.expect("connection stays up");
            if let Some(t) = pick(&event) {
                return t;
            }
        }
    })
    .await;
    found.expect("expected event in time")
}

/// Polls until the connection fails, failing the test if it is still up after `ms` or a PUBACK arrives.
pub async fn wait_for_close(el: &mut EventLoop, ms: u64) -> rumqttc::ConnectionError {
    tokio::time::timeout(Duration::from_millis(ms), async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(rumqttc::Packet::PubAck(ack))) => {
                    panic!("unexpected puback {ack:?}")
                }
                Ok(_) => {}
                Err(e) => return e,
            }
        }
    })
    .await
    .expect("connection closed in time")
}

/// A client speaking MQTT over a plain socket, packets encoded with rumqttc's codec.
pub struct Raw {
    stream: TcpStream,
    buf: BytesMut,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Self {
        Self {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
        }
    }

    pub async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        packet.write(&mut out, usize::MAX).unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next packet, or None when the server closed the connection. Fails the test after `ms`.
    pub async fn recv(&mut self, ms: u64) -> Option<Packet> {
        self.try_recv(ms).await.expect("a packet or close in time")
    }

    /// Like [`Raw::recv`], but `Err` when nothing came within `ms` (the connection is still usable).
    pub async fn try_recv(
        &mut self,
        ms: u64,
    ) -> Result<Option<Packet>, tokio::time::error::Elapsed> {
        tokio::time::timeout(Duration::from_millis(ms), async {
            loop {
                match Packet::read(&mut self.buf, usize::MAX) {
                    Ok(p) => return Some(p),
                    Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                    Err(e) => panic!("server sent bad bytes: {e}"),
                }
                // Cancel-safe: bytes read so far stay in `buf`.
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
    }
}

pub fn payload(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}
