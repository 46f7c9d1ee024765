//! A docking station rig for end-to-end tests: the `custody-station` agent as a child process (so it can
//! be killed), its configuration, recorders made by `custody-sim` (or by hand) and docked by renaming
//! them into a slot, an independent manifest of what was on each recorder, and a watcher that checks,
//! at the moment each file leaves its recorder, that the server already holds it.

use custody::process::sibling;
use custody_core::ContentHasher;
use custody_core::recorder::{DEVICE_INFO_FILE, UPLOADED_DIR};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One file on a recorder, as found before the agent saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub device: String,
    pub rel: String,
    /// Where it was on the recorder (the slot path once docked).
    pub slot_path: PathBuf,
    pub sha256: String,
    pub size: u64,
}

pub fn sha256_of_bytes(bytes: &[u8]) -> String {
    ContentHasher::digest(bytes, false).sha256.to_hex()
}

pub fn sha256_of(path: &Path) -> String {
    sha256_of_bytes(&std::fs::read(path).unwrap())
}

/// Every file of a recorder directory but its device-info file, hashed.
pub fn manifest(recorder: &Path, slot: &Path, device: &str) -> Vec<Facts> {
    let mut out = Vec::new();
    let mut stack = vec![recorder.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p
                .strip_prefix(recorder)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel == DEVICE_INFO_FILE {
                continue;
            }
            out.push(Facts {
                device: device.to_string(),
                slot_path: slot.join(&rel),
                sha256: sha256_of(&p),
                size: std::fs::metadata(&p).unwrap().len(),
                rel,
            });
        }
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    out
}

/// Makes a small recorder with real media (`custody-sim recorder`), quickly: low resolution and bit
/// rate, and the encoded seed clips cached across tests and runs.
pub fn make_recorder(out: &Path, device: &str, seed: u64, hours: f64) {
    let clips = std::env::temp_dir().join("custody-test-clips");
    let status = Command::new(sibling("custody-sim").unwrap())
        .args(["recorder", "--quiet", "--resolution", "640x360"])
        .args([
            "--video-bitrate",
            "1M",
            "--segment",
            "20s",
            "--device",
            device,
        ])
        .args(["--seed", &seed.to_string(), "--hours", &hours.to_string()])
        .arg("--clip-cache")
        .arg(&clips)
        .arg("--out")
        .arg(out)
        .stdout(Stdio::null())
        .status()
        .expect("custody-sim runs (cargo build --workspace builds it)");
    assert!(status.success(), "custody-sim recorder failed for {device}");
}

/// Writes a recorder by hand: a device-info file and the given files (relative path, bytes).
pub fn write_recorder(out: &Path, device: &str, files: &[(&str, &[u8])]) {
    std::fs::create_dir_all(out).unwrap();
    let info = format!(
        "format=1\nserial={device}\nbadge=0765432\nname=李四\nunit_no=440304000000\nunit_name=福田大队\ntz=+08:00\n"
    );
    std::fs::write(out.join(DEVICE_INFO_FILE), info).unwrap();
    for (rel, bytes) in files {
        let p = out.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
}

/// Docks a recorder: renames its directory into the (empty) slot directory in one step, as the
/// simulator does, so the agent never sees half a recorder.
pub fn dock(recorder: &Path, slot: &Path) {
    std::fs::rename(recorder, slot).unwrap();
}

/// Undocks: moves the slot's directory away (the mount disappears).
pub fn undock(slot: &Path, to: &Path) {
    std::fs::rename(slot, to).unwrap();
    std::fs::create_dir_all(slot).unwrap();
}

/// What the agent is told, beyond the defaults.
#[derive(Debug, Clone)]
pub struct StationSetup {
    pub station_id: String,
    pub credential_file: PathBuf,
    pub server: String,
    pub ledger_key: PathBuf,
    pub slots_dir: PathBuf,
    pub journal: PathBuf,
    pub mqtt_url: Option<String>,
    /// Extra TOML lines (e.g. `bandwidth = "4MiB"`).
    pub extra: Vec<String>,
}

impl StationSetup {
    pub fn write(&self, path: &Path) {
        let mut s = format!(
            "station_id = {:?}\ncredential_file = {:?}\nserver = {:?}\nledger_keys = [{:?}]\n\
             slots_dir = {:?}\njournal = {:?}\npoll_interval = \"200ms\"\nsettle_time = \"0s\"\n\
             retry_min = \"200ms\"\nretry_max = \"1s\"\nheartbeat_interval = \"1s\"\n",
            self.station_id,
            self.credential_file,
            self.server,
            self.ledger_key,
            self.slots_dir,
            self.journal
        );
        if let Some(m) = &self.mqtt_url {
            s.push_str(&format!("mqtt_url = {m:?}\n"));
        }
        for l in &self.extra {
            s.push_str(l);
            s.push('\n');
        }
        std::fs::write(path, s).unwrap();
    }
}

/// The agent as a child process, logging JSON lines to a file (appended across restarts).
#[derive(Debug)]
pub struct StationProcess {
    child: Child,
}

impl StationProcess {
    pub fn spawn(config: &Path, log: &Path) -> Self {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(sibling("custody-station").unwrap())
            .args(["--config"])
            .arg(config)
            .args(["run", "--daemon", "--log", "custody_station=debug,info"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("custody-station runs (cargo build --workspace builds it)");
        Self { child }
    }

    /// SIGKILL, as a power cut.
    pub fn kill_hard(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().unwrap()
    }
}

impl Drop for StationProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The agent's log lines at `level` (INFO, WARN, ERROR) whose text contains `needle`.
pub fn log_lines(log: &Path, level: &str, needle: &str) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&format!("\"level\":\"{level}\"")) && l.contains(needle))
        .map(String::from)
        .collect()
}

