//! The embedded MQTT 3.1.1 endpoint: one task per connection, each PUBLISH handed to the [`Handler`] before
//! it is acknowledged. Sessions are described on [`Endpoint`].
//!
//! A connection pipelines its publishes: up to [`EndpointConfig::max_in_flight`] handler calls run at once
//! inside the connection's task (a `FuturesOrdered`, not spawned tasks), so that one client is not held
//! to one message per storage commit. Each call is first polled in the order its PUBLISH arrived, and the
//! PUBACKs go out in that order too (MQTT 3.1.1 §4.6), each only after its own call returned. Other
//! packets (PINGREQ, SUBSCRIBE, PUBACKs of outbound messages) are read and answered while calls run. When
//! the pipeline is full the connection reads no further: the PUBLISH that did not fit is held until a slot
//! frees, and the client waits in TCP. QoS 2 publishes run alone: one waits until the calls before it
//! have been acknowledged, and later publishes wait until it has its PUBREC.

use crate::{Handler, Inbound, Principal, Refusal, topics};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use rumqttc::QoS;
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, LastWill, Packet, PubAck, PubComp, PubRec, Publish,
    SubAck, SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::{self, has_wildcards, matches};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout, timeout_at};
use tracing::{debug, info, warn};

/// How long a closing connection waits for the client to close its side; see [`Conn::linger`].
const LINGER: Duration = Duration::from_secs(1);

/// Settings of the embedded endpoint.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Largest packet taken or sent (its remaining length), in bytes. A bigger one closes the connection.
    /// Default 1 MiB.
    pub max_packet_bytes: usize,
    /// How long a new socket has to send its CONNECT before it is closed. Default 10 s.
    pub connect_timeout: Duration,
    /// How long one write to a client may take; a client that stops reading is closed. Default 30 s.
    pub write_timeout: Duration,
    /// On shutdown, how long connections get to finish what they are doing (the handler calls in flight
    /// and their acks) before they are dropped. Default 10 s.
    pub drain_timeout: Duration,
    /// Outbound messages queued per connection; when a connection's queue is full,
    /// [`Endpoint::publish`] skips it. Default 64.
    pub outbound_queue: usize,
    /// Handler calls one connection may have running at once, for its QoS 0 and QoS 1 publishes. One
    /// connection takes at most this many messages per storage commit, so this bounds its rate; when
    /// that many are running it stops reading until the oldest is acknowledged. 0 is taken as 1 (one
    /// message at a time). Default 32.
    pub max_in_flight: usize,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            max_packet_bytes: 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(10),
            outbound_queue: 64,
            max_in_flight: 32,
        }
    }
}

/// Running totals, for metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages the handler took, wills included.
    pub accepted: AtomicU64,
    /// Messages the handler refused as malformed: acknowledged and dropped.
    pub malformed: AtomicU64,
    /// Messages the handler could not store now; each closed its connection (QoS 1 and 2).
    pub unavailable: AtomicU64,
    /// CONNECTs refused by authentication, or for a will outside the client's own topics.
    pub refused_auth: AtomicU64,
    /// Publishes outside the client's own topics; each closed its connection.
    pub acl_violations: AtomicU64,
    /// Connections closed for bytes that are not MQTT 3.1.1, oversized or out-of-place packets.
    pub protocol_errors: AtomicU64,
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The embedded endpoint: serves connections and publishes to connected clients. Cheap to clone.
///
/// Sessions live in memory only. A client connecting with `clean_session = 0` gets its session
/// (subscriptions, QoS 2 packet ids awaiting PUBREL) back, with `session_present = 1`, while this process
/// still holds it and the same principal owns it; that is what makes clients resend unacknowledged
/// publishes after a reconnect. After a restart no session is present, and most clients then drop what
/// they had not had acknowledged. Persistent sessions of clients that never come back stay in memory
/// until the process ends (one small entry per client id).
///
/// Outbound QoS 1 messages are tracked until the client's PUBACK only while it is connected: they are not
/// queued for offline clients, not resent after a reconnect, and there are no retained messages.
#[derive(Clone)]
pub struct Endpoint {
    shared: Arc<Shared>,
}

