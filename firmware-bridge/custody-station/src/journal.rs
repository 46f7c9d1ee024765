//! The station's durable journal: one row per version of a file found on a recorder, moving
//! found → hashed → uploading (offset) → receipted → freed. It is a SQLite database in WAL mode with a
//! full fsync on every commit, so a power cut (or SIGKILL) at any moment leaves each row in the last
//! state it reached, and the agent resumes from there.
//!
//! The format is versioned twice over: sqlx migrations (embedded; a journal written by an older agent is
//! brought forward on open) and a `format` value in `journal_meta`, so an older agent refuses a journal
//! from a newer one instead of misreading it. The database itself refuses to mark a file freed without a
//! receipt (a trigger), whatever the code above it does.

use custody_core::{DeviceId, Importance, MediaType, Sha256, Sm3, Timestamp};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::path::Path;
use std::time::Duration;

/// The journal format this build writes and reads.
pub const JOURNAL_FORMAT: u32 = 1;

/// Why the journal could not be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("journal: migrating to this build's format: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(
        "journal {path} has format {found}; this build reads format {JOURNAL_FORMAT}: \
         run the newer custody-station that wrote it"
    )]
    NewerFormat { path: String, found: String },
    #[error("journal: {context}: {source}")]
    Db {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("journal row {id} is unreadable: {reason}")]
    Corrupt { id: i64, reason: String },
}

fn db(context: &'static str) -> impl FnOnce(sqlx::Error) -> JournalError {
    move |source| JournalError::Db { context, source }
}

/// Where a file is in its journey.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileState {
    /// Seen on the recorder; not hashed yet.
    Found,
    /// SHA-256 and SM3 known.
    Hashed,
    /// An upload is open on the server; `uploaded` bytes are durable there.
    Uploading,
    /// The server's receipt was verified against the pinned key: the file may be freed.
    Receipted,
    /// Freed on the recorder per policy (deleted, moved or kept).
    Freed,
    /// The file changed before it was freed; its new content has a row of its own.
    Superseded,
    /// The file disappeared from a docked recorder before its receipt.
    Vanished,
}

impl FileState {
    pub const ALL: [FileState; 7] = [
        Self::Found,
        Self::Hashed,
        Self::Uploading,
        Self::Receipted,
        Self::Freed,
        Self::Superseded,
        Self::Vanished,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Found => "found",
            Self::Hashed => "hashed",
            Self::Uploading => "uploading",
            Self::Receipted => "receipted",
            Self::Freed => "freed",
            Self::Superseded => "superseded",
            Self::Vanished => "vanished",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Still has work to do.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            Self::Found | Self::Hashed | Self::Uploading | Self::Receipted
        )
    }
}

impl std::fmt::Display for FileState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One docking of a recorder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockRow {
    pub id: i64,
    pub slot: String,
    pub device_id: DeviceId,
    pub badge: String,
    pub officer_name: String,
    pub unit_no: String,
    pub unit_name: String,
    pub clock_offset_ms: Option<i64>,
    pub docked_at: Timestamp,
    pub undocked_at: Option<Timestamp>,
}

/// A file version as first seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFile {
    pub device_id: DeviceId,
    pub rel_path: String,
    pub size: i64,
    pub mtime_ns: i64,
    pub file_name: String,
    pub media_type: MediaType,
    pub importance: Importance,
    pub captured_at: Timestamp,
    pub dock_id: i64,
}

/// A journal row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRow {
    pub id: i64,
    pub device_id: DeviceId,
    pub rel_path: String,
    pub size: i64,
    pub mtime_ns: i64,
    pub state: FileState,
    pub file_name: String,
    pub media_type: MediaType,
    pub importance: Importance,
    pub captured_at: Timestamp,
    pub dock_id: i64,
    pub sha256: Option<Sha256>,
    pub sm3: Option<Sm3>,
    pub upload_id: Option<String>,
    pub uploaded: u64,
    pub evidence_id: Option<String>,
    pub receipt: Option<String>,
    pub duplicate: Option<bool>,
    pub freed_how: Option<String>,
    pub freed_at: Option<Timestamp>,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub error_kind: Option<String>,
    pub retry_at: Timestamp,
    pub found_at: Timestamp,
    pub updated_at: Timestamp,
}

impl FileRow {
    /// The file's size as found (0 when its metadata was unreadable).
    pub fn bytes(&self) -> u64 {
        u64::try_from(self.size).unwrap_or(0)
    }
}

