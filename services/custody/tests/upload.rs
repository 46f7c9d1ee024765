//! The upload protocol through a real server: happy paths, and every kind of bad input refused with a
//! specific status while stored evidence stays untouched.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::*;
use custody_proto::v1 as pb;
use tonic::Code;

async fn uploads_a_file_in_chunks_and_serves_it_back_byte_for_byte(backends: Backends) {
    let app = spawn_app(backends).await;
    let data = bytes(13 << 20 | 777, 1);
    let mut up = app.uploader().await.with_chunk_size(300_000);
    let receipt = up
        .upload(begin_request(&data, "ZFY001"), &source(&data))
        .await
        .unwrap();
    let digests = custody_core::ContentHasher::digest(&data, true);
    assert_eq!(receipt.sha256, digests.sha256.to_hex());
    assert_eq!(receipt.sm3, digests.sm3.unwrap().to_hex());
    assert_eq!(receipt.size, data.len() as i64);
    assert!(!receipt.duplicate);

    app.approve_download(&receipt.evidence_id).await;
    let got = app
        .get(&format!("/api/v1/evidence/{}/content", receipt.evidence_id))
        .await;
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["content-type"], "video/mp4");
    assert_eq!(got.bytes().await.unwrap().as_ref(), data.as_slice());
    let part = app
        .http_client
        .get(format!(
            "{}/api/v1/evidence/{}/content",
            app.http, receipt.evidence_id
        ))
        .header("range", "bytes=5000000-5000099")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 5000000-5000099/{}", data.len())
    );
    assert_eq!(
        part.bytes().await.unwrap().as_ref(),
        &data[5_000_000..5_000_100]
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_file_uploaded_in_chunks_is_served_back_byte_for_byte_on_sqlite_and_disk() {
    uploads_a_file_in_chunks_and_serves_it_back_byte_for_byte(Backends::Embedded).await;
}

#[tokio::test]
async fn a_file_uploaded_in_chunks_is_served_back_byte_for_byte_on_postgres_and_s3() {
    uploads_a_file_in_chunks_and_serves_it_back_byte_for_byte(Backends::Real).await;
}

#[tokio::test]
async fn bytes_already_stored_are_answered_with_the_existing_receipt_and_not_sent_again() {
    let app = spawn_app(Backends::Embedded).await;
    let data = bytes(100_000, 2);
    let mut up = app.uploader().await;
    let first = up
        .upload(begin_request(&data, "ZFY001"), &source(&data))
        .await
        .unwrap();
    // Another station offloads the same file: Begin answers with a receipt at once.
    let mut again = begin_request(&data, "ZFY001");
    again.station_id = "ST-02".into();
    let st02 = app.add_station("ST-02").await;
    let mut up = custody::client::Uploader::connect_addr(app.grpc, &st02)
        .await
        .unwrap();
    match up.begin(again).await.unwrap() {
        pb::begin_response::Result::Receipt(r) => {
            assert_eq!(r.evidence_id, first.evidence_id);
            assert!(r.duplicate);
        }
        other => panic!("expected a receipt, got {other:?}"),
    }
    app.shutdown().await;
}

#[tokio::test]
async fn beginning_the_same_file_again_resumes_the_open_upload_where_it_stopped() {
    let app = spawn_app(Backends::Embedded).await;
    let data = bytes(3 << 20, 3);
    let mut up = app.uploader().await;
    let s = session(up.begin(begin_request(&data, "ZFY001")).await.unwrap());
    let committed = up
        .write(&s.upload_id, &source(&data), 0, 2 << 20)
        .await
        .unwrap();
    assert_eq!(committed, 2 << 20);
    // The station lost its upload id (restart): Begin gives the same session and its committed offset.
    let again = session(up.begin(begin_request(&data, "ZFY001")).await.unwrap());
    assert_eq!(
        (again.upload_id.as_str(), again.committed_size),
        (s.upload_id.as_str(), 2 << 20)
    );
    let q = up.query(&s.upload_id).await.unwrap();
    assert_eq!(
        (q.committed_size, q.state()),
        (2 << 20, pb::UploadState::Open)
    );
    up.write(&s.upload_id, &source(&data), 2 << 20, data.len() as u64)
        .await
        .unwrap();
    let r = up.commit(&s.upload_id).await.unwrap();
    // Commit is idempotent: a station that lost the answer asks again and gets the same receipt.
    assert_eq!(
        up.commit(&s.upload_id).await.unwrap().evidence_id,
        r.evidence_id
    );
    assert_eq!(
        up.query(&s.upload_id).await.unwrap().state(),
        pb::UploadState::Committed
    );
    // A committed upload takes no more bytes, and says how to get the receipt.
    let err = up
        .write(&s.upload_id, &source(&data), 0, 10)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message()
            .contains("is committed; call Commit for its receipt"),
        "{}",
        err.message()
    );
    app.shutdown().await;
}

