//! `spawn_app()`: a real server in this process on port 0, with a fresh database and object store.
#![allow(dead_code, clippy::unwrap_used)]

use custody::client::{Source, Uploader};
use custody::config::Config;
use custody_ingest::Ingest;
use custody_proto::v1 as pb;
use custody_store::testing;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backends {
    /// The embedded defaults: SQLite and local disk.
    Embedded,
    /// PostgreSQL and the S3 test server.
    Real,
}

pub struct TestApp {
    pub grpc: std::net::SocketAddr,
    /// The embedded MQTT endpoint, when it runs.
    pub mqtt: Option<std::net::SocketAddr>,
    pub http: String,
    pub ingest: Ingest,
    pub data_dir: PathBuf,
    /// The configuration the server runs with.
    pub config: Config,
    /// The ledger's verifier key (Ed25519, signed-note text form).
    pub verifier_key: String,
    /// The credential of station `ST-01`, registered at start.
    pub station_credential: String,
    pub stations: custody_ingest::Stations,
    pub devices: custody_tracking::Devices,
    pub tracking: custody_tracking::Tracking,
    /// Sends the session token of `tester`, a user holding every role but officer's.
    pub http_client: reqwest::Client,
    /// `tester`'s session token.
    pub token: String,
    /// Accounts, officers and cases, for tests that set up people directly.
    pub accounts: custody_cases::Accounts,
    pub officers: custody_cases::Officers,
    /// Download and export requests (approval before copy).
    pub requests: custody_cases::Requests,
    /// The retention worker of the running server.
    pub retention: custody_cases::Retention,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
}

pub fn init_test_logging() {
    if std::env::var_os("TEST_LOG").is_some() {
        custody::init_logging("info", false);
    }
}

pub fn config_for(backends: Backends, data_dir: PathBuf) -> Config {
    custody::admin::test_keys(&data_dir).unwrap();
    let mut c = Config {
        data_dir,
        http_listen: "127.0.0.1:0".parse().unwrap(),
        grpc_listen: "127.0.0.1:0".parse().unwrap(),
        mqtt_listen: "127.0.0.1:0".parse().unwrap(),
        max_upload_size: bytesize::ByteSize::mib(256),
        upload_flush_bytes: bytesize::ByteSize::mib(1),
        upload_part_size: bytesize::ByteSize::mib(5),
        ..Config::default()
    };
    if backends == Backends::Real {
        let s3 = testing::s3_test_server();
        c.object_store = Some(format!("s3://{}/{}", s3.bucket, rand::random::<u32>()));
        c.s3_endpoint = Some(s3.endpoint);
        c.s3_access_key_id = Some(s3.access_key);
        c.s3_secret_access_key = Some(s3.secret_key);
        c.s3_allow_http = true;
    }
    c
}

pub async fn spawn_app(backends: Backends) -> TestApp {
    spawn_configured(backends, |_| {}).await
}

/// Like [`spawn_app`], with the configuration changed by `adjust` first.
pub async fn spawn_configured(backends: Backends, adjust: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(backends, dir.path().join("data"));
    adjust(&mut config);
    if backends == Backends::Real {
        config.database_url = Some(testing::fresh_postgres_url().await);
    }
    spawn_with(config, Some(dir)).await
}

pub async fn spawn_with(config: Config, dir: Option<tempfile::TempDir>) -> TestApp {
    init_test_logging();
    let data_dir = config.data_dir.clone();
    let verifier_key = custody::admin::test_keys(&data_dir).unwrap();
    let app = custody::build(config.clone()).await.expect("server builds");
    let addrs = app.addrs().unwrap();
    let ingest = app.ingest().clone();
    let stations = app.stations().clone();
    let devices = app.devices().clone();
    let tracking = app.tracking().clone();
    let accounts = app.accounts().clone();
    let officers = app.officers().clone();
    let requests = app.requests().clone();
    let retention = app.retention().clone();
    let token = user_token(
        &accounts,
        "tester",
        "case_handler,supervisor,auditor,commander,admin",
    )
    .await;
    let st01 = custody_core::StationId::parse("ST-01").unwrap();
    // A restarted server (same data_dir) has the station already: issue it a new credential.
    let station_credential = match stations.add(st01.clone(), "test station").await {
        Ok(c) => c.token(),
        Err(_) => stations.rotate(st01).await.unwrap().token(),
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run(async move {
        let _ = rx.await;
    }));
    TestApp {
        grpc: addrs.grpc,
        mqtt: addrs.mqtt,
        http: format!("http://{}", addrs.http),
        ingest,
        data_dir,
        config,
        verifier_key,
        station_credential,
        stations,
        devices,
        tracking,
        http_client: authed(&token),
        token,
        accounts,
        officers,
        requests,
        retention,
        stop: Some(tx),
        task: Some(task),
        _dir: dir,
    }
}

impl TestApp {
    /// An upload client authenticated as station `ST-01`.
    pub async fn uploader(&self) -> Uploader {
        Uploader::connect_addr(self.grpc, &self.station_credential)
            .await
            .unwrap()
    }

    /// Registers another station and returns its credential.
    pub async fn add_station(&self, id: &str) -> String {
        self.stations
            .add(custody_core::StationId::parse(id).unwrap(), id)
            .await
            .unwrap()
            .token()
    }

    /// Registers a recorder and returns its credential `<id>:<secret hex>`.
    pub async fn add_device(&self, id: &str) -> String {
        self.devices
            .add(custody_core::DeviceId::parse(id).unwrap(), id)
            .await
            .unwrap()
            .token()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http_client
            .get(format!("{}{path}", self.http))
            .send()
            .await
            .unwrap()
    }

