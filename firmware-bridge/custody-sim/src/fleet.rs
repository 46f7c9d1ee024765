//! `custody-sim fleet`: officers carrying GPS recorders, publishing their positions over MQTT, for tests,
//! demos and the telemetry benchmark (`custody bench telemetry` runs it as a child process and reads
//! its `--stats-json`).
//!
//! The officers' motion is a pure model ([`model`]); the payloads are the formats Custody reads
//! ([`wire`]: protobuf `PositionBatch`, the JSON fix, OwnTracks, the SOS alarm); the connections and their
//! accounting are in [`mqtt`]. Every fix is stamped with the wall clock at the moment it is made, so a
//! receiver can measure end-to-end delay as its receive time minus the fix time.
//!
//! Scale: ten thousand devices at one fix a second from one process on two cores. Each connection is
//! one task (one timer heap for all its devices, not a sleeping task per device), connections are
//! opened at `--connect-rate` so the broker is not hit by ten thousand CONNECTs at once, and the
//! open-file limit is raised to the hard limit at start.

pub mod model;
pub mod mqtt;
pub mod wire;

use anyhow::{Context, bail};
use custody_core::{DeviceCredential, DeviceId};
use indicatif::{ProgressBar, ProgressStyle};
use model::{Behaviour, Grid, Mode, Officer};
use mqtt::{BrokerUrl, ConnectionPlan, Counters, DeviceSim, Shared};
use rumqttc::QoS;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The OwnTracks user level of the topics OwnTracks devices publish to: `owntracks/sim/{device}`.
pub const OWNTRACKS_USER: &str = "sim";

/// Examples shown at the end of `custody-sim fleet --help`.
pub const EXAMPLES: &str = "\
Examples:
  # 10 devices at 1 fix/s against a local Mosquitto, until Ctrl-C
  custody-sim fleet --broker mqtt://127.0.0.1:1883

  # 10 000 devices for 30 s, stats for a benchmark
  custody-sim fleet --broker mqtt://127.0.0.1:1883 --devices 10000 --duration 30s --stats-json /tmp/fleet.json

  # devices registered with `custody admin device add`, logging in with their credentials
  custody-sim fleet --broker mqtt://custody.example:1883 --devices 50 --credentials devices.txt

  # a gateway: 1000 devices at 10 Hz over 4 connections, 10 fixes per message, JSON
  custody-sim fleet --broker mqtt://127.0.0.1:1883 --devices 1000 --rate 10 --connections 4 --batch 10 --format json

  # a third of the fleet on OwnTracks firmware, patrolling Shenzhen, many SOS presses
  custody-sim fleet --broker mqtt://127.0.0.1:1883 --owntracks-share 0.33 --center 22.5431,114.0579 --sos-per-hour 20

A second Ctrl-C stops waiting for outstanding acknowledgements.";

/// The payload format of position messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Protobuf `custody.v1.PositionBatch` (device id, positions, sequence number).
    Proto,
    /// Custody's JSON fix: one object per message, or an array with --batch above 1.
    Json,
}

/// A WGS-84 point written `LAT,LON`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Center {
    pub lat: f64,
    pub lon: f64,
}

impl FromStr for Center {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        // The street grid is laid out on a local flat projection, which the poles would break.
        let (lat, lon) = crate::parse_lat_lon(s, 80.0)?;
        Ok(Self { lat, lon })
    }
}

impl fmt::Display for Center {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{}", self.lat, self.lon)
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 1000.0 => Ok(v),
        _ => Err(format!(
            "expected fixes per second, more than 0 and at most 1000 (0.1 is one every 10 s), got {s:?}"
        )),
    }
}

fn parse_share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("expected a fraction from 0 to 1, got {s:?}")),
    }
}

fn parse_non_negative(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("expected a number of 0 or more, got {s:?}")),
    }
}

fn parse_positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("expected a number above 0, got {s:?}")),
    }
}

