//! `custody bench coverage`: how long recording-coverage analysis of one case takes (issue 7 asks for a
//! case of 50 steps and 500 linked files), measured in-process against the same `Metadata` and `Cases`
//! the server wires, on a throw-away data directory (SQLite) or an empty PostgreSQL database.
//!
//! Set-up (not timed): officers, recorders checked out to them, evidence rows committed as ingest
//! commits them and probed as the media jobs record probes (through the job queue), a case with its
//! steps, and every file linked to it through `Cases::link` (a ledger event each). Then the report is
//! computed again and again: with suggestions (what `GET /cases/{id}/coverage` does, one lookup of
//! unlinked footage per step and officer) and without (the check a status change to review makes).

use crate::now;
use anyhow::Context;
use custody_cases::{Accounts, AccountsConfig, Cases, CasesConfig, LinkRequest, NewCase, NewStep};
use custody_core::access::{Roles, Username};
use custody_core::case::{CaseNo, Procedure};
use custody_core::coverage::{Interval, Place};
use custody_core::{
    BadgeNo, ContentHasher, DeviceId, Evidence, EvidenceId, FileName, Importance, MediaType,
    StationId, Timestamp, Upload, UploadDeclaration, UploadId, UploadState,
};
use custody_ingest::{Ledger, LedgerConfig};
use custody_store::{BlobConfig, Blobs, Metadata, ProbeOutcome};
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `custody bench coverage`.
#[derive(Debug, Clone, clap::Args)]
pub struct CoverageBenchArgs {
    /// Enforcement steps in the case.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Recordings linked to the case, spread over the steps.
    #[arg(long, default_value_t = 500)]
    pub files: usize,
    /// Officers present at each step (each with their own recorder).
    #[arg(long, default_value_t = 3)]
    pub officers_per_step: usize,
    /// Unlinked recordings per officer and step (the suggestions' candidates).
    #[arg(long, default_value_t = 1)]
    pub unlinked_per_step: usize,
    /// Timed computations of each kind.
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// An empty PostgreSQL database to run on instead of SQLite.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Where the throw-away data directory goes.
    #[arg(long, default_value = "/var/tmp")]
    pub dir: PathBuf,
}

const T0: i64 = 1_795_000_000_000_000;
const SEC: i64 = 1_000_000;

/// Commits one evidence row as ingest does and records its probe as the media job does.
async fn recording(
    meta: &Metadata,
    device: &DeviceId,
    start_us: i64,
    duration_us: i64,
    n: usize,
) -> anyhow::Result<EvidenceId> {
    let seed = format!("bench-coverage-{device}-{n}-{start_us}");
    let d = ContentHasher::digest(seed.as_bytes(), false);
    let decl = UploadDeclaration {
        device_id: device.clone(),
        station_id: StationId::parse("ST-BENCH").map_err(|e| anyhow::anyhow!("{e}"))?,
        file_name: FileName::parse(format!("{device}_{n:05}.MP4"))
            .map_err(|e| anyhow::anyhow!(e))?,
        size: d.size,
        sha256: d.sha256,
        sm3: None,
        captured_at: Timestamp::from_unix_micros(start_us),
        importance: Importance::Normal,
        media_type: MediaType::Video,
        officer: None,
        clock_offset_ms: None,
    };
    let t = now();
    let upload = Upload {
        id: UploadId::new(),
        declaration: decl.clone(),
        state: UploadState::Committing,
        committed_size: d.size,
        staging: "bench".into(),
        failure: None,
        evidence_id: None,
        created_at: t,
        updated_at: t,
        expires_at: Timestamp::from_unix_micros(i64::MAX / 2),
    };
    meta.insert_upload(&upload).await?;
    let e = Evidence {
        id: EvidenceId::new(),
        sha256: d.sha256,
        sm3: None,
        size: d.size,
        device_id: decl.device_id,
        station_id: decl.station_id,
        file_name: decl.file_name,
        media_type: decl.media_type,
        importance: decl.importance,
        captured_at: decl.captured_at,
        ingested_at: t,
        attribution: Default::default(),
        retention: Default::default(),
    };
    let id = meta.commit_upload(upload.id, &e, t).await?.evidence.id;
    let job = meta
        .claim_media_job("bench", t, Timestamp::from_unix_micros(i64::MAX / 2), 5)
        .await?
        .context("the committed file's probe job is queued")?;
    let info = serde_json::json!({
        "container": "mov,mp4,m4a,3gp,3g2,mj2",
        "duration_us": duration_us,
        "location": {"lat": 22.54, "lon": 114.05},
        "streams": []
    });
    meta.finish_probe_job(
        &job,
        &ProbeOutcome::Probed {
            info: info.to_string(),
            playback: r#"{"playable":true,"source":"original"}"#.into(),
            duration_us: Some(duration_us),
            created_at: None,
            needs_proxy: false,
            warning: None,
        },
        &[],
        t,
    )
    .await?;
    Ok(id)
}

fn summary(mut ms: Vec<f64>) -> String {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
    format!(
        "median {:8.2} ms  p90 {:8.2} ms  min {:8.2} ms  ({} runs)",
        at(0.5),
        at(0.9),
        ms[0],
        ms.len()
    )
}

