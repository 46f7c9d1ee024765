//! The metadata conformance suite: every test runs on SQLite and on PostgreSQL.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use custody_core::access::EvidenceScope;
use custody_core::*;
use custody_store::Metadata;

use custody_store::conformance;

conformance!(
    an_upload_round_trips_with_every_field,
    a_checkpoint_with_a_stale_committed_size_is_refused,
    committing_the_same_bytes_twice_keeps_one_evidence_row,
    the_open_upload_of_the_same_file_is_found_for_resuming,
    idle_uploads_expire_once_and_touched_ones_do_not,
    listing_filters_and_pages_in_capture_order,
);

fn t(micros: i64) -> Timestamp {
    Timestamp::from_unix_micros(micros)
}

fn declaration(device: &str, seed: u8, size: u64) -> UploadDeclaration {
    UploadDeclaration {
        device_id: DeviceId::parse(device).unwrap(),
        station_id: StationId::parse("ST-01").unwrap(),
        file_name: FileName::parse(format!("{device}_{seed}.MP4")).unwrap(),
        size,
        sha256: Sha256::from_bytes([seed; 32]),
        sm3: Some(Sm3::from_bytes([seed.wrapping_add(1); 32])),
        captured_at: t(1_700_000_000_000_000 + i64::from(seed)),
        importance: Importance::Important,
        media_type: MediaType::Video,
        officer: None,
        clock_offset_ms: None,
    }
}

fn upload(decl: UploadDeclaration, expires: i64) -> Upload {
    Upload {
        id: UploadId::new(),
        declaration: decl,
        state: UploadState::Open,
        committed_size: 0,
        staging: "{}".into(),
        failure: None,
        evidence_id: None,
        created_at: t(1),
        updated_at: t(1),
        expires_at: t(expires),
    }
}

fn evidence_of(d: &UploadDeclaration, ingested: i64) -> Evidence {
    Evidence {
        id: EvidenceId::new(),
        sha256: d.sha256,
        sm3: d.sm3,
        size: d.size,
        device_id: d.device_id.clone(),
        station_id: d.station_id.clone(),
        file_name: d.file_name.clone(),
        media_type: d.media_type,
        importance: d.importance,
        captured_at: d.captured_at,
        ingested_at: t(ingested),
        attribution: Default::default(),
        retention: Default::default(),
    }
}

async fn an_upload_round_trips_with_every_field(m: Metadata) {
    let u = upload(declaration("DEV1", 1, 1234), 99);
    m.insert_upload(&u).await.unwrap();
    assert_eq!(m.get_upload(u.id).await.unwrap(), Some(u));
    assert_eq!(m.get_upload(UploadId::new()).await.unwrap(), None);
}

async fn a_checkpoint_with_a_stale_committed_size_is_refused(m: Metadata) {
    let u = upload(declaration("DEV1", 2, 100), 99);
    m.insert_upload(&u).await.unwrap();
    m.checkpoint_upload(u.id, 0, 40, "{\"a\":1}", t(5), t(500))
        .await
        .unwrap();
    let err = m
        .checkpoint_upload(u.id, 0, 60, "{}", t(6), t(600))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Aborted, "{err}");
    let got = m.get_upload(u.id).await.unwrap().unwrap();
    assert_eq!(
        (got.committed_size, got.staging.as_str(), got.expires_at),
        (40, "{\"a\":1}", t(500))
    );
}

async fn committing_the_same_bytes_twice_keeps_one_evidence_row(m: Metadata) {
    let d = declaration("DEV1", 3, 100);
    let (a, b) = (upload(d.clone(), 99), upload(d.clone(), 99));
    m.insert_upload(&a).await.unwrap();
    m.insert_upload(&b).await.unwrap();
    let first = m
        .commit_upload(a.id, &evidence_of(&d, 10), t(10))
        .await
        .unwrap();
    assert!(!first.duplicate);
    let second = m
        .commit_upload(b.id, &evidence_of(&d, 11), t(11))
        .await
        .unwrap();
    assert!(second.duplicate);
    assert_eq!(second.evidence, first.evidence);
    for id in [a.id, b.id] {
        let u = m.get_upload(id).await.unwrap().unwrap();
        assert_eq!(
            (u.state, u.evidence_id),
            (UploadState::Committed, Some(first.evidence.id))
        );
    }
    assert_eq!(
        m.get_evidence_by_sha256(&d.sha256).await.unwrap(),
        Some(first.evidence.clone())
    );
    assert_eq!(
        m.get_evidence(first.evidence.id).await.unwrap(),
        Some(first.evidence)
    );
}