/// Options of `custody-sim fleet`.
#[derive(Debug, Clone, clap::Args)]
pub struct FleetArgs {
    /// The MQTT broker, mqtt://host:port (plain MQTT 3.1.1; port 1883 when left out)
    #[arg(long, value_name = "URL")]
    pub broker: BrokerUrl,
    /// Number of simulated recorders
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub devices: u32,
    /// GPS fixes per second per device (0.2 is one every 5 s). Devices' fixes are spread evenly over
    /// the period, not made at the same instant
    #[arg(long, value_name = "HZ", default_value_t = 1.0, value_parser = parse_rate)]
    pub rate: f64,
    /// Stop after this long (e.g. 60s, 5m, 1h 30m), counting from the start of the ramp-up [default:
    /// run until Ctrl-C or SIGTERM]
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<humantime::Duration>,
    /// Seed of the street grid and the officers; the same seed gives the same fleet [default: random,
    /// printed at start]
    #[arg(long)]
    pub seed: Option<u64>,
    /// File of device credentials, one `<device id>:<64 hex digits>` per line as `custody admin device
    /// add` prints them (blank lines and # comments are skipped). Device i logs in with line i (user
    /// name = device id, password = the hex secret); the file needs at least --devices lines. Without
    /// it, devices are named --prefix + a number and connect anonymously
    #[arg(long, value_name = "FILE")]
    pub credentials: Option<PathBuf>,
    /// Name prefix of devices without --credentials: SIM- gives SIM-00001, SIM-00002, ... (also the
    /// prefix of MQTT client ids)
    #[arg(long, default_value = "SIM-")]
    pub prefix: String,
    /// Number of MQTT connections. Fewer than --devices makes gateways: devices are spread over the
    /// connections, each publishing to its own topics through a shared login, which only a broker
    /// allowing anonymous clients (or one with permissive ACLs) accepts; so it cannot be combined with
    /// --credentials [default: one per device]
    #[arg(long, value_name = "C")]
    pub connections: Option<u32>,
    /// Payload of position messages on custody/v1/dev/{device}/pos
    #[arg(long, value_enum, default_value_t = Format::Proto)]
    pub format: Format,
    /// Fixes per message: a device buffers K fixes, then publishes them in one message
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub batch: u32,
    /// MQTT QoS of position messages, 0 or 1 (SOS alarms always go at QoS 1)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// Fraction of devices (0 to 1) that run OwnTracks-compatible firmware: they publish OwnTracks
    /// location JSON on owntracks/sim/{device}, one fix per message, instead
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = parse_share)]
    pub owntracks_share: f64,
    /// Centre of the patrolled area, LAT,LON in WGS-84 degrees
    #[arg(long, value_name = "LAT,LON", default_value = "30.2741,120.1551")]
    pub center: Center,
    /// Radius of the patrolled area in metres: a street grid of 150–250 m blocks within it (250 to
    /// 50000)
    #[arg(long, value_name = "M", default_value_t = 3000.0, value_parser = parse_positive)]
    pub radius_m: f64,
    /// Fraction of officers (0 to 1) in cars (8–15 m/s) rather than on foot (1.2–1.6 m/s)
    #[arg(long, value_name = "P", default_value_t = 0.2, value_parser = parse_share)]
    pub driving_share: f64,
    /// SOS presses per device per hour. Each publishes an alarm on custody/v1/dev/{device}/alarm and
    /// sets sos on the device's fixes for 10 s
    #[arg(long, value_name = "RATE", default_value_t = 0.05, value_parser = parse_non_negative)]
    pub sos_per_hour: f64,
    /// Write the final stats here as JSON: devices, connections, messages, positions, alarms,
    /// publish_errors, elapsed_s, positions_per_s
    #[arg(long, value_name = "FILE")]
    pub stats_json: Option<PathBuf>,
    /// New MQTT connections opened per second during the ramp-up
    #[arg(long, value_name = "PER_S", default_value_t = 500.0, value_parser = parse_positive)]
    pub connect_rate: f64,
    /// QoS 1 messages a connection may have waiting for their PUBACK [default: half a second's worth
    /// of the connection's messages, 20 to 5000]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub inflight: Option<u16>,
    /// At the end, how long to wait for outstanding acknowledgements before disconnecting anyway
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    pub drain_timeout: humantime::Duration,
    /// No progress display and no log lines on stderr
    #[arg(long, short)]
    pub quiet: bool,
}

/// What the connections share, fixed at start.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub format: Format,
    pub qos: QoS,
    pub batch: usize,
    /// Time between two fixes of a device.
    pub period: Duration,
    pub inflight: Option<u16>,
    pub drain_timeout: Duration,
}

