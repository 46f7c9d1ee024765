//! What Custody does with MQTT: who may connect (docking stations and recorders, each with its
//! credential: user name = id, password = the secret's hex) and where each topic goes. The transport
//! itself (embedded endpoint, external-broker bridge, topic ACLs) is `custody-mqtt`'s; this is the
//! wiring to services.

use bytes::Bytes;
use custody_core::position::{self, AlarmMessage, OwnTracks};
use custody_core::{DeviceCredential, DeviceId, ErrorCode, HasErrorCode, StationCredential};
use custody_ingest::{IngestError, Stations};
use custody_mqtt::topics::{self, Topic};
use custody_mqtt::{Handler, Inbound, Principal, QoS, Refusal};
use custody_tracking::{CommandSink, Devices, Tracking, TrackingError};

/// Routes MQTT logins and messages to the services.
#[derive(Debug, Clone)]
pub struct MqttRouter {
    pub stations: Stations,
    pub devices: Devices,
    pub tracking: Tracking,
}

/// A permanently bad message is acknowledged and dropped; one that cannot be stored now is not.
fn refusal(code: ErrorCode, message: String) -> Refusal {
    match code {
        ErrorCode::Unavailable | ErrorCode::Internal | ErrorCode::ResourceExhausted => {
            Refusal::Unavailable(message)
        }
        _ => Refusal::Malformed(message),
    }
}

fn from_ingest(e: IngestError) -> Refusal {
    refusal(e.code(), e.to_string())
}

fn from_tracking(e: TrackingError) -> Refusal {
    refusal(e.code(), e.to_string())
}

impl MqttRouter {
    fn malformed(&self, source: &'static str, reason: String) -> Refusal {
        self.tracking.metrics().malformed(source);
        Refusal::Malformed(reason)
    }

    async fn positions(&self, device: &DeviceId, payload: &[u8]) -> Result<(), Refusal> {
        let fixes = if position::looks_like_json(payload) {
            position::parse_json(device, payload).map_err(|e| self.malformed("mqtt_json", e))?
        } else {
            custody_grpc::telemetry::decode_position_batch(device, payload)
                .map_err(|e| self.malformed("mqtt_proto", e))?
        };
        self.tracking
            .report(device, fixes)
            .await
            .map(|_| ())
            .map_err(from_tracking)
    }
}

#[async_trait::async_trait]
impl Handler for MqttRouter {
    async fn authenticate(
        &self,
        _client_id: &str,
        username: &str,
        password: &str,
    ) -> Result<Principal, String> {
        // Stations and recorders have separate registries; the user name is looked up in both.
        if let Ok(cred) = StationCredential::from_parts(username, password)
            && let Ok(id) = self.stations.authenticate_quietly(&cred).await
        {
            return Ok(Principal::Station(id));
        }
        let cred = DeviceCredential::from_parts(username, password)?;
        self.devices
            .authenticate(&cred)
            .await
            .map(Principal::Device)
            .map_err(|e| e.to_string())
    }

    async fn publish(&self, _from: Option<&Principal>, msg: Inbound) -> Result<(), Refusal> {
        match topics::parse(&msg.topic) {
            Some(Topic::StationSlots(id)) => self
                .stations
                .record_slots(&id, &msg.payload)
                .await
                .map_err(from_ingest),
            Some(Topic::StationHeartbeat(id)) => self
                .stations
                .record_heartbeat(&id, &msg.payload)
                .await
                .map_err(from_ingest),
            Some(Topic::DevicePos(id)) => self.positions(&id, &msg.payload).await,
            Some(Topic::DeviceAlarm(id)) => {
                let alarm =
                    AlarmMessage::parse(&msg.payload).map_err(|e| self.malformed("alarm", e))?;
                self.tracking
                    .raise_alarm(&id, alarm)
                    .await
                    .map(|_| ())
                    .map_err(from_tracking)
            }
            Some(Topic::DeviceStatus(id)) => {
                if msg.payload.is_empty() {
                    // An empty retained message clears the retained status at a broker: nothing to store.
                    return Ok(());
                }
                self.tracking
                    .record_status(&id, &msg.payload)
                    .await
                    .map_err(|e| match e {
                        TrackingError::InvalidArgument(m) => self.malformed("status", m),
                        e => from_tracking(e),
                    })
            }
            Some(Topic::OwnTracks { device, .. }) => {
                match position::parse_owntracks(&device, &msg.payload)
                    .map_err(|e| self.malformed("owntracks", e))?
                {
                    OwnTracks::Location(p) => self
                        .tracking
                        .report(&device, vec![p])
                        .await
                        .map(|_| ())
                        .map_err(from_tracking),
                    OwnTracks::Other(kind) => {
                        tracing::debug!(%device, kind, "OwnTracks message that is not a location ignored");
                        Ok(())
                    }
                }
            }
            None => Err(Refusal::Malformed(format!(
                "topic {:?} is not a custody topic",
                msg.topic
            ))),
        }
    }
}

/// Commands to devices through the embedded endpoint: delivered to the device's connection if it is
/// connected and subscribed to its cmd topic.
#[derive(Debug)]
pub struct EndpointCommands(pub custody_mqtt::Endpoint);

#[async_trait::async_trait]
impl CommandSink for EndpointCommands {
    async fn send(&self, device: &DeviceId, payload: Bytes) -> Result<bool, String> {
        Ok(self
            .0
            .publish(&topics::device_cmd(device), payload, QoS::AtLeastOnce)
            > 0)
    }
}

/// Commands to devices through the external broker, which holds them for persistent sessions.
#[derive(Debug)]
pub struct BridgeCommands(pub custody_mqtt::BridgeHandle);

#[async_trait::async_trait]
impl CommandSink for BridgeCommands {
    async fn send(&self, device: &DeviceId, payload: Bytes) -> Result<bool, String> {
        self.0
            .publish(&topics::device_cmd(device), payload, QoS::AtLeastOnce)
            .await
            .map(|()| true)
            .map_err(|e| e.to_string())
    }
}
