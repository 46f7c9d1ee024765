//! Configuration, layered: built-in defaults < `custody.toml` < `CUSTODY_*` environment variables <
//! command-line flags. Every key is documented here and in `deploy/custody.example.toml`.

use bytesize::ByteSize;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything `custody serve` can be told. Keys are the same in the TOML file, as environment variables
/// (upper-cased, prefixed `CUSTODY_`, e.g. `CUSTODY_DATA_DIR`) and as flags (`--data-dir`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory for the embedded defaults: the SQLite database and the local object store.
    pub data_dir: PathBuf,
    /// Address of the HTTP API (REST, health, metrics).
    pub http_listen: SocketAddr,
    /// Address of the gRPC API (uploads).
    pub grpc_listen: SocketAddr,
    /// Address of the embedded MQTT 3.1.1 endpoint where stations publish their slot status and
    /// heartbeats, and recorders their positions, alarms and status (each logs in with its credential
    /// and may publish only under its own topics).
    /// Not opened when `mqtt_url` names an external broker.
    pub mqtt_listen: SocketAddr,
    /// An external MQTT broker (`mqtt://host:port`, e.g. EMQX or Mosquitto) to take station and device
    /// messages from instead of the embedded endpoint, through a shared persistent subscription. The broker's own
    /// authentication and topic ACLs then vouch for who published what.
    pub mqtt_url: Option<String>,
    /// Client id at the external broker. The session is persistent, so give each replica its own.
    pub mqtt_client_id: String,
    /// Shared-subscription group at the external broker: replicas in the same group split the messages.
    pub mqtt_share_group: String,
    /// Messages from the external broker taken but not yet acknowledged (being stored). The broker's
    /// own per-client limit must be at least this high to use it (Mosquitto `max_inflight_messages`,
    /// default 20; EMQX `mqtt.max_inflight`, default 32); positions are group-committed, so a larger
    /// window means larger, cheaper batches.
    pub mqtt_max_in_flight: usize,
    /// User name at the external broker.
    pub mqtt_username: Option<String>,
    /// File holding the password at the external broker; never logged.
    pub mqtt_password_file: Option<PathBuf>,
    /// Telemetry: a fix moving faster than this (m/s) from the device's previous fix is rejected
    /// (`too_fast`). 70 m/s is a car on a highway with margin.
    pub max_speed_mps: f64,
    /// Telemetry: a fix whose time is further than this ahead of the server clock is rejected
    /// (`future_time`).
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
    /// Positions are kept this long, then deleted (PostgreSQL drops whole day partitions). A fix
    /// older than this is rejected on arrival (`too_old`). `0s` keeps positions forever.
    #[serde(with = "humantime_serde")]
    pub position_retention: Duration,
    /// Most positions written in one database transaction.
    pub position_batch_max: usize,
    /// How many live events a command-centre client (WebSocket, gRPC Watch) may fall behind before it
    /// loses some and is told it lagged.
    pub live_queue: usize,
    /// MQTT user names that the HTTP auth endpoint for external brokers (`/api/v1/mqtt/auth`) lets
    /// log in with `mqtt_password_file`'s password and read every device topic: Custody's own bridge.
    pub mqtt_superusers: Vec<String>,
    /// Media jobs (probe, poster, thumbnails, browser proxy) run at once by this process: the CPU
    /// limit of the media pipeline. `0` runs none here (another replica does them).
    pub media_jobs: usize,
    /// Threads each media job's codecs may use; `0` lets ffmpeg choose (about one per core).
    pub media_threads: u32,
    /// Browser-playable originals larger than this still get a smaller proxy for viewing.
    pub media_proxy_above: ByteSize,
    /// Pictures with more pixels than this are not decoded (a corrupt or hostile header); the item is
    /// shown as not playable with the reason.
    pub media_max_pixels: u64,
    /// libx264 preset of browser proxies (`ultrafast` ... `veryslow`): speed against size.
    pub media_proxy_preset: String,
    /// libx264 constant rate factor of browser proxies (0-51; lower is better and larger).
    pub media_proxy_crf: u8,
    /// Scratch space for copies of evidence read from S3 and proxies being made. Default:
    /// `data_dir/media-work`.
    pub media_work_dir: Option<PathBuf>,
    /// A media job whose worker has not renewed its claim for this long is taken over (its process died).
    #[serde(with = "humantime_serde")]
    pub media_lease: Duration,
    /// Claims a media job gets before it is given up (crashes during the job count too).
    pub media_max_attempts: u32,
    /// First retry delay of a media job that failed for a reason that may pass (storage down); it
    /// doubles with each attempt, up to an hour.
    #[serde(with = "humantime_serde")]
    pub media_retry_base: Duration,
    /// How often idle media workers look for new jobs.
    #[serde(with = "humantime_serde")]
    pub media_poll: Duration,
    /// How long a user session (bearer token from `POST /api/v1/sessions`) stays valid.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// Unrecorded stretches of an enforcement step at most this long are not reported as gaps (the
    /// moment between two segments a recorder splits a long recording into).
    #[serde(with = "humantime_serde")]
    pub coverage_min_gap: Duration,
    /// The longest single recording expected; coverage suggestions look this far back before a step.
    #[serde(with = "humantime_serde")]
    pub coverage_max_recording: Duration,
    /// How long an approved download or export request (approval before copy) lets its requester take
    /// copies after a second supervisor approved it; any number of downloads fit in that time, each a
    /// `download` ledger event.
    #[serde(with = "humantime_serde")]
    pub approval_ttl: Duration,
    /// Evidence retention (《公安机关现场执法视音频记录工作规定》: at least six months): how long every item
    /// is kept from capture, in calendar months (`6 months`) or `forever`. The longest applicable period
    /// of an item wins; nothing on legal hold or linked to an open case is ever deleted.
    pub retention_default: String,
    /// How long evidence linked to a case (even a closed one) is kept.
    pub retention_case_evidence: String,
    /// How long footage marked as showing obstruction of duty (妨碍执法) is kept.
    pub retention_obstruction: String,
    /// Named classes an item can be put in, with their periods, e.g. `{ major_incident = "forever",
    /// traffic = "12 months" }`.
    pub retention_classes: std::collections::BTreeMap<String, String>,
    /// How often the retention worker deletes the bytes of items whose retention is over (leaving a
    /// tombstone and a `retention_delete` ledger event). `0s` runs no worker in this process (run
    /// `custody admin retention run` instead, or let another replica do it).
    #[serde(with = "humantime_serde")]
    pub retention_interval: Duration,
    /// Metadata database: `sqlite://PATH` or `postgres://USER@HOST/DB`. Default: SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// Connections in the database pool.
    pub database_max_connections: u32,
    /// Where evidence bytes go: a directory, `file:///DIR`, or `s3://BUCKET[/PREFIX]`.
    /// Default: `objects/` in `data_dir`.
    pub object_store: Option<String>,
    /// S3 endpoint URL for S3-compatible servers (MinIO, Ceph RGW, …). Empty for AWS.
    pub s3_endpoint: Option<String>,
    /// S3 region.
    pub s3_region: String,
    /// S3 access key id.
    pub s3_access_key_id: Option<String>,
    /// S3 secret access key. Prefer `s3_secret_access_key_file`; never logged.
    pub s3_secret_access_key: Option<String>,
    /// File holding the S3 secret access key (e.g. a mounted secret).
    pub s3_secret_access_key_file: Option<PathBuf>,
    /// Allow plain-HTTP S3 endpoints (test servers, private networks).
    pub s3_allow_http: bool,
    /// Largest file an upload may declare.
    pub max_upload_size: ByteSize,
    /// An upload idle this long is expired and its staged bytes removed.
    #[serde(with = "humantime_serde")]
    pub upload_ttl: Duration,
    /// How often abandoned uploads are looked for.
    #[serde(with = "humantime_serde")]
    pub upload_expiry_interval: Duration,
    /// S3 multipart part size (at least 5 MiB): the unit of durability of an upload on S3.
    pub upload_part_size: ByteSize,
    /// On local disk, uploaded bytes are fsynced at least every this many bytes.
    pub upload_flush_bytes: ByteSize,
    /// Compute SM3 for every file, also when the station declared none (国密 deployments).
    pub always_sm3: bool,
    /// The Ed25519 key that signs ledger checkpoints (made by `custody admin keygen`); its verifier key is
    /// read from the same path with `.pub` in place of `.key`. Default: `keys/ledger.key` in `data_dir`.
    /// A missing key stops start-up: the server never makes a key of its own.
    pub ledger_key_file: Option<PathBuf>,
    /// An SM2 key (`custody admin keygen --sm2`) that signs every checkpoint a second time (国密).
    pub ledger_sm2_key_file: Option<PathBuf>,
    /// A ledger batch closes at this many entries...
    pub ledger_batch_max: u32,
    /// ...or after this long.
    #[serde(with = "humantime_serde")]
    pub ledger_batch_interval: Duration,
    /// How long Commit waits for a signed checkpoint covering the new evidence before answering
    /// UNAVAILABLE (retry Commit for the receipt).
    #[serde(with = "humantime_serde")]
    pub ledger_receipt_timeout: Duration,
    /// Log filter, in `tracing` syntax (`info`, `custody_ingest=debug,info`). `RUST_LOG` overrides it.
    pub log: String,
    /// Log format: `text` for people, `json` for collectors.
    pub log_format: LogFormat,
    /// Once listening, write the bound addresses as JSON to this file (for tools and tests using port 0).
    pub ready_file: Option<PathBuf>,
}