impl Settings {
    /// Messages per second the devices of one connection publish (alarms aside).
    pub fn messages_per_s(&self, devices: &[DeviceSim]) -> f64 {
        let rate = 1.0 / self.period.as_secs_f64();
        devices
            .iter()
            .map(|d| {
                if d.owntracks {
                    rate
                } else {
                    rate / self.batch as f64
                }
            })
            .sum()
    }
}

/// The final numbers of a run, as written to `--stats-json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetStats {
    /// Devices that ran (fewer than asked when stopped during the ramp-up).
    pub devices: u64,
    /// MQTT connections opened.
    pub connections: u64,
    /// Position messages delivered: acknowledged by the broker at QoS 1, written at QoS 0.
    pub messages: u64,
    /// Positions in those messages.
    pub positions: u64,
    /// SOS alarms delivered.
    pub alarms: u64,
    /// Messages not delivered: dropped while the client's queue was full (broker away) or still
    /// unacknowledged at the end.
    pub publish_errors: u64,
    /// Seconds from the start to the stop (without the final drain).
    pub elapsed_s: f64,
    /// positions / elapsed_s.
    pub positions_per_s: f64,
}

impl FleetStats {
    /// A one-line human summary.
    pub fn summary(&self) -> String {
        format!(
            "fleet: {} devices on {} connections; {} positions in {} messages in {:.1}s ({:.0} positions/s), {} alarms, {} publish errors",
            self.devices,
            self.connections,
            self.positions,
            self.messages,
            self.elapsed_s,
            self.positions_per_s,
            self.alarms,
            self.publish_errors
        )
    }
}

/// Whether item `i` of a fleet is among the `share` picked evenly (exactly round(n·share) of any n
/// consecutive items, give or take one), shifted by `offset` so that two shares pick different items.
fn picked(i: usize, share: f64, offset: f64) -> bool {
    let at = |k: usize| (k as f64 * share + offset).floor();
    at(i + 1) > at(i)
}

/// Reads `<device id>:<64 hex>` lines, skipping blank lines and `#` comments.
fn read_credentials(path: &Path) -> anyhow::Result<Vec<DeviceCredential>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading credentials file {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|(n, l)| {
            DeviceCredential::parse(l)
                .map_err(|e| anyhow::anyhow!("{} line {}: {e}", path.display(), n + 1))
        })
        .collect()
}

/// The fleet, planned: the grid, the settings and the devices on their connections.
#[derive(Debug)]
struct Plan {
    grid: Arc<Grid>,
    settings: Settings,
    connections: Vec<ConnectionPlan>,
    devices: usize,
    seed: u64,
}

impl Plan {
    fn new(args: &FleetArgs) -> anyhow::Result<Self> {
        let n = args.devices as usize;
        let seed = args.seed.unwrap_or_else(rand::random);
        let grid = Grid::new(args.center.lat, args.center.lon, args.radius_m, seed)
            .map_err(|e| anyhow::anyhow!("--center/--radius-m: {e}"))?;
        let c = args.connections.map_or(n, |c| c as usize);
        if c == 0 || c > n {
            bail!("--connections: expected 1 to --devices ({n}), got {c}");
        }
        let credentials = match &args.credentials {
            None => None,
            Some(path) => {
                if c != n {
                    bail!(
                        "--connections {c} with --credentials: each device logs in with its own credential, so \
                         there must be one connection per device ({n}); leave --connections out"
                    );
                }
                let creds = read_credentials(path)?;
                if creds.len() < n {
                    bail!(
                        "--credentials {}: {} credentials for {n} devices; expected at least one line per device \
                         (`custody admin device add` prints one per device)",
                        path.display(),
                        creds.len()
                    );
                }
                Some(creds)
            }
        };
        let width = n.to_string().len().max(5);
        let behaviour = Behaviour {
            sos_per_hour: args.sos_per_hour,
            ..Behaviour::default()
        };
        let period = Duration::from_secs_f64(1.0 / args.rate);
        let mut connections: Vec<ConnectionPlan> = (0..c)
            .map(|_| ConnectionPlan {
                client_id: String::new(),
                login: None,
                devices: Vec::new(),
            })
            .collect();
        for i in 0..n {
            let (id, login) = match &credentials {
                Some(creds) => (
                    creds[i].id.clone(),
                    Some((creds[i].id.to_string(), creds[i].secret_hex())),
                ),
                None => {
                    let id = format!("{}{:0width$}", args.prefix, i + 1);
                    let id = DeviceId::parse(&id).map_err(|e| {
                        anyhow::anyhow!(
                            "--prefix {:?} makes device ids such as {id:?} that are not valid: {e}",
                            args.prefix
                        )
                    })?;
                    (id, None)
                }
            };
            let mode = if picked(i, args.driving_share, 0.5) {
                Mode::Driving
            } else {
                Mode::Walking
            };
            let officer = Officer::new(&grid, mode, behaviour, seed, i as u64);
            let phase = period.mul_f64(i as f64 / n as f64);
            let owntracks = picked(i, args.owntracks_share, 0.0);
            let dev = DeviceSim::new(&id, officer, owntracks, phase, OWNTRACKS_USER);
            // Round robin: each gateway's devices are spread over the whole period.
            let conn = &mut connections[i % c];
            if c == n {
                conn.client_id = id.to_string();
                conn.login = login;
            }
            conn.devices.push(dev);
        }
        if c < n {
            let w = c.to_string().len().max(3);
            for (k, conn) in connections.iter_mut().enumerate() {
                conn.client_id = format!("{}gw{:0w$}", args.prefix, k + 1);
            }
        }
        Ok(Self {
            grid: Arc::new(grid),
            settings: Settings {
                format: args.format,
                qos: if args.qos == 0 {
                    QoS::AtMostOnce
                } else {
                    QoS::AtLeastOnce
                },
                batch: args.batch as usize,
                period,
                inflight: args.inflight,
                drain_timeout: *args.drain_timeout,
            },
            connections,
            devices: n,
            seed,
        })
    }
}