struct Shared {
    handler: Arc<dyn Handler>,
    config: EndpointConfig,
    counters: Counters,
    /// Sessions by client id. A std mutex: it is held only for map updates, never across an await.
    sessions: Mutex<HashMap<String, Session>>,
    next_conn: AtomicU64,
}

/// What outlives one network connection of a client.
struct Session {
    /// Who owns it; a client id reused by another principal does not inherit it.
    principal: Principal,
    /// Whether it ends with its connection (`clean_session = 1`).
    clean: bool,
    /// Filters granted, with their QoS. Only exact cmd topics pass the ACL today, but delivery matches
    /// them as MQTT filters so that wildcard grants would just work.
    subscriptions: Vec<(String, QoS)>,
    /// QoS 2 packet ids already handed to the handler and awaiting PUBREL, so that a PUBLISH resent after
    /// a reconnect is not handed over twice. Kept here while the client is away.
    awaiting_rel: HashSet<u16>,
    /// The connection currently serving it, if any.
    live: Option<Live>,
}

struct Live {
    conn: u64,
    outbound: mpsc::Sender<Publish>,
    /// Told when another connection takes the client id over. A `Notify` keeps the permit, so the signal
    /// is not lost while the connection is busy in the handler.
    kick: Arc<Notify>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("config", &self.shared.config)
            .field("counters", &self.shared.counters)
            .finish_non_exhaustive()
    }
}

/// Runs the embedded endpoint on `listener` until `shutdown` completes, then stops accepting, stops reading
/// from connections, lets each finish its handler calls in flight and write their acks (so a message
/// being stored is either acknowledged or was never acknowledged) for up to `drain_timeout`, and returns.
pub async fn serve(
    listener: TcpListener,
    handler: Arc<dyn Handler>,
    config: EndpointConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    Endpoint::new(handler, config)
        .serve(listener, shutdown)
        .await
}

impl Endpoint {
    /// An endpoint that hands messages to `handler`. Nothing listens until [`Endpoint::serve`].
    pub fn new(handler: Arc<dyn Handler>, config: EndpointConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                handler,
                config,
                counters: Counters::default(),
                sessions: Mutex::new(HashMap::new()),
                next_conn: AtomicU64::new(1),
            }),
        }
    }

    /// Running totals since this endpoint was made.
    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// Publishes a server message (a command) to every connected client whose subscription matches
    /// `topic`, at the lower of `qos` and the QoS granted. Returns how many sessions it was queued for.
    /// Clients that are not connected do not get it later (see the module docs).
    pub fn publish(&self, topic: &str, payload: Bytes, qos: QoS) -> usize {
        if topic.is_empty() || has_wildcards(topic) {
            warn!(%topic, "not publishing to a topic with wildcards");
            return 0;
        }
        let sessions = self.shared.lock_sessions();
        let mut delivered = 0;
        for (client_id, s) in sessions.iter() {
            let Some(live) = &s.live else { continue };
            let granted = s
                .subscriptions
                .iter()
                .filter(|(filter, _)| matches(topic, filter))
                .map(|(_, q)| *q)
                .reduce(max_qos);
            let Some(granted) = granted else { continue };
            let msg = Publish::from_bytes(topic, min_qos(qos, granted), payload.clone());
            match live.outbound.try_send(msg) {
                Ok(()) => delivered += 1,
                Err(_) => {
                    warn!(%client_id, %topic, "outbound queue full or closed, message not delivered")
                }
            }
        }
        delivered
    }

    /// Serves connections from `listener` until `shutdown` completes; see [`serve`].
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut conns = JoinSet::new();
        tokio::pin!(shutdown);
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, "mqtt endpoint listening");
        }
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let shared = self.shared.clone();
                        conns.spawn(connection(shared, stream, peer, stop_rx.clone()));
                    }
                    Err(error) => {
                        // Usually out of file descriptors; back off instead of spinning.
                        warn!(%error, "mqtt accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(done) = conns.join_next(), if !conns.is_empty() => log_join(done),
            }
        }
        drop(listener);
        let _ = stop_tx.send(true);
        let open = conns.len();
        let drained = timeout(self.shared.config.drain_timeout, async {
            while let Some(done) = conns.join_next().await {
                log_join(done);
            }
        })
        .await;
        if drained.is_err() {
            warn!(
                open = conns.len(),
                "mqtt connections still busy after drain timeout, dropping them"
            );
            conns.shutdown().await;
        }
        info!(closed = open, "mqtt endpoint stopped");
        Ok(())
    }
}

