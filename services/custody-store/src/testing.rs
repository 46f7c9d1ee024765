//! Test support: a fresh PostgreSQL database and a fresh S3 key prefix per test, so tests never share
//! state and can run in parallel. Servers come from the environment the test script sets up:
//! `CUSTODY_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`) and
//! `CUSTODY_TEST_S3_ENDPOINT`, `CUSTODY_TEST_S3_BUCKET`, `CUSTODY_TEST_S3_ACCESS_KEY`,
//! `CUSTODY_TEST_S3_SECRET_KEY` (defaults match `scripts/test-servers.sh`).

use crate::BlobConfig;
use rand::Rng;

/// Connection URL of the PostgreSQL server used by tests.
pub fn postgres_admin_url() -> String {
    std::env::var("CUSTODY_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{:08x}",
        std::process::id(),
        rand::rng().random::<u32>()
    )
}

/// Creates an empty database and returns its URL. Databases are named `custody_test_*`; the test script
/// drops leftovers before each run.
pub async fn fresh_postgres_url() -> String {
    use sqlx::Connection;
    let admin = postgres_admin_url();
    let name = unique("custody_test");
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| {
            panic!("tests need PostgreSQL at {admin} (start it with scripts/test-servers.sh): {e}")
        });
    let stmt = format!("CREATE DATABASE {name}");
    sqlx::query(sqlx::AssertSqlSafe(stmt))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("creating test database {name}: {e}"));
    let base = admin
        .rsplit_once('/')
        .map(|(b, _)| b.to_string())
        .unwrap_or(admin);
    format!("{base}/{name}")
}

/// Settings of the S3 test server.
#[derive(Debug, Clone)]
pub struct S3TestServer {
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
}

pub fn s3_test_server() -> S3TestServer {
    let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    S3TestServer {
        endpoint: var("CUSTODY_TEST_S3_ENDPOINT", "http://127.0.0.1:8014"),
        bucket: var("CUSTODY_TEST_S3_BUCKET", "custody-test"),
        access_key: var("CUSTODY_TEST_S3_ACCESS_KEY", "custody"),
        secret_key: var("CUSTODY_TEST_S3_SECRET_KEY", "custody-secret"),
    }
}

/// An S3 blob configuration under a fresh key prefix of the test bucket.
pub fn fresh_s3_config() -> BlobConfig {
    let s = s3_test_server();
    BlobConfig::S3 {
        bucket: s.bucket,
        prefix: unique("t"),
        endpoint: Some(s.endpoint),
        region: "us-east-1".into(),
        access_key_id: Some(s.access_key),
        secret_access_key: Some(s.secret_key),
        allow_http: true,
    }
}

/// A small tmpfs mounted for a test's data directory, unmounted when dropped: the way to make a disk
/// full on purpose. Needs root (CI runs as root); panics saying so otherwise.
#[derive(Debug)]
pub struct SmallDisk {
    pub dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (`mount -o size=`, e.g. `12m`).
    pub fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("making a mount point: {e}"));
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "a disk-full test mounts a tmpfs and must run as root");
        Self { dir }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// A migrated SQLite database in a fresh directory (kept alive by the returned guard).
pub async fn sqlite_metadata() -> (crate::Metadata, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("creating a temporary directory: {e}"));
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let meta = crate::Metadata::connect(&url, 4)
        .await
        .unwrap_or_else(|e| panic!("opening {url}: {e}"));
    (meta, dir)
}

/// A migrated PostgreSQL database of its own.
pub async fn postgres_metadata() -> (crate::Metadata, ()) {
    let url = fresh_postgres_url().await;
    let meta = crate::Metadata::connect(&url, 4)
        .await
        .unwrap_or_else(|e| panic!("opening {url}: {e}"));
    (meta, ())
}

/// Declares each named `async fn(Metadata)` as a test on SQLite (`on_sqlite::name`) and on PostgreSQL
/// (`on_postgres::name`), so every store behaviour is checked on both backends.
#[macro_export]
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite { $( #[tokio::test] async fn $name() { let (m, _keep) = $crate::testing::sqlite_metadata().await; super::$name(m).await } )* }
        mod on_postgres { $( #[tokio::test] async fn $name() { let (m, _keep) = $crate::testing::postgres_metadata().await; super::$name(m).await } )* }
    };
}

/// Runs a statement as it is, bypassing the repository: for tests that play an intruder with database
/// access and check that triggers refuse what the code never does.
pub async fn execute_raw(m: &crate::Metadata, sql: &'static str) -> Result<u64, sqlx::Error> {
    crate::meta::on_pool!(m, p => sqlx::query(sql).execute(p).await.map(|r| r.rows_affected()))
}

/// What [`commit_evidence`] commits: the bytes (their digest becomes the item's identity; the bytes are
/// not stored), the recorder, the capture time and the badge the station reported.
#[derive(Debug, Clone)]
pub struct TestEvidence<'a> {
    pub bytes: &'a [u8],
    pub device: &'a str,
    pub captured_at: custody_core::Timestamp,
    pub reported: Option<&'a str>,
    pub ingested_at: custody_core::Timestamp,
}

/// Commits an evidence row through the same two calls as an upload (insert the upload, commit it), so
/// that attribution, the ingest ledger event and the probe job are made as in production. Panics on
/// failure: it is test setup.
pub async fn commit_evidence(m: &crate::Metadata, e: TestEvidence<'_>) -> custody_core::Evidence {
    use custody_core::*;
    let d = ContentHasher::digest(e.bytes, false);
    fn ok<T>(r: Result<T, String>, what: &str) -> T {
        r.unwrap_or_else(|x| panic!("{what}: {x}"))
    }
    let decl = UploadDeclaration {
        device_id: ok(
            DeviceId::parse(e.device).map_err(|x| x.to_string()),
            "device",
        ),
        station_id: ok(
            StationId::parse("ST-01").map_err(|x| x.to_string()),
            "station",
        ),
        file_name: ok(
            FileName::parse(format!("{}_{}.MP4", e.device, &d.sha256.to_hex()[..12])),
            "file name",
        ),
        size: d.size,
        sha256: d.sha256,
        sm3: None,
        captured_at: e.captured_at,
        importance: Importance::Normal,
        media_type: MediaType::Video,
        officer: e
            .reported
            .map(|b| ok(BadgeNo::parse(b).map_err(|x| x.to_string()), "badge")),
        clock_offset_ms: None,
    };
    let u = Upload {
        id: UploadId::new(),
        declaration: decl.clone(),
        state: UploadState::Committing,
        committed_size: d.size,
        staging: "test".into(),
        failure: None,
        evidence_id: None,
        created_at: e.ingested_at,
        updated_at: e.ingested_at,
        expires_at: Timestamp::from_unix_micros(i64::MAX / 2),
    };
    m.insert_upload(&u)
        .await
        .unwrap_or_else(|x| panic!("inserting an upload: {x}"));
    let candidate = Evidence {
        id: EvidenceId::new(),
        sha256: d.sha256,
        sm3: None,
        size: d.size,
        device_id: decl.device_id,
        station_id: decl.station_id,
        file_name: decl.file_name,
        media_type: decl.media_type,
        importance: decl.importance,
        captured_at: decl.captured_at,
        ingested_at: e.ingested_at,
        attribution: Attribution {
            reported: decl.officer,
            ..Default::default()
        },
        retention: Default::default(),
    };
    m.commit_upload(u.id, &candidate, e.ingested_at)
        .await
        .unwrap_or_else(|x| panic!("committing evidence: {x}"))
        .evidence
}