/// Raises the open-file soft limit to the hard limit; warns when even that is too low for `conns`.
fn raise_open_file_limit(conns: usize, quiet: bool) {
    let need = conns as u64 + 256;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < need && !quiet => eprintln!(
            "custody-sim fleet: the open-file limit is {limit}, below the {need} that {conns} connections need; \
             connections beyond it will fail (raise the hard limit, e.g. `ulimit -Hn`)"
        ),
        Ok(_) => {}
        Err(e) if !quiet => {
            eprintln!("custody-sim fleet: could not raise the open-file limit: {e}")
        }
        Err(_) => {}
    }
}

/// Runs the fleet until Ctrl-C, SIGTERM or `--duration`, then writes `--stats-json` and returns the
/// stats. Fails before starting on bad options, and after writing the stats when no connection to the
/// broker ever succeeded.
pub fn run(args: &FleetArgs) -> anyhow::Result<FleetStats> {
    let plan = Plan::new(args)?;
    raise_open_file_limit(plan.connections.len(), args.quiet);
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    let (stats, ever_connected) = runtime.block_on(run_plan(plan, args));
    if let Some(path) = &args.stats_json {
        let json = serde_json::to_vec_pretty(&stats)?;
        std::fs::write(path, json)
            .with_context(|| format!("writing --stats-json {}", path.display()))?;
    }
    if ever_connected == 0 && stats.connections > 0 {
        bail!(
            "no connection to the broker at {} succeeded: is it running, and does it accept these clients? \
             (the connection errors are logged above)",
            args.broker
        );
    }
    Ok(stats)
}

