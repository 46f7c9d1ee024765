//! Evidence intake and reads. [`Ingest`] runs resumable upload sessions (begin, write, query, commit),
//! verifies the declared hashes over the bytes actually stored before anything becomes evidence, expires
//! abandoned sessions, and serves evidence metadata and content to the transports.
//!
//! It owns the order of operations that keeps evidence safe: bytes are acknowledged only after they are
//! durable and their committed size is saved; staged bytes reach their content address only after their
//! hashes matched; the evidence row and the upload's committed state are written in one transaction; every
//! step of a commit can be retried after a crash.
//!
//! It must never import transport crates (axum, tonic) or SQL: storage goes through `custody-store`.

mod error;
pub mod ledger;
mod metrics;
pub mod stations;

/// Paging types of evidence listings, re-exported so that transports need not depend on the store.
pub use custody_store::{EvidencePage, PageCursor};
pub use error::IngestError;
pub use ledger::{HistoryItem, Ledger, LedgerConfig, LedgerKeys};
pub use metrics::IngestMetrics;
pub use stations::{StationView, Stations};

use bytes::Bytes;
use custody_core::{
    Digests, ErrorCode, Evidence, EvidenceFilter, EvidenceId, HasErrorCode, StationId, Timestamp,
    Upload, UploadDeclaration, UploadId, UploadState, check_write, content_path,
};
use custody_store::{Blobs, Checkpoint, Metadata, StagedWriter, StoreError};
use futures::stream::BoxStream;
use std::collections::HashSet;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Settings of the intake.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Largest file accepted, in bytes.
    pub max_upload_size: u64,
    /// An upload idle for this long is expired and its staged bytes removed.
    pub upload_ttl: Duration,
    /// Compute SM3 for every file even when the station did not declare one (国密 deployments).
    pub always_sm3: bool,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_upload_size: 4 << 30,
            upload_ttl: Duration::from_secs(24 * 3600),
            always_sm3: false,
        }
    }
}

/// The answer to `begin`.
#[derive(Debug, Clone)]
pub enum BeginOutcome {
    /// Send bytes from `committed` on.
    Session {
        upload_id: UploadId,
        committed: u64,
        size: u64,
    },
    /// The same bytes are already evidence: nothing to send.
    Existing(Box<Receipt>),
}

/// What a station gets back for a committed file: the evidence, and the proof that its ingest is in the
/// ledger under a signed checkpoint.
#[derive(Debug, Clone)]
pub struct Receipt {
    pub evidence: Evidence,
    /// The bytes were already evidence before this upload.
    pub duplicate: bool,
    pub ledger: custody_core::ledger::LedgerProof,
}

/// Evidence bytes being served.
pub struct Content {
    pub evidence: Evidence,
    /// The byte range served (the whole object when no range was asked for).
    pub range: Range<u64>,
    pub stream: BoxStream<'static, Result<Bytes, IngestError>>,
}

impl std::fmt::Debug for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Content")
            .field("evidence", &self.evidence.id)
            .field("range", &self.range)
            .finish()
    }
}

/// The intake service. Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct Ingest {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    meta: Metadata,
    blobs: Blobs,
    ledger: Ledger,
    config: IngestConfig,
    metrics: IngestMetrics,
    /// Uploads being written or committed in this process. A second writer of the same upload is refused
    /// here at once; across replicas the compare-and-set on the committed size refuses it.
    busy: Mutex<HashSet<UploadId>>,
}

/// Marks an upload busy until dropped.
#[derive(Debug)]
struct BusyGuard {
    inner: Arc<Inner>,
    id: UploadId,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        if let Ok(mut busy) = self.inner.busy.lock() {
            busy.remove(&self.id);
        }
        self.inner.metrics.active_uploads.dec();
    }
}

/// The wall clock, read in one place.
fn now() -> Timestamp {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::from_unix_micros(i64::try_from(since_epoch.as_micros()).unwrap_or(i64::MAX))
}