#[derive(sqlx::FromRow)]
struct RawFile {
    id: i64,
    device_id: String,
    rel_path: String,
    size: i64,
    mtime_ns: i64,
    state: String,
    file_name: String,
    media_type: String,
    importance: i64,
    captured_at: i64,
    dock_id: i64,
    sha256: Option<Vec<u8>>,
    sm3: Option<Vec<u8>>,
    upload_id: Option<String>,
    uploaded: i64,
    evidence_id: Option<String>,
    receipt: Option<String>,
    duplicate: Option<bool>,
    freed_how: Option<String>,
    freed_at: Option<i64>,
    attempts: i64,
    last_error: Option<String>,
    error_kind: Option<String>,
    retry_at: i64,
    found_at: i64,
    updated_at: i64,
}

macro_rules! file_columns {
    () => {
        "id, device_id, rel_path, size, mtime_ns, state, file_name, media_type, importance, captured_at, \
         dock_id, sha256, sm3, upload_id, uploaded, evidence_id, receipt, duplicate, freed_how, freed_at, \
         attempts, last_error, error_kind, retry_at, found_at, updated_at"
    };
}

impl RawFile {
    fn into_row(self) -> Result<FileRow, JournalError> {
        let id = self.id;
        let bad = |reason: String| JournalError::Corrupt { id, reason };
        Ok(FileRow {
            id,
            device_id: DeviceId::parse(self.device_id).map_err(|e| bad(e.to_string()))?,
            rel_path: self.rel_path,
            size: self.size,
            mtime_ns: self.mtime_ns,
            state: FileState::parse(&self.state)
                .ok_or_else(|| bad(format!("unknown state {:?}", self.state)))?,
            file_name: self.file_name,
            media_type: MediaType::parse(&self.media_type).map_err(bad)?,
            importance: Importance::from_mark(self.importance).map_err(bad)?,
            captured_at: Timestamp::from_unix_micros(self.captured_at),
            dock_id: self.dock_id,
            sha256: self
                .sha256
                .as_deref()
                .map(Sha256::from_slice)
                .transpose()
                .map_err(|e| bad(e.to_string()))?,
            sm3: self
                .sm3
                .as_deref()
                .map(Sm3::from_slice)
                .transpose()
                .map_err(|e| bad(e.to_string()))?,
            upload_id: self.upload_id,
            uploaded: u64::try_from(self.uploaded).unwrap_or(0),
            evidence_id: self.evidence_id,
            receipt: self.receipt,
            duplicate: self.duplicate,
            freed_how: self.freed_how,
            freed_at: self.freed_at.map(Timestamp::from_unix_micros),
            attempts: u32::try_from(self.attempts).unwrap_or(u32::MAX),
            last_error: self.last_error,
            error_kind: self.error_kind,
            retry_at: Timestamp::from_unix_micros(self.retry_at),
            found_at: Timestamp::from_unix_micros(self.found_at),
            updated_at: Timestamp::from_unix_micros(self.updated_at),
        })
    }
}

#[derive(sqlx::FromRow)]
struct RawDock {
    id: i64,
    slot: String,
    device_id: String,
    badge: String,
    officer_name: String,
    unit_no: String,
    unit_name: String,
    clock_offset_ms: Option<i64>,
    docked_at: i64,
    undocked_at: Option<i64>,
}

impl RawDock {
    fn into_row(self) -> Result<DockRow, JournalError> {
        Ok(DockRow {
            id: self.id,
            slot: self.slot,
            device_id: DeviceId::parse(self.device_id).map_err(|e| JournalError::Corrupt {
                id: self.id,
                reason: format!("dock: {e}"),
            })?,
            badge: self.badge,
            officer_name: self.officer_name,
            unit_no: self.unit_no,
            unit_name: self.unit_name,
            clock_offset_ms: self.clock_offset_ms,
            docked_at: Timestamp::from_unix_micros(self.docked_at),
            undocked_at: self.undocked_at.map(Timestamp::from_unix_micros),
        })
    }
}

/// The journal. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Journal {
    pool: SqlitePool,
}

/// Counts of one recorder's files, for status reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceTally {
    pub files_pending: u64,
    pub bytes_pending: u64,
    pub files_done: u64,
    pub bytes_done: u64,
    /// Bytes of pending files the server already holds.
    pub bytes_uploaded: u64,
}

