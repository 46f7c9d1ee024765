//! What Custody does with MQTT: who may connect (docking stations, with their credential: user name =
//! station id, password = the secret's hex) and where each topic goes. The transport itself (embedded
//! endpoint, external-broker bridge, topic ACLs) is `custody-mqtt`'s; this is the wiring to services.

use custody_core::station::StationCredential;
use custody_core::{ErrorCode, HasErrorCode};
use custody_ingest::{IngestError, Stations};
use custody_mqtt::topics::{self, Topic};
use custody_mqtt::{Handler, Inbound, Principal, Refusal};

/// The topics a server takes from an external broker.
pub const STATION_FILTERS: [&str; 2] = [
    "custody/v1/station/+/slots",
    "custody/v1/station/+/heartbeat",
];

/// Routes MQTT logins and messages to the services.
#[derive(Debug, Clone)]
pub struct MqttRouter {
    pub stations: Stations,
}

/// A permanently bad message is acknowledged and dropped; one that cannot be stored now is not.
fn refusal(e: IngestError) -> Refusal {
    match e.code() {
        ErrorCode::Unavailable | ErrorCode::Internal | ErrorCode::ResourceExhausted => {
            Refusal::Unavailable(e.to_string())
        }
        _ => Refusal::Malformed(e.to_string()),
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
        let cred = StationCredential::from_parts(username, password)?;
        self.stations
            .authenticate(&cred)
            .await
            .map(Principal::Station)
            .map_err(|e| e.to_string())
    }

    async fn publish(&self, _from: Option<&Principal>, msg: Inbound) -> Result<(), Refusal> {
        match topics::parse(&msg.topic) {
            Some(Topic::StationSlots(id)) => self
                .stations
                .record_slots(&id, &msg.payload)
                .await
                .map_err(refusal),
            Some(Topic::StationHeartbeat(id)) => self
                .stations
                .record_heartbeat(&id, &msg.payload)
                .await
                .map_err(refusal),
            Some(_) => Err(Refusal::Malformed(format!(
                "topic {} is not taken by this version of custody (device telemetry comes later)",
                msg.topic
            ))),
            None => Err(Refusal::Malformed(format!(
                "topic {:?} is not a custody topic",
                msg.topic
            ))),
        }
    }
}
