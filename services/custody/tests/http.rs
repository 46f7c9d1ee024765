//! The HTTP read side: listing with filters and pages, metadata, content ranges, health and metrics.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::*;

#[tokio::test]
async fn evidence_is_listed_by_device_and_time_in_pages() {
    let app = spawn_app(Backends::Embedded).await;
    let mut up = app.uploader().await;
    for i in 0..5u8 {
        let data = bytes(1000 + usize::from(i), i);
        let mut req = begin_request(&data, if i % 2 == 0 { "ZFYEVEN" } else { "ZFYODD" });
        req.capture_start = Some(prost_types::Timestamp {
            seconds: 1_795_000_000 + i64::from(i) * 60,
            nanos: 0,
        });
        up.upload(req, &source(&data)).await.unwrap();
    }
    let page: serde_json::Value = app
        .get("/api/v1/evidence?device=ZFYEVEN&limit=2")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a third even file remains");
    let rest: serde_json::Value = app
        .get(&format!(
            "/api/v1/evidence?device=ZFYEVEN&limit=2&cursor={cursor}"
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert!(rest.get("next_cursor").is_none());
    // 1_795_000_060 is 2026-11-18T11:07:40Z: from the second file (inclusive) to the fourth (exclusive).
    let window: serde_json::Value = app
        .get("/api/v1/evidence?from=2026-11-18T11:07:40Z&to=2026-11-18T19:09:40%2B08:00")
        .await
        .json()
        .await
        .unwrap();
    let sizes: Vec<u64> = window["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["size"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, vec![1001, 1002]);
    let one = &window["items"][0];
    let id = one["id"].as_str().unwrap();
    let meta: serde_json::Value = app
        .get(&format!("/api/v1/evidence/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(meta["sha256"], one["sha256"]);
    assert_eq!(meta["importance"], 3);
    assert_eq!(meta["media_type"], "video");
    assert_eq!(meta["station_id"], "ST-01");
    app.shutdown().await;
}

#[tokio::test]
async fn bad_queries_get_a_json_error_naming_the_parameter() {
    let app = spawn_app(Backends::Embedded).await;
    for (path, status, code, needle) in [
        (
            "/api/v1/evidence?from=yesterday",
            400,
            "invalid_argument",
            "from: expected an RFC 3339 time",
        ),
        (
            "/api/v1/evidence?limit=0",
            400,
            "invalid_argument",
            "limit: must be between 1 and 1000",
        ),
        (
            "/api/v1/evidence?device=a%2Fb",
            400,
            "invalid_argument",
            "device_id",
        ),
        (
            "/api/v1/evidence?cursor=zzz",
            400,
            "invalid_argument",
            "cursor:",
        ),
        (
            "/api/v1/evidence/nope",
            400,
            "invalid_argument",
            "evidence_id: expected a UUID",
        ),
        (
            "/api/v1/evidence/0190b3f4-5c6d-7e8f-9a0b-1c2d3e4f5a6b",
            404,
            "not_found",
            "does not exist",
        ),
        ("/api/v1/nothing", 404, "not_found", "no such route"),
    ] {
        let r = app.get(path).await;
        assert_eq!(r.status().as_u16(), status, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{path}");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{path}: {msg}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_range_past_the_end_is_answered_416_with_the_size() {
    let app = spawn_app(Backends::Embedded).await;
    let data = bytes(5000, 1);
    let r = app
        .uploader()
        .await
        .upload(begin_request(&data, "ZFY001"), &source(&data))
        .await
        .unwrap();
    app.approve_download(&r.evidence_id).await;
    let resp = app
        .http_client
        .get(format!(
            "{}/api/v1/evidence/{}/content",
            app.http, r.evidence_id
        ))
        .header("range", "bytes=9000-9999")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 416);
    assert_eq!(resp.headers()["content-range"], "bytes */5000");
    let tail = app
        .http_client
        .get(format!(
            "{}/api/v1/evidence/{}/content",
            app.http, r.evidence_id
        ))
        .header("range", "bytes=-10")
        .send()
        .await
        .unwrap();
    assert_eq!(tail.status(), 206);
    assert_eq!(tail.bytes().await.unwrap().as_ref(), &data[4990..]);
    app.shutdown().await;
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let app = spawn_app(Backends::Embedded).await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(app.get("/readyz").await.status(), 200);
    let data = bytes(4096, 2);
    let mut up = app.uploader().await;
    up.upload(begin_request(&data, "ZFY001"), &source(&data))
        .await
        .unwrap();
    let _ = up.query("bad").await;
    let _ = up.commit(&custody_core::UploadId::new().to_string()).await;
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(
        text.contains("custody_ingest_upload_bytes_total 4096"),
        "{text}"
    );
    assert!(text.contains("custody_ingest_commits_total 1"), "{text}");
    assert!(
        text.contains("custody_ingest_errors_total{op=\"commit\",code=\"not_found\"} 1"),
        "{text}"
    );
    app.shutdown().await;
}
