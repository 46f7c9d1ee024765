//! The docking station end to end: `custody-sim` recorders docked into a station whose agent
//! (`custody-station`, a child process) offloads them into a running `custody serve`. Every file's bytes
//! and hashes must arrive, and no file may leave its recorder before the server holds it and the agent
//! holds a receipt that verifies against the pinned key. Then the same with the agent SIGKILLed at random
//! moments and the server killed and restarted once: nothing lost, nothing uploaded twice, nothing freed
//! without a receipt.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::station::*;
use custody::process::{ServerProcess, sibling_binary};
use custody_core::ledger::LedgerProof;
use custody_station::{FileState, Journal};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const RECORDERS: usize = 4;

/// A server and everything a station needs to talk to it.
struct Rig {
    dir: tempfile::TempDir,
    exe: PathBuf,
    data_dir: PathBuf,
    args: Vec<String>,
    server: Option<ServerProcess>,
    /// A reader's session token (sessions outlive server restarts).
    token: String,
    /// A supervisor's session token, to approve the reader's download requests.
    approver: String,
    station_id: String,
    setup: StationSetup,
    config: PathBuf,
    log: PathBuf,
    /// PostgreSQL URL when the server runs on PostgreSQL.
    pg_url: Option<String>,
    broker: Option<String>,
}

impl Drop for Rig {
    fn drop(&mut self) {
        // A real broker keeps retained messages forever: clear this run's.
        if let Some(url) = &self.broker
            && let Some((host, port)) = url.trim_start_matches("mqtt://").rsplit_once(':')
        {
            let _ = std::process::Command::new("mosquitto_pub")
                .args(["-h", host, "-p", port, "-r", "-n", "-t"])
                .arg(format!("custody/v1/station/{}/slots", self.station_id))
                .status();
        }
        // A failed test leaves its server and agent logs, data and journal for a look.
        common::keep_if_failed(&mut self.dir);
    }
}

fn tag() -> String {
    format!("{:08x}", rand::random::<u32>())
}

impl Rig {
    async fn new(real: bool, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let exe = sibling_binary().unwrap();
        let data_dir = dir.path().join("data");
        let t = tag();
        let mut args: Vec<String> = vec!["--ledger-batch-interval".into(), "20ms".into()];
        let (mut pg_url, mut broker, mut station_id) = (None, None, "ST-01".to_string());
        if real {
            args.extend(common::real_backend_args(dir.path(), "station-e2e").await);
            pg_url =
                Some(args[args.iter().position(|a| a == "--database-url").unwrap() + 1].clone());
            let url = std::env::var("CUSTODY_TEST_MQTT_URL")
                .unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into());
            args.extend([
                "--mqtt-url".into(),
                url.clone(),
                "--mqtt-client-id".into(),
                format!("custody-e2e-{t}"),
                "--mqtt-share-group".into(),
                format!("e2e{t}"),
            ]);
            broker = Some(url);
            // Retained status outlives runs on a real broker: a fresh station id per run.
            station_id = format!("ST-{t}");
        }
        let server = ServerProcess::spawn(&exe, &data_dir, &args).unwrap();
        let credential_file = dir.path().join("credential");
        std::fs::write(&credential_file, server.add_station(&station_id).unwrap()).unwrap();
        let token = server.user_token("reader", common::READER_ROLES).unwrap();
        let approver = server
            .user_token("approver", common::APPROVER_ROLES)
            .unwrap();
        let slots_dir = dir.path().join("slots");
        for i in 1..=RECORDERS {
            std::fs::create_dir_all(slots_dir.join(format!("{i:02}"))).unwrap();
        }
        let mqtt_url = broker.clone().or_else(|| {
            server
                .addrs
                .mqtt
                .map(|a| format!("mqtt://127.0.0.1:{}", a.port()))
        });
        let setup = StationSetup {
            station_id: station_id.clone(),
            credential_file,
            server: format!("http://{}", server.addrs.grpc),
            ledger_key: data_dir.join("keys/ledger.pub"),
            slots_dir,
            journal: dir.path().join("station/journal.db"),
            mqtt_url,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        let config = dir.path().join("station.toml");
        setup.write(&config);
        let log = dir.path().join("station.log");
        Self {
            exe,
            data_dir,
            args,
            server: Some(server),
            token,
            approver,
            station_id,
            setup,
            config,
            log,
            pg_url,
            broker,
            dir,
        }
    }