async fn the_open_upload_of_the_same_file_is_found_for_resuming(m: Metadata) {
    let d = declaration("DEV1", 4, 100);
    let u = upload(d.clone(), 99);
    m.insert_upload(&u).await.unwrap();
    let found = m
        .find_resumable_upload(&d.sha256, 100, &d.device_id)
        .await
        .unwrap();
    assert_eq!(found.map(|f| f.id), Some(u.id));
    let other_device = DeviceId::parse("DEV2").unwrap();
    assert!(
        m.find_resumable_upload(&d.sha256, 100, &other_device)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        m.find_resumable_upload(&d.sha256, 101, &d.device_id)
            .await
            .unwrap()
            .is_none()
    );
    m.fail_upload(u.id, "sha256 differed", t(3)).await.unwrap();
    assert!(
        m.find_resumable_upload(&d.sha256, 100, &d.device_id)
            .await
            .unwrap()
            .is_none()
    );
    let failed = m.get_upload(u.id).await.unwrap().unwrap();
    assert_eq!(
        (failed.state, failed.failure.as_deref()),
        (UploadState::Failed, Some("sha256 differed"))
    );
}

async fn idle_uploads_expire_once_and_touched_ones_do_not(m: Metadata) {
    let idle = upload(declaration("DEV1", 5, 100), 50);
    let busy = upload(declaration("DEV1", 6, 100), 50);
    m.insert_upload(&idle).await.unwrap();
    m.insert_upload(&busy).await.unwrap();
    assert!(m.expired_uploads(t(49), 10).await.unwrap().is_empty());
    let due: Vec<_> = m
        .expired_uploads(t(60), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(due.len(), 2);
    // Written to after it was listed: its expiry moved on, so it must survive.
    m.checkpoint_upload(busy.id, 0, 10, "{}", t(55), t(1000))
        .await
        .unwrap();
    assert!(m.expire_upload(idle.id, t(60)).await.unwrap());
    assert!(
        !m.expire_upload(idle.id, t(60)).await.unwrap(),
        "expired twice"
    );
    assert!(!m.expire_upload(busy.id, t(60)).await.unwrap());
    assert_eq!(
        m.get_upload(idle.id).await.unwrap().unwrap().state,
        UploadState::Expired
    );
    assert_eq!(
        m.get_upload(busy.id).await.unwrap().unwrap().state,
        UploadState::Open
    );
}

async fn listing_filters_and_pages_in_capture_order(m: Metadata) {
    let mut all = Vec::new();
    for seed in 10..30u8 {
        let device = if seed % 2 == 0 { "EVEN" } else { "ODD" };
        let d = declaration(device, seed, 10);
        let u = upload(d.clone(), 99);
        m.insert_upload(&u).await.unwrap();
        all.push(
            m.commit_upload(u.id, &evidence_of(&d, 5), t(5))
                .await
                .unwrap()
                .evidence,
        );
    }
    // Pages of 3 over the even device's files: all 10, in capture order, none twice.
    let filter = EvidenceFilter {
        device_id: Some(DeviceId::parse("EVEN").unwrap()),
        ..Default::default()
    };
    let (mut seen, mut after) = (Vec::new(), None);
    loop {
        let page = m
            .list_evidence(&filter, &EvidenceScope::everything(), after, 3)
            .await
            .unwrap();
        assert!(page.items.len() <= 3);
        seen.extend(page.items.iter().map(|e| e.captured_at));
        match page.next {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    let want: Vec<_> = all
        .iter()
        .filter(|e| e.device_id.as_str() == "EVEN")
        .map(|e| e.captured_at)
        .collect();
    assert_eq!(seen, want);
    // A time window is start-inclusive and end-exclusive.
    let window = EvidenceFilter {
        captured_from: Some(all[2].captured_at),
        captured_to: Some(all[5].captured_at),
        ..Default::default()
    };
    let got = m
        .list_evidence(&window, &EvidenceScope::everything(), None, 100)
        .await
        .unwrap();
    assert_eq!(got.items, all[2..5].to_vec());
    assert!(got.next.is_none());
    let station = EvidenceFilter {
        station_id: Some(StationId::parse("ST-99").unwrap()),
        ..Default::default()
    };
    assert!(
        m.list_evidence(&station, &EvidenceScope::everything(), None, 10)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}