/// The flags that name where data lives, shared by every command that opens storage (`serve`,
/// `verify ledger`); each overrides the same key of the file and environment.
#[derive(Debug, Clone, Default, clap::Args, Serialize)]
pub struct StorageArgs {
    /// Directory for the SQLite database and local object store [default: ./custody-data]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Metadata database: sqlite://PATH or postgres://USER@HOST/DB [default: SQLite in the data dir]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// Evidence bytes: a directory, file:///DIR or s3://BUCKET[/PREFIX] [default: DATA_DIR/objects]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_store: Option<String>,
    /// S3 endpoint URL (MinIO, Ceph RGW, …)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_endpoint: Option<String>,
    /// S3 region [default: us-east-1]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_region: Option<String>,
    /// S3 access key id
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_access_key_id: Option<String>,
    /// File holding the S3 secret access key (or set CUSTODY_S3_SECRET_ACCESS_KEY)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_secret_access_key_file: Option<PathBuf>,
    /// Allow a plain-HTTP S3 endpoint
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_allow_http: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./custody-data"),
            http_listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            grpc_listen: SocketAddr::from(([0, 0, 0, 0], 50051)),
            mqtt_listen: SocketAddr::from(([0, 0, 0, 0], 1883)),
            mqtt_url: None,
            mqtt_client_id: "custody".into(),
            mqtt_share_group: "custody".into(),
            mqtt_max_in_flight: 512,
            mqtt_username: None,
            mqtt_password_file: None,
            max_speed_mps: 70.0,
            max_future_skew: Duration::from_secs(300),
            position_retention: Duration::from_secs(180 * 86_400),
            position_batch_max: 10_000,
            live_queue: 65_536,
            mqtt_superusers: vec!["custody".into()],
            media_jobs: 1,
            media_threads: 0,
            media_proxy_above: ByteSize::mib(512),
            media_max_pixels: 8192 * 8192,
            media_proxy_preset: "veryfast".into(),
            media_proxy_crf: 23,
            media_work_dir: None,
            media_lease: Duration::from_secs(300),
            media_max_attempts: 5,
            media_retry_base: Duration::from_secs(30),
            media_poll: Duration::from_secs(2),
            session_ttl: Duration::from_secs(12 * 3600),
            coverage_min_gap: Duration::from_secs(10),
            coverage_max_recording: Duration::from_secs(4 * 3600),
            approval_ttl: Duration::from_secs(24 * 3600),
            retention_default: "6 months".into(),
            retention_case_evidence: "forever".into(),
            retention_obstruction: "forever".into(),
            retention_classes: [("major_incident".to_string(), "forever".to_string())].into(),
            retention_interval: Duration::from_secs(3600),
            database_url: None,
            database_max_connections: 16,
            object_store: None,
            s3_endpoint: None,
            s3_region: "us-east-1".into(),
            s3_access_key_id: None,
            s3_secret_access_key: None,
            s3_secret_access_key_file: None,
            s3_allow_http: false,
            max_upload_size: ByteSize::gib(4),
            upload_ttl: Duration::from_secs(24 * 3600),
            upload_expiry_interval: Duration::from_secs(60),
            upload_part_size: ByteSize::mib(8),
            upload_flush_bytes: ByteSize::mib(8),
            always_sm3: false,
            ledger_key_file: None,
            ledger_sm2_key_file: None,
            ledger_batch_max: 4096,
            ledger_batch_interval: Duration::from_millis(50),
            ledger_receipt_timeout: Duration::from_secs(10),
            log: "info".into(),
            log_format: LogFormat::Text,
            ready_file: None,
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = self.s3_secret_access_key.as_ref().map(|_| "<redacted>");
        f.debug_struct("Config")
            .field("data_dir", &self.data_dir)
            .field("http_listen", &self.http_listen)
            .field("mqtt_listen", &self.mqtt_listen)
            .field("mqtt_url", &self.mqtt_url)
            .field("mqtt_client_id", &self.mqtt_client_id)
            .field("grpc_listen", &self.grpc_listen)
            .field(
                "database_url",
                &self.database_url.as_deref().map(redact_url),
            )
            .field("object_store", &self.object_store)
            .field("s3_endpoint", &self.s3_endpoint)
            .field("s3_access_key_id", &self.s3_access_key_id)
            .field("s3_secret_access_key", &secret)
            .field("max_upload_size", &self.max_upload_size)
            .field("upload_ttl", &self.upload_ttl)
            .finish_non_exhaustive()
    }
}

