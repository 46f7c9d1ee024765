//! Approval before copy through the real server, on the embedded backends and on PostgreSQL + S3:
//! viewing needs nothing, but downloading an original needs a request approved by a second supervisor
//! (never the requester), live at the time of the download; refusals are audited, downloads are ledger
//! events naming the requester, and export requests for cases go through the same lifecycle.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;

async fn upload(app: &TestApp, data: &[u8], device: &str) -> String {
    app.uploader()
        .await
        .upload(begin_request(data, device), &source(data))
        .await
        .unwrap()
        .evidence_id
}

async fn spawn_with_ttl(backends: Backends, ttl: Duration) -> TestApp {
    spawn_configured(backends, |c| c.approval_ttl = ttl).await
}

/// The denied audit records of `actor` on `target`, as (action, detail).
async fn denials(app: &TestApp, actor: &str, target: &str) -> Vec<(String, String)> {
    let (s, log) = call(
        &app.http_client,
        "GET",
        app.api(&format!(
            "/audit?actor={actor}&target={target}&outcome=denied"
        )),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{log}");
    log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap().to_string(),
                r["detail"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

async fn a_download_needs_a_second_supervisors_approval(b: Backends) {
    let app = spawn_app(b).await;
    let data = bytes(50_000, 3);
    let id = upload(&app, &data, "ZFY001").await;
    let content = app.api(&format!("/evidence/{id}/content"));
    let tester = &app.http_client;

    // Viewing needs no request; downloading the original does, and the refusal says how to ask.
    let (s, _) = call(tester, "GET", app.api(&format!("/evidence/{id}")), None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, body) = call(tester, "GET", content.clone(), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("POST /api/v1/requests"), "{msg}");
    assert!(msg.contains(&id), "{msg}");
    let denied = denials(&app, "user:tester", &format!("evidence:{id}")).await;
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0].0, "evidence.download");
    app.settle_ledger().await;
    let (_, h) = call(
        tester,
        "GET",
        app.api(&format!("/evidence/{id}/history")),
        None,
    )
    .await;
    let kinds: Vec<&str> = h["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["kind"].as_str().unwrap())
        .collect();
    assert!(
        !kinds.contains(&"download"),
        "a refused download is no ledger event: {kinds:?}"
    );

    // A request: pending until decided.
    let (s, req) = call(
        tester,
        "POST",
        app.api("/requests"),
        Some(json!({"kind": "download", "evidence_id": id, "reason": "court hearing 2026-12-01"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{req}");
    assert_eq!(req["state"], "pending");
    assert_eq!(req["kind"], "download");
    assert_eq!(req["requester"], "tester");
    assert!(req.get("expires_at").is_none(), "{req}");
    let rid = req["id"].as_str().unwrap().to_string();
    let (s, _) = call(tester, "GET", content.clone(), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "a pending request opens nothing");

    // The requester may not approve their own request, though they hold the supervisor role.
    let approve = app.api(&format!("/requests/{rid}/approve"));
    let (s, body) = call(
        tester,
        "POST",
        approve.clone(),
        Some(json!({"note": "mine"})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("own"),
        "{body}"
    );
    // Nor may someone who is not a supervisor.
    let li = authed(&user_token(&app.accounts, "li", "case_handler,auditor").await);
    let (s, body) = call(&li, "POST", approve.clone(), Some(json!({"note": "ok"}))).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    let denied = denials(&app, "user:tester", &format!("request:{rid}")).await;
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0].0, "request.approve");
    assert_eq!(
        denials(&app, "user:li", &format!("request:{rid}"))
            .await
            .len(),
        1
    );

    // A supervisor sees it awaiting a decision, and approves it.
    let boss = authed(&user_token(&app.accounts, "boss", "supervisor").await);
    let (s, waiting) = call(&boss, "GET", app.api("/requests?awaiting=true"), None).await;
    assert_eq!(s, StatusCode::OK, "{waiting}");
    assert_eq!(waiting["items"][0]["id"], rid.as_str(), "{waiting}");
    let (s, waiting) = call(tester, "GET", app.api("/requests?awaiting=true"), None).await;
    assert_eq!(s, StatusCode::OK, "{waiting}");
    assert!(
        waiting["items"].as_array().unwrap().is_empty(),
        "not for its requester: {waiting}"
    );
    let (s, ok) = call(
        &boss,
        "POST",
        approve.clone(),
        Some(json!({"note": "for the hearing"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{ok}");
    assert_eq!(ok["state"], "approved");
    assert_eq!(ok["decided_by"], "boss");
    assert_eq!(ok["decision_note"], "for the hearing");
    let decided =
        custody_core::Timestamp::parse_rfc3339(ok["decided_at"].as_str().unwrap()).unwrap();
    let expires =
        custody_core::Timestamp::parse_rfc3339(ok["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(
        expires.unix_micros() - decided.unix_micros(),
        24 * 3600 * 1_000_000
    );
    let (s, again) = call(&boss, "POST", approve, Some(json!({}))).await;
    assert_eq!(s, StatusCode::CONFLICT, "decided once: {again}");

    // The approval opens the original for its requester, as often as needed, with the right bytes.
    for _ in 0..2 {
        let r = tester.get(content.clone()).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.bytes().await.unwrap().as_ref(), data.as_slice());
    }
    // Only for its requester: the approver has asked for nothing.
    let (s, _) = call(&boss, "GET", content.clone(), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Each download is a ledger event naming the requester.
    app.settle_ledger().await;
    let (_, h) = call(
        tester,
        "GET",
        app.api(&format!("/evidence/{id}/history")),
        None,
    )
    .await;
    let downloads: Vec<&str> = h["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"]["kind"] == "download")
        .map(|e| e["event"]["actor"].as_str().unwrap())
        .collect();
    assert_eq!(downloads, ["user:tester", "user:tester"], "{h}");

    // Who may read the request: its requester and supervisors, not another handler.
    let one = app.api(&format!("/requests/{rid}"));
    let (s, r) = call(tester, "GET", one.clone(), None).await;
    assert_eq!((s, r["state"].as_str()), (StatusCode::OK, Some("approved")));
    let (s, _) = call(&boss, "GET", one.clone(), None).await;
    assert_eq!(s, StatusCode::OK);
    let handler = authed(&user_token(&app.accounts, "wang", "case_handler").await);
    let (s, _) = call(&handler, "GET", one, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, mine) = call(&handler, "GET", app.api("/requests"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(mine["items"].as_array().unwrap().is_empty(), "{mine}");
    let (s, mine) = call(
        tester,
        "GET",
        app.api("/requests?mine=true&state=approved"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(mine["items"].as_array().unwrap().len(), 1, "{mine}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_download_needs_a_second_supervisors_approval_on_sqlite_and_disk() {
    a_download_needs_a_second_supervisors_approval(Backends::Embedded).await;
}

#[tokio::test]
async fn a_download_needs_a_second_supervisors_approval_on_postgres_and_s3() {
    a_download_needs_a_second_supervisors_approval(Backends::Real).await;
}

async fn refused_withdrawn_and_expired_requests_open_nothing(b: Backends) {
    let app = spawn_with_ttl(b, Duration::from_secs(3)).await;
    let data = bytes(20_000, 4);
    let id = upload(&app, &data, "ZFY002").await;
    let content = app.api(&format!("/evidence/{id}/content"));
    let tester = &app.http_client;
    let boss = authed(&user_token(&app.accounts, "boss", "supervisor").await);
    let ask = || {
        call(
            tester,
            "POST",
            app.api("/requests"),
            Some(json!({"kind": "download", "evidence_id": id, "reason": "appeal"})),
        )
    };

    // Refused (a refusal says why).
    let (_, r) = ask().await;
    let rid = r["id"].as_str().unwrap();
    let refuse = app.api(&format!("/requests/{rid}/refuse"));
    let (s, _) = call(&boss, "POST", refuse.clone(), Some(json!({}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, r) = call(
        &boss,
        "POST",
        refuse,
        Some(json!({"note": "no hearing is scheduled"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["state"], "refused");
    let (s, _) = call(tester, "GET", content.clone(), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = call(
        &boss,
        "POST",
        app.api(&format!("/requests/{rid}/approve")),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "a refused request stays refused");

    // Withdrawn: only by its requester, and then it can no longer be approved.
    let (_, r) = ask().await;
    let rid = r["id"].as_str().unwrap();
    let withdraw = app.api(&format!("/requests/{rid}/withdraw"));
    let (s, _) = call(&boss, "POST", withdraw.clone(), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, r) = call(tester, "POST", withdraw, None).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["state"], "withdrawn");
    let (s, _) = call(
        &boss,
        "POST",
        app.api(&format!("/requests/{rid}/approve")),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = call(tester, "GET", content.clone(), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Approved, then expired after approval_ttl.
    let (_, r) = ask().await;
    let rid = r["id"].as_str().unwrap();
    let (s, _) = call(
        &boss,
        "POST",
        app.api(&format!("/requests/{rid}/approve")),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let r = tester.get(content.clone()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().as_ref(), data.as_slice());
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let (s, body) = call(tester, "GET", content, None).await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "an expired approval opens nothing: {body}"
    );

    // Malformed requests are refused with what was wrong.
    for (bad, needle) in [
        (
            json!({"kind": "copy", "evidence_id": id, "reason": "x"}),
            "kind",
        ),
        (json!({"kind": "download", "reason": "x"}), "evidence_id"),
        (
            json!({"kind": "download", "evidence_id": id, "reason": "  "}),
            "reason",
        ),
        (
            json!({"kind": "export", "evidence_id": id, "reason": "x"}),
            "case_id",
        ),
    ] {
        let (s, body) = call(tester, "POST", app.api("/requests"), Some(bad)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(needle),
            "{body}"
        );
    }
    let (s, _) = call(
        tester,
        "POST",
        app.api("/requests"),
        Some(json!({"kind": "download", "evidence_id": custody_core::EvidenceId::new().to_string(), "reason": "x"})),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    app.shutdown().await;
}

#[tokio::test]
async fn refused_withdrawn_and_expired_requests_open_nothing_on_sqlite_and_disk() {
    refused_withdrawn_and_expired_requests_open_nothing(Backends::Embedded).await;
}

#[tokio::test]
async fn refused_withdrawn_and_expired_requests_open_nothing_on_postgres_and_s3() {
    refused_withdrawn_and_expired_requests_open_nothing(Backends::Real).await;
}

async fn an_export_request_for_a_case_is_approved_by_another_supervisor(b: Backends) {
    let app = spawn_app(b).await;
    let tester = &app.http_client;
    let (s, case) = call(
        tester,
        "POST",
        app.api("/cases"),
        Some(json!({"case_no": "深福城执罚〔2026〕077号", "title": "占道经营"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{case}");
    let case_id = custody_core::CaseId::parse(case["id"].as_str().unwrap()).unwrap();
    let me = app.user("tester").await;
    let refused = app.requests.require_export(&me, case_id).await.unwrap_err();
    assert!(
        refused.to_string().contains("POST /api/v1/requests"),
        "{refused}"
    );

    // Someone who cannot read the case cannot ask to export it.
    let stranger = authed(&user_token(&app.accounts, "zhao", "case_handler").await);
    let (s, _) = call(
        &stranger,
        "POST",
        app.api("/requests"),
        Some(json!({"kind": "export", "case_id": case_id, "reason": "x"})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Nor may a commander ask for a copy at all.
    let cmd = authed(&user_token(&app.accounts, "cmd", "commander").await);
    let (s, _) = call(
        &cmd,
        "POST",
        app.api("/requests"),
        Some(json!({"kind": "export", "case_id": case_id, "reason": "x"})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    let (s, r) = call(
        tester,
        "POST",
        app.api("/requests"),
        Some(json!({"kind": "export", "case_id": case_id, "reason": "transfer to the court"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    assert_eq!(
        (r["kind"].as_str(), r["state"].as_str()),
        (Some("export"), Some("pending"))
    );
    assert_eq!(r["case_id"], case_id.to_string());
    let rid = r["id"].as_str().unwrap();
    assert!(app.requests.require_export(&me, case_id).await.is_err());
    let (s, _) = call(
        tester,
        "POST",
        app.api(&format!("/requests/{rid}/approve")),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let boss = authed(&user_token(&app.accounts, "boss", "supervisor").await);
    let (s, r) = call(
        &boss,
        "POST",
        app.api(&format!("/requests/{rid}/approve")),
        Some(json!({"note": "ok"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let ok = app.requests.require_export(&me, case_id).await.unwrap();
    assert_eq!(ok.id.to_string(), rid);
    // An export approval does not open downloads, and another user's export stays closed.
    let boss_user = app.user("boss").await;
    assert!(
        app.requests
            .require_export(&boss_user, case_id)
            .await
            .is_err()
    );
    let audited = denials(&app, "user:tester", &format!("case:{case_id}")).await;
    assert!(
        audited.iter().any(|(a, _)| a == "case.export"),
        "{audited:?}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn an_export_request_for_a_case_is_approved_by_another_supervisor_on_sqlite_and_disk() {
    an_export_request_for_a_case_is_approved_by_another_supervisor(Backends::Embedded).await;
}

#[tokio::test]
async fn an_export_request_for_a_case_is_approved_by_another_supervisor_on_postgres_and_s3() {
    an_export_request_for_a_case_is_approved_by_another_supervisor(Backends::Real).await;
}
