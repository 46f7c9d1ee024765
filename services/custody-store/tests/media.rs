//! The media job queue and results: every test runs on SQLite and on PostgreSQL.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use custody_core::media::{DerivedKind, MediaJobKind, MediaState};
use custody_core::*;
use custody_store::{DerivedRecord, Metadata, ProbeOutcome, conformance};

conformance!(
    committing_evidence_queues_its_probe_and_a_probe_can_queue_a_proxy,
    a_job_whose_worker_died_is_claimed_again_and_the_old_claim_cannot_write,
    a_failure_that_may_pass_is_retried_after_its_backoff_then_given_up,
    a_job_that_kills_its_worker_every_time_is_given_up,
    a_released_job_does_not_count_as_an_attempt,
    a_file_that_is_not_media_records_why,
    requeueing_starts_an_items_media_over,
);

const LEASE: i64 = 60_000_000;
const MAX: u32 = 3;

fn t(micros: i64) -> Timestamp {
    Timestamp::from_unix_micros(micros)
}

/// Commits a new evidence row through an upload, as the intake does.
async fn commit(m: &Metadata, seed: u8, at: i64) -> EvidenceId {
    let d = UploadDeclaration {
        device_id: DeviceId::parse("DEV1").unwrap(),
        station_id: StationId::parse("ST-01").unwrap(),
        file_name: FileName::parse(format!("DEV1_{seed}.MP4")).unwrap(),
        size: 100,
        sha256: Sha256::from_bytes([seed; 32]),
        sm3: None,
        captured_at: t(1_700_000_000_000_000),
        importance: Importance::Normal,
        media_type: MediaType::Video,
        officer: None,
        clock_offset_ms: None,
    };
    let u = Upload {
        id: UploadId::new(),
        declaration: d.clone(),
        state: UploadState::Open,
        committed_size: 0,
        staging: "{}".into(),
        failure: None,
        evidence_id: None,
        created_at: t(1),
        updated_at: t(1),
        expires_at: t(i64::MAX / 2),
    };
    m.insert_upload(&u).await.unwrap();
    let e = Evidence {
        id: EvidenceId::new(),
        sha256: d.sha256,
        sm3: None,
        size: d.size,
        device_id: d.device_id,
        station_id: d.station_id,
        file_name: d.file_name,
        media_type: d.media_type,
        importance: d.importance,
        captured_at: d.captured_at,
        ingested_at: t(at),
        attribution: Default::default(),
        retention: Default::default(),
    };
    m.commit_upload(u.id, &e, t(at)).await.unwrap().evidence.id
}

async fn claim(m: &Metadata, worker: &str, now: i64) -> Option<custody_store::MediaJob> {
    m.claim_media_job(worker, t(now), t(now + LEASE), MAX)
        .await
        .unwrap()
}

