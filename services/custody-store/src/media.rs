//! Media rows: the probe result on each evidence row, the derived files made for viewing, and the durable
//! job queue the media worker runs.
//!
//! Jobs are claimed under a lease and every later write names the claim (worker and attempt), so a worker
//! that lost its lease (it stalled, another replica took the job over) cannot overwrite the newer result.

use crate::error::StoreError;
use crate::meta::{Metadata, Pool, corrupt, on_pool};
use custody_core::media::{DerivedKind, MediaJobKind, MediaState};
use custody_core::{EvidenceId, Sha256, Timestamp};

/// Inserts or replaces a derived-file row. A remade file replaces the row; the old object stays under its
/// own key until cleaned up (derived files are not evidence).
macro_rules! upsert_derived {
    ($conn:expr, $d:expr) => {{
        let d: &DerivedRecord = $d;
        sqlx::query(
            "INSERT INTO derived_media (evidence_id, kind, path, sha256, size, content_type, width, height, \
             detail, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (evidence_id, kind) DO UPDATE SET path = $3, sha256 = $4, size = $5, \
             content_type = $6, width = $7, height = $8, detail = $9, created_at = $10",
        )
        .bind(d.evidence_id.to_string())
        .bind(d.kind.as_str())
        .bind(&d.path)
        .bind(d.sha256.as_bytes().to_vec())
        .bind(i64::try_from(d.size).unwrap_or(i64::MAX))
        .bind(&d.content_type)
        .bind(d.width.and_then(|w| i32::try_from(w).ok()))
        .bind(d.height.and_then(|h| i32::try_from(h).ok()))
        .bind(d.detail.as_deref())
        .bind(d.created_at.unix_micros())
        .execute($conn)
        .await?;
    }};
}

/// A claimed job. `attempt` counts claims, this one included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaJob {
    pub evidence_id: EvidenceId,
    pub kind: MediaJobKind,
    pub attempt: u32,
    /// Who holds the claim (a name unique to the worker process).
    pub worker: String,
}

/// A file made from an evidence item for viewing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivedRecord {
    pub evidence_id: EvidenceId,
    pub kind: DerivedKind,
    /// Object-store key, under `derived/`.
    pub path: String,
    pub sha256: Sha256,
    pub size: u64,
    pub content_type: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Kind-specific facts as JSON.
    pub detail: Option<String>,
    pub created_at: Timestamp,
}

/// What a probe job found, to be stored on the evidence row.
#[derive(Debug, Clone)]
pub enum ProbeOutcome {
    Probed {
        /// `MediaInfo` as JSON.
        info: String,
        /// `Playback` as JSON.
        playback: String,
        duration_us: Option<i64>,
        created_at: Option<Timestamp>,
        /// Queue a proxy job.
        needs_proxy: bool,
        /// A poster or strip could not be made although the file probed (recorded, not fatal).
        warning: Option<String>,
    },
    /// The file cannot be read as media; `error` says why. Permanent.
    Failed { error: String },
}

/// The state of one job of an evidence item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStatus {
    pub kind: MediaJobKind,
    /// `queued`, `running`, `done` or `failed`.
    pub state: String,
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// Everything the media pipeline knows of one evidence item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceMedia {
    pub evidence_id: EvidenceId,
    pub state: MediaState,
    pub info: Option<String>,
    pub playback: Option<String>,
    pub error: Option<String>,
    pub duration_us: Option<i64>,
    pub created_at: Option<Timestamp>,
    pub probed_at: Option<Timestamp>,
    pub derived: Vec<DerivedRecord>,
    pub jobs: Vec<JobStatus>,
}

/// How many jobs are in each state, per kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobCounts {
    pub rows: Vec<(MediaJobKind, String, u64)>,
}

impl JobCounts {
    pub fn get(&self, kind: MediaJobKind, state: &str) -> u64 {
        self.rows
            .iter()
            .filter(|(k, s, _)| *k == kind && s == state)
            .map(|(_, _, n)| n)
            .sum()
    }
}

#[derive(sqlx::FromRow)]
struct ClaimRow {
    evidence_id: String,
    kind: String,
    attempts: i32,
}

