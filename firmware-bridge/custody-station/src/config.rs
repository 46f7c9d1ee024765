//! The agent's configuration, layered like the server's: built-in defaults < the TOML file <
//! `CUSTODY_STATION_*` environment variables < command-line flags. `deploy/custody-station.example.toml`
//! shows every key with its default.

use bytesize::ByteSize;
use custody_core::station::StationCredential;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the agent does with a file on the recorder once its receipt is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FreePolicy {
    /// Delete it, freeing the recorder's space.
    Delete,
    /// Move it into `uploaded/` on the recorder (the recorder's own tools can delete it later).
    Move,
    /// Leave it in place (the journal still records that it was received).
    Keep,
}

impl FreePolicy {
    /// How a freed file is described in the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delete => "deleted",
            Self::Move => "moved",
            Self::Keep => "kept",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Everything the agent can be told. Keys are the same in the TOML file, as environment variables
/// (upper-cased, prefixed `CUSTODY_STATION_`) and as flags (`--slots-dir`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StationConfig {
    /// This station's id, as registered with `custody admin station add`.
    pub station_id: String,
    /// The station credential (`<station id>:<secret>`). Prefer `credential_file`; never logged.
    pub credential: Option<String>,
    /// File holding the station credential.
    pub credential_file: Option<PathBuf>,
    /// The Custody server's gRPC address, e.g. `http://custody.example:50051`.
    pub server: String,
    /// The ledger's verifier key file(s) (`ledger.pub`, and `ledger-sm2.pub` where SM2 is used), pinned:
    /// a receipt must verify against every one of them before a file is freed.
    pub ledger_keys: Vec<PathBuf>,
    /// A directory whose subdirectories are the slots' mount points (slot name = subdirectory name).
    pub slots_dir: Option<PathBuf>,
    /// Slot mount points, listed one by one (slot name = last path component). Used with or instead of
    /// `slots_dir`.
    pub slots: Vec<PathBuf>,
    /// The journal database.
    pub journal: PathBuf,
    /// What happens to a file on the recorder after its receipt verified: delete, move or keep.
    pub free_policy: FreePolicy,
    /// Uploads at once for the whole station.
    pub concurrency: usize,
    /// Files hashed at once (CPU-bound; one per core is right).
    pub hash_threads: usize,
    /// Upload bandwidth cap for the whole station in bytes per second; 0 for none.
    pub bandwidth: ByteSize,
    /// Compute SM3 besides SHA-256 (国密); the server checks whatever is declared.
    pub sm3: bool,
    /// Bytes per write message.
    pub chunk_size: ByteSize,
    /// Bytes per write stream: the journal records the acknowledged offset after each.
    pub segment_size: ByteSize,
    /// How often slots are looked at for docked and undocked recorders and new files.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// A file modified within this long is not touched yet (the recorder may still be writing it).
    #[serde(with = "humantime_serde")]
    pub settle_time: Duration,
    /// First wait before retrying a file after an error; doubles each time...
    #[serde(with = "humantime_serde")]
    pub retry_min: Duration,
    /// ...up to this.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// MQTT endpoint for status and heartbeats (`mqtt://host:port`); none to publish nothing.
    pub mqtt_url: Option<String>,
    /// Seconds between heartbeats.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Log filter in `tracing` syntax; `RUST_LOG` overrides it.
    pub log: String,
    /// `text` for people, `json` for collectors (daemon mode).
    pub log_format: LogFormat,
}

impl Default for StationConfig {
    fn default() -> Self {
        Self {
            station_id: String::new(),
            credential: None,
            credential_file: None,
            server: "http://127.0.0.1:50051".into(),
            ledger_keys: Vec::new(),
            slots_dir: None,
            slots: Vec::new(),
            journal: PathBuf::from("./custody-station/journal.db"),
            free_policy: FreePolicy::Move,
            concurrency: 4,
            hash_threads: 2,
            bandwidth: ByteSize::b(0),
            sm3: true,
            chunk_size: ByteSize::mib(1),
            segment_size: ByteSize::mib(64),
            poll_interval: Duration::from_secs(1),
            settle_time: Duration::from_secs(3),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            mqtt_url: None,
            heartbeat_interval: Duration::from_secs(10),
            log: "info".into(),
            log_format: LogFormat::Text,
        }
    }
}