impl Journal {
    /// Opens (creating when missing) the journal at `path` and brings it to this build's format.
    pub async fn open(path: &Path) -> Result<Self, JournalError> {
        let shown = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| JournalError::Open {
                path: shown.clone(),
                source: sqlx::Error::Io(e),
            })?;
        }
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(|source| JournalError::Open {
                path: shown.clone(),
                source,
            })?;
        // A journal of a newer format may have migrations this build does not know; say so plainly.
        let format: Option<(String,)> =
            sqlx::query_as("SELECT value FROM journal_meta WHERE key = 'format'")
                .fetch_optional(&pool)
                .await
                .unwrap_or(None);
        if let Some((f,)) = format
            && f.parse::<u32>().map_or(true, |v| v > JOURNAL_FORMAT)
        {
            return Err(JournalError::NewerFormat {
                path: shown,
                found: f,
            });
        }
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Records that a recorder was docked in `slot`.
    pub async fn open_dock(&self, d: &DockRow) -> Result<i64, JournalError> {
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO docks (slot, device_id, badge, officer_name, unit_no, unit_name, clock_offset_ms, docked_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(&d.slot)
        .bind(d.device_id.as_str())
        .bind(&d.badge)
        .bind(&d.officer_name)
        .bind(&d.unit_no)
        .bind(&d.unit_name)
        .bind(d.clock_offset_ms)
        .bind(d.docked_at.unix_micros())
        .fetch_one(&self.pool)
        .await
        .map_err(db("recording a dock"))?;
        Ok(id)
    }

    /// Records that the recorder of dock `id` left its slot.
    pub async fn close_dock(&self, id: i64, at: Timestamp) -> Result<(), JournalError> {
        sqlx::query("UPDATE docks SET undocked_at = $1 WHERE id = $2 AND undocked_at IS NULL")
            .bind(at.unix_micros())
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db("recording an undock"))?;
        Ok(())
    }

    /// Closes every dock left open by a previous run: the agent finds docked recorders afresh.
    pub async fn close_stale_docks(&self, at: Timestamp) -> Result<u64, JournalError> {
        let r = sqlx::query("UPDATE docks SET undocked_at = $1 WHERE undocked_at IS NULL")
            .bind(at.unix_micros())
            .execute(&self.pool)
            .await
            .map_err(db("closing stale docks"))?;
        Ok(r.rows_affected())
    }

    pub async fn dock(&self, id: i64) -> Result<Option<DockRow>, JournalError> {
        let raw: Option<RawDock> = sqlx::query_as(
            "SELECT id, slot, device_id, badge, officer_name, unit_no, unit_name, clock_offset_ms, \
             docked_at, undocked_at FROM docks WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("reading a dock"))?;
        raw.map(RawDock::into_row).transpose()
    }

    /// Records a file version unless it is already known, and supersedes the open rows of older
    /// versions of the same path (the file changed on the recorder). Returns the new row's id, or `None`
    /// when this version was known.
    pub async fn record_found(
        &self,
        f: &NewFile,
        now: Timestamp,
        busy: &std::collections::HashSet<i64>,
    ) -> Result<Option<i64>, JournalError> {
        let mut tx = self.pool.begin().await.map_err(db("recording a file"))?;
        let inserted: Option<(i64,)> = sqlx::query_as(
            "INSERT INTO files (device_id, rel_path, size, mtime_ns, state, file_name, media_type, importance, \
             captured_at, dock_id, found_at, updated_at) \
             VALUES ($1, $2, $3, $4, 'found', $5, $6, $7, $8, $9, $10, $10) \
             ON CONFLICT (device_id, rel_path, size, mtime_ns) DO NOTHING RETURNING id",
        )
        .bind(f.device_id.as_str())
        .bind(&f.rel_path)
        .bind(f.size)
        .bind(f.mtime_ns)
        .bind(&f.file_name)
        .bind(f.media_type.as_str())
        .bind(i64::from(f.importance.mark()))
        .bind(f.captured_at.unix_micros())
        .bind(f.dock_id)
        .bind(now.unix_micros())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db("recording a file"))?;
        let Some((id,)) = inserted else {
            return Ok(None);
        };
        let older: Vec<(i64,)> = sqlx::query_as(
            "SELECT id FROM files WHERE device_id = $1 AND rel_path = $2 AND id <> $3 \
             AND state IN ('found', 'hashed', 'uploading', 'receipted')",
        )
        .bind(f.device_id.as_str())
        .bind(&f.rel_path)
        .bind(id)
        .fetch_all(&mut *tx)
        .await
        .map_err(db("finding older versions of a file"))?;
        for (old,) in older {
            if busy.contains(&old) {
                // Its job sees the change itself and supersedes it.
                continue;
            }
            sqlx::query(
                "UPDATE files SET state = 'superseded', last_error = $1, error_kind = 'changed', updated_at = $2 \
                 WHERE id = $3",
            )
            .bind(format!(
                "the file changed on the recorder (now {} bytes); the new content is row {id}",
                f.size
            ))
            .bind(now.unix_micros())
            .bind(old)
            .execute(&mut *tx)
            .await
            .map_err(db("superseding an older version of a file"))?;
        }
        tx.commit().await.map_err(db("recording a file"))?;
        Ok(Some(id))
    }

    pub async fn file(&self, id: i64) -> Result<Option<FileRow>, JournalError> {
        let raw: Option<RawFile> = sqlx::query_as(concat!(
            "SELECT ",
            file_columns!(),
            " FROM files WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("reading a file row"))?;
        raw.map(RawFile::into_row).transpose()
    }

    /// Every row of a recorder, oldest first.
    pub async fn files_of(&self, device: &DeviceId) -> Result<Vec<FileRow>, JournalError> {
        let raws: Vec<RawFile> = sqlx::query_as(concat!(
            "SELECT ",
            file_columns!(),
            " FROM files WHERE device_id = $1 ORDER BY id"
        ))
        .bind(device.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db("reading a recorder's files"))?;
        raws.into_iter().map(RawFile::into_row).collect()
    }

    /// Every row, oldest first (for `custody-station status` and tests).
    pub async fn all_files(&self) -> Result<Vec<FileRow>, JournalError> {
        let raws: Vec<RawFile> = sqlx::query_as(concat!(
            "SELECT ",
            file_columns!(),
            " FROM files ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db("reading the journal"))?;
        raws.into_iter().map(RawFile::into_row).collect()
    }

    /// Open rows of `device` due for work at `now`: important files first, then oldest capture first.
    pub async fn due(
        &self,
        device: &DeviceId,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<FileRow>, JournalError> {
        let raws: Vec<RawFile> = sqlx::query_as(concat!(
            "SELECT ",
            file_columns!(),
            " FROM files WHERE device_id = $1 AND state IN ('found', 'hashed', 'uploading', 'receipted') \
              AND retry_at <= $2 ORDER BY importance DESC, captured_at, id LIMIT $3"
        ))
        .bind(device.as_str())
        .bind(now.unix_micros())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db("finding work"))?;
        raws.into_iter().map(RawFile::into_row).collect()
    }

    /// What is pending and done of a recorder (superseded and vanished rows count as neither).
    pub async fn tally(&self, device: &DeviceId) -> Result<DeviceTally, JournalError> {
        let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
            "SELECT state, COUNT(*), COALESCE(SUM(MAX(size, 0)), 0), COALESCE(SUM(uploaded), 0) \
             FROM files WHERE device_id = $1 GROUP BY state",
        )
        .bind(device.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db("counting a recorder's files"))?;
        let mut t = DeviceTally::default();
        for (state, n, bytes, uploaded) in rows {
            let (n, bytes, uploaded) = (n as u64, bytes as u64, uploaded as u64);
            match FileState::parse(&state) {
                Some(FileState::Freed) => {
                    t.files_done += n;
                    t.bytes_done += bytes;
                }
                Some(s) if s.is_open() => {
                    t.files_pending += n;
                    t.bytes_pending += bytes;
                    t.bytes_uploaded += if s == FileState::Receipted {
                        bytes
                    } else {
                        uploaded
                    };
                }
                _ => {}
            }
        }
        Ok(t)
    }

    /// The newest error among a recorder's open rows.
    pub async fn last_error(&self, device: &DeviceId) -> Result<Option<String>, JournalError> {
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT file_name, last_error FROM files WHERE device_id = $1 AND last_error IS NOT NULL \
             AND state IN ('found', 'hashed', 'uploading', 'receipted') ORDER BY updated_at DESC LIMIT 1",
        )
        .bind(device.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db("reading a recorder's errors"))?;
        Ok(row.map(|(f, e)| format!("{f}: {e}")))
    }

    /// Progress clears any error noted on the row.
    pub async fn set_hashed(
        &self,
        id: i64,
        sha256: &Sha256,
        sm3: Option<&Sm3>,
        now: Timestamp,
    ) -> Result<(), JournalError> {
        let (h, s) = (
            sha256.as_bytes().to_vec(),
            sm3.map(|s| s.as_bytes().to_vec()),
        );
        sqlx::query("UPDATE files SET state = 'hashed', sha256 = $1, sm3 = $2, last_error = NULL, error_kind = NULL, \
             retry_at = 0, updated_at = $3 WHERE id = $4").bind(h).bind(s).bind(now.unix_micros()).bind(id)
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(db("recording a hash"))
    }

    pub async fn set_uploading(
        &self,
        id: i64,
        upload_id: &str,
        uploaded: u64,
        now: Timestamp,
    ) -> Result<(), JournalError> {
        let upload_id = upload_id.to_string();
        sqlx::query("UPDATE files SET state = 'uploading', upload_id = $1, uploaded = $2, last_error = NULL, \
             error_kind = NULL, retry_at = 0, updated_at = $3 WHERE id = $4").bind(upload_id)
                    .bind(i64::try_from(uploaded).unwrap_or(i64::MAX))
                    .bind(now.unix_micros())
                    .bind(id)
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(db("recording upload progress"))
    }

    /// Forgets the server-side upload (it expired or failed there); the file is uploaded afresh.
    pub async fn forget_upload(&self, id: i64, now: Timestamp) -> Result<(), JournalError> {
        sqlx::query("UPDATE files SET state = 'hashed', upload_id = NULL, uploaded = 0, updated_at = $1 WHERE id = $2 \
             AND state IN ('hashed', 'uploading')").bind(now.unix_micros()).bind(id)
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(db("forgetting an upload"))
    }

    /// Records a verified receipt. Only after this may the file be freed.
    pub async fn set_receipted(
        &self,
        id: i64,
        evidence_id: &str,
        receipt_json: &str,
        duplicate: bool,
        now: Timestamp,
    ) -> Result<(), JournalError> {
        let (e, r) = (evidence_id.to_string(), receipt_json.to_string());
        sqlx::query("UPDATE files SET state = 'receipted', evidence_id = $1, receipt = $2, duplicate = $3, \
             uploaded = MAX(size, 0), last_error = NULL, error_kind = NULL, retry_at = 0, updated_at = $4 \
             WHERE id = $5").bind(e)
                    .bind(r)
                    .bind(duplicate)
                    .bind(now.unix_micros())
                    .bind(id)
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(db("recording a receipt"))
    }

    pub async fn set_freed(&self, id: i64, how: &str, now: Timestamp) -> Result<(), JournalError> {
        let how = how.to_string();
        sqlx::query(
            "UPDATE files SET state = 'freed', freed_how = $1, freed_at = $2, last_error = NULL, \
             error_kind = NULL, retry_at = 0, updated_at = $2 WHERE id = $3",
        )
        .bind(how)
        .bind(now.unix_micros())
        .bind(id)
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(db("recording a freed file"))
    }

    /// Ends a row that can make no more progress: `Superseded` or `Vanished`, with why.
    pub async fn end(
        &self,
        id: i64,
        state: FileState,
        why: &str,
        now: Timestamp,
    ) -> Result<(), JournalError> {
        let (state, why) = (state.as_str(), why.to_string());
        sqlx::query("UPDATE files SET state = $1, last_error = $2, error_kind = $1, updated_at = $3 WHERE id = $4").bind(state).bind(why).bind(now.unix_micros()).bind(id)
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(db("ending a file row"))
    }

    /// Starts a file over from `found` (its hashes and upload forgotten), e.g. after the server found the
    /// bytes it received differ from the declared hash.
    pub async fn restart(
        &self,
        id: i64,
        kind: &str,
        why: &str,
        now: Timestamp,
    ) -> Result<(), JournalError> {
        let (kind, why) = (kind.to_string(), why.to_string());
        sqlx::query("UPDATE files SET state = 'found', sha256 = NULL, sm3 = NULL, upload_id = NULL, uploaded = 0, \
             attempts = attempts + 1, last_error = $1, error_kind = $2, updated_at = $3 WHERE id = $4").bind(why).bind(kind).bind(now.unix_micros()).bind(id)
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(db("restarting a file"))
    }

    /// Notes an error beside the row's state and when to try again.
    pub async fn set_error(
        &self,
        id: i64,
        kind: &str,
        message: &str,
        retry_at: Timestamp,
        now: Timestamp,
    ) -> Result<(), JournalError> {
        let (kind, message) = (kind.to_string(), message.to_string());
        sqlx::query("UPDATE files SET attempts = attempts + 1, last_error = $1, error_kind = $2, retry_at = $3, \
             updated_at = $4 WHERE id = $5").bind(message)
                    .bind(kind)
                    .bind(retry_at.unix_micros())
                    .bind(now.unix_micros())
                    .bind(id)
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(db("recording an error"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_file(dock_id: i64, size: i64, mtime: i64) -> NewFile {
        NewFile {
            device_id: DeviceId::parse("ZFY1").unwrap(),
            rel_path: "DCIM/VIDEO/ZFY1_20261122083000_0001.MP4".into(),
            size,
            mtime_ns: mtime,
            file_name: "ZFY1_20261122083000_0001.MP4".into(),
            media_type: MediaType::Video,
            importance: Importance::Normal,
            captured_at: Timestamp::from_unix_micros(1),
            dock_id,
        }
    }

    async fn journal() -> (tempfile::TempDir, Journal, i64) {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j/journal.db"))
            .await
            .unwrap();
        let dock = j
            .open_dock(&DockRow {
                id: 0,
                slot: "01".into(),
                device_id: DeviceId::parse("ZFY1").unwrap(),
                badge: "1".into(),
                officer_name: "x".into(),
                unit_no: String::new(),
                unit_name: String::new(),
                clock_offset_ms: Some(-5),
                docked_at: Timestamp::from_unix_micros(1),
                undocked_at: None,
            })
            .await
            .unwrap();
        (dir, j, dock)
    }

    #[tokio::test]
    async fn a_file_version_is_recorded_once_and_a_changed_file_supersedes_the_old_row() {
        let (_d, j, dock) = journal().await;
        let now = Timestamp::from_unix_micros(10);
        let first = j
            .record_found(&new_file(dock, 100, 1), now, &Default::default())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            j.record_found(&new_file(dock, 100, 1), now, &Default::default())
                .await
                .unwrap(),
            None
        );
        let second = j
            .record_found(&new_file(dock, 120, 2), now, &Default::default())
            .await
            .unwrap()
            .unwrap();
        let old = j.file(first).await.unwrap().unwrap();
        assert_eq!(old.state, FileState::Superseded);
        assert!(old.last_error.unwrap().contains(&format!("row {second}")));
        assert_eq!(
            j.file(second).await.unwrap().unwrap().state,
            FileState::Found
        );
    }

    #[tokio::test]
    async fn the_database_refuses_to_free_a_file_without_a_receipt() {
        let (_d, j, dock) = journal().await;
        let now = Timestamp::from_unix_micros(10);
        let id = j
            .record_found(&new_file(dock, 100, 1), now, &Default::default())
            .await
            .unwrap()
            .unwrap();
        let e = j.set_freed(id, "deleted", now).await.unwrap_err();
        assert!(e.to_string().contains("freed only after"), "{e}");
        j.set_receipted(id, "e", "{}", false, now).await.unwrap();
        j.set_freed(id, "deleted", now).await.unwrap();
        let t = j.tally(&DeviceId::parse("ZFY1").unwrap()).await.unwrap();
        assert_eq!((t.files_done, t.bytes_done, t.files_pending), (1, 100, 0));
    }

    #[tokio::test]
    async fn a_journal_of_a_newer_format_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.db");
        let j = Journal::open(&path).await.unwrap();
        sqlx::query("UPDATE journal_meta SET value = '2' WHERE key = 'format'")
            .execute(&j.pool)
            .await
            .unwrap();
        j.close().await;
        let e = Journal::open(&path).await.unwrap_err();
        assert!(e.to_string().contains("has format 2"), "{e}");
    }

    #[tokio::test]
    async fn due_work_comes_important_first_then_oldest() {
        let (_d, j, dock) = journal().await;
        let now = Timestamp::from_unix_micros(10);
        let mut ids = Vec::new();
        for (i, imp, t) in [
            (0, Importance::Normal, 1),
            (1, Importance::Important, 5),
            (2, Importance::Normal, 0),
        ] {
            let mut f = new_file(dock, 10, i);
            f.rel_path = format!("f{i}.MP4");
            f.importance = imp;
            f.captured_at = Timestamp::from_unix_micros(t);
            ids.push(
                j.record_found(&f, now, &Default::default())
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        j.set_error(ids[2], "x", "later", Timestamp::from_unix_micros(99), now)
            .await
            .unwrap();
        let due = j
            .due(&DeviceId::parse("ZFY1").unwrap(), now, 10)
            .await
            .unwrap();
        let order: Vec<i64> = due.iter().map(|r| r.id).collect();
        assert_eq!(order, vec![ids[1], ids[0]]);
    }
}
