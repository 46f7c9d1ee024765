//! `custody admin`: operator commands that change keys and registries.

use anyhow::Context;
use custody_core::credential::{Credential, CredentialId};
use custody_core::{DeviceId, StationId};
use custody_ingest::{LedgerKeys, Stations};
use std::io::Write;
use std::path::{Path, PathBuf};

/// File names of the ledger key pairs inside the key directory.
pub const SIGNING_KEY_FILE: &str = "ledger.key";
pub const VERIFIER_KEY_FILE: &str = "ledger.pub";
pub const SM2_SIGNING_KEY_FILE: &str = "ledger-sm2.key";
pub const SM2_VERIFIER_KEY_FILE: &str = "ledger-sm2.pub";

/// Which signature algorithm a key pair is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Ed25519,
    /// GB/T 32918 SM2 with SM3, for 国密 deployments; signs in addition to Ed25519.
    Sm2,
}

/// Creates a new ledger key pair for the log named `origin` in `dir`: `ledger.key` (the signing key,
/// readable by its owner only) and `ledger.pub` (the verifier key, to hand to stations, witnesses and
/// courts), or `ledger-sm2.{key,pub}` for SM2. Refuses to replace an existing key: a lost or replaced key
/// breaks every receipt already issued.
pub fn keygen(origin: &str, dir: &Path, kind: KeyKind) -> anyhow::Result<(PathBuf, PathBuf)> {
    anyhow::ensure!(
        signed_note_name_ok(origin),
        "origin {origin:?} must be non-empty and contain no spaces or '+' (e.g. custody.example.gov.cn/ledger)"
    );
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (skey_path, vkey_path) = match kind {
        KeyKind::Ed25519 => (dir.join(SIGNING_KEY_FILE), dir.join(VERIFIER_KEY_FILE)),
        KeyKind::Sm2 => (
            dir.join(SM2_SIGNING_KEY_FILE),
            dir.join(SM2_VERIFIER_KEY_FILE),
        ),
    };
    for p in [&skey_path, &vkey_path] {
        anyhow::ensure!(
            !p.exists(),
            "{} already exists; refusing to replace a ledger key",
            p.display()
        );
    }
    let (skey, vkey) = match kind {
        KeyKind::Ed25519 => custody_core::ledger::generate_key(&mut rand_core_06::OsRng, origin),
        KeyKind::Sm2 => custody_core::sm2note::generate_sm2_key(&mut rand_core_06::OsRng, origin),
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(&skey_path)
        .with_context(|| format!("creating {}", skey_path.display()))?;
    writeln!(f, "{skey}")?;
    f.sync_all()?;
    std::fs::write(&vkey_path, format!("{vkey}\n"))
        .with_context(|| format!("writing {}", vkey_path.display()))?;
    Ok((skey_path, vkey_path))
}

/// Origin of the keys [`test_keys`] makes.
pub const TEST_ORIGIN: &str = "custody.test/ledger";

/// Makes an Ed25519 key pair in `DATA_DIR/keys` unless one is there: for tests and benchmarks, which run
/// servers on throw-away data directories. Returns the verifier key.
pub fn test_keys(data_dir: &Path) -> anyhow::Result<String> {
    let dir = data_dir.join("keys");
    if !dir.join(SIGNING_KEY_FILE).exists() {
        keygen(TEST_ORIGIN, &dir, KeyKind::Ed25519)?;
    }
    Ok(std::fs::read_to_string(dir.join(VERIFIER_KEY_FILE))?
        .trim()
        .to_string())
}

/// The verifier key file that goes with a signing key file: the same path ending in `.pub`.
pub fn verifier_path(signing: &Path) -> PathBuf {
    signing.with_extension("pub")
}

/// Reads the ledger keys: the Ed25519 signing key at `ed25519` and, when given, the SM2 key at `sm2`, each
/// with its `.pub` verifier key beside it. Checks that each pair belongs together (a test signature
/// verifies) and that both name the same log. Never creates a key: a missing file is an error that says
/// how to make one.
pub fn load_ledger_keys(ed25519: &Path, sm2: Option<&Path>) -> anyhow::Result<LedgerKeys> {
    let mut signing = Vec::new();
    let mut verifiers = Vec::new();
    let mut origin: Option<String> = None;
    for (path, kind) in
        std::iter::once((ed25519, KeyKind::Ed25519)).chain(sm2.map(|p| (p, KeyKind::Sm2)))
    {
        let read = |p: &Path| -> anyhow::Result<String> {
            match std::fs::read_to_string(p) {
                Ok(s) => Ok(s.trim().to_string()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
                    "ledger key {} does not exist; create the key pair once with \
                     `custody admin keygen --origin <log name> --out {}{}` and back it up \
                     (the server never makes its own key: a new key would orphan every receipt)",
                    p.display(),
                    p.parent()
                        .map(|d| d.display().to_string())
                        .unwrap_or_else(|| ".".into()),
                    if kind == KeyKind::Sm2 { " --sm2" } else { "" },
                ),
                Err(e) => Err(e).with_context(|| format!("reading ledger key {}", p.display())),
            }
        };
        let skey = read(path)?;
        let vpath = verifier_path(path);
        let vkey = read(&vpath)?;
        let signer = custody_core::ledger::signer_from_text(&skey)
            .with_context(|| format!("ledger key {}", path.display()))?;
        let is_sm2 = custody_core::sm2note::is_sm2_key(&skey);
        anyhow::ensure!(
            is_sm2 == (kind == KeyKind::Sm2),
            "ledger key {} is {}, but it is configured as the {} key",
            path.display(),
            if is_sm2 {
                "an SM2 key"
            } else {
                "not an SM2 key"
            },
            if kind == KeyKind::Sm2 {
                "SM2"
            } else {
                "Ed25519"
            },
        );
        let verifier = custody_core::ledger::verifier_from_text(&vkey)
            .with_context(|| format!("verifier key {}", vpath.display()))?;
        let probe = b"custody ledger key check\n";
        let sig = signer
            .sign(probe)
            .map_err(|e| anyhow::anyhow!("ledger key {} cannot sign: {e}", path.display()))?;
        anyhow::ensure!(
            verifier.name() == signer.name()
                && verifier.key_id() == signer.key_id()
                && verifier.verify(probe, &sig),
            "verifier key {} does not belong to signing key {}",
            vpath.display(),
            path.display()
        );
        match &origin {
            None => origin = Some(signer.name().to_string()),
            Some(o) => anyhow::ensure!(
                o == signer.name(),
                "ledger keys name different logs: {o:?} and {:?} ({})",
                signer.name(),
                path.display()
            ),
        }
        signing.push(skey);
        verifiers.push(vkey);
    }
    Ok(LedgerKeys {
        origin: origin.unwrap_or_default(),
        signing,
        verifiers,
    })
}

/// `custody admin station ...`: what to do with the station registry.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum StationCommand {
    /// Register a docking station and print its credential (shown once: put it in the station's
    /// configuration). The station presents it on every upload and as its MQTT login.
    Add {
        /// Station id, as configured on the station (letters, digits, - _ . :)
        id: String,
        /// A name people recognise, e.g. "福田大队 1 号采集站"
        #[arg(long)]
        name: String,
        /// Also write the credential to this file (owner-only), e.g. for the station's credential_file
        #[arg(long)]
        credential_out: Option<PathBuf>,
        #[command(flatten)]
        storage: crate::config::StorageArgs,
    },
    /// Issue a new credential for a station; the old one stops working at once.
    Rotate {
        id: String,
        #[arg(long)]
        credential_out: Option<PathBuf>,
        #[command(flatten)]
        storage: crate::config::StorageArgs,
    },
    /// Revoke a station's credential (rotate issues a new one).
    Disable {
        id: String,
        #[command(flatten)]
        storage: crate::config::StorageArgs,
    },
    /// List registered stations with their last heartbeat.
    List {
        #[command(flatten)]
        storage: crate::config::StorageArgs,
    },
}