    /// The URL of an `/api/v1` route.
    pub fn api(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.http)
    }

    /// A user account as the services see it.
    pub async fn user(&self, name: &str) -> custody_cases::User {
        let name = custody_core::access::Username::parse(name).unwrap();
        self.accounts.user(&name).await.unwrap().0
    }

    /// Approval before copy: has `tester` ask to download the original of `evidence_id` and a second
    /// supervisor approve it, so that `GET …/content` answers for `tester` (for `approval_ttl`).
    pub async fn approve_download(&self, evidence_id: &str) -> String {
        self.approve_download_for(&self.http_client, evidence_id)
            .await
    }

    /// Like [`TestApp::approve_download`], for the user behind `requester`. The approver is `approver`,
    /// a supervisor who is nobody's requester (a supervisor may not approve their own request).
    pub async fn approve_download_for(
        &self,
        requester: &reqwest::Client,
        evidence_id: &str,
    ) -> String {
        let r = requester
            .post(self.api("/requests"))
            .json(&serde_json::json!({
                "kind": "download",
                "evidence_id": evidence_id,
                "reason": "test needs the original",
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "asking for a download");
        let r: serde_json::Value = r.json().await.unwrap();
        let id = r["id"].as_str().unwrap().to_string();
        let approver = authed(&user_token(&self.accounts, "approver", "supervisor").await);
        let a = approver
            .post(self.api(&format!("/requests/{id}/approve")))
            .json(&serde_json::json!({"note": "approved for the test"}))
            .send()
            .await
            .unwrap();
        assert_eq!(a.status(), 200, "approving a download");
        id
    }

    /// Waits until every queued ledger event is in the log under a signed checkpoint.
    pub async fn settle_ledger(&self) {
        let ledger = self.ingest.ledger();
        for _ in 0..500 {
            let s = ledger.state().await.unwrap();
            let pending = ledger.pending().await.unwrap();
            if pending == 0 && s.checkpoint_size == s.size {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("the ledger did not settle in 10 s");
    }

    /// Stops the server gracefully and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

/// A session token of user `name` with `roles` (created on first use; a restarted server keeps it).
pub async fn user_token(accounts: &custody_cases::Accounts, name: &str, roles: &str) -> String {
    user_with(accounts, name, roles, None).await
}

/// Like [`user_token`], for an account bound to an officer's badge.
pub async fn user_with(
    accounts: &custody_cases::Accounts,
    name: &str,
    roles: &str,
    badge: Option<&str>,
) -> String {
    let username = custody_core::access::Username::parse(name).unwrap();
    let _ = accounts
        .add_user(custody_cases::NewUser {
            username: username.clone(),
            display_name: name.to_string(),
            roles: custody_core::access::Roles::parse(roles).unwrap(),
            badge: badge.map(|b| custody_core::BadgeNo::parse(b).unwrap()),
            password: format!("{name}-password"),
        })
        .await;
    accounts.issue_for(&username, None).await.unwrap().token
}

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

/// Deterministic test bytes.
pub fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed)
        .collect()
}

pub fn source(data: &[u8]) -> Source {
    let data = Arc::new(data.to_vec());
    Source::Generated(Arc::new(move |off, len| {
        let off = off as usize;
        bytes::Bytes::copy_from_slice(&data[off..off + len])
    }))
}

/// A valid declaration of `data`.
pub fn begin_request(data: &[u8], device: &str) -> pb::BeginRequest {
    let d = custody_core::ContentHasher::digest(data, true);
    pb::BeginRequest {
        device_id: device.into(),
        station_id: "ST-01".into(),
        file_name: format!("{device}_20261122083000_0001.MP4"),
        size: data.len() as i64,
        sha256: d.sha256.to_hex(),
        sm3: d.sm3.unwrap().to_hex(),
        capture_start: Some(prost_types::Timestamp {
            seconds: 1_795_000_000,
            nanos: 0,
        }),
        importance: pb::Importance::Important.into(),
        media_type: pb::MediaType::Video.into(),
        officer_badge: String::new(),
        clock_offset_ms: None,
    }
}

pub fn session(r: pb::begin_response::Result) -> pb::UploadSession {
    match r {
        pb::begin_response::Result::Session(s) => s,
        other => panic!("expected an upload session, got {other:?}"),
    }
}

/// An instant as RFC 3339, from Unix seconds.
pub fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap()
        .to_rfc3339()
}

/// A mono WAV of `seconds` made by the ffmpeg command-line tool; `freq` makes each file's bytes differ.
pub fn wav(dir: &Path, seconds: u32, freq: u32) -> Vec<u8> {
    let out = dir.join(format!("tone-{freq}.wav"));
    let o = Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-hide_banner",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg(format!(
            "sine=frequency={freq}:sample_rate=8000:duration={seconds}"
        ))
        .args(["-ac", "1", "-c:a", "pcm_s16le"])
        .arg(&out)
        .output()
        .expect("ffmpeg runs (Debian package ffmpeg)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read(out).unwrap()
}

/// One JSON API call: the status and the body (JSON, or the text as a JSON string).
pub async fn call(
    c: &reqwest::Client,
    method: &str,
    url: String,
    body: Option<serde_json::Value>,
) -> (reqwest::StatusCode, serde_json::Value) {
    let mut req = match method {
        "GET" => c.get(url),
        "POST" => c.post(url),
        "PUT" => c.put(url),
        "PATCH" => c.patch(url),
        "DELETE" => c.delete(url),
        m => panic!("method {m}"),
    };
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}
