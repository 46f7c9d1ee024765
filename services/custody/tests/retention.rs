//! Retention through the real server: what the API says about an item's retention, who may hold and
//! mark it, what a deleted item answers, the `custody admin retention run --dry-run` listing, and the
//! ledger staying verifiable with tombstones in it. Runs on the embedded defaults and on PostgreSQL + S3.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use custody_proto::v1 as pb;
use std::process::Command;

/// 2025-01-01T00:00:00Z: long enough ago that the default six months are over.
const LONG_AGO: i64 = 1_735_689_600;

async fn upload_old(app: &TestApp, seed: u8) -> String {
    let data = bytes(64 * 1024, seed);
    let mut req = begin_request(&data, "ZFY001");
    req.capture_start = Some(prost_types::Timestamp {
        seconds: LONG_AGO + i64::from(seed),
        nanos: 0,
    });
    req.media_type = pb::MediaType::Video.into();
    app.uploader()
        .await
        .upload(req, &source(&data))
        .await
        .unwrap()
        .evidence_id
}

/// Runs the real `custody admin retention run` against the server's storage.
fn admin_run(app: &TestApp, extra: &[&str]) -> (bool, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_custody"));
    c.args(["admin", "retention", "run"])
        .args(extra)
        .arg("--data-dir")
        .arg(&app.data_dir);
    if let Some(db) = &app.config.database_url {
        c.arg("--database-url").arg(db);
    }
    if let Some(o) = &app.config.object_store {
        c.arg("--object-store").arg(o);
        c.arg("--s3-endpoint")
            .arg(app.config.s3_endpoint.as_deref().unwrap_or_default());
        c.arg("--s3-access-key-id")
            .arg(app.config.s3_access_key_id.as_deref().unwrap_or_default());
        c.arg("--s3-allow-http").arg("true");
        c.env(
            "CUSTODY_S3_SECRET_ACCESS_KEY",
            app.config
                .s3_secret_access_key
                .as_deref()
                .unwrap_or_default(),
        );
    }
    let o = c.output().unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// A deleting pass, printed as the admin command prints it. On PostgreSQL + S3 it is the real
/// `custody admin retention run`. On the embedded SQLite it is the same pass run by the server's own
/// worker: the admin command writing to the SQLite file of a running server fails about half the
/// time with "database is locked" after the 10 s busy timeout (an open bug, in the issue note).
async fn deleting_run(app: &TestApp, backends: Backends) -> (bool, String) {
    if backends == Backends::Real {
        return admin_run(app, &[]);
    }
    let mut out = String::new();
    let r = app
        .retention
        .run_once(custody::now(), false, |item, _| {
            out.push_str(&format!("deleted      {}\n", item.evidence.id))
        })
        .await;
    match r {
        Ok(r) => (true, format!("{out}{} item(s) deleted", r.deleted)),
        Err(e) => (false, format!("{out}{e}")),
    }
}

async fn retention_of(app: &TestApp, c: &reqwest::Client, id: &str) -> serde_json::Value {
    let (s, v) = call(
        c,
        "GET",
        app.api(&format!("/evidence/{id}/retention")),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    v
}

async fn old_footage_is_deleted_except_what_is_held_or_marked_and_a_tombstone_answers_410(
    backends: Backends,
) {
    let app = spawn_configured(backends, |c| {
        c.retention_interval = std::time::Duration::ZERO
    })
    .await;
    let plain = upload_old(&app, 1).await;
    let held = upload_old(&app, 2).await;
    let marked = upload_old(&app, 3).await;
    let handler = authed(&user_token(&app.accounts, "handler", "case_handler").await);
    let boss = authed(&user_token(&app.accounts, "boss", "supervisor").await);

    let r = retention_of(&app, &app.http_client, &plain).await;
    assert_eq!(r["keep"], "due", "{r}");
    assert!(r["reason"].as_str().unwrap().contains("6 months"), "{r}");

    // Only a supervisor places a legal hold; a case handler's attempt is refused and audited.
    let hold = serde_json::json!({"reason": "行政复议 (2026) 第12号"});
    let (s, v) = call(
        &handler,
        "POST",
        app.api(&format!("/evidence/{held}/hold")),
        Some(hold.clone()),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    let (s, log) = call(
        &app.http_client,
        "GET",
        app.api("/audit?outcome=denied"),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert!(
        log.to_string().contains("evidence.hold"),
        "the refusal is in the audit log: {log}"
    );
    let (s, v) = call(
        &boss,
        "POST",
        app.api(&format!("/evidence/{held}/hold")),
        Some(hold),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["keep"], "forever", "{v}");
    assert_eq!(v["marks"]["legal_hold"]["by"], "user:boss", "{v}");

    // Marks keep an item longer; a class must be configured; clearing a mark is a supervisor's call.
    let (s, v) = call(
        &app.http_client,
        "PATCH",
        app.api(&format!("/evidence/{marked}/retention")),
        Some(serde_json::json!({"class": "nope"})),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(v.to_string().contains("major_incident"), "{v}");
    let (s, v) = call(
        &app.http_client,
        "PATCH",
        app.api(&format!("/evidence/{marked}/retention")),
        Some(serde_json::json!({"obstruction": true})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["keep"], "forever", "{v}");
    assert_eq!(v["marks"]["obstruction"], true, "{v}");

    // The dry run lists only the plain item and changes nothing.
    let (ok, out) = admin_run(&app, &["--dry-run"]);
    assert!(ok, "{out}");
    assert!(out.contains(&format!("would delete {plain}")), "{out}");
    assert!(!out.contains(&held) && !out.contains(&marked), "{out}");
    // Held items are not even looked at.
    assert!(out.contains("1 of 2 item(s)"), "{out}");
    assert_eq!(
        retention_of(&app, &app.http_client, &plain).await["keep"],
        "due"
    );

    // The real run deletes it.
    let (ok, out) = deleting_run(&app, backends).await;
    assert!(ok, "{out}");
    assert!(out.contains(&format!("deleted      {plain}")), "{out}");
    assert!(out.contains("1 item(s) deleted"), "{out}");

    let (s, v) = call(
        &app.http_client,
        "GET",
        app.api(&format!("/evidence/{plain}")),
        None,
    )
    .await;
    assert_eq!(s, 200, "the record stays: {v}");
    assert!(v["retention"]["deleted"]["at"].is_string(), "{v}");
    for what in ["content", "poster", "proxy"] {
        let r = app
            .http_client
            .get(app.api(&format!("/evidence/{plain}/{what}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 410, "{what}");
        let body = r.text().await.unwrap();
        assert!(body.contains("retention"), "{what}: {body}");
    }
    let (s, v) = call(
        &app.http_client,
        "POST",
        app.api("/requests"),
        Some(serde_json::json!({"kind": "download", "evidence_id": plain, "reason": "court"})),
    )
    .await;
    assert_eq!(s, 410, "no copy can be asked for: {v}");
    let (s, v) = call(
        &boss,
        "POST",
        app.api(&format!("/evidence/{plain}/hold")),
        Some(serde_json::json!({"reason": "too late"})),
    )
    .await;
    assert_eq!(s, 410, "{v}");

    // The deletion and the hold are ledger events, and the ledger still verifies with the tombstone.
    app.settle_ledger().await;
    let kinds = |v: serde_json::Value| {
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["event"]["kind"].as_str().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    let (_, h) = call(
        &app.http_client,
        "GET",
        app.api(&format!("/evidence/{plain}/history")),
        None,
    )
    .await;
    assert!(
        kinds(h.clone()).contains(&"retention_delete".to_string()),
        "{h}"
    );
    let (_, h) = call(
        &app.http_client,
        "GET",
        app.api(&format!("/evidence/{held}/history")),
        None,
    )
    .await;
    assert!(kinds(h.clone()).contains(&"legal_hold".to_string()), "{h}");
    let (meta, blobs) = custody::app::open_storage(&app.config).await.unwrap();
    let report =
        custody::verify::check(&meta, &blobs, std::slice::from_ref(&app.verifier_key), true)
            .await
            .unwrap();
    meta.close().await;
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.deleted, 1);

    // Released, the held item goes at the next pass; the marked one stays.
    let (s, v) = call(
        &boss,
        "POST",
        app.api(&format!("/evidence/{held}/release")),
        Some(serde_json::json!({"note": "复议结束"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["keep"], "due", "{v}");
    let (ok, out) = deleting_run(&app, backends).await;
    assert!(ok && out.contains("1 item(s) deleted"), "{out}");
    assert_eq!(
        retention_of(&app, &app.http_client, &marked).await["keep"],
        "forever"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn retention_on_the_embedded_defaults() {
    old_footage_is_deleted_except_what_is_held_or_marked_and_a_tombstone_answers_410(
        Backends::Embedded,
    )
    .await;
}

#[tokio::test]
async fn retention_on_postgres_and_s3() {
    old_footage_is_deleted_except_what_is_held_or_marked_and_a_tombstone_answers_410(
        Backends::Real,
    )
    .await;
}

/// The worker in `serve` does the same on its own, every `retention_interval`.
#[tokio::test]
async fn the_serving_worker_deletes_old_footage_by_itself() {
    let app = spawn_configured(Backends::Embedded, |c| {
        c.retention_interval = std::time::Duration::from_millis(200)
    })
    .await;
    let old = upload_old(&app, 9).await;
    let mut keep = serde_json::Value::Null;
    for _ in 0..100 {
        keep = retention_of(&app, &app.http_client, &old).await["keep"].clone();
        if keep == "deleted" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(keep, "deleted", "the worker deleted it within 10 s");
    app.settle_ledger().await;
    app.shutdown().await;
}