/// Hides a password in a database URL (`postgres://user:secret@host/db` → `postgres://user:***@host/db`).
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

impl Config {
    /// Loads the layers. `file` is read when it exists; `required` makes a missing file an error (a path
    /// given explicitly must exist). `overrides` are the command-line flags that were given.
    pub fn load(file: &Path, required: bool, overrides: impl Serialize) -> anyhow::Result<Self> {
        if required && !file.exists() {
            anyhow::bail!("config file {} does not exist", file.display());
        }
        let known: Vec<String> = match serde_json::to_value(Config::default())? {
            serde_json::Value::Object(m) => m.keys().cloned().collect(),
            _ => Vec::new(),
        };
        // Figment hands the filter each key without its prefix but in its original (upper) case.
        let env = Env::prefixed("CUSTODY_")
            .filter(move |k| known.iter().any(|n| k.as_str().eq_ignore_ascii_case(n)));
        let cfg: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file(file))
            .merge(env)
            .merge(Serialized::globals(overrides))
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.max_upload_size.as_u64() == 0 {
            anyhow::bail!("max_upload_size must be greater than zero");
        }
        if self.upload_flush_bytes.as_u64() == 0 {
            anyhow::bail!("upload_flush_bytes must be greater than zero");
        }
        if self.upload_ttl.is_zero() || self.upload_expiry_interval.is_zero() {
            anyhow::bail!("upload_ttl and upload_expiry_interval must be greater than zero");
        }
        if self.ledger_batch_max == 0 || self.ledger_batch_interval.is_zero() {
            anyhow::bail!("ledger_batch_max and ledger_batch_interval must be greater than zero");
        }
        if !(self.max_speed_mps.is_finite() && self.max_speed_mps > 0.0) {
            anyhow::bail!("max_speed_mps must be a positive number of metres per second");
        }
        if !(1..=65_535).contains(&self.mqtt_max_in_flight) {
            anyhow::bail!("mqtt_max_in_flight must be between 1 and 65535");
        }
        if self.media_proxy_crf > 51 {
            anyhow::bail!(
                "media_proxy_crf must be between 0 and 51, got {}",
                self.media_proxy_crf
            );
        }
        const PRESETS: [&str; 10] = [
            "ultrafast",
            "superfast",
            "veryfast",
            "faster",
            "fast",
            "medium",
            "slow",
            "slower",
            "veryslow",
            "placebo",
        ];
        if !PRESETS.contains(&self.media_proxy_preset.as_str()) {
            anyhow::bail!(
                "media_proxy_preset must be one of {}, got {:?}",
                PRESETS.join(", "),
                self.media_proxy_preset
            );
        }
        if self.media_max_attempts == 0 || self.media_lease.is_zero() || self.media_poll.is_zero() {
            anyhow::bail!(
                "media_max_attempts, media_lease and media_poll must be greater than zero"
            );
        }
        if self.media_max_pixels == 0 {
            anyhow::bail!("media_max_pixels must be greater than zero");
        }
        if self.approval_ttl.is_zero() {
            anyhow::bail!("approval_ttl must be greater than zero");
        }
        let policy = self.retention_policy()?;
        if policy.default < custody_core::retention::Period::Months(6) {
            // The regulation's floor: a shorter default would delete footage the law says to keep.
            anyhow::bail!(
                "retention_default must be at least 6 months (the regulation's minimum), got {}",
                policy.default
            );
        }
        if self.position_batch_max == 0 || self.live_queue == 0 {
            anyhow::bail!("position_batch_max and live_queue must be greater than zero");
        }
        if self
            .object_store
            .as_deref()
            .is_some_and(|o| o.starts_with("s3://"))
            && self.max_upload_size.as_u64() > 5 << 30
        {
            // Commit copies the verified staged object to its content address with one S3 CopyObject,
            // which S3 limits to 5 GiB.
            anyhow::bail!(
                "max_upload_size may be at most 5GiB with an S3 object store, got {}",
                self.max_upload_size
            );
        }
        Ok(())
    }

    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("custody.db").display()))
    }

    pub fn object_store_url(&self) -> String {
        self.object_store
            .clone()
            .unwrap_or_else(|| self.data_dir.join("objects").display().to_string())
    }

    pub fn ledger_key_path(&self) -> PathBuf {
        self.ledger_key_file.clone().unwrap_or_else(|| {
            self.data_dir
                .join("keys")
                .join(crate::admin::SIGNING_KEY_FILE)
        })
    }

    pub fn mqtt_password(&self) -> anyhow::Result<Option<String>> {
        self.mqtt_password_file
            .as_ref()
            .map(|path| {
                std::fs::read_to_string(path)
                    .map(|s| s.trim().to_string())
                    .map_err(|e| {
                        anyhow::anyhow!("reading mqtt_password_file {}: {e}", path.display())
                    })
            })
            .transpose()
    }

    pub fn s3_secret(&self) -> anyhow::Result<Option<String>> {
        if let Some(path) = &self.s3_secret_access_key_file {
            let s = std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!("reading s3_secret_access_key_file {}: {e}", path.display())
            })?;
            return Ok(Some(s.trim().to_string()));
        }
        Ok(self.s3_secret_access_key.clone())
    }
}

