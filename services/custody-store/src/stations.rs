//! Docking-station rows: each station's credential hash, whether it was revoked, and the newest slots
//! report and heartbeat it sent. The status columns hold the reports as JSON text; the service decodes them.

use crate::error::StoreError;
use crate::meta::{Metadata, corrupt, on_pool};
use custody_core::{StationId, Timestamp};
// Only table names from the closed `Principals` enum are formatted into SQL; values are bound.
use sqlx::AssertSqlSafe;

/// A station as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StationRecord {
    pub id: StationId,
    pub name: String,
    pub created_at: Timestamp,
    /// When its credential was revoked.
    pub disabled_at: Option<Timestamp>,
    /// The newest slots report (JSON) and when it arrived.
    pub slots_report: Option<String>,
    pub slots_at: Option<Timestamp>,
    /// The newest heartbeat (JSON) and when it arrived.
    pub heartbeat: Option<String>,
    pub heartbeat_at: Option<Timestamp>,
}

/// Machines that log in with an id and a secret, each in its own table of the same shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Principals {
    Stations,
    Devices,
}

impl Principals {
    pub(crate) fn table(self) -> &'static str {
        match self {
            Self::Stations => "stations",
            Self::Devices => "devices",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Self::Stations => "station",
            Self::Devices => "device",
        }
    }

    /// A static context for database errors, such as `registering a device`.
    fn context(self, op: Op) -> &'static str {
        use Op::*;
        match (self, op) {
            (Self::Stations, Register) => "registering a station",
            (Self::Devices, Register) => "registering a device",
            (Self::Stations, Rotate) => "replacing a station secret",
            (Self::Devices, Rotate) => "replacing a device secret",
            (Self::Stations, Disable) => "disabling a station",
            (Self::Devices, Disable) => "disabling a device",
            (Self::Stations, ReadSecret) => "reading a station secret",
            (Self::Devices, ReadSecret) => "reading a device secret",
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Register,
    Rotate,
    Disable,
    ReadSecret,
}

/// What authenticating a station or device needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StationSecret {
    /// SHA-256 of the station's secret.
    pub sha256: [u8; 32],
    pub disabled: bool,
}

#[derive(sqlx::FromRow)]
struct StationRow {
    id: String,
    name: String,
    created_at: i64,
    disabled_at: Option<i64>,
    slots_report: Option<String>,
    slots_at: Option<i64>,
    heartbeat: Option<String>,
    heartbeat_at: Option<i64>,
}

impl StationRow {
    fn into_domain(self) -> Result<StationRecord, StoreError> {
        let c = corrupt("stations", &self.id);
        Ok(StationRecord {
            id: StationId::parse(self.id.clone()).map_err(|e| c(e.to_string()))?,
            name: self.name,
            created_at: Timestamp::from_unix_micros(self.created_at),
            disabled_at: self.disabled_at.map(Timestamp::from_unix_micros),
            slots_report: self.slots_report,
            slots_at: self.slots_at.map(Timestamp::from_unix_micros),
            heartbeat: self.heartbeat,
            heartbeat_at: self.heartbeat_at.map(Timestamp::from_unix_micros),
        })
    }
}

/// The columns of `stations` read into `StationRow`, in its order: one list for every statement.
macro_rules! station_columns {
    () => {
        "id, name, created_at, disabled_at, slots_report, slots_at, heartbeat, heartbeat_at"
    };
}

impl Metadata {
    /// Registers a station with the hash of its secret. A station id is registered once:
    /// `AlreadyExists` when it is taken (rotate its secret instead).
    pub async fn insert_station(
        &self,
        id: &StationId,
        name: &str,
        secret_sha256: &[u8; 32],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.insert_principal(Principals::Stations, id.as_str(), name, secret_sha256, now)
            .await
    }

    /// Replaces a station's secret (and re-enables it). `NotFound` for an unknown station.
    pub async fn set_station_secret(
        &self,
        id: &StationId,
        secret_sha256: &[u8; 32],
    ) -> Result<(), StoreError> {
        self.set_principal_secret(Principals::Stations, id.as_str(), secret_sha256)
            .await
    }

    /// Revokes a station's credential. `NotFound` for an unknown station.
    pub async fn disable_station(&self, id: &StationId, now: Timestamp) -> Result<(), StoreError> {
        self.disable_principal(Principals::Stations, id.as_str(), now)
            .await
    }

    /// The secret hash of a station, or `None` when no such station is registered.
    pub async fn station_secret(
        &self,
        id: &StationId,
    ) -> Result<Option<StationSecret>, StoreError> {
        self.principal_secret(Principals::Stations, id.as_str())
            .await
    }

    pub(crate) async fn insert_principal(
        &self,
        t: Principals,
        id: &str,
        name: &str,
        secret_sha256: &[u8; 32],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO {} (id, name, secret_sha256, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO NOTHING",
            t.table()
        );
        let n = on_pool!(self, p => sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .bind(name)
            .bind(secret_sha256.to_vec())
            .bind(now.unix_micros())
            .execute(p)
            .await
            .map(|r| r.rows_affected()))
        .map_err(StoreError::db(t.context(Op::Register)))?;
        if n == 0 {
            return Err(StoreError::AlreadyExists(format!("{} {id}", t.what())));
        }
        Ok(())
    }