/// Runs a station registry command against the configured database (the same settings as `serve`).
pub async fn station(
    config_file: &Path,
    explicit: bool,
    cmd: StationCommand,
) -> anyhow::Result<()> {
    let storage = match &cmd {
        StationCommand::Add { storage, .. }
        | StationCommand::Rotate { storage, .. }
        | StationCommand::Disable { storage, .. }
        | StationCommand::List { storage } => storage.clone(),
    };
    let meta = open_meta(config_file, explicit, &storage).await?;
    let stations = Stations::new(meta.clone());
    let id = |s: &str| StationId::parse(s).map_err(|e| anyhow::anyhow!("{e}"));
    let result = match cmd {
        StationCommand::Add {
            id: sid,
            name,
            credential_out,
            ..
        } => {
            let cred = stations.add(id(&sid)?, &name).await?;
            show_credential(&cred, credential_out.as_deref())
        }
        StationCommand::Rotate {
            id: sid,
            credential_out,
            ..
        } => {
            let cred = stations.rotate(id(&sid)?).await?;
            show_credential(&cred, credential_out.as_deref())
        }
        StationCommand::Disable { id: sid, .. } => {
            stations.disable(&id(&sid)?).await?;
            println!("station {sid}: credential revoked");
            Ok(())
        }
        StationCommand::List { .. } => {
            let mut after: Option<StationId> = None;
            println!("{:<24} {:<8} {:<28} name", "id", "state", "last heartbeat");
            loop {
                let page = stations.list(after.as_ref(), 500).await?;
                for s in &page {
                    let state = if s.disabled {
                        "disabled"
                    } else if s.online {
                        "online"
                    } else {
                        "offline"
                    };
                    let hb = s
                        .heartbeat_received_at
                        .map(|t| t.to_string())
                        .unwrap_or_else(|| "never".into());
                    println!("{:<24} {:<8} {:<28} {}", s.id, state, hb, s.name);
                }
                match page.last() {
                    Some(last) if page.len() == 500 => after = Some(last.id.clone()),
                    _ => break,
                }
            }
            Ok(())
        }
    };
    meta.close().await;
    result
}

