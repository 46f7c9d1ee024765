//! Rows in SQLite or PostgreSQL. Both backends run the same SQL text: sqlx binds `$N` placeholders by
//! number on SQLite too, so each statement is written once and [`on_pool!`] expands it for both pools.

use crate::error::StoreError;
use custody_core::access::EvidenceScope;
use custody_core::evidence::{Attribution, AttributionSource, Deletion, LegalHold, RetentionMarks};
use custody_core::{
    BadgeNo, DeviceId, Evidence, EvidenceFilter, EvidenceId, FileName, Importance, MediaType,
    Sha256, Sm3, StationId, Timestamp, Upload, UploadDeclaration, UploadId, UploadState,
};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::str::FromStr;
use std::time::Duration;

/// Which database holds the metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same statement on whichever pool is configured.
macro_rules! on_pool {
    ($self:expr, $pool:ident => $body:expr) => {
        match &$self.pool {
            $crate::meta::Pool::Sqlite($pool) => $body,
            $crate::meta::Pool::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// The metadata repository: uploads and evidence rows.
#[derive(Debug, Clone)]
pub struct Metadata {
    pub(crate) pool: Pool,
    /// PostgreSQL position partitions (UTC day numbers) known to exist, so that a batch does not ask.
    pub(crate) partitions: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<i64>>>,
}

/// Where a listing continues: after this (capture time, id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageCursor {
    pub captured_at: Timestamp,
    pub id: EvidenceId,
}

impl PageCursor {
    /// An opaque token for clients.
    pub fn encode(&self) -> String {
        format!("{}_{}", self.captured_at.unix_micros(), self.id)
    }

    pub fn decode(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "cursor: expected a token returned as next_cursor by a previous page, got {s:?}"
            )
        };
        let (t, id) = s.split_once('_').ok_or_else(bad)?;
        Ok(Self {
            captured_at: Timestamp::from_unix_micros(t.parse().map_err(|_| bad())?),
            id: EvidenceId::parse(id).map_err(|_| bad())?,
        })
    }
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct EvidencePage {
    pub items: Vec<Evidence>,
    /// Present when more items may follow.
    pub next: Option<PageCursor>,
}

/// What committing an upload produced.
#[derive(Debug, Clone)]
pub struct CommitOutcome {
    pub evidence: Evidence,
    /// The bytes were already evidence (another upload committed them first).
    pub duplicate: bool,
}

#[derive(sqlx::FromRow)]
struct UploadRow {
    id: String,
    device_id: String,
    station_id: String,
    file_name: String,
    size: i64,
    sha256: Vec<u8>,
    sm3: Option<Vec<u8>>,
    captured_at: i64,
    importance: i32,
    media_type: String,
    state: String,
    committed_size: i64,
    staging: String,
    failure: Option<String>,
    evidence_id: Option<String>,
    created_at: i64,
    updated_at: i64,
    expires_at: i64,
    reported_badge: Option<String>,
    clock_offset_ms: Option<i64>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct EvidenceRow {
    id: String,
    sha256: Vec<u8>,
    sm3: Option<Vec<u8>>,
    size: i64,
    device_id: String,
    station_id: String,
    file_name: String,
    media_type: String,
    importance: i32,
    captured_at: i64,
    ingested_at: i64,
    officer_badge: Option<String>,
    attribution: String,
    reported_badge: Option<String>,
    attribution_conflict: bool,
    clock_offset_ms: Option<i64>,
    legal_hold: Option<String>,
    legal_hold_by: Option<String>,
    legal_hold_at: Option<i64>,
    obstruction: bool,
    retention_class: Option<String>,
    deleted_at: Option<i64>,
    deletion_reason: Option<String>,
    bytes_gone_at: Option<i64>,
}

pub(crate) fn corrupt(table: &str, id: &str) -> impl Fn(String) -> StoreError {
    let what = format!("{table} row {id}");
    move |e| StoreError::Corrupt(format!("{what}: {e}"))
}

impl UploadRow {
    fn into_domain(self) -> Result<Upload, StoreError> {
        let c = corrupt("uploads", &self.id);
        let e = |x: &dyn std::fmt::Display| c(x.to_string());
        Ok(Upload {
            id: UploadId::parse(&self.id).map_err(|x| e(&x))?,
            declaration: UploadDeclaration {
                device_id: DeviceId::parse(self.device_id).map_err(|x| e(&x))?,
                station_id: StationId::parse(self.station_id).map_err(|x| e(&x))?,
                file_name: FileName::parse(self.file_name).map_err(|x| e(&x))?,
                size: u64::try_from(self.size).map_err(|x| e(&x))?,
                sha256: Sha256::from_slice(&self.sha256).map_err(|x| e(&x))?,
                sm3: self
                    .sm3
                    .as_deref()
                    .map(Sm3::from_slice)
                    .transpose()
                    .map_err(|x| e(&x))?,
                captured_at: Timestamp::from_unix_micros(self.captured_at),
                importance: Importance::from_mark(self.importance.into()).map_err(|x| e(&x))?,
                media_type: MediaType::parse(&self.media_type).map_err(|x| e(&x))?,
                officer: self
                    .reported_badge
                    .map(BadgeNo::parse)
                    .transpose()
                    .map_err(|x| e(&x))?,
                clock_offset_ms: self.clock_offset_ms,
            },
            state: UploadState::parse(&self.state).map_err(|x| e(&x))?,
            committed_size: u64::try_from(self.committed_size).map_err(|x| e(&x))?,
            staging: self.staging,
            failure: self.failure,
            evidence_id: self
                .evidence_id
                .as_deref()
                .map(EvidenceId::parse)
                .transpose()
                .map_err(|x| e(&x))?,
            created_at: Timestamp::from_unix_micros(self.created_at),
            updated_at: Timestamp::from_unix_micros(self.updated_at),
            expires_at: Timestamp::from_unix_micros(self.expires_at),
        })
    }
}

impl EvidenceRow {
    pub(crate) fn into_domain(self) -> Result<Evidence, StoreError> {
        let c = corrupt("evidence", &self.id);
        let e = |x: &dyn std::fmt::Display| c(x.to_string());
        Ok(Evidence {
            id: EvidenceId::parse(&self.id).map_err(|x| e(&x))?,
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
            file_name: FileName::parse(self.file_name).map_err(|x| e(&x))?,
            media_type: MediaType::parse(&self.media_type).map_err(|x| e(&x))?,
            importance: Importance::from_mark(self.importance.into()).map_err(|x| e(&x))?,
            captured_at: Timestamp::from_unix_micros(self.captured_at),
            ingested_at: Timestamp::from_unix_micros(self.ingested_at),
            attribution: Attribution {
                officer: self
                    .officer_badge
                    .map(BadgeNo::parse)
                    .transpose()
                    .map_err(|x| e(&x))?,
                source: AttributionSource::parse(&self.attribution).map_err(|x| e(&x))?,
                reported: self
                    .reported_badge
                    .map(BadgeNo::parse)
                    .transpose()
                    .map_err(|x| e(&x))?,
                conflict: self.attribution_conflict,
                clock_offset_ms: self.clock_offset_ms,
            },
            retention: RetentionMarks {
                legal_hold: self.legal_hold.map(|reason| LegalHold {
                    reason,
                    by: self.legal_hold_by.unwrap_or_default(),
                    at: Timestamp::from_unix_micros(self.legal_hold_at.unwrap_or_default()),
                }),
                obstruction: self.obstruction,
                class: self.retention_class,
                deleted: self.deleted_at.map(|at| Deletion {
                    at: Timestamp::from_unix_micros(at),
                    reason: self.deletion_reason.unwrap_or_default(),
                    bytes_gone_at: self.bytes_gone_at.map(Timestamp::from_unix_micros),
                }),
            },
        })
    }
}

/// Sizes are `u64` in the domain and BIGINT in SQL; anything past `i64::MAX` was refused long before.
pub(crate) fn sql_size(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The columns of `uploads`, in `UploadRow` order: one list for every statement.
macro_rules! upload_columns {
    () => {
        "id, device_id, station_id, file_name, size, sha256, sm3, captured_at, importance, media_type, state, \
         committed_size, staging, failure, evidence_id, created_at, updated_at, expires_at, reported_badge, \
         clock_offset_ms"
    };
}

/// The columns of `evidence` a commit writes (plus `upload_id`, which is written, never read).
macro_rules! evidence_insert_columns {
    () => {
        "id, sha256, sm3, size, device_id, station_id, file_name, media_type, importance, captured_at, ingested_at, \
         reported_badge, clock_offset_ms"
    };
}
pub(crate) use evidence_insert_columns;

/// The columns of `evidence` in `EvidenceRow` order: what a commit writes, then the attribution kept
/// current from the check-out register, then what retention knows (marks and the tombstone).
macro_rules! evidence_columns {
    () => {
        concat!(
            evidence_insert_columns!(),
            ", officer_badge, attribution, attribution_conflict, legal_hold, legal_hold_by, legal_hold_at, \
             obstruction, retention_class, deleted_at, deletion_reason, bytes_gone_at"
        )
    };
}
pub(crate) use evidence_columns;

/// Recomputes who held the recorder when each selected evidence item was recorded (`{filter}` selects
/// rows of `evidence e`). The capture time is corrected for the recorder's clock offset measured at
/// docking. Runs in the transaction that changes the register or commits the evidence.
macro_rules! attribute_sql {
    ($filter:literal) => {
        concat!(
            "WITH h AS (SELECT e.id AS eid, (SELECT c.badge FROM recorder_checkouts c \
               WHERE c.device_id = e.device_id \
                 AND c.out_at <= e.captured_at - COALESCE(e.clock_offset_ms, 0) * 1000 \
                 AND (c.returned_at IS NULL OR c.returned_at > e.captured_at - COALESCE(e.clock_offset_ms, 0) * 1000) \
               ORDER BY c.out_at DESC LIMIT 1) AS held FROM evidence e WHERE ",
            $filter,
            ") UPDATE evidence SET officer_badge = COALESCE(h.held, evidence.reported_badge), \
               attribution = CASE WHEN h.held IS NOT NULL THEN 'checkout' \
                 WHEN evidence.reported_badge IS NOT NULL THEN 'recorder' ELSE 'none' END, \
               attribution_conflict = (h.held IS NOT NULL AND evidence.reported_badge IS NOT NULL \
                 AND h.held <> evidence.reported_badge) \
             FROM h WHERE evidence.id = h.eid"
        )
    };
}
pub(crate) use attribute_sql;

/// The condition of `custody_core::access::EvidenceScope` on a row of `evidence`: everything, footage
/// attributed to the officer, or footage linked (and not unlinked) to a case the user handles. The three
/// placeholders bind `all`, the officer's badge and the handler's user name.
macro_rules! in_scope_sql {
    ($all:literal, $badge:literal, $handler:literal) => {
        concat!(
            "(", $all, " OR (CAST(", $badge, " AS TEXT) IS NOT NULL AND evidence.officer_badge = ", $badge, ") \
              OR (CAST(", $handler, " AS TEXT) IS NOT NULL AND EXISTS (SELECT 1 FROM evidence_links l \
                  JOIN case_handlers h ON h.case_id = l.case_id \
                  WHERE l.evidence_id = evidence.id AND l.unlinked_at IS NULL AND h.username = ", $handler, ")))"
        )
    };
}

const SELECT_UPLOAD: &str = concat!("SELECT ", upload_columns!(), " FROM uploads WHERE id = $1");
const SELECT_EVIDENCE_BY_ID: &str = concat!(
    "SELECT ",
    evidence_columns!(),
    " FROM evidence WHERE id = $1"
);
const SELECT_EVIDENCE_BY_SHA256: &str = concat!(
    "SELECT ",
    evidence_columns!(),
    " FROM evidence WHERE sha256 = $1"
);

impl Metadata {
    /// Connects by URL (`sqlite://path/custody.db`, `postgres://user@host/db`) and runs the migrations of
    /// that backend. A SQLite file is created when missing, in WAL mode with full fsync on commit so that a
    /// committed row survives a power cut.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let pool = if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(|e| StoreError::Config(format!("database_url {url:?}: {e}")))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections.max(1))
                .connect_with(opts)
                .await
                .map_err(StoreError::db("opening the sqlite database"))?;
            sqlx::migrate!("migrations/sqlite").run(&pool).await?;
            Pool::Sqlite(pool)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let pool = PgPoolOptions::new()
                .max_connections(max_connections.max(1))
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await
                .map_err(StoreError::db("connecting to postgresql"))?;
            sqlx::migrate!("migrations/postgres").run(&pool).await?;
            Pool::Postgres(pool)
        } else {
            return Err(StoreError::Config(format!(
                "database_url must start with sqlite: or postgres:, got {url:?}"
            )));
        };
        Ok(Self {
            pool,
            partitions: Default::default(),
        })
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(self, p => sqlx::query("SELECT 1").execute(p).await.map(|_| ()))
            .map_err(StoreError::db("pinging the database"))
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        on_pool!(self, p => p.close().await)
    }

    pub async fn insert_upload(&self, u: &Upload) -> Result<(), StoreError> {
        let d = &u.declaration;
        let sql = concat!(
            "INSERT INTO uploads (",
            upload_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)"
        );
        on_pool!(self, p => sqlx::query(sql)
            .bind(u.id.to_string())
            .bind(d.device_id.as_str())
            .bind(d.station_id.as_str())
            .bind(d.file_name.as_str())
            .bind(sql_size(d.size))
            .bind(d.sha256.as_bytes().to_vec())
            .bind(d.sm3.map(|s| s.as_bytes().to_vec()))
            .bind(d.captured_at.unix_micros())
            .bind(i32::from(d.importance.mark()))
            .bind(d.media_type.as_str())
            .bind(u.state.as_str())
            .bind(sql_size(u.committed_size))
            .bind(&u.staging)
            .bind(u.failure.as_deref())
            .bind(u.evidence_id.map(|e| e.to_string()))
            .bind(u.created_at.unix_micros())
            .bind(u.updated_at.unix_micros())
            .bind(u.expires_at.unix_micros())
            .bind(d.officer.as_ref().map(BadgeNo::as_str))
            .bind(d.clock_offset_ms)
            .execute(p)
            .await
            .map(|_| ()))
        .map_err(StoreError::db("inserting an upload"))?;
        Ok(())
    }

    pub async fn get_upload(&self, id: UploadId) -> Result<Option<Upload>, StoreError> {
        let row: Option<UploadRow> = on_pool!(self, p => sqlx::query_as(SELECT_UPLOAD)
            .bind(id.to_string())
            .fetch_optional(p)
            .await)
        .map_err(StoreError::db("reading an upload"))?;
        row.map(UploadRow::into_domain).transpose()
    }

    /// The open upload of the same bytes from the same recorder, if one exists: a station that lost its
    /// upload id (or restarted) resumes instead of starting over.
    pub async fn find_resumable_upload(
        &self,
        sha256: &Sha256,
        size: u64,
        device: &DeviceId,
    ) -> Result<Option<Upload>, StoreError> {
        let sql = concat!(
            "SELECT ",
            upload_columns!(),
            " FROM uploads WHERE sha256 = $1 AND size = $2 AND device_id = $3 \
              AND state IN ('open', 'committing') ORDER BY committed_size DESC, created_at LIMIT 1"
        );
        let row: Option<UploadRow> = on_pool!(self, p => sqlx::query_as(sql)
            .bind(sha256.as_bytes().to_vec())
            .bind(sql_size(size))
            .bind(device.as_str())
            .fetch_optional(p)
            .await)
        .map_err(StoreError::db("finding a resumable upload"))?;
        row.map(UploadRow::into_domain).transpose()
    }

    /// Records that more bytes are durable. Compare-and-set on the previous committed size, so two
    /// writers (on two replicas, say) can never both advance the same upload.
    pub async fn checkpoint_upload(
        &self,
        id: UploadId,
        previous_committed: u64,
        committed: u64,
        staging: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        let sql = "UPDATE uploads SET committed_size = $1, staging = $2, updated_at = $3, expires_at = $4 \
             WHERE id = $5 AND committed_size = $6 AND state = 'open'";
        let n = on_pool!(self, p => sqlx::query(sql)
            .bind(sql_size(committed))
            .bind(staging)
            .bind(now.unix_micros())
            .bind(expires_at.unix_micros())
            .bind(id.to_string())
            .bind(sql_size(previous_committed))
            .execute(p)
            .await
            .map(|r| r.rows_affected()))
        .map_err(StoreError::db("recording committed upload bytes"))?;
        if n != 1 {
            return Err(StoreError::Conflict(format!(
                "upload {id} changed while being written (expected {previous_committed} committed bytes in state open)"
            )));
        }
        Ok(())
    }

    /// Moves an upload from `open` (or an interrupted `committing`) to `committing`, saving the staging
    /// state. Returns false when the upload is in neither state.
    pub async fn begin_commit(
        &self,
        id: UploadId,
        staging: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE uploads SET state = 'committing', staging = $1, updated_at = $2 \
             WHERE id = $3 AND state IN ('open', 'committing')";
        let n = on_pool!(self, p => sqlx::query(sql)
            .bind(staging)
            .bind(now.unix_micros())
            .bind(id.to_string())
            .execute(p)
            .await
            .map(|r| r.rows_affected()))
        .map_err(StoreError::db("starting an upload commit"))?;
        Ok(n == 1)
    }

    /// Marks an upload failed with the reason (e.g. which hash differed).
    pub async fn fail_upload(
        &self,
        id: UploadId,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let sql = "UPDATE uploads SET state = 'failed', failure = $1, updated_at = $2 \
             WHERE id = $3 AND state IN ('open', 'committing')";
        on_pool!(self, p => sqlx::query(sql)
            .bind(reason)
            .bind(now.unix_micros())
            .bind(id.to_string())
            .execute(p)
            .await
            .map(|_| ()))
        .map_err(StoreError::db("marking an upload failed"))?;
        Ok(())
    }

    /// Marks an idle upload expired, unless it was touched since `now` passed its expiry. Returns whether
    /// this call expired it (and so whether its staged bytes are now the caller's to remove).
    pub async fn expire_upload(&self, id: UploadId, now: Timestamp) -> Result<bool, StoreError> {
        let sql = "UPDATE uploads SET state = 'expired', updated_at = $1 \
             WHERE id = $2 AND state IN ('open', 'committing') AND expires_at <= $1";
        let n = on_pool!(self, p => sqlx::query(sql)
            .bind(now.unix_micros())
            .bind(id.to_string())
            .execute(p)
            .await
            .map(|r| r.rows_affected()))
        .map_err(StoreError::db("expiring an upload"))?;
        Ok(n == 1)
    }

    /// Uploads idle past their expiry that still hold staged bytes, oldest first.
    pub async fn expired_uploads(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<Upload>, StoreError> {
        let sql = concat!(
            "SELECT ",
            upload_columns!(),
            " FROM uploads WHERE state IN ('open', 'committing') AND expires_at <= $1 ORDER BY expires_at LIMIT $2"
        );
        let rows: Vec<UploadRow> = on_pool!(self, p => sqlx::query_as(sql)
            .bind(now.unix_micros())
            .bind(i64::from(limit))
            .fetch_all(p)
            .await)
        .map_err(StoreError::db("listing expired uploads"))?;
        rows.into_iter().map(UploadRow::into_domain).collect()
    }

    /// Makes verified bytes evidence, atomically with marking the upload committed. When the same bytes are
    /// already evidence, the existing row wins and is returned as a duplicate: the evidence table holds each
    /// SHA-256 once.
    pub async fn commit_upload(
        &self,
        upload: UploadId,
        candidate: &Evidence,
        now: Timestamp,
    ) -> Result<CommitOutcome, StoreError> {
        let insert = concat!(
            "INSERT INTO evidence (",
            evidence_insert_columns!(),
            ", upload_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
             ON CONFLICT (sha256) DO NOTHING"
        );
        let mark = "UPDATE uploads SET state = 'committed', evidence_id = $1, updated_at = $2 WHERE id = $3";
        let c = candidate;
        // The insert comes first so that SQLite takes its write lock at the start of the transaction and
        // never has to upgrade a read lock (which fails at once instead of waiting).
        let row: EvidenceRow = on_pool!(self, p => async {
            let mut tx = p.begin().await?;
            sqlx::query(insert)
                .bind(c.id.to_string())
                .bind(c.sha256.as_bytes().to_vec())
                .bind(c.sm3.map(|s| s.as_bytes().to_vec()))
                .bind(sql_size(c.size))
                .bind(c.device_id.as_str())
                .bind(c.station_id.as_str())
                .bind(c.file_name.as_str())
                .bind(c.media_type.as_str())
                .bind(i32::from(c.importance.mark()))
                .bind(c.captured_at.unix_micros())
                .bind(c.ingested_at.unix_micros())
                .bind(c.attribution.reported.as_ref().map(BadgeNo::as_str))
                .bind(c.attribution.clock_offset_ms)
                .bind(upload.to_string())
                .execute(&mut *tx)
                .await?;
            sqlx::query(attribute_sql!("e.id = $1"))
                .bind(c.id.to_string())
                .execute(&mut *tx)
                .await?;
            let row: EvidenceRow = sqlx::query_as(SELECT_EVIDENCE_BY_SHA256)
                .bind(c.sha256.as_bytes().to_vec())
                .fetch_one(&mut *tx)
                .await?;
            if row.id == c.id.to_string() {
                // New evidence: its ingest event is queued in the same transaction, so no evidence
                // row can exist without its ledger entry following.
                crate::ledger::bind_pending!(crate::ledger::PendingEvent {
                    kind: custody_core::ledger::EventKind::Ingest,
                    evidence_id: c.id,
                    actor: format!("station:{}", c.station_id),
                    // The officer holding the recorder at capture time, as attributed just above.
                    officer: row.officer_badge.clone(),
                    detail: None,
                    server_time: c.ingested_at,
                })
                .execute(&mut *tx)
                .await?;
                // So is its media probe: every committed file is probed, even across a crash.
                sqlx::query(
                    "INSERT INTO media_jobs (evidence_id, kind, state, attempts, run_after, created_at, updated_at) \
                     VALUES ($1, 'probe', 'queued', 0, $2, $2, $2) ON CONFLICT (evidence_id, kind) DO NOTHING",
                )
                .bind(c.id.to_string())
                .bind(now.unix_micros())
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(mark)
                .bind(&row.id)
                .bind(now.unix_micros())
                .bind(upload.to_string())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(row)
        }.await)
        .map_err(StoreError::db("committing evidence"))?;
        let evidence = row.into_domain()?;
        let duplicate = evidence.id != candidate.id;
        Ok(CommitOutcome {
            evidence,
            duplicate,
        })
    }

    /// Whether `scope` may see evidence `id` (the same condition as listings use).
    pub async fn evidence_in_scope(
        &self,
        id: EvidenceId,
        scope: &EvidenceScope,
    ) -> Result<bool, StoreError> {
        if scope.all {
            return Ok(true);
        }
        let sql = concat!(
            "SELECT COUNT(*) FROM evidence WHERE id = $1 AND ",
            in_scope_sql!("$2", "$3", "$4")
        );
        let n: i64 = on_pool!(self, p => sqlx::query_scalar(sql)
            .bind(id.to_string())
            .bind(scope.all)
            .bind(scope.officer.as_ref().map(BadgeNo::as_str))
            .bind(scope.handler.as_ref().map(|u| u.as_str()))
            .fetch_one(p)
            .await)
        .map_err(StoreError::db("checking access to evidence"))?;
        Ok(n > 0)
    }

    pub async fn get_evidence(&self, id: EvidenceId) -> Result<Option<Evidence>, StoreError> {
        let row: Option<EvidenceRow> = on_pool!(self, p => sqlx::query_as(SELECT_EVIDENCE_BY_ID)
            .bind(id.to_string())
            .fetch_optional(p)
            .await)
        .map_err(StoreError::db("reading evidence"))?;
        row.map(EvidenceRow::into_domain).transpose()
    }

    pub async fn get_evidence_by_sha256(
        &self,
        sha256: &Sha256,
    ) -> Result<Option<Evidence>, StoreError> {
        let row: Option<EvidenceRow> =
            on_pool!(self, p => sqlx::query_as(SELECT_EVIDENCE_BY_SHA256)
            .bind(sha256.as_bytes().to_vec())
            .fetch_optional(p)
            .await)
            .map_err(StoreError::db("reading evidence by sha256"))?;
        row.map(EvidenceRow::into_domain).transpose()
    }

    /// Evidence matching the filter, in capture order, `limit` at a time (keyset pagination: stable while
    /// new evidence arrives).
    pub async fn list_evidence(
        &self,
        filter: &EvidenceFilter,
        scope: &EvidenceScope,
        after: Option<PageCursor>,
        limit: u32,
    ) -> Result<EvidencePage, StoreError> {
        let sql = concat!(
            "SELECT ",
            evidence_columns!(),
            " FROM evidence \
             WHERE (CAST($1 AS TEXT) IS NULL OR device_id = $1) \
               AND (CAST($2 AS TEXT) IS NULL OR station_id = $2) \
               AND (CAST($3 AS BIGINT) IS NULL OR captured_at >= $3) \
               AND (CAST($4 AS BIGINT) IS NULL OR captured_at < $4) \
               AND (CAST($5 AS BIGINT) IS NULL OR (captured_at, id) > ($5, $6)) \
               AND (CAST($8 AS TEXT) IS NULL OR officer_badge = $8) AND ",
            in_scope_sql!("$9", "$10", "$11"),
            " ORDER BY captured_at, id LIMIT $7"
        );
        let limit = limit.max(1);
        let rows: Vec<EvidenceRow> = on_pool!(self, p => sqlx::query_as(sql)
            .bind(filter.device_id.as_ref().map(|d| d.as_str()))
            .bind(filter.station_id.as_ref().map(|s| s.as_str()))
            .bind(filter.captured_from.map(Timestamp::unix_micros))
            .bind(filter.captured_to.map(Timestamp::unix_micros))
            .bind(after.map(|c| c.captured_at.unix_micros()))
            .bind(after.map(|c| c.id.to_string()).unwrap_or_default())
            .bind(i64::from(limit) + 1)
            .bind(filter.officer.as_ref().map(BadgeNo::as_str))
            .bind(scope.all)
            .bind(scope.officer.as_ref().map(BadgeNo::as_str))
            .bind(scope.handler.as_ref().map(|u| u.as_str()))
            .fetch_all(p)
            .await)
        .map_err(StoreError::db("listing evidence"))?;
        let mut items = rows
            .into_iter()
            .map(EvidenceRow::into_domain)
            .collect::<Result<Vec<_>, _>>()?;
        let next = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|e| PageCursor {
                captured_at: e.captured_at,
                id: e.id,
            })
        } else {
            None
        };
        Ok(EvidencePage { items, next })
    }
}
