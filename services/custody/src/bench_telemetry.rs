//! `custody bench telemetry`: how many positions a second a real `custody serve` process makes durable
//! (SQLite, then PostgreSQL), next to what `mosquitto_sub` alone receives of the same stream from the same
//! broker, and how long a fix takes to reach a command-centre client on the live WebSocket.
//!
//! Everything runs as child processes on this machine: `custody-sim fleet` publishes, `custody serve`
//! takes the messages (from the external broker for throughput, on its embedded endpoint for the live
//! delay), and `mosquitto_sub` is the baseline. The fleet, the broker and the server share the CPUs, so
//! the figures are those of one machine doing everything; the report says how busy each process was.
//!
//! Throughput: each receiver gets its own run of the same fleet (same size, rate, batch, QoS and format,
//! devices named with a prefix unique to the run). The receiver's running total is sampled every
//! 200 ms: the lines `mosquitto_sub` prints, or `custody_telemetry_positions_accepted_total` from the
//! server's `/metrics` (it counts stored fixes only). The sustained rate is the growth of that total from
//! 25 % to 95 % of the fleet's run, which leaves out the ramp-up and the stop; a receiver that falls behind keeps
//! draining after the fleet stops, so the report also gives the rate until its total stopped growing, and
//! what was published but never arrived.
//!
//! Live delay: recorders registered with `custody admin device add --count`, each logging in to the
//! embedded endpoint with its credential; one WebSocket client on `/api/v1/live?snapshot=false` records
//! its receive time minus the fix time (the fleet stamps each fix with the wall clock when it makes it)
//! for every position, once every device has been seen (the ramp-up is over).

use crate::process::{ServerProcess, sibling};
use anyhow::Context;
use custody_core::Timestamp;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// Arguments of `custody bench telemetry`.
///
/// The `custody serve` children inherit this process's environment, so server settings without a flag
/// can be set with CUSTODY_* variables, e.g. CUSTODY_POSITION_BATCH_MAX=20000 or CUSTODY_LIVE_QUEUE.
/// `scripts/bench-telemetry.sh` starts the servers, a private Mosquitto and builds release binaries.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
Every `custody serve` child inherits this environment: set server keys that have no flag with CUSTODY_*
variables, e.g. CUSTODY_POSITION_BATCH_MAX=20000 or CUSTODY_LIVE_QUEUE=262144.
scripts/bench-telemetry.sh starts PostgreSQL and a private Mosquitto (max_inflight_messages 1000), builds
release binaries and runs this with --broker pointing at that Mosquitto.")]
pub struct TelemetryBenchArgs {
    /// External MQTT broker for the throughput figures, mqtt://host:port, taking anonymous clients
    /// (`mosquitto_sub`, custody's bridge and the fleet all use it)
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    pub broker: String,
    /// The broker's window of unacknowledged QoS 1 messages per client (Mosquitto
    /// max_inflight_messages), shown in the report [default: unknown; Mosquitto's own default is 20]
    #[arg(long, value_name = "N")]
    pub broker_max_inflight: Option<u32>,
    /// Process id of the broker, to report its CPU use
    #[arg(long, value_name = "PID")]
    pub broker_pid: Option<u32>,
    /// Throughput: simulated recorders, publishing anonymously to the broker
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub devices: u32,
    /// Throughput: fixes per second per recorder
    #[arg(long, value_name = "HZ", default_value_t = 100.0)]
    pub rate: f64,
    /// Throughput: fixes per MQTT message
    #[arg(long, value_name = "K", default_value_t = 10)]
    pub batch: u32,
    /// Throughput: QoS of position messages, 0 or 1
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// Throughput: payload format of position messages
    #[arg(long, value_enum, default_value_t = PayloadFormat::Proto)]
    pub format: PayloadFormat,
    /// Throughput: how long each fleet run publishes, ramp-up included, e.g. 20s
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Throughput: new fleet connections per second during the ramp-up
    #[arg(long, value_name = "PER_S", default_value_t = 500.0)]
    pub connect_rate: f64,
    /// PostgreSQL server for the PostgreSQL run, as a user that may CREATE DATABASE; a fresh database
    /// custody_bench_* is made for the run and dropped after it
    #[arg(long, value_name = "URL", env = "CUSTODY_TEST_PG_URL")]
    pub pg_url: Option<String>,
    /// Skip the mosquitto_sub baseline
    #[arg(long)]
    pub skip_baseline: bool,
    /// Skip the SQLite throughput run
    #[arg(long)]
    pub skip_sqlite: bool,
    /// Skip the PostgreSQL throughput run
    #[arg(long)]
    pub skip_postgres: bool,
    /// Skip the live-delay measurement
    #[arg(long)]
    pub skip_latency: bool,
    /// Live delay: recorders, each registered and logging in to the embedded endpoint with its own
    /// credential
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub latency_devices: u32,
    /// Live delay: fixes per second per recorder (one fix per message)
    #[arg(long, value_name = "HZ", default_value_t = 1.0)]
    pub latency_rate: f64,
    /// Live delay: how long the fleet publishes, ramp-up included
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub latency_duration: Duration,
    /// Live delay: new fleet connections per second during the ramp-up
    #[arg(long, value_name = "PER_S", default_value_t = 2000.0)]
    pub latency_connect_rate: f64,
    /// Live delay: how long to wait after every recorder has been seen on the live feed before delays
    /// are recorded
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = humantime::parse_duration)]
    pub latency_warmup: Duration,
    /// After a fleet stops, how long to wait at most for a receiver's total to reach what was published
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    /// Directory for the temporary data directories and logs
    #[arg(long, default_value = "/var/tmp")]
    pub dir: PathBuf,
    /// Keep the temporary directory (server logs, fleet stats) and print where it is
    #[arg(long)]
    pub keep: bool,
    /// Also write the results here as JSON
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Extra arguments for every `custody serve`, space separated, e.g. --serve-args "--log info"
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub serve_args: String,
}

/// Payload format of the fleet's position messages (`custody-sim fleet --format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PayloadFormat {
    Proto,
    Json,
}

impl PayloadFormat {
    fn as_str(self) -> &'static str {
        match self {
            Self::Proto => "proto",
            Self::Json => "json",
        }
    }
}

/// The issue's targets.
const TARGET_RATE: f64 = 100_000.0;
const TARGET_RATIO: f64 = 0.7;
const TARGET_P99_MS: f64 = 50.0;
/// The part of a fleet run the sustained rate is taken over: from 25 % (after the ramp-up) to 95 % (before
/// the fleet's stop, when every device publishes the fixes it has buffered at once).
const WINDOW: (f64, f64) = (0.25, 0.95);
/// How often a receiver's total is sampled.
const SAMPLE: Duration = Duration::from_millis(200);
/// A total that has not grown for this long after the fleet stopped has stopped growing. Longer than the
/// bridge's longest reconnect backoff (5 s), after which a broker redelivers what was not acknowledged.
const IDLE: Duration = Duration::from_secs(8);
/// Linux reports process CPU time in clock ticks of 1/100 s (`USER_HZ`, fixed at 100 on every
/// architecture custody runs on).
const TICKS_PER_S: f64 = 100.0;

