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