#[derive(sqlx::FromRow)]
struct MediaRow {
    id: String,
    media_state: String,
    media_info: Option<String>,
    media_playback: Option<String>,
    media_error: Option<String>,
    media_duration_us: Option<i64>,
    media_created_at: Option<i64>,
    media_probed_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct DerivedRow {
    evidence_id: String,
    kind: String,
    path: String,
    sha256: Vec<u8>,
    size: i64,
    content_type: String,
    width: Option<i32>,
    height: Option<i32>,
    detail: Option<String>,
    created_at: i64,
}

#[derive(sqlx::FromRow)]
struct JobRow {
    evidence_id: String,
    kind: String,
    state: String,
    attempts: i32,
    last_error: Option<String>,
}

impl DerivedRow {
    fn into_domain(self) -> Result<DerivedRecord, StoreError> {
        let c = corrupt("derived_media", &self.evidence_id);
        Ok(DerivedRecord {
            evidence_id: EvidenceId::parse(&self.evidence_id).map_err(|e| c(e.to_string()))?,
            kind: DerivedKind::parse(&self.kind).map_err(&c)?,
            path: self.path,
            sha256: Sha256::from_slice(&self.sha256).map_err(|e| c(e.to_string()))?,
            size: u64::try_from(self.size).map_err(|e| c(e.to_string()))?,
            content_type: self.content_type,
            width: self.width.and_then(|w| u32::try_from(w).ok()),
            height: self.height.and_then(|h| u32::try_from(h).ok()),
            detail: self.detail,
            created_at: Timestamp::from_unix_micros(self.created_at),
        })
    }
}

impl JobRow {
    fn into_domain(self) -> Result<JobStatus, StoreError> {
        let c = corrupt("media_jobs", &self.evidence_id);
        Ok(JobStatus {
            kind: MediaJobKind::parse(&self.kind).map_err(c)?,
            state: self.state,
            attempts: u32::try_from(self.attempts).unwrap_or(0),
            last_error: self.last_error,
        })
    }
}

const DERIVED_COLUMNS: &str =
    "evidence_id, kind, path, sha256, size, content_type, width, height, detail, created_at";

/// Claimable: queued and due, or running under a lease that ran out (its worker died), with attempts
/// left. Probes go first: they are quick and what case handlers wait for.
const CLAIMABLE: &str = "((state = 'queued' AND run_after <= $3) OR (state = 'running' AND lease_until < $3)) \
     AND attempts < $4 ORDER BY CASE kind WHEN 'probe' THEN 0 ELSE 1 END, run_after LIMIT 1";

/// The claim a write must still hold.
const HELD: &str =
    "evidence_id = $1 AND kind = $2 AND state = 'running' AND worker = $3 AND attempts = $4";

/// Ends a held job: $5 state, $6 error, $7 now.
fn finish_sql() -> String {
    format!(
        "UPDATE media_jobs SET state = $5, last_error = $6, lease_until = NULL, updated_at = $7 WHERE {HELD}"
    )
}

fn micros(t: Timestamp) -> i64 {
    t.unix_micros()
}

impl Metadata {
    /// Claims the next due job for `worker` until `lease_until`, if any. Jobs whose lease ran out with no
    /// attempts left are first marked failed (their worker died on them every time).
    pub async fn claim_media_job(
        &self,
        worker: &str,
        now: Timestamp,
        lease_until: Timestamp,
        max_attempts: u32,
    ) -> Result<Option<MediaJob>, StoreError> {
        self.give_up_exhausted_media_jobs(now, max_attempts).await?;
        let max = i64::from(max_attempts);
        let set = "SET state = 'running', attempts = attempts + 1, worker = $1, lease_until = $2, updated_at = $3";
        let row: Option<ClaimRow> = match &self.pool {
            Pool::Sqlite(p) => {
                let sql = format!(
                    "UPDATE media_jobs {set} WHERE rowid = (SELECT rowid FROM media_jobs WHERE {CLAIMABLE}) \
                     RETURNING evidence_id, kind, attempts"
                );
                sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(worker)
                    .bind(micros(lease_until))
                    .bind(micros(now))
                    .bind(max)
                    .fetch_optional(p)
                    .await
            }
            Pool::Postgres(p) => {
                let sql = format!(
                    "UPDATE media_jobs j {set} FROM (SELECT evidence_id, kind FROM media_jobs WHERE {CLAIMABLE} \
                     FOR UPDATE SKIP LOCKED) c WHERE j.evidence_id = c.evidence_id AND j.kind = c.kind \
                     RETURNING j.evidence_id, j.kind, j.attempts"
                );
                sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(worker)
                    .bind(micros(lease_until))
                    .bind(micros(now))
                    .bind(max)
                    .fetch_optional(p)
                    .await
            }
        }
        .map_err(StoreError::db("claiming a media job"))?;
        row.map(|r| {
            let c = corrupt("media_jobs", &r.evidence_id);
            Ok(MediaJob {
                evidence_id: EvidenceId::parse(&r.evidence_id).map_err(|e| c(e.to_string()))?,
                kind: MediaJobKind::parse(&r.kind).map_err(&c)?,
                attempt: u32::try_from(r.attempts).map_err(|e| c(e.to_string()))?,
                worker: worker.to_string(),
            })
        })
        .transpose()
    }