/// What `custody-sim fleet --stats-json` writes (the fields used here).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct FleetStats {
    devices: u64,
    connections: u64,
    messages: u64,
    positions: u64,
    publish_errors: u64,
    elapsed_s: f64,
    positions_per_s: f64,
}

/// `mqtt://host[:port]`.
#[derive(Debug, Clone)]
struct Broker {
    host: String,
    port: u16,
}

impl Broker {
    fn parse(url: &str) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("mqtt://")
            .with_context(|| format!("--broker {url:?}: expected mqtt://host:port"))?;
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h.to_string(),
                p.parse()
                    .with_context(|| format!("--broker {url:?}: bad port {p:?}"))?,
            ),
            _ => (rest.to_string(), 1883),
        };
        anyhow::ensure!(!host.is_empty(), "--broker {url:?}: no host");
        Ok(Self {
            host: host.trim_matches(['[', ']']).to_string(),
            port,
        })
    }

    fn url(&self) -> String {
        if self.host.contains(':') {
            format!("mqtt://[{}]:{}", self.host, self.port)
        } else {
            format!("mqtt://{}:{}", self.host, self.port)
        }
    }
}

/// The binaries and the directory of one bench run.
struct Ctx {
    args: TelemetryBenchArgs,
    custody: PathBuf,
    sim: PathBuf,
    work: PathBuf,
    tag: String,
    broker: Broker,
    http: reqwest::Client,
    terminal: bool,
}

pub async fn run(args: TelemetryBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.devices > 0 && args.batch > 0 && args.rate > 0.0 && !args.duration.is_zero(),
        "--devices, --batch, --rate and --duration must be greater than zero"
    );
    anyhow::ensure!(
        args.latency_devices > 0 && args.latency_rate > 0.0 && !args.latency_duration.is_zero(),
        "--latency-devices, --latency-rate and --latency-duration must be greater than zero"
    );
    let broker = Broker::parse(&args.broker)?;
    let sim = sibling("custody-sim")?;
    let custody = std::env::current_exe()?;
    // The limit is per process and inherited: the server and the fleet each hold one socket per recorder.
    let need = u64::from(args.latency_devices) + 1024;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) if n < need && !args.skip_latency => eprintln!(
            "warning: the open-file limit is {n}, below the {need} that {} recorders need (raise `ulimit -Hn`)",
            args.latency_devices
        ),
        Ok(_) => {}
        Err(e) => eprintln!("warning: could not raise the open-file limit: {e}"),
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let work = tempfile::Builder::new()
        .prefix("custody-bench-telemetry-")
        .tempdir_in(&args.dir)?;
    let tag = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let release = !cfg!(debug_assertions);
    // What the servers run with: `mqtt_max_in_flight`, from the environment they inherit, or its default.
    let bridge_window = std::env::var("CUSTODY_MQTT_MAX_IN_FLIGHT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| crate::Config::default().mqtt_max_in_flight);

    println!(
        "custody bench telemetry (run {tag}), in {}",
        work.path().display()
    );
    println!(
        "  machine         {cpus} CPUs, shared by the fleet, the broker, the server and this process{}",
        if release {
            ""
        } else {
            "; DEBUG BUILD: figures are meaningless, use scripts/bench-telemetry.sh"
        }
    );
    println!(
        "  throughput      {} devices × {} Hz, {} fixes per message, QoS {}, {}, {} per run: {:.0} positions/s offered",
        args.devices,
        args.rate,
        args.batch,
        args.qos,
        args.format.as_str(),
        humantime::format_duration(args.duration),
        f64::from(args.devices) * args.rate
    );
    println!(
        "  broker          {} (window of unacked QoS 1 messages per client: {}; custody's bridge handles {bridge_window} messages at once)",
        broker.url(),
        args.broker_max_inflight
            .map_or("unknown, Mosquitto's default is 20".into(), |n| n
                .to_string())
    );
    println!(
        "  live delay      {} devices × {} Hz on the embedded endpoint, {}",
        args.latency_devices,
        args.latency_rate,
        humantime::format_duration(args.latency_duration)
    );
    println!();

    let ctx = Ctx {
        custody,
        sim,
        work: work.path().to_path_buf(),
        tag,
        broker,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?,
        terminal: std::io::stderr().is_terminal(),
        args,
    };
    let args = &ctx.args;
    let mut report = Report::default();

    if !args.skip_baseline {
        report.baseline = Some(
            throughput(&ctx, ReceiverKind::MosquittoSub)
                .await
                .context("mosquitto_sub baseline")?,
        );
    }
    if !args.skip_sqlite {
        report.sqlite = Some(
            throughput(&ctx, ReceiverKind::Custody(Db::Sqlite))
                .await
                .context("custody on SQLite")?,
        );
    }
    if !args.skip_postgres {
        let admin = args.pg_url.clone().context(
            "the PostgreSQL run needs --pg-url or CUSTODY_TEST_PG_URL (or pass --skip-postgres)",
        )?;
        report.postgres = Some(
            throughput(&ctx, ReceiverKind::Custody(Db::Postgres(admin)))
                .await
                .context("custody on PostgreSQL")?,
        );
    }
    if !args.skip_latency {
        report.latency = Some(latency(&ctx).await.context("live delay")?);
    }

    report.print(&ctx, bridge_window);
    if let Some(path) = &args.json {
        let j = report.to_json(&ctx, cpus, release, bridge_window);
        std::fs::write(path, serde_json::to_vec_pretty(&j)?)
            .with_context(|| format!("writing --json {}", path.display()))?;
        println!("results written to {}", path.display());
    }
    if args.keep {
        let kept = work.keep();
        println!("kept {}", kept.display());
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------ progress

/// A spinner on a terminal, a line every five seconds otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    phase: String,
    last_line: Instant,
}

impl Progress {
    fn new(ctx: &Ctx, phase: impl Into<String>) -> Self {
        let phase = phase.into();
        let bar = ctx.terminal.then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed:>4} {prefix}: {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(phase.clone());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        if bar.is_none() {
            eprintln!("{phase}");
        }
        Self {
            bar,
            phase,
            last_line: Instant::now(),
        }
    }

    fn set(&mut self, msg: String) {
        match &self.bar {
            Some(bar) => bar.set_message(msg),
            None if self.last_line.elapsed() >= Duration::from_secs(5) => {
                eprintln!("  {}: {msg}", self.phase);
                self.last_line = Instant::now();
            }
            None => {}
        }
    }

    fn done(self, line: String) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        eprintln!("  {}: {line}", self.phase);
    }
}

// ---------------------------------------------------------------------------------------- processes

/// CPU seconds a process has used so far (user + system), from `/proc`.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count fields after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_S)
}