impl std::fmt::Debug for StationConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StationConfig")
            .field("station_id", &self.station_id)
            .field(
                "credential",
                &self.credential.as_ref().map(|_| "<redacted>"),
            )
            .field("credential_file", &self.credential_file)
            .field("server", &self.server)
            .field("ledger_keys", &self.ledger_keys)
            .field("slots_dir", &self.slots_dir)
            .field("slots", &self.slots)
            .field("journal", &self.journal)
            .field("free_policy", &self.free_policy)
            .field("concurrency", &self.concurrency)
            .field("hash_threads", &self.hash_threads)
            .field("bandwidth", &self.bandwidth)
            .field("sm3", &self.sm3)
            .field("segment_size", &self.segment_size)
            .field("mqtt_url", &self.mqtt_url)
            .finish_non_exhaustive()
    }
}

/// One slot: its name and where a docked recorder's files appear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub name: String,
    pub mount: PathBuf,
}

impl StationConfig {
    /// Loads the layers. `overrides` is the flags struct (only set flags serialised). A missing file is
    /// an error only when it was named explicitly.
    pub fn load(file: &Path, explicit: bool, overrides: impl Serialize) -> anyhow::Result<Self> {
        if explicit && !file.exists() {
            anyhow::bail!("configuration file {} does not exist", file.display());
        }
        // Only keys of this configuration are read from the environment: a shell's unrelated
        // CUSTODY_STATION_* variables (such as CUSTODY_STATION_CONFIG) must not stop the agent.
        let known: Vec<String> = match serde_json::to_value(Self::default())? {
            serde_json::Value::Object(m) => m.keys().cloned().collect(),
            _ => Vec::new(),
        };
        let cfg: Self = Figment::from(Serialized::defaults(Self::default()))
            .merge(Toml::file(file))
            .merge(
                Env::prefixed("CUSTODY_STATION_")
                    .filter(move |k| known.iter().any(|n| k.as_str().eq_ignore_ascii_case(n))),
            )
            .merge(Serialized::globals(overrides))
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> anyhow::Result<()> {
        custody_core::StationId::parse(self.station_id.clone())
            .map_err(|e| anyhow::anyhow!("station_id: {}", e.reason))?;
        anyhow::ensure!(
            !self.ledger_keys.is_empty(),
            "ledger_keys: name the server's ledger.pub (pinned: receipts are checked against it before \
             any file is freed)"
        );
        anyhow::ensure!(
            self.slots_dir.is_some() || !self.slots.is_empty(),
            "no slots: set slots_dir (a directory of slot mount points) or slots (a list of them)"
        );
        anyhow::ensure!(self.concurrency >= 1, "concurrency must be at least 1");
        anyhow::ensure!(self.hash_threads >= 1, "hash_threads must be at least 1");
        anyhow::ensure!(
            (1..=4 << 20).contains(&self.chunk_size.as_u64()),
            "chunk_size must be between 1 byte and 4MiB, got {}",
            self.chunk_size
        );
        anyhow::ensure!(
            self.segment_size.as_u64() >= self.chunk_size.as_u64(),
            "segment_size must be at least chunk_size"
        );
        anyhow::ensure!(
            !self.poll_interval.is_zero() && !self.heartbeat_interval.is_zero(),
            "poll_interval and heartbeat_interval must be greater than zero"
        );
        anyhow::ensure!(
            self.retry_min <= self.retry_max && !self.retry_min.is_zero(),
            "retry_min must be greater than zero and at most retry_max"
        );
        Ok(())
    }

    /// The credential, from `credential` or `credential_file`, parsed; it must be this station's.
    pub fn credential(&self) -> anyhow::Result<StationCredential> {
        let text = match (&self.credential_file, &self.credential) {
            (Some(path), _) => std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("reading credential_file {}: {e}", path.display()))?,
            (None, Some(c)) => c.clone(),
            (None, None) => anyhow::bail!(
                "no station credential: set credential_file (or CUSTODY_STATION_CREDENTIAL) to what \
                 `custody admin station add {}` printed",
                self.station_id
            ),
        };
        let cred = StationCredential::parse(&text).map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            cred.id.as_str() == self.station_id,
            "the credential is station {}'s, not {}'s: check credential_file",
            cred.id,
            self.station_id
        );
        Ok(cred)
    }

    /// The pinned verifier keys, read from their files.
    pub fn read_ledger_keys(&self) -> anyhow::Result<Vec<String>> {
        self.ledger_keys
            .iter()
            .map(|p| {
                let k = std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("reading ledger key {}: {e}", p.display()))?;
                let k = k.trim().to_string();
                custody_core::ledger::verifier_from_text(&k)
                    .map_err(|e| anyhow::anyhow!("ledger key {}: {e}", p.display()))?;
                Ok(k)
            })
            .collect()
    }

    /// The slots now configured: every subdirectory of `slots_dir` plus every listed mount point, in
    /// name order. Read again at each poll, so slots added to `slots_dir` are picked up.
    pub fn slots(&self) -> Vec<Slot> {
        let mut out: Vec<Slot> = self
            .slots
            .iter()
            .map(|p| Slot {
                name: p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| p.display().to_string()),
                mount: p.clone(),
            })
            .collect();
        if let Some(dir) = &self.slots_dir
            && let Ok(entries) = std::fs::read_dir(dir)
        {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                // Temporary directories (a recorder image being written) are not slots.
                if e.path().is_dir() && !name.starts_with('.') && !name.contains(".partial") {
                    out.push(Slot {
                        name,
                        mount: e.path(),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out.dedup_by(|a, b| a.mount == b.mount);
        out
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail closures return figment::Error
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct NoFlags {}

    #[test]
    fn a_complete_file_loads_and_a_misspelt_key_is_named() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "station.toml",
                "station_id = \"ST-01\"\nledger_keys = [\"k.pub\"]\nslots_dir = \"/media/custody\"\n\
                 bandwidth = \"20MiB\"\nfree_policy = \"delete\"\n",
            )?;
            let c = StationConfig::load(Path::new("station.toml"), true, NoFlags {}).unwrap();
            assert_eq!(c.bandwidth, ByteSize::mib(20));
            assert_eq!(c.free_policy, FreePolicy::Delete);
            jail.create_file(
                "bad.toml",
                "station_id = \"ST-01\"\nledger_keys = [\"k.pub\"]\nslots_dri = \"x\"\n",
            )?;
            let e = StationConfig::load(Path::new("bad.toml"), true, NoFlags {}).unwrap_err();
            assert!(e.to_string().contains("slots_dri"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn the_credential_must_be_well_formed_and_this_stations() {
        let c = |cred: &str| StationConfig {
            station_id: "ST-01".into(),
            credential: Some(cred.into()),
            ..StationConfig::default()
        };
        let secret = "ab".repeat(32);
        let ok = c(&format!("ST-01:{secret}")).credential().unwrap();
        assert_eq!(ok.secret_hex(), secret);
        let e = c(&format!("ST-02:{secret}")).credential().unwrap_err();
        assert!(
            e.to_string().contains("station ST-02's, not ST-01's"),
            "{e}"
        );
        let e = c("ST-01:short").credential().unwrap_err();
        assert!(e.to_string().contains("64 hex digits"), "{e}");
    }

    #[test]
    fn the_example_configuration_in_deploy_loads_and_holds_the_defaults() {
        let example =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/custody-station.example.toml");
        let c = StationConfig::load(&example, true, NoFlags {}).unwrap();
        let d = StationConfig::default();
        assert_eq!(c.free_policy, d.free_policy);
        assert_eq!(
            (c.concurrency, c.hash_threads, c.bandwidth, c.sm3),
            (d.concurrency, d.hash_threads, d.bandwidth, d.sm3)
        );
        assert_eq!(
            (c.segment_size, c.poll_interval, c.settle_time, c.retry_max),
            (d.segment_size, d.poll_interval, d.settle_time, d.retry_max)
        );
    }

    #[test]
    fn a_station_without_pinned_keys_or_slots_is_refused_saying_what_to_set() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("a.toml", "station_id = \"ST-01\"\nslots_dir = \"/x\"\n")?;
            let e = StationConfig::load(Path::new("a.toml"), true, NoFlags {}).unwrap_err();
            assert!(e.to_string().contains("ledger_keys"), "{e}");
            jail.create_file("b.toml", "station_id = \"ST-01\"\nledger_keys = [\"k\"]\n")?;
            let e = StationConfig::load(Path::new("b.toml"), true, NoFlags {}).unwrap_err();
            assert!(e.to_string().contains("slots"), "{e}");
            Ok(())
        });
    }
}