/// The SHA-256s of a device's evidence on the server (`None` while the server is unreachable).
pub async fn server_hashes(http: &str, token: &str, device: &str) -> Option<HashMap<String, u64>> {
    let client = super::authed(token);
    let mut out = HashMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{http}/api/v1/evidence?device={device}&limit=1000");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let v: serde_json::Value = client.get(url).send().await.ok()?.json().await.ok()?;
        for e in v["items"].as_array()? {
            out.insert(
                e["sha256"].as_str()?.to_string(),
                e["size"].as_u64().unwrap_or(0),
            );
        }
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return Some(out),
        }
    }
}

/// Watches files leave their recorders. For each one that does, asks the server (as soon as it is
/// reachable) whether it holds those bytes; a file freed before the server had it is a violation.
#[derive(Debug, Clone, Default)]
pub struct Watcher {
    pub gone: Arc<Mutex<HashSet<String>>>,
    pub violations: Arc<Mutex<Vec<String>>>,
    /// The server's HTTP base URL; changes when the server restarts.
    pub http: Arc<Mutex<String>>,
    /// A session token of a reader (sessions outlive server restarts).
    pub token: String,
}

impl Watcher {
    pub fn start(files: Vec<Facts>, http: &str, token: &str) -> Self {
        let w = Self {
            token: token.to_string(),
            ..Self::default()
        };
        *w.http.lock().unwrap() = http.to_string();
        let me = w.clone();
        tokio::spawn(async move {
            let mut pending: Vec<Facts> = files;
            while !pending.is_empty() {
                let mut left = Vec::new();
                let mut freed = Vec::new();
                for f in pending {
                    if f.slot_path.exists() {
                        left.push(f);
                    } else {
                        freed.push(f);
                    }
                }
                for f in freed {
                    let held = loop {
                        let http = me.http.lock().unwrap().clone();
                        if let Some(h) = server_hashes(&http, &me.token, &f.device).await {
                            break h.get(&f.sha256) == Some(&f.size);
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    };
                    if !held {
                        me.violations.lock().unwrap().push(format!(
                            "{} left recorder {} before the server held its bytes",
                            f.rel, f.device
                        ));
                    }
                    me.gone.lock().unwrap().insert(f.sha256.clone());
                }
                pending = left;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        });
        w
    }

    pub fn gone(&self) -> usize {
        self.gone.lock().unwrap().len()
    }

    /// Waits until `n` files left their recorders.
    pub async fn wait_all(&self, n: usize, within: Duration, log: &Path) {
        let deadline = Instant::now() + within;
        while self.gone() < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} files were freed in {within:?}; agent log:\n{}",
                self.gone(),
                tail(log)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The end of a log file, for failure messages.
pub fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Checks that a freed file's copy under `uploaded/` (free policy `move`) is byte for byte the original.
pub fn moved_copy_matches(slot: &Path, f: &Facts) -> bool {
    let moved = slot.join(UPLOADED_DIR).join(&f.rel);
    moved.exists() && sha256_of(&moved) == f.sha256
}
