//! The ledger survives SIGKILL during heavy appends: the server is killed 20 times at random moments while
//! uploads commit (each answered with a receipt) and reads append view events. Afterwards the log
//! verifies (`custody verify ledger`, exit 0), every acknowledged receipt still verifies, its entry is at
//! the same index in the final log, and its checkpoint is consistent with the final one.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use custody::client::{Source, Uploader};
use custody::process::{ServerProcess, sibling_binary};
use custody_core::ledger::{
    LedgerEntry, LedgerProof, TreeHash, verify_checkpoint, verify_consistency, verify_inclusion,
};
use custody_proto::v1 as pb;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KILLS: usize = 20;

fn file_bytes(n: u64) -> Vec<u8> {
    let mut v = n.to_be_bytes().repeat(512);
    v.extend_from_slice(b"custody crash test");
    v
}

fn declaration(data: &[u8], n: u64) -> pb::BeginRequest {
    let d = custody_core::ContentHasher::digest(data, true);
    pb::BeginRequest {
        device_id: format!("ZFY{:03}", n % 7),
        station_id: "ST-09".into(),
        file_name: format!("ZFY{:03}_20261122{:06}_0001.MP4", n % 7, n),
        size: data.len() as i64,
        sha256: d.sha256.to_hex(),
        sm3: d.sm3.unwrap().to_hex(),
        capture_start: Some(prost_types::Timestamp {
            seconds: 1_795_000_000 + n as i64,
            nanos: 0,
        }),
        importance: pb::Importance::Normal.into(),
        media_type: pb::MediaType::Video.into(),
        officer_badge: String::new(),
        clock_offset_ms: None,
    }
}

fn proof_of(r: &pb::Receipt) -> LedgerProof {
    custody::client::receipt_proof(r).expect("every receipt carries a well-formed ledger proof")
}

fn hashes(v: &serde_json::Value) -> Vec<TreeHash> {
    v["hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let mut b = [0u8; 32];
            hex::decode_to_slice(h.as_str().unwrap(), &mut b).unwrap();
            TreeHash(b)
        })
        .collect()
}