fn log_join(done: Result<(), tokio::task::JoinError>) {
    if let Err(error) = done
        && error.is_panic()
    {
        warn!(%error, "mqtt connection task panicked");
    }
}

impl Shared {
    fn lock_sessions(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        // The map stays consistent even if a holder panicked: every update is a single insert or field
        // assignment.
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands one message to the handler, counting and logging the outcome.
    async fn deliver(
        &self,
        client_id: &str,
        from: &Principal,
        msg: Inbound,
    ) -> Result<(), Refusal> {
        let topic = msg.topic.clone();
        let result = self.handler.publish(Some(from), msg).await;
        match &result {
            Ok(()) => bump(&self.counters.accepted),
            Err(Refusal::Malformed(reason)) => {
                bump(&self.counters.malformed);
                warn!(%client_id, principal = %from, %topic, %reason, "malformed message acknowledged and dropped");
            }
            Err(Refusal::Unavailable(reason)) => {
                bump(&self.counters.unavailable);
                warn!(%client_id, principal = %from, %topic, %reason, "message not stored, not acknowledging");
            }
        }
        result
    }
}

/// Why a connection ended.
#[derive(Debug)]
enum Close {
    /// The client sent DISCONNECT.
    Disconnect,
    /// Another connection took the client id over.
    TakenOver,
    /// The endpoint is shutting down.
    Shutdown,
    Eof,
    Io(std::io::Error),
    KeepAlive,
    Protocol(String),
    Acl,
    Unavailable,
}

impl Close {
    /// Whether the will is handed over. Not on DISCONNECT (the spec), not on takeover (the client is back,
    /// so an "I went away" will would be false and could land after its new "online" status), and not on
    /// shutdown (the server went away, not the client).
    fn hands_over_will(&self) -> bool {
        !matches!(self, Close::Disconnect | Close::TakenOver | Close::Shutdown)
    }
}

/// One network connection, after or before CONNECT.
struct Conn {
    shared: Arc<Shared>,
    peer: SocketAddr,
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    /// Bytes read but not yet framed into a packet.
    buf: BytesMut,
    /// Packets encoded but not yet written; acks that are ready together go out in one write.
    out: BytesMut,
    /// 1.5 × the client's keep-alive; `None` before CONNECT or when the client asked for none.
    keep_alive: Option<Duration>,
    /// When bytes last came in, or when reading resumed after a pause for a full pipeline: while the
    /// endpoint is not reading, the client's silence is not the client's fault.
    last_rx: Instant,
}

impl Conn {
    /// Reads the next packet. Cancel-safe: bytes read so far stay in `buf`.
    async fn read_packet(&mut self) -> Result<Packet, Close> {
        let max = self.shared.config.max_packet_bytes;
        loop {
            match Packet::read(&mut self.buf, max) {
                Ok(packet) => return Ok(packet),
                Err(mqttbytes::Error::InsufficientBytes(n)) => self.buf.reserve(n.min(max)),
                Err(e) => return Err(Close::Protocol(e.to_string())),
            }
            let read = self.rd.read_buf(&mut self.buf);
            let n = match self.keep_alive {
                Some(window) => timeout_at(self.last_rx + window, read)
                    .await
                    .map_err(|_| Close::KeepAlive)?,
                None => read.await,
            }
            .map_err(Close::Io)?;
            if n == 0 {
                return Err(Close::Eof);
            }
            self.last_rx = Instant::now();
        }
    }

    /// Encodes a packet for the next [`Conn::flush`].
    fn queue(&mut self, packet: Packet) -> Result<(), Close> {
        packet
            .write(&mut self.out, self.shared.config.max_packet_bytes)
            .map_err(|e| Close::Protocol(format!("cannot encode reply: {e}")))?;
        Ok(())
    }

    /// Writes what was queued. The queue is empty afterwards, whether the write worked or not.
    async fn flush(&mut self) -> Result<(), Close> {
        if self.out.is_empty() {
            return Ok(());
        }
        let written = timeout(
            self.shared.config.write_timeout,
            self.wr.write_all(&self.out),
        )
        .await;
        self.out.clear();
        match written {
            Ok(written) => written.map_err(Close::Io),
            Err(_) => Err(Close::Io(std::io::ErrorKind::TimedOut.into())),
        }
    }