    fn http(&self) -> String {
        format!("http://{}", self.server.as_ref().unwrap().addrs.http)
    }

    fn slot(&self, i: usize) -> PathBuf {
        self.setup.slots_dir.join(format!("{:02}", i + 1))
    }

    /// Makes the recorders (outside the slots) and returns what is on them.
    fn recorders(&self, hours: f64) -> Vec<(PathBuf, Vec<Facts>)> {
        (0..RECORDERS)
            .map(|i| {
                let device = format!("ZFY{:05}", 100 + i);
                let staged = self.dir.path().join(format!("recorder-{i}"));
                make_recorder(&staged, &device, 7 + i as u64, hours);
                let facts = manifest(&staged, &self.slot(i), &device);
                (staged, facts)
            })
            .collect()
    }

    fn spawn_station(&self) -> StationProcess {
        StationProcess::spawn(&self.config, &self.log)
    }

    /// Kills the server hard and starts it again on new ports; the station's config follows.
    fn restart_server(&mut self) {
        self.server.take().unwrap().kill_hard().unwrap();
        let server = ServerProcess::spawn(&self.exe, &self.data_dir, &self.args).unwrap();
        self.setup.server = format!("http://{}", server.addrs.grpc);
        if self.broker.is_none() {
            self.setup.mqtt_url = server
                .addrs
                .mqtt
                .map(|a| format!("mqtt://127.0.0.1:{}", a.port()));
        }
        self.setup.write(&self.config);
        self.server = Some(server);
    }