/// CPU use of a process over a stretch of time, in % of one core.
#[derive(Debug, Clone, Copy)]
struct CpuMeter {
    pid: u32,
    start: Option<(Instant, f64)>,
    last: Option<(Instant, f64)>,
}

impl CpuMeter {
    fn start(pid: Option<u32>) -> Option<Self> {
        let pid = pid?;
        let now = cpu_seconds(pid).map(|c| (Instant::now(), c));
        Some(Self {
            pid,
            start: now,
            last: now,
        })
    }

    /// Reads again; a process that has exited keeps its last reading.
    fn sample(&mut self) {
        if let Some(c) = cpu_seconds(self.pid) {
            self.last = Some((Instant::now(), c));
        }
    }

    fn percent(&self) -> Option<f64> {
        let ((t0, c0), (t1, c1)) = (self.start?, self.last?);
        let secs = (t1 - t0).as_secs_f64();
        (secs > 0.5).then(|| (c1 - c0) / secs * 100.0)
    }
}

fn sample_all(meters: &mut [&mut Option<CpuMeter>]) {
    for m in meters.iter_mut().filter_map(|m| m.as_mut()) {
        m.sample();
    }
}

/// A running `custody-sim fleet`.
struct Fleet {
    child: Child,
    stats_path: PathBuf,
    started: Instant,
    cpu: Option<CpuMeter>,
}

struct FleetPlan<'a> {
    broker: String,
    devices: u32,
    rate: f64,
    batch: u32,
    qos: u8,
    format: PayloadFormat,
    duration: Duration,
    connect_rate: f64,
    prefix: Option<&'a str>,
    credentials: Option<&'a Path>,
    name: &'a str,
}

impl Fleet {
    fn spawn(ctx: &Ctx, plan: &FleetPlan<'_>) -> anyhow::Result<Self> {
        let stats_path = ctx.work.join(format!("fleet-{}.json", plan.name));
        let log_path = ctx.work.join(format!("fleet-{}.log", plan.name));
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = Command::new(&ctx.sim);
        cmd.arg("fleet")
            .args(["--broker", &plan.broker])
            .args(["--devices", &plan.devices.to_string()])
            .args(["--rate", &plan.rate.to_string()])
            .args(["--batch", &plan.batch.to_string()])
            .args(["--qos", &plan.qos.to_string()])
            .args(["--format", plan.format.as_str()])
            .args([
                "--duration",
                &humantime::format_duration(plan.duration).to_string(),
            ])
            .args(["--connect-rate", &plan.connect_rate.to_string()])
            .arg("--stats-json")
            .arg(&stats_path)
            .arg("--quiet");
        if let Some(p) = plan.prefix {
            cmd.args(["--prefix", p]);
        }
        if let Some(c) = plan.credentials {
            cmd.arg("--credentials").arg(c);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", ctx.sim.display()))?;
        let cpu = CpuMeter::start(child.id());
        Ok(Self {
            child,
            stats_path,
            started: Instant::now(),
            cpu,
        })
    }

    fn exited(&mut self) -> anyhow::Result<bool> {
        Ok(self.child.try_wait()?.is_some())
    }

    /// Waits for the exit and reads the stats.
    async fn finish(mut self) -> anyhow::Result<(FleetStats, Option<f64>)> {
        let status = self.child.wait().await?;
        let stats: FleetStats = std::fs::read(&self.stats_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .with_context(|| {
                format!(
                    "custody-sim fleet exited with {status} without stats; its log is {}",
                    self.stats_path.with_extension("log").display()
                )
            })?;
        anyhow::ensure!(
            status.success(),
            "custody-sim fleet exited with {status}; its log is {}",
            self.stats_path.with_extension("log").display()
        );
        Ok((stats, self.cpu.and_then(|c| c.percent())))
    }
}

/// Publishes one JSON fix with `mosquitto_pub` (QoS 1); `client_id` gives it a fixed client id.
async fn mosquitto_pub(broker: &Broker, topic: &str, payload: &str) -> anyhow::Result<()> {
    let st = Command::new("mosquitto_pub")
        .args(["-h", &broker.host, "-p", &broker.port.to_string()])
        .args(["-q", "1", "-t", topic, "-m", payload])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .context("running mosquitto_pub (Debian package mosquitto-clients)")?;
    anyhow::ensure!(
        st.success(),
        "mosquitto_pub to {} failed with {st}",
        broker.url()
    );
    Ok(())
}

/// Ends the persistent session a bridge left at the broker (with its subscription, which would
/// otherwise keep queueing messages): connecting with the same client id and a clean session drops it.
async fn clear_session(broker: &Broker, client_id: &str) {
    let _ = Command::new("mosquitto_pub")
        .args(["-h", &broker.host, "-p", &broker.port.to_string()])
        .args([
            "-i",
            client_id,
            "-q",
            "0",
            "-t",
            "custody-bench/session-end",
        ])
        .args(["-m", ""])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
}

fn probe_fix() -> String {
    let ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!(r#"{{"ts": {ms}, "lat": 30.2741, "lon": 120.1551, "acc": 5.0}}"#)
}

// -------------------------------------------------------------------------------------- throughput

#[derive(Debug, Clone)]
enum Db {
    Sqlite,
    /// The admin URL of the server.
    Postgres(String),
}

#[derive(Debug, Clone)]
enum ReceiverKind {
    MosquittoSub,
    Custody(Db),
}

impl ReceiverKind {
    fn label(&self) -> &'static str {
        match self {
            Self::MosquittoSub => "mosquitto_sub",
            Self::Custody(Db::Sqlite) => "custody, SQLite",
            Self::Custody(Db::Postgres(_)) => "custody, PostgreSQL",
        }
    }

    fn short(&self) -> &'static str {
        match self {
            Self::MosquittoSub => "sub",
            Self::Custody(Db::Sqlite) => "sqlite",
            Self::Custody(Db::Postgres(_)) => "postgres",
        }
    }
}

/// A fresh PostgreSQL database for one run.
struct PgDb {
    admin: String,
    name: String,
    url: String,
}

/// `url` with its database (path) replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

impl PgDb {
    async fn create(admin: &str, tag: &str) -> anyhow::Result<Self> {
        use sqlx::Connection;
        let name = format!("custody_bench_{tag}");
        let mut conn = sqlx::PgConnection::connect(admin).await.with_context(|| {
            format!(
                "connecting to PostgreSQL at {} (start it with scripts/test-servers.sh)",
                crate::config::redact_url(admin)
            )
        })?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .with_context(|| format!("creating database {name}"))?;
        conn.close().await?;
        Ok(Self {
            admin: admin.to_string(),
            url: with_database(admin, &name),
            name,
        })
    }

    async fn drop_db(self) {
        use sqlx::Connection;
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin).await {
            let stmt = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(stmt))
                .execute(&mut conn)
                .await
            {
                eprintln!("warning: dropping database {}: {e}", self.name);
            }
            let _ = conn.close().await;
        }
    }
}