/// Opens the metadata database named by the configuration (creating a SQLite file's directory).
pub(crate) async fn open_meta(
    config_file: &Path,
    explicit: bool,
    storage: &crate::config::StorageArgs,
) -> anyhow::Result<custody_store::Metadata> {
    let config = crate::Config::load(config_file, explicit, storage)?;
    let db_url = config.database_url();
    if let Some(dir) = db_url
        .strip_prefix("sqlite://")
        .and_then(|p| Path::new(p).parent())
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    custody_store::Metadata::connect(&db_url, 2)
        .await
        .with_context(|| format!("opening database {}", crate::config::redact_url(&db_url)))
}

/// Writes credentials to an owner-only file, one per line.
fn write_credentials(path: &Path, tokens: &[String]) -> anyhow::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    for t in tokens {
        writeln!(f, "{t}")?;
    }
    f.sync_all()?;
    eprintln!("credentials written to {}", path.display());
    Ok(())
}

fn show_credential<I: CredentialId>(
    cred: &Credential<I>,
    out: Option<&Path>,
) -> anyhow::Result<()> {
    if let Some(path) = out {
        write_credentials(path, &[cred.token()])?;
    }
    eprintln!(
        "{} {}: credential issued (shown once; configure it on the {}, keep it secret)",
        I::KIND,
        cred.id,
        I::KIND
    );
    println!("{}", cred.token());
    Ok(())
}

/// `custody admin device ...`: recorders that report positions (MQTT login, gRPC Telemetry.Report).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DeviceCommand {
    /// Register a recorder and print its credential `<id>:<secret>` (shown once). It logs in to MQTT
    /// with user name = id, password = the secret, and may publish only under its own topics.
    /// With --count N, register N recorders PREFIX00001.. and write their credentials to
    /// --credential-out, one per line (for fleets and `custody-sim fleet --credentials`).
    Add {
        /// Device id (the recorder's serial number); omit with --count
        id: Option<String>,
        /// A name people recognise
        #[arg(long, default_value = "")]
        name: String,
        /// Also write the credential(s) to this file (owner-only)
        #[arg(long)]
        credential_out: Option<PathBuf>,
        /// Register this many recorders named PREFIX + a 5-digit number
        #[arg(long, requires = "credential_out", conflicts_with = "id")]
        count: Option<u32>,
        /// Id prefix for --count
        #[arg(long, default_value = "SIM-")]
        prefix: String,
        #[command(flatten)]
        storage: crate::config::StorageArgs,
    },
    /// Issue a new credential for a recorder; the old one stops working at once.
    Rotate {
        id: String,
        #[arg(long)]
        credential_out: Option<PathBuf>,
        #[command(flatten)]
        storage: crate::config::StorageArgs,
    },
    /// Revoke a recorder's credential.
    Disable {
        id: String,
        #[command(flatten)]
        storage: crate::config::StorageArgs,
    },
    /// List registered recorders.
    List {
        #[command(flatten)]
        storage: crate::config::StorageArgs,
    },
}

