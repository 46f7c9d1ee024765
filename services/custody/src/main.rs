//! `custody`: evidence custody for body-worn recorders. One binary runs every service.

use bytesize::ByteSize;
use clap::{Args, Parser, Subcommand};
use custody::Config;
use custody::config::LogFormat;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Custody keeps body-worn recorder footage as tamper-evident evidence: resumable uploads from docking
/// stations, content-addressed storage, and an HTTP API to find and fetch it.
#[derive(Debug, Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    /// Configuration file (TOML). Read when it exists; settings in CUSTODY_* environment variables and
    /// flags override it.
    #[arg(
        long,
        global = true,
        env = "CUSTODY_CONFIG",
        default_value = "custody.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: gRPC uploads, the HTTP API, and background workers. With no configuration it keeps
    /// everything under ./custody-data (SQLite and local disk) and listens on :8080 (HTTP) and :50051 (gRPC).
    Serve(Box<ServeArgs>),
    /// Measure performance on this machine.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Operator commands: keys and registries.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Check evidence and the ledger: the whole store, or a receipt offline.
    #[command(subcommand)]
    Verify(VerifyCommand),
}

#[derive(Debug, Subcommand)]
enum VerifyCommand {
    /// Recompute every ledger hash, tile and checkpoint from the stored entries, check each evidence row
    /// against its ledger entries and its bytes against its hashes, and walk every per-recorder chain.
    /// Reads the same storage settings as `serve` (config file, CUSTODY_* variables, these flags).
    /// Exits non-zero and names each mismatch (entry, object, row) when anything is wrong.
    Ledger(Box<custody::verify::VerifyLedgerArgs>),
    /// Check a receipt (a ledger proof JSON file, as returned by GET /api/v1/evidence/{id}/receipt or
    /// kept by a station) offline: the checkpoint signature(s), the entry, and its inclusion proof.
    Receipt {
        /// The receipt file
        file: PathBuf,
        /// Verifier key file(s) of the log (ledger.pub, and ledger-sm2.pub where SM2 is used); every
        /// key given must have signed the checkpoint
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
    },
    /// Check an export package (POST /api/v1/cases/{id}/export) offline: every file's SHA-256/SM3
    /// against the manifest, its ingest receipt and export event against the key(s), the consistency
    /// proofs up to the package's checkpoint and that checkpoint's signature. One PASS/FAIL line per
    /// file; exits non-zero on any failure.
    Package {
        /// The package (.zip)
        file: PathBuf,
        /// Verifier key file(s) of the log (ledger.pub, and ledger-sm2.pub where SM2 is used) [default:
        /// the keys inside the package, with a warning and their fingerprints]
        #[arg(long = "key")]
        keys: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create the Ed25519 key pair that signs ledger checkpoints: DIR/ledger.key (owner-only) and
    /// DIR/ledger.pub (give it to stations, witnesses and courts). Never replaces an existing key.
    /// With --sm2, create the additional SM2 pair DIR/ledger-sm2.{key,pub} (国密) instead.
    Keygen {
        /// Name of the log, used as checkpoint origin and key name (no spaces or '+'),
        /// e.g. custody.example.gov.cn/ledger
        #[arg(long)]
        origin: String,
        /// Directory for the key files
        #[arg(long, default_value = "./custody-data/keys")]
        out: PathBuf,
        /// Make an SM2 key pair (set ledger_sm2_key_file to use it)
        #[arg(long)]
        sm2: bool,
    },
    /// Docking stations: register one and issue its credential, rotate or revoke a credential, list.
    /// Uses the same storage settings as `serve` (config file, CUSTODY_* variables, these flags).
    #[command(subcommand)]
    Station(custody::admin::StationCommand),
    /// Recorders that report positions: register one (or --count N) and issue its credential, rotate or
    /// revoke a credential, list. Uses the same storage settings as `serve`.
    #[command(subcommand)]
    Device(custody::admin::DeviceCommand),
    /// The media pipeline's jobs: counts by state, failed items with their reasons, and retrying them.
    /// Uses the same storage settings as `serve`.
    #[command(subcommand)]
    Media(custody::admin::MediaCommand),
    /// User accounts (officers, case handlers, supervisors, auditors, commanders, admins): create the
    /// first administrator, list, change roles or passwords, disable, and issue a session token.
    /// Uses the same storage settings as `serve`.
    #[command(subcommand)]
    User(custody::admin_users::UserCommand),
    /// Evidence retention: run a pass by hand (`run`), list what would be deleted now or by a date
    /// (`run --dry-run [--at TIME]`), or show the configured periods (`policy`). Uses the same storage
    /// settings as `serve`.
    #[command(subcommand)]
    Retention(custody::admin_retention::RetentionCommand),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Upload throughput and server memory, next to this machine's write + hash limit.
    Upload(custody::bench::UploadBenchArgs),
    /// Ledger appends per second, receipt latency (p50/p99) and inclusion-proof time.
    Ledger(custody::bench_ledger::LedgerBenchArgs),
    /// Positions per second stored from an external broker (SQLite, PostgreSQL) next to what
    /// mosquitto_sub alone receives of the same stream, and the live WebSocket feed's delay (p50/p99)
    /// with thousands of recorders on the embedded endpoint. Runs custody-sim fleet and custody serve
    /// as child processes; scripts/bench-telemetry.sh sets up the servers and builds release binaries.
    Telemetry(Box<custody::bench_telemetry::TelemetryBenchArgs>),
    /// Recording-coverage analysis of one case (default 50 steps, 500 linked files): time to compute
    /// the coverage report with suggestions and the review gate without them.
    Coverage(custody::bench_cases::CoverageBenchArgs),
    /// Export package throughput (MiB/s of evidence bytes into the ZIP, hashed as copied) next to this
    /// machine's plain copy + hash of the same files.
    Export(custody::bench_export::ExportBenchArgs),
}

/// Flags of `serve`; each overrides the same key of the file and environment.
#[derive(Debug, Args, Serialize)]
struct ServeArgs {
    #[command(flatten)]
    #[serde(flatten)]
    storage: custody::config::StorageArgs,
    /// HTTP address [default: 0.0.0.0:8080]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    http_listen: Option<SocketAddr>,
    /// gRPC address [default: 0.0.0.0:50051]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    grpc_listen: Option<SocketAddr>,
    /// Embedded MQTT endpoint address (station status) [default: 0.0.0.0:1883]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    mqtt_listen: Option<SocketAddr>,
    /// Take MQTT messages from this external broker (mqtt://host:port) instead of the embedded endpoint
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    mqtt_url: Option<String>,
    /// Client id at the external broker (persistent session; one per replica) [default: custody]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    mqtt_client_id: Option<String>,
    /// Shared-subscription group at the external broker [default: custody]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    mqtt_share_group: Option<String>,
    /// Largest file an upload may declare [default: 4GiB]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_upload_size: Option<ByteSize>,
    /// Idle time after which an upload expires, e.g. 24h [default: 24h]
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    upload_ttl: Option<Duration>,
    /// How often expired uploads are looked for, e.g. 1m [default: 1m]
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    upload_expiry_interval: Option<Duration>,
    /// S3 multipart part size, at least 5MiB [default: 8MiB]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    upload_part_size: Option<ByteSize>,
    /// Local disk: fsync uploaded bytes at least every this many bytes [default: 8MiB]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    upload_flush_bytes: Option<ByteSize>,
    /// Compute SM3 for every file even when none was declared
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    always_sm3: Option<bool>,
    /// Log filter, e.g. info or custody_ingest=debug,info [default: info]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    log: Option<String>,
    /// Log format: text or json [default: text]
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_format: Option<LogFormatArg>,
    /// Ed25519 ledger signing key (with its .pub beside it) [default: DATA_DIR/keys/ledger.key]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    ledger_key_file: Option<PathBuf>,
    /// Additional SM2 ledger signing key (with its .pub beside it)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    ledger_sm2_key_file: Option<PathBuf>,
    /// Entries per ledger batch at most [default: 4096]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    ledger_batch_max: Option<u32>,
    /// Longest wait before a ledger batch closes, e.g. 50ms [default: 50ms]
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    ledger_batch_interval: Option<Duration>,
    /// How long Commit waits for a checkpoint before answering UNAVAILABLE [default: 10s]
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    ledger_receipt_timeout: Option<Duration>,
    /// Write the bound addresses as JSON to this file once serving
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    ready_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum LogFormatArg {
    Text,
    Json,
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

impl Cli {
    /// Whether the configuration file was named (so a missing one is an error) rather than defaulted.
    fn config_is_explicit(&self) -> bool {
        std::env::var_os("CUSTODY_CONFIG").is_some() || self.config != Path::new("custody.toml")
    }
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line with the whole cause chain: operators read this, not a backtrace.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let explicit = cli.config_is_explicit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve(args) => {
            let config = Config::load(&cli.config, explicit, &*args)?;
            custody::init_logging(&config.log, config.log_format == LogFormat::Json);
            tracing::info!(?config, "starting custody {}", env!("CARGO_PKG_VERSION"));
            runtime.block_on(async {
                let app = custody::build(config).await?;
                app.run(custody::shutdown_signal()).await
            })
        }
        Command::Admin(AdminCommand::Keygen { origin, out, sm2 }) => {
            let kind = if sm2 {
                custody::admin::KeyKind::Sm2
            } else {
                custody::admin::KeyKind::Ed25519
            };
            let (skey, vkey) = custody::admin::keygen(&origin, &out, kind)?;
            println!("signing key:  {} (keep secret; back it up)", skey.display());
            println!("verifier key: {}", vkey.display());
            println!("{}", std::fs::read_to_string(&vkey)?.trim());
            Ok(())
        }
        Command::Admin(AdminCommand::Station(cmd)) => {
            custody::init_logging("warn", false);
            runtime.block_on(custody::admin::station(&cli.config, explicit, cmd))
        }
        Command::Admin(AdminCommand::Device(cmd)) => {
            custody::init_logging("warn", false);
            runtime.block_on(custody::admin::device(&cli.config, explicit, cmd))
        }
        Command::Admin(AdminCommand::Media(cmd)) => {
            custody::init_logging("warn", false);
            runtime.block_on(custody::admin::media(&cli.config, explicit, cmd))
        }
        Command::Admin(AdminCommand::Retention(cmd)) => {
            custody::init_logging("warn", false);
            runtime.block_on(custody::admin_retention::retention(
                &cli.config,
                explicit,
                cmd,
            ))
        }
        Command::Admin(AdminCommand::User(cmd)) => {
            custody::init_logging("warn", false);
            runtime.block_on(custody::admin_users::user(&cli.config, explicit, cmd))
        }
        Command::Verify(VerifyCommand::Receipt { file, keys }) => {
            let report = custody::verify::receipt(&file, &keys)?;
            println!("{report}");
            Ok(())
        }
        Command::Verify(VerifyCommand::Package { file, keys }) => {
            let report = custody::verify_package::package(&file, &keys)?;
            if report.ok() {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
        Command::Bench(BenchCommand::Export(args)) => custody::bench_export::run(args),
        Command::Verify(VerifyCommand::Ledger(args)) => {
            custody::init_logging("warn", false);
            let ok = runtime.block_on(custody::verify::ledger(&cli.config, explicit, *args))?;
            if ok {
                Ok(())
            } else {
                anyhow::bail!("verification found problems (listed above)")
            }
        }
        Command::Bench(BenchCommand::Ledger(args)) => {
            custody::init_logging("warn", false);
            runtime.block_on(custody::bench_ledger::run(args))
        }
        Command::Bench(BenchCommand::Telemetry(args)) => {
            custody::init_logging("warn", false);
            runtime.block_on(custody::bench_telemetry::run(*args))
        }
        Command::Bench(BenchCommand::Coverage(args)) => {
            custody::init_logging("warn", false);
            runtime.block_on(custody::bench_cases::run(args))
        }
        Command::Bench(BenchCommand::Upload(args)) => {
            custody::init_logging("warn", false);
            runtime.block_on(custody::bench::upload(args))
        }
    }
}
