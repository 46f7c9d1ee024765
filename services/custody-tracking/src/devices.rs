//! Recorders' credentials for telemetry. A recorder is registered once (`custody admin device add`)
//! and gets `<device id>:<64 hex digits>`, shown once; only the SHA-256 of the secret is stored. It is
//! the MQTT login (user name = device id, password = the hex secret) and the gRPC
//! `authorization: Bearer <credential>` of `Telemetry.Report`.

use crate::error::TrackingError;
use custody_core::{DeviceCredential, DeviceId, Timestamp};
use custody_store::{DeviceRecord, Metadata, StoreError};

/// Compares two hashes in time independent of where they differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) fn now() -> Timestamp {
    Timestamp::from_datetime(chrono::Utc::now())
}

/// The recorder registry. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Devices {
    meta: Metadata,
}

fn unknown(e: StoreError, id: &DeviceId) -> TrackingError {
    match e {
        StoreError::NotFound(_) => TrackingError::NotFound(format!("device {id}")),
        e => e.into(),
    }
}

impl Devices {
    pub fn new(meta: Metadata) -> Self {
        Self { meta }
    }

    /// Registers a recorder and returns its credential (the only time the secret is known).
    pub async fn add(&self, id: DeviceId, name: &str) -> Result<DeviceCredential, TrackingError> {
        let name = name.trim();
        if name.len() > 200 {
            return Err(TrackingError::InvalidArgument(format!(
                "device name: at most 200 bytes, got {}",
                name.len()
            )));
        }
        let cred = DeviceCredential::new(id, rand::random());
        self.meta
            .insert_device(&cred.id, name, &cred.secret_sha256(), now())
            .await?;
        tracing::info!(device = %cred.id, name, "device registered");
        Ok(cred)
    }

    /// Issues a new secret; the old one stops working at once (connections already open stay open
    /// until they reconnect).
    pub async fn rotate(&self, id: DeviceId) -> Result<DeviceCredential, TrackingError> {
        let cred = DeviceCredential::new(id, rand::random());
        self.meta
            .set_device_secret(&cred.id, &cred.secret_sha256())
            .await
            .map_err(|e| unknown(e, &cred.id))?;
        tracing::info!(device = %cred.id, "device credential rotated");
        Ok(cred)
    }

    /// Revokes a recorder's credential.
    pub async fn disable(&self, id: &DeviceId) -> Result<(), TrackingError> {
        self.meta
            .disable_device(id, now())
            .await
            .map_err(|e| unknown(e, id))?;
        tracing::info!(device = %id, "device credential revoked");
        Ok(())
    }

    pub async fn list(
        &self,
        after: Option<&DeviceId>,
        limit: u32,
    ) -> Result<Vec<DeviceRecord>, TrackingError> {
        Ok(self.meta.list_devices(after, limit).await?)
    }

    /// Whether `id` is a registered recorder whose credential is not revoked.
    pub async fn is_active(&self, id: &DeviceId) -> Result<bool, TrackingError> {
        Ok(self
            .meta
            .device_secret(id)
            .await?
            .is_some_and(|s| !s.disabled))
    }

    /// Checks a credential. The answer does not say which part was wrong (the log does).
    pub async fn authenticate(&self, cred: &DeviceCredential) -> Result<DeviceId, TrackingError> {
        let id = &cred.id;
        let refused = |why: &str| {
            tracing::warn!(device = %id, reason = why, "device credential refused");
            Err(TrackingError::Unauthenticated(format!(
                "the credential of device {id} is not valid (unknown device, wrong secret or revoked)"
            )))
        };
        match self.meta.device_secret(id).await? {
            None => refused("no such device is registered"),
            Some(s) if !same(&s.sha256, &cred.secret_sha256()) => refused("wrong secret"),
            Some(s) if s.disabled => refused("the credential was revoked"),
            Some(_) => Ok(id.clone()),
        }
    }
}
