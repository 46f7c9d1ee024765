//! A 200 MiB upload survives a SIGKILL of the server in the middle of the stream: after a restart the
//! client resumes from `Query`, no acknowledged byte is lost, and the committed evidence downloads
//! byte for byte.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use custody::client::{Source, Uploader};
use custody::process::{ServerProcess, sibling_binary};
use custody_proto::v1 as pb;
use futures::StreamExt;
use sha2::Digest;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

const SIZE: u64 = 200 << 20;

fn write_test_file(path: &Path) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut block = vec![0u8; 1 << 20];
    for i in 0..(SIZE >> 20) {
        for (j, b) in block.iter_mut().enumerate() {
            *b = ((j as u64).wrapping_mul(0x9E37_79B9) >> 11) as u8 ^ i as u8;
        }
        f.write_all(&block).unwrap();
    }
    f.flush().unwrap();
}

async fn server_args(real: bool, dir: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "--upload-flush-bytes",
        "4MiB",
        "--upload-part-size",
        "8MiB",
        "--max-upload-size",
        "1GiB",
    ]
    .map(String::from)
    .to_vec();
    if real {
        args.extend(common::real_backend_args(dir, "e2e").await);
    }
    args
}

async fn upload_killed_mid_stream_resumes_after_restart(real: bool) {
    let exe = sibling_binary().unwrap();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let file = dir.path().join("recording.mp4");
    write_test_file(&file);
    let digests = custody_store::hash_file(&file, true).unwrap();
    assert_eq!(digests.size, SIZE);
    let (sha256, sm3) = (
        digests.sha256.to_hex(),
        digests.sm3.map(|d| d.to_hex()).unwrap_or_default(),
    );
    let data_dir = dir.path().join("data");
    let args = server_args(real, dir.path()).await;

    let server = ServerProcess::spawn(&exe, &data_dir, &args).unwrap();
    let credential = server.add_station("ST-01").unwrap();
    let mut up = Uploader::connect_addr(server.addrs.grpc, &credential)
        .await
        .unwrap();
    let req = pb::BeginRequest {
        device_id: "ZFY0001".into(),
        station_id: "ST-01".into(),
        file_name: "ZFY0001_20261122083000_0001.MP4".into(),
        size: SIZE as i64,
        sha256: sha256.clone(),
        sm3,
        capture_start: Some(prost_types::Timestamp {
            seconds: 1_795_000_000,
            nanos: 0,
        }),
        importance: pb::Importance::Important.into(),
        media_type: pb::MediaType::Video.into(),
        officer_badge: String::new(),
        clock_offset_ms: None,
    };
    let upload_id = match up.begin(req.clone()).await.unwrap() {
        pb::begin_response::Result::Session(s) => s.upload_id,
        other => panic!("expected a session, got {other:?}"),
    };
    let source = Source::File(file.clone());
    let writer = {
        let (mut up, id, source) = (up.clone(), upload_id.clone(), source.clone());
        tokio::spawn(async move { up.write(&id, &source, 0, SIZE).await })
    };
    // Kill the server once a good part of the file is durable, while the stream is still running.
    let mut acknowledged = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while acknowledged < 70 << 20 {
        assert!(
            Instant::now() < deadline,
            "upload made no progress: {acknowledged} bytes"
        );
        acknowledged = up.query(&upload_id).await.unwrap().committed_size as u64;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill_hard().unwrap();
    assert!(
        writer.await.unwrap().is_err(),
        "the stream should break when the server dies"
    );
    assert!(
        acknowledged < SIZE,
        "the whole file went through before the kill"
    );

    let server = ServerProcess::spawn(&exe, &data_dir, &args).unwrap();
    let mut up = Uploader::connect_addr(server.addrs.grpc, &credential)
        .await
        .unwrap();
    let q = up.query(&upload_id).await.unwrap();
    let resumed = q.committed_size as u64;
    assert_eq!(q.state(), pb::UploadState::Open);
    assert!(
        resumed >= acknowledged,
        "acknowledged {acknowledged} bytes but only {resumed} survived"
    );
    // Begin with the same declaration finds the same session and offset.
    match up.begin(req).await.unwrap() {
        pb::begin_response::Result::Session(s) => {
            assert_eq!(
                (s.upload_id.as_str(), s.committed_size as u64),
                (upload_id.as_str(), resumed)
            );
        }
        other => panic!("expected the open session, got {other:?}"),
    }
    up.write(&upload_id, &source, resumed, SIZE).await.unwrap();
    let receipt = up.commit(&upload_id).await.unwrap();
    assert_eq!(
        (receipt.sha256.as_str(), receipt.size as u64),
        (sha256.as_str(), SIZE)
    );

    let reader_token = server.user_token("reader", common::READER_ROLES).unwrap();
    let approver = server
        .user_token("approver", common::APPROVER_ROLES)
        .unwrap();
    let http = format!("http://{}", server.addrs.http);
    common::approve_download(&http, &reader_token, &approver, &receipt.evidence_id).await;
    let reader = common::authed(&reader_token);
    let url = format!(
        "http://{}/api/v1/evidence/{}/content",
        server.addrs.http, receipt.evidence_id
    );
    let resp = reader.get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut h = sha2::Sha256::new();
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        n += chunk.len() as u64;
        h.update(&chunk);
    }
    assert_eq!((n, hex::encode(h.finalize())), (SIZE, sha256));
    // The downloaded copy also matches the original file byte for byte (not only its hash).
    let original = std::fs::read(&file).unwrap();
    let again = reader
        .get(format!(
            "http://{}/api/v1/evidence/{}/content",
            server.addrs.http, receipt.evidence_id
        ))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(
        again.as_ref() == original.as_slice(),
        "downloaded bytes differ from the original"
    );
    let status = server.stop().unwrap();
    assert!(status.success(), "graceful stop exited with {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mib_upload_killed_mid_stream_resumes_after_restart_on_sqlite_and_disk() {
    upload_killed_mid_stream_resumes_after_restart(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mib_upload_killed_mid_stream_resumes_after_restart_on_postgres_and_s3() {
    upload_killed_mid_stream_resumes_after_restart(true).await;
}
