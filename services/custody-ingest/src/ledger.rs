//! The ledger service: queues events, sequences them into the Merkle log, publishes tiles and signed
//! checkpoints, and answers with proofs.
//!
//! Order of operations (each step idempotent, so a crash anywhere is repaired on restart):
//! 1. an event is queued as a `ledger_pending` row (for an ingest, in the evidence commit's transaction);
//! 2. the sequencer takes a batch, builds each entry (with the per-recorder and per-item chain links),
//!    hashes it on a blocking thread, and writes entries, stored hashes and the new size in one
//!    compare-and-set transaction: a batch is in the log entirely or not at all, and two sequencers can
//!    never both extend the same size, so the log cannot fork;
//! 3. tiles and entry bundles for the new entries are written to the object store, then `tiles_size`;
//! 4. a checkpoint is signed, stored, and published; waiters for a receipt wake up.
//!
//! A sequencer that restarts finds `tiles_size` or `checkpoint_size` behind `size` and finishes 3 and 4.

use crate::error::IngestError;
use crate::now;
use bytes::Bytes;
use custody_core::ledger::{
    EdgeTree, EventKind, HashMapReader, LedgerEntry, LedgerProof, Tile, TreeHash, frontier_indexes,
    hashes_read_by, prove_record, prove_tree, sign_checkpoint, tile_path, tiles_for_growth,
    tree_hash,
};
use custody_core::{DeviceId, EvidenceId};
use custody_store::{
    Blobs, IntegrationBatch, LedgerState, Metadata, PendingEvent, StoreError, StoredCheckpoint,
    StoredEntry,
};
use futures::{StreamExt, TryStreamExt};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};

/// Object-store prefix of everything the ledger publishes.
pub const LEDGER_PREFIX: &str = "ledger";

/// Settings of the sequencer.
#[derive(Debug, Clone)]
pub struct LedgerConfig {
    /// A batch closes when it holds this many entries...
    pub batch_max: u32,
    /// ...or when this long has passed since the sequencer was woken for it.
    pub batch_interval: Duration,
    /// How long a request waits for a checkpoint to cover its entry before it is told to retry.
    pub receipt_timeout: Duration,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            batch_max: 4096,
            batch_interval: Duration::from_millis(50),
            receipt_timeout: Duration::from_secs(10),
        }
    }
}

/// The keys that sign checkpoints, in signed-note text form: an Ed25519 key, and optionally an SM2 key.
/// All are for the same log name (the checkpoint origin).
#[derive(Clone)]
pub struct LedgerKeys {
    pub origin: String,
    pub signing: Vec<String>,
    pub verifiers: Vec<String>,
}

impl std::fmt::Debug for LedgerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerKeys")
            .field("origin", &self.origin)
            .field("signing", &"<redacted>")
            .field("verifiers", &self.verifiers)
            .finish()
    }
}

/// The ledger. Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    meta: Metadata,
    blobs: Blobs,
    config: LedgerConfig,
    keys: LedgerKeys,
    /// Wakes the sequencer when this process queued an event.
    wake: Notify,
    /// Events queued by this process since the sequencer last looked.
    queued: std::sync::atomic::AtomicU64,
    /// Size of the newest checkpoint this process published or saw.
    published: watch::Sender<u64>,
}

/// One event of an item with its proof.
#[derive(Debug, Clone)]
pub struct HistoryItem {
    pub index: u64,
    pub entry: LedgerEntry,
    pub proof: LedgerProof,
}

fn tree_err(e: impl std::fmt::Display) -> IngestError {
    IngestError::Internal(format!("ledger tree: {e}"))
}

/// The object key of a tile, or of the entry bundle that goes with a level-0 tile.
fn tile_key(tile: &Tile) -> String {
    format!("{LEDGER_PREFIX}/{}", tile_path(tile))
}

fn bundle_key(tile: &Tile) -> String {
    let mut data = *tile;
    data.set_is_data();
    format!("{LEDGER_PREFIX}/{}", tile_path(&data))
}

impl Ledger {
    pub fn new(meta: Metadata, blobs: Blobs, config: LedgerConfig, keys: LedgerKeys) -> Self {
        Self {
            inner: Arc::new(Inner {
                meta,
                blobs,
                config,
                keys,
                wake: Notify::new(),
                queued: std::sync::atomic::AtomicU64::new(0),
                published: watch::Sender::new(0),
            }),
        }
    }

    pub fn keys(&self) -> &LedgerKeys {
        &self.inner.keys
    }