    pub(crate) async fn set_principal_secret(
        &self,
        t: Principals,
        id: &str,
        secret_sha256: &[u8; 32],
    ) -> Result<(), StoreError> {
        let sql = format!(
            "UPDATE {} SET secret_sha256 = $1, disabled_at = NULL WHERE id = $2",
            t.table()
        );
        let n = on_pool!(self, p => sqlx::query(AssertSqlSafe(sql))
            .bind(secret_sha256.to_vec())
            .bind(id)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))
        .map_err(StoreError::db(t.context(Op::Rotate)))?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("{} {id}", t.what())));
        }
        Ok(())
    }

    pub(crate) async fn disable_principal(
        &self,
        t: Principals,
        id: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "UPDATE {} SET disabled_at = COALESCE(disabled_at, $1) WHERE id = $2",
            t.table()
        );
        let n = on_pool!(self, p => sqlx::query(AssertSqlSafe(sql))
            .bind(now.unix_micros())
            .bind(id)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))
        .map_err(StoreError::db(t.context(Op::Disable)))?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("{} {id}", t.what())));
        }
        Ok(())
    }

    pub(crate) async fn principal_secret(
        &self,
        t: Principals,
        id: &str,
    ) -> Result<Option<StationSecret>, StoreError> {
        let sql = format!(
            "SELECT secret_sha256, disabled_at FROM {} WHERE id = $1",
            t.table()
        );
        let row: Option<(Vec<u8>, Option<i64>)> =
            on_pool!(self, p => sqlx::query_as(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(p)
            .await)
            .map_err(StoreError::db(t.context(Op::ReadSecret)))?;
        row.map(|(h, disabled)| {
            let sha256: [u8; 32] = h
                .as_slice()
                .try_into()
                .map_err(|_| corrupt(t.table(), id)("secret hash is not 32 bytes".into()))?;
            Ok(StationSecret {
                sha256,
                disabled: disabled.is_some(),
            })
        })
        .transpose()
    }

    /// Saves a station's newest slots report (one that arrived before the stored one is ignored).
    /// Returns false when no such station is registered.
    pub async fn record_station_slots(
        &self,
        id: &StationId,
        report_json: &str,
        received_at: Timestamp,
    ) -> Result<bool, StoreError> {
        // Messages of one station may be stored concurrently (the MQTT side pipelines them): one
        // that arrived earlier never replaces one that arrived later.
        let sql = "UPDATE stations SET slots_report = $1, slots_at = $2 WHERE id = $3 \
                   AND (slots_at IS NULL OR slots_at <= $2)";
        let n = on_pool!(self, p => sqlx::query(sql)
            .bind(report_json)
            .bind(received_at.unix_micros())
            .bind(id.as_str())
            .execute(p)
            .await
            .map(|r| r.rows_affected()))
        .map_err(StoreError::db("recording a station slots report"))?;
        Ok(n == 1 || self.station_secret(id).await?.is_some())
    }

    /// Saves a station's newest heartbeat (one that arrived before the stored one is ignored).
    /// Returns false when no such station is registered.
    pub async fn record_station_heartbeat(
        &self,
        id: &StationId,
        heartbeat_json: &str,
        received_at: Timestamp,
    ) -> Result<bool, StoreError> {
        // Messages of one station may be stored concurrently (the MQTT side pipelines them): one
        // that arrived earlier never replaces one that arrived later.
        let sql = "UPDATE stations SET heartbeat = $1, heartbeat_at = $2 WHERE id = $3 \
                   AND (heartbeat_at IS NULL OR heartbeat_at <= $2)";
        let n = on_pool!(self, p => sqlx::query(sql)
            .bind(heartbeat_json)
            .bind(received_at.unix_micros())
            .bind(id.as_str())
            .execute(p)
            .await
            .map(|r| r.rows_affected()))
        .map_err(StoreError::db("recording a station heartbeat"))?;
        Ok(n == 1 || self.station_secret(id).await?.is_some())
    }

    pub async fn get_station(&self, id: &StationId) -> Result<Option<StationRecord>, StoreError> {
        let sql = concat!(
            "SELECT ",
            station_columns!(),
            " FROM stations WHERE id = $1"
        );
        let row: Option<StationRow> = on_pool!(self, p => sqlx::query_as(sql)
            .bind(id.as_str())
            .fetch_optional(p)
            .await)
        .map_err(StoreError::db("reading a station"))?;
        row.map(StationRow::into_domain).transpose()
    }

    /// Stations in id order, `limit` at a time after `after`.
    pub async fn list_stations(
        &self,
        after: Option<&StationId>,
        limit: u32,
    ) -> Result<Vec<StationRecord>, StoreError> {
        let sql = concat!(
            "SELECT ",
            station_columns!(),
            " FROM stations WHERE id > $1 ORDER BY id LIMIT $2"
        );
        let rows: Vec<StationRow> = on_pool!(self, p => sqlx::query_as(sql)
            .bind(after.map(StationId::as_str).unwrap_or(""))
            .bind(i64::from(limit.max(1)))
            .fetch_all(p)
            .await)
        .map_err(StoreError::db("listing stations"))?;
        rows.into_iter().map(StationRow::into_domain).collect()
    }
}
