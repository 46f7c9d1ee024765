//! Telemetry rows: recorders' credentials, positions (written in batches, one transaction each),
//! each device's latest fix and status, alarms, geofences and fence events.
//!
//! Batches are written as one statement per table, whatever their size: on SQLite the rows travel as
//! one JSON array unpacked by `json_each`, on PostgreSQL as one array per column unpacked by `UNNEST`.
//! On PostgreSQL `positions` is partitioned by UTC day; the partition a batch needs is created before
//! the batch is written, and retention drops whole partitions.

use crate::error::StoreError;
use crate::meta::{Metadata, Pool, corrupt, on_pool};
use crate::stations::{Principals, StationSecret};
use custody_core::live::{Alarm, DeviceStatus, FenceEvent, FenceTransition, Geofence};
use custody_core::{AlarmId, DeviceId, FenceId, Position, Timestamp};
use serde_json::json;
use sqlx::{Acquire, AssertSqlSafe};

const DAY_MICROS: i64 = 86_400_000_000;

/// A registered recorder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    pub id: DeviceId,
    pub name: String,
    pub created_at: Timestamp,
    pub disabled_at: Option<Timestamp>,
}

/// What one telemetry transaction writes. Positions already stored (same device and time) and alarms
/// already stored (same device, kind and time) are skipped, so a redelivered batch changes nothing.
#[derive(Debug, Clone, Default)]
pub struct TelemetryWrite {
    pub positions: Vec<Position>,
    pub alarms: Vec<Alarm>,
    pub fence_events: Vec<FenceEvent>,
    pub received_at: Option<Timestamp>,
}

/// Where an alarm listing continues: after this (raised_at, id), newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlarmCursor {
    pub raised_at: Timestamp,
    pub id: AlarmId,
}

/// What retention removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PositionsPurged {
    /// PostgreSQL partitions dropped.
    pub partitions: u64,
    /// SQLite rows deleted.
    pub rows: u64,
}

/// The UTC day number of an instant (days since the epoch).
fn day_of(t: Timestamp) -> i64 {
    t.unix_micros().div_euclid(DAY_MICROS)
}

/// `positions_pYYYYMMDD` for a day number.
fn partition_name(day: i64) -> String {
    let d = Timestamp::from_unix_micros(day * DAY_MICROS).to_datetime();
    format!("positions_p{}", d.format("%Y%m%d"))
}

#[derive(sqlx::FromRow)]
struct PositionRow {
    device_id: String,
    t: i64,
    lat: f64,
    lon: f64,
    alt: Option<f32>,
    speed: Option<f32>,
    course: Option<f32>,
    acc: Option<f32>,
    sos: i16,
    batt: Option<i16>,
}

impl PositionRow {
    fn into_domain(self) -> Result<Position, StoreError> {
        let c = corrupt("positions", &self.device_id);
        Ok(Position {
            device: DeviceId::parse(self.device_id.clone()).map_err(|e| c(e.to_string()))?,
            time: Timestamp::from_unix_micros(self.t),
            lat: self.lat,
            lon: self.lon,
            alt_m: self.alt,
            speed_mps: self.speed,
            course_deg: self.course,
            accuracy_m: self.acc,
            sos: self.sos != 0,
            battery_pct: self.batt.and_then(|b| u8::try_from(b).ok()),
        })
    }
}

/// The position columns read into `PositionRow`, in its order. `sos` and `batt` are cast so that both
/// backends return the same SQL types.
macro_rules! position_columns {
    () => {
        "device_id, t, lat, lon, alt, speed, course, acc, CAST(sos AS SMALLINT) AS sos, CAST(batt AS SMALLINT) AS batt"
    };
}

#[derive(sqlx::FromRow)]
struct AlarmRow {
    id: String,
    device_id: String,
    kind: String,
    raised_at: i64,
    lat: Option<f64>,
    lon: Option<f64>,
    note: String,
    received_at: i64,
    acked_at: Option<i64>,
    acked_by: Option<String>,
    ack_note: Option<String>,
}

macro_rules! alarm_columns {
    () => {
        "id, device_id, kind, raised_at, lat, lon, note, received_at, acked_at, acked_by, ack_note"
    };
}

