//! Custody's position pipeline: what happens to a recorder's GPS fixes, alarms and status between the
//! transport that received them (MQTT, gRPC) and the command centre's map.
//!
//! [`Tracking::report`] checks each fix ([`custody_core::position::Limits`]: coordinates in range, time
//! not far in the future, no jump faster than the configured speed), derives SOS alarms and geofence
//! enter/leave events from it, and hands it to one batch writer. The writer group-commits whatever
//! accumulated while the previous batch was being written (one transaction per batch) and only then
//! answers every caller, so a QoS 1 PUBACK or a gRPC ack is sent only for fixes that are durable.
//! After the commit it updates the latest-position R-tree ([`LatestIndex`]) and publishes to the live
//! [`Hub`]. Rejected fixes are counted by reason, never fatal.
//!
//! Ordering: the checks that depend on a device's previous fix run synchronously inside `report`
//! before its first await, so callers that start `report` calls in arrival order (the MQTT endpoint
//! and bridge do) get them checked in that order.
//!
//! Architecture invariant: this crate does no SQL of its own (it calls `custody-store`) and never
//! imports a transport (axum, tonic, rumqttc). Commands back to devices go through [`CommandSink`],
//! which the binary implements with whichever MQTT side it runs.

mod devices;
mod error;
mod hub;
mod index;
mod metrics;

pub use custody_store::AlarmCursor;
pub use devices::Devices;
pub use error::TrackingError;
pub use hub::{Hub, LiveFilter, Watched, Watcher};
pub use index::{LatestIndex, Nearby};
pub use metrics::TrackingMetrics;

use bytes::Bytes;
use custody_core::geo::{BBox, point_in_polygon};
use custody_core::live::{Alarm, DeviceStatus, FenceEvent, FenceTransition, Geofence, LiveEvent};
use custody_core::position::{AlarmMessage, Limits, Reject};
use custody_core::{AlarmId, DeviceId, FenceId, Position, Timestamp};
use custody_store::{Metadata, TelemetryWrite};
use devices::now;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Settings of the pipeline.
#[derive(Debug, Clone)]
pub struct TrackingConfig {
    /// What a fix must satisfy.
    pub limits: Limits,
    /// Most positions written in one transaction.
    pub batch_max: usize,
    /// Batches waiting for the writer; callers wait (back-pressure) when it is full.
    pub queue: usize,
    /// How many events a live watcher may fall behind before it loses some.
    pub live_capacity: usize,
    /// Positions older than this are deleted (PostgreSQL: whole day partitions are dropped).
    /// `None` keeps them.
    pub retention: Option<Duration>,
    /// How often retention runs.
    pub retention_interval: Duration,
    /// After an SOS fix, how long without one before the next SOS fix raises a new alarm.
    pub sos_rearm: Duration,
}

impl Default for TrackingConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            batch_max: 10_000,
            queue: 1024,
            live_capacity: 65_536,
            retention: Some(Duration::from_secs(180 * 86_400)),
            retention_interval: Duration::from_secs(3600),
            sos_rearm: Duration::from_secs(60),
        }
    }
}

/// Where commands to devices go (`custody/v1/dev/{device}/cmd`).
#[async_trait::async_trait]
pub trait CommandSink: Send + Sync + 'static {
    /// Publishes `payload` to the device's command topic, QoS 1. Returns whether it was handed to at
    /// least one connection or broker.
    async fn send(&self, device: &DeviceId, payload: Bytes) -> Result<bool, String>;
}

/// What became of one batch of fixes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportOutcome {
    /// Fixes stored (durable).
    pub accepted: usize,
    /// Fixes refused: (index in the batch, reason).
    pub rejected: Vec<(usize, Reject)>,
}

/// The result of acknowledging an alarm.
#[derive(Debug, Clone)]
pub struct AlarmAck {
    pub alarm: Alarm,
    /// False when it had already been acknowledged (the first acknowledgement stands).
    pub first: bool,
    /// Whether the acknowledgement was handed to the device's command topic.
    pub sent_to_device: bool,
}

/// One unit of work for the writer.
struct Job {
    write: TelemetryWrite,
    /// Fence names, for the live events.
    fence_names: Vec<String>,
    done: oneshot::Sender<Result<(), String>>,
}

