//! The docking station under bad input: an unreadable file, a file that changes while it is being hashed,
//! a recorder undocked in the middle of an upload, a server whose disk is full, and a server whose
//! receipts are signed by another key than the one pinned. Each must give a clear log line and a journal
//! state, and never a freed file.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::station::*;
use custody::process::{ServerProcess, sibling_binary};
use custody_station::{FileRow, FileState, Journal};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A server (on `data_dir`), a registered station, one slot, and the agent's configuration.
struct Rig {
    dir: tempfile::TempDir,
    server: ServerProcess,
    /// A reader's session token.
    token: String,
    setup: StationSetup,
    config: PathBuf,
    log: PathBuf,
    slot: PathBuf,
}

impl Drop for Rig {
    fn drop(&mut self) {
        common::keep_if_failed(&mut self.dir);
    }
}

impl Rig {
    fn new(data_dir: Option<&Path>, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let data_dir = data_dir
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.path().join("data"));
        let server = ServerProcess::spawn(&sibling_binary().unwrap(), &data_dir, &[]).unwrap();
        let credential_file = dir.path().join("credential");
        std::fs::write(&credential_file, server.add_station("ST-01").unwrap()).unwrap();
        let token = server.user_token("reader", common::READER_ROLES).unwrap();
        let slots_dir = dir.path().join("slots");
        let slot = slots_dir.join("01");
        std::fs::create_dir_all(&slot).unwrap();
        let setup = StationSetup {
            station_id: "ST-01".into(),
            credential_file,
            server: format!("http://{}", server.addrs.grpc),
            ledger_key: data_dir.join("keys/ledger.pub"),
            slots_dir,
            journal: dir.path().join("station/journal.db"),
            mqtt_url: server
                .addrs
                .mqtt
                .map(|a| format!("mqtt://127.0.0.1:{}", a.port())),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        let config = dir.path().join("station.toml");
        setup.write(&config);
        let log = dir.path().join("station.log");
        Self {
            server,
            token,
            setup,
            config,
            log,
            slot,
            dir,
        }
    }

    fn http(&self) -> String {
        format!("http://{}", self.server.addrs.http)
    }