impl AlarmRow {
    fn into_domain(self) -> Result<Alarm, StoreError> {
        let c = corrupt("alarms", &self.id);
        Ok(Alarm {
            id: AlarmId::parse(&self.id).map_err(|e| c(e.to_string()))?,
            device_id: DeviceId::parse(self.device_id).map_err(|e| c(e.to_string()))?,
            kind: self.kind,
            raised_at: Timestamp::from_unix_micros(self.raised_at),
            lat: self.lat,
            lon: self.lon,
            note: self.note,
            received_at: Timestamp::from_unix_micros(self.received_at),
            acked_at: self.acked_at.map(Timestamp::from_unix_micros),
            acked_by: self.acked_by,
            ack_note: self.ack_note,
        })
    }
}

fn position_json(p: &Position, received_at: i64) -> serde_json::Value {
    json!([
        p.device.as_str(),
        p.time.unix_micros(),
        p.lat,
        p.lon,
        p.alt_m,
        p.speed_mps,
        p.course_deg,
        p.accuracy_m,
        i32::from(p.sos),
        p.battery_pct,
        received_at
    ])
}

/// The columns a batch writes, in `position_json` order.
const POSITION_INSERT_COLUMNS: &str =
    "device_id, t, lat, lon, alt, speed, course, acc, sos, batt, received_at";

/// Replaces a device's latest fix only with a newer one.
const LATEST_UPSERT: &str = "ON CONFLICT (device_id) DO UPDATE SET \
     t = excluded.t, lat = excluded.lat, lon = excluded.lon, alt = excluded.alt, \
     speed = excluded.speed, course = excluded.course, acc = excluded.acc, \
     sos = excluded.sos, batt = excluded.batt, received_at = excluded.received_at \
     WHERE excluded.t > device_latest.t";

/// Unpacks the JSON array of `position_json` rows on SQLite.
const SQLITE_POSITION_SELECT: &str = "SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, \
     value ->> 4, value ->> 5, value ->> 6, value ->> 7, value ->> 8, value ->> 9, value ->> 10 \
     FROM json_each($1) WHERE true";

/// Column arrays for PostgreSQL's UNNEST.
#[derive(Default)]
struct PositionColumns {
    device: Vec<String>,
    t: Vec<i64>,
    lat: Vec<f64>,
    lon: Vec<f64>,
    alt: Vec<Option<f32>>,
    speed: Vec<Option<f32>>,
    course: Vec<Option<f32>>,
    acc: Vec<Option<f32>>,
    sos: Vec<i16>,
    batt: Vec<Option<i16>>,
}

impl PositionColumns {
    fn of<'a>(ps: impl IntoIterator<Item = &'a Position>) -> Self {
        let mut c = Self::default();
        for p in ps {
            c.device.push(p.device.to_string());
            c.t.push(p.time.unix_micros());
            c.lat.push(p.lat);
            c.lon.push(p.lon);
            c.alt.push(p.alt_m);
            c.speed.push(p.speed_mps);
            c.course.push(p.course_deg);
            c.acc.push(p.accuracy_m);
            c.sos.push(i16::from(p.sos));
            c.batt.push(p.battery_pct.map(i16::from));
        }
        c
    }
}

const PG_POSITION_SELECT: &str = "SELECT * FROM UNNEST($1::text[], $2::bigint[], \
     $3::float8[], $4::float8[], $5::real[], $6::real[], $7::real[], $8::real[], $9::smallint[], \
     $10::smallint[]) AS u(device_id, t, lat, lon, alt, speed, course, acc, sos, batt)";

/// The newest fix of each device in a batch.
fn newest_per_device(ps: &[Position]) -> Vec<&Position> {
    let mut newest: std::collections::HashMap<&DeviceId, &Position> = Default::default();
    for p in ps {
        let e = newest.entry(&p.device).or_insert(p);
        if p.time > e.time {
            *e = p;
        }
    }
    let mut v: Vec<&Position> = newest.into_values().collect();
    // A fixed order, so that concurrent writers lock device_latest rows in the same order.
    v.sort_by(|a, b| a.device.cmp(&b.device));
    v
}

impl Metadata {
    /// Registers a recorder with the hash of its secret. `AlreadyExists` when the id is taken.
    pub async fn insert_device(
        &self,
        id: &DeviceId,
        name: &str,
        secret_sha256: &[u8; 32],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.insert_principal(Principals::Devices, id.as_str(), name, secret_sha256, now)
            .await
    }

