//! Prometheus metrics of the media pipeline (`custody_media_*`).

use custody_core::media::MediaJobKind;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// Counters and timings of media jobs.
#[derive(Debug, Clone)]
pub struct MediaMetrics {
    /// Jobs running in this process now.
    pub running: Gauge,
    jobs: Family<JobLabels, Counter>,
    seconds: Family<KindLabels, Histogram>,
    /// Seconds to probe a file and make its pictures.
    pub probe_seconds: Histogram,
    /// Seconds of media transcoded per second of wall time.
    pub proxy_speed: Histogram,
}

impl Default for MediaMetrics {
    fn default() -> Self {
        Self {
            running: Gauge::default(),
            jobs: Family::default(),
            seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.01, 2.0, 16))
            }),
            probe_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            proxy_speed: Histogram::new(exponential_buckets(0.125, 2.0, 10)),
        }
    }
}

impl MediaMetrics {
    /// Counts a finished job by kind and outcome (`done`, `unreadable`, `retry`, `failed`,
    /// `released`, `lost`) and records its duration.
    pub fn finished(&self, kind: MediaJobKind, outcome: &'static str, seconds: f64) {
        self.jobs
            .get_or_create(&JobLabels {
                kind: kind.as_str(),
                outcome,
            })
            .inc();
        self.seconds
            .get_or_create(&KindLabels {
                kind: kind.as_str(),
            })
            .observe(seconds);
    }

    /// How many jobs of this kind ended with this outcome (tests, status output).
    pub fn count(&self, kind: MediaJobKind, outcome: &'static str) -> u64 {
        self.jobs
            .get_or_create(&JobLabels {
                kind: kind.as_str(),
                outcome,
            })
            .get()
    }

    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("custody_media");
        r.register(
            "jobs_running",
            "Media jobs running in this process",
            self.running.clone(),
        );
        r.register(
            "jobs",
            "Media jobs ended, by kind and outcome",
            self.jobs.clone(),
        );
        r.register(
            "job_seconds",
            "Seconds per media job, by kind",
            self.seconds.clone(),
        );
        r.register(
            "probe_seconds",
            "Seconds to probe a file and make its poster and thumbnails",
            self.probe_seconds.clone(),
        );
        r.register(
            "proxy_speed",
            "Browser proxy transcode speed, in media seconds per wall second",
            self.proxy_speed.clone(),
        );
    }
}