    /// Queues an event. It is durable when this returns and will be in the log within a batch interval
    /// (while a sequencer runs somewhere).
    pub async fn append(&self, event: PendingEvent) -> Result<(), IngestError> {
        self.inner.meta.append_pending(&event).await?;
        self.notify_queued();
        Ok(())
    }

    /// Queues many events in a few transactions (bulk loads and benchmarks) and wakes the sequencer once.
    /// Durable when this returns, like [`Ledger::append`].
    pub async fn append_many(&self, events: &[PendingEvent]) -> Result<(), IngestError> {
        if events.is_empty() {
            return Ok(());
        }
        self.inner.meta.append_many(events).await?;
        self.inner
            .queued
            .fetch_add(events.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Tells the sequencer that this process queued an event some other way (inside a commit, or with
    /// a case link's own transaction).
    pub fn notify_queued(&self) {
        self.inner
            .queued
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.wake.notify_one();
    }

    /// The newest signed checkpoint, if the log has any entry yet.
    pub async fn checkpoint(&self) -> Result<Option<StoredCheckpoint>, IngestError> {
        Ok(self.inner.meta.latest_checkpoint().await?)
    }

    /// How many events wait for the sequencer.
    pub async fn pending(&self) -> Result<u64, IngestError> {
        Ok(self.inner.meta.pending_count().await?)
    }

    pub async fn state(&self) -> Result<LedgerState, IngestError> {
        Ok(self.inner.meta.ledger_state().await?)
    }

    /// A published tile or entry bundle, by its C2SP path (`tile/...`), already parsed and checked.
    pub async fn tile(&self, path: &str) -> Result<Bytes, IngestError> {
        Ok(self
            .inner
            .blobs
            .get_all(&format!("{LEDGER_PREFIX}/{path}"))
            .await?)
    }

    // ---- proofs ----

    async fn published_size(&self) -> Result<u64, IngestError> {
        Ok(self.inner.meta.ledger_state().await?.checkpoint_size)
    }

    /// RFC 6962 inclusion proof of leaf `index` in the tree of `size` leaves (a published size).
    pub async fn inclusion_proof(
        &self,
        index: u64,
        size: u64,
    ) -> Result<Vec<TreeHash>, IngestError> {
        let published = self.published_size().await?;
        if size > published || size == 0 {
            return Err(IngestError::InvalidArgument(format!(
                "size {size} is not a published tree size (the newest checkpoint has {published} entries)"
            )));
        }
        if index >= size {
            return Err(IngestError::InvalidArgument(format!(
                "index {index} is not a leaf of the tree of {size} entries"
            )));
        }
        let wanted = hashes_read_by(|r| prove_record(size, index, r)).map_err(tree_err)?;
        let reader = HashMapReader(self.inner.meta.ledger_hashes(&wanted).await?);
        prove_record(size, index, &reader).map_err(tree_err)
    }

    /// RFC 6962 consistency proof between two published tree sizes.
    pub async fn consistency_proof(
        &self,
        old: u64,
        new: u64,
    ) -> Result<Vec<TreeHash>, IngestError> {
        let published = self.published_size().await?;
        if new > published || old > new || old == 0 {
            return Err(IngestError::InvalidArgument(format!(
                "expected 0 < old <= new <= {published} (the newest checkpoint's size), got old={old} new={new}"
            )));
        }
        let wanted = hashes_read_by(|r| prove_tree(new, old, r)).map_err(tree_err)?;
        let reader = HashMapReader(self.inner.meta.ledger_hashes(&wanted).await?);
        prove_tree(new, old, &reader).map_err(tree_err)
    }

    /// The root hash of a tree size held in the log.
    pub async fn root(&self, size: u64) -> Result<TreeHash, IngestError> {
        let wanted = hashes_read_by(|r| tree_hash(size, r)).map_err(tree_err)?;
        let reader = HashMapReader(self.inner.meta.ledger_hashes(&wanted).await?);
        tree_hash(size, &reader).map_err(tree_err)
    }

    /// A proof of entry `index` against the newest checkpoint.
    async fn proof_of(
        &self,
        stored: &StoredEntry,
        cp: &StoredCheckpoint,
    ) -> Result<LedgerProof, IngestError> {
        let path = self.inclusion_proof(stored.index, cp.size).await?;
        Ok(LedgerProof::new(
            &stored.entry,
            stored.index,
            &path,
            cp.note.as_bytes(),
        ))
    }

    /// Every event of one item, each with its proof against the newest checkpoint. Events not yet covered
    /// by a checkpoint are left out.
    pub async fn history(&self, evidence: EvidenceId) -> Result<Vec<HistoryItem>, IngestError> {
        let Some(cp) = self.checkpoint().await? else {
            return Ok(Vec::new());
        };
        let entries = self.inner.meta.ledger_entries_of(evidence).await?;
        let mut out = Vec::with_capacity(entries.len());
        for stored in entries.iter().filter(|e| e.index < cp.size) {
            let entry = LedgerEntry::decode(&stored.entry).map_err(|e| {
                IngestError::Store(StoreError::Corrupt(format!(
                    "ledger entry {}: {e}",
                    stored.index
                )))
            })?;
            out.push(HistoryItem {
                index: stored.index,
                entry,
                proof: self.proof_of(stored, &cp).await?,
            });
        }
        Ok(out)
    }

    /// The receipt of an item's ingest: waits (up to the receipt timeout) until the ingest entry is in
    /// the log and a signed checkpoint covers it.
    pub async fn ingest_receipt(&self, evidence: EvidenceId) -> Result<LedgerProof, IngestError> {
        let deadline = Instant::now() + self.inner.config.receipt_timeout;
        let mut published = self.inner.published.subscribe();
        let meta = &self.inner.meta;
        loop {
            if let Some(index) = meta.ingest_leaf(evidence).await?
                && let Some(cp) = meta.latest_checkpoint().await?
                && cp.size > index
            {
                let stored = meta
                    .ledger_entries(index, index + 1)
                    .await?
                    .pop()
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!("ledger entry {index} is missing"))
                    })?;
                return self.proof_of(&stored, &cp).await;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(IngestError::LedgerBehind {
                    evidence,
                    waited: self.inner.config.receipt_timeout,
                });
            }
            // Woken by this process's sequencer; polled for one on another replica.
            let poll = left.min(Duration::from_millis(100));
            let _ = tokio::time::timeout(poll, published.changed()).await;
        }
    }