    /// Replaces a recorder's secret (and re-enables it). `NotFound` for an unknown device.
    pub async fn set_device_secret(
        &self,
        id: &DeviceId,
        secret_sha256: &[u8; 32],
    ) -> Result<(), StoreError> {
        self.set_principal_secret(Principals::Devices, id.as_str(), secret_sha256)
            .await
    }

    /// Revokes a recorder's credential. `NotFound` for an unknown device.
    pub async fn disable_device(&self, id: &DeviceId, now: Timestamp) -> Result<(), StoreError> {
        self.disable_principal(Principals::Devices, id.as_str(), now)
            .await
    }

    /// The secret hash of a recorder, or `None` when it is not registered.
    pub async fn device_secret(&self, id: &DeviceId) -> Result<Option<StationSecret>, StoreError> {
        self.principal_secret(Principals::Devices, id.as_str())
            .await
    }

    /// Recorders in id order, `limit` at a time after `after`.
    pub async fn list_devices(
        &self,
        after: Option<&DeviceId>,
        limit: u32,
    ) -> Result<Vec<DeviceRecord>, StoreError> {
        let sql = "SELECT id, name, created_at, disabled_at FROM devices WHERE id > $1 \
                   ORDER BY id LIMIT $2";
        let rows: Vec<(String, String, i64, Option<i64>)> = on_pool!(self, p => sqlx::query_as(sql)
            .bind(after.map(DeviceId::as_str).unwrap_or(""))
            .bind(i64::from(limit.max(1)))
            .fetch_all(p)
            .await)
        .map_err(StoreError::db("listing devices"))?;
        rows.into_iter()
            .map(|(id, name, created_at, disabled_at)| {
                Ok(DeviceRecord {
                    id: DeviceId::parse(id.clone())
                        .map_err(|e| corrupt("devices", &id)(e.to_string()))?,
                    name,
                    created_at: Timestamp::from_unix_micros(created_at),
                    disabled_at: disabled_at.map(Timestamp::from_unix_micros),
                })
            })
            .collect()
    }