impl Ingest {
    pub fn new(
        meta: Metadata,
        blobs: Blobs,
        ledger: Ledger,
        config: IngestConfig,
        metrics: IngestMetrics,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                meta,
                blobs,
                ledger,
                config,
                metrics,
                busy: Mutex::new(HashSet::new()),
            }),
        }
    }

    pub fn ledger(&self) -> &Ledger {
        &self.inner.ledger
    }

    pub fn config(&self) -> &IngestConfig {
        &self.inner.config
    }

    pub fn metrics(&self) -> &IngestMetrics {
        &self.inner.metrics
    }

    fn ttl_micros(&self) -> i64 {
        i64::try_from(self.inner.config.upload_ttl.as_micros()).unwrap_or(i64::MAX)
    }

    fn observe<T>(&self, op: &'static str, r: Result<T, IngestError>) -> Result<T, IngestError> {
        if let Err(e) = &r {
            self.inner.metrics.error(op, e.code());
        }
        r
    }

    fn claim(&self, id: UploadId) -> Result<BusyGuard, IngestError> {
        let mut busy = self
            .inner
            .busy
            .lock()
            .map_err(|_| IngestError::Internal("busy set poisoned".into()))?;
        if !busy.insert(id) {
            return Err(IngestError::Busy(id));
        }
        self.inner.metrics.active_uploads.inc();
        Ok(BusyGuard {
            inner: self.inner.clone(),
            id,
        })
    }

    /// Checks that the database and the object store answer.
    pub async fn ready(&self) -> Result<(), IngestError> {
        self.inner.meta.ping().await?;
        self.inner.blobs.ping().await?;
        Ok(())
    }

    /// Declares a file. Resumes the open session for the same bytes from the same recorder, answers with
    /// the existing evidence when the bytes are already stored, or opens a new session.
    pub async fn begin(&self, decl: UploadDeclaration) -> Result<BeginOutcome, IngestError> {
        let r = self.begin_inner(decl).await;
        self.observe("begin", r)
    }

    async fn begin_inner(&self, decl: UploadDeclaration) -> Result<BeginOutcome, IngestError> {
        let declared = i64::try_from(decl.size).unwrap_or(i64::MAX);
        UploadDeclaration::check_size(declared, self.inner.config.max_upload_size)
            .map_err(IngestError::InvalidArgument)?;
        let meta = &self.inner.meta;
        if let Some(existing) = meta.get_evidence_by_sha256(&decl.sha256).await? {
            check_consistent_with(&decl, &existing)?;
            self.inner.metrics.duplicates.inc();
            tracing::info!(evidence = %existing.id, sha256 = %decl.sha256, device = %decl.device_id,
                "begin answered with existing evidence");
            let ledger = self.inner.ledger.ingest_receipt(existing.id).await?;
            return Ok(BeginOutcome::Existing(Box::new(Receipt {
                evidence: existing,
                duplicate: true,
                ledger,
            })));
        }
        if let Some(u) = meta
            .find_resumable_upload(&decl.sha256, decl.size, &decl.device_id)
            .await?
        {
            tracing::info!(upload = %u.id, committed = u.committed_size, "begin resumed an open upload");
            return Ok(BeginOutcome::Session {
                upload_id: u.id,
                committed: u.committed_size,
                size: decl.size,
            });
        }
        let id = UploadId::new();
        let staging = self.inner.blobs.stage_create(id).await?;
        let t = now();
        let upload = Upload {
            id,
            state: UploadState::Open,
            committed_size: 0,
            staging: staging.clone(),
            failure: None,
            evidence_id: None,
            created_at: t,
            updated_at: t,
            expires_at: t.saturating_add_micros(self.ttl_micros()),
            declaration: decl,
        };
        if let Err(e) = meta.insert_upload(&upload).await {
            let _ = self.inner.blobs.stage_discard(id, &staging).await;
            return Err(e.into());
        }
        tracing::info!(upload = %id, device = %upload.declaration.device_id, station = %upload.declaration.station_id,
            file = upload.declaration.file_name.as_str(), size = upload.declaration.size, "upload begun");
        Ok(BeginOutcome::Session {
            upload_id: id,
            committed: 0,
            size: upload.declaration.size,
        })
    }

    /// An upload, as long as `by` (the station asking) is the station that declared it: a station may
    /// touch only its own uploads.
    async fn load(&self, id: UploadId, by: &StationId) -> Result<Upload, IngestError> {
        let u = self
            .inner
            .meta
            .get_upload(id)
            .await?
            .ok_or(IngestError::UnknownUpload(id))?;
        if &u.declaration.station_id != by {
            return Err(IngestError::PermissionDenied(format!(
                "upload {id} belongs to station {}, not to {by}",
                u.declaration.station_id
            )));
        }
        Ok(u)
    }

    /// The stored state of an upload of station `by`.
    pub async fn query(&self, id: UploadId, by: &StationId) -> Result<Upload, IngestError> {
        let r = self.load(id, by).await;
        self.observe("query", r)
    }

    /// Opens an upload of station `by` for writing. Only one writer per upload at a time.
    pub async fn writer(&self, id: UploadId, by: &StationId) -> Result<UploadWriter, IngestError> {
        let r = self.writer_inner(id, by).await;
        self.observe("write", r)
    }

    async fn writer_inner(
        &self,
        id: UploadId,
        by: &StationId,
    ) -> Result<UploadWriter, IngestError> {
        let guard = self.claim(id)?;
        let upload = self.load(id, by).await?;
        if upload.state != UploadState::Open {
            return Err(IngestError::NotOpen {
                id,
                state: upload.state,
                failure: upload.failure,
            });
        }
        let staged = self
            .inner
            .blobs
            .stage_writer(id, &upload.staging, upload.committed_size)
            .await?;
        Ok(UploadWriter {
            ingest: self.clone(),
            saved: upload.committed_size,
            size: upload.declaration.size,
            upload: id,
            staged,
            poisoned: false,
            _guard: guard,
        })
    }

    /// Verifies the stored bytes of station `by`'s upload against the declaration and makes them
    /// evidence. Safe to retry: every
    /// step is idempotent, and a commit interrupted by a crash completes on the next call.
    ///
    /// Once started, a commit runs to its end in a task of its own even if the caller goes away: a
    /// station that disconnects (or is killed) mid-commit must not cut an object-store step in half.
    /// Each step is idempotent across crashes, but not every S3 server makes each request atomic when
    /// its client hangs up mid-request (s3s-fs drops a multipart upload it was completing).
    pub async fn commit(&self, id: UploadId, by: &StationId) -> Result<Receipt, IngestError> {
        let (me, by) = (self.clone(), by.clone());
        let r = tokio::spawn(async move { me.commit_inner(id, &by).await })
            .await
            .unwrap_or_else(|e| Err(IngestError::Internal(format!("commit task failed: {e}"))));
        if r.is_ok() {
            self.inner.metrics.commits.inc();
        }
        self.observe("commit", r)
    }

    async fn commit_inner(&self, id: UploadId, by: &StationId) -> Result<Receipt, IngestError> {
        let upload = self.load(id, by).await?;
        match upload.state {
            UploadState::Committed => return self.receipt_of_committed(&upload).await,
            UploadState::Failed | UploadState::Expired => {
                return Err(IngestError::NotOpen {
                    id,
                    state: upload.state,
                    failure: upload.failure,
                });
            }
            UploadState::Open | UploadState::Committing => {}
        }
        let guard = self.claim(id)?;
        let decl = &upload.declaration;
        if upload.committed_size < decl.size {
            return Err(IngestError::Incomplete {
                id,
                committed: upload.committed_size,
                size: decl.size,
            });
        }
        let (meta, blobs) = (&self.inner.meta, &self.inner.blobs);
        if !meta.begin_commit(id, &upload.staging, now()).await? {
            // Another replica committed, failed or expired it meanwhile: answer from its new state.
            drop(guard);
            return Box::pin(self.commit_inner(id, by)).await;
        }
        let with_sm3 = decl.sm3.is_some() || self.inner.config.always_sm3;
        let staged = match blobs.stage_seal(id, &upload.staging, decl.size).await {
            Ok(sealed) => {
                meta.begin_commit(id, &sealed, now()).await?;
                blobs.stage_hash(id, with_sm3).await
            }
            Err(e) => Err(e),
        };
        let digests = match staged {
            Ok(d) => d,
            // The staged object is gone: either a previous attempt already moved the verified bytes to
            // their content address (it stopped between the move and the database commit), or the
            // object store lost them.
            Err(e) if e.code() == ErrorCode::NotFound => {
                if blobs.size_of(&content_path(&decl.sha256)).await?.is_some() {
                    tracing::info!(upload = %id, "resuming a commit whose bytes were already moved");
                    blobs.hash(&content_path(&decl.sha256), with_sm3).await?
                } else {
                    // Nothing can become evidence: fail the upload with the reason, so that the
                    // station (which still holds the file) uploads it again instead of retrying a
                    // commit that can never succeed.
                    let why = "the staged bytes were lost before they became evidence (the object store \
                               dropped them while the server stopped mid-commit); upload the file again";
                    tracing::error!(upload = %id, device = %decl.device_id, file = decl.file_name.as_str(), "{why}");
                    meta.fail_upload(id, why, now()).await?;
                    return Err(IngestError::NotOpen {
                        id,
                        state: UploadState::Failed,
                        failure: Some(why.into()),
                    });
                }
            }
            Err(e) => return Err(e.into()),
        };
        if let Err(mismatch) = verify(decl, &digests) {
            tracing::warn!(upload = %id, device = %decl.device_id, reason = %mismatch, "upload failed verification");
            meta.fail_upload(id, &mismatch.to_string(), now()).await?;
            blobs.stage_discard(id, &upload.staging).await?;
            return Err(mismatch);
        }
        blobs.stage_promote(id, &decl.sha256).await?;
        let t = now();
        let candidate = Evidence {
            id: EvidenceId::new(),
            sha256: digests.sha256,
            sm3: digests.sm3,
            size: digests.size,
            device_id: decl.device_id.clone(),
            station_id: decl.station_id.clone(),
            file_name: decl.file_name.clone(),
            media_type: decl.media_type,
            importance: decl.importance,
            captured_at: decl.captured_at,
            ingested_at: t,
            // Who held the recorder is worked out by the store from the check-out register; the
            // station's report is kept beside it as the cross-check.
            attribution: custody_core::Attribution {
                reported: decl.officer.clone(),
                clock_offset_ms: decl.clock_offset_ms,
                ..Default::default()
            },
            retention: Default::default(),
        };
        let outcome = meta.commit_upload(id, &candidate, t).await?;
        if let Some(d) = outcome.evidence.deleted() {
            // Retention deleted the same bytes while this upload was under way (a new upload of them is
            // answered with the tombstone's receipt at Begin): the copy just promoted must go again.
            tracing::warn!(upload = %id, evidence = %outcome.evidence.id, deleted_at = %d.at,
                "uploaded bytes belong to evidence deleted by retention; removing them again");
            blobs
                .delete(&content_path(&outcome.evidence.sha256))
                .await?;
        }
        self.inner
            .metrics
            .committed_bytes
            .inc_by(outcome.evidence.size);
        tracing::info!(upload = %id, evidence = %outcome.evidence.id, sha256 = %outcome.evidence.sha256,
            size = outcome.evidence.size, duplicate = outcome.duplicate, "evidence committed");
        if !outcome.duplicate {
            self.inner.ledger.notify_queued();
        }
        let ledger = self
            .inner
            .ledger
            .ingest_receipt(outcome.evidence.id)
            .await?;
        Ok(Receipt {
            evidence: outcome.evidence,
            duplicate: outcome.duplicate,
            ledger,
        })
    }

    async fn receipt_of_committed(&self, upload: &Upload) -> Result<Receipt, IngestError> {
        let eid = upload.evidence_id.ok_or_else(|| {
            IngestError::Internal(format!("committed upload {} names no evidence", upload.id))
        })?;
        let evidence = self.inner.meta.get_evidence(eid).await?.ok_or_else(|| {
            IngestError::Internal(format!("evidence {eid} of upload {} is missing", upload.id))
        })?;
        // Already evidence when this upload began: someone else's bytes.
        let duplicate = evidence.ingested_at < upload.created_at;
        let ledger = self.inner.ledger.ingest_receipt(evidence.id).await?;
        Ok(Receipt {
            evidence,
            duplicate,
            ledger,
        })
    }

    /// Expires uploads idle past their time, removing their staged bytes. Returns how many it expired.
    pub async fn expire_idle(&self, at: Timestamp) -> Result<usize, IngestError> {
        let (meta, blobs) = (&self.inner.meta, &self.inner.blobs);
        let mut expired = 0;
        loop {
            let batch = meta.expired_uploads(at, 100).await?;
            let mut progressed = false;
            for u in &batch {
                if let Ok(busy) = self.inner.busy.lock()
                    && busy.contains(&u.id)
                {
                    continue;
                }
                if meta.expire_upload(u.id, at).await? {
                    blobs.stage_discard(u.id, &u.staging).await?;
                    expired += 1;
                    progressed = true;
                    self.inner.metrics.expired.inc();
                    tracing::info!(upload = %u.id, device = %u.declaration.device_id,
                        committed = u.committed_size, size = u.declaration.size, "abandoned upload expired");
                }
            }
            if batch.len() < 100 || !progressed {
                return Ok(expired);
            }
        }
    }

    /// Runs [`Ingest::expire_idle`] every `every` until `shutdown` resolves.
    pub async fn run_expiry(
        self,
        every: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => {
                    if let Err(e) = self.expire_idle(now()).await {
                        tracing::warn!(error = %e, "expiring abandoned uploads failed; will retry");
                    }
                }
            }
        }
    }

    /// One evidence item's metadata, without recording an access: for internal use.
    pub async fn evidence(&self, id: EvidenceId) -> Result<Evidence, IngestError> {
        self.inner
            .meta
            .get_evidence(id)
            .await?
            .ok_or(IngestError::UnknownEvidence(id))
    }

    /// One evidence item's metadata, read by `actor`: the read is a `view` event in the ledger, durable
    /// before the metadata is returned.
    pub async fn view(&self, id: EvidenceId, actor: &str) -> Result<Evidence, IngestError> {
        let evidence = self.evidence(id).await?;
        self.inner
            .ledger
            .append(ledger::access_event(
                custody_core::ledger::EventKind::View,
                id,
                actor,
            ))
            .await?;
        Ok(evidence)
    }

    /// Records that `actor` is downloading an item's bytes (a `download` event), before any byte is
    /// served.
    pub async fn record_download(&self, id: EvidenceId, actor: &str) -> Result<(), IngestError> {
        self.inner
            .ledger
            .append(ledger::access_event(
                custody_core::ledger::EventKind::Download,
                id,
                actor,
            ))
            .await
    }

    /// Evidence matching `filter` that `scope` may see, in capture order, a page at a time.
    pub async fn list(
        &self,
        filter: &EvidenceFilter,
        scope: &custody_core::access::EvidenceScope,
        after: Option<PageCursor>,
        limit: u32,
    ) -> Result<EvidencePage, IngestError> {
        Ok(self
            .inner
            .meta
            .list_evidence(filter, scope, after, limit)
            .await?)
    }

    /// An evidence item's bytes, or a range of them (end exclusive, already checked against the size).
    pub async fn content(
        &self,
        evidence: Evidence,
        range: Option<Range<u64>>,
    ) -> Result<Content, IngestError> {
        require_bytes(&evidence)?;
        let id = evidence.id;
        let (_, served, stream) = self
            .inner
            .blobs
            .get(&evidence.content_path(), range)
            .await
            .map_err(|e| match e {
                StoreError::NotFound(_) => IngestError::Internal(format!(
                    "bytes of evidence {id} are missing at {}",
                    evidence.content_path()
                )),
                e => e.into(),
            })?;
        use futures::StreamExt;
        Ok(Content {
            evidence,
            range: served,
            stream: stream.map(|r| r.map_err(IngestError::from)).boxed(),
        })
    }
}