    // ---- sequencing ----

    /// Runs the sequencer until `shutdown` resolves: takes the sequencer lock (waiting while another
    /// replica holds it), repairs unfinished publication, then integrates batches as events arrive.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut backoff = Duration::from_millis(200);
        loop {
            let lock = tokio::select! {
                _ = &mut shutdown => return,
                l = self.inner.meta.try_sequencer_lock() => l,
            };
            let mut lock = match lock {
                Ok(Some(lock)) => lock,
                Ok(None) => {
                    tracing::debug!("another replica sequences the ledger");
                    tokio::select! {
                        _ = &mut shutdown => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot take the sequencer lock; will retry");
                    tokio::select! {
                        _ = &mut shutdown => return,
                        _ = tokio::time::sleep(backoff) => { backoff = (backoff * 2).min(Duration::from_secs(10)); continue }
                    }
                }
            };
            let mut seq = match Sequencer::start(self.clone()).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "ledger sequencer cannot start; will retry");
                    tokio::select! {
                        _ = &mut shutdown => return,
                        _ = tokio::time::sleep(backoff) => { backoff = (backoff * 2).min(Duration::from_secs(10)); continue }
                    }
                }
            };
            tracing::info!(size = seq.tree.size(), "ledger sequencer running");
            backoff = Duration::from_millis(200);
            let interval = self.inner.config.batch_interval;
            let batch_max = u64::from(self.inner.config.batch_max);
            loop {
                // Wait for work: an event queued here, or a poll for events queued by other replicas.
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = self.inner.wake.notified() => {}
                    _ = tokio::time::sleep(interval) => {}
                }
                // Let a batch fill: up to `batch_max` events or one interval.
                let opened = Instant::now();
                while self.inner.queued.load(std::sync::atomic::Ordering::Relaxed) < batch_max
                    && opened.elapsed() < interval
                {
                    tokio::select! {
                        _ = self.inner.wake.notified() => {}
                        _ = tokio::time::sleep(interval.saturating_sub(opened.elapsed())) => {}
                    }
                }
                if !lock.still_held().await {
                    tracing::warn!("lost the sequencer lock; taking it again");
                    break;
                }
                match seq.drain().await {
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "ledger sequencing failed; restarting the sequencer");
                        tokio::select! {
                            _ = &mut shutdown => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        break;
                    }
                }
            }
        }
    }

    /// Sequences everything pending now, in this process, and publishes a checkpoint: for tools and
    /// tests that run without the background sequencer. Returns the log size.
    pub async fn sequence_now(&self) -> Result<u64, IngestError> {
        let mut seq = Sequencer::start(self.clone()).await?;
        seq.drain().await?;
        Ok(seq.tree.size())
    }
}