    /// Makes sure the PostgreSQL partitions for these instants exist. Nothing to do on SQLite.
    async fn ensure_partitions(&self, ps: &[Position]) -> Result<(), StoreError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(());
        };
        let mut days: Vec<i64> = ps.iter().map(|p| day_of(p.time)).collect();
        days.sort_unstable();
        days.dedup();
        let missing: Vec<i64> = {
            let known = self
                .partitions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            days.into_iter().filter(|d| !known.contains(d)).collect()
        };
        for day in missing {
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS {} PARTITION OF positions FOR VALUES FROM ({}) TO ({})",
                partition_name(day),
                day * DAY_MICROS,
                (day + 1) * DAY_MICROS
            );
            // Two replicas creating the same partition at once: one of them fails on the catalog's
            // unique index although the table now exists; asking again settles it.
            let mut tries = 0;
            loop {
                match sqlx::query(AssertSqlSafe(sql.clone())).execute(pool).await {
                    Ok(_) => break,
                    Err(_) if tries < 2 => tries += 1,
                    Err(e) => return Err(StoreError::db("creating a positions partition")(e)),
                }
            }
            self.partitions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(day);
        }
        Ok(())
    }

    /// Writes one telemetry batch in one transaction: positions, the latest fix of each device (only
    /// if newer than the stored one), alarms and fence events. Returns once it is committed (durable).
    pub async fn write_telemetry(&self, w: &TelemetryWrite) -> Result<(), StoreError> {
        let received_at = w
            .received_at
            .unwrap_or_else(|| Timestamp::from_datetime(chrono::Utc::now()))
            .unix_micros();
        self.ensure_partitions(&w.positions).await?;
        let ctx = "writing a telemetry batch";
        let latest = newest_per_device(&w.positions);
        match &self.pool {
            Pool::Sqlite(pool) => {
                let mut conn = pool.acquire().await.map_err(StoreError::db(ctx))?;
                let mut tx = conn.begin().await.map_err(StoreError::db(ctx))?;
                if !w.positions.is_empty() {
                    let rows: Vec<_> = w
                        .positions
                        .iter()
                        .map(|p| position_json(p, received_at))
                        .collect();
                    let sql = format!(
                        "INSERT INTO positions ({POSITION_INSERT_COLUMNS}) \
                         {SQLITE_POSITION_SELECT} ON CONFLICT (device_id, t) DO NOTHING"
                    );
                    sqlx::query(AssertSqlSafe(sql))
                        .bind(serde_json::Value::Array(rows).to_string())
                        .execute(&mut *tx)
                        .await
                        .map_err(StoreError::db(ctx))?;
                    let rows: Vec<_> = latest
                        .iter()
                        .map(|p| position_json(p, received_at))
                        .collect();
                    let sql = format!(
                        "INSERT INTO device_latest ({POSITION_INSERT_COLUMNS}) \
                         {SQLITE_POSITION_SELECT} {LATEST_UPSERT}"
                    );
                    sqlx::query(AssertSqlSafe(sql))
                        .bind(serde_json::Value::Array(rows).to_string())
                        .execute(&mut *tx)
                        .await
                        .map_err(StoreError::db(ctx))?;
                }
                for a in &w.alarms {
                    insert_alarm!(&mut *tx, a);
                }
                for e in &w.fence_events {
                    insert_fence_event!(&mut *tx, e);
                }
                tx.commit().await.map_err(StoreError::db(ctx))?;
            }
            Pool::Postgres(pool) => {
                let mut tx = pool.begin().await.map_err(StoreError::db(ctx))?;
                if !w.positions.is_empty() {
                    let c = PositionColumns::of(&w.positions);
                    let sql = format!(
                        "INSERT INTO positions ({POSITION_INSERT_COLUMNS}) \
                         SELECT u.*, $11 FROM ({PG_POSITION_SELECT}) u ON CONFLICT (device_id, t) DO NOTHING"
                    );
                    bind_columns(sqlx::query(AssertSqlSafe(sql)), c)
                        .bind(received_at)
                        .execute(&mut *tx)
                        .await
                        .map_err(StoreError::db(ctx))?;
                    let c = PositionColumns::of(latest.iter().copied());
                    let sql = format!(
                        "INSERT INTO device_latest ({POSITION_INSERT_COLUMNS}) \
                         SELECT u.*, $11 FROM ({PG_POSITION_SELECT}) u {LATEST_UPSERT}"
                    );
                    bind_columns(sqlx::query(AssertSqlSafe(sql)), c)
                        .bind(received_at)
                        .execute(&mut *tx)
                        .await
                        .map_err(StoreError::db(ctx))?;
                }
                for a in &w.alarms {
                    insert_alarm!(&mut *tx, a);
                }
                for e in &w.fence_events {
                    insert_fence_event!(&mut *tx, e);
                }
                tx.commit().await.map_err(StoreError::db(ctx))?;
            }
        }
        Ok(())
    }

    /// A device's fixes with `from <= t < to`, oldest first, at most `limit`.
    pub async fn positions_between(
        &self,
        device: &DeviceId,
        from: Timestamp,
        to: Timestamp,
        limit: u32,
    ) -> Result<Vec<Position>, StoreError> {
        let sql = concat!(
            "SELECT ",
            position_columns!(),
            " FROM positions WHERE device_id = $1 AND t >= $2 AND t < $3 ORDER BY t LIMIT $4"
        );
        let rows: Vec<PositionRow> = on_pool!(self, p => sqlx::query_as(sql)
            .bind(device.as_str())
            .bind(from.unix_micros())
            .bind(to.unix_micros())
            .bind(i64::from(limit))
            .fetch_all(p)
            .await)
        .map_err(StoreError::db("reading a track"))?;
        rows.into_iter().map(PositionRow::into_domain).collect()
    }

    /// How many fixes are stored (all devices, or one).
    pub async fn count_positions(&self, device: Option<&DeviceId>) -> Result<u64, StoreError> {
        let sql = "SELECT COUNT(*) FROM positions WHERE ($1 = '' OR device_id = $1)";
        let n: i64 = on_pool!(self, p => sqlx::query_scalar(sql)
            .bind(device.map(DeviceId::as_str).unwrap_or(""))
            .fetch_one(p)
            .await)
        .map_err(StoreError::db("counting positions"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The newest stored fix of every device.
    pub async fn latest_positions(&self) -> Result<Vec<Position>, StoreError> {
        let sql = concat!("SELECT ", position_columns!(), " FROM device_latest");
        let rows: Vec<PositionRow> = on_pool!(self, p => sqlx::query_as(sql).fetch_all(p).await)
            .map_err(StoreError::db("reading latest positions"))?;
        rows.into_iter().map(PositionRow::into_domain).collect()
    }

    /// Deletes fixes taken before `cutoff`. PostgreSQL drops the day partitions that end at or before
    /// it (a partition straddling the cutoff is kept until its day is wholly past). SQLite deletes rows
    /// in chunks of `chunk` so that no single transaction holds the database for long.
    pub async fn purge_positions_before(
        &self,
        cutoff: Timestamp,
        chunk: u32,
    ) -> Result<PositionsPurged, StoreError> {
        let ctx = "purging old positions";
        let mut out = PositionsPurged::default();
        match &self.pool {
            Pool::Postgres(pool) => {
                let names: Vec<String> = sqlx::query_scalar(
                    "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                     JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'positions'",
                )
                .fetch_all(pool)
                .await
                .map_err(StoreError::db(ctx))?;
                let cutoff_day = day_of(cutoff);
                for name in names {
                    let Some(day) = name
                        .strip_prefix("positions_p")
                        .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y%m%d").ok())
                        .and_then(|d| d.and_hms_opt(0, 0, 0))
                        .map(|d| d.and_utc().timestamp_micros().div_euclid(DAY_MICROS))
                    else {
                        continue;
                    };
                    if day < cutoff_day {
                        sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {name}")))
                            .execute(pool)
                            .await
                            .map_err(StoreError::db(ctx))?;
                        self.partitions
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .remove(&day);
                        tracing::info!(partition = %name, "dropped a day of positions");
                        out.partitions += 1;
                    }
                }
            }
            Pool::Sqlite(pool) => loop {
                let n = sqlx::query(
                    "DELETE FROM positions WHERE rowid IN \
                     (SELECT rowid FROM positions WHERE t < $1 LIMIT $2)",
                )
                .bind(cutoff.unix_micros())
                .bind(i64::from(chunk.max(1)))
                .execute(pool)
                .await
                .map_err(StoreError::db(ctx))?
                .rows_affected();
                out.rows += n;
                if n < u64::from(chunk.max(1)) {
                    break;
                }
                tokio::task::yield_now().await;
            },
        }
        Ok(out)
    }

    /// Saves a device's newest status.
    pub async fn upsert_device_status(&self, s: &DeviceStatus) -> Result<(), StoreError> {
        let sql = "INSERT INTO device_status (device_id, status, received_at) VALUES ($1, $2, $3) \
                   ON CONFLICT (device_id) DO UPDATE SET status = excluded.status, \
                   received_at = excluded.received_at";
        on_pool!(self, p => sqlx::query(sql)
            .bind(s.device_id.as_str())
            .bind(s.status.to_string())
            .bind(s.received_at.unix_micros())
            .execute(p)
            .await
            .map(|_| ()))
        .map_err(StoreError::db("saving a device status"))
    }

    /// Every device's newest status.
    pub async fn device_statuses(&self) -> Result<Vec<DeviceStatus>, StoreError> {
        let sql = "SELECT device_id, status, received_at FROM device_status ORDER BY device_id";
        let rows: Vec<(String, String, i64)> =
            on_pool!(self, p => sqlx::query_as(sql).fetch_all(p).await)
                .map_err(StoreError::db("reading device statuses"))?;
        rows.into_iter()
            .map(|(id, status, at)| {
                let c = corrupt("device_status", &id);
                Ok(DeviceStatus {
                    device_id: DeviceId::parse(id.clone()).map_err(|e| c(e.to_string()))?,
                    status: serde_json::from_str(&status).map_err(|e| c(e.to_string()))?,
                    received_at: Timestamp::from_unix_micros(at),
                })
            })
            .collect()
    }

    /// The alarm stored for this device, kind and time, if any (a redelivered alarm finds its row).
    pub async fn find_alarm(
        &self,
        device: &DeviceId,
        kind: &str,
        raised_at: Timestamp,
    ) -> Result<Option<Alarm>, StoreError> {
        let sql = concat!(
            "SELECT ",
            alarm_columns!(),
            " FROM alarms WHERE device_id = $1 AND kind = $2 AND raised_at = $3"
        );
        let row: Option<AlarmRow> = on_pool!(self, p => sqlx::query_as(sql)
            .bind(device.as_str())
            .bind(kind)
            .bind(raised_at.unix_micros())
            .fetch_optional(p)
            .await)
        .map_err(StoreError::db("reading an alarm"))?;
        row.map(AlarmRow::into_domain).transpose()
    }

    pub async fn get_alarm(&self, id: &AlarmId) -> Result<Option<Alarm>, StoreError> {
        let sql = concat!("SELECT ", alarm_columns!(), " FROM alarms WHERE id = $1");
        let row: Option<AlarmRow> = on_pool!(self, p => sqlx::query_as(sql)
            .bind(id.to_string())
            .fetch_optional(p)
            .await)
        .map_err(StoreError::db("reading an alarm"))?;
        row.map(AlarmRow::into_domain).transpose()
    }

    /// Alarms newest first, `limit` at a time after `after`; only unacknowledged ones when `open`,
    /// only one device's when `device` is given.
    pub async fn list_alarms(
        &self,
        open: bool,
        device: Option<&DeviceId>,
        after: Option<AlarmCursor>,
        limit: u32,
    ) -> Result<Vec<Alarm>, StoreError> {
        let sql = concat!(
            "SELECT ",
            alarm_columns!(),
            " FROM alarms WHERE ($1 = 0 OR acked_at IS NULL) AND ($2 = '' OR device_id = $2) \
             AND (raised_at < $3 OR (raised_at = $3 AND id < $4)) \
             ORDER BY raised_at DESC, id DESC LIMIT $5"
        );
        let (t, id) = after
            .map(|c| (c.raised_at.unix_micros(), c.id.to_string()))
            .unwrap_or((i64::MAX, String::new()));
        let rows: Vec<AlarmRow> = on_pool!(self, p => sqlx::query_as(sql)
            .bind(i32::from(open))
            .bind(device.map(DeviceId::as_str).unwrap_or(""))
            .bind(t)
            .bind(if after.is_some() { id } else { "~".to_string() })
            .bind(i64::from(limit.max(1)))
            .fetch_all(p)
            .await)
        .map_err(StoreError::db("listing alarms"))?;
        rows.into_iter().map(AlarmRow::into_domain).collect()
    }

    /// Acknowledges an alarm once. Returns the alarm and whether this call acknowledged it (false: it
    /// already was, and keeps its first acknowledgement). `NotFound` for an unknown alarm.
    pub async fn ack_alarm(
        &self,
        id: &AlarmId,
        by: &str,
        note: &str,
        at: Timestamp,
    ) -> Result<(Alarm, bool), StoreError> {
        let sql = "UPDATE alarms SET acked_at = $1, acked_by = $2, ack_note = $3 \
                   WHERE id = $4 AND acked_at IS NULL";
        let n = on_pool!(self, p => sqlx::query(sql)
            .bind(at.unix_micros())
            .bind(by)
            .bind(note)
            .bind(id.to_string())
            .execute(p)
            .await
            .map(|r| r.rows_affected()))
        .map_err(StoreError::db("acknowledging an alarm"))?;
        let alarm = self
            .get_alarm(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("alarm {id}")))?;
        Ok((alarm, n == 1))
    }

    pub async fn insert_geofence(&self, f: &Geofence) -> Result<(), StoreError> {
        let ring = serde_json::to_string(&f.ring)
            .map_err(|e| StoreError::Corrupt(format!("geofence ring: {e}")))?;
        let sql =
            "INSERT INTO geofences (id, name, kind, ring, created_at) VALUES ($1, $2, $3, $4, $5)";
        on_pool!(self, p => sqlx::query(sql)
            .bind(f.id.to_string())
            .bind(&f.name)
            .bind(&f.kind)
            .bind(ring)
            .bind(f.created_at.unix_micros())
            .execute(p)
            .await
            .map(|_| ()))
        .map_err(StoreError::db("saving a geofence"))
    }

    /// Every geofence, oldest first.
    pub async fn list_geofences(&self) -> Result<Vec<Geofence>, StoreError> {
        let sql = "SELECT id, name, kind, ring, created_at FROM geofences ORDER BY created_at, id";
        let rows: Vec<(String, String, String, String, i64)> =
            on_pool!(self, p => sqlx::query_as(sql).fetch_all(p).await)
                .map_err(StoreError::db("listing geofences"))?;
        rows.into_iter()
            .map(|(id, name, kind, ring, created_at)| {
                let c = corrupt("geofences", &id);
                Ok(Geofence {
                    id: FenceId::parse(&id).map_err(|e| c(e.to_string()))?,
                    name,
                    kind,
                    ring: serde_json::from_str(&ring).map_err(|e| c(e.to_string()))?,
                    created_at: Timestamp::from_unix_micros(created_at),
                })
            })
            .collect()
    }

    /// Deletes a geofence (its past events stay). `NotFound` when there is none.
    pub async fn delete_geofence(&self, id: &FenceId) -> Result<(), StoreError> {
        let n = on_pool!(self, p => sqlx::query("DELETE FROM geofences WHERE id = $1")
            .bind(id.to_string())
            .execute(p)
            .await
            .map(|r| r.rows_affected()))
        .map_err(StoreError::db("deleting a geofence"))?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("geofence {id}")));
        }
        Ok(())
    }

    /// Fence events with `from <= t < to`, oldest first, optionally of one device, at most `limit`.
    pub async fn fence_events(
        &self,
        device: Option<&DeviceId>,
        from: Timestamp,
        to: Timestamp,
        limit: u32,
    ) -> Result<Vec<FenceEvent>, StoreError> {
        let sql = "SELECT device_id, fence_id, kind, t, lat, lon FROM fence_events \
                   WHERE ($1 = '' OR device_id = $1) AND t >= $2 AND t < $3 \
                   ORDER BY t, device_id, fence_id LIMIT $4";
        let rows: Vec<(String, String, String, i64, f64, f64)> =
            on_pool!(self, p => sqlx::query_as(sql)
            .bind(device.map(DeviceId::as_str).unwrap_or(""))
            .bind(from.unix_micros())
            .bind(to.unix_micros())
            .bind(i64::from(limit))
            .fetch_all(p)
            .await)
            .map_err(StoreError::db("listing fence events"))?;
        rows.into_iter()
            .map(|(d, f, k, t, lat, lon)| {
                let c = corrupt("fence_events", &d);
                Ok(FenceEvent {
                    device_id: DeviceId::parse(d.clone()).map_err(|e| c(e.to_string()))?,
                    fence_id: FenceId::parse(&f).map_err(|e| c(e.to_string()))?,
                    kind: FenceTransition::parse(&k).map_err(c)?,
                    t: Timestamp::from_unix_micros(t),
                    lat,
                    lon,
                })
            })
            .collect()
    }
}