impl Config {
    /// The media pipeline's settings.
    pub fn cases(&self) -> custody_cases::CasesConfig {
        custody_cases::CasesConfig {
            min_gap: self.coverage_min_gap,
            max_recording: self.coverage_max_recording,
        }
    }

    /// The retention classes, parsed.
    pub fn retention_policy(&self) -> anyhow::Result<custody_core::retention::Policy> {
        use custody_core::retention::Period;
        let period =
            |key: &str, v: &str| Period::parse(v).map_err(|e| anyhow::anyhow!("{key}: {e}"));
        let mut classes = std::collections::BTreeMap::new();
        for (name, v) in &self.retention_classes {
            classes.insert(
                name.clone(),
                period(&format!("retention_classes.{name}"), v)?,
            );
        }
        Ok(custody_core::retention::Policy {
            default: period("retention_default", &self.retention_default)?,
            case_evidence: period("retention_case_evidence", &self.retention_case_evidence)?,
            obstruction: period("retention_obstruction", &self.retention_obstruction)?,
            classes,
        })
    }

    /// The retention worker's settings.
    pub fn retention(&self) -> anyhow::Result<custody_cases::RetentionConfig> {
        Ok(custody_cases::RetentionConfig {
            policy: self.retention_policy()?,
            interval: self.retention_interval,
            ..Default::default()
        })
    }

