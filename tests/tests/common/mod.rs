//! What the end-to-end tests share: the `custody serve` flags that point a server at the real backends.
#![allow(dead_code, clippy::unwrap_used)]

pub mod station;

use custody_store::testing;
use std::path::Path;

/// Roles of the user the end-to-end tests read the API as: everything, read-only.
pub const READER_ROLES: &str = "auditor,commander";

/// An HTTP client that sends `token` as its bearer credential.
pub fn authed(token: &str) -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(h)
        .build()
        .unwrap()
}

/// Sends `req` and returns the status and the body: JSON, or else the text as a JSON string.
pub async fn answer(req: reqwest::RequestBuilder) -> (reqwest::StatusCode, serde_json::Value) {
    let response = req.send().await.unwrap();
    let status = response.status();
    let body = response.bytes().await.unwrap();
    let json = serde_json::from_slice(&body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into()));
    (status, json)
}

/// Keeps a failed test's directory (server and agent logs, data, journal) for a look; called from the
/// `Drop` of a test's rig.
pub fn keep_if_failed(dir: &mut tempfile::TempDir) {
    if std::thread::panicking() {
        dir.disable_cleanup(true);
        eprintln!("kept the failed test's files in {}", dir.path().display());
    }
}

/// Roles of the user who approves the readers' download requests: a supervisor, never the requester.
pub const APPROVER_ROLES: &str = "supervisor";

/// Approval before copy: `requester_token`'s user asks to download the original of `evidence_id` and
/// `approver_token`'s user (another supervisor) approves it, so the original can be fetched.
pub async fn approve_download(
    http: &str,
    requester_token: &str,
    approver_token: &str,
    evidence_id: &str,
) {
    let r = authed(requester_token)
        .post(format!("{http}/api/v1/requests"))
        .json(&serde_json::json!({
            "kind": "download",
            "evidence_id": evidence_id,
            "reason": "end-to-end test compares the bytes",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "asking to download {evidence_id}");
    let r: serde_json::Value = r.json().await.unwrap();
    let id = r["id"].as_str().unwrap();
    let a = authed(approver_token)
        .post(format!("{http}/api/v1/requests/{id}/approve"))
        .json(&serde_json::json!({"note": "approved for the test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(a.status(), 200, "approving the download of {evidence_id}");
}

/// Flags for PostgreSQL (a fresh database) and the S3 test server (a fresh prefix named
/// `prefix-<pid>-<random>`: tests of one process must not share a ledger's tiles), with the S3 secret
/// written to a file in `dir`.
pub async fn real_backend_args(dir: &Path, prefix: &str) -> Vec<String> {
    let s3 = testing::s3_test_server();
    let secret = dir.join("s3-secret");
    std::fs::write(&secret, &s3.secret_key).unwrap();
    vec![
        "--database-url".into(),
        testing::fresh_postgres_url().await,
        "--object-store".into(),
        format!(
            "s3://{}/{prefix}-{}-{:08x}",
            s3.bucket,
            std::process::id(),
            rand::random::<u32>()
        ),
        "--s3-endpoint".into(),
        s3.endpoint,
        "--s3-access-key-id".into(),
        s3.access_key,
        "--s3-secret-access-key-file".into(),
        secret.display().to_string(),
        "--s3-allow-http".into(),
        "true".into(),
    ]
}
