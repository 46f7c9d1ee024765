//! Docking stations (采集站): their credentials and the status they report.
//!
//! A station is registered once by an operator (`custody admin station add`) and gets a credential,
//! `<station id>:<64 hex digits>`, shown once. Only the SHA-256 of its secret is stored. The station
//! presents it on every upload call (gRPC `authorization: Bearer <credential>`) and as its MQTT login
//! (user name = station id, password = the hex secret). Status reports arrive over MQTT and are kept, the
//! newest per station, for the command centre.

use crate::error::IngestError;
use crate::now;
use custody_core::station::StationCredential;
use custody_core::station::{Heartbeat, SlotsReport};
use custody_core::{StationId, Timestamp};
use custody_store::{Metadata, StationRecord, StoreError};
use serde::Serialize;

/// Compares two hashes in time independent of where they differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A station as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StationView {
    pub id: StationId,
    pub name: String,
    pub created_at: Timestamp,
    /// The credential was revoked.
    pub disabled: bool,
    /// A heartbeat saying `online` arrived within three heartbeat intervals.
    pub online: bool,
    pub heartbeat: Option<Heartbeat>,
    /// When the newest heartbeat arrived (server clock).
    pub heartbeat_received_at: Option<Timestamp>,
    pub slots: Option<SlotsReport>,
    /// When the newest slots report arrived (server clock).
    pub slots_received_at: Option<Timestamp>,
}

/// The station registry. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Stations {
    meta: Metadata,
}

impl Stations {
    pub fn new(meta: Metadata) -> Self {
        Self { meta }
    }

    /// Registers a station and returns its credential (the only time the secret is known).
    pub async fn add(&self, id: StationId, name: &str) -> Result<StationCredential, IngestError> {
        let name = name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(IngestError::InvalidArgument(format!(
                "station name: must be 1 to 200 bytes, got {}",
                name.len()
            )));
        }
        let cred = StationCredential::new(id, rand::random());
        self.meta
            .insert_station(&cred.id, name, &cred.secret_sha256(), now())
            .await?;
        tracing::info!(station = %cred.id, name, "station registered");
        Ok(cred)
    }

    /// Issues a new secret for a station; the old one stops working at once.
    pub async fn rotate(&self, id: StationId) -> Result<StationCredential, IngestError> {
        let cred = StationCredential::new(id, rand::random());
        self.meta
            .set_station_secret(&cred.id, &cred.secret_sha256())
            .await
            .map_err(|e| unknown_station(e, &cred.id))?;
        tracing::info!(station = %cred.id, "station credential rotated");
        Ok(cred)
    }

    /// Revokes a station's credential.
    pub async fn disable(&self, id: &StationId) -> Result<(), IngestError> {
        self.meta
            .disable_station(id, now())
            .await
            .map_err(|e| unknown_station(e, id))?;
        tracing::info!(station = %id, "station credential revoked");
        Ok(())
    }

    /// Checks a credential. The answer does not say which part was wrong (the log does).
    pub async fn authenticate(&self, cred: &StationCredential) -> Result<StationId, IngestError> {
        let id = &cred.id;
        let refused = |why: &str| {
            tracing::warn!(station = %id, reason = why, "station credential refused");
            Err(IngestError::Unauthenticated(format!(
                "the credential of station {id} is not valid (unknown station, wrong secret or revoked)"
            )))
        };
        match self.meta.station_secret(id).await? {
            None => refused("no such station is registered"),
            Some(s) if !same(&s.sha256, &cred.secret_sha256()) => refused("wrong secret"),
            Some(s) if s.disabled => refused("the credential was revoked"),
            Some(_) => Ok(id.clone()),
        }
    }

    /// Like [`Stations::authenticate`], but an id that is no station is refused without a log line:
    /// an MQTT login's user name is looked up among stations first, then among recorders.
    pub async fn authenticate_quietly(
        &self,
        cred: &StationCredential,
    ) -> Result<StationId, IngestError> {
        if self.meta.station_secret(&cred.id).await?.is_none() {
            return Err(IngestError::Unauthenticated(format!(
                "{} is not a registered station",
                cred.id
            )));
        }
        self.authenticate(cred).await
    }

    /// Records a slots report that arrived on station `topic_station`'s topic.
    pub async fn record_slots(
        &self,
        topic_station: &StationId,
        payload: &[u8],
    ) -> Result<(), IngestError> {
        let report = SlotsReport::decode(payload).map_err(|e| IngestError::InvalidArgument(e.0))?;
        check_same_station(topic_station, &report.station_id)?;
        let json = String::from_utf8(report.encode()).unwrap_or_default();
        if !self
            .meta
            .record_station_slots(topic_station, &json, now())
            .await?
        {
            return Err(not_registered(topic_station));
        }
        tracing::debug!(station = %topic_station, slots = report.slots.len(), "slots report recorded");
        Ok(())
    }

    /// Records a heartbeat (or a last will saying the station went offline).
    pub async fn record_heartbeat(
        &self,
        topic_station: &StationId,
        payload: &[u8],
    ) -> Result<(), IngestError> {
        let hb = Heartbeat::decode(payload).map_err(|e| IngestError::InvalidArgument(e.0))?;
        check_same_station(topic_station, &hb.station_id)?;
        let json = String::from_utf8(hb.encode()).unwrap_or_default();
        if !self
            .meta
            .record_station_heartbeat(topic_station, &json, now())
            .await?
        {
            return Err(not_registered(topic_station));
        }
        if !hb.online {
            tracing::info!(station = %topic_station, "station went offline");
        }
        Ok(())
    }

    pub async fn get(&self, id: &StationId) -> Result<StationView, IngestError> {
        let rec = self
            .meta
            .get_station(id)
            .await?
            .ok_or_else(|| IngestError::UnknownStation(id.clone()))?;
        view(rec, now())
    }

    /// Stations in id order, a page of `limit` after `after`.
    pub async fn list(
        &self,
        after: Option<&StationId>,
        limit: u32,
    ) -> Result<Vec<StationView>, IngestError> {
        let t = now();
        self.meta
            .list_stations(after, limit)
            .await?
            .into_iter()
            .map(|r| view(r, t))
            .collect()
    }
}