/// The state of a running sequencer: the edge of the tree and caches of the chain heads.
struct Sequencer {
    ledger: Ledger,
    tree: EdgeTree,
    device_heads: HashMap<DeviceId, Option<u64>>,
    evidence_heads: HashMap<EvidenceId, Option<u64>>,
}

/// Chain-head caches are dropped past this many keys; misses are read from the database.
const HEAD_CACHE_LIMIT: usize = 100_000;

impl Sequencer {
    /// Loads the tree's edge and finishes any publication a crash interrupted.
    async fn start(ledger: Ledger) -> Result<Self, IngestError> {
        let meta = &ledger.inner.meta;
        let state = meta.ledger_state().await?;
        let indexes = frontier_indexes(state.size);
        let map = meta.ledger_hashes(&indexes).await?;
        let frontier: Vec<TreeHash> = indexes.iter().filter_map(|i| map.get(i).copied()).collect();
        let tree = EdgeTree::from_frontier(state.size, &frontier).map_err(tree_err)?;
        let mut seq = Self {
            ledger,
            tree,
            device_heads: HashMap::new(),
            evidence_heads: HashMap::new(),
        };
        if state.tiles_size < state.size || state.checkpoint_size < state.size {
            tracing::info!(
                size = state.size,
                tiles = state.tiles_size,
                checkpoint = state.checkpoint_size,
                "finishing ledger publication interrupted by a restart"
            );
            seq.publish(state.tiles_size, state.size).await?;
        }
        Ok(seq)
    }

    /// Integrates and publishes batches until nothing is pending.
    /// On error the sequencer must be dropped: its caches may be ahead of the log.
    async fn drain(&mut self) -> Result<(), IngestError> {
        let batch_max = self.ledger.inner.config.batch_max;
        loop {
            self.ledger
                .inner
                .queued
                .store(0, std::sync::atomic::Ordering::Relaxed);
            let old = self.tree.size();
            let n = self.integrate(batch_max).await?;
            if n == 0 {
                return Ok(());
            }
            self.publish(old, self.tree.size()).await?;
            if n < batch_max as usize {
                return Ok(());
            }
        }
    }

    /// The newest leaf about a recorder's evidence: the link of its next entry.
    async fn device_head(&mut self, device: &DeviceId) -> Result<Option<u64>, IngestError> {
        if let Some(h) = self.device_heads.get(device) {
            return Ok(*h);
        }
        let h = self.ledger.inner.meta.last_leaf_of_device(device).await?;
        self.device_heads.insert(device.clone(), h);
        Ok(h)
    }

    /// The newest leaf about one item.
    async fn evidence_head(&mut self, evidence: EvidenceId) -> Result<Option<u64>, IngestError> {
        if let Some(h) = self.evidence_heads.get(&evidence) {
            return Ok(*h);
        }
        let h = self
            .ledger
            .inner
            .meta
            .last_leaf_of_evidence(evidence)
            .await?;
        self.evidence_heads.insert(evidence, h);
        Ok(h)
    }

    /// Takes up to `max` pending events into the log. Returns how many.
    async fn integrate(&mut self, max: u32) -> Result<usize, IngestError> {
        let rows = self.ledger.inner.meta.pending_batch(max).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        if self.device_heads.len() > HEAD_CACHE_LIMIT
            || self.evidence_heads.len() > HEAD_CACHE_LIMIT
        {
            self.device_heads.clear();
            self.evidence_heads.clear();
        }
        let old_size = self.tree.size();
        let mut entries = Vec::with_capacity(rows.len());
        let mut pending_ids = Vec::with_capacity(rows.len());
        // Chain links first (database reads); heads are updated as if the batch were already in the
        // log. If it does not get there, this sequencer returns an error and is dropped (`run` starts a
        // new one from the database), so the caches never outlive a failed batch.
        for (i, row) in rows.into_iter().enumerate() {
            let index = old_size + i as u64;
            let ev = &row.event;
            let prev_device_leaf = self.device_head(&row.device_id).await?;
            let prev_evidence_leaf = self.evidence_head(ev.evidence_id).await?;
            self.device_heads.insert(row.device_id.clone(), Some(index));
            self.evidence_heads.insert(ev.evidence_id, Some(index));
            let entry = LedgerEntry {
                v: custody_core::ledger::ENTRY_VERSION,
                kind: ev.kind,
                evidence_id: ev.evidence_id,
                sha256: row.sha256,
                sm3: row.sm3,
                size: row.size,
                device_id: row.device_id.clone(),
                station_id: Some(row.station_id.clone()),
                officer: ev.officer.clone(),
                actor: ev.actor.clone(),
                device_time: Some(row.captured_at),
                server_time: ev.server_time,
                prev_device_leaf,
                prev_evidence_leaf,
                detail: ev.detail.clone(),
            };
            pending_ids.push(row.id);
            entries.push(StoredEntry {
                index,
                kind: ev.kind,
                evidence_id: ev.evidence_id,
                device_id: row.device_id,
                entry: entry.encode(),
            });
        }
        // Hashing on a blocking thread: a batch is thousands of SHA-256 computations.
        let mut tree = self.tree.clone();
        let (tree, entries, hashes) = tokio::task::spawn_blocking(move || {
            let mut hashes = Vec::with_capacity(entries.len() * 2);
            for e in &entries {
                let (_, added) = tree.append(&e.entry).map_err(tree_err)?;
                hashes.extend(added);
            }
            tree.prune();
            Ok::<_, IngestError>((tree, entries, hashes))
        })
        .await
        .map_err(|e| IngestError::Internal(format!("ledger hashing task failed: {e}")))??;
        let n = entries.len();
        let batch = IntegrationBatch {
            old_size,
            entries,
            hashes,
            pending_ids,
        };
        self.ledger.inner.meta.integrate(&batch).await?;
        self.tree = tree;
        Ok(n)
    }