    async fn send(&mut self, packet: Packet) -> Result<(), Close> {
        self.queue(packet)?;
        self.flush().await
    }

    /// Closes gracefully: a FIN after everything written, then what the client still sends is read and
    /// discarded until it closes too, for up to [`LINGER`]. Dropping a socket with unread input resets
    /// the connection instead, and a reset can destroy acks the client has not read yet (after a
    /// refusal as unavailable, the client's later publishes are typically still unread).
    async fn linger(mut self) {
        let _ = timeout(LINGER, async {
            if self.wr.shutdown().await.is_err() {
                return;
            }
            loop {
                self.buf.clear();
                match self.rd.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }
}

enum Next {
    In(Packet),
    Out(Publish),
    Handled(Handled),
}

/// What one handler call answered, with what is needed to acknowledge its message.
struct Handled {
    pkid: u16,
    qos: QoS,
    result: Result<(), Refusal>,
}

/// A handler call in the pipeline. It owns what it needs, so that it does not borrow the connection.
type Call = Pin<Box<dyn Future<Output = Handled> + Send>>;

/// The handler calls of one connection that have not been acknowledged yet, oldest first.
///
/// A `FuturesOrdered` polls calls inside the connection's task: a call pushed after another is first
/// polled after it (handlers rely on this for work they do before their first await), and results come
/// out in push order, which is the order the acks must be written in. A call that finished waits there
/// until the ones before it have, and still holds its slot.
struct Pipeline {
    calls: FuturesOrdered<Call>,
    /// Whether the calls include a QoS 2 one, which runs alone.
    exclusive: bool,
    /// [`EndpointConfig::max_in_flight`], at least 1.
    max: usize,
}

impl Pipeline {
    fn new(max: usize) -> Self {
        Self {
            calls: FuturesOrdered::new(),
            exclusive: false,
            max: max.max(1),
        }
    }

    /// Whether a publish at `qos` may start now.
    fn admits(&self, qos: QoS) -> bool {
        match qos {
            QoS::ExactlyOnce => self.calls.is_empty(),
            QoS::AtMostOnce | QoS::AtLeastOnce => !self.exclusive && self.calls.len() < self.max,
        }
    }
}

/// What an accepted CONNECT established.
struct Client {
    /// Shared with the handler calls in flight, as is `principal`.
    id: Arc<str>,
    principal: Arc<Principal>,
    conn: u64,
    will: Option<LastWill>,
    awaiting_rel: HashSet<u16>,
    /// Outbound QoS 1 packet ids not yet acknowledged by the client.
    inflight: HashSet<u16>,
    last_pkid: u16,
}

async fn connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    let connect_timeout = shared.config.connect_timeout;
    let mut conn = Conn {
        shared,
        peer,
        rd,
        wr,
        buf: BytesMut::with_capacity(4096),
        out: BytesMut::with_capacity(256),
        keep_alive: None,
        last_rx: Instant::now(),
    };
    let first = tokio::select! {
        first = timeout(connect_timeout, conn.read_packet()) => first,
        _ = stop.wait_for(|stopped| *stopped) => return,
    };
    let connect = match first {
        Ok(Ok(Packet::Connect(connect))) => connect,
        Ok(Ok(other)) => {
            bump(&conn.shared.counters.protocol_errors);
            info!(%peer, packet = packet_name(&other), "first packet is not connect, closing");
            return;
        }
        Ok(Err(Close::Protocol(error))) => {
            bump(&conn.shared.counters.protocol_errors);
            info!(%peer, %error, "bad bytes before connect, closing");
            return;
        }
        Ok(Err(close)) => {
            debug!(%peer, ?close, "connection closed before connect");
            return;
        }
        Err(_) => {
            info!(%peer, timeout = ?connect_timeout, "no connect in time, closing");
            return;
        }
    };
    let Some((mut client, mut outbound, kick)) = accept(&mut conn, connect).await else {
        return;
    };

    let mut pipeline = Pipeline::new(conn.shared.config.max_in_flight);
    // A PUBLISH read while the pipeline had no room for it. While one is held the socket is not read:
    // that is the back-pressure on the client.
    let mut held: Option<Publish> = None;
    let close = loop {
        if let Some(p) = held.take_if(|p| pipeline.admits(p.qos)) {
            conn.last_rx = Instant::now();
            if let Err(close) = start(&mut conn, &mut client, &mut pipeline, p).await {
                break close;
            }
        }
        // Biased so that a pending stop or takeover wins over more input, and finished handler calls
        // are acknowledged (freeing their slots) before more is read.
        let next = tokio::select! {
            biased;
            _ = stop.wait_for(|stopped| *stopped) => Err(Close::Shutdown),
            _ = kick.notified() => Err(Close::TakenOver),
            Some(handled) = pipeline.calls.next(), if !pipeline.calls.is_empty() => {
                Ok(Next::Handled(handled))
            }
            packet = conn.read_packet(), if held.is_none() => packet.map(Next::In),
            Some(msg) = outbound.recv() => Ok(Next::Out(msg)),
        };
        let result = match next {
            Ok(Next::In(Packet::Publish(p))) => {
                on_publish(&mut conn, &mut client, &mut pipeline, &mut held, p).await
            }
            Ok(Next::In(packet)) => on_packet(&mut conn, &mut client, packet).await,
            Ok(Next::Handled(handled)) => {
                acknowledge(&mut conn, &mut client, &mut pipeline, handled).await
            }
            Ok(Next::Out(msg)) => send_outbound(&mut conn, &mut client, msg).await,
            Err(close) => Err(close),
        };
        if let Err(close) = result {
            break close;
        }
    };
    finish(&mut conn, &mut client, &mut pipeline, &close).await;

    let shared = conn.shared.clone();
    let (id, principal) = (&client.id, &client.principal);
    match &close {
        Close::Disconnect => debug!(client_id = %id, %principal, "mqtt client disconnected"),
        Close::TakenOver => {
            info!(client_id = %id, %principal, "mqtt connection taken over by a new one")
        }
        Close::Shutdown => {
            debug!(client_id = %id, %principal, "mqtt connection closed for shutdown")
        }
        Close::Eof => {
            info!(client_id = %id, %principal, "mqtt client went away without disconnect")
        }
        Close::Io(error) => info!(client_id = %id, %principal, %error, "mqtt connection failed"),
        Close::KeepAlive => {
            info!(client_id = %id, %principal, "mqtt client silent past keep-alive, closing")
        }
        Close::Protocol(error) => {
            bump(&shared.counters.protocol_errors);
            warn!(client_id = %id, %principal, %error, "mqtt protocol error, closing");
        }
        Close::Unavailable => {
            info!(client_id = %id, %principal, "closing without ack so the client resends after reconnecting")
        }
        // Already logged where it happened.
        Close::Acl => {}
    }
    {
        let mut sessions = shared.lock_sessions();
        if let Some(s) = sessions.get_mut(&*client.id)
            && s.live.as_ref().is_some_and(|l| l.conn == client.conn)
        {
            if s.clean {
                sessions.remove(&*client.id);
            } else {
                s.live = None;
                s.awaiting_rel = std::mem::take(&mut client.awaiting_rel);
            }
        }
    }
    if let Some(will) = client.will.take().filter(|_| close.hands_over_will()) {
        let msg = Inbound {
            topic: will.topic,
            payload: will.message,
            qos: will.qos as u8,
            retain: will.retain,
        };
        // Outcome logged and counted by deliver; a will has nobody to resend it.
        let _ = shared.deliver(&client.id, &client.principal, msg).await;
    }
    // Last, so that a client reconnecting at once finds its session released and its will handed over.
    if !matches!(close, Close::Eof | Close::Io(_)) {
        conn.linger().await;
    }
}

async fn refuse<T>(conn: &mut Conn, code: ConnectReturnCode) -> Option<T> {
    // Best effort: the socket closes right after either way.
    let _ = conn.send(Packet::ConnAck(ConnAck::new(code, false))).await;
    None
}

/// Checks a CONNECT, answers it, and registers the session. `None` means the connection is refused.
async fn accept(
    conn: &mut Conn,
    connect: Connect,
) -> Option<(Client, mpsc::Receiver<Publish>, Arc<Notify>)> {
    let shared = conn.shared.clone();
    let peer = conn.peer;
    if connect.protocol != mqttbytes::Protocol::V4 {
        bump(&shared.counters.protocol_errors);
        info!(%peer, client_id = %connect.client_id, "refusing connect: only mqtt 3.1.1 is served");
        return refuse(conn, ConnectReturnCode::RefusedProtocolVersion).await;
    }
    let conn_id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let client_id = if !connect.client_id.is_empty() {
        connect.client_id.clone()
    } else if connect.clean_session {
        format!(
            "custody-auto-{conn_id}-{:016x}",
            RandomState::new().hash_one(conn_id)
        )
    } else {
        info!(%peer, "refusing connect: empty client id needs clean session");
        return refuse(conn, ConnectReturnCode::BadClientId).await;
    };
    let (username, password) = connect
        .login
        .as_ref()
        .map_or(("", ""), |l| (l.username.as_str(), l.password.as_str()));
    let principal = match shared
        .handler
        .authenticate(&client_id, username, password)
        .await
    {
        Ok(p) => p,
        Err(reason) => {
            bump(&shared.counters.refused_auth);
            info!(%peer, %client_id, %username, %reason, "mqtt connection refused");
            let code = if connect.login.is_some() {
                ConnectReturnCode::BadUserNamePassword
            } else {
                ConnectReturnCode::NotAuthorized
            };
            return refuse(conn, code).await;
        }
    };
    if let Some(will) = &connect.last_will
        && !topics::may_publish(&principal, &will.topic)
    {
        bump(&shared.counters.refused_auth);
        warn!(%peer, %client_id, %principal, topic = %will.topic, "mqtt connection refused: will outside the client's own topics");
        return refuse(conn, ConnectReturnCode::NotAuthorized).await;
    }

    let (tx, rx) = mpsc::channel(shared.config.outbound_queue.max(1));
    let kick = Arc::new(Notify::new());
    let live = Live {
        conn: conn_id,
        outbound: tx,
        kick: kick.clone(),
    };
    let (session_present, awaiting_rel) = {
        let mut sessions = shared.lock_sessions();
        let old = sessions.remove(&client_id);
        if let Some(old_live) = old.as_ref().and_then(|s| s.live.as_ref()) {
            old_live.kick.notify_one();
        }
        // Resume only the same principal's persistent session: subscriptions were checked against it.
        let resumed =
            old.filter(|s| !connect.clean_session && !s.clean && s.principal == principal);
        let present = resumed.is_some();
        let mut session = resumed.unwrap_or_else(|| Session {
            principal: principal.clone(),
            clean: connect.clean_session,
            subscriptions: Vec::new(),
            awaiting_rel: HashSet::new(),
            live: None,
        });
        session.live = Some(live);
        let awaiting_rel = std::mem::take(&mut session.awaiting_rel);
        sessions.insert(client_id.clone(), session);
        (present, awaiting_rel)
    };
    let ack = ConnAck::new(ConnectReturnCode::Success, session_present);
    if conn.send(Packet::ConnAck(ack)).await.is_err() {
        // The socket died right away; the next read fails and the normal close path cleans up.
        debug!(%client_id, "could not send connack");
    }
    if connect.keep_alive > 0 {
        conn.keep_alive = Some(Duration::from_millis(u64::from(connect.keep_alive) * 1500));
    }
    info!(%peer, %client_id, %principal, session_present, keep_alive = connect.keep_alive, "mqtt client connected");
    let client = Client {
        id: client_id.into(),
        principal: Arc::new(principal),
        conn: conn_id,
        will: connect.last_will,
        awaiting_rel,
        inflight: HashSet::new(),
        last_pkid: 0,
    };
    Some((client, rx, kick))
}

/// Answers a packet other than PUBLISH.
async fn on_packet(conn: &mut Conn, client: &mut Client, packet: Packet) -> Result<(), Close> {
    match packet {
        Packet::PubRel(rel) => {
            client.awaiting_rel.remove(&rel.pkid);
            conn.send(Packet::PubComp(PubComp::new(rel.pkid))).await
        }
        Packet::PubAck(ack) => {
            client.inflight.remove(&ack.pkid);
            Ok(())
        }
        // The endpoint never sends QoS 2, so these can only be stray; ignoring them is harmless.
        Packet::PubRec(_) | Packet::PubComp(_) => Ok(()),
        Packet::Subscribe(sub) => {
            let mut codes = Vec::with_capacity(sub.filters.len());
            let mut granted = Vec::new();
            for f in sub.filters {
                if topics::may_subscribe(&client.principal, &f.path) {
                    let qos = min_qos(f.qos, QoS::AtLeastOnce);
                    codes.push(SubscribeReasonCode::Success(qos));
                    granted.push((f.path, qos));
                } else {
                    info!(client_id = %client.id, principal = %client.principal, filter = %f.path, "subscription refused");
                    codes.push(SubscribeReasonCode::Failure);
                }
            }
            client.with_session(&conn.shared, |s| {
                for (filter, qos) in granted {
                    s.subscriptions.retain(|(f, _)| *f != filter);
                    s.subscriptions.push((filter, qos));
                }
            });
            conn.send(Packet::SubAck(SubAck::new(sub.pkid, codes)))
                .await
        }
        Packet::Unsubscribe(unsub) => {
            client.with_session(&conn.shared, |s| {
                s.subscriptions.retain(|(f, _)| !unsub.topics.contains(f));
            });
            conn.send(Packet::UnsubAck(UnsubAck::new(unsub.pkid))).await
        }
        Packet::PingReq => conn.send(Packet::PingResp).await,
        Packet::Disconnect => Err(Close::Disconnect),
        other => Err(Close::Protocol(format!(
            "unexpected {} packet from a client",
            packet_name(&other)
        ))),
    }
}

/// Checks a PUBLISH and starts its handler call, or holds it until the pipeline has room.
async fn on_publish(
    conn: &mut Conn,
    client: &mut Client,
    pipeline: &mut Pipeline,
    held: &mut Option<Publish>,
    p: Publish,
) -> Result<(), Close> {
    if !topics::may_publish(&client.principal, &p.topic) {
        bump(&conn.shared.counters.acl_violations);
        warn!(client_id = %client.id, principal = %client.principal, topic = %p.topic, "publish outside the client's own topics, closing connection");
        return Err(Close::Acl);
    }
    if pipeline.admits(p.qos) {
        start(conn, client, pipeline, p).await
    } else {
        *held = Some(p);
        Ok(())
    }
}

/// Adds the handler call for an admitted PUBLISH to the pipeline; it first runs when the pipeline is
/// next polled, after the calls before it.
async fn start(
    conn: &mut Conn,
    client: &mut Client,
    pipeline: &mut Pipeline,
    p: Publish,
) -> Result<(), Close> {
    if p.qos == QoS::ExactlyOnce && client.awaiting_rel.contains(&p.pkid) {
        // A resend of a message already taken: only the PUBREC is missing.
        return conn.send(Packet::PubRec(PubRec::new(p.pkid))).await;
    }
    let (pkid, qos) = (p.pkid, p.qos);
    let msg = Inbound {
        topic: p.topic,
        payload: p.payload,
        qos: qos as u8,
        retain: p.retain,
    };
    let shared = conn.shared.clone();
    let (id, principal) = (client.id.clone(), client.principal.clone());
    pipeline.exclusive |= qos == QoS::ExactlyOnce;
    pipeline.calls.push_back(Box::pin(async move {
        let result = shared.deliver(&id, &principal, msg).await;
        Handled { pkid, qos, result }
    }));
    Ok(())
}

/// Queues the ack of one finished handler call, or says why the connection must close instead.
fn ack(
    conn: &mut Conn,
    client: &mut Client,
    pipeline: &mut Pipeline,
    handled: Handled,
) -> Result<(), Close> {
    if handled.qos == QoS::ExactlyOnce {
        pipeline.exclusive = false;
    }
    match handled.result {
        Ok(()) | Err(Refusal::Malformed(_)) => {}
        // Nobody would resend a QoS 0 message, so closing would only cost the client a reconnect.
        Err(Refusal::Unavailable(_)) if handled.qos == QoS::AtMostOnce => return Ok(()),
        // No ack, and close: the client resends after reconnecting, by which time storage may be back.
        Err(Refusal::Unavailable(_)) => return Err(Close::Unavailable),
    }
    match handled.qos {
        QoS::AtMostOnce => Ok(()),
        QoS::AtLeastOnce => conn.queue(Packet::PubAck(PubAck::new(handled.pkid))),
        QoS::ExactlyOnce => {
            client.awaiting_rel.insert(handled.pkid);
            conn.queue(Packet::PubRec(PubRec::new(handled.pkid)))
        }
    }
}

/// Acknowledges a finished handler call and any others right behind it that have finished too, in one
/// write. On a call refused as unavailable, the acks before it are still written, then the connection
/// closes.
async fn acknowledge(
    conn: &mut Conn,
    client: &mut Client,
    pipeline: &mut Pipeline,
    first: Handled,
) -> Result<(), Close> {
    let mut result = ack(conn, client, pipeline, first);
    while result.is_ok() {
        // Polled with this task's waker, so a call that is not ready yet wakes the task as usual.
        match futures::poll!(pipeline.calls.next()) {
            Poll::Ready(Some(handled)) => result = ack(conn, client, pipeline, handled),
            Poll::Ready(None) | Poll::Pending => break,
        }
    }
    let written = conn.flush().await;
    result.and(written)
}

/// Lets the handler calls still in flight when the connection closes run to the end: none is cancelled
/// here (only the drain timeout of a shutdown drops them). Their acks are written while the socket
/// takes them, except after a call was refused as unavailable: from that message on nothing is
/// acknowledged, so the client resends it and everything after it.
async fn finish(conn: &mut Conn, client: &mut Client, pipeline: &mut Pipeline, close: &Close) {
    if pipeline.calls.is_empty() {
        return;
    }
    debug!(client_id = %client.id, in_flight = pipeline.calls.len(), "finishing handler calls before closing");
    let mut refused = matches!(close, Close::Unavailable);
    let mut writable = !matches!(close, Close::Io(_));
    while let Some(handled) = pipeline.calls.next().await {
        if refused {
            continue;
        }
        if ack(conn, client, pipeline, handled).is_err() {
            refused = true;
        }
        if writable {
            writable = conn.flush().await.is_ok();
        } else {
            conn.out.clear();
        }
    }
}

async fn send_outbound(
    conn: &mut Conn,
    client: &mut Client,
    mut msg: Publish,
) -> Result<(), Close> {
    if msg.qos != QoS::AtMostOnce {
        // Next packet id not still awaiting its PUBACK; with all 65535 in flight the client is not
        // acking at all, and the message is dropped.
        let free = (1..=u16::MAX)
            .map(|i| client.last_pkid.wrapping_add(i))
            .find(|id| *id != 0 && !client.inflight.contains(id));
        let Some(pkid) = free else {
            warn!(client_id = %client.id, topic = %msg.topic, "no free packet id, outbound message dropped");
            return Ok(());
        };
        client.last_pkid = pkid;
        client.inflight.insert(pkid);
        msg.pkid = pkid;
    }
    conn.send(Packet::Publish(msg)).await
}

impl Client {
    /// Updates this client's session if this connection still owns it.
    fn with_session(&self, shared: &Shared, f: impl FnOnce(&mut Session)) {
        let mut sessions = shared.lock_sessions();
        if let Some(s) = sessions.get_mut(&*self.id)
            && s.live.as_ref().is_some_and(|l| l.conn == self.conn)
        {
            f(s);
        }
    }
}

fn min_qos(a: QoS, b: QoS) -> QoS {
    if (a as u8) <= (b as u8) { a } else { b }
}

fn max_qos(a: QoS, b: QoS) -> QoS {
    if (a as u8) >= (b as u8) { a } else { b }
}

/// A packet's name for logs; `Debug` of a CONNECT would print the password.
fn packet_name(p: &Packet) -> &'static str {
    match p {
        Packet::Connect(_) => "connect",
        Packet::ConnAck(_) => "connack",
        Packet::Publish(_) => "publish",
        Packet::PubAck(_) => "puback",
        Packet::PubRec(_) => "pubrec",
        Packet::PubRel(_) => "pubrel",
        Packet::PubComp(_) => "pubcomp",
        Packet::Subscribe(_) => "subscribe",
        Packet::SubAck(_) => "suback",
        Packet::Unsubscribe(_) => "unsubscribe",
        Packet::UnsubAck(_) => "unsuback",
        Packet::PingReq => "pingreq",
        Packet::PingResp => "pingresp",
        Packet::Disconnect => "disconnect",
    }
}