/// What receives the stream, and how to read its running total.
enum Receiver {
    Sub {
        child: Child,
        /// Fleet messages printed so far (topics with the run's prefix).
        messages: Arc<AtomicU64>,
        /// Probe messages printed so far.
        probes: Arc<AtomicU64>,
    },
    Custody {
        server: ServerProcess,
        metrics_url: String,
        client_id: String,
        db: Option<PgDb>,
    },
}

/// Counters read from the server's `/metrics`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct ServerCounters {
    accepted: u64,
    rejected: u64,
    malformed: u64,
    write_errors: u64,
    batches: u64,
    /// Seconds spent committing batches (`custody_telemetry_batch_seconds_sum`).
    commit_s: f64,
}

async fn scrape(http: &reqwest::Client, url: &str) -> anyhow::Result<ServerCounters> {
    let text = http
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let mut c = ServerCounters::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let f = value.parse::<f64>().unwrap_or(0.0);
        let v = f as u64;
        let metric = name.split('{').next().unwrap_or(name);
        match metric {
            "custody_telemetry_batch_seconds_sum" => c.commit_s += f,
            "custody_telemetry_positions_accepted_total" => c.accepted += v,
            "custody_telemetry_positions_rejected_total" => c.rejected += v,
            "custody_telemetry_messages_malformed_total" => c.malformed += v,
            "custody_telemetry_write_errors_total" => c.write_errors += v,
            "custody_telemetry_batches_total" => c.batches += v,
            _ => {}
        }
    }
    Ok(c)
}