/// Per-device state the checks need: the newest accepted fix and what it implied.
#[derive(Debug, Clone)]
struct DeviceState {
    last: Position,
    /// When the newest SOS alarm of this device was raised (from a fix or the alarm topic): an SOS
    /// within `sos_rearm` of it is the same press and raises no new alarm.
    sos_alarm_at: Option<Timestamp>,
    /// The newest SOS fix seen.
    sos_last: Option<Timestamp>,
    /// Fences the last fix was inside.
    inside: BTreeSet<FenceId>,
}

#[derive(Debug)]
struct Fence {
    fence: Geofence,
    bbox: BBox,
}

struct Inner {
    meta: Metadata,
    config: TrackingConfig,
    jobs: mpsc::Sender<Job>,
    state: Mutex<HashMap<DeviceId, DeviceState>>,
    index: RwLock<LatestIndex>,
    fences: RwLock<Vec<Fence>>,
    hub: Hub,
    metrics: TrackingMetrics,
    commands: OnceLock<Arc<dyn CommandSink>>,
    writer: Mutex<Option<mpsc::Receiver<Job>>>,
}

/// The telemetry service. Cheap to clone.
#[derive(Clone)]
pub struct Tracking {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Tracking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracking")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl Tracking {
    /// Loads the latest positions and geofences and prepares the pipeline. Nothing is written until
    /// [`Tracking::run_writer`] runs.
    pub async fn open(
        meta: Metadata,
        config: TrackingConfig,
        metrics: TrackingMetrics,
    ) -> Result<Self, TrackingError> {
        let latest = meta.latest_positions().await?;
        let fences: Vec<Fence> = meta
            .list_geofences()
            .await?
            .into_iter()
            .filter_map(fence)
            .collect();
        let state = latest
            .iter()
            .map(|p| {
                let inside = fences
                    .iter()
                    .filter(|f| contains(f, p))
                    .map(|f| f.fence.id)
                    .collect();
                (
                    p.device.clone(),
                    DeviceState {
                        last: p.clone(),
                        sos_alarm_at: p.sos.then_some(p.time),
                        sos_last: p.sos.then_some(p.time),
                        inside,
                    },
                )
            })
            .collect();
        tracing::info!(
            devices = latest.len(),
            fences = fences.len(),
            "telemetry state loaded"
        );
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        Ok(Self {
            inner: Arc::new(Inner {
                meta,
                hub: Hub::new(config.live_capacity),
                config,
                jobs: tx,
                state: Mutex::new(state),
                index: RwLock::new(LatestIndex::new(latest)),
                fences: RwLock::new(fences),
                metrics,
                commands: OnceLock::new(),
                writer: Mutex::new(Some(rx)),
            }),
        })
    }

    pub fn config(&self) -> &TrackingConfig {
        &self.inner.config
    }

    pub fn metrics(&self) -> &TrackingMetrics {
        &self.inner.metrics
    }

    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    pub fn meta(&self) -> &Metadata {
        &self.inner.meta
    }

    /// Sets where alarm acknowledgements go. Only the first call counts.
    pub fn set_command_sink(&self, sink: Arc<dyn CommandSink>) {
        let _ = self.inner.commands.set(sink);
    }

    /// Checks and stores a batch of fixes of `device`, returning once the accepted ones are durable.
    /// Every fix must be of `device`. The checks run before the first await (see the crate docs).
    pub async fn report(
        &self,
        device: &DeviceId,
        fixes: Vec<Position>,
    ) -> Result<ReportOutcome, TrackingError> {
        if let Some(other) = fixes.iter().find(|p| p.device != *device) {
            return Err(TrackingError::PermissionDenied(format!(
                "a position of device {} was sent as device {device}",
                other.device
            )));
        }
        let (job, rx, outcome) = self.prepare(device, fixes);
        self.inner.metrics.count_rejects(&outcome.rejected);
        if !outcome.rejected.is_empty() {
            tracing::debug!(%device, rejected = ?outcome.rejected, "fixes rejected");
        }
        let Some(job) = job else {
            return Ok(outcome);
        };
        self.submit(job, rx).await?;
        self.inner.metrics.accepted.inc_by(outcome.accepted as u64);
        Ok(outcome)
    }