/// Uploads and reads as fast as they go until the server dies; returns the receipts it was given.
async fn load(
    server: &ServerProcess,
    credential: &str,
    token: &str,
    first: u64,
    acked: Arc<Mutex<Vec<pb::Receipt>>>,
) {
    let grpc = server.addrs.grpc;
    let http = format!("http://{}", server.addrs.http);
    let mut tasks = Vec::new();
    for w in 0..6u64 {
        let (acked, credential) = (acked.clone(), credential.to_string());
        tasks.push(tokio::spawn(async move {
            let Ok(mut up) = Uploader::connect_addr(grpc, &credential).await else {
                return;
            };
            for i in 0.. {
                let n = first + w * 100_000 + i;
                let data = Arc::new(file_bytes(n));
                let d = data.clone();
                let src = Source::Generated(Arc::new(move |off, len| {
                    bytes::Bytes::copy_from_slice(&d[off as usize..off as usize + len])
                }));
                match up.upload(declaration(&data, n), &src).await {
                    Ok(r) => acked.lock().unwrap().push(r),
                    Err(_) => return,
                }
            }
        }));
    }
    for _ in 0..3 {
        let (acked, http) = (acked.clone(), http.clone());
        let client = common::authed(token);
        tasks.push(tokio::spawn(async move {
            loop {
                let id = acked.lock().unwrap().last().map(|r| r.evidence_id.clone());
                let Some(id) = id else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                if client
                    .get(format!("{http}/api/v1/evidence/{id}"))
                    .send()
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }));
    }
    futures::future::join_all(tasks).await;
}

async fn ledger_killed_during_appends_verifies_and_keeps_every_receipt(real: bool) {
    let exe = sibling_binary().unwrap();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let data_dir = dir.path().join("data");
    let mut args: Vec<String> = vec!["--ledger-batch-interval".into(), "20ms".into()];
    if real {
        args.extend(common::real_backend_args(dir.path(), "ledger-e2e").await);
    }
    let acked: Arc<Mutex<Vec<pb::Receipt>>> = Arc::default();
    let (mut credential, mut token) = (None, None);
    for round in 0..KILLS {
        let server = ServerProcess::spawn(&exe, &data_dir, &args).unwrap();
        let credential = credential.get_or_insert_with(|| server.add_station("ST-09").unwrap());
        let token =
            token.get_or_insert_with(|| server.user_token("reader", common::READER_ROLES).unwrap());
        let kill_after = Duration::from_millis(100 + rand::random::<u64>() % 500);
        let load = load(
            &server,
            credential,
            token,
            round as u64 * 1_000_000,
            acked.clone(),
        );
        tokio::select! {
            _ = load => panic!("load stopped while the server was up (round {round})"),
            _ = tokio::time::sleep(kill_after) => {}
        }
        server.kill_hard().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= KILLS,
        "too little load to test anything: {} receipts",
        acked.len()
    );

    // Restart, let the sequencer finish what the last kill interrupted, and compare.
    let server = ServerProcess::spawn(&exe, &data_dir, &args).unwrap();
    let http = format!("http://{}", server.addrs.http);
    let client = reqwest::Client::new();
    let key = std::fs::read_to_string(data_dir.join("keys/ledger.pub"))
        .unwrap()
        .trim()
        .to_string();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let note = client
        .get(format!("{http}/ledger/checkpoint"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let last = verify_checkpoint(note.as_bytes(), &[&key]).unwrap();
    let mut seen_index = std::collections::HashSet::new();
    for r in &acked {
        let v = proof_of(r).verify(&[&key]).unwrap();
        assert!(
            seen_index.insert(v.leaf_index),
            "two receipts name leaf {}",
            v.leaf_index
        );
        // The acknowledged entry is still at its index in the final log...
        let p: serde_json::Value = client
            .get(format!(
                "{http}/api/v1/ledger/proof/inclusion?index={}&size={}",
                v.leaf_index, last.size
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let leaf = LedgerEntry::decode(proof_of(r).entry.as_bytes())
            .unwrap()
            .leaf_hash();
        verify_inclusion(&hashes(&p), last.size, last.root, v.leaf_index, leaf).unwrap();
        // ...and the tree it was signed in is a prefix of the final tree.
        if v.checkpoint.size < last.size {
            let c: serde_json::Value = client
                .get(format!(
                    "{http}/api/v1/ledger/proof/consistency?old={}&new={}",
                    v.checkpoint.size, last.size
                ))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            verify_consistency(
                &hashes(&c),
                last.size,
                last.root,
                v.checkpoint.size,
                v.checkpoint.root,
            )
            .unwrap();
        }
    }
    server.stop().unwrap();

    // The whole store verifies: every tile, checkpoint, chain, row and object.
    let mut cmd = std::process::Command::new(&exe);
    cmd.args(["verify", "ledger", "--data-dir"]).arg(&data_dir);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a.starts_with("--database-url")
            || a.starts_with("--object-store")
            || a.starts_with("--s3-")
        {
            cmd.arg(a).arg(it.next().unwrap());
        }
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "custody verify ledger failed after {KILLS} kills:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("OK:"), "{stdout}");
    eprintln!(
        "{} receipts over {KILLS} kills; final log {} entries; {}",
        acked.len(),
        last.size,
        stdout.lines().last().unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ledger_killed_during_appends_verifies_and_keeps_every_receipt_embedded() {
    ledger_killed_during_appends_verifies_and_keeps_every_receipt(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ledger_killed_during_appends_verifies_and_keeps_every_receipt_postgres_s3() {
    ledger_killed_during_appends_verifies_and_keeps_every_receipt(true).await;
}