/// Refuses an item whose bytes retention deleted (its row remains as a tombstone), saying when and why.
pub fn require_bytes(evidence: &Evidence) -> Result<(), IngestError> {
    match evidence.deleted() {
        None => Ok(()),
        Some(d) => Err(IngestError::Deleted {
            id: evidence.id,
            at: d.at,
            reason: d.reason.clone(),
        }),
    }
}

/// A second declaration of stored bytes must agree with what is stored.
fn check_consistent_with(decl: &UploadDeclaration, existing: &Evidence) -> Result<(), IngestError> {
    if decl.size != existing.size {
        return Err(IngestError::InvalidArgument(format!(
            "size: declared {} bytes, but evidence {} with the same sha256 holds {} bytes",
            decl.size, existing.id, existing.size
        )));
    }
    if let (Some(d), Some(s)) = (decl.sm3, existing.sm3)
        && d != s
    {
        return Err(IngestError::InvalidArgument(format!(
            "sm3: declared {d}, but evidence {} with the same sha256 has sm3 {s}",
            existing.id
        )));
    }
    Ok(())
}

/// Compares what was computed over the stored bytes with what was declared, naming the first difference.
fn verify(decl: &UploadDeclaration, got: &Digests) -> Result<(), IngestError> {
    if got.size != decl.size {
        return Err(IngestError::Integrity {
            what: "size",
            declared: decl.size.to_string(),
            computed: got.size.to_string(),
        });
    }
    if got.sha256 != decl.sha256 {
        return Err(IngestError::Integrity {
            what: "sha256",
            declared: decl.sha256.to_hex(),
            computed: got.sha256.to_hex(),
        });
    }
    if let (Some(d), Some(g)) = (decl.sm3, got.sm3)
        && d != g
    {
        return Err(IngestError::Integrity {
            what: "sm3",
            declared: d.to_hex(),
            computed: g.to_hex(),
        });
    }
    Ok(())
}

