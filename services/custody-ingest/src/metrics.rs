use custody_core::ErrorCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    op: &'static str,
    code: &'static str,
}

/// Counters of the intake, exported in Prometheus text format by the HTTP layer.
#[derive(Debug, Clone, Default)]
pub struct IngestMetrics {
    /// Bytes accepted by upload writes.
    pub upload_bytes: Counter,
    /// Uploads committed (including those whose bytes were already evidence).
    pub commits: Counter,
    /// Bytes of evidence committed.
    pub committed_bytes: Counter,
    /// Begin requests answered with existing evidence.
    pub duplicates: Counter,
    /// Abandoned uploads expired.
    pub expired: Counter,
    /// Uploads being written or committed right now.
    pub active_uploads: Gauge,
    errors: Family<ErrorLabels, Counter>,
}

impl IngestMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("custody_ingest");
        r.register(
            "upload_bytes",
            "Bytes accepted by upload writes",
            self.upload_bytes.clone(),
        );
        r.register(
            "commits",
            "Uploads committed as evidence",
            self.commits.clone(),
        );
        r.register(
            "committed_bytes",
            "Bytes of evidence committed",
            self.committed_bytes.clone(),
        );
        r.register(
            "duplicates",
            "Begin requests answered with existing evidence",
            self.duplicates.clone(),
        );
        r.register(
            "expired_uploads",
            "Abandoned uploads expired",
            self.expired.clone(),
        );
        r.register(
            "active_uploads",
            "Uploads being written or committed",
            self.active_uploads.clone(),
        );
        r.register(
            "errors",
            "Failed intake requests by operation and error code",
            self.errors.clone(),
        );
    }

    pub(crate) fn error(&self, op: &'static str, code: ErrorCode) {
        self.errors
            .get_or_create(&ErrorLabels {
                op,
                code: code.as_str(),
            })
            .inc();
    }
}
