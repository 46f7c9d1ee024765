//! The agent: watches the slots, records every file of a docked recorder in the journal, and moves each
//! file along found → hashed → uploading → receipted → freed, important files first.
//!
//! The rules that keep evidence safe, in order:
//! - a journal state is durable before the work that depends on it starts (SQLite, full fsync);
//! - a file is hashed only while it does not change (size and modification time checked before, during
//!   and after), and uploaded only while it still is the file that was hashed;
//! - the server's receipt is verified offline against the pinned ledger key(s) and must name exactly the
//!   hashed bytes; only a verified receipt, checked again just before, lets a file be freed;
//! - any error is noted beside the row's state with a retry time and a log line; nothing is dropped.
//!
//! Hashing runs on blocking threads (`hash_threads` at once); uploads share `concurrency` slots and one
//! bandwidth cap.

use crate::config::{FreePolicy, Slot, StationConfig};
use crate::journal::{DockRow, FileRow, FileState, Journal, JournalError, NewFile};
use crate::scan::{self, Listed, Probe};
use custody_client::{Source, Throttle, UploadError, Uploader, receipt_proof};
use custody_core::ledger::{EventKind, LedgerProof};
use custody_core::recorder::{DEVICE_INFO_FILE, DeviceInfo, UPLOADED_DIR};
use custody_core::station::StationCredential;
use custody_core::{ContentHasher, DeviceId, Digests, StationId, Timestamp};
use custody_proto::v1 as pb;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tonic::Code;

/// The wall clock, read in one place.
pub fn now() -> Timestamp {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::from_unix_micros(i64::try_from(since_epoch.as_micros()).unwrap_or(i64::MAX))
}

/// A recorder docked in a slot.
#[derive(Debug, Clone)]
pub struct Docked {
    pub dock_id: i64,
    pub info: DeviceInfo,
    pub docked_at: Timestamp,
    pub clock_offset_ms: Option<i64>,
    /// Cancelled when the recorder leaves the slot: its jobs stop at the next chunk.
    pub cancel: CancellationToken,
    /// File versions already in the journal, so that each poll writes only what is new.
    known: Arc<Mutex<HashSet<(String, i64, i64)>>>,
}

/// One slot as the agent sees it.
#[derive(Debug, Clone)]
pub struct SlotRuntime {
    pub slot: Slot,
    pub docked: Option<Docked>,
    /// Why something mounted here is not offloaded (e.g. an unreadable device-info file).
    pub problem: Option<String>,
}

/// Counters for progress displays, per recorder.
#[derive(Debug, Default)]
pub struct DeviceLive {
    /// Bytes handed to the server in this run.
    pub sent: AtomicU64,
    /// Bytes handed to the server whose acknowledgement is not in the journal yet (the journal records
    /// the offset once per segment; progress displays add these to move smoothly in between).
    pub unsaved: AtomicU64,
    /// Bytes hashed in this run.
    pub hashed: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    slots: BTreeMap<String, SlotRuntime>,
    /// Rows with a job running, and their recorder.
    inflight: HashMap<i64, DeviceId>,
    live: HashMap<DeviceId, Arc<DeviceLive>>,
}

/// The docking-station agent. Create with [`Agent::new`], run with [`Agent::run`].
#[derive(Debug)]
pub struct Agent {
    cfg: StationConfig,
    credential: StationCredential,
    station_id: StationId,
    journal: Journal,
    uploader: Uploader,
    keys: Vec<String>,
    hash_sem: Semaphore,
    upload_sem: Semaphore,
    state: Mutex<State>,
    wake: Notify,
    uploads_active: AtomicU32,
    started: Instant,
}

/// Why a step stopped, and what the journal should say.
#[derive(Debug)]
enum Problem {
    /// Try again after a backoff.
    Retry {
        kind: &'static str,
        message: String,
        severe: bool,
    },
    /// The recorder left its slot: resume when it is back.
    Undocked(String),
    /// The file is not what was found or hashed any more: this row ends, the new content gets its own.
    Changed(String),
    /// Start the file over from hashing.
    Restart {
        kind: &'static str,
        message: String,
    },
    Journal(JournalError),
}

impl From<JournalError> for Problem {
    fn from(e: JournalError) -> Self {
        Self::Journal(e)
    }
}

/// Turns a server answer into what to do about it.
fn server_problem(step: &str, s: &tonic::Status) -> Problem {
    let (kind, severe, what) = match s.code() {
        Code::ResourceExhausted => ("server_full", true, "the server's storage is full"),
        Code::Unauthenticated | Code::PermissionDenied => (
            "credential",
            true,
            "the server refused this station's credential",
        ),
        Code::InvalidArgument | Code::OutOfRange => {
            ("refused", true, "the server refused the file's declaration")
        }
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => (
            "server_unreachable",
            false,
            "the server could not be reached",
        ),
        _ => ("server_error", true, "the server answered with an error"),
    };
    Problem::Retry {
        kind,
        message: format!("{what} ({step}: {} {})", s.code(), s.message()),
        severe,
    }
}