    /// Writes the tiles and entry bundles for entries `old..new`, then signs and stores a checkpoint of
    /// size `new` and wakes receipt waiters.
    async fn publish(&mut self, old: u64, new: u64) -> Result<(), IngestError> {
        let inner = &self.ledger.inner;
        let (meta, blobs) = (&inner.meta, &inner.blobs);
        let tiles = tiles_for_growth(old, new);
        let wanted = hashes_read_by(|r| {
            tiles
                .iter()
                .map(|t| t.read_data(r))
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(tree_err)?;
        let reader = HashMapReader(meta.ledger_hashes(&wanted).await?);
        let mut objects: Vec<(String, Bytes)> = Vec::new();
        for tile in &tiles {
            let data = tile.read_data(&reader).map_err(tree_err)?;
            objects.push((tile_key(tile), data.into()));
            if tile.level() == 0 {
                let start = tile.level_index() << 8;
                let width = match tile.width() {
                    0 => 256,
                    w => u64::from(w),
                };
                let end = start + width;
                let stored = meta.ledger_entries(start, end).await?;
                if stored.len() as u64 != end - start
                    || stored.iter().zip(start..).any(|(e, i)| e.index != i)
                {
                    return Err(StoreError::Corrupt(format!(
                        "ledger_entries lacks rows in {start}..{end}, which the log holds"
                    ))
                    .into());
                }
                let bundle = custody_core::ledger::encode_entry_bundle(
                    &stored
                        .iter()
                        .map(|e| e.entry.as_slice())
                        .collect::<Vec<_>>(),
                )
                .map_err(tree_err)?;
                objects.push((bundle_key(tile), bundle.into()));
            }
        }
        futures::stream::iter(objects)
            .map(|(key, data)| async move { blobs.put(&key, data).await })
            .buffer_unordered(16)
            .try_collect::<Vec<()>>()
            .await?;
        meta.set_tiles_size(new).await?;

        let root = self.ledger.root(new).await?;
        let keys = &inner.keys;
        let signing: Vec<&str> = keys.signing.iter().map(String::as_str).collect();
        let note = sign_checkpoint(&keys.origin, new, root, &signing)
            .map_err(|e| IngestError::Internal(format!("signing a checkpoint: {e}")))?;
        let note = String::from_utf8(note)
            .map_err(|e| IngestError::Internal(format!("checkpoint is not UTF-8: {e}")))?;
        let cp = StoredCheckpoint {
            size: new,
            root,
            note: note.clone(),
            created_at: now(),
        };
        meta.add_checkpoint(&cp).await?;
        blobs
            .put(&format!("{LEDGER_PREFIX}/checkpoint"), note.into())
            .await?;
        inner.published.send_replace(new);
        tracing::debug!(size = new, "ledger checkpoint published");
        Ok(())
    }
}

/// Used by the intake for view and download events.
pub(crate) fn access_event(kind: EventKind, evidence: EvidenceId, actor: &str) -> PendingEvent {
    PendingEvent {
        kind,
        evidence_id: evidence,
        actor: actor.to_string(),
        officer: None,
        detail: None,
        server_time: now(),
    }
}
