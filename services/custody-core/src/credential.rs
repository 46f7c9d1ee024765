//! Credentials of machines that talk to Custody: docking stations and recorders. Each is an id and a
//! 32-byte random secret, issued by the server (`custody admin station add`, `custody admin device add`)
//! and configured on the machine as `<id>:<64 hex digits>`. It is presented as a gRPC
//! `authorization: Bearer <credential>` and as the MQTT login (user = id, password = the secret's hex).
//! The server keeps only the SHA-256 of the secret.

use crate::hash::ContentHasher;
use crate::ids::{DeviceId, StationId};
use std::fmt;

/// An id that can own a credential.
pub trait CredentialId: Clone + Eq + fmt::Display + fmt::Debug {
    /// What the id names, for messages: `station`, `device`.
    const KIND: &'static str;
    /// Parses the id part of a credential.
    fn parse_id(s: &str) -> Result<Self, String>;
}

impl CredentialId for StationId {
    const KIND: &'static str = "station";
    fn parse_id(s: &str) -> Result<Self, String> {
        StationId::parse(s).map_err(|e| e.to_string())
    }
}

impl CredentialId for DeviceId {
    const KIND: &'static str = "device";
    fn parse_id(s: &str) -> Result<Self, String> {
        DeviceId::parse(s).map_err(|e| e.to_string())
    }
}

/// An id and its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential<I> {
    pub id: I,
    secret: [u8; 32],
}

/// A docking station's credential.
pub type StationCredential = Credential<StationId>;
/// A recorder's credential (its MQTT login and its gRPC telemetry token).
pub type DeviceCredential = Credential<DeviceId>;

impl<I: CredentialId> fmt::Debug for Credential<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field(I::KIND, &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl<I: CredentialId> Credential<I> {
    /// A credential for `id` with `secret`, which must be random (the server draws it).
    pub fn new(id: I, secret: [u8; 32]) -> Self {
        Self { id, secret }
    }

    /// The text form a machine is configured with: `<id>:<secret as 64 hex digits>`.
    pub fn token(&self) -> String {
        format!("{}:{}", self.id, hex::encode(self.secret))
    }

    /// The secret alone, as hex: the MQTT password.
    pub fn secret_hex(&self) -> String {
        hex::encode(self.secret)
    }

    /// Parses `<id>:<64 hex digits>`.
    pub fn parse(token: &str) -> Result<Self, String> {
        let (id, secret) = token.trim().rsplit_once(':').ok_or_else(|| {
            format!(
                "{} credential: expected <{} id>:<64 hex digits>",
                I::KIND,
                I::KIND
            )
        })?;
        Self::from_parts(id, secret)
    }

    /// Builds a credential from an id and its secret in hex (an MQTT login).
    pub fn from_parts(id: &str, secret_hex: &str) -> Result<Self, String> {
        let id = I::parse_id(id).map_err(|e| format!("{} credential: {e}", I::KIND))?;
        let mut secret = [0u8; 32];
        hex::decode_to_slice(secret_hex.trim(), &mut secret).map_err(|_| {
            format!(
                "{} credential of {id}: the secret must be 64 hex digits",
                I::KIND
            )
        })?;
        Ok(Self { id, secret })
    }

    /// What the server stores of the secret: its SHA-256 (the secret is 32 random bytes, so a plain
    /// hash is enough to make a stolen database useless for logging in).
    pub fn secret_sha256(&self) -> [u8; 32] {
        *ContentHasher::digest(&self.secret, false).sha256.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_credential_round_trips_through_its_token_and_hides_its_secret_in_debug() {
        let c = StationCredential::new(StationId::parse("ST:01").unwrap(), [7u8; 32]);
        let back = StationCredential::parse(&c.token()).unwrap();
        assert_eq!(back, c);
        assert!(!format!("{c:?}").contains(&c.secret_hex()));
        assert!(StationCredential::parse("ST-01").is_err());
        let e = StationCredential::parse("ST-01:abc").unwrap_err();
        assert!(e.contains("64 hex digits"), "{e}");
    }

    #[test]
    fn a_device_credential_names_devices_in_its_errors() {
        let c = DeviceCredential::new(DeviceId::parse("D1").unwrap(), [9u8; 32]);
        assert_eq!(DeviceCredential::parse(&c.token()).unwrap(), c);
        let e = DeviceCredential::parse("nothing").unwrap_err();
        assert!(e.starts_with("device credential"), "{e}");
        assert_ne!(
            c.secret_sha256(),
            DeviceCredential::new(c.id.clone(), [8u8; 32]).secret_sha256()
        );
    }
}