/// Writes one upload's bytes. Obtained from [`Ingest::writer`]; call [`UploadWriter::finish`] at the end of
/// every stream (also after an error) so that the bytes received are made durable and counted.
#[derive(Debug)]
pub struct UploadWriter {
    ingest: Ingest,
    upload: UploadId,
    size: u64,
    /// The committed size saved in the database.
    saved: u64,
    staged: StagedWriter,
    /// A failed append leaves the staging area in an unknown state past the committed size: no more
    /// appends; finish only saves what was durable before.
    poisoned: bool,
    _guard: BusyGuard,
}

impl UploadWriter {
    pub fn upload_id(&self) -> UploadId {
        self.upload
    }

    /// Bytes received so far: where the next chunk must start.
    pub fn received(&self) -> u64 {
        self.staged.received()
    }

    /// Bytes durable and saved.
    pub fn committed(&self) -> u64 {
        self.saved
    }

    /// Appends one chunk starting at `offset`.
    pub async fn write(&mut self, offset: i64, data: Bytes) -> Result<(), IngestError> {
        let r = self.write_inner(offset, data).await;
        self.ingest.observe("write", r)
    }

    async fn write_inner(&mut self, offset: i64, data: Bytes) -> Result<(), IngestError> {
        if self.poisoned {
            return Err(IngestError::Internal(format!(
                "writer of upload {} failed earlier",
                self.upload
            )));
        }
        let len = data.len() as u64;
        check_write(offset, len, self.received(), self.size).map_err(|refusal| {
            IngestError::Refused {
                id: self.upload,
                refusal,
                committed: self.saved,
            }
        })?;
        if len == 0 {
            return Ok(());
        }
        match self.staged.append(data).await {
            Ok(Some(cp)) => self.save(cp).await?,
            Ok(None) => {}
            Err(e) => {
                self.poisoned = true;
                return Err(e.into());
            }
        }
        self.ingest.inner.metrics.upload_bytes.inc_by(len);
        Ok(())
    }

    async fn save(&mut self, cp: Checkpoint) -> Result<(), IngestError> {
        let t = now();
        let expires = t.saturating_add_micros(self.ingest.ttl_micros());
        self.ingest
            .inner
            .meta
            .checkpoint_upload(
                self.upload,
                self.saved,
                cp.committed,
                &cp.staging,
                t,
                expires,
            )
            .await?;
        self.saved = cp.committed;
        Ok(())
    }

    /// Makes every byte received durable and returns the committed size.
    pub async fn finish(mut self) -> Result<u64, IngestError> {
        if !self.poisoned
            && let Some(cp) = self.staged.flush().await?
        {
            self.save(cp).await?;
        }
        Ok(self.saved)
    }
}