    async fn give_up_exhausted_media_jobs(
        &self,
        now: Timestamp,
        max_attempts: u32,
    ) -> Result<(), StoreError> {
        let why = "its worker stopped (crashed or was killed) on every attempt; given up";
        let jobs = "UPDATE media_jobs SET state = 'failed', last_error = $1, updated_at = $2 \
             WHERE state = 'running' AND lease_until < $2 AND attempts >= $3";
        let evidence = "UPDATE evidence SET media_state = 'failed', media_error = $1 \
             WHERE media_state = 'pending' AND id IN (SELECT evidence_id FROM media_jobs \
             WHERE kind = 'probe' AND state = 'running' AND lease_until < $2 AND attempts >= $3)";
        on_pool!(self, p => async {
            let mut tx = p.begin().await?;
            let msg = format!("probing failed: {why}");
            sqlx::query(evidence).bind(&msg).bind(micros(now)).bind(i64::from(max_attempts)).execute(&mut *tx).await?;
            sqlx::query(jobs).bind(why).bind(micros(now)).bind(i64::from(max_attempts)).execute(&mut *tx).await?;
            tx.commit().await
        }.await)
        .map_err(StoreError::db("giving up media jobs"))
    }

    /// Extends a running job's lease. False when the claim is no longer held.
    pub async fn renew_media_job(
        &self,
        job: &MediaJob,
        lease_until: Timestamp,
    ) -> Result<bool, StoreError> {
        let sql = format!("UPDATE media_jobs SET lease_until = $5 WHERE {HELD}");
        let done = on_pool!(self, p => sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(job.evidence_id.to_string())
            .bind(job.kind.as_str())
            .bind(&job.worker)
            .bind(i64::from(job.attempt))
            .bind(micros(lease_until))
            .execute(p)
            .await
            .map(|r| r.rows_affected()))
        .map_err(StoreError::db("renewing a media job lease"))?;
        Ok(done == 1)
    }