/// Cancels `stop` at the first Ctrl-C or SIGTERM and `hurry` at the second.
fn watch_signals(stop: CancellationToken, hurry: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        loop {
            #[cfg(unix)]
            let term_recv = async {
                match term.as_mut() {
                    Some(t) => {
                        t.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let term_recv = std::future::pending::<()>();
            tokio::select! {
                r = tokio::signal::ctrl_c() => if r.is_err() { return },
                () = term_recv => {}
            }
            if stop.is_cancelled() {
                hurry.cancel();
                return;
            }
            stop.cancel();
        }
    });
}

/// Shows progress until `done`: a spinner with the publish rate on a terminal, a log line every five
/// seconds otherwise, nothing when quiet.
fn report_progress(
    counters: Arc<Counters>,
    started: Arc<std::sync::atomic::AtomicU64>,
    start: Instant,
    quiet: bool,
    done: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if quiet {
            return;
        }
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar
        });
        let tick = if bar.is_some() {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(5)
        };
        let mut last = (Instant::now(), 0u64);
        let mut errors_seen = 0;
        loop {
            tokio::select! {
                () = done.cancelled() => break,
                () = tokio::time::sleep(tick) => {}
            }
            let now = Instant::now();
            let positions = counters.positions.load(Ordering::Relaxed);
            let rate = (positions - last.1) as f64 / (now - last.0).as_secs_f64().max(1e-3);
            last = (now, positions);
            let line = format!(
                "{}/{} connected, {:.0} positions/s, {} positions, {} alarms, {} publish errors",
                counters.connected.load(Ordering::Relaxed),
                started.load(Ordering::Relaxed),
                rate,
                positions,
                counters.alarms.load(Ordering::Relaxed),
                counters.publish_errors.load(Ordering::Relaxed),
            );
            let errors = counters.connection_errors.load(Ordering::Relaxed);
            let error_line = (errors > errors_seen).then(|| {
                let last = counters
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
                    .unwrap_or_default();
                format!(
                    "custody-sim fleet: {} connection errors so far, latest {last}",
                    errors
                )
            });
            errors_seen = errors;
            match &bar {
                Some(bar) => {
                    if let Some(l) = error_line {
                        bar.println(l);
                    }
                    bar.set_message(line);
                    bar.tick();
                }
                None => {
                    if let Some(l) = error_line {
                        eprintln!("{l}");
                    }
                    eprintln!(
                        "custody-sim fleet: {:.0}s: {line}",
                        (now - start).as_secs_f64()
                    );
                }
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
    })
}

