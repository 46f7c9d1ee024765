//! `custody-sim bench station`: how fast a docking station offloads, measured whole — simulated
//! recorders, the real agent and a real `custody serve` process on this machine, in one run — next to
//! two references measured in the same run on the same files:
//!
//! - the machine's limit: read each file, hash it (SHA-256, and SM3 when the station computes it), write
//!   the bytes to another file and fsync it, on as many threads as the station hashes with. The station
//!   does strictly more: it hashes before sending, the server hashes again what it received (end-to-end
//!   verification), and here both sides share this one machine's cores. So the bench also measures the
//!   limit of a verified copy (the same, then the copy read back and hashed again), the least work an
//!   end-to-end verified transfer does on one machine;
//! - `rclone copy` of the same files to the S3 test server, a widely used tool doing a comparable job
//!   (with MD5 checks) without receipts.
//!
//! Files stay in the page cache from their generation, for all three: the comparison is of the work,
//! not of the recorder's flash.

use anyhow::Context;
use custody::process::{ServerProcess, sibling};
use custody_core::ContentHasher;
use custody_station::{FileState, FreePolicy, Journal, StationConfig};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Arguments of `custody-sim bench station`.
#[derive(Debug, Clone, clap::Args)]
pub struct StationBenchArgs {
    /// Recorders docked at once.
    #[arg(long, default_value_t = 4)]
    pub recorders: usize,
    /// Hours of video on each recorder.
    #[arg(long, default_value_t = 0.25)]
    pub hours: f64,
    /// Video bit rate of the recorders (recorder-like: 4M at 1080p).
    #[arg(long, default_value = "4M")]
    pub video_bitrate: String,
    /// Video frame size of the recorders.
    #[arg(long, default_value = "1920x1080")]
    pub resolution: String,
    /// Uploads at once (the station's `concurrency`).
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Files hashed at once by the station, and threads of the limit measurement [default: the number
    /// of cores]
    #[arg(long)]
    pub hash_threads: Option<usize>,
    /// Compute SM3 besides SHA-256, in the station and in the limit.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub sm3: bool,
    /// Work directory; needs about three times the recorders' size free.
    #[arg(long, default_value = "/var/tmp")]
    pub dir: PathBuf,
    /// Extra arguments for `custody serve`, space separated (e.g. to run it on PostgreSQL and S3).
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub serve_args: String,
    /// S3 endpoint of the rclone comparison.
    #[arg(
        long,
        env = "CUSTODY_TEST_S3_ENDPOINT",
        default_value = "http://127.0.0.1:8014"
    )]
    pub s3_endpoint: String,
    /// S3 bucket of the rclone comparison.
    #[arg(long, env = "CUSTODY_TEST_S3_BUCKET", default_value = "custody-test")]
    pub s3_bucket: String,
    /// S3 access key of the rclone comparison.
    #[arg(long, env = "CUSTODY_TEST_S3_ACCESS_KEY", default_value = "custody")]
    pub s3_access_key: String,
    /// S3 secret key of the rclone comparison.
    #[arg(
        long,
        env = "CUSTODY_TEST_S3_SECRET_KEY",
        default_value = "custody-secret"
    )]
    pub s3_secret_key: String,
    /// Skip the rclone comparison.
    #[arg(long)]
    pub no_rclone: bool,
}

fn mib_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / (1 << 20) as f64
}

/// Every regular file under `dir` but the device-info file.
fn media_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name() != Some(custody_core::recorder::DEVICE_INFO_FILE.as_ref()) {
                out.push(p);
            }
        }
    }
    out
}