impl Receiver {
    async fn start(ctx: &Ctx, kind: &ReceiverKind, prefix: &str) -> anyhow::Result<Self> {
        match kind {
            ReceiverKind::MosquittoSub => {
                let mut child = Command::new("mosquitto_sub")
                    .args(["-h", &ctx.broker.host, "-p", &ctx.broker.port.to_string()])
                    .args(["-q", "1", "-i", &format!("custody-bench-sub-{}", ctx.tag)])
                    .args(["-t", "custody/v1/dev/+/pos", "-F", "%t"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .kill_on_drop(true)
                    .spawn()
                    .context("starting mosquitto_sub (Debian package mosquitto-clients)")?;
                let stdout = child.stdout.take().context("mosquitto_sub stdout")?;
                let (messages, probes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
                let (m, p) = (messages.clone(), probes.clone());
                let mine = format!("/{prefix}");
                let probe = format!("/{}", probe_device(ctx, "sub"));
                tokio::spawn(async move {
                    let mut lines = tokio::io::BufReader::with_capacity(1 << 20, stdout).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        if line.contains(&mine) {
                            m.fetch_add(1, Ordering::Relaxed);
                        } else if line.contains(&probe) {
                            p.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
                Ok(Self::Sub {
                    child,
                    messages,
                    probes,
                })
            }
            ReceiverKind::Custody(db) => {
                let short = kind.short();
                let data = ctx.work.join(short).join("data");
                let pg = match db {
                    Db::Sqlite => None,
                    Db::Postgres(admin) => Some(PgDb::create(admin, &ctx.tag).await?),
                };
                let db_url = match &pg {
                    Some(p) => p.url.clone(),
                    None => format!("sqlite://{}", data.join("custody.db").display()),
                };
                let client_id = format!("custody-bench-{}-{short}", ctx.tag);
                let mut extra: Vec<String> = vec![
                    "--database-url".into(),
                    db_url,
                    "--mqtt-url".into(),
                    ctx.broker.url(),
                    "--mqtt-client-id".into(),
                    client_id.clone(),
                    "--mqtt-share-group".into(),
                    format!("cb{}{short}", ctx.tag),
                ];
                extra.extend(serve_args(&ctx.args));
                let exe = ctx.custody.clone();
                let server = match tokio::task::spawn_blocking(move || {
                    ServerProcess::spawn(&exe, &data, &extra)
                })
                .await?
                {
                    Ok(s) => s,
                    Err(e) => {
                        if let Some(p) = pg {
                            p.drop_db().await;
                        }
                        return Err(e);
                    }
                };
                let metrics_url = format!("http://{}/metrics", server.addrs.http);
                Ok(Self::Custody {
                    server,
                    metrics_url,
                    client_id,
                    db: pg,
                })
            }
        }
    }

    /// Waits until the receiver gets messages from the broker: publishes a probe until it shows.
    async fn wait_subscribed(&self, ctx: &Ctx, kind: &ReceiverKind) -> anyhow::Result<()> {
        let device = probe_device(ctx, kind.short());
        let topic = format!("custody/v1/dev/{device}/pos");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            mosquitto_pub(&ctx.broker, &topic, &probe_fix()).await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
            let seen = match self {
                Self::Sub { probes, .. } => probes.load(Ordering::Relaxed) > 0,
                Self::Custody { metrics_url, .. } => {
                    scrape(&ctx.http, metrics_url).await?.accepted > 0
                }
            };
            if seen {
                // A second probe may still be on its way: let it arrive before the total is taken.
                tokio::time::sleep(Duration::from_millis(500)).await;
                return Ok(());
            }
        }
        anyhow::bail!(
            "{} did not receive a probe message from {} within 30 s",
            kind.label(),
            ctx.broker.url()
        )
    }

    /// The running total: messages for `mosquitto_sub`, stored positions for custody.
    async fn total(&self, ctx: &Ctx) -> anyhow::Result<(u64, Option<ServerCounters>)> {
        match self {
            Self::Sub { messages, .. } => Ok((messages.load(Ordering::Relaxed), None)),
            Self::Custody { metrics_url, .. } => {
                let c = scrape(&ctx.http, metrics_url).await?;
                Ok((c.accepted, Some(c)))
            }
        }
    }

    fn pid(&self) -> Option<u32> {
        match self {
            Self::Sub { child, .. } => child.id(),
            Self::Custody { server, .. } => Some(server.pid()),
        }
    }

    async fn stop(self, ctx: &Ctx) -> anyhow::Result<()> {
        match self {
            Self::Sub { mut child, .. } => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                Ok(())
            }
            Self::Custody {
                server,
                client_id,
                db,
                ..
            } => {
                let stopped = tokio::task::spawn_blocking(move || server.stop()).await?;
                clear_session(&ctx.broker, &client_id).await;
                if let Some(db) = db {
                    db.drop_db().await;
                }
                stopped.map(|_| ())
            }
        }
    }
}

/// `--serve-args`, with `--log warn` unless they set the log filter: logging every connection of ten
/// thousand recorders would cost the server time the bench measures.
fn serve_args(args: &TelemetryBenchArgs) -> Vec<String> {
    let mut out: Vec<String> = args
        .serve_args
        .split_whitespace()
        .map(String::from)
        .collect();
    if !out.iter().any(|a| a == "--log" || a.starts_with("--log=")) {
        out.extend(["--log".to_string(), "warn".to_string()]);
    }
    out
}

fn probe_device(ctx: &Ctx, what: &str) -> String {
    format!("TBPROBE-{}-{what}", ctx.tag)
}

/// Running totals over time: seconds since the fleet started, total.
#[derive(Debug, Default)]
struct Series(Vec<(f64, f64)>);

impl Series {
    /// The total at `t`, interpolated linearly between samples.
    fn at(&self, t: f64) -> f64 {
        let s = &self.0;
        match s.iter().position(|&(ts, _)| ts >= t) {
            None => s.last().map_or(0.0, |&(_, v)| v),
            Some(0) => s.first().map_or(0.0, |&(_, v)| v),
            Some(i) => {
                let ((t0, v0), (t1, v1)) = (s[i - 1], s[i]);
                if t1 - t0 <= 0.0 {
                    v1
                } else {
                    v0 + (v1 - v0) * (t - t0) / (t1 - t0)
                }
            }
        }
    }

    /// When the total first reached its final value.
    fn idle_since(&self) -> f64 {
        let last = self.0.last().map_or(0.0, |&(_, v)| v);
        self.0
            .iter()
            .find(|&&(_, v)| v >= last)
            .map_or(0.0, |&(t, _)| t)
    }

    fn scaled(&self, k: f64) -> Self {
        Self(self.0.iter().map(|&(t, v)| (t, v * k)).collect())
    }
}

/// The figures of one throughput run.
#[derive(Debug, Clone, Serialize)]
struct Throughput {
    receiver: &'static str,
    fleet: FleetStats,
    /// Positions the receiver got (`mosquitto_sub`: messages × positions per message) or stored.
    received: u64,
    /// Published (acknowledged by the broker) minus received; negative when others published too.
    lost: i64,
    /// Growth of the total from 25 % to 95 % of the fleet's run, per second.
    sustained_per_s: f64,
    /// Growth from 25 % of the run until the total stopped growing, per second.
    until_idle_per_s: f64,
    /// Received / the time from the fleet's start until the total stopped growing.
    average_per_s: f64,
    /// Seconds from the fleet's stop until the total stopped growing.
    drain_s: f64,
    receiver_cpu_pct: Option<f64>,
    fleet_cpu_pct: Option<f64>,
    broker_cpu_pct: Option<f64>,
    server: Option<ServerCounters>,
}

async fn throughput(ctx: &Ctx, kind: ReceiverKind) -> anyhow::Result<Throughput> {
    let args = &ctx.args;
    let prefix = format!("TB{}{}-", ctx.tag, &kind.short()[..1].to_uppercase());
    let mut progress = Progress::new(ctx, format!("throughput into {}", kind.label()));
    progress.set("starting".into());
    let receiver = Receiver::start(ctx, &kind, &prefix).await?;
    let result = async {
        progress.set("waiting for the subscription".into());
        receiver.wait_subscribed(ctx, &kind).await?;
        let (base, _) = receiver.total(ctx).await?;
        let mut rx_cpu = CpuMeter::start(receiver.pid());
        let mut broker_cpu = CpuMeter::start(args.broker_pid);
        let mut fleet = Fleet::spawn(
            ctx,
            &FleetPlan {
                broker: ctx.broker.url(),
                devices: args.devices,
                rate: args.rate,
                batch: args.batch,
                qos: args.qos,
                format: args.format,
                duration: args.duration,
                connect_rate: args.connect_rate,
                prefix: Some(&prefix),
                credentials: None,
                name: kind.short(),
            },
        )?;
        let t0 = fleet.started;
        let mut series = Series(vec![(0.0, 0.0)]);
        let unit = if matches!(kind, ReceiverKind::MosquittoSub) {
            "messages"
        } else {
            "positions stored"
        };
        let mut last = (Instant::now(), 0u64);
        let mut counters = None;
        // While the fleet runs.
        loop {
            tokio::time::sleep(SAMPLE).await;
            let (total, c) = receiver.total(ctx).await?;
            let total = total.saturating_sub(base);
            counters = c.or(counters);
            series.0.push((t0.elapsed().as_secs_f64(), total as f64));
            sample_all(&mut [&mut rx_cpu, &mut broker_cpu, &mut fleet.cpu]);
            let now = Instant::now();
            if (now - last.0) >= Duration::from_secs(1) {
                let rate = (total - last.1) as f64 / (now - last.0).as_secs_f64();
                progress.set(format!(
                    "fleet publishing, {:.1} s of {:.0} s; {total} {unit}, {rate:.0}/s",
                    t0.elapsed().as_secs_f64(),
                    args.duration.as_secs_f64()
                ));
                last = (now, total);
            }
            if fleet.exited()? {
                break;
            }
        }
        let (stats, fleet_cpu) = fleet.finish().await?;
        let expected = if matches!(kind, ReceiverKind::MosquittoSub) {
            stats.messages
        } else {
            stats.positions
        };
        // Until the total reaches what was published or stops growing.
        let drain_start = Instant::now();
        let mut grew = Instant::now();
        let mut prev = series.0.last().map_or(0.0, |&(_, v)| v) as u64;
        while prev < expected && grew.elapsed() < IDLE && drain_start.elapsed() < args.drain_timeout
        {
            tokio::time::sleep(SAMPLE).await;
            let (total, c) = receiver.total(ctx).await?;
            let total = total.saturating_sub(base);
            counters = c.or(counters);
            if total > prev {
                grew = Instant::now();
                prev = total;
            }
            series.0.push((t0.elapsed().as_secs_f64(), total as f64));
            if total < expected {
                sample_all(&mut [&mut rx_cpu, &mut broker_cpu]);
            }
            progress.set(format!(
                "fleet stopped; draining: {total} of {expected} {unit}"
            ));
        }
        // mosquitto_sub counts messages: positions are messages × positions per message.
        let per_message = if matches!(kind, ReceiverKind::MosquittoSub) && stats.messages > 0 {
            stats.positions as f64 / stats.messages as f64
        } else {
            1.0
        };
        let series = series.scaled(per_message);
        let received = series.0.last().map_or(0.0, |&(_, v)| v).round() as u64;
        let (a, b) = (WINDOW.0 * stats.elapsed_s, WINDOW.1 * stats.elapsed_s);
        let sustained = (series.at(b) - series.at(a)) / (b - a).max(1e-9);
        let idle = series.idle_since().max(stats.elapsed_s);
        let until_idle = (received as f64 - series.at(a)) / (idle - a).max(1e-9);
        let t = Throughput {
            receiver: kind.label(),
            lost: stats.positions as i64 - received as i64,
            average_per_s: received as f64 / idle.max(1e-9),
            drain_s: (idle - stats.elapsed_s).max(0.0),
            fleet: stats,
            received,
            sustained_per_s: sustained,
            until_idle_per_s: until_idle,
            receiver_cpu_pct: rx_cpu.and_then(|c| c.percent()),
            fleet_cpu_pct: fleet_cpu,
            broker_cpu_pct: broker_cpu.and_then(|c| c.percent()),
            server: counters,
        };
        anyhow::Ok(t)
    }
    .await;
    let stopped = receiver.stop(ctx).await;
    let t = result?;
    stopped?;
    progress.done(format!(
        "{:.0} positions/s sustained; {} of {} published positions received, {} lost",
        t.sustained_per_s, t.received, t.fleet.positions, t.lost
    ));
    Ok(t)
}

// -------------------------------------------------------------------------------------- live delay

/// The figures of the live-delay run.
#[derive(Debug, Clone, Serialize)]
struct Latency {
    devices: u32,
    rate: f64,
    fleet: FleetStats,
    register_s: f64,
    /// Seconds from the fleet's start until every device had been seen on the live feed, or `None`
    /// when some never were (recording then started at the ramp-up's end plus the warm-up).
    all_seen_after_s: Option<f64>,
    devices_seen: usize,
    recorded: usize,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    /// Position events on the feed in all (before the warm-up too).
    events: u64,
    lagged_messages: u64,
    lagged_missed: u64,
    stored: Option<ServerCounters>,
    server_cpu_pct: Option<f64>,
    fleet_cpu_pct: Option<f64>,
    /// Per second of the recording: (second, events, p99 ms), to see whether the delay drifts.
    per_second: Vec<(u64, usize, f64)>,
}

/// The WebSocket reader's results.
#[derive(Debug, Default)]
struct Feed {
    /// (seconds since recording started, delay µs) of each position after the warm-up.
    delays: Vec<(f32, i64)>,
    events: u64,
    lagged_messages: u64,
    lagged_missed: u64,
    all_seen_after: Option<Duration>,
    devices_seen: usize,
}

#[derive(Deserialize)]
struct LiveMsg<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(default, borrow)]
    device: Option<&'a str>,
    #[serde(default, borrow)]
    time: Option<&'a str>,
    #[serde(default)]
    missed: Option<u64>,
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Shared with the progress display.
#[derive(Debug, Default)]
struct FeedProgress {
    /// The WebSocket is open: the fleet may start.
    connected: AtomicBool,
    events: AtomicU64,
    seen: AtomicU64,
    recording: AtomicBool,
}

async fn read_feed(
    url: String,
    devices: usize,
    warmup: Duration,
    fallback: Duration,
    progress: Arc<FeedProgress>,
    stop: CancellationToken,
) -> anyhow::Result<Feed> {
    let (mut ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let started = Instant::now();
    let mut feed = Feed::default();
    let mut seen: HashSet<String> = HashSet::with_capacity(devices);
    let mut record_from: Option<Instant> = None;
    progress.connected.store(true, Ordering::Relaxed);
    loop {
        let msg = tokio::select! {
            () = stop.cancelled() => break,
            m = ws.next() => match m {
                Some(Ok(m)) => m,
                Some(Err(e)) => anyhow::bail!("the live feed failed: {e}"),
                None => anyhow::bail!("the server closed the live feed"),
            },
        };
        let received = now_micros();
        let tokio_tungstenite::tungstenite::Message::Text(text) = msg else {
            continue;
        };
        let Ok(m) = serde_json::from_str::<LiveMsg<'_>>(&text) else {
            continue;
        };
        match m.kind {
            "position" => {
                feed.events += 1;
                progress.events.fetch_add(1, Ordering::Relaxed);
                if feed.all_seen_after.is_none()
                    && let Some(d) = m.device
                    && !seen.contains(d)
                {
                    seen.insert(d.to_string());
                    progress.seen.store(seen.len() as u64, Ordering::Relaxed);
                    if seen.len() >= devices {
                        feed.all_seen_after = Some(started.elapsed());
                        record_from = Some(Instant::now() + warmup);
                    }
                }
                if record_from.is_none() && started.elapsed() >= fallback {
                    record_from = Some(Instant::now());
                }
                match record_from {
                    Some(from) if Instant::now() >= from => {
                        progress.recording.store(true, Ordering::Relaxed);
                        if let Some(t) = m.time.and_then(|t| Timestamp::parse_rfc3339(t).ok()) {
                            let since = (Instant::now() - from).as_secs_f32();
                            feed.delays
                                .push((since, (received - t.unix_micros()).max(0)));
                        }
                    }
                    _ => {}
                }
            }
            "lagged" => {
                feed.lagged_messages += 1;
                feed.lagged_missed += m.missed.unwrap_or(0);
            }
            _ => {}
        }
    }
    feed.devices_seen = seen.len();
    let _ = ws.close(None).await;
    Ok(feed)
}

async fn latency(ctx: &Ctx) -> anyhow::Result<Latency> {
    let args = &ctx.args;
    let n = args.latency_devices;
    let dir = ctx.work.join("latency");
    let data = dir.join("data");
    std::fs::create_dir_all(&data)?;
    let db_url = format!("sqlite://{}", data.join("custody.db").display());
    let creds = dir.join("devices.txt");

    // Register the recorders as an operator would, before the server starts.
    let progress = Progress::new(ctx, "live delay: registering recorders");
    let t = Instant::now();
    let out = Command::new(&ctx.custody)
        .args(["admin", "device", "add", "--count", &n.to_string()])
        .args(["--prefix", "LAT-", "--credential-out"])
        .arg(&creds)
        .arg("--data-dir")
        .arg(&data)
        .args(["--database-url", &db_url])
        .stdin(Stdio::null())
        .output()
        .await
        .context("running custody admin device add")?;
    anyhow::ensure!(
        out.status.success(),
        "custody admin device add --count {n} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let register_s = t.elapsed().as_secs_f64();
    progress.done(format!("{n} recorders registered in {register_s:.1} s"));

    let mut progress = Progress::new(ctx, format!("live delay, {n} recorders"));
    progress.set("starting the server".into());
    let mut extra: Vec<String> = vec!["--database-url".into(), db_url];
    extra.extend(serve_args(args));
    let exe = ctx.custody.clone();
    let server =
        tokio::task::spawn_blocking(move || ServerProcess::spawn(&exe, &data, &extra)).await??;
    let mqtt = server
        .addrs
        .mqtt
        .context("the server did not open its embedded MQTT endpoint")?;
    let metrics_url = format!("http://{}/metrics", server.addrs.http);
    // The live feed needs a commander's session; a browser passes it in the query.
    let token = server.user_token("bench-commander", "commander")?;
    let live_url = format!(
        "ws://{}/api/v1/live?snapshot=false&access_token={token}",
        server.addrs.http
    );

    let result = async {
        let feed_progress = Arc::new(FeedProgress::default());
        let stop = CancellationToken::new();
        let ramp = Duration::from_secs_f64(f64::from(n) / args.latency_connect_rate);
        let reader = tokio::spawn(read_feed(
            live_url,
            n as usize,
            args.latency_warmup,
            ramp + Duration::from_secs(5) + args.latency_warmup,
            feed_progress.clone(),
            stop.clone(),
        ));
        // The fleet starts once the feed is open, so that no fix is missed.
        while !feed_progress.connected.load(Ordering::Relaxed) {
            if reader.is_finished() {
                return Err(match reader.await {
                    Ok(Err(e)) => e,
                    _ => anyhow::anyhow!("the live feed reader stopped before connecting"),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut server_cpu = CpuMeter::start(Some(server.pid()));
        let mut fleet = Fleet::spawn(
            ctx,
            &FleetPlan {
                broker: format!("mqtt://{mqtt}"),
                devices: n,
                rate: args.latency_rate,
                batch: 1,
                qos: 1,
                format: PayloadFormat::Proto,
                duration: args.latency_duration,
                connect_rate: args.latency_connect_rate,
                prefix: None,
                credentials: Some(&creds),
                name: "latency",
            },
        )?;
        let t0 = fleet.started;
        let mut last = (Instant::now(), 0u64);
        loop {
            tokio::time::sleep(SAMPLE).await;
            sample_all(&mut [&mut server_cpu, &mut fleet.cpu]);
            let now = Instant::now();
            if now - last.0 >= Duration::from_secs(1) {
                let events = feed_progress.events.load(Ordering::Relaxed);
                let rate = (events - last.1) as f64 / (now - last.0).as_secs_f64();
                let state = if feed_progress.recording.load(Ordering::Relaxed) {
                    "recording".to_string()
                } else {
                    format!(
                        "warming up, {} of {n} recorders seen",
                        feed_progress.seen.load(Ordering::Relaxed)
                    )
                };
                progress.set(format!(
                    "{:.1} s of {:.0} s; {rate:.0} events/s on the feed; {state}",
                    t0.elapsed().as_secs_f64(),
                    args.latency_duration.as_secs_f64()
                ));
                last = (now, events);
            }
            if reader.is_finished() || fleet.exited()? {
                break;
            }
        }
        let (stats, fleet_cpu) = fleet.finish().await?;
        // Fixes still on their way.
        tokio::time::sleep(Duration::from_secs(1)).await;
        sample_all(&mut [&mut server_cpu]);
        stop.cancel();
        let feed = reader.await??;
        let stored = scrape(&ctx.http, &metrics_url).await.ok();
        anyhow::Ok((feed, stats, fleet_cpu, server_cpu, stored))
    }
    .await;
    let stopped = tokio::task::spawn_blocking(move || server.stop()).await?;
    let (feed, stats, fleet_cpu, server_cpu, stored) = result?;
    stopped?;

    let mut delays: Vec<i64> = feed.delays.iter().map(|&(_, d)| d).collect();
    delays.sort_unstable();
    let ms = |q: f64| percentile(&delays, q) as f64 / 1e3;
    let mut per_second: Vec<(u64, usize, f64)> = Vec::new();
    let mut by_second: std::collections::BTreeMap<u64, Vec<i64>> = Default::default();
    for &(t, d) in &feed.delays {
        by_second.entry(t as u64).or_default().push(d);
    }
    for (s, mut v) in by_second {
        v.sort_unstable();
        per_second.push((s, v.len(), percentile(&v, 0.99) as f64 / 1e3));
    }
    let l = Latency {
        devices: n,
        rate: args.latency_rate,
        fleet: stats,
        register_s,
        all_seen_after_s: feed.all_seen_after.map(|d| d.as_secs_f64()),
        devices_seen: feed.devices_seen,
        recorded: delays.len(),
        p50_ms: ms(0.50),
        p90_ms: ms(0.90),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: delays.last().copied().unwrap_or(0) as f64 / 1e3,
        events: feed.events,
        lagged_messages: feed.lagged_messages,
        lagged_missed: feed.lagged_missed,
        stored,
        server_cpu_pct: server_cpu.and_then(|c| c.percent()),
        fleet_cpu_pct: fleet_cpu,
        per_second,
    };
    progress.done(format!(
        "{} delays recorded: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {} lagged notices",
        l.recorded, l.p50_ms, l.p99_ms, l.max_ms, l.lagged_messages
    ));
    Ok(l)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

// ------------------------------------------------------------------------------------------ report

#[derive(Debug, Default)]
struct Report {
    baseline: Option<Throughput>,
    sqlite: Option<Throughput>,
    postgres: Option<Throughput>,
    latency: Option<Latency>,
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

fn pct(p: Option<f64>) -> String {
    p.map_or("?".into(), |p| format!("{p:.0} %"))
}

impl Report {
    fn ratio(&self, t: &Throughput) -> Option<f64> {
        self.baseline
            .as_ref()
            .map(|b| t.sustained_per_s / b.sustained_per_s.max(1e-9))
    }

    fn print(&self, ctx: &Ctx, bridge_window: usize) {
        let args = &ctx.args;
        let offered = f64::from(args.devices) * args.rate;
        println!();
        println!("details");
        for t in [&self.baseline, &self.sqlite, &self.postgres]
            .into_iter()
            .flatten()
        {
            println!("  {}", t.receiver);
            println!(
                "    fleet published {} positions in {} messages in {:.1} s ({:.0}/s with the ramp-up), {} publish errors; custody-sim CPU {}",
                t.fleet.positions,
                t.fleet.messages,
                t.fleet.elapsed_s,
                t.fleet.positions_per_s,
                t.fleet.publish_errors,
                pct(t.fleet_cpu_pct)
            );
            println!(
                "    received {} ({} lost); {:.0}/s from 25 % to 95 % of the run, {:.0}/s until the total stopped growing {:.1} s after the fleet stopped, {:.0}/s on average",
                t.received,
                t.lost,
                t.sustained_per_s,
                t.until_idle_per_s,
                t.drain_s,
                t.average_per_s
            );
            println!(
                "    CPU (100 % = one core): receiver {}, broker {}",
                pct(t.receiver_cpu_pct),
                pct(t.broker_cpu_pct)
            );
            let run_s = t.fleet.elapsed_s + t.drain_s;
            if let Some(c) = &t.server {
                println!(
                    "    server: {} stored in {} commits ({:.0} positions each, {:.1} ms each on average, committing {:.0} % of the run), {} rejected, {} malformed messages, {} failed commits",
                    c.accepted,
                    c.batches,
                    c.accepted as f64 / c.batches.max(1) as f64,
                    c.commit_s * 1e3 / c.batches.max(1) as f64,
                    c.commit_s / run_s.max(1e-9) * 100.0,
                    c.rejected,
                    c.malformed,
                    c.write_errors
                );
            }
            if t.lost < 0 {
                println!(
                    "    more arrived than this fleet published: other clients publish to the same broker"
                );
            }
            let behind = t.sustained_per_s < 0.95 * offered;
            if let Some(c) = t.server.filter(|_| behind) {
                println!(
                    "    custody fell behind the offered {offered:.0}/s. Its writer commits one batch at a time, and a batch \
                     holds at most the messages the bridge handles at once ({bridge_window}, {} positions): \
                     {:.0} commits/s of {:.0} positions",
                    bridge_window as u64 * u64::from(args.batch),
                    c.batches as f64 / run_s.max(1e-9),
                    c.accepted as f64 / c.batches.max(1) as f64,
                );
                if args
                    .broker_max_inflight
                    .is_none_or(|w| (w as usize) < bridge_window)
                {
                    println!(
                        "    the broker lets a client have {} unacknowledged QoS 1 messages, fewer than the bridge's \
                         {bridge_window}: that caps each commit further; raise max_inflight_messages (scripts/bench-telemetry.sh \
                         starts a Mosquitto with 1000)",
                        args.broker_max_inflight
                            .map_or("an unknown number of".into(), |n| n.to_string())
                    );
                }
            }
        }
        if let Some(l) = &self.latency {
            println!("  live delay");
            println!(
                "    {} recorders registered in {:.1} s; fleet published {} positions in {:.1} s, {} publish errors; custody-sim CPU {}",
                l.devices,
                l.register_s,
                l.fleet.positions,
                l.fleet.elapsed_s,
                l.fleet.publish_errors,
                pct(l.fleet_cpu_pct)
            );
            println!(
                "    {} of {} recorders seen on the feed{}; {} position events, {} recorded after the warm-up",
                l.devices_seen,
                l.devices,
                l.all_seen_after_s
                    .map_or(String::new(), |s| format!(" (all after {s:.1} s)")),
                l.events,
                l.recorded
            );
            println!(
                "    delay p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms; {} lagged notices ({} events missed)",
                l.p50_ms,
                l.p90_ms,
                l.p99_ms,
                l.p999_ms,
                l.max_ms,
                l.lagged_messages,
                l.lagged_missed
            );
            if let Some(c) = &l.stored {
                println!(
                    "    server: {} stored in {} commits ({:.0} positions each, {:.1} ms each on average), {} rejected, CPU {}",
                    c.accepted,
                    c.batches,
                    c.accepted as f64 / c.batches.max(1) as f64,
                    c.commit_s * 1e3 / c.batches.max(1) as f64,
                    c.rejected,
                    pct(l.server_cpu_pct)
                );
            }
            let worst = l
                .per_second
                .iter()
                .filter(|s| s.1 as f64 >= f64::from(l.devices) * l.rate / 2.0)
                .max_by(|a, b| a.2.total_cmp(&b.2))
                .copied();
            if let Some((s, count, p99)) = worst {
                println!(
                    "    worst second of the recording: second {s}, {count} events, p99 {p99:.1} ms"
                );
            }
        }

        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        println!();
        println!(
            "results ({cpus} CPUs shared by the fleet, the broker, the server and this process)"
        );
        println!(
            "  {:<52} {:>14}   {:<18} verdict",
            "figure", "measured", "target"
        );
        let row = |name: &str, measured: String, target: &str, v: &str| {
            println!("  {name:<52} {measured:>14}   {target:<18} {v}");
        };
        if let Some(b) = &self.baseline {
            row(
                "mosquitto_sub alone, same stream",
                format!("{:.0} /s", b.sustained_per_s),
                "(reference)",
                "",
            );
        }
        for (name, t) in [("SQLite", &self.sqlite), ("PostgreSQL", &self.postgres)] {
            let Some(t) = t else { continue };
            row(
                &format!("sustained positions/s stored, {name}"),
                format!("{:.0} /s", t.sustained_per_s),
                ">= 100000 /s",
                verdict(t.sustained_per_s >= TARGET_RATE && t.lost <= 0),
            );
            if let Some(r) = self.ratio(t) {
                row(
                    &format!("  custody / mosquitto_sub, {name}"),
                    format!("{r:.2}"),
                    ">= 0.70",
                    verdict(r >= TARGET_RATIO),
                );
            }
            if t.lost > 0 {
                row(
                    &format!("  published but not stored, {name}"),
                    format!("{}", t.lost),
                    "0",
                    "MISS",
                );
            }
        }
        if let Some(l) = &self.latency {
            let name = format!("live delay, {} devices × {} Hz", l.devices, l.rate);
            row(
                &format!("{name}, p50"),
                format!("{:.1} ms", l.p50_ms),
                "",
                "",
            );
            row(
                &format!("{name}, p99"),
                format!("{:.1} ms", l.p99_ms),
                "<= 50 ms",
                verdict(l.p99_ms <= TARGET_P99_MS && l.recorded > 0),
            );
            row(
                "  lagged notices on the feed",
                format!("{}", l.lagged_messages),
                "0",
                verdict(l.lagged_messages == 0),
            );
        }
        println!("  anchor: Traccar ≈ 8 000 messages/s on 4 cores");
        println!();
    }

    fn to_json(
        &self,
        ctx: &Ctx,
        cpus: usize,
        release: bool,
        bridge_window: usize,
    ) -> serde_json::Value {
        let args = &ctx.args;
        let ratio = |t: &Option<Throughput>| t.as_ref().and_then(|t| self.ratio(t));
        json!({
            "run": ctx.tag,
            "cpus": cpus,
            "release_build": release,
            "broker": {
                "url": ctx.broker.url(),
                "max_inflight": args.broker_max_inflight,
                "bridge_max_in_flight": bridge_window,
            },
            "throughput": {
                "devices": args.devices,
                "rate_hz": args.rate,
                "batch": args.batch,
                "qos": args.qos,
                "format": args.format.as_str(),
                "duration_s": args.duration.as_secs_f64(),
                "offered_per_s": f64::from(args.devices) * args.rate,
                "mosquitto_sub": self.baseline,
                "sqlite": self.sqlite,
                "postgres": self.postgres,
                "ratio_sqlite": ratio(&self.sqlite),
                "ratio_postgres": ratio(&self.postgres),
            },
            "latency": self.latency,
            "targets": {
                "sustained_per_s": TARGET_RATE,
                "ratio_to_mosquitto_sub": TARGET_RATIO,
                "live_p99_ms": TARGET_P99_MS,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_of_a_postgres_url_is_replaced() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/postgres", "x"),
            "postgres://u:p@h:5432/x"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
        assert_eq!(
            with_database("postgres://h/db?sslmode=disable", "x"),
            "postgres://h/x?sslmode=disable"
        );
    }

    #[test]
    fn a_series_is_interpolated_between_samples() {
        let s = Series(vec![(0.0, 0.0), (1.0, 10.0), (2.0, 30.0), (3.0, 30.0)]);
        assert!((s.at(1.5) - 20.0).abs() < 1e-9);
        assert!((s.at(5.0) - 30.0).abs() < 1e-9);
        assert!((s.idle_since() - 2.0).abs() < 1e-9);
    }

    #[test]
    fn broker_urls_are_parsed() {
        let b = Broker::parse("mqtt://127.0.0.1:18830").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((b.host.as_str(), b.port), ("127.0.0.1", 18830));
        let b = Broker::parse("mqtt://localhost").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(b.port, 1883);
        assert!(Broker::parse("tcp://x").is_err());
    }
}
