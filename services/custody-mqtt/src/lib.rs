//! Custody's MQTT edge: how telemetry and status from recorders and docking stations come in over MQTT,
//! and how commands go back out.
//!
//! It owns the topic scheme and its access rules ([`topics`]), the embedded MQTT 3.1.1 endpoint
//! ([`Endpoint`], [`serve`]) and the bridge to an external broker ([`Bridge`], [`run_bridge`]). By default
//! Custody terminates device connections itself rather than running a general broker, for two reasons: a
//! QoS 1 PUBACK must go out only after the message is durable, and each connection's authenticated
//! identity must be known when its publishes arrive, so that a client can publish only under its own
//! topics. With an external broker (Mosquitto, EMQX) the broker's own ACLs vouch for topics and Custody
//! takes messages through a shared, persistent subscription.
//!
//! Architecture invariant: this crate never touches SQL or object storage. Every message goes to a
//! [`Handler`] that the binary implements; whatever makes a message durable lives behind it. It never
//! imports axum, tonic or sqlx. The MQTT packet codec is rumqttc's (`mqttbytes::v4`), not written here.
//!
//! Delivery is at least once in both modes: a message can reach the handler twice (a client resends
//! after a lost PUBACK, a broker redelivers after a reconnect), so the handler must be idempotent.
//!
//! Handler calls are concurrent, also for one client: both modes pipeline, keeping up to
//! `max_in_flight` calls running per connection ([`EndpointConfig::max_in_flight`],
//! [`BridgeConfig::max_in_flight`]), because the handler returns only once a message is durable and
//! one-at-a-time would cap a connection at one message per storage commit. Acks still go out in the
//! order the messages arrived, each only after its own call returned, so an acknowledged message is
//! durable and so is everything its client sent before it. What the handler may rely on for ordering is
//! described on [`Handler::publish`].

mod bridge;
mod endpoint;
pub mod topics;

pub use bridge::{Bridge, BridgeConfig, BridgeError, BridgeHandle, run_bridge};
pub use endpoint::{Counters, Endpoint, EndpointConfig, serve};
/// Quality of service of a message, as the MQTT codec has it.
pub use rumqttc::QoS;

use bytes::Bytes;
use custody_core::{DeviceId, StationId};
use std::fmt;

/// Who an authenticated MQTT connection is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    /// A docking station (采集站).
    Station(StationId),
    /// A body-worn recorder.
    Device(DeviceId),
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Station(id) => write!(f, "station {id}"),
            Principal::Device(id) => write!(f, "device {id}"),
        }
    }
}

/// One message as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// The topic it was published to; see [`topics::parse`].
    pub topic: String,
    /// The payload, as sent.
    pub payload: Bytes,
    /// The QoS it arrived with: 0, 1 or 2.
    pub qos: u8,
    /// Whether the publisher asked for it to be retained (slot status is published retained).
    pub retain: bool,
}

/// Why a publish was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The message is permanently bad (malformed payload, unknown topic): it is acknowledged and dropped,
    /// counted, and logged with the reason. MQTT 3.1.1 has no negative PUBACK, and withholding the ack
    /// would make the client resend it forever.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The server cannot store it now (database down): it is NOT acknowledged, and neither is any message
    /// that arrived after it on the same connection. The embedded endpoint writes the acks of the
    /// messages before it, then closes the connection so the client resends the rest after reconnecting
    /// (a QoS 0 message is just dropped); the bridge retries the handler with backoff and does not ack it,
    /// or anything after it, until it succeeds.
    #[error("cannot store message now: {0}")]
    Unavailable(String),
}

/// What the binary plugs in: who may connect, and where messages go.
#[async_trait::async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Checks CONNECT credentials; `username` and `password` are empty when the client sent none.
    /// `Err(reason)` refuses the connection (CONNACK "bad user name or password" when credentials were
    /// given, "not authorized" otherwise); the reason is logged, the password never is.
    async fn authenticate(
        &self,
        client_id: &str,
        username: &str,
        password: &str,
    ) -> Result<Principal, String>;

    /// Takes one message and returns only after it is durable. `from` is the authenticated principal on
    /// the embedded endpoint (which already checked [`topics::may_publish`]), `None` when it came through
    /// an external broker, whose own ACLs vouch for the topic. May be called twice for one message.
    ///
    /// Calls run concurrently, also for messages of one connection (up to its `max_in_flight`), so they
    /// may finish in any order. What is ordered is the first poll: the futures of one connection (one
    /// device, or the whole bridge) are first polled in the order their messages arrived, all in that
    /// connection's task. So work done synchronously before the first `.await` (taking a timestamp or
    /// sequence number, appending to a commit batch) happens in arrival order; anything after an await
    /// may interleave with later messages. A QoS 2 message on the embedded endpoint is handled alone,
    /// after the calls before it were acknowledged and before later ones start. A connection's will is
    /// handed over after all its calls have returned. There is no order between connections.
    ///
    /// A call may be dropped before it completes (at shutdown, past the drain timeout); its message was
    /// then not acknowledged and comes again.
    async fn publish(&self, from: Option<&Principal>, msg: Inbound) -> Result<(), Refusal>;
}