    /// Stores a probe job's result, its derived files and, when needed, the proxy job, in one
    /// transaction, and marks the job done. False (and nothing written) when the claim is no longer held.
    pub async fn finish_probe_job(
        &self,
        job: &MediaJob,
        outcome: &ProbeOutcome,
        derived: &[DerivedRecord],
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let done_sql = finish_sql();
        let probed = "UPDATE evidence SET media_state = 'ready', media_info = $2, media_playback = $3, \
             media_error = NULL, media_duration_us = $4, media_created_at = $5, media_probed_at = $6 WHERE id = $1";
        let failed = "UPDATE evidence SET media_state = 'failed', media_error = $2, media_probed_at = $3 WHERE id = $1";
        let proxy = "INSERT INTO media_jobs (evidence_id, kind, state, attempts, run_after, created_at, updated_at) \
             VALUES ($1, 'proxy', 'queued', 0, $2, $2, $2) \
             ON CONFLICT (evidence_id, kind) DO UPDATE SET state = 'queued', attempts = 0, run_after = $2, \
             last_error = NULL, worker = NULL, lease_until = NULL, updated_at = $2";
        let id = job.evidence_id.to_string();
        let (job_state, job_error) = match outcome {
            ProbeOutcome::Probed { warning, .. } => ("done", warning.clone()),
            ProbeOutcome::Failed { error } => ("failed", Some(error.clone())),
        };
        let held = on_pool!(self, p => async {
            let mut tx = p.begin().await?;
            let r = sqlx::query(sqlx::AssertSqlSafe(done_sql.clone()))
                .bind(&id)
                .bind(job.kind.as_str())
                .bind(&job.worker)
                .bind(i64::from(job.attempt))
                .bind(job_state)
                .bind(job_error.as_deref())
                .bind(micros(now))
                .execute(&mut *tx)
                .await?;
            if r.rows_affected() != 1 {
                tx.rollback().await?;
                return Ok(false);
            }
            match outcome {
                ProbeOutcome::Probed { info, playback, duration_us, created_at, needs_proxy, .. } => {
                    sqlx::query(probed)
                        .bind(&id)
                        .bind(info)
                        .bind(playback)
                        .bind(*duration_us)
                        .bind(created_at.map(micros))
                        .bind(micros(now))
                        .execute(&mut *tx)
                        .await?;
                    if *needs_proxy {
                        sqlx::query(proxy).bind(&id).bind(micros(now)).execute(&mut *tx).await?;
                    }
                }
                ProbeOutcome::Failed { error } => {
                    sqlx::query(failed).bind(&id).bind(error).bind(micros(now)).execute(&mut *tx).await?;
                }
            }
            for d in derived {
                upsert_derived!(&mut *tx, d);
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(true)
        }.await)
        .map_err(StoreError::db("storing a probe result"))?;
        Ok(held)
    }

    /// Stores a proxy job's result: the proxy file, or the reason it could not be made (permanent).
    pub async fn finish_proxy_job(
        &self,
        job: &MediaJob,
        result: Result<&DerivedRecord, &str>,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let done_sql = finish_sql();
        let (state, error) = match result {
            Ok(_) => ("done", None),
            Err(e) => ("failed", Some(e)),
        };
        let held = on_pool!(self, p => async {
            let mut tx = p.begin().await?;
            let r = sqlx::query(sqlx::AssertSqlSafe(done_sql.clone()))
                .bind(job.evidence_id.to_string())
                .bind(job.kind.as_str())
                .bind(&job.worker)
                .bind(i64::from(job.attempt))
                .bind(state)
                .bind(error)
                .bind(micros(now))
                .execute(&mut *tx)
                .await?;
            if r.rows_affected() != 1 {
                tx.rollback().await?;
                return Ok(false);
            }
            if let Ok(d) = result {
                upsert_derived!(&mut *tx, d);
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(true)
        }.await)
        .map_err(StoreError::db("storing a proxy result"))?;
        Ok(held)
    }

    /// Puts a job back in the queue after a failure that may pass, not before `run_after`; or, with no
    /// attempts left (`give_up`), fails it for good (a probe job also fails the evidence's media state).
    pub async fn retry_media_job(
        &self,
        job: &MediaJob,
        error: &str,
        run_after: Timestamp,
        give_up: bool,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE media_jobs SET state = $5, last_error = $6, run_after = $7, lease_until = NULL, \
             updated_at = $8 WHERE {HELD}"
        );
        let evidence = "UPDATE evidence SET media_state = 'failed', media_error = $2, media_probed_at = $3 \
             WHERE id = $1 AND media_state = 'pending'";
        let state = if give_up { "failed" } else { "queued" };
        let held = on_pool!(self, p => async {
            let mut tx = p.begin().await?;
            let r = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(job.evidence_id.to_string())
                .bind(job.kind.as_str())
                .bind(&job.worker)
                .bind(i64::from(job.attempt))
                .bind(state)
                .bind(error)
                .bind(micros(run_after))
                .bind(micros(now))
                .execute(&mut *tx)
                .await?;
            if r.rows_affected() != 1 {
                tx.rollback().await?;
                return Ok(false);
            }
            if give_up && job.kind == MediaJobKind::Probe {
                sqlx::query(evidence)
                    .bind(job.evidence_id.to_string())
                    .bind(format!("probing failed {} times, last: {error}", job.attempt))
                    .bind(micros(now))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(true)
        }.await)
        .map_err(StoreError::db("requeueing a media job"))?;
        Ok(held)
    }

    /// Hands a claimed job back untouched (the worker is stopping): the claim does not count as an attempt.
    pub async fn release_media_job(
        &self,
        job: &MediaJob,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "UPDATE media_jobs SET state = 'queued', attempts = attempts - 1, worker = NULL, \
             lease_until = NULL, run_after = $5, updated_at = $5 WHERE {HELD}"
        );
        on_pool!(self, p => sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(job.evidence_id.to_string())
            .bind(job.kind.as_str())
            .bind(&job.worker)
            .bind(i64::from(job.attempt))
            .bind(micros(now))
            .execute(p)
            .await
            .map(|r| r.rows_affected()))
        .map_err(StoreError::db("releasing a media job"))?;
        Ok(())
    }

    /// Queues every job of an evidence item again from scratch (`custody admin media retry`).
    pub async fn requeue_media(&self, id: EvidenceId, now: Timestamp) -> Result<bool, StoreError> {
        let jobs = "UPDATE media_jobs SET state = 'queued', attempts = 0, run_after = $2, worker = NULL, \
             lease_until = NULL, last_error = NULL, updated_at = $2 WHERE evidence_id = $1 AND kind = 'probe'";
        let drop_proxy = "DELETE FROM media_jobs WHERE evidence_id = $1 AND kind = 'proxy'";
        let evidence =
            "UPDATE evidence SET media_state = 'pending', media_error = NULL WHERE id = $1";
        let n = on_pool!(self, p => async {
            let mut tx = p.begin().await?;
            let r = sqlx::query(jobs).bind(id.to_string()).bind(micros(now)).execute(&mut *tx).await?;
            if r.rows_affected() == 1 {
                sqlx::query(drop_proxy).bind(id.to_string()).execute(&mut *tx).await?;
                sqlx::query(evidence).bind(id.to_string()).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(r.rows_affected())
        }.await)
        .map_err(StoreError::db("requeueing media jobs"))?;
        Ok(n == 1)
    }

    /// Ids of evidence whose probe or proxy failed, oldest first.
    pub async fn failed_media(&self, limit: u32) -> Result<Vec<EvidenceId>, StoreError> {
        let sql = "SELECT DISTINCT evidence_id, MIN(updated_at) AS t FROM media_jobs WHERE state = 'failed' \
             GROUP BY evidence_id ORDER BY t LIMIT $1";
        let rows: Vec<(String, i64)> = on_pool!(self, p => sqlx::query_as(sql)
            .bind(i64::from(limit))
            .fetch_all(p)
            .await)
        .map_err(StoreError::db("listing failed media jobs"))?;
        rows.into_iter()
            .map(|(id, _)| {
                EvidenceId::parse(&id).map_err(|e| corrupt("media_jobs", &id)(e.to_string()))
            })
            .collect()
    }

    /// What the media pipeline knows of these evidence items (missing ids are left out).
    pub async fn evidence_media(
        &self,
        ids: &[EvidenceId],
    ) -> Result<Vec<EvidenceMedia>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let list = serde_json::Value::from(ids.clone()).to_string();
        // One bound JSON array on both backends, instead of a statement per id.
        let (in_sqlite, in_pg) = (
            "IN (SELECT value FROM json_each($1))",
            "IN (SELECT jsonb_array_elements_text(CAST($1 AS jsonb)))",
        );
        let run = |in_list: &str| {
            (
                format!(
                    "SELECT id, media_state, media_info, media_playback, media_error, media_duration_us, \
                     media_created_at, media_probed_at FROM evidence WHERE id {in_list}"
                ),
                format!(
                    "SELECT {DERIVED_COLUMNS} FROM derived_media WHERE evidence_id {in_list} ORDER BY evidence_id, kind"
                ),
                format!(
                    "SELECT evidence_id, kind, state, attempts, last_error FROM media_jobs \
                     WHERE evidence_id {in_list} ORDER BY evidence_id, kind"
                ),
            )
        };
        let (a, b, c) = match &self.pool {
            Pool::Sqlite(_) => run(in_sqlite),
            Pool::Postgres(_) => run(in_pg),
        };
        let (rows, derived, jobs): (Vec<MediaRow>, Vec<DerivedRow>, Vec<JobRow>) =
            on_pool!(self, p => async {
                let rows = sqlx::query_as(sqlx::AssertSqlSafe(a)).bind(&list).fetch_all(p).await?;
                let derived = sqlx::query_as(sqlx::AssertSqlSafe(b)).bind(&list).fetch_all(p).await?;
                let jobs = sqlx::query_as(sqlx::AssertSqlSafe(c)).bind(&list).fetch_all(p).await?;
                Ok::<_, sqlx::Error>((rows, derived, jobs))
            }.await)
            .map_err(StoreError::db("reading evidence media"))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let c = corrupt("evidence", &r.id);
            let id = EvidenceId::parse(&r.id).map_err(|e| c(e.to_string()))?;
            out.push(EvidenceMedia {
                evidence_id: id,
                state: MediaState::parse(&r.media_state).map_err(&c)?,
                info: r.media_info,
                playback: r.media_playback,
                error: r.media_error,
                duration_us: r.media_duration_us,
                created_at: r.media_created_at.map(Timestamp::from_unix_micros),
                probed_at: r.media_probed_at.map(Timestamp::from_unix_micros),
                derived: Vec::new(),
                jobs: Vec::new(),
            });
        }
        for d in derived {
            let d = d.into_domain()?;
            if let Some(m) = out.iter_mut().find(|m| m.evidence_id == d.evidence_id) {
                m.derived.push(d);
            }
        }
        for j in jobs {
            let id = j.evidence_id.clone();
            let j = j.into_domain()?;
            if let Some(m) = out.iter_mut().find(|m| m.evidence_id.to_string() == id) {
                m.jobs.push(j);
            }
        }
        Ok(out)
    }

