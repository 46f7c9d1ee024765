//! `custody bench ledger`: ledger appends per second, receipt latency and inclusion-proof time, measured
//! in-process against the same `Metadata`, `Blobs`, `Ledger` and `Ingest` the server wires (no network),
//! on a throw-away data directory.
//!
//! Phases, in order, each printed next to its target:
//! 1. appends/s: events are pre-filled with one bulk insert, then the sequencer (`Ledger::run`) is
//!    started and timed until a signed checkpoint covers them all; then single appends from concurrent
//!    producers (one durable commit each) while the sequencer runs, so both numbers are visible;
//! 2. receipt latency: small uploads committed through `Ingest` while view events are appended in the
//!    background; each receipt is verified against the log's verifier key;
//! 3. inclusion-proof time: `Ledger::inclusion_proof` for random leaves of the newest checkpoint.

use crate::now;
use anyhow::Context;
use bytes::Bytes;
use bytesize::ByteSize;
use custody_core::ledger::{EventKind, LedgerProof};
use custody_core::{
    ContentHasher, DeviceId, EvidenceId, FileName, Importance, MediaType, StationId, Timestamp,
    UploadDeclaration,
};
use custody_ingest::{
    BeginOutcome, Ingest, IngestConfig, IngestMetrics, Ledger, LedgerConfig, Receipt,
};
use custody_store::{Backend, BlobConfig, Blobs, Metadata, PendingEvent};
use futures::{StreamExt, TryStreamExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Arguments of `custody bench ledger`.
#[derive(Debug, Clone, clap::Args)]
pub struct LedgerBenchArgs {
    /// Events pre-filled in bulk and then integrated by the sequencer (the appends/s figure).
    #[arg(long, default_value_t = 200_000)]
    pub events: u64,
    /// Concurrent producers of single appends (each append is one durable database commit).
    #[arg(long, default_value_t = 16)]
    pub producers: usize,
    /// How long the producers of single appends run, e.g. 5s.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub append_duration: Duration,
    /// Uploads committed to measure receipt latency.
    #[arg(long, default_value_t = 300)]
    pub receipts: usize,
    /// Uploads in flight at once while measuring receipt latency.
    #[arg(long, default_value_t = 16)]
    pub receipt_concurrency: usize,
    /// Size of each upload (distinct random bytes).
    #[arg(long, default_value = "4KiB")]
    pub upload_size: ByteSize,
    /// View events appended per second in the background while receipts are measured (0: none).
    #[arg(long, default_value_t = 2000)]
    pub background_rate: u64,
    /// Inclusion proofs timed (random leaves of the newest checkpoint).
    #[arg(long, default_value_t = 2000)]
    pub proofs: usize,
    /// Items of evidence committed first; the appended view events are about them.
    #[arg(long, default_value_t = 16)]
    pub evidence: usize,
    /// Entries per ledger batch at most (as `serve --ledger-batch-max`).
    #[arg(long, default_value_t = 4096)]
    pub batch_max: u32,
    /// Longest wait before a ledger batch closes (as `serve --ledger-batch-interval`).
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    pub batch_interval: Duration,
    /// Connections in the database pool.
    #[arg(long, default_value_t = 16)]
    pub db_connections: u32,
    /// Metadata database, used as-is: must be empty (e.g. `createdb -h 127.0.0.1 -U postgres
    /// custody_bench` then postgres://postgres@127.0.0.1:5432/custody_bench). [default: a new SQLite file
    /// in the temporary directory]
    #[arg(long)]
    pub database_url: Option<String>,
    /// Directory for the temporary data directory (object store, keys, SQLite file).
    #[arg(long, default_value = "/var/tmp")]
    pub dir: PathBuf,
}

/// A sequencer stalls when the log does not grow for this long; the bench then stops with an error.
const STALL: Duration = Duration::from_secs(60);

/// Recorders the bench's evidence comes from.
const DEVICES: usize = 8;

pub async fn run(args: LedgerBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.events > 0 && args.producers > 0 && args.receipt_concurrency > 0 && args.evidence > 0,
        "--events, --producers, --receipt-concurrency and --evidence must be greater than zero"
    );
    anyhow::ensure!(
        args.batch_max > 0 && !args.batch_interval.is_zero(),
        "--batch-max and --batch-interval must be greater than zero"
    );
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let work = tempfile::Builder::new()
        .prefix("custody-bench-ledger-")
        .tempdir_in(&args.dir)?;

    // The pieces, wired as `app::build` wires them.
    let vkey = crate::admin::test_keys(work.path())?;
    let keys = crate::admin::load_ledger_keys(
        &work
            .path()
            .join("keys")
            .join(crate::admin::SIGNING_KEY_FILE),
        None,
    )?;
    let db_url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", work.path().join("custody.db").display()));
    let meta = Metadata::connect(&db_url, args.db_connections)
        .await
        .with_context(|| format!("opening database {}", crate::config::redact_url(&db_url)))?;
    let state = meta.ledger_state().await?;
    anyhow::ensure!(
        state.size == 0 && meta.pending_count().await? == 0,
        "the database already holds a ledger of {} entries; the bench needs an empty database",
        state.size
    );
    let blobs = Blobs::open(
        &BlobConfig::Local {
            root: work.path().join("objects"),
        },
        8 << 20,
        8 << 20,
    )
    .await?;
    let ledger_config = LedgerConfig {
        batch_max: args.batch_max,
        batch_interval: args.batch_interval,
        // Long, so that a slow receipt is measured rather than turned into an error.
        receipt_timeout: Duration::from_secs(60),
    };
    let ledger = Ledger::new(meta.clone(), blobs.clone(), ledger_config, keys);
    let ingest = Ingest::new(
        meta.clone(),
        blobs.clone(),
        ledger.clone(),
        IngestConfig::default(),
        IngestMetrics::default(),
    );

    let backend = match meta.backend() {
        Backend::Sqlite => "SQLite (WAL, synchronous=FULL)",
        Backend::Postgres => "PostgreSQL",
    };
    println!("custody bench ledger, in {}", work.path().display());
    println!(
        "  database        {backend}: {}",
        crate::config::redact_url(&db_url)
    );
    println!(
        "  object store    {} (tiles, entry bundles, checkpoints)",
        blobs.describe()
    );
    println!(
        "  sequencer       batch_max {}, batch_interval {}, {} db connections",
        args.batch_max,
        humantime::format_duration(args.batch_interval),
        args.db_connections
    );
    println!(
        "  cpus            {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();

    // 0. Evidence rows for the events to be about (ledger_pending references evidence). Commits wait for
    // their receipts, so a sequencer runs meanwhile; it is stopped before the pre-fill.
    let seeder = Seeder::start(&ledger, args.batch_interval);
    let evidence: Vec<EvidenceId> = futures::stream::iter(0..args.evidence)
        .map(|i| {
            let ingest = ingest.clone();
            async move {
                let (_, r) = upload(&ingest, i, 4096).await?;
                anyhow::Ok(r.evidence.id)
            }
        })
        .buffered(8)
        .try_collect()
        .await
        .context("committing the evidence the events are about")?;
    seeder.stop().await?;
    let seeded = ledger.state().await?.checkpoint_size;
    eprintln!(
        "  {} items of evidence committed ({seeded} ledger entries)",
        evidence.len()
    );

    // 1a. Sequencer throughput over a pre-filled queue.
    let n = args.events;
    let events: Vec<PendingEvent> = (0..n)
        .map(|i| view_event(evidence[i as usize % evidence.len()], i))
        .collect();
    let t = Instant::now();
    ledger.append_many(&events).await?;
    let t_fill = t.elapsed();
    drop(events);
    eprintln!(
        "  {n} events pre-filled in {:.2} s; starting the sequencer",
        t_fill.as_secs_f64()
    );
    let t = Instant::now();
    let sequencer = Sequencer::start(&ledger);
    wait_for_checkpoint(&ledger, seeded + n, "integrating pre-filled events", t).await?;
    let t_integrate = t.elapsed();
    let integrate_rate = n as f64 / t_integrate.as_secs_f64();
    let batches = n.div_ceil(u64::from(args.batch_max));

    // 1b. Single appends from concurrent producers while the sequencer runs.
    let before = ledger.state().await?.checkpoint_size;
    let t = Instant::now();
    let deadline = t + args.append_duration;
    let producers: Vec<_> = (0..args.producers)
        .map(|p| {
            let ledger = ledger.clone();
            let evidence = evidence.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = p as u64;
                while Instant::now() < deadline {
                    let ev = view_event(evidence[i as usize % evidence.len()], i);
                    let t = Instant::now();
                    ledger.append(ev).await?;
                    latencies.push(t.elapsed());
                    i += 1;
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut append_latencies = Vec::new();
    for p in producers {
        append_latencies.extend(p.await.context("append producer")??);
    }
    let t_appending = t.elapsed();
    let appended = append_latencies.len() as u64;
    let behind = (before + appended).saturating_sub(ledger.state().await?.checkpoint_size);
    wait_for_checkpoint(&ledger, before + appended, "integrating single appends", t).await?;
    let t_appends_covered = t.elapsed();
    append_latencies.sort_unstable();

    // 2. Receipt latency of small uploads, with views appended in the background.
    let background = Background::start(&ledger, &evidence, args.background_rate);
    let offset = args.evidence;
    let size = args.upload_size.as_u64().max(1);
    let t = Instant::now();
    let results: Vec<(Duration, Receipt)> = futures::stream::iter(0..args.receipts)
        .map(|i| {
            let ingest = ingest.clone();
            async move { upload(&ingest, offset + i, size).await }
        })
        .buffer_unordered(args.receipt_concurrency)
        .try_collect()
        .await
        .context("committing uploads for receipt latency")?;
    let t_receipts = t.elapsed();
    let (bg_appended, bg_secs) = background.stop().await?;
    let mut commit_latencies: Vec<Duration> = results.iter().map(|(d, _)| *d).collect();
    commit_latencies.sort_unstable();
    let verified_failures = results
        .iter()
        .filter(|(_, r)| r.duplicate || r.ledger.verify(&[vkey.as_str()]).is_err())
        .count();
    drop(results);

    // 3. Inclusion proofs against the newest checkpoint, with the sequencer stopped.
    sequencer.stop().await?;
    let cp = ledger
        .checkpoint()
        .await?
        .context("the log has no checkpoint after the bench appended to it")?;
    let indexes: Vec<u64> = (0..args.proofs)
        .map(|_| rand::random_range(0..cp.size))
        .collect();
    let mut proof_times = Vec::with_capacity(indexes.len());
    let mut proofs = Vec::with_capacity(indexes.len());
    for &index in &indexes {
        let t = Instant::now();
        let proof = ledger.inclusion_proof(index, cp.size).await?;
        proof_times.push(t.elapsed());
        proofs.push(proof);
    }
    // Every proof is checked (outside the timing) against the signed checkpoint and its entry.
    let mut proof_failures = 0;
    for (&index, proof) in indexes.iter().zip(&proofs) {
        let entry = meta.ledger_entries(index, index + 1).await?;
        let ok = entry.first().is_some_and(|e| {
            LedgerProof::new(&e.entry, index, proof, cp.note.as_bytes())
                .verify(&[vkey.as_str()])
                .is_ok()
        });
        if !ok {
            proof_failures += 1;
        }
    }
    let proof_mean = proof_times.iter().sum::<Duration>() / proof_times.len().max(1) as u32;
    proof_times.sort_unstable();
    let final_state = ledger.state().await?;
    meta.close().await;

    // The report.
    let verdict = |ok: bool| if ok { "ok" } else { "MISSED" };
    println!();
    println!("1. appends/s");
    println!(
        "   sequencer, {n} pre-filled events ({batches} batches)   {:>9.0} /s   target >= 20000 /s   {}",
        integrate_rate,
        verdict(integrate_rate >= 20_000.0)
    );
    println!(
        "       {n} events in a checkpoint {:.2} s after the sequencer started ({:.1} ms per batch)",
        t_integrate.as_secs_f64(),
        t_integrate.as_secs_f64() * 1e3 / batches as f64
    );
    println!(
        "       bulk pre-fill (Metadata::append_many, multi-row INSERTs): {:.2} s, {:.0} /s",
        t_fill.as_secs_f64(),
        n as f64 / t_fill.as_secs_f64()
    );
    println!(
        "   single appends, {} producers for {:.1} s               {:>9.0} /s   (one commit each; not batched)",
        args.producers,
        t_appending.as_secs_f64(),
        appended as f64 / t_appending.as_secs_f64()
    );
    println!(
        "       {appended} appends, each p50 {} p99 {} max {}; {behind} not yet in a checkpoint when the producers stopped",
        ms(percentile(&append_latencies, 0.50)),
        ms(percentile(&append_latencies, 0.99)),
        ms(append_latencies.last().copied().unwrap_or_default()),
    );
    println!(
        "       end to end (first append to all in a checkpoint, {:.2} s)  {:>9.0} /s",
        t_appends_covered.as_secs_f64(),
        appended as f64 / t_appends_covered.as_secs_f64()
    );
    println!();
    println!("2. receipt latency (time of Ingest::commit, which returns with the signed receipt)");
    let p99 = percentile(&commit_latencies, 0.99);
    println!(
        "   {} uploads of {}, {} at once          p50 {}   p99 {}   target p99 <= 1500 ms   {}",
        commit_latencies.len(),
        ByteSize(size),
        args.receipt_concurrency,
        ms(percentile(&commit_latencies, 0.50)),
        ms(p99),
        verdict(p99 <= Duration::from_millis(1500) && verified_failures == 0)
    );
    println!(
        "       max {}; {:.0} commits/s; receipts failing verification: {verified_failures}",
        ms(commit_latencies.last().copied().unwrap_or_default()),
        commit_latencies.len() as f64 / t_receipts.as_secs_f64()
    );
    println!(
        "       background: {bg_appended} view appends in {bg_secs:.2} s ({:.0} /s, asked {} /s)",
        bg_appended as f64 / bg_secs.max(1e-9),
        args.background_rate
    );
    println!();
    println!("3. inclusion proof (Ledger::inclusion_proof, from the database)");
    let proof_p99 = percentile(&proof_times, 0.99);
    println!(
        "   {} random leaves of {}          mean {}   p99 {}   target <= 1 ms   {}",
        proof_times.len(),
        cp.size,
        ms(proof_mean),
        ms(proof_p99),
        verdict(proof_mean <= Duration::from_millis(1) && proof_failures == 0)
    );
    println!("       proofs failing verification against the checkpoint: {proof_failures}");
    println!();
    println!(
        "final log size {} entries (newest checkpoint {})",
        final_state.size, final_state.checkpoint_size
    );
    Ok(())
}

fn view_event(evidence: EvidenceId, i: u64) -> PendingEvent {
    PendingEvent {
        kind: EventKind::View,
        evidence_id: evidence,
        actor: format!("user:bench{:03}", i % 500),
        officer: None,
        detail: None,
        server_time: now(),
    }
}

/// Uploads `size` random bytes as file `i` through the intake (begin, write, finish, commit) and returns
/// the time the commit took (it returns with the ledger receipt) and the receipt.
async fn upload(ingest: &Ingest, i: usize, size: u64) -> anyhow::Result<(Duration, Receipt)> {
    let mut data = vec![0u8; usize::try_from(size)?];
    rand::fill(&mut data[..]);
    let digests = ContentHasher::digest(&data, false);
    let decl = UploadDeclaration {
        device_id: DeviceId::parse(format!("BENCH{:04}", i % DEVICES))?,
        station_id: StationId::parse("bench-station")?,
        file_name: FileName::parse(format!("bench-{i}.mp4")).map_err(anyhow::Error::msg)?,
        size,
        sha256: digests.sha256,
        sm3: None,
        captured_at: Timestamp::from_unix_micros(1_700_000_000_000_000 + i as i64 * 1_000_000),
        importance: Importance::Normal,
        media_type: MediaType::Video,
        officer: None,
        clock_offset_ms: None,
    };
    let station = decl.station_id.clone();
    let upload_id = match ingest.begin(decl).await? {
        BeginOutcome::Session { upload_id, .. } => upload_id,
        BeginOutcome::Existing(r) => {
            anyhow::bail!(
                "upload {i}: random bytes are already evidence {}",
                r.evidence.id
            )
        }
    };
    let mut w = ingest.writer(upload_id, &station).await?;
    w.write(0, Bytes::from(data)).await?;
    let committed = w.finish().await?;
    anyhow::ensure!(
        committed == size,
        "upload {i}: {committed} of {size} bytes durable after finish"
    );
    let t = Instant::now();
    let receipt = ingest.commit(upload_id, &station).await?;
    Ok((t.elapsed(), receipt))
}

/// Waits until a signed checkpoint covers `target` entries, printing progress every two seconds. Fails
/// when the log stops growing for [`STALL`].
async fn wait_for_checkpoint(
    ledger: &Ledger,
    target: u64,
    what: &str,
    started: Instant,
) -> anyhow::Result<()> {
    let mut last = (0, Instant::now());
    let mut shown = Instant::now();
    loop {
        let cp = ledger.state().await?.checkpoint_size;
        if cp >= target {
            return Ok(());
        }
        if cp != last.0 {
            last = (cp, Instant::now());
        } else if last.1.elapsed() > STALL {
            anyhow::bail!(
                "{what}: the newest checkpoint has stayed at {cp} entries for {} s (waiting for {target})",
                STALL.as_secs()
            );
        }
        if shown.elapsed() >= Duration::from_secs(2) {
            eprintln!(
                "  {what}: {cp} / {target} entries in a checkpoint after {:.1} s",
                started.elapsed().as_secs_f64()
            );
            shown = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The background sequencer, as the server runs it.
struct Sequencer {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Sequencer {
    fn start(ledger: &Ledger) -> Self {
        let stop = CancellationToken::new();
        let task = tokio::spawn(ledger.clone().run(stop.clone().cancelled_owned()));
        Self { stop, task }
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await.context("ledger sequencer task")
    }
}

/// Sequences by calling `Ledger::sequence_now` every batch interval: used while the evidence is seeded, so
/// that `Ledger::run` (and, on PostgreSQL, its advisory lock) is taken only once, by the measured phase.
struct Seeder {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Seeder {
    fn start(ledger: &Ledger, every: Duration) -> Self {
        let stop = CancellationToken::new();
        let (ledger, token) = (ledger.clone(), stop.clone());
        let task = tokio::spawn(async move {
            loop {
                ledger.sequence_now().await?;
                tokio::select! {
                    _ = token.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(every) => {}
                }
            }
        });
        Self { stop, task }
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await.context("seeding sequencer task")?
    }
}

/// View events appended at a steady rate by a few tasks, until stopped.
struct Background {
    stop: Arc<AtomicBool>,
    started: Instant,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<u64>>>,
}

impl Background {
    /// Tasks appending at once: enough to keep up with a few thousand appends a second when each commit
    /// takes a few milliseconds.
    const TASKS: usize = 8;

    fn start(ledger: &Ledger, evidence: &[EvidenceId], rate: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let issued = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let tasks = if rate == 0 {
            Vec::new()
        } else {
            (0..Self::TASKS)
                .map(|_| {
                    let (ledger, evidence) = (ledger.clone(), evidence.to_vec());
                    let (stop, issued) = (stop.clone(), issued.clone());
                    tokio::spawn(async move {
                        let mut done = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
                            let i = issued.fetch_add(1, Ordering::Relaxed);
                            if i >= due {
                                issued.fetch_sub(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(1)).await;
                                continue;
                            }
                            let ev = view_event(evidence[i as usize % evidence.len()], i);
                            ledger.append(ev).await?;
                            done += 1;
                        }
                        anyhow::Ok(done)
                    })
                })
                .collect()
        };
        Self {
            stop,
            started,
            tasks,
        }
    }

    /// Stops the load; returns the appends made and the seconds they took.
    async fn stop(self) -> anyhow::Result<(u64, f64)> {
        self.stop.store(true, Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64();
        let mut done = 0;
        for t in self.tasks {
            done += t.await.context("background append task")??;
        }
        Ok((done, secs))
    }
}

/// Nearest-rank percentile of sorted durations.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 10.0 {
        format!("{ms:.3} ms")
    } else {
        format!("{ms:.0} ms")
    }
}
