//! Ledger rows: events waiting for the sequencer, the log's entries and stored hashes, its progress, and
//! its signed checkpoints. The sequencer (in `custody-ingest`) decides what to write; this module only
//! guarantees that a batch becomes part of the log atomically and at most once.

use crate::error::StoreError;
use crate::meta::{Metadata, Pool, corrupt, on_pool, sql_size};
use custody_core::ledger::{EventKind, TreeHash};
use custody_core::{DeviceId, EvidenceId, Sha256, Sm3, StationId, Timestamp};
use std::collections::HashMap;

/// An event to be appended to the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEvent {
    pub kind: EventKind,
    pub evidence_id: EvidenceId,
    /// Who caused it: `user:<name>`, `station:<id>`, `anonymous`, `system`.
    pub actor: String,
    pub officer: Option<String>,
    pub detail: Option<String>,
    pub server_time: Timestamp,
}

/// A pending event with what the sequencer needs of its evidence row.
#[derive(Debug, Clone)]
pub struct PendingRow {
    pub id: i64,
    pub event: PendingEvent,
    pub sha256: Sha256,
    pub sm3: Option<Sm3>,
    pub size: u64,
    pub device_id: DeviceId,
    pub station_id: StationId,
    pub captured_at: Timestamp,
}

/// How far the log has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerState {
    /// Entries in the log.
    pub size: u64,
    /// Entries whose tiles and entry bundles are in the object store.
    pub tiles_size: u64,
    /// Size of the newest signed checkpoint.
    pub checkpoint_size: u64,
}

/// One log entry as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    pub index: u64,
    pub kind: EventKind,
    pub evidence_id: EvidenceId,
    pub device_id: DeviceId,
    /// The canonical bytes that were hashed.
    pub entry: Vec<u8>,
}

/// A signed checkpoint as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredCheckpoint {
    pub size: u64,
    pub root: TreeHash,
    /// The signed note text.
    pub note: String,
    pub created_at: Timestamp,
}

/// A batch of the log, ready to be made permanent in one transaction.
#[derive(Debug, Clone, Default)]
pub struct IntegrationBatch {
    /// Log size before the batch; the write fails with a conflict if the log is no longer this size.
    pub old_size: u64,
    pub entries: Vec<StoredEntry>,
    pub hashes: Vec<(u64, TreeHash)>,
    /// Pending rows the batch consumed.
    pub pending_ids: Vec<i64>,
}

#[derive(sqlx::FromRow)]
struct PendingSqlRow {
    id: i64,
    kind: String,
    evidence_id: String,
    actor: String,
    officer: Option<String>,
    detail: Option<String>,
    server_time: i64,
    sha256: Vec<u8>,
    sm3: Option<Vec<u8>>,
    size: i64,
    device_id: String,
    station_id: String,
    captured_at: i64,
}

#[derive(sqlx::FromRow)]
struct EntrySqlRow {
    idx: i64,
    kind: String,
    evidence_id: String,
    device_id: String,
    entry: Vec<u8>,
}

#[derive(sqlx::FromRow)]
struct CheckpointSqlRow {
    size: i64,
    root: Vec<u8>,
    note: String,
    created_at: i64,
}

impl PendingSqlRow {
    fn into_domain(self) -> Result<PendingRow, StoreError> {
        let id = self.id.to_string();
        let c = corrupt("ledger_pending", &id);
        let e = |x: &dyn std::fmt::Display| c(x.to_string());
        Ok(PendingRow {
            id: self.id,
            event: PendingEvent {
                kind: EventKind::parse(&self.kind).map_err(|x| e(&x))?,
                evidence_id: EvidenceId::parse(&self.evidence_id).map_err(|x| e(&x))?,
                actor: self.actor,
                officer: self.officer,
                detail: self.detail,
                server_time: Timestamp::from_unix_micros(self.server_time),
            },
            sha256: Sha256::from_slice(&self.sha256).map_err(|x| e(&x))?,
            sm3: self
                .sm3
                .as_deref()
                .map(Sm3::from_slice)
                .transpose()
                .map_err(|x| e(&x))?,
            size: u64::try_from(self.size).map_err(|x| e(&x))?,
            device_id: DeviceId::parse(self.device_id).map_err(|x| e(&x))?,
            station_id: StationId::parse(self.station_id).map_err(|x| e(&x))?,
            captured_at: Timestamp::from_unix_micros(self.captured_at),
        })
    }
}