    /// One derived file of an evidence item, if it was made.
    pub async fn derived_media(
        &self,
        id: EvidenceId,
        kind: DerivedKind,
    ) -> Result<Option<DerivedRecord>, StoreError> {
        let sql = format!(
            "SELECT {DERIVED_COLUMNS} FROM derived_media WHERE evidence_id = $1 AND kind = $2"
        );
        let row: Option<DerivedRow> = on_pool!(self, p => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .bind(kind.as_str())
            .fetch_optional(p)
            .await)
        .map_err(StoreError::db("reading a derived file"))?;
        row.map(DerivedRow::into_domain).transpose()
    }

    /// Jobs per kind and state (for metrics and `custody admin media status`).
    pub async fn media_job_counts(&self) -> Result<JobCounts, StoreError> {
        let sql = "SELECT kind, state, COUNT(*) FROM media_jobs GROUP BY kind, state ORDER BY kind, state";
        let rows: Vec<(String, String, i64)> =
            on_pool!(self, p => sqlx::query_as(sql).fetch_all(p).await)
                .map_err(StoreError::db("counting media jobs"))?;
        let mut out = JobCounts::default();
        for (kind, state, n) in rows {
            let kind = MediaJobKind::parse(&kind).map_err(corrupt("media_jobs", &kind))?;
            out.rows.push((kind, state, u64::try_from(n).unwrap_or(0)));
        }
        Ok(out)
    }

    /// The earliest instant a queued job becomes due, so an idle worker knows how long it may sleep.
    pub async fn next_media_job_due(&self) -> Result<Option<Timestamp>, StoreError> {
        let sql = "SELECT MIN(run_after) FROM media_jobs WHERE state = 'queued'";
        let t: Option<i64> = on_pool!(self, p => sqlx::query_scalar(sql).fetch_one(p).await)
            .map_err(StoreError::db("reading the next media job"))?;
        Ok(t.map(Timestamp::from_unix_micros))
    }
}
