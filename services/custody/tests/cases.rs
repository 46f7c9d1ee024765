//! People, access and cases through the real server: accounts and sessions, the officer registry and
//! recorder check-outs that attribute footage, the role boundaries (each refusal audited), and a case
//! that moves along its status flow only when its continuous steps are recorded without unexplained
//! gaps, on the embedded backends and on PostgreSQL + S3. Recordings are real WAV files made by ffmpeg,
//! probed by the media jobs for their true durations.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::*;
use custody_proto::v1 as pb;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

/// Capture times are around this instant (2026-11-18T05:46:40Z).
const T0: i64 = 1_795_000_000;

/// How the API writes an instant.
fn ts(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

fn micros(secs: i64) -> i64 {
    secs * 1_000_000
}

/// Uploads a recording as a station does: `device`'s file captured at `at` (by its clock).
async fn upload(app: &TestApp, data: &[u8], device: &str, at: i64) -> String {
    let mut up = app.uploader().await;
    let mut req = begin_request(data, device);
    req.file_name = format!("{device}_{at}_0001.WAV");
    req.capture_start = Some(prost_types::Timestamp {
        seconds: at,
        nanos: 0,
    });
    req.media_type = pb::MediaType::Audio.into();
    up.upload(req, &source(data)).await.unwrap().evidence_id
}

/// A server whose coverage reports gaps longer than 2 s.
async fn spawn(backends: Backends) -> TestApp {
    spawn_configured(backends, |c| c.coverage_min_gap = Duration::from_secs(2)).await
}

/// Waits until the media jobs have probed every listed item (durations are known).
async fn probed(app: &TestApp, ids: &[&str]) {
    for _ in 0..600 {
        let page: Value = app
            .get("/api/v1/evidence?limit=1000")
            .await
            .json()
            .await
            .unwrap();
        let done = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| ids.contains(&e["id"].as_str().unwrap()) && e["media"]["state"] == "ready")
            .count();
        if done == ids.len() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the media jobs did not probe {ids:?} in 60 s");
}

async fn login(app: &TestApp, user: &str, password: &str) -> reqwest::Client {
    let (status, body) = call(
        &reqwest::Client::new(),
        "POST",
        format!("{}/api/v1/sessions", app.http),
        Some(json!({"username": user, "password": password})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    authed(body["token"].as_str().unwrap())
}

fn ids(list: &Value) -> BTreeSet<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

async fn people_cases_and_coverage(backends: Backends) {
    let app = spawn(backends).await;
    let admin = app.http_client.clone();
    let api = |p: &str| format!("{}/api/v1{p}", app.http);

    // The registry and the accounts, made by an administrator.
    for (badge, name) in [("0001", "张三"), ("0002", "李四")] {
        let (s, b) = call(
            &admin,
            "PUT",
            api(&format!("/officers/{badge}")),
            Some(json!({"name": name, "unit": "福田中队"})),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    for (user, roles, badge) in [
        ("zhang", vec!["officer"], Some("0001")),
        ("li", vec!["officer"], Some("0002")),
        ("handler", vec!["case_handler"], None),
        ("cmd", vec!["commander"], None),
        ("aud", vec!["auditor"], None),
    ] {
        let (s, b) = call(
            &admin,
            "POST",
            api("/users"),
            Some(json!({"username": user, "display_name": user, "roles": roles, "badge": badge, "password": format!("{user}-password")})),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
    let zhang = login(&app, "zhang", "zhang-password").await;
    let handler = login(&app, "handler", "handler-password").await;
    let cmd = login(&app, "cmd", "cmd-password").await;
    let aud = login(&app, "aud", "aud-password").await;

    // Recorders are checked out an hour before the shift; a second check-out of a held one is refused.
    for (dev, badge) in [("REC-A", "0001"), ("REC-B", "0002")] {
        let (s, b) = call(
            &admin,
            "POST",
            api(&format!("/recorders/{dev}/checkout")),
            Some(json!({"badge": badge, "at": rfc3339(T0 - 3600)})),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
    let (s, b) = call(
        &admin,
        "POST",
        api("/recorders/REC-A/checkout"),
        Some(json!({"badge": "0002"})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert!(b.to_string().contains("REC-A"), "{b}");

    // The shift: officer 0001 records 0–10 s, 10–20 s and 20–30 s of the inspection; 0002 records too;
    // and REC-A holds a recording from before anyone checked it out.
    let dir = tempfile::tempdir().unwrap();
    let a1 = upload(&app, &wav(dir.path(), 10, 300), "REC-A", T0).await;
    let a3 = upload(&app, &wav(dir.path(), 10, 400), "REC-A", T0 + 10).await;
    let a2 = upload(&app, &wav(dir.path(), 10, 500), "REC-A", T0 + 20).await;
    let b1 = upload(&app, &wav(dir.path(), 10, 600), "REC-B", T0).await;
    let early = upload(&app, &wav(dir.path(), 2, 700), "REC-A", T0 - 7200).await;
    probed(&app, &[&a1, &a2, &a3, &b1, &early]).await;

    // Attribution follows the register.
    let (_, e) = call(&admin, "GET", api(&format!("/evidence/{a1}")), None).await;
    assert_eq!(e["attribution"]["officer"], "0001", "{e}");
    assert_eq!(e["attribution"]["source"], "checkout", "{e}");
    let (_, e) = call(&admin, "GET", api(&format!("/evidence/{early}")), None).await;
    assert_eq!(e["attribution"]["source"], "none", "{e}");
    assert!(e["attribution"]["officer"].is_null(), "{e}");
    // Without a check-out, the officer the station read from the recorder is used, with the clock
    // offset it measured.
    let data = wav(dir.path(), 2, 800);
    let mut req = begin_request(&data, "REC-C");
    req.file_name = "REC-C_1.WAV".into();
    req.media_type = pb::MediaType::Audio.into();
    req.officer_badge = "0002".into();
    req.clock_offset_ms = Some(5_000);
    let c1 = app
        .uploader()
        .await
        .upload(req, &source(&data))
        .await
        .unwrap()
        .evidence_id;
    let (_, e) = call(&admin, "GET", api(&format!("/evidence/{c1}")), None).await;
    assert_eq!(e["attribution"]["source"], "recorder", "{e}");
    assert_eq!(e["attribution"]["officer"], "0002", "{e}");
    assert_eq!(e["attribution"]["reported"], "0002", "{e}");
    assert_eq!(e["attribution"]["clock_offset_ms"], 5_000, "{e}");
    assert_eq!(e["attribution"]["conflict"], false, "{e}");

    // An officer sees their own footage only; reading another officer's is refused and audited.
    let (s, mine) = call(&zhang, "GET", api("/evidence?limit=100"), None).await;
    assert_eq!(s, StatusCode::OK, "{mine}");
    assert_eq!(
        ids(&mine),
        BTreeSet::from([a1.clone(), a2.clone(), a3.clone()])
    );
    for path in [
        format!("/evidence/{b1}"),
        format!("/evidence/{b1}/content"),
        format!("/evidence/{b1}/history"),
    ] {
        let (s, b) = call(&zhang, "GET", api(&path), None).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}: {b}");
    }
    // Their own footage still needs a second supervisor's approval before the original leaves.
    let (s, _) = call(&zhang, "GET", api(&format!("/evidence/{a1}/content")), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    app.approve_download_for(&zhang, &a1).await;
    let bytes = zhang
        .get(api(&format!("/evidence/{a1}/content")))
        .send()
        .await
        .unwrap();
    assert_eq!(bytes.status(), StatusCode::OK);
    let (s, log) = call(
        &aud,
        "GET",
        api("/audit?actor=user:zhang&outcome=denied"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{log}");
    let targets: Vec<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["target"].as_str().unwrap())
        .collect();
    assert_eq!(
        targets
            .iter()
            .filter(|t| **t == format!("evidence:{b1}"))
            .count(),
        3,
        "{log}"
    );

    // A commander does not read evidence; an auditor changes nothing; only admins manage people.
    let (s, _) = call(&cmd, "GET", api("/evidence"), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = call(&cmd, "GET", api("/positions/latest"), None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(
        &aud,
        "POST",
        api("/cases"),
        Some(json!({"case_no": "X-1", "title": "t"})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = call(&aud, "POST", api("/geofences"), Some(json!({"name": "n", "geometry": {"type": "Polygon", "coordinates": [[[114.0, 22.5], [114.1, 22.5], [114.1, 22.6], [114.0, 22.5]]]}}))).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = call(&handler, "POST", api("/users"), Some(json!({"username": "eve", "display_name": "e", "roles": ["admin"], "password": "eve-password"}))).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = call(&aud, "GET", api("/evidence"), None).await;
    assert_eq!(s, StatusCode::OK);

    // A case: the flow moves one step at a time.
    let (s, case) = call(&handler, "POST", api("/cases"), Some(json!({"case_no": "深福城执罚〔2026〕001号", "title": "占道经营", "procedure": "general"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{case}");
    assert_eq!(case["status"], "accepted");
    let id = case["id"].as_str().unwrap().to_string();
    let (s, b) = call(
        &handler,
        "POST",
        api(&format!("/cases/{id}/status")),
        Some(json!({"status": "review"})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert!(b.to_string().contains("only to filed"), "{b}");
    for st in ["filed", "investigating"] {
        let (s, b) = call(
            &handler,
            "POST",
            api(&format!("/cases/{id}/status")),
            Some(json!({"status": st})),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    // Another handler's case is not theirs: the commander (no case role) is refused too.
    let (s, _) = call(&cmd, "GET", api(&format!("/cases/{id}")), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // The on-site inspection 0–30 s with officer 0001, needing continuous recording.
    let (s, step) = call(&handler, "POST", api(&format!("/cases/{id}/steps")), Some(json!({
        "title": "现场检查", "from": rfc3339(T0), "to": rfc3339(T0 + 30), "officers": ["0001"], "continuous": true,
        "place": {"name": "深南大道 1 号", "lat": 22.54, "lon": 114.05, "radius_m": 200}
    }))).await;
    assert_eq!(s, StatusCode::CREATED, "{step}");
    let step_id = step["id"].as_str().unwrap().to_string();

    // The handler cannot see footage before it is linked, may link what the step's officer recorded,
    // and may not link footage of an officer who was not there.
    let (s, _) = call(&handler, "GET", api(&format!("/evidence/{a1}")), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    for e in [&a1, &a2] {
        let (s, b) = call(
            &handler,
            "POST",
            api(&format!("/cases/{id}/links")),
            Some(json!({"evidence_id": e, "step_id": step_id, "role": "现场检查"})),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
    let (s, b) = call(
        &handler,
        "POST",
        api(&format!("/cases/{id}/links")),
        Some(json!({"evidence_id": b1, "role": "现场检查"})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    let (s, _) = call(&handler, "GET", api(&format!("/evidence/{a1}")), None).await;
    assert_eq!(s, StatusCode::OK);

    // Coverage: 10–20 s is a gap, and the unlinked a3 fills it.
    let (s, cov) = call(&handler, "GET", api(&format!("/cases/{id}/coverage")), None).await;
    assert_eq!(s, StatusCode::OK, "{cov}");
    let st = &cov["steps"][0];
    let gaps = st["officers"][0]["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{cov}");
    assert_eq!(gaps[0]["interval"]["start"], ts(T0 + 10).as_str(), "{cov}");
    assert_eq!(gaps[0]["interval"]["end"], ts(T0 + 20).as_str(), "{cov}");
    assert_eq!(cov["blocking_gaps"], 1);
    assert_eq!(st["suggestions"][0]["evidence_id"], a3.as_str(), "{cov}");
    assert_eq!(
        st["suggestions"][0]["fills_gap_us"],
        json!(micros(10)),
        "{cov}"
    );

    // Review waits for the gap.
    let (s, b) = call(
        &handler,
        "POST",
        api(&format!("/cases/{id}/status")),
        Some(json!({"status": "review"})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert!(b.to_string().contains("unexplained recording gap"), "{b}");

    // Linking the suggestion closes it; unlinking 20–30 s opens another, which an explanation covers.
    let (s, b) = call(
        &handler,
        "POST",
        api(&format!("/cases/{id}/links")),
        Some(json!({"evidence_id": a3, "step_id": step_id, "role": "现场检查"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (_, cov) = call(&handler, "GET", api(&format!("/cases/{id}/coverage")), None).await;
    assert_eq!(cov["blocking_gaps"], 0, "{cov}");
    assert_eq!(
        cov["steps"][0]["officers"][0]["covered_us"],
        json!(micros(30)),
        "{cov}"
    );
    let (s, b) = call(
        &handler,
        "DELETE",
        api(&format!("/cases/{id}/links/{a2}")),
        Some(json!({"reason": "linked to the wrong step"})),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    let (_, cov) = call(&handler, "GET", api(&format!("/cases/{id}/coverage")), None).await;
    assert_eq!(cov["blocking_gaps"], 1, "{cov}");
    let (s, b) = call(&handler, "POST", api(&format!("/cases/{id}/steps/{step_id}/explanations")), Some(json!({
        "badge": "0001", "from": rfc3339(T0 + 20), "to": rfc3339(T0 + 30), "reason": "当事人情绪激动，暂停录像后恢复"
    }))).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (_, cov) = call(&handler, "GET", api(&format!("/cases/{id}/coverage")), None).await;
    assert_eq!(cov["blocking_gaps"], 0, "{cov}");
    assert_eq!(
        cov["steps"][0]["officers"][0]["gaps"][0]["explained"], true,
        "{cov}"
    );
    let (s, b) = call(
        &handler,
        "POST",
        api(&format!("/cases/{id}/status")),
        Some(json!({"status": "review", "note": "提交法制审核"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["status"], "review");
    let (_, hist) = call(&handler, "GET", api(&format!("/cases/{id}/history")), None).await;
    let path: Vec<&str> = hist
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["to"].as_str().unwrap())
        .collect();
    assert_eq!(path, ["accepted", "filed", "investigating", "review"]);

    // Links and unlinks are ledger events of the item, naming the case and the handler.
    app.settle_ledger().await;
    let (s, h) = call(&admin, "GET", api(&format!("/evidence/{a2}/history")), None).await;
    assert_eq!(s, StatusCode::OK, "{h}");
    let events: Vec<(String, String)> = h["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event"]["kind"].as_str().unwrap().to_string(),
                e["event"]["actor"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        events.contains(&("link".into(), "user:handler".into())),
        "{h}"
    );
    assert!(
        events.contains(&("unlink".into(), "user:handler".into())),
        "{h}"
    );
    let link = h["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"]["kind"] == "link")
        .unwrap();
    assert!(
        link["event"]["detail"]
            .as_str()
            .unwrap()
            .contains("深福城执罚〔2026〕001号"),
        "{link}"
    );
    assert_eq!(link["event"]["officer"], "0001", "{link}");

    // Returning a recorder and a late check-out entry re-attribute footage.
    let (s, b) = call(
        &admin,
        "POST",
        api("/recorders/REC-A/return"),
        Some(json!({"at": rfc3339(T0 + 3600)})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = call(
        &admin,
        "POST",
        api("/recorders/REC-A/checkout"),
        Some(json!({"badge": "0002", "at": rfc3339(T0 - 8000)})),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::CONFLICT,
        "a check-out may not overlap another: {b}"
    );
    let (_, e) = call(&admin, "GET", api(&format!("/evidence/{a1}")), None).await;
    assert_eq!(e["attribution"]["officer"], "0001");

    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn people_cases_and_coverage_on_embedded_backends() {
    people_cases_and_coverage(Backends::Embedded).await
}

#[tokio::test(flavor = "multi_thread")]
async fn people_cases_and_coverage_on_postgres_and_s3() {
    people_cases_and_coverage(Backends::Real).await
}

#[tokio::test(flavor = "multi_thread")]
async fn only_a_user_session_opens_the_api_and_a_logout_ends_it() {
    let app = spawn_app(Backends::Embedded).await;
    let api = |p: &str| format!("{}/api/v1{p}", app.http);
    let anon = reqwest::Client::new();
    // Without a token: 401 saying how to log in. Health and the public ledger stay open.
    let (s, b) = call(&anon, "GET", api("/evidence"), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(b.to_string().contains("POST /api/v1/sessions"), "{b}");
    assert_eq!(
        anon.get(format!("{}/healthz", app.http))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_ne!(
        anon.get(api("/ledger/proof/consistency?old=0&new=0"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    // A station's credential is not a user session.
    let (s, b) = call(
        &authed(&app.station_credential),
        "GET",
        api("/stations"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(
        b.to_string().contains("station or recorder credential"),
        "{b}"
    );
    // A wrong password and an unknown user answer alike, and both are audited.
    user_token(&app.accounts, "wang", "officer").await;
    for (u, p) in [
        ("wang", "not-the-password"),
        ("nobody", "whatever-password"),
    ] {
        let (s, b) = call(
            &anon,
            "POST",
            api("/sessions"),
            Some(json!({"username": u, "password": p})),
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert!(b.to_string().contains("wrong user name or password"), "{b}");
    }
    let (_, log) = call(&app.http_client, "GET", api("/audit?outcome=denied"), None).await;
    let logins = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "login")
        .count();
    assert_eq!(logins, 2, "{log}");
    // Log in, use it, log out: the token stops working.
    let wang = login(&app, "wang", "wang-password").await;
    let (s, me) = call(&wang, "GET", api("/me"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(me["roles"], json!(["officer"]));
    let (s, _) = call(&wang, "DELETE", api("/sessions/current"), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = call(&wang, "GET", api("/me"), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Disabling an account ends its sessions.
    let again = login(&app, "wang", "wang-password").await;
    let (s, _) = call(
        &app.http_client,
        "PATCH",
        api("/users/wang"),
        Some(json!({"disabled": true})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(&again, "GET", api("/me"), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = call(
        &anon,
        "POST",
        api("/sessions"),
        Some(json!({"username": "wang", "password": "wang-password"})),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    app.shutdown().await;
}