/// Runs a recorder registry command against the configured database (the same settings as `serve`).
pub async fn device(config_file: &Path, explicit: bool, cmd: DeviceCommand) -> anyhow::Result<()> {
    let storage = match &cmd {
        DeviceCommand::Add { storage, .. }
        | DeviceCommand::Rotate { storage, .. }
        | DeviceCommand::Disable { storage, .. }
        | DeviceCommand::List { storage } => storage.clone(),
    };
    let meta = open_meta(config_file, explicit, &storage).await?;
    let devices = custody_tracking::Devices::new(meta.clone());
    let id = |s: &str| DeviceId::parse(s).map_err(|e| anyhow::anyhow!("{e}"));
    let result = async {
        match cmd {
            DeviceCommand::Add {
                count: Some(n),
                prefix,
                name,
                credential_out,
                ..
            } => {
                let mut tokens = Vec::with_capacity(n as usize);
                for i in 1..=n {
                    let cred = devices.add(id(&format!("{prefix}{i:05}"))?, &name).await?;
                    tokens.push(cred.token());
                }
                if let Some(path) = credential_out {
                    write_credentials(&path, &tokens)?;
                }
                eprintln!("{n} devices registered");
                Ok(())
            }
            DeviceCommand::Add {
                id: Some(did),
                name,
                credential_out,
                ..
            } => {
                let cred = devices.add(id(&did)?, &name).await?;
                show_credential(&cred, credential_out.as_deref())
            }
            DeviceCommand::Add { .. } => anyhow::bail!("give a device id, or --count N"),
            DeviceCommand::Rotate {
                id: did,
                credential_out,
                ..
            } => {
                let cred = devices.rotate(id(&did)?).await?;
                show_credential(&cred, credential_out.as_deref())
            }
            DeviceCommand::Disable { id: did, .. } => {
                devices.disable(&id(&did)?).await?;
                println!("device {did}: credential revoked");
                Ok(())
            }
            DeviceCommand::List { .. } => {
                let mut after: Option<DeviceId> = None;
                println!("{:<24} {:<8} {:<28} name", "id", "state", "registered");
                loop {
                    let page = devices.list(after.as_ref(), 500).await?;
                    for d in &page {
                        let state = if d.disabled_at.is_some() {
                            "disabled"
                        } else {
                            "active"
                        };
                        println!("{:<24} {:<8} {:<28} {}", d.id, state, d.created_at, d.name);
                    }
                    match page.last() {
                        Some(last) if page.len() == 500 => after = Some(last.id.clone()),
                        _ => break,
                    }
                }
                Ok(())
            }
        }
    }
    .await;
    meta.close().await;
    result
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum MediaCommand {
    /// How many media jobs (probe, proxy) are queued, running, done and failed, and which items failed
    /// with their reasons.
    Status {
        /// Failed items to list
        #[arg(long, default_value_t = 20)]
        failed: u32,
        #[command(flatten)]
        storage: crate::config::StorageArgs,
    },
    /// Queue an item's media work again from the start (after fixing the cause of a failure, or after
    /// upgrading ffmpeg). With --failed, every item whose probe or proxy failed.
    Retry {
        /// Evidence id
        #[arg(required_unless_present = "failed")]
        id: Option<String>,
        /// Every failed item
        #[arg(long, conflicts_with = "id")]
        failed: bool,
        #[command(flatten)]
        storage: crate::config::StorageArgs,
    },
}

/// Runs a media pipeline command against the configured database (the same settings as `serve`).
pub async fn media(config_file: &Path, explicit: bool, cmd: MediaCommand) -> anyhow::Result<()> {
    let storage = match &cmd {
        MediaCommand::Status { storage, .. } | MediaCommand::Retry { storage, .. } => {
            storage.clone()
        }
    };
    let meta = open_meta(config_file, explicit, &storage).await?;
    let now = crate::now();
    let result = async {
        match cmd {
            MediaCommand::Status { failed, .. } => {
                use custody_core::media::MediaJobKind;
                let counts = meta.media_job_counts().await?;
                println!(
                    "{:<6} {:>8} {:>8} {:>8} {:>8}",
                    "job", "queued", "running", "done", "failed"
                );
                for kind in [MediaJobKind::Probe, MediaJobKind::Proxy] {
                    println!(
                        "{:<6} {:>8} {:>8} {:>8} {:>8}",
                        kind.as_str(),
                        counts.get(kind, "queued"),
                        counts.get(kind, "running"),
                        counts.get(kind, "done"),
                        counts.get(kind, "failed"),
                    );
                }
                let ids = meta.failed_media(failed).await?;
                if !ids.is_empty() {
                    println!("\nfailed:");
                }
                for m in meta.evidence_media(&ids).await? {
                    for j in m.jobs.iter().filter(|j| j.state == "failed") {
                        println!(
                            "  {} {} (attempts {}): {}",
                            m.evidence_id,
                            j.kind,
                            j.attempts,
                            j.last_error.as_deref().unwrap_or("")
                        );
                    }
                }
                Ok(())
            }
            MediaCommand::Retry { id: Some(id), .. } => {
                let id =
                    custody_core::EvidenceId::parse(&id).map_err(|e| anyhow::anyhow!("{e}"))?;
                anyhow::ensure!(
                    meta.requeue_media(id, now).await?,
                    "evidence {id} has no media job (no such evidence?)"
                );
                println!("evidence {id}: media work queued again");
                Ok(())
            }
            MediaCommand::Retry { .. } => {
                let mut n = 0;
                loop {
                    let ids = meta.failed_media(500).await?;
                    if ids.is_empty() {
                        break;
                    }
                    for id in ids {
                        meta.requeue_media(id, now).await?;
                        n += 1;
                    }
                }
                println!("{n} failed item(s) queued again");
                Ok(())
            }
        }
    }
    .await;
    meta.close().await;
    result
}

fn signed_note_name_ok(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+')
}

#[cfg(test)]
mod tests {
    use super::*;
    use custody_core::ledger::{MemoryTree, sign_checkpoint, verify_checkpoint};

    #[test]
    fn keygen_writes_a_pair_that_signs_and_verifies_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let (skey, vkey) = keygen("custody.test/ledger", dir.path(), KeyKind::Ed25519).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&skey).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let (s, v) = (
            std::fs::read_to_string(&skey).unwrap(),
            std::fs::read_to_string(&vkey).unwrap(),
        );
        let mut t = MemoryTree::new();
        t.append(b"entry").unwrap();
        let note =
            sign_checkpoint("custody.test/ledger", 1, t.root(1).unwrap(), &[s.trim()]).unwrap();
        assert_eq!(verify_checkpoint(&note, &[v.trim()]).unwrap().size, 1);
        let again = keygen("custody.test/ledger", dir.path(), KeyKind::Ed25519).unwrap_err();
        assert!(again.to_string().contains("refusing to replace"), "{again}");
        assert!(keygen("bad name", dir.path(), KeyKind::Ed25519).is_err());
    }

    #[test]
    fn ledger_keys_load_with_their_sm2_partner_and_a_missing_key_says_how_to_make_one() {
        let dir = tempfile::tempdir().unwrap();
        let missing = load_ledger_keys(&dir.path().join("ledger.key"), None).unwrap_err();
        let msg = format!("{missing:#}");
        assert!(
            msg.contains("does not exist") && msg.contains("custody admin keygen"),
            "{msg}"
        );
        let (ed, _) = keygen("custody.test/ledger", dir.path(), KeyKind::Ed25519).unwrap();
        let (sm2, _) = keygen("custody.test/ledger", dir.path(), KeyKind::Sm2).unwrap();
        let keys = load_ledger_keys(&ed, Some(&sm2)).unwrap();
        assert_eq!(keys.origin, "custody.test/ledger");
        assert_eq!(keys.signing.len(), 2);
        let mut t = MemoryTree::new();
        t.append(b"entry").unwrap();
        let signing: Vec<&str> = keys.signing.iter().map(String::as_str).collect();
        let verifiers: Vec<&str> = keys.verifiers.iter().map(String::as_str).collect();
        let note = sign_checkpoint(&keys.origin, 1, t.root(1).unwrap(), &signing).unwrap();
        assert_eq!(verify_checkpoint(&note, &verifiers).unwrap().size, 1);
        // Swapped roles and mismatched pairs are refused.
        assert!(load_ledger_keys(&sm2, None).is_err());
        std::fs::copy(
            dir.path().join("ledger-sm2.pub"),
            dir.path().join("ledger.pub"),
        )
        .unwrap();
        let e = load_ledger_keys(&ed, None).unwrap_err();
        assert!(format!("{e:#}").contains("does not belong"), "{e:#}");
    }
}
