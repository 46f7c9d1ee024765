use custody_core::position::Reject;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

/// Counters of the telemetry pipeline, exported in Prometheus text format by the HTTP layer.
#[derive(Debug, Clone)]
pub struct TrackingMetrics {
    /// Fixes stored.
    pub accepted: Counter,
    rejected: Family<ReasonLabels, Counter>,
    malformed: Family<SourceLabels, Counter>,
    /// Batches committed.
    pub batches: Counter,
    /// Batches that failed to commit (their senders resend).
    pub write_errors: Counter,
    /// Alarms raised.
    pub alarms: Counter,
    /// Geofence enter/leave events.
    pub fence_events: Counter,
    /// Live events a watcher missed because it read too slowly.
    pub live_lagged: Counter,
    /// Positions per committed batch.
    pub batch_positions: Histogram,
    /// Seconds per batch commit.
    pub batch_seconds: Histogram,
}

impl Default for TrackingMetrics {
    fn default() -> Self {
        let m = Self {
            accepted: Counter::default(),
            rejected: Family::default(),
            malformed: Family::default(),
            batches: Counter::default(),
            write_errors: Counter::default(),
            alarms: Counter::default(),
            fence_events: Counter::default(),
            live_lagged: Counter::default(),
            batch_positions: Histogram::new(exponential_buckets(1.0, 4.0, 9)),
            batch_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
        };
        // Every reason shows up as 0 from the start, so dashboards see the series before the first one.
        for r in Reject::ALL {
            let _ = m
                .rejected
                .get_or_create(&ReasonLabels { reason: r.as_str() });
        }
        m
    }
}

impl TrackingMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("custody_telemetry");
        r.register("positions_accepted", "Fixes stored", self.accepted.clone());
        r.register(
            "positions_rejected",
            "Fixes refused, by reason",
            self.rejected.clone(),
        );
        r.register(
            "messages_malformed",
            "Telemetry messages that could not be decoded, by source",
            self.malformed.clone(),
        );
        r.register(
            "batches",
            "Telemetry batches committed",
            self.batches.clone(),
        );
        r.register(
            "write_errors",
            "Telemetry batches that failed to commit",
            self.write_errors.clone(),
        );
        r.register("alarms", "Alarms raised", self.alarms.clone());
        r.register(
            "fence_events",
            "Geofence enter and leave events",
            self.fence_events.clone(),
        );
        r.register(
            "live_lagged",
            "Live events watchers missed because they read too slowly",
            self.live_lagged.clone(),
        );
        r.register(
            "batch_positions",
            "Positions per committed batch",
            self.batch_positions.clone(),
        );
        r.register(
            "batch_seconds",
            "Seconds to commit one batch",
            self.batch_seconds.clone(),
        );
    }

    pub(crate) fn count_rejects(&self, rejected: &[(usize, Reject)]) {
        for (_, r) in rejected {
            self.rejected
                .get_or_create(&ReasonLabels { reason: r.as_str() })
                .inc();
        }
    }

    /// How many fixes were refused for `reason` so far.
    pub fn rejected(&self, reason: Reject) -> u64 {
        self.rejected
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .get()
    }

    /// Counts a message that could not be decoded (`source`: mqtt_json, mqtt_proto, owntracks,
    /// alarm, status, grpc).
    pub fn malformed(&self, source: &'static str) {
        self.malformed.get_or_create(&SourceLabels { source }).inc();
    }

    /// How many messages from `source` could not be decoded so far.
    pub fn malformed_count(&self, source: &'static str) -> u64 {
        self.malformed.get_or_create(&SourceLabels { source }).get()
    }
}