async fn evidence_count(app: &TestApp) -> usize {
    let v: serde_json::Value = app.get("/api/v1/evidence").await.json().await.unwrap();
    v["items"].as_array().unwrap().len()
}

#[tokio::test]
async fn an_upload_with_a_wrong_sha256_is_refused_and_nothing_is_stored() {
    let app = spawn_app(Backends::Embedded).await;
    let data = bytes(200_000, 4);
    let mut req = begin_request(&data, "ZFY001");
    req.sha256 = custody_core::ContentHasher::digest(b"other bytes", false)
        .sha256
        .to_hex();
    req.sm3.clear();
    let mut up = app.uploader().await;
    let s = session(up.begin(req.clone()).await.unwrap());
    up.write(&s.upload_id, &source(&data), 0, data.len() as u64)
        .await
        .unwrap();
    let err = up.commit(&s.upload_id).await.unwrap_err();
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");
    assert!(
        err.message()
            .starts_with("sha256 of the received bytes is "),
        "{}",
        err.message()
    );
    assert!(err.message().contains(&req.sha256), "{}", err.message());
    let q = up.query(&s.upload_id).await.unwrap();
    assert_eq!(q.state(), pb::UploadState::Failed);
    assert!(q.failure.contains("sha256"), "{}", q.failure);
    assert_eq!(evidence_count(&app).await, 0);
    // The staged bytes are gone too.
    let staged = app.data_dir.join("objects/staging").join(&s.upload_id);
    assert!(
        !staged.exists(),
        "staged bytes left at {}",
        staged.display()
    );
    let again = up.commit(&s.upload_id).await.unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    app.shutdown().await;
}

#[tokio::test]
async fn an_upload_with_a_wrong_sm3_is_refused_naming_sm3() {
    let app = spawn_app(Backends::Embedded).await;
    let data = bytes(50_000, 5);
    let mut req = begin_request(&data, "ZFY001");
    req.sm3 = "00".repeat(32);
    let mut up = app.uploader().await;
    let s = session(up.begin(req).await.unwrap());
    up.write(&s.upload_id, &source(&data), 0, data.len() as u64)
        .await
        .unwrap();
    let err = up.commit(&s.upload_id).await.unwrap_err();
    assert_eq!(err.code(), Code::DataLoss);
    assert!(
        err.message().starts_with("sm3 of the received bytes"),
        "{}",
        err.message()
    );
    assert_eq!(evidence_count(&app).await, 0);
    app.shutdown().await;
}