impl EntrySqlRow {
    fn into_domain(self) -> Result<StoredEntry, StoreError> {
        let id = self.idx.to_string();
        let c = corrupt("ledger_entries", &id);
        let e = |x: &dyn std::fmt::Display| c(x.to_string());
        Ok(StoredEntry {
            index: u64::try_from(self.idx).map_err(|x| e(&x))?,
            kind: EventKind::parse(&self.kind).map_err(|x| e(&x))?,
            evidence_id: EvidenceId::parse(&self.evidence_id).map_err(|x| e(&x))?,
            device_id: DeviceId::parse(self.device_id).map_err(|x| e(&x))?,
            entry: self.entry,
        })
    }
}

impl CheckpointSqlRow {
    fn into_domain(self) -> Result<StoredCheckpoint, StoreError> {
        let id = self.size.to_string();
        let c = corrupt("ledger_checkpoints", &id);
        Ok(StoredCheckpoint {
            size: u64::try_from(self.size).map_err(|x| c(x.to_string()))?,
            root: TreeHash(
                self.root
                    .try_into()
                    .map_err(|_| c("root is not 32 bytes".into()))?,
            ),
            note: self.note,
            created_at: Timestamp::from_unix_micros(self.created_at),
        })
    }
}

/// Rows per multi-row INSERT: well under SQLite's 32766 bound variables and PostgreSQL's 65535.
const INSERT_CHUNK: usize = 1000;

pub(crate) const INSERT_PENDING: &str = "INSERT INTO ledger_pending (kind, evidence_id, actor, officer, detail, server_time) \
     VALUES ($1, $2, $3, $4, $5, $6)";

/// The pending insert of an event, for use inside another statement's transaction.
macro_rules! bind_pending {
    ($ev:expr) => {
        sqlx::query($crate::ledger::INSERT_PENDING)
            .bind($ev.kind.as_str())
            .bind($ev.evidence_id.to_string())
            .bind($ev.actor.clone())
            .bind($ev.officer.clone())
            .bind($ev.detail.clone())
            .bind($ev.server_time.unix_micros())
    };
}
pub(crate) use bind_pending;

impl Metadata {
    /// Queues an event for the sequencer. Durable when this returns.
    pub async fn append_pending(&self, ev: &PendingEvent) -> Result<(), StoreError> {
        on_pool!(self, p => bind_pending!(ev).execute(p).await.map(|_| ()))
            .map_err(StoreError::db("queueing a ledger event"))
    }

    /// The oldest pending events, with their evidence.
    pub async fn pending_batch(&self, limit: u32) -> Result<Vec<PendingRow>, StoreError> {
        let sql = "SELECT p.id, p.kind, p.evidence_id, p.actor, p.officer, p.detail, p.server_time, \
                    e.sha256, e.sm3, e.size, e.device_id, e.station_id, e.captured_at \
             FROM ledger_pending p JOIN evidence e ON e.id = p.evidence_id \
             ORDER BY p.id LIMIT $1";
        let rows: Vec<PendingSqlRow> = on_pool!(self, p => sqlx::query_as(sql)
            .bind(i64::from(limit.max(1)))
            .fetch_all(p)
            .await)
        .map_err(StoreError::db("reading pending ledger events"))?;
        rows.into_iter().map(PendingSqlRow::into_domain).collect()
    }

