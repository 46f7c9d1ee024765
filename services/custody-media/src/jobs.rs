//! The durable media jobs: claim, run on the blocking pool, record, retry.
//!
//! One worker loop per configured slot ([`MediaConfig::jobs`]), so at most that many ffmpeg jobs run
//! at once on this process. A loop claims the next due job (probes before proxies), keeps its lease alive
//! while the job runs, and records the result through the claim, so a loop that stalls past its lease
//! cannot overwrite the job's newer owner.
//!
//! Failures come in two kinds. A file that is not media, is damaged, or is too large to decode fails
//! for good at once, with its reason recorded and shown ("not playable: ..."): retrying cannot change
//! its bytes. Anything else (object store or database unreachable, disk full) is retried with doubling
//! backoff up to `max_attempts`. A worker that stops mid-job (shutdown) hands the job back unharmed.

use crate::metrics::MediaMetrics;
use crate::{MediaError, PictureOptions, ProxyOptions};
use custody_core::media::{
    DerivedKind, MediaInfo, MediaJobKind, Playback, PlaybackRules, derived_path, retry_delay,
};
use custody_core::{ContentHasher, Evidence, EvidenceId, Timestamp, content_path};
use custody_store::{
    Blobs, DerivedRecord, EvidenceMedia, MediaJob, Metadata, ProbeOutcome, StoreError,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Settings of the media pipeline.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Jobs run at once by this process (each may use several cores inside ffmpeg). 0 disables the
    /// workers: the jobs wait in the database for another replica.
    pub jobs: usize,
    /// How long a claim holds without renewal; a job whose worker died is picked up again after it.
    pub lease: Duration,
    /// Claims a job gets before it is given up (a crash during a job counts too).
    pub max_attempts: u32,
    /// First retry delay after a failure that may pass; doubles each time up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// How often an idle worker looks for new jobs.
    pub poll: Duration,
    /// Scratch space: copies of evidence read from S3 and proxies being encoded.
    pub work_dir: PathBuf,
    pub rules: PlaybackRules,
    pub picture: PictureOptions,
    pub proxy: ProxyOptions,
}

impl MediaConfig {
    pub fn new(work_dir: PathBuf) -> Self {
        Self {
            jobs: 1,
            lease: Duration::from_secs(300),
            max_attempts: 5,
            retry_base: Duration::from_secs(30),
            retry_max: Duration::from_secs(3600),
            poll: Duration::from_secs(2),
            work_dir,
            rules: PlaybackRules::default(),
            picture: PictureOptions::default(),
            proxy: ProxyOptions::default(),
        }
    }
}

/// Why a job did not finish.
#[derive(Debug)]
enum JobFailure {
    /// May pass: retry later.
    Transient(String),
    /// The worker is stopping or lost its lease: hand the job back.
    Stopped,
}

impl From<StoreError> for JobFailure {
    fn from(e: StoreError) -> Self {
        Self::Transient(e.to_string())
    }
}

/// The media pipeline: its workers and the read side the API serves from. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Media {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    meta: Metadata,
    blobs: Blobs,
    config: MediaConfig,
    metrics: MediaMetrics,
    /// Wakes idle workers early (new evidence, tests).
    wake: Notify,
    /// Names this process's claims apart from other replicas'.
    instance: String,
}

fn now() -> Timestamp {
    Timestamp::from_datetime(chrono_now())
}

fn chrono_now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