fn unknown_station(e: StoreError, id: &StationId) -> IngestError {
    match e {
        StoreError::NotFound(_) => IngestError::UnknownStation(id.clone()),
        e => e.into(),
    }
}

fn not_registered(id: &StationId) -> IngestError {
    IngestError::InvalidArgument(format!("station {id} is not registered"))
}

fn check_same_station(topic: &StationId, body: &StationId) -> Result<(), IngestError> {
    if topic != body {
        return Err(IngestError::InvalidArgument(format!(
            "station_id: the report names station {body}, but arrived on the topic of station {topic}"
        )));
    }
    Ok(())
}

fn view(r: StationRecord, now: Timestamp) -> Result<StationView, IngestError> {
    let corrupt = |what: &str, e: String| {
        IngestError::Internal(format!(
            "stored {what} of station {} is unreadable: {e}",
            r.id
        ))
    };
    let heartbeat = r
        .heartbeat
        .as_deref()
        .map(|j| Heartbeat::decode(j.as_bytes()).map_err(|e| corrupt("heartbeat", e.0)))
        .transpose()?;
    let slots = r
        .slots_report
        .as_deref()
        .map(|j| SlotsReport::decode(j.as_bytes()).map_err(|e| corrupt("slots report", e.0)))
        .transpose()?;
    let online = match (&heartbeat, r.heartbeat_at) {
        (Some(hb), Some(at)) if hb.online && r.disabled_at.is_none() => {
            let window =
                i64::try_from(hb.interval_s.max(1).saturating_mul(3_000_000)).unwrap_or(i64::MAX);
            at.saturating_add_micros(window) >= now
        }
        _ => false,
    };
    Ok(StationView {
        id: r.id,
        name: r.name,
        created_at: r.created_at,
        disabled: r.disabled_at.is_some(),
        online,
        heartbeat,
        heartbeat_received_at: r.heartbeat_at,
        slots,
        slots_received_at: r.slots_at,
    })
}