    /// The synchronous part of `report`: checks against the device's state, updates it, and builds
    /// the job (None when nothing is to be written).
    #[allow(clippy::type_complexity)]
    fn prepare(
        &self,
        device: &DeviceId,
        fixes: Vec<Position>,
    ) -> (
        Option<Job>,
        oneshot::Receiver<Result<(), String>>,
        ReportOutcome,
    ) {
        let cfg = &self.inner.config;
        let now = now();
        let mut out = ReportOutcome::default();
        let mut w = TelemetryWrite {
            received_at: Some(now),
            ..Default::default()
        };
        let mut fence_names = Vec::new();
        {
            let fences = self
                .inner
                .fences
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            let mut states = lock(&self.inner.state);
            for (i, p) in fixes.into_iter().enumerate() {
                if let Err(r) = cfg.limits.check(&p, now) {
                    out.rejected.push((i, r));
                    continue;
                }
                let Some(st) = states.get_mut(device) else {
                    // The first fix ever of this device.
                    let inside: BTreeSet<FenceId> = fences
                        .iter()
                        .filter(|f| contains(f, &p))
                        .map(|f| f.fence.id)
                        .collect();
                    for f in fences.iter().filter(|f| inside.contains(&f.fence.id)) {
                        w.fence_events
                            .push(fence_event(&p, f.fence.id, FenceTransition::Enter));
                        fence_names.push(f.fence.name.clone());
                    }
                    if p.sos {
                        w.alarms.push(sos_alarm(&p, now));
                    }
                    states.insert(
                        device.clone(),
                        DeviceState {
                            last: p.clone(),
                            sos_alarm_at: p.sos.then_some(p.time),
                            sos_last: p.sos.then_some(p.time),
                            inside,
                        },
                    );
                    w.positions.push(p);
                    out.accepted += 1;
                    continue;
                };
                if let Err(r) = cfg.limits.check_move(&st.last, &p) {
                    out.rejected.push((i, r));
                    continue;
                }
                if p.time > st.last.time {
                    // SOS: a new alarm when the key goes down, unless the same press already raised
                    // one (a run of SOS fixes, or the alarm message sent with it).
                    if p.sos {
                        let rearm = micros(cfg.sos_rearm);
                        let near = |t: Option<Timestamp>| {
                            t.is_some_and(|t| {
                                (p.time.unix_micros() - t.unix_micros()).abs() <= rearm
                            })
                        };
                        if !near(st.sos_last) && !near(st.sos_alarm_at) {
                            w.alarms.push(sos_alarm(&p, now));
                            st.sos_alarm_at = Some(p.time);
                        }
                        st.sos_last = Some(p.time);
                    }
                    let inside: BTreeSet<FenceId> = fences
                        .iter()
                        .filter(|f| contains(f, &p))
                        .map(|f| f.fence.id)
                        .collect();
                    for f in fences.iter() {
                        let id = f.fence.id;
                        let kind = match (st.inside.contains(&id), inside.contains(&id)) {
                            (false, true) => FenceTransition::Enter,
                            (true, false) => FenceTransition::Leave,
                            _ => continue,
                        };
                        w.fence_events.push(fence_event(&p, id, kind));
                        fence_names.push(f.fence.name.clone());
                    }
                    st.inside = inside;
                    st.last = p.clone();
                }
                w.positions.push(p);
                out.accepted += 1;
            }
        }
        let (done, rx) = oneshot::channel();
        if w.positions.is_empty() {
            return (None, rx, out);
        }
        (
            Some(Job {
                write: w,
                fence_names,
                done,
            }),
            rx,
            out,
        )
    }