    fn staged(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    async fn rows(&self) -> Vec<FileRow> {
        let j = Journal::open(&self.setup.journal).await.unwrap();
        let rows = j.all_files().await.unwrap();
        j.close().await;
        rows
    }

    /// Waits until some journal row satisfies `ok`, and returns it.
    async fn wait_row(&self, what: &str, ok: impl Fn(&FileRow) -> bool) -> FileRow {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.setup.journal.exists()
                && let Some(r) = self.rows().await.into_iter().find(|r| ok(r))
            {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "no journal row {what}; rows: {:#?}\nlog:\n{}",
                self.rows().await,
                tail(&self.log)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the agent logged a line at `level` containing `needle`.
    async fn wait_log(&self, level: &str, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(l) = log_lines(&self.log, level, needle).into_iter().next() {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "no {level} log line with {needle:?}; log:\n{}",
                tail(&self.log)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 11) as u8 ^ seed)
        .collect()
}

const GOOD: &str = "DCIM/VIDEO/ZFY00900_20261122083000_0001.MP4";

#[tokio::test]
async fn an_unreadable_file_and_a_file_changing_while_hashed_are_never_freed_and_say_why() {
    let rig = Rig::new(None, &[]);
    let recorder = rig.staged("recorder");
    let good = pattern(1 << 20, 1);
    write_recorder(&recorder, "ZFY00900", &[(GOOD, &good)]);
    // A file whose bytes cannot be read: a link to nowhere (the tests run as root, so permissions would
    // not stop a read).
    let broken = "DCIM/VIDEO/ZFY00900_20261122090000_0002_IMP.MP4";
    std::os::unix::fs::symlink("/nonexistent/custody/gone.MP4", recorder.join(broken)).unwrap();
    // A file that keeps growing while the agent works on it.
    let changing = "DCIM/VIDEO/ZFY00900_20261122100000_0003.MP4";
    std::fs::write(recorder.join(changing), pattern(48 << 20, 3)).unwrap();
    dock(&recorder, &rig.slot);
    let writer = {
        let path = rig.slot.join(changing);
        std::thread::spawn(move || {
            use std::io::Write;
            let deadline = Instant::now() + Duration::from_secs(6);
            while Instant::now() < deadline {
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .unwrap();
                f.write_all(&[7u8; 4096]).unwrap();
                drop(f);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let station = StationProcess::spawn(&rig.config, &rig.log);

    // The good file goes through; the broken one is retried and kept, saying why.
    rig.wait_row("freeing the good file", |r| {
        r.rel_path == GOOD && r.state == FileState::Freed
    })
    .await;
    let row = rig
        .wait_row("noting the unreadable file", |r| {
            r.rel_path == broken && r.error_kind.as_deref() == Some("unreadable")
        })
        .await;
    assert_eq!(row.state, FileState::Found);
    assert!(
        row.last_error.as_deref().unwrap().contains("No such file"),
        "{row:?}"
    );
    let line = rig.wait_log("ERROR", "cannot read the file").await;
    assert!(line.contains(broken), "{line}");
    assert!(
        rig.slot.join(broken).symlink_metadata().is_ok(),
        "the link stays"
    );

    // Versions of the changing file that changed under the hasher end superseded, saying so.
    let row = rig
        .wait_row("superseding a version changed while hashed", |r| {
            r.rel_path == changing
                && r.state == FileState::Superseded
                && r.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("changed while being hashed"))
        })
        .await;
    assert!(row.receipt.is_none(), "{row:?}");
    rig.wait_log("WARN", "changed while being hashed").await;
    writer.join().unwrap();

    // Once it stops changing, its final content is received and only then freed.
    let final_sha = sha256_of(&rig.slot.join(changing));
    let freed = rig
        .wait_row("freeing the final version", |r| {
            r.rel_path == changing && r.state == FileState::Freed
        })
        .await;
    assert_eq!(freed.sha256.unwrap().to_hex(), final_sha);
    let held = server_hashes(&rig.http(), &rig.token, "ZFY00900")
        .await
        .unwrap();
    assert_eq!(
        held.len(),
        2,
        "only the good file and the final version: {held:?}"
    );
    assert!(held.contains_key(&final_sha));
    for r in rig.rows().await {
        assert!(
            r.state != FileState::Freed || r.rel_path != broken,
            "the unreadable file was freed: {r:?}"
        );
    }
    assert!(station.stop().success());
}

#[tokio::test]
async fn a_recorder_undocked_mid_upload_keeps_its_file_and_resumes_when_docked_again() {
    let rig = Rig::new(
        None,
        &[
            "bandwidth = \"2MiB\"",
            "segment_size = \"512KiB\"",
            "chunk_size = \"128KiB\"",
        ],
    );
    let recorder = rig.staged("recorder");
    let data = pattern(12 << 20, 5);
    write_recorder(&recorder, "ZFY00901", &[(GOOD, &data)]);
    dock(&recorder, &rig.slot);
    let station = StationProcess::spawn(&rig.config, &rig.log);
    rig.wait_row("uploading", |r| {
        r.state == FileState::Uploading && r.uploaded >= 2 << 20
    })
    .await;
    let away = rig.staged("away");
    undock(&rig.slot, &away);
    let line = rig.wait_log("WARN", "undocked during the upload").await;
    assert!(line.contains(GOOD), "{line}");
    let row = rig
        .wait_row("noting the undock", |r| {
            r.error_kind.as_deref() == Some("undocked")
        })
        .await;
    assert_eq!(row.state, FileState::Uploading);
    assert!(
        row.uploaded > 0 && row.uploaded < data.len() as u64,
        "{row:?}"
    );
    rig.wait_log(
        "WARN",
        "recorder undocked before all its files were received",
    )
    .await;
    assert_eq!(
        sha256_of(&away.join(GOOD)),
        sha256_of_bytes(&data),
        "the file is untouched"
    );

    // Docked again: the upload resumes where the server stopped, and only then is the file freed.
    std::fs::remove_dir(&rig.slot).unwrap();
    dock(&away, &rig.slot);
    let freed = rig
        .wait_row("freeing after the re-dock", |r| r.state == FileState::Freed)
        .await;
    assert_eq!(freed.id, row.id, "the same row resumed");
    let held = server_hashes(&rig.http(), &rig.token, "ZFY00901")
        .await
        .unwrap();
    assert_eq!(
        held.get(&sha256_of_bytes(&data)),
        Some(&(data.len() as u64))
    );
    assert!(!rig.slot.join(GOOD).exists());
    assert!(station.stop().success());
}

#[tokio::test]
async fn a_full_server_disk_keeps_the_file_on_the_recorder_and_says_so() {
    let disk = custody_store::testing::SmallDisk::mount("16m");
    let rig = Rig::new(Some(&disk.dir.path().join("data")), &[]);
    let recorder = rig.staged("recorder");
    let big = pattern(40 << 20, 9);
    write_recorder(&recorder, "ZFY00902", &[(GOOD, &big)]);
    dock(&recorder, &rig.slot);
    let station = StationProcess::spawn(&rig.config, &rig.log);
    let row = rig
        .wait_row("noting the full disk", |r| {
            r.error_kind.as_deref() == Some("server_full")
        })
        .await;
    assert!(
        row.last_error
            .as_deref()
            .unwrap()
            .contains("storage is full"),
        "{row:?}"
    );
    assert!(
        matches!(row.state, FileState::Hashed | FileState::Uploading),
        "{row:?}"
    );
    rig.wait_log("ERROR", "the server's storage is full").await;
    // It keeps trying, and never frees the file.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(rig.rows().await.iter().all(|r| r.state != FileState::Freed));
    assert_eq!(sha256_of(&rig.slot.join(GOOD)), sha256_of_bytes(&big));
    assert!(station.stop().success());
}

#[tokio::test]
async fn a_receipt_that_does_not_verify_against_the_pinned_key_never_frees_a_file() {
    let mut rig = Rig::new(None, &[]);
    // Pin a key of another log.
    let other = rig.staged("other-keys");
    let out = std::process::Command::new(sibling_binary().unwrap())
        .args([
            "admin",
            "keygen",
            "--origin",
            "other.example/ledger",
            "--out",
        ])
        .arg(&other)
        .output()
        .unwrap();
    assert!(out.status.success());
    let right_key = rig.setup.ledger_key.clone();
    rig.setup.ledger_key = other.join("ledger.pub");
    rig.setup.write(&rig.config);
    let recorder = rig.staged("recorder");
    let data = pattern(3 << 20, 11);
    write_recorder(&recorder, "ZFY00903", &[(GOOD, &data)]);
    dock(&recorder, &rig.slot);
    let station = StationProcess::spawn(&rig.config, &rig.log);
    let row = rig
        .wait_row("noting the receipt that does not verify", |r| {
            r.error_kind.as_deref() == Some("receipt")
        })
        .await;
    assert!(
        row.last_error
            .as_deref()
            .unwrap()
            .contains("does not verify against the pinned ledger key"),
        "{row:?}"
    );
    assert_eq!(row.state, FileState::Uploading);
    assert!(row.receipt.is_none());
    let line = rig
        .wait_log("ERROR", "does not verify against the pinned ledger key")
        .await;
    assert!(line.contains(GOOD), "{line}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        rig.slot.join(GOOD).exists(),
        "the file stays on the recorder"
    );
    assert!(station.stop().success());

    // With the right key pinned, the same file is receipted (without a second upload) and freed.
    rig.setup.ledger_key = right_key;
    rig.setup.write(&rig.config);
    let station = StationProcess::spawn(&rig.config, &rig.log);
    let freed = rig
        .wait_row("freeing with the right key", |r| {
            r.state == FileState::Freed
        })
        .await;
    assert_eq!(freed.id, row.id);
    assert!(!rig.slot.join(GOOD).exists());
    assert!(station.stop().success());
}