#[tokio::test]
async fn malformed_declarations_are_refused_naming_the_field() {
    let app = spawn_app(Backends::Embedded).await;
    let data = bytes(1000, 6);
    let mut up = app.uploader().await;
    type Mutation = Box<dyn Fn(&mut pb::BeginRequest)>;
    let cases: Vec<(&str, Mutation)> = vec![
        ("size: must be at least 1 byte", Box::new(|r| r.size = 0)),
        (
            "size: must be at least 1 byte, got -5",
            Box::new(|r| r.size = -5),
        ),
        (
            "exceeds the server's maximum of 268435456 bytes",
            Box::new(|r| r.size = 1 << 40),
        ),
        (
            "sha256: expected 64 hex digits",
            Box::new(|r| r.sha256 = "xyz".into()),
        ),
        (
            "sha256: expected 64 hex digits",
            Box::new(|r| r.sha256.truncate(63)),
        ),
        (
            "sm3: expected 64 hex digits",
            Box::new(|r| r.sm3 = "12".into()),
        ),
        (
            "device_id: must not be empty",
            Box::new(|r| r.device_id.clear()),
        ),
        (
            "station_id: may hold only",
            Box::new(|r| r.station_id = "st 1".into()),
        ),
        (
            "file_name: must be a bare file name",
            Box::new(|r| r.file_name = "../x.mp4".into()),
        ),
        (
            "capture_start: required",
            Box::new(|r| r.capture_start = None),
        ),
        (
            "importance: expected 1 (normal)",
            Box::new(|r| r.importance = 7),
        ),
        (
            "media_type: expected 1 (video)",
            Box::new(|r| r.media_type = 0),
        ),
    ];
    for (want, mutate) in cases {
        let mut req = begin_request(&data, "ZFY001");
        mutate(&mut req);
        let err = up.begin(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{want}: {err:?}");
        assert!(
            err.message().contains(want),
            "expected {want:?} in {:?}",
            err.message()
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn writes_at_wrong_offsets_or_past_the_end_are_refused_and_keep_what_was_committed() {
    let app = spawn_app(Backends::Embedded).await;
    let data = bytes(1 << 20, 7);
    let mut up = app.uploader().await.with_chunk_size(100_000);
    let s = session(up.begin(begin_request(&data, "ZFY001")).await.unwrap());
    assert_eq!(
        up.write(&s.upload_id, &source(&data), 0, 500_000)
            .await
            .unwrap(),
        500_000
    );

    // Overlap (offset behind what was received) and gap (ahead of it) name the resume point.
    for from in [400_000, 600_000] {
        let err = up
            .write(&s.upload_id, &source(&data), from, from + 1000)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert!(
            err.message().contains("resume writing at offset 500000"),
            "{}",
            err.message()
        );
    }
    // Past the declared size.
    let long = [data.clone(), vec![0u8; 10]].concat();
    let err = up
        .write(&s.upload_id, &source(&long), 500_000, long.len() as u64)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(
        err.message()
            .contains("runs past the declared size of 1048576 bytes"),
        "{}",
        err.message()
    );
    // Bytes before the refused chunk of that stream were accepted and are kept.
    let committed = up.query(&s.upload_id).await.unwrap().committed_size as u64;
    assert!(
        committed >= 500_000 && committed < data.len() as u64,
        "{committed}"
    );

    // A negative offset, an unknown and a malformed upload id.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut raw = pb::upload_client::UploadClient::with_interceptor(
        channel,
        custody::client::Bearer::new(&app.station_credential).unwrap(),
    );
    let neg = pb::WriteRequest {
        upload_id: s.upload_id.clone(),
        offset: -1,
        data: vec![1].into(),
    };
    let err = raw.write(futures::stream::iter([neg])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("offset: must not be negative"),
        "{}",
        err.message()
    );
    let unknown = custody_core::UploadId::new().to_string();
    let err = up.write(&unknown, &source(&data), 0, 10).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains(&unknown), "{}", err.message());
    let err = up.query("not-an-id").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("upload_id:"), "{}", err.message());

    // Committing before every byte arrived is refused; finishing the upload still works.
    let err = up.commit(&s.upload_id).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("incomplete"), "{}", err.message());
    up.write(&s.upload_id, &source(&data), committed, data.len() as u64)
        .await
        .unwrap();
    let r = up.commit(&s.upload_id).await.unwrap();
    app.approve_download(&r.evidence_id).await;
    let got = app
        .get(&format!("/api/v1/evidence/{}/content", r.evidence_id))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.as_ref(), data.as_slice());
    app.shutdown().await;
}

#[tokio::test]
async fn an_abandoned_upload_expires_and_its_staged_bytes_are_removed() {
    let app = spawn_app(Backends::Embedded).await;
    let data = bytes(2 << 20, 8);
    let mut up = app.uploader().await;
    let s = session(up.begin(begin_request(&data, "ZFY001")).await.unwrap());
    up.write(&s.upload_id, &source(&data), 0, 1 << 20)
        .await
        .unwrap();
    let staged = app.data_dir.join("objects/staging").join(&s.upload_id);
    assert!(staged.exists());
    let now = custody_core::Timestamp::parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
    assert_eq!(
        app.ingest.expire_idle(now).await.unwrap(),
        0,
        "a fresh upload expired"
    );
    let later = custody_core::Timestamp::from_unix_micros(i64::MAX / 2);
    assert_eq!(app.ingest.expire_idle(later).await.unwrap(), 1);
    assert!(!staged.exists());
    assert_eq!(
        up.query(&s.upload_id).await.unwrap().state(),
        pb::UploadState::Expired
    );
    let err = up
        .write(&s.upload_id, &source(&data), 1 << 20, 2 << 20)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("expired"), "{}", err.message());
    // Beginning the file again starts a new session from zero.
    let fresh = session(up.begin(begin_request(&data, "ZFY001")).await.unwrap());
    assert_ne!(fresh.upload_id, s.upload_id);
    assert_eq!(fresh.committed_size, 0);
    app.shutdown().await;
}