impl Agent {
    /// Builds an agent: reads the pinned keys and the credential, opens the journal and connects to the
    /// server lazily (the first call connects; an unreachable server is retried, not fatal).
    pub async fn new(cfg: StationConfig) -> anyhow::Result<Arc<Self>> {
        let station_id = StationId::parse(cfg.station_id.clone())
            .map_err(|e| anyhow::anyhow!("station_id: {}", e.reason))?;
        let keys = cfg.read_ledger_keys()?;
        let credential = cfg.credential()?;
        let journal = Journal::open(&cfg.journal).await?;
        let mut uploader = Uploader::connect_lazy(&cfg.server, &credential.token())?
            .with_chunk_size(usize::try_from(cfg.chunk_size.as_u64()).unwrap_or(1 << 20));
        if cfg.bandwidth.as_u64() > 0 {
            uploader = uploader.with_throttle(Arc::new(Throttle::new(cfg.bandwidth.as_u64())));
        }
        Ok(Arc::new(Self {
            credential,
            station_id,
            journal,
            uploader,
            keys,
            hash_sem: Semaphore::new(cfg.hash_threads),
            upload_sem: Semaphore::new(cfg.concurrency),
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            uploads_active: AtomicU32::new(0),
            started: Instant::now(),
            cfg,
        }))
    }

    pub fn config(&self) -> &StationConfig {
        &self.cfg
    }

    /// The station's credential (for the MQTT login).
    pub fn credential(&self) -> &StationCredential {
        &self.credential
    }