    /// Hands a job to the writer and waits until it is durable.
    async fn submit(
        &self,
        job: Job,
        rx: oneshot::Receiver<Result<(), String>>,
    ) -> Result<(), TrackingError> {
        self.inner
            .jobs
            .send(job)
            .await
            .map_err(|_| TrackingError::Unavailable("the position writer has stopped".into()))?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(TrackingError::Unavailable(e)),
            Err(_) => Err(TrackingError::Unavailable(
                "the position writer stopped before the batch was written".into(),
            )),
        }
    }

    /// Stores an alarm a device raised on its alarm topic; returns it once durable. Without a location
    /// in the message, the device's latest known position is used.
    pub async fn raise_alarm(
        &self,
        device: &DeviceId,
        msg: AlarmMessage,
    ) -> Result<Alarm, TrackingError> {
        let now = now();
        let raised_at = msg.time();
        if raised_at.unix_micros() - now.unix_micros() > self.inner.config.limits.max_future_micros
        {
            self.inner.metrics.count_rejects(&[(0, Reject::FutureTime)]);
            return Err(TrackingError::InvalidArgument(format!(
                "alarm time {raised_at} is in the future"
            )));
        }
        // Synchronously, before the first await (see the crate docs): an SOS within `sos_rearm` of
        // the device's last SOS alarm is the same press (its SOS-flagged fixes raised it, or the
        // message is a resend) and answers with that alarm.
        let rearm = micros(self.inner.config.sos_rearm);
        let (last_fix, same_press) = {
            let mut states = lock(&self.inner.state);
            let st = states.get_mut(device);
            let last_fix = st.as_ref().map(|s| (s.last.lat, s.last.lon));
            let same_press = match st {
                Some(st) if msg.kind == "sos" => {
                    let prev = st
                        .sos_alarm_at
                        .filter(|a| (raised_at.unix_micros() - a.unix_micros()).abs() <= rearm);
                    if prev.is_none() {
                        st.sos_alarm_at = Some(raised_at);
                    }
                    prev
                }
                _ => None,
            };
            (last_fix, same_press)
        };
        if let Some(at) = same_press
            && let Some(existing) = self.inner.meta.find_alarm(device, "sos", at).await?
        {
            return Ok(existing);
        }
        let (lat, lon) = match (msg.lat, msg.lon, last_fix) {
            (Some(lat), Some(lon), _) => (Some(lat), Some(lon)),
            (_, _, Some((lat, lon))) => (Some(lat), Some(lon)),
            _ => (None, None),
        };
        let alarm = Alarm {
            id: AlarmId::new(),
            device_id: device.clone(),
            kind: msg.kind,
            raised_at,
            lat,
            lon,
            note: msg.note.unwrap_or_default(),
            received_at: now,
            acked_at: None,
            acked_by: None,
            ack_note: None,
        };
        let (done, rx) = oneshot::channel();
        let job = Job {
            write: TelemetryWrite {
                alarms: vec![alarm.clone()],
                received_at: Some(now),
                ..Default::default()
            },
            fence_names: vec![],
            done,
        };
        self.submit(job, rx).await?;
        // A redelivered alarm keeps the id it was first stored with.
        Ok(self
            .inner
            .meta
            .find_alarm(device, &alarm.kind, raised_at)
            .await?
            .unwrap_or(alarm))
    }

    /// Stores a device's status (a JSON object) and tells watchers.
    pub async fn record_status(
        &self,
        device: &DeviceId,
        payload: &[u8],
    ) -> Result<(), TrackingError> {
        let status =
            DeviceStatus::parse_payload(payload).map_err(TrackingError::InvalidArgument)?;
        let s = DeviceStatus {
            device_id: device.clone(),
            status,
            received_at: now(),
        };
        self.inner.meta.upsert_device_status(&s).await?;
        self.inner.hub.publish(LiveEvent::Status(s));
        Ok(())
    }

    /// Acknowledges an alarm (once; a second acknowledgement returns the first) and sends the
    /// acknowledgement to the device's command topic.
    pub async fn ack_alarm(
        &self,
        id: &AlarmId,
        by: &str,
        note: &str,
    ) -> Result<AlarmAck, TrackingError> {
        let by = by.trim();
        if by.is_empty() || by.len() > 100 || note.len() > 1000 {
            return Err(TrackingError::InvalidArgument(
                "an acknowledgement needs `by` (1 to 100 bytes) and a note of at most 1000 bytes"
                    .into(),
            ));
        }
        let (alarm, first) = self
            .inner
            .meta
            .ack_alarm(id, by, note, now())
            .await
            .map_err(|e| match e {
                custody_store::StoreError::NotFound(_) => {
                    TrackingError::NotFound(format!("alarm {id}"))
                }
                e => e.into(),
            })?;
        let mut sent = false;
        if first {
            tracing::info!(alarm = %id, device = %alarm.device_id, by, "alarm acknowledged");
            self.inner.hub.publish(LiveEvent::Alarm(alarm.clone()));
            if let Some(sink) = self.inner.commands.get() {
                let cmd = serde_json::json!({
                    "type": "alarm_ack",
                    "alarm_id": alarm.id,
                    "kind": alarm.kind,
                    "acked_by": alarm.acked_by,
                    "acked_at": alarm.acked_at,
                    "note": alarm.ack_note,
                });
                match sink
                    .send(&alarm.device_id, Bytes::from(cmd.to_string()))
                    .await
                {
                    Ok(s) => sent = s,
                    Err(e) => {
                        tracing::warn!(alarm = %id, error = %e, "could not send the acknowledgement to the device")
                    }
                }
            }
        }
        Ok(AlarmAck {
            alarm,
            first,
            sent_to_device: sent,
        })
    }

    pub async fn get_alarm(&self, id: &AlarmId) -> Result<Alarm, TrackingError> {
        self.inner
            .meta
            .get_alarm(id)
            .await?
            .ok_or_else(|| TrackingError::NotFound(format!("alarm {id}")))
    }

    pub async fn list_alarms(
        &self,
        open: bool,
        device: Option<&DeviceId>,
        after: Option<AlarmCursor>,
        limit: u32,
    ) -> Result<Vec<Alarm>, TrackingError> {
        Ok(self
            .inner
            .meta
            .list_alarms(open, device, after, limit)
            .await?)
    }

    /// Adds a geofence; devices' enter/leave events start with their next fix.
    pub async fn add_geofence(
        &self,
        name: &str,
        kind: &str,
        ring: Vec<(f64, f64)>,
    ) -> Result<Geofence, TrackingError> {
        let name = name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(TrackingError::InvalidArgument(
                "geofence name: must be 1 to 200 bytes".into(),
            ));
        }
        let ring = Geofence::check_ring(ring).map_err(TrackingError::InvalidArgument)?;
        let f = Geofence {
            id: FenceId::new(),
            name: name.to_string(),
            kind: kind.trim().to_string(),
            ring,
            created_at: now(),
        };
        self.inner.meta.insert_geofence(&f).await?;
        let added = fence(f.clone()).ok_or_else(|| {
            TrackingError::InvalidArgument("geofence has no valid bounding box".into())
        })?;
        // Devices already inside do not "enter" it: mark them inside from their latest fix.
        {
            let mut states = lock(&self.inner.state);
            for st in states.values_mut() {
                if contains(&added, &st.last) {
                    st.inside.insert(f.id);
                }
            }
        }
        self.inner
            .fences
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(added);
        tracing::info!(fence = %f.id, name = %f.name, points = f.ring.len(), "geofence added");
        Ok(f)
    }

    pub async fn delete_geofence(&self, id: &FenceId) -> Result<(), TrackingError> {
        self.inner
            .meta
            .delete_geofence(id)
            .await
            .map_err(|e| match e {
                custody_store::StoreError::NotFound(_) => {
                    TrackingError::NotFound(format!("geofence {id}"))
                }
                e => e.into(),
            })?;
        self.inner
            .fences
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|f| f.fence.id != *id);
        for st in lock(&self.inner.state).values_mut() {
            st.inside.remove(id);
        }
        Ok(())
    }

    pub fn geofences(&self) -> Vec<Geofence> {
        self.inner
            .fences
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|f| f.fence.clone())
            .collect()
    }

    /// The `n` devices nearest to a WGS-84 point with a fix not older than `max_age`.
    pub fn nearest(&self, lat: f64, lon: f64, n: usize, max_age: Option<Duration>) -> Vec<Nearby> {
        let since = max_age.map(|a| now().saturating_add_micros(-micros(a)));
        self.inner
            .index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .nearest(lat, lon, n, since)
    }

    /// The latest fix of every device (inside `bbox`, not older than `max_age`).
    pub fn latest(&self, bbox: Option<&BBox>, max_age: Option<Duration>) -> Vec<Position> {
        let since = max_age.map(|a| now().saturating_add_micros(-micros(a)));
        self.inner
            .index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .all(bbox, since)
    }

    pub fn latest_of(&self, device: &DeviceId) -> Option<Position> {
        self.inner
            .index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(device)
            .cloned()
    }

    /// A device's stored fixes in `[from, to)`, oldest first, at most `limit`.
    pub async fn track(
        &self,
        device: &DeviceId,
        from: Timestamp,
        to: Timestamp,
        limit: u32,
    ) -> Result<Vec<Position>, TrackingError> {
        if to <= from {
            return Err(TrackingError::InvalidArgument(format!(
                "`to` ({to}) must be after `from` ({from})"
            )));
        }
        Ok(self
            .inner
            .meta
            .positions_between(device, from, to, limit)
            .await?)
    }

    /// Writes batches until `shutdown`, then writes what is queued and stops. Run exactly once.
    pub async fn run_writer(self, shutdown: CancellationToken) {
        let Some(mut rx) = lock(&self.inner.writer).take() else {
            tracing::error!("the position writer was started twice");
            return;
        };
        let batch_max = self.inner.config.batch_max.max(1);
        loop {
            let first = tokio::select! {
                j = rx.recv() => j,
                () = shutdown.cancelled() => {
                    // Take what is already queued, then stop.
                    rx.close();
                    rx.recv().await
                }
            };
            let Some(first) = first else { break };
            let mut jobs = vec![first];
            let mut n = jobs[0].write.positions.len();
            while n < batch_max {
                match rx.try_recv() {
                    Ok(j) => {
                        n += j.write.positions.len();
                        jobs.push(j);
                    }
                    Err(_) => break,
                }
            }
            self.write_batch(jobs).await;
        }
        tracing::info!("position writer stopped");
    }

    async fn write_batch(&self, jobs: Vec<Job>) {
        let mut w = TelemetryWrite {
            received_at: Some(now()),
            ..Default::default()
        };
        for j in &jobs {
            w.positions.extend_from_slice(&j.write.positions);
            w.alarms.extend_from_slice(&j.write.alarms);
            w.fence_events.extend_from_slice(&j.write.fence_events);
        }
        let started = std::time::Instant::now();
        let result = self.inner.meta.write_telemetry(&w).await;
        let m = &self.inner.metrics;
        m.batch_seconds.observe(started.elapsed().as_secs_f64());
        match result {
            Err(e) => {
                m.write_errors.inc();
                tracing::error!(error = %e, positions = w.positions.len(), "could not write a telemetry batch; its senders are told to resend");
                let msg = e.to_string();
                for j in jobs {
                    let _ = j.done.send(Err(msg.clone()));
                }
            }
            Ok(()) => {
                m.batches.inc();
                m.batch_positions.observe(w.positions.len() as f64);
                {
                    let mut idx = self
                        .inner
                        .index
                        .write()
                        .unwrap_or_else(PoisonError::into_inner);
                    for p in &w.positions {
                        idx.update(p);
                    }
                }
                let hub = &self.inner.hub;
                for j in jobs {
                    let _ = j.done.send(Ok(()));
                    for a in j.write.alarms {
                        tracing::warn!(alarm = %a.id, device = %a.device_id, kind = %a.kind, "alarm raised");
                        m.alarms.inc();
                        hub.publish(LiveEvent::Alarm(a));
                    }
                    for (e, name) in j.write.fence_events.into_iter().zip(j.fence_names) {
                        m.fence_events.inc();
                        hub.publish(LiveEvent::Fence {
                            event: e,
                            fence_name: name,
                        });
                    }
                    for p in j.write.positions {
                        hub.publish(LiveEvent::Position(p));
                    }
                }
            }
        }
    }

    /// Deletes positions older than the retention, now and then every `retention_interval`, until
    /// `shutdown`. Does nothing when retention is off.
    pub async fn run_retention(self, shutdown: CancellationToken) {
        let Some(keep) = self.inner.config.retention else {
            return;
        };
        loop {
            let cutoff = now().saturating_add_micros(-micros(keep));
            match self.inner.meta.purge_positions_before(cutoff, 10_000).await {
                Ok(p) if p.partitions + p.rows > 0 => {
                    tracing::info!(partitions = p.partitions, rows = p.rows, %cutoff, "old positions deleted")
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "position retention failed; retrying later"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.inner.config.retention_interval) => {}
            }
        }
    }
}

fn fence(f: Geofence) -> Option<Fence> {
    let bbox = BBox::of_ring(&f.ring)?;
    Some(Fence { fence: f, bbox })
}

fn contains(f: &Fence, p: &Position) -> bool {
    f.bbox.contains(p.lat, p.lon) && point_in_polygon(p.lat, p.lon, &f.fence.ring)
}

fn fence_event(p: &Position, fence_id: FenceId, kind: FenceTransition) -> FenceEvent {
    FenceEvent {
        device_id: p.device.clone(),
        fence_id,
        kind,
        t: p.time,
        lat: p.lat,
        lon: p.lon,
    }
}

fn sos_alarm(p: &Position, now: Timestamp) -> Alarm {
    Alarm {
        id: AlarmId::new(),
        device_id: p.device.clone(),
        kind: "sos".into(),
        raised_at: p.time,
        lat: Some(p.lat),
        lon: Some(p.lon),
        note: String::new(),
        received_at: now,
        acked_at: None,
        acked_by: None,
        ack_note: None,
    }
}
