//! `custody-station`: the docking-station agent.

use bytesize::ByteSize;
use clap::{Args, Parser, Subcommand};
use custody_station::config::{FreePolicy, LogFormat};
use custody_station::{FileState, Journal, StationConfig};
use serde::Serialize;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The docking-station (采集站) agent of Custody: offloads docked body-worn recorders to the Custody
/// server, verifies each signed receipt against the pinned ledger key, and only then frees the file on
/// the recorder. A durable journal makes every step resumable after a power cut.
#[derive(Debug, Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    /// Configuration file (TOML). Read when it exists; CUSTODY_STATION_* variables and flags override it.
    #[arg(
        long,
        global = true,
        env = "CUSTODY_STATION_CONFIG",
        default_value = "custody-station.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Watch the slots and offload docked recorders until stopped (SIGINT/SIGTERM). On a terminal it
    /// shows a progress bar per slot; as a service (--daemon, or without a terminal) it logs JSON lines.
    Run(Box<RunArgs>),
    /// Show what the journal says: per recorder, how many files are in each state, and the files with
    /// errors.
    Status(StatusArgs),
}

/// Flags of `run`; each overrides the same key of the file and environment.
#[derive(Debug, Args, Serialize)]
struct RunArgs {
    /// Log JSON lines and draw no progress bars (for systemd)
    #[arg(long)]
    #[serde(skip)]
    daemon: bool,
    /// This station's id, as registered with `custody admin station add`
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    station_id: Option<String>,
    /// File holding the station credential (<station id>:<secret>)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    credential_file: Option<PathBuf>,
    /// The Custody server's gRPC address [default: http://127.0.0.1:50051]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    server: Option<String>,
    /// Pinned ledger verifier key file (repeat for ledger-sm2.pub); receipts must verify against each
    #[arg(long = "ledger-key")]
    #[serde(rename = "ledger_keys", skip_serializing_if = "Vec::is_empty")]
    ledger_keys: Vec<PathBuf>,
    /// Directory whose subdirectories are the slots' mount points
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    slots_dir: Option<PathBuf>,
    /// A slot mount point (repeat for each slot)
    #[arg(long = "slot")]
    #[serde(rename = "slots", skip_serializing_if = "Vec::is_empty")]
    slots: Vec<PathBuf>,
    /// Journal database [default: ./custody-station/journal.db]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    journal: Option<PathBuf>,
    /// What to do with a file after its receipt verified [default: move]
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    free_policy: Option<FreePolicy>,
    /// Uploads at once [default: 4]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    concurrency: Option<usize>,
    /// Files hashed at once [default: 2]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    hash_threads: Option<usize>,
    /// Upload bandwidth cap in bytes per second, e.g. 20MiB; 0 for none [default: 0]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    bandwidth: Option<ByteSize>,
    /// Compute SM3 besides SHA-256 [default: true]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    sm3: Option<bool>,
    /// Bytes per write stream; the journal records the offset after each [default: 64MiB]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    segment_size: Option<ByteSize>,
    /// How often slots are looked at, e.g. 1s [default: 1s]
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    poll_interval: Option<Duration>,
    /// Leave files modified within this long alone, e.g. 3s [default: 3s]
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    settle_time: Option<Duration>,
    /// First retry delay after an error, doubling [default: 1s]
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    retry_min: Option<Duration>,
    /// Longest retry delay [default: 60s]
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    retry_max: Option<Duration>,
    /// MQTT endpoint for slot status and heartbeats, e.g. mqtt://custody.example:1883
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    mqtt_url: Option<String>,
    /// Time between heartbeats [default: 10s]
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    heartbeat_interval: Option<Duration>,
    /// Log filter, e.g. info or custody_station=debug [default: info]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    log: Option<String>,
    /// Log format: text or json [default: text; json with --daemon]
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_format: Option<LogFormat>,
}