    /// How many events wait for the sequencer.
    pub async fn pending_count(&self) -> Result<u64, StoreError> {
        let n: i64 = on_pool!(self, p => sqlx::query_scalar("SELECT COUNT(*) FROM ledger_pending")
            .fetch_one(p)
            .await)
        .map_err(StoreError::db("counting pending ledger events"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    pub async fn ledger_state(&self) -> Result<LedgerState, StoreError> {
        let (size, tiles, cp): (i64, i64, i64) = on_pool!(self, p => sqlx::query_as(
            "SELECT size, tiles_size, checkpoint_size FROM ledger_state WHERE singleton = 1")
            .fetch_one(p)
            .await)
        .map_err(StoreError::db("reading the ledger state"))?;
        let c = |x: std::num::TryFromIntError| StoreError::Corrupt(format!("ledger_state: {x}"));
        Ok(LedgerState {
            size: u64::try_from(size).map_err(c)?,
            tiles_size: u64::try_from(tiles).map_err(c)?,
            checkpoint_size: u64::try_from(cp).map_err(c)?,
        })
    }

    /// Makes a batch part of the log: its entries and hashes are written, its pending rows removed and
    /// the log size advanced, all in one transaction, and only if the log is still `old_size` long (so two
    /// sequencers can never both extend it: the loser gets [`StoreError::Conflict`] and nothing changes).
    pub async fn integrate(&self, batch: &IntegrationBatch) -> Result<(), StoreError> {
        let new_size = batch.old_size + batch.entries.len() as u64;
        let advance = "UPDATE ledger_state SET size = $1 WHERE singleton = 1 AND size = $2";
        let moved = on_pool!(self, p => async {
            let mut tx = p.begin().await?;
            // The update comes first so that SQLite takes its write lock at the start.
            let n = sqlx::query(advance)
                .bind(sql_size(new_size))
                .bind(sql_size(batch.old_size))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n != 1 {
                return Ok::<bool, sqlx::Error>(true);
            }
            for chunk in batch.entries.chunks(INSERT_CHUNK) {
                let mut q = sqlx::QueryBuilder::new(
                    "INSERT INTO ledger_entries (idx, kind, evidence_id, device_id, entry) ");
                q.push_values(chunk, |mut b, e| {
                    b.push_bind(sql_size(e.index))
                        .push_bind(e.kind.as_str())
                        .push_bind(e.evidence_id.to_string())
                        .push_bind(e.device_id.as_str().to_string())
                        .push_bind(e.entry.clone());
                });
                q.build().execute(&mut *tx).await?;
            }
            for chunk in batch.hashes.chunks(INSERT_CHUNK) {
                let mut q = sqlx::QueryBuilder::new("INSERT INTO ledger_hashes (id, hash) ");
                q.push_values(chunk, |mut b, (i, h)| {
                    b.push_bind(sql_size(*i)).push_bind(h.0.to_vec());
                });
                q.build().execute(&mut *tx).await?;
            }
            for chunk in batch.pending_ids.chunks(INSERT_CHUNK) {
                let mut q = sqlx::QueryBuilder::new("DELETE FROM ledger_pending WHERE id IN (");
                let mut ids = q.separated(", ");
                for id in chunk {
                    ids.push_bind(*id);
                }
                q.push(")");
                q.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(false)
        }.await)
        .map_err(StoreError::db("integrating a ledger batch"))?;
        if moved {
            return Err(StoreError::Conflict(format!(
                "the ledger is no longer {} entries long: another sequencer extended it",
                batch.old_size
            )));
        }
        Ok(())
    }

    /// Stored hashes by index. Fails naming the first index that is missing.
    pub async fn ledger_hashes(
        &self,
        indexes: &[u64],
    ) -> Result<HashMap<u64, TreeHash>, StoreError> {
        let mut out = HashMap::with_capacity(indexes.len());
        for chunk in indexes.chunks(INSERT_CHUNK) {
            let rows: Vec<(i64, Vec<u8>)> = on_pool!(self, p => {
                let mut q = sqlx::QueryBuilder::new("SELECT id, hash FROM ledger_hashes WHERE id IN (");
                let mut ids = q.separated(", ");
                for i in chunk {
                    ids.push_bind(sql_size(*i));
                }
                q.push(")");
                q.build_query_as().fetch_all(p).await
            })
            .map_err(StoreError::db("reading ledger hashes"))?;
            for (id, hash) in rows {
                let row = id.to_string();
                let c = corrupt("ledger_hashes", &row);
                let hash: [u8; 32] = hash
                    .try_into()
                    .map_err(|_| c("hash is not 32 bytes".into()))?;
                out.insert(
                    u64::try_from(id).map_err(|e| c(e.to_string()))?,
                    TreeHash(hash),
                );
            }
        }
        if let Some(missing) = indexes.iter().find(|i| !out.contains_key(i)) {
            return Err(StoreError::Corrupt(format!(
                "ledger_hashes has no row {missing}, which the log needs"
            )));
        }
        Ok(out)
    }

    /// Entries `from..to` (leaf indexes), in order. Missing rows are simply absent: callers that need all
    /// of them check.
    pub async fn ledger_entries(&self, from: u64, to: u64) -> Result<Vec<StoredEntry>, StoreError> {
        let sql = "SELECT idx, kind, evidence_id, device_id, entry FROM ledger_entries \
                   WHERE idx >= $1 AND idx < $2 ORDER BY idx";
        let rows: Vec<EntrySqlRow> = on_pool!(self, p => sqlx::query_as(sql)
            .bind(sql_size(from))
            .bind(sql_size(to))
            .fetch_all(p)
            .await)
        .map_err(StoreError::db("reading ledger entries"))?;
        rows.into_iter().map(EntrySqlRow::into_domain).collect()
    }

    /// Every entry about one item of evidence, in log order.
    pub async fn ledger_entries_of(
        &self,
        evidence: EvidenceId,
    ) -> Result<Vec<StoredEntry>, StoreError> {
        let sql = "SELECT idx, kind, evidence_id, device_id, entry FROM ledger_entries \
                   WHERE evidence_id = $1 ORDER BY idx";
        let rows: Vec<EntrySqlRow> = on_pool!(self, p => sqlx::query_as(sql)
            .bind(evidence.to_string())
            .fetch_all(p)
            .await)
        .map_err(StoreError::db("reading the ledger entries of an item"))?;
        rows.into_iter().map(EntrySqlRow::into_domain).collect()
    }

    /// The leaf index of the ingest entry of an item, once sequenced.
    pub async fn ingest_leaf(&self, evidence: EvidenceId) -> Result<Option<u64>, StoreError> {
        let sql = "SELECT idx FROM ledger_entries WHERE evidence_id = $1 AND kind = 'ingest' \
                   ORDER BY idx LIMIT 1";
        let idx: Option<i64> = on_pool!(self, p => sqlx::query_scalar(sql)
            .bind(evidence.to_string())
            .fetch_optional(p)
            .await)
        .map_err(StoreError::db("finding an ingest entry"))?;
        Ok(idx.and_then(|i| u64::try_from(i).ok()))
    }

    /// The newest leaf about a recorder's evidence: the head of its hash chain.
    pub async fn last_leaf_of_device(&self, device: &DeviceId) -> Result<Option<u64>, StoreError> {
        let sql = "SELECT MAX(idx) FROM ledger_entries WHERE device_id = $1";
        let idx: Option<i64> = on_pool!(self, p => sqlx::query_scalar(sql)
            .bind(device.as_str())
            .fetch_one(p)
            .await)
        .map_err(StoreError::db("finding a recorder's last ledger entry"))?;
        Ok(idx.and_then(|i| u64::try_from(i).ok()))
    }

    /// The newest leaf about one item.
    pub async fn last_leaf_of_evidence(
        &self,
        evidence: EvidenceId,
    ) -> Result<Option<u64>, StoreError> {
        let sql = "SELECT MAX(idx) FROM ledger_entries WHERE evidence_id = $1";
        let idx: Option<i64> = on_pool!(self, p => sqlx::query_scalar(sql)
            .bind(evidence.to_string())
            .fetch_one(p)
            .await)
        .map_err(StoreError::db("finding an item's last ledger entry"))?;
        Ok(idx.and_then(|i| u64::try_from(i).ok()))
    }

    /// Records that tiles are written for the first `size` entries (never moves backwards).
    pub async fn set_tiles_size(&self, size: u64) -> Result<(), StoreError> {
        let sql = "UPDATE ledger_state SET tiles_size = $1 WHERE singleton = 1 AND tiles_size < $1 AND size >= $1";
        on_pool!(self, p => sqlx::query(sql).bind(sql_size(size)).execute(p).await.map(|_| ()))
            .map_err(StoreError::db("recording written ledger tiles"))
    }

    /// Stores a signed checkpoint and makes it the newest (unless a larger one exists already).
    pub async fn add_checkpoint(&self, cp: &StoredCheckpoint) -> Result<(), StoreError> {
        let insert = "INSERT INTO ledger_checkpoints (size, root, note, created_at) VALUES ($1, $2, $3, $4) \
                      ON CONFLICT (size) DO NOTHING";
        let advance = "UPDATE ledger_state SET checkpoint_size = $1 \
                       WHERE singleton = 1 AND checkpoint_size < $1 AND tiles_size >= $1";
        on_pool!(self, p => async {
            let mut tx = p.begin().await?;
            sqlx::query(insert)
                .bind(sql_size(cp.size))
                .bind(cp.root.0.to_vec())
                .bind(&cp.note)
                .bind(cp.created_at.unix_micros())
                .execute(&mut *tx)
                .await?;
            sqlx::query(advance).bind(sql_size(cp.size)).execute(&mut *tx).await?;
            tx.commit().await
        }.await)
        .map_err(StoreError::db("storing a ledger checkpoint"))
    }

    /// The newest signed checkpoint.
    pub async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        let sql = "SELECT c.size, c.root, c.note, c.created_at FROM ledger_checkpoints c \
                   JOIN ledger_state s ON s.checkpoint_size = c.size";
        let row: Option<CheckpointSqlRow> = on_pool!(self, p => sqlx::query_as(sql)
            .fetch_optional(p)
            .await)
        .map_err(StoreError::db("reading the newest ledger checkpoint"))?;
        row.map(CheckpointSqlRow::into_domain).transpose()
    }

    /// Signed checkpoints of at least `from` entries, smallest first, at most `limit`.
    pub async fn checkpoints(
        &self,
        from: u64,
        limit: u32,
    ) -> Result<Vec<StoredCheckpoint>, StoreError> {
        let sql = "SELECT size, root, note, created_at FROM ledger_checkpoints WHERE size >= $1 \
                   ORDER BY size LIMIT $2";
        let rows: Vec<CheckpointSqlRow> = on_pool!(self, p => sqlx::query_as(sql)
            .bind(sql_size(from))
            .bind(i64::from(limit.max(1)))
            .fetch_all(p)
            .await)
        .map_err(StoreError::db("listing ledger checkpoints"))?;
        rows.into_iter()
            .map(CheckpointSqlRow::into_domain)
            .collect()
    }

    /// Takes the right to sequence the ledger. On PostgreSQL this is a session advisory lock held by a
    /// connection of its own, so one replica sequences at a time and another takes over when it dies;
    /// `None` means another replica holds it. On SQLite (one process per database) it always succeeds.
    /// Either way [`Metadata::integrate`]'s compare-and-set keeps the log from forking.
    pub async fn try_sequencer_lock(&self) -> Result<Option<SequencerLock>, StoreError> {
        match &self.pool {
            Pool::Sqlite(_) => Ok(Some(SequencerLock { conn: None })),
            Pool::Postgres(p) => {
                let mut conn = p
                    .acquire()
                    .await
                    .map_err(StoreError::db("taking a connection for the sequencer lock"))?
                    .detach();
                let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(SEQUENCER_LOCK_KEY)
                    .fetch_one(&mut conn)
                    .await
                    .map_err(StoreError::db("taking the sequencer lock"))?;
                Ok(got.then_some(SequencerLock { conn: Some(conn) }))
            }
        }
    }

    /// Queues many events at once (bulk loads and benchmarks): multi-row INSERTs of [`INSERT_CHUNK`]
    /// rows, in one transaction per 50 000 events, so queueing costs a few commits rather than one per
    /// event. Durable when this returns; events keep their order. If it fails part-way, the transactions
    /// committed before the failure stay queued.
    pub async fn append_many(&self, events: &[PendingEvent]) -> Result<(), StoreError> {
        // Large enough that commits cost little, small enough that one transaction does not hold
        // SQLite's write lock for long.
        const APPEND_MANY_TX_ROWS: usize = 50_000;
        for tx_events in events.chunks(APPEND_MANY_TX_ROWS) {
            on_pool!(self, p => async {
                let mut tx = p.begin().await?;
                for chunk in tx_events.chunks(INSERT_CHUNK) {
                    let mut q = sqlx::QueryBuilder::new(
                        "INSERT INTO ledger_pending (kind, evidence_id, actor, officer, detail, server_time) ");
                    q.push_values(chunk, |mut b, ev| {
                        b.push_bind(ev.kind.as_str())
                            .push_bind(ev.evidence_id.to_string())
                            .push_bind(ev.actor.clone())
                            .push_bind(ev.officer.clone())
                            .push_bind(ev.detail.clone())
                            .push_bind(ev.server_time.unix_micros());
                    });
                    q.build().execute(&mut *tx).await?;
                }
                tx.commit().await
            }.await)
            .map_err(StoreError::db("queueing ledger events in bulk"))?;
        }
        Ok(())
    }
}

/// Advisory lock key of the sequencer: "custody\0" as a big-endian integer.
const SEQUENCER_LOCK_KEY: i64 = 0x6375_7374_6f64_7900;

/// The right to sequence the ledger, held until dropped.
#[derive(Debug)]
pub struct SequencerLock {
    conn: Option<sqlx::PgConnection>,
}

impl SequencerLock {
    /// Checks that the lock is still held (its connection is alive).
    pub async fn still_held(&mut self) -> bool {
        match &mut self.conn {
            None => true,
            Some(c) => sqlx::Connection::ping(c).await.is_ok(),
        }
    }
}