fn after(t: Timestamp, d: Duration) -> Timestamp {
    t.saturating_add_micros(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

impl Media {
    pub fn new(meta: Metadata, blobs: Blobs, config: MediaConfig, metrics: MediaMetrics) -> Self {
        let instance = format!("{}-{:08x}", std::process::id(), rand_suffix(),);
        Self {
            inner: Arc::new(Inner {
                meta,
                blobs,
                config,
                metrics,
                wake: Notify::new(),
                instance,
            }),
        }
    }

    pub fn config(&self) -> &MediaConfig {
        &self.inner.config
    }

    pub fn metrics(&self) -> &MediaMetrics {
        &self.inner.metrics
    }

    /// Makes idle workers look for jobs now instead of at their next poll.
    pub fn wake(&self) {
        self.inner.wake.notify_waiters();
    }

    /// Runs the configured number of worker loops until `stop` is cancelled; a job in progress is
    /// cancelled and handed back.
    pub async fn run(self, stop: CancellationToken) {
        if let Err(e) = std::fs::create_dir_all(&self.inner.config.work_dir) {
            tracing::error!(dir = %self.inner.config.work_dir.display(), error = %e,
                "media work_dir cannot be created: media jobs stay queued");
            return;
        }
        let mut loops = tokio::task::JoinSet::new();
        for slot in 0..self.inner.config.jobs {
            let me = self.clone();
            let stop = stop.clone();
            loops.spawn(async move { me.work_loop(slot, stop).await });
        }
        while loops.join_next().await.is_some() {}
    }

    async fn work_loop(&self, slot: usize, stop: CancellationToken) {
        let worker = format!("media-{}-{slot}", self.inner.instance);
        while !stop.is_cancelled() {
            let idle = match self.run_one(&worker, &stop).await {
                Ok(true) => continue,
                Ok(false) => self.idle_time().await,
                Err(e) => {
                    tracing::warn!(error = %e, "media worker could not claim a job; retrying");
                    self.inner.config.poll
                }
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(idle) => {}
            }
        }
    }

    /// How long an idle worker may sleep: until the next backoff ends, at most one poll interval.
    async fn idle_time(&self) -> Duration {
        let poll = self.inner.config.poll;
        match self.inner.meta.next_media_job_due().await {
            Ok(Some(due)) => {
                let wait = due.unix_micros().saturating_sub(now().unix_micros());
                Duration::from_micros(u64::try_from(wait).unwrap_or(0)).min(poll)
            }
            _ => poll,
        }
    }

    /// Claims and runs one due job. Returns false when none was due.
    pub async fn run_one(
        &self,
        worker: &str,
        stop: &CancellationToken,
    ) -> Result<bool, StoreError> {
        let cfg = &self.inner.config;
        let t = now();
        let Some(job) = self
            .inner
            .meta
            .claim_media_job(worker, t, after(t, cfg.lease), cfg.max_attempts)
            .await?
        else {
            return Ok(false);
        };
        let started = Instant::now();
        tracing::info!(evidence = %job.evidence_id, kind = %job.kind, attempt = job.attempt, "media job started");
        self.inner.metrics.running.inc();

        // The job stops when the process stops or the claim is lost; the lease is renewed meanwhile.
        let cancel = Arc::new(AtomicBool::new(false));
        let keeper = tokio::spawn(keep_lease(
            self.inner.meta.clone(),
            job.clone(),
            cfg.lease,
            stop.clone(),
            cancel.clone(),
        ));
        let result = match job.kind {
            MediaJobKind::Probe => self.probe_job(&job, &cancel).await,
            MediaJobKind::Proxy => self.proxy_job(&job, &cancel).await,
        };
        keeper.abort();
        self.inner.metrics.running.dec();
        let seconds = started.elapsed().as_secs_f64();
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(JobFailure::Stopped) => {
                tracing::info!(evidence = %job.evidence_id, kind = %job.kind, "media job handed back");
                self.inner.meta.release_media_job(&job, now()).await?;
                "released"
            }
            Err(JobFailure::Transient(error)) => {
                let give_up = job.attempt >= cfg.max_attempts;
                let delay = retry_delay(job.attempt, cfg.retry_base, cfg.retry_max);
                tracing::warn!(evidence = %job.evidence_id, kind = %job.kind, attempt = job.attempt,
                    give_up, retry_in = ?delay, %error, "media job failed");
                let t = now();
                self.inner
                    .meta
                    .retry_media_job(&job, &error, after(t, delay), give_up, t)
                    .await?;
                if give_up { "failed" } else { "retry" }
            }
        };
        tracing::info!(evidence = %job.evidence_id, kind = %job.kind, outcome, seconds, "media job ended");
        self.inner.metrics.finished(job.kind, outcome, seconds);
        Ok(true)
    }

    async fn evidence(&self, id: EvidenceId) -> Result<Evidence, JobFailure> {
        self.inner
            .meta
            .get_evidence(id)
            .await?
            .ok_or_else(|| JobFailure::Transient(format!("evidence {id} has no row")))
    }

    /// A local file holding the evidence bytes: the object itself on a local store, a scratch copy
    /// (removed on drop) on S3.
    async fn local_copy(&self, e: &Evidence) -> Result<Source, JobFailure> {
        let rel = content_path(&e.sha256);
        if let Some(path) = self.inner.blobs.local_path(&rel) {
            return Ok(Source::InPlace(path));
        }
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{}-", e.id))
            .suffix(".src")
            .tempfile_in(&self.inner.config.work_dir)
            .map_err(|err| {
                JobFailure::Transient(format!(
                    "creating a scratch file in {}: {err}",
                    self.inner.config.work_dir.display()
                ))
            })?
            .into_temp_path();
        let copied = self.inner.blobs.download_to(&rel, &tmp).await?;
        if copied != e.size {
            return Err(JobFailure::Transient(format!(
                "read {copied} bytes of evidence {} but it holds {}",
                e.id, e.size
            )));
        }
        Ok(Source::Copy(tmp))
    }

    async fn probe_job(
        &self,
        job: &MediaJob,
        cancel: &Arc<AtomicBool>,
    ) -> Result<&'static str, JobFailure> {
        let e = self.evidence(job.evidence_id).await?;
        let source = self.local_copy(&e).await?;
        let path = source.path().to_path_buf();
        let cfg = self.inner.config.clone();
        let size = e.size;
        let probe_started = Instant::now();
        let ran = tokio::task::spawn_blocking(move || probe_and_picture(&path, size, &cfg))
            .await
            .map_err(|err| JobFailure::Transient(format!("probe task panicked: {err}")))?;
        drop(source);
        if cancel.load(Ordering::Relaxed) {
            return Err(JobFailure::Stopped);
        }
        let t = now();
        let (outcome, pictures) = match ran {
            Err(err) if err.is_permanent() => {
                tracing::info!(evidence = %e.id, file = %e.file_name.as_str(), error = %err, "not playable");
                (
                    ProbeOutcome::Failed {
                        error: err.to_string(),
                    },
                    Vec::new(),
                )
            }
            Err(MediaError::Cancelled) => return Err(JobFailure::Stopped),
            Err(err) => return Err(JobFailure::Transient(err.to_string())),
            Ok(probed) => {
                self.inner
                    .metrics
                    .probe_seconds
                    .observe(probe_started.elapsed().as_secs_f64());
                let mut derived = Vec::new();
                for (kind, jpeg, w, h, detail) in probed.pictures {
                    derived.push(self.store_bytes(&e, kind, jpeg, w, h, detail, t).await?);
                }
                let outcome = ProbeOutcome::Probed {
                    info: json(&probed.info),
                    playback: json(&probed.playback),
                    duration_us: probed.info.duration_us,
                    created_at: probed.info.created_at,
                    needs_proxy: matches!(probed.playback, Playback::Proxy { .. }),
                    warning: probed.warning,
                };
                (outcome, derived)
            }
        };
        if !self
            .inner
            .meta
            .finish_probe_job(job, &outcome, &pictures, t)
            .await?
        {
            tracing::warn!(evidence = %e.id, "media job lost its lease before it finished; its result was dropped");
            return Ok("lost");
        }
        Ok(match outcome {
            ProbeOutcome::Probed { .. } => "done",
            ProbeOutcome::Failed { .. } => "unreadable",
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn store_bytes(
        &self,
        e: &Evidence,
        kind: DerivedKind,
        bytes: Vec<u8>,
        width: u32,
        height: u32,
        detail: Option<String>,
        t: Timestamp,
    ) -> Result<DerivedRecord, JobFailure> {
        let sha256 = ContentHasher::digest(&bytes, false).sha256;
        let path = derived_path(&e.sha256, kind, &sha256);
        let size = bytes.len() as u64;
        self.inner.blobs.put(&path, bytes.into()).await?;
        Ok(DerivedRecord {
            evidence_id: e.id,
            kind,
            path,
            sha256,
            size,
            content_type: kind.content_type().to_string(),
            width: Some(width),
            height: Some(height),
            detail,
            created_at: t,
        })
    }

    async fn proxy_job(
        &self,
        job: &MediaJob,
        cancel: &Arc<AtomicBool>,
    ) -> Result<&'static str, JobFailure> {
        let e = self.evidence(job.evidence_id).await?;
        let stored = self
            .inner
            .meta
            .evidence_media(&[e.id])
            .await?
            .pop()
            .and_then(|m| m.info)
            .ok_or_else(|| {
                JobFailure::Transient(format!("evidence {} has no probe result yet", e.id))
            })?;
        let info: MediaInfo = serde_json::from_str(&stored).map_err(|err| {
            JobFailure::Transient(format!("stored probe result of {} unreadable: {err}", e.id))
        })?;
        let source = self.local_copy(&e).await?;
        let out = tempfile::Builder::new()
            .prefix(&format!("{}-", e.id))
            .suffix(".proxy.mp4")
            .tempfile_in(&self.inner.config.work_dir)
            .map_err(|err| {
                JobFailure::Transient(format!("creating the proxy scratch file: {err}"))
            })?
            .into_temp_path();
        let (input, output) = (source.path().to_path_buf(), out.to_path_buf());
        let opts = self.inner.config.proxy.clone();
        let flag = cancel.clone();
        let id = e.id;
        let ran = tokio::task::spawn_blocking(move || {
            let mut last = 0.0;
            let mut progress = |f: f64| {
                if f - last >= 0.1 {
                    last = f;
                    tracing::info!(evidence = %id, percent = (f * 100.0).round(), "making browser proxy");
                }
            };
            let report = crate::make_proxy(&input, &output, &info, &opts, &flag, &mut progress)?;
            let digests = custody_store::hash_file(&output, false)
                .map_err(|err| MediaError::Internal(format!("hashing the proxy: {err}")))?;
            Ok::<_, MediaError>((report, digests))
        })
        .await
        .map_err(|err| JobFailure::Transient(format!("proxy task panicked: {err}")))?;
        drop(source);
        let t = now();
        let record = match ran {
            Ok((report, digests)) => {
                self.inner.metrics.proxy_speed.observe(report.speed);
                let path = derived_path(&e.sha256, DerivedKind::Proxy, &digests.sha256);
                self.inner.blobs.put_file(&path, &out).await?;
                let detail = serde_json::json!({
                    "duration_us": report.duration_us,
                    "video": report.has_video,
                    "audio": report.has_audio,
                    "speed": (report.speed * 100.0).round() / 100.0,
                });
                Ok(DerivedRecord {
                    evidence_id: e.id,
                    kind: DerivedKind::Proxy,
                    path,
                    sha256: digests.sha256,
                    size: digests.size,
                    content_type: DerivedKind::Proxy.content_type().to_string(),
                    width: report.width,
                    height: report.height,
                    detail: Some(detail.to_string()),
                    created_at: t,
                })
            }
            Err(MediaError::Cancelled) => return Err(JobFailure::Stopped),
            Err(err) if err.is_permanent() => Err(err.to_string()),
            Err(err) => return Err(JobFailure::Transient(err.to_string())),
        };
        drop(out);
        let done = match &record {
            Ok(r) => self.inner.meta.finish_proxy_job(job, Ok(r), t).await?,
            Err(why) => self.inner.meta.finish_proxy_job(job, Err(why), t).await?,
        };
        if !done {
            tracing::warn!(evidence = %e.id, "proxy job lost its lease before it finished; its result was dropped");
            return Ok("lost");
        }
        Ok(if record.is_ok() { "done" } else { "unreadable" })
    }

    /// What the pipeline knows of these items (for evidence metadata).
    pub async fn of(&self, ids: &[EvidenceId]) -> Result<Vec<EvidenceMedia>, StoreError> {
        self.inner.meta.evidence_media(ids).await
    }

    /// A derived file's record, if it was made.
    pub async fn derived(
        &self,
        id: EvidenceId,
        kind: DerivedKind,
    ) -> Result<Option<DerivedRecord>, StoreError> {
        self.inner.meta.derived_media(id, kind).await
    }

    /// The object store the derived files are in.
    pub fn blobs(&self) -> &Blobs {
        &self.inner.blobs
    }
}

/// Renews the claim every third of the lease; on shutdown or a lost claim, raises `cancel` so the
/// ffmpeg work stops at its next check.
async fn keep_lease(
    meta: Metadata,
    job: MediaJob,
    lease: Duration,
    stop: CancellationToken,
    cancel: Arc<AtomicBool>,
) {
    let every = (lease / 3).max(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                cancel.store(true, Ordering::Relaxed);
                return;
            }
            _ = tokio::time::sleep(every) => {}
        }
        match meta.renew_media_job(&job, after(now(), lease)).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(evidence = %job.evidence_id, kind = %job.kind, "media job lease lost; stopping it");
                cancel.store(true, Ordering::Relaxed);
                return;
            }
            // The database may be back before the lease runs out: keep the job going.
            Err(e) => tracing::warn!(error = %e, "renewing a media job lease failed"),
        }
    }
}