fn bind_columns<'q, DB>(
    q: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>,
    c: PositionColumns,
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>
where
    DB: sqlx::Database,
    Vec<String>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Vec<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Vec<f64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Vec<Option<f32>>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Vec<i16>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Vec<Option<i16>>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    q.bind(c.device)
        .bind(c.t)
        .bind(c.lat)
        .bind(c.lon)
        .bind(c.alt)
        .bind(c.speed)
        .bind(c.course)
        .bind(c.acc)
        .bind(c.sos)
        .bind(c.batt)
}

/// Inserts one alarm on a transaction of either backend (skipped when the same device, kind and time
/// is stored).
macro_rules! insert_alarm {
    ($tx:expr, $a:expr) => {{
        let a: &Alarm = $a;
        sqlx::query(
            "INSERT INTO alarms (id, device_id, kind, raised_at, lat, lon, note, received_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (device_id, kind, raised_at) DO NOTHING",
        )
        .bind(a.id.to_string())
        .bind(a.device_id.as_str())
        .bind(a.kind.as_str())
        .bind(a.raised_at.unix_micros())
        .bind(a.lat)
        .bind(a.lon)
        .bind(a.note.as_str())
        .bind(a.received_at.unix_micros())
        .execute($tx)
        .await
        .map_err(StoreError::db("storing an alarm"))?;
    }};
}
use insert_alarm;

/// Inserts one fence event on a transaction of either backend.
macro_rules! insert_fence_event {
    ($tx:expr, $e:expr) => {{
        let e: &FenceEvent = $e;
        sqlx::query(
            "INSERT INTO fence_events (device_id, fence_id, kind, t, lat, lon) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(e.device_id.as_str())
        .bind(e.fence_id.to_string())
        .bind(e.kind.as_str())
        .bind(e.t.unix_micros())
        .bind(e.lat)
        .bind(e.lon)
        .execute($tx)
        .await
        .map_err(StoreError::db("storing a fence event"))?;
    }};
}
use insert_fence_event;

#[cfg(test)]
mod tests {
    #[test]
    fn partitions_are_named_by_utc_day() {
        assert_eq!(super::partition_name(0), "positions_p19700101");
        assert_eq!(super::partition_name(20_415), "positions_p20251123");
    }
}