#[tokio::test]
async fn a_full_disk_refuses_the_upload_with_resource_exhausted_and_keeps_stored_evidence() {
    let disk = custody_store::testing::SmallDisk::mount("12m");
    let config = config_for(Backends::Embedded, disk.dir.path().join("data"));
    let app = spawn_with(config, None).await;
    let small = bytes(1 << 20, 9);
    let mut up = app.uploader().await;
    let kept = up
        .upload(begin_request(&small, "ZFY001"), &source(&small))
        .await
        .unwrap();
    // Approved while there is room: the request itself is a database row.
    app.approve_download(&kept.evidence_id).await;

    let big = bytes(40 << 20, 10);
    let s = session(up.begin(begin_request(&big, "ZFY002")).await.unwrap());
    let err = up
        .write(&s.upload_id, &source(&big), 0, big.len() as u64)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("storage is full"),
        "{}",
        err.message()
    );
    // What was committed before is consistent, and the server still answers.
    let q = up.query(&s.upload_id).await.unwrap();
    assert!(q.committed_size < big.len() as i64);
    assert_eq!(app.get("/healthz").await.status(), 200);
    // A download must be in the ledger before a byte leaves; with no room to record it, it is refused
    // (naming the full disk) rather than served unlogged.
    let refused = app
        .get(&format!("/api/v1/evidence/{}/content", kept.evidence_id))
        .await;
    assert_eq!(refused.status(), 507, "{:?}", refused.text().await);
    // The stored evidence itself is intact.
    let id = custody_core::EvidenceId::parse(&kept.evidence_id).unwrap();
    let evidence = app.ingest.evidence(id).await.unwrap();
    let content = app.ingest.content(evidence, None).await.unwrap();
    let stored: Vec<bytes::Bytes> = futures::TryStreamExt::try_collect(content.stream)
        .await
        .unwrap();
    assert_eq!(stored.concat(), small);
    app.shutdown().await;
    drop(disk);
}

async fn uploads_without_a_valid_station_credential_are_refused(backends: Backends) {
    let app = spawn_app(backends).await;
    let data = bytes(1000, 9);

    // No credential at all.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut bare = pb::upload_client::UploadClient::new(channel);
    let err = bare
        .begin(begin_request(&data, "ZFY001"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(
        err.message().contains("needs a station credential"),
        "{}",
        err.message()
    );

    // A wrong secret, a malformed credential.
    let wrong = format!("ST-01:{}", "00".repeat(32));
    for (cred, says) in [(wrong.as_str(), "ST-01"), ("garbage", "expected")] {
        let mut up = custody::client::Uploader::connect_addr(app.grpc, cred)
            .await
            .unwrap();
        let err = up
            .upload(begin_request(&data, "ZFY001"), &source(&data))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
        assert!(err.message().contains(says), "{}", err.message());
    }

    // A revoked credential stops working at once; a rotated one works.
    let st01 = custody_core::StationId::parse("ST-01").unwrap();
    app.stations.disable(&st01).await.unwrap();
    let err = app
        .uploader()
        .await
        .begin(begin_request(&data, "ZFY001"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert_eq!(evidence_count(&app).await, 0);
    let fresh = app.stations.rotate(st01).await.unwrap().token();
    let mut up = custody::client::Uploader::connect_addr(app.grpc, &fresh)
        .await
        .unwrap();
    up.upload(begin_request(&data, "ZFY001"), &source(&data))
        .await
        .unwrap();
    assert_eq!(evidence_count(&app).await, 1);
}

#[tokio::test]
async fn uploads_without_a_valid_station_credential_are_refused_on_sqlite_and_disk() {
    uploads_without_a_valid_station_credential_are_refused(Backends::Embedded).await;
}

#[tokio::test]
async fn uploads_without_a_valid_station_credential_are_refused_on_postgres_and_s3() {
    uploads_without_a_valid_station_credential_are_refused(Backends::Real).await;
}

#[tokio::test]
async fn a_station_cannot_declare_for_or_touch_another_stations_upload() {
    let app = spawn_app(Backends::Embedded).await;
    let other = app.add_station("ST-02").await;
    let data = bytes(1 << 20, 3);
    let mut st1 = app.uploader().await;
    let s = session(st1.begin(begin_request(&data, "ZFY001")).await.unwrap());
    let mut st2 = custody::client::Uploader::connect_addr(app.grpc, &other)
        .await
        .unwrap();

    let err = st2.begin(begin_request(&data, "ZFY001")).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("ST-02") && err.message().contains("ST-01"),
        "{}",
        err.message()
    );
    let err = st2
        .write(&s.upload_id, &source(&data), 0, 100)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = st2.query(&s.upload_id).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = st2.commit(&s.upload_id).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("belongs to station ST-01"),
        "{}",
        err.message()
    );

    // Its own station finishes it untouched.
    st1.write(&s.upload_id, &source(&data), 0, data.len() as u64)
        .await
        .unwrap();
    st1.commit(&s.upload_id).await.unwrap();
}
