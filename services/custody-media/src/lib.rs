//! Custody's media pipeline: what a recording is and how a browser shows it.
//!
//! The ffmpeg half ([`probe()`], [`poster()`], [`thumbs()`], [`make_proxy()`]) works on local files with
//! ffmpeg-next. Every one of those calls blocks for as long as the codec needs, so callers run them on a
//! blocking pool ([`tokio::task::spawn_blocking`]), never on the async executor.
//!
//! The job half ([`MediaWorker`]) runs them for every committed evidence item as durable jobs: a job is a
//! database row (queued by the same transaction that commits the evidence), claimed under a lease,
//! retried with backoff when the failure may pass, and picked up again after a crash. Results go on the
//! evidence row (the probe) and into the object store under `derived/` (poster, thumbnail strip, browser
//! proxy), each recorded with its own hash as derived from the original. The original is only ever read.
//!
//! Architecture invariant: this crate never imports a transport (axum, tonic, rumqttc) and does no SQL of
//! its own (it calls `custody-store`). Bad media is never an error of the process: it becomes a recorded,
//! human-readable reason why an item cannot be shown.

mod error;
mod ffmpeg;
mod picture;
mod probe;
mod proxy;

pub use error::MediaError;
pub use picture::{Picture, PictureOptions, ThumbStrip, poster, thumbs};
pub use probe::probe;
pub use proxy::{ProxyOptions, ProxyReport, make_proxy};

mod jobs;
mod metrics;

pub use custody_store::{DerivedRecord, EvidenceMedia};
pub use jobs::{Media, MediaConfig};
pub use metrics::MediaMetrics;
