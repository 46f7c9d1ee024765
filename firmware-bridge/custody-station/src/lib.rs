//! `custody-station`: the docking-station (采集站) agent. It runs on the station's small Linux box,
//! watches the slots where recorders are docked, and offloads every file without any chance of losing
//! one: hash (SHA-256 and SM3), resumable upload over gRPC with the station's credential, offline
//! verification of the server's signed receipt against the pinned ledger key, and only then freeing the
//! file on the recorder (delete, move to `uploaded/`, or keep). A durable journal records where each
//! file stands, so a power cut at any moment resumes where it stopped. Slot status and a heartbeat go to
//! the server over MQTT.
//!
//! It talks to the server only through the wire contracts (`custody-proto`, via `custody-client`) and
//! never imports server crates (store, ingest, transports). It shares the recorder layout and the
//! status report format with the server and the simulator through `custody-core`.

pub mod agent;
pub mod config;
pub mod journal;
pub mod scan;
pub mod status;
pub mod ui;

pub use agent::Agent;
pub use config::{FreePolicy, StationConfig};
pub use journal::{FileRow, FileState, Journal};

use tokio_util::sync::CancellationToken;

/// Runs the agent (and the MQTT publisher and progress bars, where configured) until `shutdown`.
pub async fn run(
    cfg: StationConfig,
    bars: Option<indicatif::MultiProgress>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let agent = Agent::new(cfg).await?;
    let mut tasks = Vec::new();
    if let Some(url) = agent.config().mqtt_url.clone() {
        let (a, s) = (agent.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = status::publish(a, url, s).await {
                tracing::error!(error = %e, "status publishing stopped");
            }
        }));
    }
    if let Some(mp) = bars {
        tasks.push(tokio::spawn(ui::draw(agent.clone(), mp, shutdown.clone())));
    }
    let result = agent.run(shutdown.clone()).await;
    shutdown.cancel();
    for t in tasks {
        let _ = t.await;
    }
    result
}