mod opt_duration {
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => humantime_serde::serialize(d, s),
            None => s.serialize_none(),
        }
    }
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// Journal database [default: the configured one]
    #[arg(long)]
    journal: Option<PathBuf>,
    /// List every file, not only counts and errors
    #[arg(long)]
    files: bool,
    /// Print JSON (one object per file) instead of a table
    #[arg(long)]
    json: bool,
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let explicit = std::env::var_os("CUSTODY_STATION_CONFIG").is_some()
        || cli.config != Path::new("custody-station.toml");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Run(args) => {
            let mut cfg = StationConfig::load(&cli.config, explicit, &*args)?;
            if args.daemon && args.log_format.is_none() {
                cfg.log_format = LogFormat::Json;
            }
            let interactive = !args.daemon
                && cfg.log_format == LogFormat::Text
                && std::io::stderr().is_terminal();
            let bars = interactive.then(custody_station::ui::bars);
            init_logging(&cfg.log, cfg.log_format, bars.clone());
            tracing::info!(config = ?cfg, "starting custody-station {}", env!("CARGO_PKG_VERSION"));
            runtime.block_on(async {
                let shutdown = CancellationToken::new();
                let trigger = shutdown.clone();
                tokio::spawn(async move {
                    shutdown_signal().await;
                    tracing::info!("stop requested");
                    trigger.cancel();
                });
                custody_station::run(cfg, bars, shutdown).await
            })
        }
        Command::Status(args) => {
            let journal = match args.journal {
                Some(j) => j,
                None => {
                    // Only the journal path matters here; a partial configuration is fine.
                    figment::Figment::from(figment::providers::Serialized::defaults(
                        StationConfig::default(),
                    ))
                    .merge(
                        <figment::providers::Toml as figment::providers::Format>::file(&cli.config),
                    )
                    .extract::<StationConfig>()
                    .map(|c| c.journal)
                    .unwrap_or_else(|_| StationConfig::default().journal)
                }
            };
            runtime.block_on(status(&journal, args.files, args.json))
        }
    }
}

async fn status(path: &Path, files: bool, json: bool) -> anyhow::Result<()> {
    anyhow::ensure!(path.exists(), "journal {} does not exist", path.display());
    let j = Journal::open(path).await?;
    let rows = j.all_files().await?;
    j.close().await;
    if json {
        for r in &rows {
            println!(
                "{}",
                serde_json::json!({
                    "id": r.id, "device_id": r.device_id, "rel_path": r.rel_path, "size": r.size,
                    "state": r.state, "sha256": r.sha256.map(|h| h.to_hex()),
                    "sm3": r.sm3.map(|h| h.to_hex()), "upload_id": r.upload_id, "uploaded": r.uploaded,
                    "evidence_id": r.evidence_id, "freed_how": r.freed_how, "attempts": r.attempts,
                    "error_kind": r.error_kind, "last_error": r.last_error, "receipt": r.receipt,
                })
            );
        }
        return Ok(());
    }
    let mut by_device: std::collections::BTreeMap<String, Vec<&custody_station::FileRow>> =
        Default::default();
    for r in &rows {
        by_device
            .entry(r.device_id.to_string())
            .or_default()
            .push(r);
    }
    println!(
        "{:<16} {}",
        "recorder",
        FileState::ALL
            .map(|s| format!("{:>10}", s.as_str()))
            .join(" ")
    );
    for (device, rs) in &by_device {
        let counts =
            FileState::ALL.map(|s| format!("{:>10}", rs.iter().filter(|r| r.state == s).count()));
        println!("{device:<16} {}", counts.join(" "));
    }
    for r in &rows {
        if files || (r.state.is_open() && r.last_error.is_some()) {
            println!(
                "{:>6} {:<10} {:>12} {} {}{}",
                r.id,
                r.state.as_str(),
                r.size,
                r.device_id,
                r.rel_path,
                r.last_error
                    .as_deref()
                    .map(|e| format!("  ! {e}"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(())
}

fn init_logging(filter: &str, format: LogFormat, bars: Option<indicatif::MultiProgress>) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match (format, bars) {
        (LogFormat::Json, _) => builder.json().with_writer(std::io::stderr).try_init(),
        (LogFormat::Text, Some(mp)) => builder
            .with_writer(custody_station::ui::BarWriter(mp))
            .try_init(),
        (LogFormat::Text, None) => builder.with_writer(std::io::stderr).try_init(),
    };
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