/// Reads and hashes a file through `buf`, writing what it reads to `copy` when given.
fn hash_file(
    path: &Path,
    sm3: bool,
    buf: &mut [u8],
    mut copy: Option<&mut std::fs::File>,
) -> std::io::Result<()> {
    let mut r = std::fs::File::open(path)?;
    let mut h = ContentHasher::new(sm3);
    loop {
        let n = r.read(buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        if let Some(w) = copy.as_mut() {
            w.write_all(&buf[..n])?;
        }
    }
    std::hint::black_box(h.finish());
    Ok(())
}

/// The limit: read, hash and write+fsync every file, `threads` files at a time. With `verify`, the copy
/// is also read back and hashed again, as an end-to-end verified copy does at its destination.
fn limit(
    files: &[PathBuf],
    out: &Path,
    threads: usize,
    sm3: bool,
    verify: bool,
) -> anyhow::Result<f64> {
    std::fs::create_dir_all(out)?;
    let queue = Arc::new(Mutex::new(files.to_vec()));
    let started = Instant::now();
    let workers: Vec<_> = (0..threads.max(1))
        .map(|t| {
            let (queue, out) = (queue.clone(), out.join(format!("copy-{t}")));
            std::thread::spawn(move || -> std::io::Result<()> {
                let mut buf = vec![0u8; 4 << 20];
                loop {
                    let Some(src) = queue.lock().map(|mut q| q.pop()).unwrap_or(None) else {
                        return Ok(());
                    };
                    let mut w = std::fs::File::create(&out)?;
                    hash_file(&src, sm3, &mut buf, Some(&mut w))?;
                    w.sync_all()?;
                    if verify {
                        hash_file(&out, sm3, &mut buf, None)?;
                    }
                    std::fs::remove_file(&out)?;
                }
            })
        })
        .collect();
    for w in workers {
        w.join()
            .map_err(|_| anyhow::anyhow!("a limit thread panicked"))??;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// `rclone copy` of `src` to the S3 server; its seconds, or why it was skipped.
fn rclone(args: &StationBenchArgs, src: &Path, transfers: usize) -> Result<f64, String> {
    let found = std::process::Command::new("rclone")
        .arg("version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        return Err(
            "rclone not found: install the Debian package rclone (scripts/bench-station.sh does)"
                .into(),
        );
    }
    let dest = format!(
        "bench:{}/custody-bench-rclone-{}",
        args.s3_bucket,
        std::process::id()
    );
    let env = [
        ("RCLONE_CONFIG_BENCH_TYPE", "s3"),
        ("RCLONE_CONFIG_BENCH_PROVIDER", "Other"),
        ("RCLONE_CONFIG_BENCH_ENDPOINT", args.s3_endpoint.as_str()),
        (
            "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID",
            args.s3_access_key.as_str(),
        ),
        (
            "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY",
            args.s3_secret_key.as_str(),
        ),
        ("RCLONE_CONFIG_BENCH_REGION", "us-east-1"),
    ];
    let run = |a: &[&str]| {
        std::process::Command::new("rclone")
            .args(a)
            .envs(env)
            // rclone 1.60 fails to build its HTTP client when AWS_CA_BUNDLE is set (some machines set
            // it globally); a plain-HTTP test endpoint needs no CA bundle.
            .env_remove("AWS_CA_BUNDLE")
            .output()
            .map_err(|e| format!("running rclone: {e}"))
    };
    let started = Instant::now();
    let out = run(&[
        "copy",
        &src.display().to_string(),
        &dest,
        "--transfers",
        &transfers.to_string(),
    ])?;
    let secs = started.elapsed().as_secs_f64();
    // The copy stays: deleting through s3s-fs takes rclone minutes and removes nothing. The test
    // servers' script removes prefixes older than an hour.
    println!(
        "  (rclone's copy is left at {dest}; scripts/test-servers.sh removes it after an hour)"
    );
    if !out.status.success() {
        return Err(format!(
            "rclone copy to {} failed (is the S3 test server up? scripts/test-servers.sh starts it): {}",
            args.s3_endpoint,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ));
    }
    Ok(secs)
}

pub fn station(args: StationBenchArgs) -> anyhow::Result<()> {
    let threads = args
        .hash_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    std::fs::create_dir_all(&args.dir)?;
    let work = tempfile::Builder::new()
        .prefix("custody-bench-station-")
        .tempdir_in(&args.dir)?;
    let slots = work.path().join("slots");
    println!(
        "custody-sim bench station: {} recorders × {} h of {} {} video, {} uploads at once, {threads} hash threads, sm3 {}, in {}",
        args.recorders,
        args.hours,
        args.resolution,
        args.video_bitrate,
        args.concurrency,
        if args.sm3 { "on" } else { "off" },
        work.path().display()
    );

    // Recorders, made once, kept in the page cache by being just written.
    let clips = args.dir.join("custody-bench-clips");
    for i in 0..args.recorders {
        let out = slots.join(format!("{:02}", i + 1));
        let mut r = crate::recorder::RecorderArgs::new(&out, args.hours)?;
        r.device = Some(custody_core::DeviceId::parse(format!("BENCH{i:03}"))?);
        r.seed = Some(1000 + i as u64);
        r.resolution = args.resolution.parse().map_err(anyhow::Error::msg)?;
        r.video_bitrate = args.video_bitrate.parse().map_err(anyhow::Error::msg)?;
        r.clip_cache = Some(clips.clone());
        r.quiet = true;
        let m = crate::recorder::make_recorder(&r)?;
        println!("  {}", m.summary());
    }
    let files = media_files(&slots);
    let total: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    println!(
        "  {} files, {:.2} GiB",
        files.len(),
        total as f64 / (1u64 << 30) as f64
    );

    // 1. The limit, and the same with the destination's verification.
    let t_limit = limit(&files, &work.path().join("limit"), threads, args.sm3, false)?;
    let t_verified = limit(&files, &work.path().join("limit"), threads, args.sm3, true)?;

    // 2. The station: the real agent (in this process) and a real server process.
    let exe = sibling("custody")?;
    let extra: Vec<String> = args
        .serve_args
        .split_whitespace()
        .map(String::from)
        .collect();
    let server = ServerProcess::spawn(&exe, &work.path().join("server"), &extra)?;
    let credential = server.add_station("BENCH")?;
    let cfg = StationConfig {
        station_id: "BENCH".into(),
        credential: Some(credential),
        server: format!("http://{}", server.addrs.grpc),
        ledger_keys: vec![work.path().join("server/keys/ledger.pub")],
        slots_dir: Some(slots.clone()),
        journal: work.path().join("station/journal.db"),
        free_policy: FreePolicy::Keep,
        concurrency: args.concurrency,
        hash_threads: threads,
        sm3: args.sm3,
        poll_interval: Duration::from_millis(100),
        settle_time: Duration::ZERO,
        mqtt_url: server
            .addrs
            .mqtt
            .map(|a| format!("mqtt://127.0.0.1:{}", a.port())),
        log: "warn".into(),
        ..StationConfig::default()
    };
    let journal_path = cfg.journal.clone();
    let runtime = tokio::runtime::Runtime::new()?;
    let t_station = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let started = Instant::now();
        let agent = tokio::spawn(custody_station::run(cfg, None, shutdown.clone()));
        let deadline = started + Duration::from_secs(3600);
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if journal_path.exists() {
                let j = Journal::open(&journal_path).await?;
                let rows = j.all_files().await?;
                j.close().await;
                if rows.len() == files.len() && rows.iter().all(|r| r.state == FileState::Freed) {
                    break;
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the station did not finish in an hour"
            );
        }
        let secs = started.elapsed().as_secs_f64();
        shutdown.cancel();
        agent.await.context("agent task")??;
        anyhow::Ok(secs)
    })?;
    let rss = server.peak_rss();
    server.stop()?;

    // 3. rclone to the S3 test server.
    let t_rclone = if args.no_rclone {
        Err("skipped (--no-rclone)".to_string())
    } else {
        rclone(&args, &slots, args.concurrency)
    };

    let station_rate = mib_s(total, t_station);
    let limit_rate = mib_s(total, t_limit);
    println!();
    println!(
        "  limit: read + {} + write + fsync, {threads} threads   {:>8.1} MiB/s  ({:.2} s)",
        if args.sm3 { "SHA-256 + SM3" } else { "SHA-256" },
        limit_rate,
        t_limit
    );
    println!(
        "  custody station -> custody serve{}        {:>8.1} MiB/s  ({:.2} s: hash, upload, server re-hash, receipt verified)",
        if extra.is_empty() {
            " (embedded)"
        } else {
            " (serve-args)"
        },
        station_rate,
        t_station
    );
    println!(
        "  limit of a verified copy: the same, then read + hash again  {:>8.1} MiB/s  ({:.2} s)",
        mib_s(total, t_verified),
        t_verified
    );
    match &t_rclone {
        Ok(s) => println!(
            "  rclone copy -> S3 test server, {} transfers      {:>8.1} MiB/s  ({:.2} s)",
            args.concurrency,
            mib_s(total, *s),
            s
        ),
        Err(why) => println!("  rclone copy: {why}"),
    }
    println!(
        "  station / limit                                   {:>8.2}   (target >= 0.8)",
        station_rate / limit_rate
    );
    println!(
        "  station / limit of a verified copy                {:>8.2}",
        station_rate / mib_s(total, t_verified)
    );
    if let Ok(s) = t_rclone {
        println!(
            "  station / rclone                                  {:>8.2}   (target > 1)",
            station_rate / mib_s(total, s)
        );
    }
    if let Some(b) = rss {
        println!(
            "  server peak RSS                                   {:>8.1} MiB",
            b as f64 / (1 << 20) as f64
        );
    }
    Ok(())
}