pub async fn run(args: CoverageBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.steps > 0 && args.files >= args.steps && args.officers_per_step > 0 && args.runs > 0,
        "--steps, --officers-per-step and --runs must be greater than zero, and --files at least --steps"
    );
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let work = tempfile::Builder::new()
        .prefix("custody-bench-coverage-")
        .tempdir_in(&args.dir)?;
    crate::admin::test_keys(work.path())?;
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
    let meta = Metadata::connect(&db_url, 8)
        .await
        .with_context(|| format!("opening database {}", crate::config::redact_url(&db_url)))?;
    anyhow::ensure!(
        meta.list_cases(None, None, None, None, 1).await?.is_empty(),
        "the database already holds cases; the bench needs an empty database"
    );
    let blobs = Blobs::open(
        &BlobConfig::Local {
            root: work.path().join("objects"),
        },
        8 << 20,
        8 << 20,
    )
    .await?;
    let ledger = Ledger::new(meta.clone(), blobs, LedgerConfig::default(), keys);
    let accounts = Accounts::new(meta.clone(), AccountsConfig::default());
    let cases = Cases::new(meta.clone(), ledger, CasesConfig::default());
    let err = |e: custody_cases::CasesError| anyhow::anyhow!("{e}");

    // People: one officer and recorder per step seat, checked out for the whole day.
    let t_setup = Instant::now();
    let handler = accounts
        .add_user(custody_cases::NewUser {
            username: Username::parse("bench-handler").map_err(|e| anyhow::anyhow!("{e}"))?,
            display_name: "bench handler".into(),
            roles: Roles::parse("case_handler").map_err(|e| anyhow::anyhow!(e))?,
            badge: None,
            password: "bench-handler-password".into(),
        })
        .await
        .map_err(err)?;
    let seats = args.officers_per_step;
    let mut officers = Vec::new();
    for i in 0..seats {
        let badge = BadgeNo::parse(format!("B{i:04}")).map_err(|e| anyhow::anyhow!("{e}"))?;
        let device = DeviceId::parse(format!("REC{i:04}")).map_err(|e| anyhow::anyhow!("{e}"))?;
        meta.upsert_officer(&badge, &format!("officer {i}"), "bench unit", now())
            .await?;
        meta.checkout_recorder(
            &device,
            &badge,
            Timestamp::from_unix_micros(T0 - 3600 * SEC),
            "bench",
            None,
        )
        .await?;
        officers.push((badge, device));
    }
    let case = cases
        .create(
            &handler,
            NewCase {
                case_no: CaseNo::parse("BENCH-COVERAGE-1").map_err(|e| anyhow::anyhow!("{e}"))?,
                title: "coverage benchmark".into(),
                procedure: Procedure::General,
                handlers: vec![],
            },
        )
        .await
        .map_err(err)?;

    // Steps of 20 minutes, one after another; each officer's linked recordings cover a step in equal
    // segments with a 15 s pause between them (a gap) and one unlinked recording per step.
    let step_len = 20 * 60 * SEC;
    let per_step = args.files.div_ceil(args.steps);
    let per_officer = per_step.div_ceil(seats).max(1);
    let mut linked = 0usize;
    let mut n = 0usize;
    eprintln!(
        "setting up: {} steps x {seats} officers, {} linked files, {} unlinked ...",
        args.steps,
        args.files,
        args.steps * seats * args.unlinked_per_step
    );
    for s in 0..args.steps {
        let start = T0 + s as i64 * step_len;
        let window = Interval::new(
            Timestamp::from_unix_micros(start),
            Timestamp::from_unix_micros(start + step_len),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let step = cases
            .add_step(
                &handler,
                case.id,
                NewStep {
                    title: format!("step {s}"),
                    window,
                    place_name: None,
                    place: Some(
                        Place::new(22.54, 114.05, 300.0).map_err(|e| anyhow::anyhow!("{e}"))?,
                    ),
                    continuous: true,
                    officers: officers.iter().map(|(b, _)| b.clone()).collect(),
                },
            )
            .await
            .map_err(err)?;
        let seg = step_len / per_officer as i64;
        for (_, device) in &officers {
            for k in 0..per_officer {
                if linked >= args.files {
                    break;
                }
                let id =
                    recording(&meta, device, start + k as i64 * seg, seg - 15 * SEC, n).await?;
                n += 1;
                cases
                    .link(
                        &handler,
                        case.id,
                        LinkRequest {
                            evidence_id: id,
                            step_id: Some(step.id),
                            role: "现场执法".into(),
                            note: None,
                        },
                    )
                    .await
                    .map_err(err)?;
                linked += 1;
            }
            for u in 0..args.unlinked_per_step {
                recording(
                    &meta,
                    device,
                    start + (u as i64 + 1) * 10 * SEC,
                    60 * SEC,
                    n,
                )
                .await?;
                n += 1;
            }
        }
    }
    eprintln!(
        "set up in {:.1} s: {linked} linked files, {n} evidence rows on {}",
        t_setup.elapsed().as_secs_f64(),
        crate::config::redact_url(&db_url)
    );

    let mut with = Vec::new();
    let mut without = Vec::new();
    let mut report = None;
    for _ in 0..args.runs {
        let t = Instant::now();
        let r = cases.compute(case.id, true).await.map_err(err)?;
        with.push(t.elapsed().as_secs_f64() * 1e3);
        report = Some(r);
        let t = Instant::now();
        cases.compute(case.id, false).await.map_err(err)?;
        without.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let r = report.context("at least one run")?;
    let gaps: usize = r
        .steps
        .iter()
        .flat_map(|s| &s.officers)
        .map(|o| o.gaps.len())
        .sum();
    let suggestions: usize = r.steps.iter().map(|s| s.suggestions.len()).sum();
    println!(
        "case: {} steps, {linked} linked files, {} officers per step; found {gaps} gaps and {suggestions} suggestions",
        r.steps.len(),
        seats
    );
    println!(
        "coverage with suggestions (GET /cases/{{id}}/coverage): {}",
        summary(with)
    );
    println!(
        "coverage without suggestions (review gate):        {}",
        summary(without)
    );
    meta.close().await;
    Ok(())
}