    /// Approval before copy.
    pub fn requests(&self) -> custody_cases::RequestsConfig {
        custody_cases::RequestsConfig {
            approval_ttl: self.approval_ttl,
        }
    }

    pub fn media(&self) -> custody_media::MediaConfig {
        let work_dir = self
            .media_work_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("media-work"));
        let mut m = custody_media::MediaConfig::new(work_dir);
        m.jobs = self.media_jobs;
        m.lease = self.media_lease;
        m.max_attempts = self.media_max_attempts;
        m.retry_base = self.media_retry_base;
        m.poll = self.media_poll;
        m.rules = custody_core::media::PlaybackRules {
            proxy_above: self.media_proxy_above.as_u64(),
            max_pixels: self.media_max_pixels,
        };
        m.picture.max_pixels = self.media_max_pixels;
        m.proxy.max_pixels = self.media_max_pixels;
        m.proxy.threads = self.media_threads;
        m.proxy.preset = self.media_proxy_preset.clone();
        m.proxy.crf = self.media_proxy_crf;
        m
    }

    /// The telemetry pipeline's settings.
    pub fn tracking(&self) -> custody_tracking::TrackingConfig {
        let micros = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        let retention = (!self.position_retention.is_zero()).then_some(self.position_retention);
        custody_tracking::TrackingConfig {
            limits: custody_core::position::Limits {
                max_future_micros: micros(self.max_future_skew),
                max_age_micros: retention.map(micros),
                max_speed_mps: self.max_speed_mps,
                ..Default::default()
            },
            batch_max: self.position_batch_max,
            live_capacity: self.live_queue,
            retention,
            ..Default::default()
        }
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail closures return figment::Error
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        http_listen: Option<SocketAddr>,
    }

    #[test]
    fn flags_beat_environment_which_beats_the_file_which_beats_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "custody.toml",
                "data_dir = \"/from/file\"\ngrpc_listen = \"127.0.0.1:1\"\nhttp_listen = \"127.0.0.1:2\"\n",
            )?;
            jail.set_env("CUSTODY_GRPC_LISTEN", "127.0.0.1:3");
            jail.set_env("CUSTODY_HTTP_LISTEN", "127.0.0.1:4");
            let flags = Flags {
                http_listen: Some("127.0.0.1:5".parse().unwrap()),
            };
            let c = Config::load(Path::new("custody.toml"), true, flags).unwrap();
            assert_eq!(c.data_dir, PathBuf::from("/from/file"));
            assert_eq!(c.grpc_listen.port(), 3);
            assert_eq!(c.http_listen.port(), 5);
            assert_eq!(c.upload_part_size, ByteSize::mib(8));
            Ok(())
        });
    }

    #[test]
    fn retention_periods_are_checked_naming_the_key_and_never_below_six_months() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "custody.toml",
                "retention_classes = { traffic = \"12 months\", bad = \"soon\" }\n",
            )?;
            let e = Config::load(Path::new("custody.toml"), true, Flags { http_listen: None })
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("retention_classes.bad") && e.contains("\"soon\""),
                "{e}"
            );
            jail.create_file("custody.toml", "retention_default = \"3 months\"\n")?;
            let e = Config::load(Path::new("custody.toml"), true, Flags { http_listen: None })
                .unwrap_err()
                .to_string();
            assert!(e.contains("at least 6 months"), "{e}");
            jail.create_file(
                "custody.toml",
                "retention_default = \"24 months\"\nretention_classes = { traffic = \"36 months\" }\n",
            )?;
            let p = Config::load(Path::new("custody.toml"), true, Flags { http_listen: None })
                .unwrap()
                .retention_policy()
                .unwrap();
            assert_eq!(p.default, custody_core::retention::Period::Months(24));
            assert_eq!(
                p.classes.get("traffic"),
                Some(&custody_core::retention::Period::Months(36))
            );
            Ok(())
        });
    }

    #[test]
    fn a_misspelt_key_in_the_file_is_an_error_naming_it() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("custody.toml", "data_dri = \"x\"\n")?;
            let e = Config::load(Path::new("custody.toml"), true, Flags { http_listen: None })
                .unwrap_err();
            assert!(e.to_string().contains("data_dri"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn human_sizes_and_durations_are_understood() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "custody.toml",
                "max_upload_size = \"2GiB\"\nupload_ttl = \"90min\"\n",
            )?;
            let c =
                Config::load(Path::new("custody.toml"), true, Flags { http_listen: None }).unwrap();
            assert_eq!(c.max_upload_size, ByteSize::gib(2));
            assert_eq!(c.upload_ttl, Duration::from_secs(5400));
            Ok(())
        });
    }

    #[test]
    fn unrelated_custody_environment_variables_are_ignored() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("CUSTODY_TEST_PG_URL", "postgres://x");
            Config::load(
                Path::new("missing.toml"),
                false,
                Flags { http_listen: None },
            )
            .unwrap();
            Ok(())
        });
    }

    #[test]
    fn the_example_config_in_deploy_loads_with_every_key_known() {
        let example = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/custody.example.toml"
        );
        let c = Config::load(Path::new(example), true, Flags { http_listen: None }).unwrap();
        assert_eq!(c.position_retention, Duration::from_secs(180 * 86_400));
        assert_eq!(c.mqtt_superusers, ["custody"]);
        assert_eq!(c.approval_ttl, Duration::from_secs(24 * 3600));
        let t = c.tracking();
        assert_eq!(t.limits.max_speed_mps, 70.0);
        assert_eq!(t.limits.max_age_micros, Some(180 * 86_400 * 1_000_000));
    }

    #[test]
    fn database_passwords_are_redacted() {
        assert_eq!(redact_url("postgres://u:pw@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
    }
}