    pub fn station_id(&self) -> &StationId {
        &self.station_id
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn uploads_active(&self) -> u32 {
        self.uploads_active.load(Ordering::Relaxed)
    }

    /// The slots as last seen.
    pub fn slots(&self) -> Vec<SlotRuntime> {
        self.lock().slots.values().cloned().collect()
    }

    /// Progress counters of a recorder.
    pub fn live(&self, device: &DeviceId) -> Arc<DeviceLive> {
        self.lock().live.entry(device.clone()).or_default().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the state itself stays consistent.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs until `shutdown` is cancelled, then stops the jobs (the server keeps what was acknowledged;
    /// the journal says where each file stood) and returns.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> anyhow::Result<()> {
        let stale = self.journal.close_stale_docks(now()).await?;
        if stale > 0 {
            tracing::info!(docks = stale, "closed docks left open by the previous run");
        }
        tracing::info!(station = %self.station_id, server = %self.cfg.server,
            policy = self.cfg.free_policy.as_str(), concurrency = self.cfg.concurrency,
            bandwidth = self.cfg.bandwidth.as_u64(), "station agent started");
        loop {
            if let Err(e) = self.clone().poll().await {
                tracing::error!(error = %e, "looking at the slots failed; trying again");
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(self.cfg.poll_interval) => {}
                _ = self.wake.notified() => {}
            }
        }
        tracing::info!("stopping: cancelling uploads in progress");
        for s in self.slots() {
            if let Some(d) = s.docked {
                d.cancel.cancel();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.lock().inflight.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.journal.close().await;
        tracing::info!("station agent stopped");
        Ok(())
    }

    /// One look at every slot: docks, undocks, new files, and new jobs.
    async fn poll(self: Arc<Self>) -> Result<(), JournalError> {
        let cfg = self.cfg.clone();
        let probes = tokio::task::spawn_blocking(move || {
            cfg.slots()
                .into_iter()
                .map(|s| {
                    let p = scan::probe(&s.mount);
                    (s, p)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let present: HashSet<String> = probes.iter().map(|(s, _)| s.name.clone()).collect();
        let gone: Vec<SlotRuntime> = {
            let mut st = self.lock();
            let gone: Vec<String> = st
                .slots
                .keys()
                .filter(|k| !present.contains(*k))
                .cloned()
                .collect();
            gone.iter().filter_map(|k| st.slots.remove(k)).collect()
        };
        for s in gone {
            if let Some(d) = &s.docked {
                self.undock(&s.slot, d).await?;
            }
        }
        for (slot, probe) in probes {
            self.observe(slot, probe).await?;
        }
        let docked: Vec<(Slot, Docked)> = self
            .slots()
            .into_iter()
            .filter_map(|s| s.docked.map(|d| (s.slot, d)))
            .collect();
        for (slot, d) in &docked {
            self.reconcile(slot, d).await?;
        }
        self.schedule(&docked).await
    }

    /// Applies what a slot shows now to what it showed before.
    async fn observe(&self, slot: Slot, probe: Probe) -> Result<(), JournalError> {
        let prev = self.lock().slots.get(&slot.name).cloned();
        let prev_docked = prev.as_ref().and_then(|p| p.docked.clone());
        let (docked, problem) = match probe {
            Probe::Docked(info) => match prev_docked {
                Some(d) if d.info.device_id == info.device_id => (Some(d), None),
                other => {
                    if let Some(d) = other {
                        self.undock(&slot, &d).await?;
                    }
                    let elsewhere = self.lock().slots.values().any(|s| {
                        s.slot.name != slot.name
                            && s.docked
                                .as_ref()
                                .is_some_and(|d| d.info.device_id == info.device_id)
                    });
                    if elsewhere {
                        (
                            None,
                            Some(format!(
                                "recorder {} is already docked in another slot",
                                info.device_id
                            )),
                        )
                    } else {
                        (Some(self.dock(&slot, info).await?), None)
                    }
                }
            },
            Probe::Empty => {
                if let Some(d) = prev_docked {
                    self.undock(&slot, &d).await?;
                }
                (None, None)
            }
            Probe::Unreadable(why) => {
                if let Some(d) = prev_docked {
                    self.undock(&slot, &d).await?;
                }
                (
                    None,
                    Some(format!("the docked recorder cannot be read: {why}")),
                )
            }
        };
        if let Some(p) = &problem
            && prev.as_ref().and_then(|s| s.problem.as_ref()) != Some(p)
        {
            tracing::error!(slot = %slot.name, mount = %slot.mount.display(), problem = %p,
                "slot not offloaded");
        }
        self.lock().slots.insert(
            slot.name.clone(),
            SlotRuntime {
                slot,
                docked,
                problem,
            },
        );
        Ok(())
    }

    async fn dock(&self, slot: &Slot, info: DeviceInfo) -> Result<Docked, JournalError> {
        let t = now();
        let clock_offset_ms = info
            .clock
            .map(|c| (c.unix_micros() - t.unix_micros()) / 1000);
        let dock_id = self
            .journal
            .open_dock(&DockRow {
                id: 0,
                slot: slot.name.clone(),
                device_id: info.device_id.clone(),
                badge: info.badge.to_string(),
                officer_name: info.officer_name.clone(),
                unit_no: info.unit_no.clone(),
                unit_name: info.unit_name.clone(),
                clock_offset_ms,
                docked_at: t,
                undocked_at: None,
            })
            .await?;
        let known: HashSet<(String, i64, i64)> = self
            .journal
            .files_of(&info.device_id)
            .await?
            .into_iter()
            .map(|r| (r.rel_path, r.size, r.mtime_ns))
            .collect();
        tracing::info!(slot = %slot.name, device = %info.device_id, badge = %info.badge,
            officer = %info.officer_name, unit = %info.unit_name, clock_offset_ms,
            "recorder docked");
        Ok(Docked {
            dock_id,
            info,
            docked_at: t,
            clock_offset_ms,
            cancel: CancellationToken::new(),
            known: Arc::new(Mutex::new(known)),
        })
    }

    async fn undock(&self, slot: &Slot, d: &Docked) -> Result<(), JournalError> {
        d.cancel.cancel();
        self.journal.close_dock(d.dock_id, now()).await?;
        let t = self.journal.tally(&d.info.device_id).await?;
        if t.files_pending > 0 {
            tracing::warn!(slot = %slot.name, device = %d.info.device_id, files_pending = t.files_pending,
                bytes_pending = t.bytes_pending,
                "recorder undocked before all its files were received; they resume when it is docked again");
        } else {
            tracing::info!(slot = %slot.name, device = %d.info.device_id, files_done = t.files_done,
                "recorder undocked");
        }
        Ok(())
    }

    /// Records new files of a docked recorder and notices files that disappeared before their receipt.
    async fn reconcile(&self, slot: &Slot, d: &Docked) -> Result<(), JournalError> {
        let (mount, info, settle) = (slot.mount.clone(), d.info.clone(), self.cfg.settle_time);
        let listed: Vec<Listed> =
            tokio::task::spawn_blocking(move || scan::list_media(&mount, &info, settle))
                .await
                .unwrap_or_default();
        if d.cancel.is_cancelled() {
            return Ok(());
        }
        let t = now();
        for f in &listed {
            let key = (f.rel_path.clone(), f.size, f.mtime_ns);
            if d.known.lock().map(|k| k.contains(&key)).unwrap_or(true) {
                continue;
            }
            let new = NewFile {
                device_id: d.info.device_id.clone(),
                rel_path: f.rel_path.clone(),
                size: f.size,
                mtime_ns: f.mtime_ns,
                file_name: f.file_name.clone(),
                media_type: f.media_type,
                importance: f.importance,
                captured_at: f.captured_at,
                dock_id: d.dock_id,
            };
            let inflight: HashSet<i64> = self.lock().inflight.keys().copied().collect();
            let id = self.journal.record_found(&new, t, &inflight).await?;
            if let Ok(mut k) = d.known.lock() {
                k.insert(key);
            }
            if let Some(id) = id {
                tracing::debug!(slot = %slot.name, device = %d.info.device_id, file = %f.rel_path,
                    size = f.size, importance = f.importance.mark(), row = id, "file found");
                if let Some(why) = &f.name_problem {
                    tracing::warn!(slot = %slot.name, file = %f.rel_path, problem = %why,
                        "file name is not in the recorder format; its capture time is taken from its modification time");
                }
                if let Some(why) = &f.unreadable {
                    tracing::warn!(slot = %slot.name, file = %f.rel_path, problem = %why,
                        "file found but unreadable; it will be retried");
                }
            }
        }
        // Open rows whose file is no longer on the docked recorder.
        let present: HashSet<&str> = listed.iter().map(|f| f.rel_path.as_str()).collect();
        let inflight: HashSet<i64> = self.lock().inflight.keys().copied().collect();
        for r in self.journal.files_of(&d.info.device_id).await? {
            if matches!(
                r.state,
                FileState::Found | FileState::Hashed | FileState::Uploading
            ) && !inflight.contains(&r.id)
                && !present.contains(r.rel_path.as_str())
                && scan::fingerprint(&slot.mount.join(&r.rel_path))
                    .map(|f| f.is_none())
                    .unwrap_or(false)
                && slot.mount.join(DEVICE_INFO_FILE).exists()
            {
                let why =
                    "the file disappeared from the docked recorder before the server's receipt";
                tracing::error!(slot = %slot.name, device = %d.info.device_id, file = %r.rel_path,
                    state = %r.state, "{why}");
                self.journal.end(r.id, FileState::Vanished, why, t).await?;
            }
        }
        Ok(())
    }

    /// Starts jobs for the most urgent due files of docked recorders, up to the station's capacity.
    async fn schedule(self: &Arc<Self>, docked: &[(Slot, Docked)]) -> Result<(), JournalError> {
        let capacity = (self.cfg.concurrency + self.cfg.hash_threads)
            .saturating_sub(self.lock().inflight.len());
        if capacity == 0 {
            return Ok(());
        }
        let t = now();
        let mut due: Vec<(FileRow, Slot, Docked)> = Vec::new();
        for (slot, d) in docked {
            let limit = u32::try_from(capacity + self.lock().inflight.len()).unwrap_or(u32::MAX);
            for r in self.journal.due(&d.info.device_id, t, limit).await? {
                due.push((r, slot.clone(), d.clone()));
            }
        }
        due.sort_by(|a, b| {
            (b.0.importance, a.0.captured_at, a.0.id).cmp(&(
                a.0.importance,
                b.0.captured_at,
                b.0.id,
            ))
        });
        let mut started = 0;
        for (row, slot, d) in due {
            if started == capacity {
                break;
            }
            {
                let mut st = self.lock();
                if st.inflight.contains_key(&row.id) {
                    continue;
                }
                st.inflight.insert(row.id, row.device_id.clone());
            }
            started += 1;
            let me = self.clone();
            tokio::spawn(async move {
                let id = row.id;
                me.job(row, slot, d).await;
                me.lock().inflight.remove(&id);
                me.wake.notify_one();
            });
        }
        Ok(())
    }

    /// Moves one file as far as it can go.
    async fn job(&self, mut row: FileRow, slot: Slot, d: Docked) {
        let path = slot.mount.join(&row.rel_path);
        loop {
            if d.cancel.is_cancelled() {
                return;
            }
            let step = match row.state {
                FileState::Found => self.hash(&row, &path, &d).await,
                FileState::Hashed | FileState::Uploading => self.upload(&row, &path, &d).await,
                FileState::Receipted => self.free(&row, &path, &slot.mount).await,
                _ => return,
            };
            if let Err(p) = step {
                self.handle(&row, &slot, p).await;
                return;
            }
            match self.journal.file(row.id).await {
                Ok(Some(r)) if r.state.is_open() && r.state != row.state => row = r,
                Ok(_) => return,
                Err(e) => {
                    tracing::error!(row = row.id, error = %e, "reading the journal failed");
                    return;
                }
            }
        }
    }

    /// Logs a problem and notes it in the journal.
    async fn handle(&self, row: &FileRow, slot: &Slot, p: Problem) {
        let t = now();
        let (slot_name, device, file, state) =
            (&slot.name, &row.device_id, &row.rel_path, row.state);
        let result = match p {
            Problem::Retry {
                kind,
                message,
                severe,
            } => {
                let exp = row.attempts.min(16);
                let wait = self
                    .cfg
                    .retry_min
                    .saturating_mul(1u32 << exp)
                    .min(self.cfg.retry_max);
                if severe {
                    tracing::error!(slot = %slot_name, device = %device, file = %file, state = %state,
                        kind, error = %message, retry_in = ?wait, "file kept on the recorder: {message}");
                } else {
                    tracing::warn!(slot = %slot_name, device = %device, file = %file, state = %state,
                        kind, error = %message, retry_in = ?wait, "file will be retried: {message}");
                }
                let micros = i64::try_from(wait.as_micros()).unwrap_or(i64::MAX);
                self.journal
                    .set_error(row.id, kind, &message, t.saturating_add_micros(micros), t)
                    .await
            }
            Problem::Undocked(message) => {
                tracing::warn!(slot = %slot_name, device = %device, file = %file, state = %state,
                    uploaded = row.uploaded, "{message}");
                self.journal
                    .set_error(row.id, "undocked", &message, t, t)
                    .await
            }
            Problem::Changed(message) => {
                tracing::warn!(slot = %slot_name, device = %device, file = %file, state = %state,
                    "{message}");
                self.journal
                    .end(row.id, FileState::Superseded, &message, t)
                    .await
            }
            Problem::Restart { kind, message } => {
                tracing::error!(slot = %slot_name, device = %device, file = %file, state = %state,
                    kind, "{message}");
                self.journal.restart(row.id, kind, &message, t).await
            }
            Problem::Journal(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::error!(row = row.id, error = %e, "recording a problem in the journal failed");
        }
    }

    /// Whether the recorder holding `path` has left its slot (its device-info file is gone).
    fn undocked_now(&self, path: &Path, d: &Docked) -> bool {
        d.cancel.is_cancelled() || mount_of(path).is_none()
    }

    async fn hash(&self, row: &FileRow, path: &Path, d: &Docked) -> Result<(), Problem> {
        let _permit = self.hash_sem.acquire().await.map_err(|_| {
            Problem::Undocked("the agent is stopping; hashing resumes at the next start".into())
        })?;
        let live = self.live(&row.device_id);
        let (p, size, mtime, sm3, cancel) = (
            path.to_path_buf(),
            row.size,
            row.mtime_ns,
            self.cfg.sm3,
            d.cancel.clone(),
        );
        let started = Instant::now();
        let r = tokio::task::spawn_blocking(move || {
            hash_stable(&p, size, mtime, sm3, &live.hashed, &cancel)
        })
        .await
        .map_err(|e| Problem::Retry {
            kind: "internal",
            message: format!("the hashing thread failed: {e}"),
            severe: true,
        })?;
        match r {
            Ok(digests) => {
                self.journal
                    .set_hashed(row.id, &digests.sha256, digests.sm3.as_ref(), now())
                    .await?;
                tracing::debug!(file = %row.rel_path, sha256 = %digests.sha256, size = digests.size,
                    secs = started.elapsed().as_secs_f64(), "file hashed");
                Ok(())
            }
            Err(HashError::Changed(m)) => Err(Problem::Changed(m)),
            Err(HashError::Cancelled) => Err(Problem::Undocked(
                "the recorder was undocked while the file was being hashed; it is hashed again when docked"
                    .into(),
            )),
            Err(HashError::Io(e)) if self.undocked_now(path, d) => Err(Problem::Undocked(format!(
                "the recorder was undocked while the file was being hashed ({e}); it is hashed again when docked"
            ))),
            Err(HashError::Io(e)) => Err(Problem::Retry {
                kind: "unreadable",
                message: format!("cannot read the file: {e}"),
                severe: true,
            }),
        }
    }

    /// The declaration of a hashed file.
    fn declaration(&self, row: &FileRow, d: &Docked) -> Result<pb::BeginRequest, Problem> {
        let sha256 = row.sha256.ok_or_else(|| Problem::Restart {
            kind: "journal",
            message: "the journal holds no hash for a hashed file; hashing again".into(),
        })?;
        let (seconds, nanos) = row.captured_at.unix_parts();
        Ok(pb::BeginRequest {
            device_id: d.info.device_id.to_string(),
            station_id: self.station_id.to_string(),
            file_name: row.file_name.clone(),
            size: row.size,
            sha256: sha256.to_hex(),
            sm3: row.sm3.map(|s| s.to_hex()).unwrap_or_default(),
            capture_start: Some(prost_types::Timestamp { seconds, nanos }),
            importance: i32::from(row.importance.mark()),
            media_type: match row.media_type {
                custody_core::MediaType::Video => pb::MediaType::Video,
                custody_core::MediaType::Audio => pb::MediaType::Audio,
                custody_core::MediaType::Photo => pb::MediaType::Photo,
                custody_core::MediaType::Text => pb::MediaType::Text,
            }
            .into(),
            officer_badge: d.info.badge.to_string(),
            clock_offset_ms: d.clock_offset_ms,
        })
    }

    /// Whether the file on disk still is the version this row is about.
    fn check_unchanged(&self, row: &FileRow, path: &Path, d: &Docked) -> Result<(), Problem> {
        match scan::fingerprint(path) {
            Ok(Some(fp)) if fp == (row.size, row.mtime_ns) => Ok(()),
            Ok(Some((size, _))) => Err(Problem::Changed(format!(
                "the file changed after it was hashed (now {size} bytes, was {}); its new content is hashed and uploaded as a new version",
                row.size
            ))),
            Ok(None) | Err(_) if self.undocked_now(path, d) => Err(Problem::Undocked(format!(
                "the recorder was undocked during the upload at {} of {} bytes; the upload resumes when it is docked again",
                row.uploaded, row.size
            ))),
            Ok(None) => Err(Problem::Retry {
                kind: "unreadable",
                message: "the file is gone from the docked recorder".into(),
                severe: true,
            }),
            Err(e) => Err(Problem::Retry {
                kind: "unreadable",
                message: format!("cannot read the file's metadata: {e}"),
                severe: true,
            }),
        }
    }

    async fn upload(&self, row: &FileRow, path: &Path, d: &Docked) -> Result<(), Problem> {
        let _permit = self.upload_sem.acquire().await.map_err(|_| {
            Problem::Undocked("the agent is stopping; the upload resumes at the next start".into())
        })?;
        self.uploads_active.fetch_add(1, Ordering::Relaxed);
        let r = self.upload_inner(row, path, d).await;
        self.uploads_active.fetch_sub(1, Ordering::Relaxed);
        r
    }

    async fn upload_inner(&self, row: &FileRow, path: &Path, d: &Docked) -> Result<(), Problem> {
        let live = self.live(&row.device_id);
        // Bytes sent in the segment now under way, so that they leave `unsaved` once it ends.
        let segment_sent = Arc::new(AtomicU64::new(0));
        let (l, seg) = (live.clone(), segment_sent.clone());
        let mut up = self.uploader.clone().with_progress(Arc::new(move |n| {
            l.sent.fetch_add(n, Ordering::Relaxed);
            l.unsaved.fetch_add(n, Ordering::Relaxed);
            seg.fetch_add(n, Ordering::Relaxed);
        }));
        let end_segment = || {
            live.unsaved
                .fetch_sub(segment_sent.swap(0, Ordering::Relaxed), Ordering::Relaxed);
        };
        let size = row.bytes();
        let mut session: Option<(String, u64)> = None;
        if let Some(uid) = &row.upload_id {
            match up.query(uid).await {
                Ok(q) => match q.state() {
                    pb::UploadState::Open => {
                        session = Some((uid.clone(), u64::try_from(q.committed_size).unwrap_or(0)))
                    }
                    pb::UploadState::Committing | pb::UploadState::Committed => {
                        return self.commit(row, uid, &mut up).await;
                    }
                    pb::UploadState::Failed => {
                        return Err(Problem::Restart {
                            kind: "integrity",
                            message: format!(
                                "the server refused upload {uid}: {}; the file is hashed and uploaded again",
                                q.failure
                            ),
                        });
                    }
                    _ => {
                        tracing::info!(file = %row.rel_path, upload = %uid,
                            "the server expired the upload; beginning a new one");
                        self.journal.forget_upload(row.id, now()).await?;
                    }
                },
                Err(s) if s.code() == Code::NotFound => {
                    self.journal.forget_upload(row.id, now()).await?;
                }
                Err(s) => return Err(server_problem("query", &s)),
            }
        }
        self.check_unchanged(row, path, d)?;
        let (uid, mut committed) = match session {
            Some(s) => s,
            None => match up
                .begin(self.declaration(row, d)?)
                .await
                .map_err(|s| server_problem("begin", &s))?
            {
                pb::begin_response::Result::Receipt(r) => return self.accept(row, &r).await,
                pb::begin_response::Result::Session(s) => {
                    (s.upload_id, u64::try_from(s.committed_size).unwrap_or(0))
                }
            },
        };
        self.journal
            .set_uploading(row.id, &uid, committed, now())
            .await?;
        let segment = self.cfg.segment_size.as_u64().max(1);
        let source = Source::File(path.to_path_buf());
        let mut resyncs = 0;
        while committed < size {
            if d.cancel.is_cancelled() {
                return Err(Problem::Undocked(format!(
                    "the recorder was undocked during the upload at {committed} of {size} bytes; the upload resumes when it is docked again"
                )));
            }
            self.check_unchanged(row, path, d)?;
            let to = (committed + segment).min(size);
            let written = up.write(&uid, &source, committed, to).await;
            // Only a segment that advanced the upload ends after its offset is in the journal.
            if !matches!(written, Ok(c) if c > committed) {
                end_segment();
            }
            match written {
                Ok(c) if c > committed => committed = c,
                Ok(c) => {
                    return Err(Problem::Retry {
                        kind: "server_error",
                        message: format!(
                            "the server acknowledged no progress at {c} of {size} bytes"
                        ),
                        severe: false,
                    });
                }
                Err(UploadError::Source { source, .. }) => {
                    return Err(if self.undocked_now(path, d) {
                        Problem::Undocked(format!(
                            "the recorder was undocked during the upload at {committed} of {size} bytes; the upload resumes when it is docked again"
                        ))
                    } else {
                        Problem::Retry {
                            kind: "unreadable",
                            message: format!(
                                "cannot read the file at offset {committed}: {source}"
                            ),
                            severe: true,
                        }
                    });
                }
                Err(UploadError::Server(s))
                    if s.code() == Code::FailedPrecondition && resyncs < 3 =>
                {
                    // The server holds a different offset (a write of an earlier run landed after
                    // all): continue from what it says.
                    resyncs += 1;
                    let q = up
                        .query(&uid)
                        .await
                        .map_err(|s| server_problem("query", &s))?;
                    if q.state() != pb::UploadState::Open {
                        return self.commit(row, &uid, &mut up).await;
                    }
                    committed = u64::try_from(q.committed_size).unwrap_or(0);
                }
                Err(UploadError::Server(s)) => {
                    // Save how far the server got before reporting the error.
                    if let Ok(q) = up.query(&uid).await {
                        let c = u64::try_from(q.committed_size).unwrap_or(committed);
                        self.journal.set_uploading(row.id, &uid, c, now()).await?;
                    }
                    return Err(server_problem("write", &s));
                }
            }
            let saved = self
                .journal
                .set_uploading(row.id, &uid, committed, now())
                .await;
            end_segment();
            saved?;
        }
        self.commit(row, &uid, &mut up).await
    }

    async fn commit(&self, row: &FileRow, uid: &str, up: &mut Uploader) -> Result<(), Problem> {
        let mut tries = 0;
        let receipt = loop {
            match up.commit(uid).await {
                Ok(r) => break r,
                // The ledger had not signed a checkpoint yet; Commit is idempotent.
                Err(s) if s.code() == Code::Unavailable && tries < 3 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(500 * tries)).await;
                }
                Err(s) if s.code() == Code::DataLoss => {
                    return Err(Problem::Restart {
                        kind: "integrity",
                        message: format!(
                            "the server received bytes that do not match the file's hash ({}); the file is hashed and uploaded again",
                            s.message()
                        ),
                    });
                }
                Err(s) => return Err(server_problem("commit", &s)),
            }
        };
        self.accept(row, &receipt).await
    }

    /// Verifies a receipt and records it.
    async fn accept(&self, row: &FileRow, r: &pb::Receipt) -> Result<(), Problem> {
        let proof = receipt_proof(r).ok_or_else(|| Problem::Retry {
            kind: "receipt",
            message: "the server's receipt carries no well-formed ledger proof; the file is kept"
                .into(),
            severe: true,
        })?;
        self.verify(row, &proof, Some(r))?;
        let json = serde_json::to_string(&proof).map_err(|e| Problem::Retry {
            kind: "internal",
            message: format!("encoding the receipt: {e}"),
            severe: true,
        })?;
        self.journal
            .set_receipted(row.id, &r.evidence_id, &json, r.duplicate, now())
            .await?;
        tracing::info!(file = %row.rel_path, device = %row.device_id, evidence = %r.evidence_id,
            leaf = proof.leaf_index, duplicate = r.duplicate, "receipt verified");
        Ok(())
    }

    /// Checks a receipt against the pinned keys and the file's hashes.
    fn verify(
        &self,
        row: &FileRow,
        proof: &LedgerProof,
        wire: Option<&pb::Receipt>,
    ) -> Result<(), Problem> {
        let bad = |why: String| Problem::Retry {
            kind: "receipt",
            message: format!("{why}; the file is kept on the recorder"),
            severe: true,
        };
        let keys: Vec<&str> = self.keys.iter().map(String::as_str).collect();
        let v = proof.verify(&keys).map_err(|e| {
            bad(format!(
                "the receipt does not verify against the pinned ledger key(s): {e}"
            ))
        })?;
        let e = &v.entry;
        let sha = row
            .sha256
            .ok_or_else(|| bad("the journal holds no hash to compare the receipt with".into()))?;
        if e.kind != EventKind::Ingest {
            return Err(bad(format!(
                "the receipt is for a {} event, not an ingest",
                e.kind
            )));
        }
        if e.sha256 != sha || u64::try_from(row.size).ok() != Some(e.size) {
            return Err(bad(format!(
                "the receipt is for other bytes (sha256 {}, {} bytes) than the file's (sha256 {sha}, {} bytes)",
                e.sha256, e.size, row.size
            )));
        }
        if let (Some(a), Some(b)) = (row.sm3, e.sm3)
            && a != b
        {
            return Err(bad(format!("the receipt's sm3 {b} is not the file's {a}")));
        }
        if let Some(r) = wire
            && (r.evidence_id != e.evidence_id.to_string() || r.sha256 != sha.to_hex())
        {
            return Err(bad(
                "the receipt's evidence id or hash differs from its ledger entry".into(),
            ));
        }
        Ok(())
    }

    async fn free(&self, row: &FileRow, path: &Path, mount: &Path) -> Result<(), Problem> {
        // The file leaves the recorder only on a receipt that verifies now, with the keys pinned now.
        let proof: LedgerProof = row
            .receipt
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .ok()
            .flatten()
            .ok_or_else(|| Problem::Retry {
                kind: "receipt",
                message: "the journal's receipt for this file is unreadable; the file is kept"
                    .into(),
                severe: true,
            })?;
        self.verify(row, &proof, None)?;
        let (p, m, rel, fp, policy) = (
            path.to_path_buf(),
            mount.to_path_buf(),
            row.rel_path.clone(),
            (row.size, row.mtime_ns),
            self.cfg.free_policy,
        );
        let how = tokio::task::spawn_blocking(move || free_file(&p, &m, &rel, fp, policy))
            .await
            .map_err(|e| Problem::Retry {
                kind: "internal",
                message: format!("the freeing thread failed: {e}"),
                severe: true,
            })?;
        match how {
            Ok(how) => {
                self.journal.set_freed(row.id, how, now()).await?;
                tracing::info!(file = %row.rel_path, device = %row.device_id, how, "file freed");
                Ok(())
            }
            Err(FreeError::Changed(m)) => Err(Problem::Changed(m)),
            Err(FreeError::Io(e)) => Err(Problem::Retry {
                kind: "free",
                message: format!("cannot free the file on the recorder: {e}"),
                severe: true,
            }),
        }
    }
}

#[derive(Debug)]
enum HashError {
    Changed(String),
    Cancelled,
    Io(std::io::Error),
}

/// Hashes a file, making sure it is the version that was found and that it does not change meanwhile.
fn hash_stable(
    path: &Path,
    size: i64,
    mtime: i64,
    sm3: bool,
    progress: &AtomicU64,
    cancel: &CancellationToken,
) -> Result<Digests, HashError> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(HashError::Io)?;
    let fp = |m: &std::fs::Metadata| {
        (
            i64::try_from(m.len()).unwrap_or(i64::MAX),
            scan::mtime_ns(m),
        )
    };
    let before = fp(&f.metadata().map_err(HashError::Io)?);
    if before != (size, mtime) {
        return Err(HashError::Changed(format!(
            "the file changed after it was found (now {} bytes, was {size}); its new content is hashed as a new version",
            before.0
        )));
    }
    let mut h = ContentHasher::new(sm3);
    let mut buf = vec![0u8; 4 << 20];
    loop {
        if cancel.is_cancelled() {
            return Err(HashError::Cancelled);
        }
        let n = f.read(&mut buf).map_err(HashError::Io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        progress.fetch_add(n as u64, Ordering::Relaxed);
    }
    let d = h.finish();
    let after = fp(&f.metadata().map_err(HashError::Io)?);
    let now_at_path = std::fs::metadata(path).map(|m| fp(&m)).ok();
    if after != before || now_at_path != Some(before) || i64::try_from(d.size).ok() != Some(size) {
        return Err(HashError::Changed(format!(
            "the file changed while being hashed ({size} bytes when hashing began, {} when it ended); \
             it is hashed again once it stops changing",
            now_at_path.map_or(after.0, |a| a.0)
        )));
    }
    Ok(d)
}

#[derive(Debug)]
enum FreeError {
    Changed(String),
    Io(std::io::Error),
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Frees a receipted file per policy. Idempotent: a file already deleted or moved by an interrupted
/// earlier attempt counts as freed.
fn free_file(
    path: &Path,
    mount: &Path,
    rel: &str,
    fp: (i64, i64),
    policy: FreePolicy,
) -> Result<&'static str, FreeError> {
    let dest = mount.join(UPLOADED_DIR).join(rel);
    match scan::fingerprint(path).map_err(FreeError::Io)? {
        None => Ok(match policy {
            FreePolicy::Move if dest.exists() => "moved",
            FreePolicy::Move | FreePolicy::Delete => "deleted",
            FreePolicy::Keep => "already gone",
        }),
        Some(now) if now != fp => Err(FreeError::Changed(format!(
            "the file changed after its receipt (now {} bytes, was {}); it is not freed, and its new content is uploaded as a new version",
            now.0, fp.0
        ))),
        Some(_) => {
            let parent = path.parent().unwrap_or(mount);
            match policy {
                FreePolicy::Delete => {
                    std::fs::remove_file(path).map_err(FreeError::Io)?;
                    sync_dir(parent).map_err(FreeError::Io)?;
                }
                FreePolicy::Move => {
                    let dparent = dest.parent().unwrap_or(mount);
                    std::fs::create_dir_all(dparent).map_err(FreeError::Io)?;
                    std::fs::rename(path, &dest).map_err(FreeError::Io)?;
                    sync_dir(dparent).map_err(FreeError::Io)?;
                    sync_dir(parent).map_err(FreeError::Io)?;
                }
                FreePolicy::Keep => {}
            }
            Ok(policy.as_str())
        }
    }
}

/// Where a recorder's mount is, by path of one of its files (for tests and tools).
pub fn mount_of(path: &Path) -> Option<PathBuf> {
    path.ancestors()
        .find(|a| a.join(DEVICE_INFO_FILE).exists())
        .map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freeing_moves_deletes_or_keeps_and_refuses_a_changed_file() {
        let d = tempfile::tempdir().unwrap();
        let m = d.path();
        std::fs::create_dir_all(m.join("DCIM")).unwrap();
        let f = m.join("DCIM/a.MP4");
        std::fs::write(&f, b"abc").unwrap();
        let fp = scan::fingerprint(&f).unwrap().unwrap();
        assert!(matches!(
            free_file(&f, m, "DCIM/a.MP4", (fp.0 + 1, fp.1), FreePolicy::Delete),
            Err(FreeError::Changed(_))
        ));
        assert!(f.exists());
        assert_eq!(
            free_file(&f, m, "DCIM/a.MP4", fp, FreePolicy::Keep).unwrap(),
            "kept"
        );
        assert_eq!(
            free_file(&f, m, "DCIM/a.MP4", fp, FreePolicy::Move).unwrap(),
            "moved"
        );
        assert!(!f.exists() && m.join("uploaded/DCIM/a.MP4").exists());
        // Again, as after a crash between the move and the journal: still freed, nothing lost.
        assert_eq!(
            free_file(&f, m, "DCIM/a.MP4", fp, FreePolicy::Move).unwrap(),
            "moved"
        );
    }

    #[test]
    fn a_file_that_changes_while_being_hashed_is_caught() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a.MP4");
        std::fs::write(&f, vec![7u8; 1 << 20]).unwrap();
        let (size, mtime) = scan::fingerprint(&f).unwrap().unwrap();
        let ok = hash_stable(
            &f,
            size,
            mtime,
            true,
            &AtomicU64::new(0),
            &CancellationToken::new(),
        )
        .unwrap();
        assert_eq!(ok.size, 1 << 20);
        assert!(ok.sm3.is_some());
        std::fs::write(&f, vec![8u8; 1 << 20]).unwrap();
        let e = hash_stable(
            &f,
            size,
            mtime,
            true,
            &AtomicU64::new(0),
            &CancellationToken::new(),
        )
        .unwrap_err();
        assert!(matches!(e, HashError::Changed(_)), "{e:?}");
    }
}