/// Evidence bytes as a local file.
enum Source {
    InPlace(PathBuf),
    Copy(tempfile::TempPath),
}

impl Source {
    fn path(&self) -> &Path {
        match self {
            Self::InPlace(p) => p,
            Self::Copy(t) => t,
        }
    }
}

/// A JPEG made for an item: its kind, bytes, size and kind-specific detail (JSON).
type MadePicture = (DerivedKind, Vec<u8>, u32, u32, Option<String>);

/// What the blocking half of a probe job made.
struct Probed {
    info: MediaInfo,
    playback: Playback,
    pictures: Vec<MadePicture>,
    warning: Option<String>,
}

/// Probes the file and makes its pictures. A file that probes but whose pictures cannot be decoded is
/// not playable (its reason is the decoder's); a permanent probe error fails the whole job.
fn probe_and_picture(path: &Path, size: u64, cfg: &MediaConfig) -> Result<Probed, MediaError> {
    let info = crate::probe(path)?;
    let mut playback = custody_core::media::playback(&info, size, &cfg.rules);
    let mut pictures = Vec::new();
    let mut warning = None;
    let wants_pictures = match &playback {
        Playback::NotPlayable { .. } => false,
        Playback::Image => true,
        Playback::Original | Playback::Proxy { .. } => info.video().is_some(),
    };
    if wants_pictures {
        let mut opts = cfg.picture.clone();
        opts.max_pixels = cfg.rules.max_pixels;
        match crate::poster(path, &info, &opts) {
            Ok(p) => pictures.push((DerivedKind::Poster, p.jpeg, p.width, p.height, None)),
            Err(e) if e.is_permanent() => {
                // Nothing decodes: a browser could not show it either.
                playback = Playback::NotPlayable {
                    reason: format!("no picture could be decoded: {e}"),
                };
            }
            Err(e) => return Err(e),
        }
        if !matches!(playback, Playback::Image | Playback::NotPlayable { .. }) {
            match crate::thumbs(path, &info, &opts) {
                Ok(s) => {
                    let detail = serde_json::json!({
                        "tiles": s.tiles,
                        "tile_width": s.tile_width,
                        "tile_height": s.tile_height,
                        "interval_us": s.interval_us,
                    });
                    pictures.push((
                        DerivedKind::Thumbs,
                        s.jpeg,
                        s.tile_width * s.tiles,
                        s.tile_height,
                        Some(detail.to_string()),
                    ));
                }
                Err(e) if e.is_permanent() => warning = Some(format!("thumbnail strip: {e}")),
                Err(e) => return Err(e),
            }
        }
    }
    Ok(Probed {
        info,
        playback,
        pictures,
        warning,
    })
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

fn rand_suffix() -> u32 {
    // Enough to tell two processes with the same pid (containers) apart in the claims table.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    nanos ^ std::process::id().rotate_left(16)
}