async fn run_plan(plan: Plan, args: &FleetArgs) -> (FleetStats, u64) {
    let counters = Arc::new(Counters::default());
    let stop = CancellationToken::new();
    let hurry = CancellationToken::new();
    watch_signals(stop.clone(), hurry.clone());
    let start = Instant::now();
    if let Some(d) = args.duration {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(*d).await;
            stop.cancel();
        });
    }
    let n_conns = plan.connections.len();
    if !args.quiet {
        eprintln!(
            "custody-sim fleet: {} devices on {n_conns} connections to {}, {} fixes/s each, {:?} at QoS {}, \
             batch {}, seed {}",
            plan.devices,
            args.broker,
            args.rate,
            plan.settings.format,
            args.qos,
            plan.settings.batch,
            plan.seed
        );
    }
    let started = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let done = CancellationToken::new();
    let progress = report_progress(
        counters.clone(),
        started.clone(),
        start,
        args.quiet,
        done.clone(),
    );
    let shared = Shared {
        broker: args.broker.clone(),
        settings: Arc::new(plan.settings),
        grid: plan.grid,
        counters: counters.clone(),
        epoch: start,
        stop: stop.clone(),
        hurry: hurry.clone(),
    };
    let mut tasks = tokio::task::JoinSet::new();
    let mut devices = 0u64;
    let gap = Duration::from_secs_f64(1.0 / args.connect_rate);
    for (k, conn) in plan.connections.into_iter().enumerate() {
        let at = start + gap.mul_f64(k as f64);
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            () = tokio::time::sleep_until(at) => {}
        }
        devices += conn.devices.len() as u64;
        started.fetch_add(1, Ordering::Relaxed);
        tasks.spawn(mqtt::run_connection(conn, shared.clone()));
    }
    stop.cancelled().await;
    let stopped = Instant::now();
    // Each connection drains for at most --drain-timeout plus a second to disconnect; a little more
    // for a machine under load, then whatever is left is abandoned.
    let limit = shared.settings.drain_timeout + Duration::from_secs(5);
    let all = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(limit, all).await.is_err() {
        tasks.abort_all();
    }
    done.cancel();
    let _ = progress.await;
    let elapsed_s = (stopped - start).as_secs_f64();
    let positions = counters.positions.load(Ordering::Relaxed);
    let stats = FleetStats {
        devices,
        connections: started.load(Ordering::Relaxed),
        messages: counters.messages.load(Ordering::Relaxed),
        positions,
        alarms: counters.alarms.load(Ordering::Relaxed),
        publish_errors: counters.publish_errors.load(Ordering::Relaxed),
        elapsed_s,
        positions_per_s: if elapsed_s > 0.0 {
            positions as f64 / elapsed_s
        } else {
            0.0
        },
    };
    (stats, counters.ever_connected.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: FleetArgs,
    }

    fn args(extra: &[&str]) -> FleetArgs {
        let mut v = vec!["fleet", "--broker", "mqtt://127.0.0.1:1883"];
        v.extend(extra);
        Cli::try_parse_from(v).unwrap().args
    }

    #[test]
    fn shares_pick_evenly_spread_devices() {
        let n = 1000;
        let count = |share, off| (0..n).filter(|&i| picked(i, share, off)).count();
        assert_eq!(count(0.0, 0.0), 0);
        assert_eq!(count(1.0, 0.0), n);
        assert_eq!(count(0.25, 0.0), 250);
        assert_eq!(count(0.2, 0.5), 200);
        let halves: Vec<bool> = (0..4).map(|i| picked(i, 0.5, 0.0)).collect();
        assert_eq!(halves, [false, true, false, true]);
    }

    #[test]
    fn devices_are_named_from_the_prefix_and_spread_over_gateways_round_robin() {
        let p = Plan::new(&args(&[
            "--devices",
            "12",
            "--connections",
            "3",
            "--seed",
            "1",
        ]))
        .unwrap();
        assert_eq!(p.connections.len(), 3);
        assert_eq!(p.connections[0].client_id, "SIM-gw001");
        let ids: Vec<&str> = p.connections[1]
            .devices
            .iter()
            .map(|d| d.id.as_str())
            .collect();
        assert_eq!(ids, ["SIM-00002", "SIM-00005", "SIM-00008", "SIM-00011"]);
        let p = Plan::new(&args(&["--devices", "3"])).unwrap();
        assert_eq!(p.connections[2].client_id, "SIM-00003");
        assert_eq!(
            p.connections[2].devices[0].pos_topic,
            "custody/v1/dev/SIM-00003/pos"
        );
        assert!(
            Plan::new(&args(&["--prefix", "bad/"]))
                .unwrap_err()
                .to_string()
                .contains("--prefix")
        );
        assert!(Plan::new(&args(&["--devices", "2", "--connections", "3"])).is_err());
    }

    #[test]
    fn credentials_give_ids_and_logins_and_must_cover_every_device() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("devices.txt");
        let hex = "ab".repeat(32);
        std::fs::write(&file, format!("# fleet\nZFY001:{hex}\n\nZFY002:{hex}\n")).unwrap();
        let f = file.to_str().unwrap();
        let p = Plan::new(&args(&["--devices", "2", "--credentials", f])).unwrap();
        assert_eq!(p.connections[1].client_id, "ZFY002");
        assert_eq!(p.connections[1].login, Some(("ZFY002".into(), hex.clone())));
        let e = Plan::new(&args(&["--devices", "3", "--credentials", f])).unwrap_err();
        assert!(e.to_string().contains("2 credentials for 3 devices"), "{e}");
        let e = Plan::new(&args(&[
            "--devices",
            "2",
            "--connections",
            "1",
            "--credentials",
            f,
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("one connection per device"), "{e}");
        std::fs::write(&file, "ZFY001:nothex\n").unwrap();
        let e = Plan::new(&args(&["--devices", "1", "--credentials", f])).unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn phases_spread_devices_evenly_over_the_period() {
        let p = Plan::new(&args(&["--devices", "4", "--rate", "2"])).unwrap();
        let phases: Vec<u128> = p
            .connections
            .iter()
            .map(|c| c.devices[0].phase.as_millis())
            .collect();
        assert_eq!(phases, [0, 125, 250, 375]);
    }

    #[test]
    fn bad_options_are_refused_naming_the_flag() {
        let bad = |extra: &[&str]| {
            let mut v = vec!["fleet", "--broker", "mqtt://127.0.0.1:1883"];
            v.extend(extra);
            Cli::try_parse_from(v).unwrap_err().to_string()
        };
        assert!(bad(&["--rate", "0"]).contains("--rate"));
        assert!(bad(&["--qos", "2"]).contains("--qos"));
        assert!(bad(&["--owntracks-share", "1.5"]).contains("--owntracks-share"));
        assert!(bad(&["--center", "95,120"]).contains("latitude"));
        assert!(bad(&["--batch", "0"]).contains("--batch"));
        let e = Plan::new(&args(&["--radius-m", "100"])).unwrap_err();
        assert!(e.to_string().contains("radius"), "{e}");
    }
}
