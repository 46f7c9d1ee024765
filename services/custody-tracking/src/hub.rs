//! The live hub: every stored position, alarm, status change and fence event goes out to every
//! watcher (WebSocket clients, gRPC `Watch` streams) that wants it.
//!
//! It is a broadcast ring of fixed capacity. Each watcher reads at its own pace from its own cursor;
//! one that falls more than the capacity behind loses the oldest events and is told how many it
//! missed (a `lagged` event). Publishing never waits for a watcher, so a slow client cannot slow
//! ingest.

use custody_core::DeviceId;
use custody_core::geo::BBox;
use custody_core::live::LiveEvent;
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// What a watcher wants to see.
#[derive(Debug, Clone, Default)]
pub struct LiveFilter {
    /// Only these devices; `None`: all.
    pub devices: Option<HashSet<DeviceId>>,
    /// Only positions (and fence events) inside this box; alarms and status changes always pass.
    pub area: Option<BBox>,
}

impl LiveFilter {
    pub fn matches(&self, e: &LiveEvent) -> bool {
        if let Some(ds) = &self.devices
            && !ds.contains(e.device())
        {
            return false;
        }
        match (&self.area, e) {
            (Some(b), LiveEvent::Position(p)) => b.contains(p.lat, p.lon),
            (Some(b), LiveEvent::Fence { event, .. }) => b.contains(event.lat, event.lon),
            _ => true,
        }
    }
}

/// One thing a watcher receives.
#[derive(Debug, Clone)]
pub enum Watched {
    Event(Arc<LiveEvent>),
    /// This many events were dropped because the watcher read too slowly.
    Lagged(u64),
}

/// The publishing side. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Hub {
    tx: broadcast::Sender<Arc<LiveEvent>>,
    /// Cancelled at shutdown: every watcher's stream ends, so that servers can drain.
    closed: CancellationToken,
}

impl Hub {
    /// A hub whose watchers may fall `capacity` events behind before they lose some.
    pub fn new(capacity: usize) -> Self {
        Self {
            tx: broadcast::channel(capacity.max(16)).0,
            closed: CancellationToken::new(),
        }
    }

    /// Sends to every watcher; never waits.
    pub fn publish(&self, e: LiveEvent) {
        // An error only means that nobody is watching.
        let _ = self.tx.send(Arc::new(e));
    }

    pub fn watchers(&self) -> usize {
        self.tx.receiver_count()
    }

    pub fn watch(&self, filter: LiveFilter) -> Watcher {
        Watcher {
            rx: self.tx.subscribe(),
            filter,
            closed: self.closed.clone(),
        }
    }

    /// Ends every watcher's stream (at shutdown); watchers made later end at once.
    pub fn close(&self) {
        self.closed.cancel();
    }
}

/// The receiving side of one watcher.
#[derive(Debug)]
pub struct Watcher {
    rx: broadcast::Receiver<Arc<LiveEvent>>,
    filter: LiveFilter,
    closed: CancellationToken,
}

impl Watcher {
    /// The next event that passes the filter, or `Lagged`. `None` once the hub is closed or gone.
    pub async fn next(&mut self) -> Option<Watched> {
        loop {
            let r = tokio::select! {
                () = self.closed.cancelled() => return None,
                r = self.rx.recv() => r,
            };
            match r {
                Ok(e) if self.filter.matches(&e) => return Some(Watched::Event(e)),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => return Some(Watched::Lagged(n)),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