    /// Upload sessions per SHA-256 (hex) in the server's database.
    async fn uploads_per_file(&self) -> HashMap<String, i64> {
        use sqlx::Row;
        let sql = "SELECT sha256, COUNT(*) AS n FROM uploads GROUP BY sha256";
        let rows = match &self.pg_url {
            Some(url) => {
                let pool = sqlx::PgPool::connect(url).await.unwrap();
                let rows: Vec<(Vec<u8>, i64)> = sqlx::query(sql)
                    .fetch_all(&pool)
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| (r.get(0), r.get(1)))
                    .collect();
                pool.close().await;
                rows
            }
            None => {
                let url = format!("sqlite://{}", self.data_dir.join("custody.db").display());
                let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
                let rows: Vec<(Vec<u8>, i64)> = sqlx::query(sql)
                    .fetch_all(&pool)
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| (r.get(0), r.get(1)))
                    .collect();
                pool.close().await;
                rows
            }
        };
        rows.into_iter().map(|(h, n)| (hex::encode(h), n)).collect()
    }

    /// Waits until the server shows every slot of the station done (the MQTT path).
    async fn wait_slots_done(&self) -> serde_json::Value {
        let client = common::authed(&self.token);
        let url = format!("{}/api/v1/stations/{}", self.http(), self.station_id);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v: serde_json::Value = client.get(&url).send().await.unwrap().json().await.unwrap();
            let slots = v["slots"]["slots"].as_array().cloned().unwrap_or_default();
            if slots.len() == RECORDERS && slots.iter().all(|s| s["state"] == "done") {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "the server never showed all slots done: {v}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every claim the tests make about the end state.
    async fn check_end_state(&self, recorders: &[(PathBuf, Vec<Facts>)], watcher: &Watcher) {
        let violations = watcher.violations.lock().unwrap().clone();
        assert!(violations.is_empty(), "freed too early: {violations:?}");
        let key = std::fs::read_to_string(&self.setup.ledger_key).unwrap();
        let journal = Journal::open(&self.setup.journal).await.unwrap();
        let rows = journal.all_files().await.unwrap();
        journal.close().await;
        let client = common::authed(&self.token);
        let mut expected = 0;
        for (i, (_, facts)) in recorders.iter().enumerate() {
            let device = &facts[0].device;
            let held = server_hashes(&self.http(), &self.token, device)
                .await
                .unwrap();
            let want: HashMap<String, u64> =
                facts.iter().map(|f| (f.sha256.clone(), f.size)).collect();
            assert_eq!(
                held, want,
                "the server's evidence of {device} is not what the recorder held"
            );
            for f in facts {
                expected += 1;
                assert!(!f.slot_path.exists(), "{} was never freed", f.rel);
                assert!(
                    moved_copy_matches(&self.slot(i), f),
                    "{} moved copy differs",
                    f.rel
                );
                // The server's bytes are the recorder's bytes.
                let list: serde_json::Value = client
                    .get(format!(
                        "{}/api/v1/evidence?device={device}&limit=1000",
                        self.http()
                    ))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let item = list["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|e| e["sha256"] == f.sha256.as_str())
                    .unwrap()
                    .clone();
                // The station reported the officer bound on the recorder and its clock offset.
                let info = custody_core::recorder::DeviceInfo::parse(
                    &std::fs::read_to_string(
                        self.slot(i).join(custody_core::recorder::DEVICE_INFO_FILE),
                    )
                    .unwrap(),
                )
                .unwrap();
                assert_eq!(
                    item["attribution"]["reported"],
                    info.badge.as_str(),
                    "{item}"
                );
                assert_eq!(item["attribution"]["source"], "recorder", "{item}");
                assert!(item["attribution"]["clock_offset_ms"].is_i64(), "{item}");
                // Originals leave only on a request another supervisor approved.
                common::approve_download(
                    &self.http(),
                    &self.token,
                    &self.approver,
                    item["id"].as_str().unwrap(),
                )
                .await;
                let body = client
                    .get(format!(
                        "{}{}",
                        self.http(),
                        item["content_url"].as_str().unwrap()
                    ))
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
                assert_eq!(
                    custody_core::ContentHasher::digest(&body, false)
                        .sha256
                        .to_hex(),
                    f.sha256,
                    "downloaded bytes of {} differ",
                    f.rel
                );
                // The journal freed it on a receipt for exactly these bytes that verifies offline.
                let row = rows
                    .iter()
                    .find(|r| {
                        r.device_id.as_str() == device
                            && r.rel_path == f.rel
                            && r.state == FileState::Freed
                    })
                    .unwrap_or_else(|| panic!("no freed journal row for {}", f.rel));
                let proof: LedgerProof =
                    serde_json::from_str(row.receipt.as_deref().unwrap()).unwrap();
                let v = proof.verify(&[key.trim()]).unwrap();
                assert_eq!(v.entry.sha256.to_hex(), f.sha256);
                assert_eq!(row.freed_how.as_deref(), Some("moved"));
            }
        }
        let freed = rows.iter().filter(|r| r.state == FileState::Freed).count();
        assert_eq!(freed, expected, "one freed row per file");
        assert!(
            rows.iter().all(|r| r.state == FileState::Freed),
            "rows left unfinished: {:?}",
            rows.iter()
                .filter(|r| r.state != FileState::Freed)
                .collect::<Vec<_>>()
        );
        // Each file reached the server in exactly one upload session.
        let uploads = self.uploads_per_file().await;
        let all: HashSet<&String> = recorders
            .iter()
            .flat_map(|(_, f)| f.iter().map(|x| &x.sha256))
            .collect();
        assert_eq!(
            uploads.len(),
            all.len(),
            "uploads of unknown bytes: {uploads:?}"
        );
        for sha in all {
            assert_eq!(
                uploads.get(sha),
                Some(&1),
                "{sha} was uploaded {:?} times",
                uploads.get(sha)
            );
        }
        // The ledger and the stored bytes check out.
        let storage = strip_values_of(
            &self.args,
            &[
                "--mqtt-url",
                "--mqtt-client-id",
                "--mqtt-share-group",
                "--ledger-batch-interval",
            ],
        );
        let out = std::process::Command::new(&self.exe)
            .args(["verify", "ledger", "--data-dir"])
            .arg(&self.data_dir)
            .args(&storage)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "custody verify ledger: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `args` without the named flags and their values.
fn strip_values_of(args: &[String], flags: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip = false;
    for a in args {
        if skip {
            skip = false;
            continue;
        }
        if flags.contains(&a.as_str()) {
            skip = true;
            continue;
        }
        out.push(a.clone());
    }
    out
}

fn all_facts(recorders: &[(PathBuf, Vec<Facts>)]) -> Vec<Facts> {
    recorders.iter().flat_map(|(_, f)| f.clone()).collect()
}

async fn four_recorders_are_offloaded_and_freed_only_on_verified_receipts(real: bool) {
    let rig = Rig::new(real, &[]).await;
    let recorders = rig.recorders(0.03);
    let facts = all_facts(&recorders);
    assert!(
        facts.len() >= RECORDERS * 4,
        "recorders too small: {}",
        facts.len()
    );
    let station = rig.spawn_station();
    let watcher = Watcher::start(facts.clone(), &rig.http(), &rig.token);
    for (i, (staged, _)) in recorders.iter().enumerate() {
        dock(staged, &rig.slot(i));
    }
    watcher
        .wait_all(facts.len(), Duration::from_secs(180), &rig.log)
        .await;
    let station_view = rig.wait_slots_done().await;
    assert_eq!(station_view["online"], true, "{station_view}");
    for s in station_view["slots"]["slots"].as_array().unwrap() {
        assert!(s["officer"]["badge"].is_string(), "{s}");
        assert_eq!(s["files_pending"], 0, "{s}");
    }
    assert!(
        station.stop().success(),
        "the agent stops cleanly on SIGTERM"
    );
    rig.check_end_state(&recorders, &watcher).await;
    assert_eq!(
        log_lines(&rig.log, "INFO", "receipt verified").len(),
        facts.len(),
        "one verified receipt per file"
    );
    assert!(
        log_lines(&rig.log, "ERROR", "").is_empty(),
        "errors: {}",
        tail(&rig.log)
    );
}

#[tokio::test]
async fn four_recorders_are_offloaded_and_freed_only_on_verified_receipts_on_sqlite_disk_and_the_embedded_endpoint()
 {
    four_recorders_are_offloaded_and_freed_only_on_verified_receipts(false).await;
}

#[tokio::test]
async fn four_recorders_are_offloaded_and_freed_only_on_verified_receipts_on_postgres_s3_and_mosquitto()
 {
    four_recorders_are_offloaded_and_freed_only_on_verified_receipts(true).await;
}

/// Kills of the agent at random moments.
const KILLS: usize = 12;

async fn nothing_is_lost_duplicated_or_freed_early_when_the_agent_is_killed_and_the_server_restarts(
    real: bool,
) {
    // Slow uploads and small segments, so that kills land mid-file and between journal steps.
    let mut rig = Rig::new(
        real,
        &[
            "bandwidth = \"2MiB\"",
            "segment_size = \"1MiB\"",
            "chunk_size = \"256KiB\"",
            "concurrency = 3",
        ],
    )
    .await;
    let recorders = rig.recorders(0.03);
    let facts = all_facts(&recorders);
    let watcher = Watcher::start(facts.clone(), &rig.http(), &rig.token);
    for (i, (staged, _)) in recorders.iter().enumerate() {
        dock(staged, &rig.slot(i));
    }
    let mut kills = 0;
    let mut restarted = false;
    while kills < KILLS {
        let station = rig.spawn_station();
        let run_for = Duration::from_millis(200 + rand::random::<u64>() % 1000);
        tokio::time::sleep(run_for).await;
        station.kill_hard();
        kills += 1;
        if kills == KILLS / 2 {
            rig.restart_server();
            *watcher.http.lock().unwrap() = rig.http();
            restarted = true;
        }
    }
    assert!(restarted);
    let freed_during_kills = watcher.gone();
    let station = rig.spawn_station();
    watcher
        .wait_all(facts.len(), Duration::from_secs(240), &rig.log)
        .await;
    rig.wait_slots_done().await;
    assert!(station.stop().success());
    eprintln!(
        "chaos ({}): {} files, {KILLS} agent kills, 1 server restart, {freed_during_kills} files freed before the last start",
        if real {
            "postgres+s3+mosquitto"
        } else {
            "sqlite+disk+embedded"
        },
        facts.len()
    );
    rig.check_end_state(&recorders, &watcher).await;
}

#[tokio::test]
async fn nothing_is_lost_duplicated_or_freed_early_when_the_agent_is_killed_and_the_server_restarts_on_sqlite_and_disk()
 {
    nothing_is_lost_duplicated_or_freed_early_when_the_agent_is_killed_and_the_server_restarts(
        false,
    )
    .await;
}

#[tokio::test]
async fn nothing_is_lost_duplicated_or_freed_early_when_the_agent_is_killed_and_the_server_restarts_on_postgres_and_s3()
 {
    nothing_is_lost_duplicated_or_freed_early_when_the_agent_is_killed_and_the_server_restarts(
        true,
    )
    .await;
}