fn derived(id: EvidenceId, kind: DerivedKind) -> DerivedRecord {
    DerivedRecord {
        evidence_id: id,
        kind,
        path: format!("derived/x/{kind}"),
        sha256: Sha256::from_bytes([7; 32]),
        size: 1234,
        content_type: kind.content_type().into(),
        width: Some(1280),
        height: Some(720),
        detail: Some(r#"{"tiles":10}"#.into()),
        created_at: t(50),
    }
}

fn probed(needs_proxy: bool) -> ProbeOutcome {
    ProbeOutcome::Probed {
        info: r#"{"container":"mp4","streams":[]}"#.into(),
        playback: r#"{"as":"proxy","reason":"hevc"}"#.into(),
        duration_us: Some(3_000_000),
        created_at: Some(t(1_700_000_000_000_000)),
        needs_proxy,
        warning: None,
    }
}

async fn media(m: &Metadata, id: EvidenceId) -> custody_store::EvidenceMedia {
    m.evidence_media(&[id]).await.unwrap().pop().unwrap()
}

async fn committing_evidence_queues_its_probe_and_a_probe_can_queue_a_proxy(m: Metadata) {
    let id = commit(&m, 1, 10).await;
    let before = media(&m, id).await;
    assert_eq!(before.state, MediaState::Pending);
    assert_eq!(before.jobs.len(), 1);
    assert_eq!(before.jobs[0].state, "queued");

    let job = claim(&m, "w1", 20).await.unwrap();
    assert_eq!(
        (job.evidence_id, job.kind, job.attempt),
        (id, MediaJobKind::Probe, 1)
    );
    assert!(
        claim(&m, "w2", 21).await.is_none(),
        "a held job is not claimed twice"
    );

    let files = [
        derived(id, DerivedKind::Poster),
        derived(id, DerivedKind::Thumbs),
    ];
    assert!(
        m.finish_probe_job(&job, &probed(true), &files, t(30))
            .await
            .unwrap()
    );
    let after = media(&m, id).await;
    assert_eq!(after.state, MediaState::Ready);
    assert_eq!(after.duration_us, Some(3_000_000));
    assert_eq!(after.created_at, Some(t(1_700_000_000_000_000)));
    assert_eq!(after.probed_at, Some(t(30)));
    assert!(after.info.unwrap().contains("mp4"));
    assert_eq!(after.derived.len(), 2);
    assert_eq!(after.derived[0], files[0]);
    let states: Vec<_> = after
        .jobs
        .iter()
        .map(|j| (j.kind, j.state.as_str()))
        .collect();
    assert_eq!(
        states,
        [
            (MediaJobKind::Probe, "done"),
            (MediaJobKind::Proxy, "queued")
        ]
    );

    let proxy = claim(&m, "w1", 40).await.unwrap();
    assert_eq!(proxy.kind, MediaJobKind::Proxy);
    let file = derived(id, DerivedKind::Proxy);
    assert!(m.finish_proxy_job(&proxy, Ok(&file), t(45)).await.unwrap());
    assert_eq!(
        m.derived_media(id, DerivedKind::Proxy).await.unwrap(),
        Some(file)
    );
    let counts = m.media_job_counts().await.unwrap();
    assert_eq!(counts.get(MediaJobKind::Probe, "done"), 1);
    assert_eq!(counts.get(MediaJobKind::Proxy, "done"), 1);
    assert!(claim(&m, "w1", 50).await.is_none());
}

async fn a_job_whose_worker_died_is_claimed_again_and_the_old_claim_cannot_write(m: Metadata) {
    let id = commit(&m, 2, 10).await;
    let first = claim(&m, "dead", 20).await.unwrap();
    assert!(
        claim(&m, "alive", 20 + LEASE - 1).await.is_none(),
        "lease still held"
    );
    let second = claim(&m, "alive", 20 + LEASE + 1).await.unwrap();
    assert_eq!((second.evidence_id, second.attempt), (id, 2));
    assert!(!m.renew_media_job(&first, t(i64::MAX / 4)).await.unwrap());
    assert!(
        !m.finish_probe_job(&first, &probed(false), &[], t(30))
            .await
            .unwrap(),
        "the stale claim must not write"
    );
    assert_eq!(media(&m, id).await.state, MediaState::Pending);
    assert!(m.renew_media_job(&second, t(20 + 3 * LEASE)).await.unwrap());
    assert!(
        m.finish_probe_job(&second, &probed(false), &[], t(31))
            .await
            .unwrap()
    );
    assert_eq!(media(&m, id).await.state, MediaState::Ready);
}

async fn a_failure_that_may_pass_is_retried_after_its_backoff_then_given_up(m: Metadata) {
    let id = commit(&m, 3, 10).await;
    let job = claim(&m, "w", 20).await.unwrap();
    assert!(
        m.retry_media_job(&job, "object store unreachable", t(1_000), false, t(21))
            .await
            .unwrap()
    );
    assert!(
        claim(&m, "w", 999).await.is_none(),
        "not before its backoff"
    );
    assert_eq!(m.next_media_job_due().await.unwrap(), Some(t(1_000)));
    let again = claim(&m, "w", 1_000).await.unwrap();
    assert_eq!(again.attempt, 2);
    assert!(
        m.retry_media_job(&again, "object store unreachable", t(2_000), true, t(1_001))
            .await
            .unwrap()
    );
    let gave_up = media(&m, id).await;
    assert_eq!(gave_up.state, MediaState::Failed);
    assert!(gave_up.error.unwrap().contains("object store unreachable"));
    assert_eq!(gave_up.jobs[0].state, "failed");
    assert!(claim(&m, "w", 5_000).await.is_none());
    assert_eq!(m.failed_media(10).await.unwrap(), vec![id]);
}

async fn a_job_that_kills_its_worker_every_time_is_given_up(m: Metadata) {
    let id = commit(&m, 4, 10).await;
    let mut now = 20;
    for attempt in 1..=MAX {
        let job = claim(&m, "crashy", now).await.unwrap();
        assert_eq!(job.attempt, attempt);
        now += LEASE + 1; // the worker dies holding it
    }
    assert!(claim(&m, "crashy", now).await.is_none());
    let gave_up = media(&m, id).await;
    assert_eq!(gave_up.state, MediaState::Failed);
    assert!(gave_up.error.unwrap().contains("crashed or was killed"));
    assert_eq!(gave_up.jobs[0].state, "failed");
}

async fn a_released_job_does_not_count_as_an_attempt(m: Metadata) {
    commit(&m, 5, 10).await;
    let job = claim(&m, "stopping", 20).await.unwrap();
    m.release_media_job(&job, t(21)).await.unwrap();
    let again = claim(&m, "next", 22).await.unwrap();
    assert_eq!(again.attempt, 1);
}

async fn a_file_that_is_not_media_records_why(m: Metadata) {
    let id = commit(&m, 6, 10).await;
    let job = claim(&m, "w", 20).await.unwrap();
    let outcome = ProbeOutcome::Failed {
        error: "not a media file ffmpeg recognises".into(),
    };
    assert!(
        m.finish_probe_job(&job, &outcome, &[], t(30))
            .await
            .unwrap()
    );
    let got = media(&m, id).await;
    assert_eq!(got.state, MediaState::Failed);
    assert_eq!(
        got.error.as_deref(),
        Some("not a media file ffmpeg recognises")
    );
    assert_eq!(got.jobs[0].state, "failed");
    assert!(got.derived.is_empty());
    // The evidence row itself is untouched.
    let e = m.get_evidence(id).await.unwrap().unwrap();
    assert_eq!((e.size, e.sha256), (100, Sha256::from_bytes([6; 32])));
}

async fn requeueing_starts_an_items_media_over(m: Metadata) {
    let id = commit(&m, 7, 10).await;
    let job = claim(&m, "w", 20).await.unwrap();
    let outcome = ProbeOutcome::Failed {
        error: "bad".into(),
    };
    m.finish_probe_job(&job, &outcome, &[], t(30))
        .await
        .unwrap();
    assert!(m.requeue_media(id, t(40)).await.unwrap());
    assert_eq!(media(&m, id).await.state, MediaState::Pending);
    let again = claim(&m, "w", 41).await.unwrap();
    assert_eq!((again.kind, again.attempt), (MediaJobKind::Probe, 1));
    assert!(!m.requeue_media(EvidenceId::new(), t(42)).await.unwrap());
}
