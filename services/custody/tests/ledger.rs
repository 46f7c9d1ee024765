//! The ledger end to end: receipts, history, the public tile and proof endpoints, and `custody verify`
//! against honest and tampered stores, on the embedded defaults and on PostgreSQL + S3.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Backends, TestApp, begin_request, bytes, source, spawn_app};
use custody_core::ledger::{
    LedgerEntry, LedgerProof, TreeHash, sign_checkpoint, verify_checkpoint, verify_consistency,
    verify_inclusion,
};
use custody_proto::v1 as pb;
use serde_json::Value;

/// The wire receipt as the offline proof type.
fn proof_of(r: &pb::Receipt) -> LedgerProof {
    custody::client::receipt_proof(r).expect("every receipt carries a well-formed ledger proof")
}

fn hash(hex_str: &str) -> TreeHash {
    let mut b = [0u8; 32];
    hex::decode_to_slice(hex_str, &mut b).unwrap();
    TreeHash(b)
}

async fn json(app: &TestApp, path: &str) -> Value {
    let r = app.get(path).await;
    assert_eq!(r.status(), 200, "GET {path}");
    r.json().await.unwrap()
}

async fn a_commit_answers_with_a_receipt_that_verifies_offline(b: Backends) {
    let app = spawn_app(b).await;
    let data = bytes(300_000, 1);
    let mut up = app.uploader().await;
    let receipt = up
        .upload(begin_request(&data, "ZFY001"), &source(&data))
        .await
        .unwrap();
    let proof = proof_of(&receipt);
    let v = proof.verify(&[&app.verifier_key]).unwrap();
    assert_eq!(v.entry.kind.as_str(), "ingest");
    assert_eq!(v.entry.evidence_id.to_string(), receipt.evidence_id);
    assert_eq!(v.entry.sha256.to_hex(), receipt.sha256);
    assert_eq!(v.entry.size, data.len() as u64);
    assert_eq!(v.entry.actor, "station:ST-01");
    assert!(v.checkpoint.size > v.leaf_index);

    // The same file again: a duplicate, answered with the same ingest entry.
    let again = up.begin(begin_request(&data, "ZFY001")).await.unwrap();
    let pb::begin_response::Result::Receipt(dup) = again else {
        panic!("expected a receipt for bytes already stored")
    };
    assert!(dup.duplicate);
    let dup_proof = proof_of(&dup).verify(&[&app.verifier_key]).unwrap();
    assert_eq!(dup_proof.leaf_index, v.leaf_index);

    // As a file, checked by the offline command with only the public key.
    let dir = tempfile::tempdir().unwrap();
    let (file, key) = (
        dir.path().join("receipt.json"),
        dir.path().join("ledger.pub"),
    );
    std::fs::write(&file, serde_json::to_vec_pretty(&proof).unwrap()).unwrap();
    std::fs::write(&key, &app.verifier_key).unwrap();
    let report = custody::verify::receipt(&file, std::slice::from_ref(&key)).unwrap();
    assert!(report.starts_with("OK"), "{report}");

    // Altered in any part, it does not verify.
    let mut forged = proof.clone();
    forged.entry = forged.entry.replace(&receipt.sha256, &"0".repeat(64));
    std::fs::write(&file, serde_json::to_vec(&forged).unwrap()).unwrap();
    let e = custody::verify::receipt(&file, &[key]).unwrap_err();
    assert!(format!("{e:#}").contains("does NOT verify"), "{e:#}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_commit_answers_with_a_receipt_that_verifies_offline_embedded() {
    a_commit_answers_with_a_receipt_that_verifies_offline(Backends::Embedded).await;
}

#[tokio::test]
async fn a_commit_answers_with_a_receipt_that_verifies_offline_postgres_s3() {
    a_commit_answers_with_a_receipt_that_verifies_offline(Backends::Real).await;
}

async fn reads_and_downloads_are_events_in_the_items_history(b: Backends) {
    let app = spawn_app(b).await;
    let data = bytes(10_000, 2);
    let mut up = app.uploader().await;
    let r = up
        .upload(begin_request(&data, "ZFY002"), &source(&data))
        .await
        .unwrap();
    let id = &r.evidence_id;
    json(&app, &format!("/api/v1/evidence/{id}")).await;
    app.approve_download(id).await;
    let content = app.get(&format!("/api/v1/evidence/{id}/content")).await;
    assert_eq!(content.bytes().await.unwrap().as_ref(), data.as_slice());
    app.settle_ledger().await;

    let h = json(&app, &format!("/api/v1/evidence/{id}/history")).await;
    let events = h["events"].as_array().unwrap();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["ingest", "view", "download"]);
    let mut prev: Option<u64> = None;
    for e in events {
        let proof: LedgerProof = serde_json::from_value(e["proof"].clone()).unwrap();
        let v = proof.verify(&[&app.verifier_key]).unwrap();
        assert_eq!(v.entry.evidence_id.to_string(), *id);
        // Each event names the one before it: the item's chain.
        assert_eq!(v.entry.prev_evidence_leaf, prev);
        prev = Some(v.leaf_index);
        // Reads name the logged-in user; the ingest names the station.
        let actor = if v.entry.kind.as_str() == "ingest" {
            "station:ST-01"
        } else {
            "user:tester"
        };
        assert_eq!(v.entry.actor, actor);
    }
    app.shutdown().await;
}

#[tokio::test]
async fn reads_and_downloads_are_events_in_the_items_history_embedded() {
    reads_and_downloads_are_events_in_the_items_history(Backends::Embedded).await;
}

#[tokio::test]
async fn reads_and_downloads_are_events_in_the_items_history_postgres_s3() {
    reads_and_downloads_are_events_in_the_items_history(Backends::Real).await;
}

#[tokio::test]
async fn the_public_ledger_serves_checkpoints_tiles_and_proofs_that_check_out() {
    let app = spawn_app(Backends::Embedded).await;
    let mut up = app.uploader().await;
    let mut receipts = Vec::new();
    for i in 0..5u8 {
        let data = bytes(1000 + usize::from(i), 10 + i);
        receipts.push(
            up.upload(begin_request(&data, &format!("ZFY10{i}")), &source(&data))
                .await
                .unwrap(),
        );
    }
    app.settle_ledger().await;
    let first_size = proof_of(&receipts[0])
        .verify(&[&app.verifier_key])
        .unwrap()
        .checkpoint
        .size;

    let note = app.get("/ledger/checkpoint").await.text().await.unwrap();
    let cp = verify_checkpoint(note.as_bytes(), &[&app.verifier_key]).unwrap();
    assert_eq!(cp.size, 5);
    assert_eq!(cp.origin, custody::admin::TEST_ORIGIN);

    // The level-0 tile holds the leaf hashes; each entry in the bundle hashes to its slot.
    let tile = app.get("/ledger/tile/0/000.p/5").await;
    assert_eq!(tile.status(), 200);
    let tile = tile.bytes().await.unwrap();
    assert_eq!(tile.len(), 5 * 32);
    let bundle = app
        .get("/ledger/tile/entries/000.p/5")
        .await
        .bytes()
        .await
        .unwrap();
    let entries = custody_core::ledger::decode_entry_bundle(&bundle).unwrap();
    assert_eq!(entries.len(), 5);
    for (i, e) in entries.iter().enumerate() {
        let leaf = LedgerEntry::decode(e).unwrap().leaf_hash();
        assert_eq!(&tile[i * 32..i * 32 + 32], leaf.0.as_slice(), "leaf {i}");
        // Inclusion proof over HTTP for the same leaf.
        let p = json(
            &app,
            &format!("/api/v1/ledger/proof/inclusion?index={i}&size=5"),
        )
        .await;
        let path: Vec<TreeHash> = p["hashes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| hash(h.as_str().unwrap()))
            .collect();
        verify_inclusion(&path, 5, cp.root, i as u64, leaf).unwrap();
    }
    // Consistency from the tree the first receipt was signed at to the newest.
    let first_root = proof_of(&receipts[0])
        .verify(&[&app.verifier_key])
        .unwrap()
        .checkpoint
        .root;
    let c = json(
        &app,
        &format!("/api/v1/ledger/proof/consistency?old={first_size}&new=5"),
    )
    .await;
    let path: Vec<TreeHash> = c["hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| hash(h.as_str().unwrap()))
        .collect();
    verify_consistency(&path, 5, cp.root, first_size, first_root).unwrap();

    // Bad requests name what is wrong; paths outside the tiles are refused.
    let bad = app
        .get("/api/v1/ledger/proof/inclusion?index=9&size=5")
        .await;
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("index 9"));
    let bad = app
        .get("/api/v1/ledger/proof/consistency?old=3&new=99")
        .await;
    assert_eq!(bad.status(), 400);
    assert_eq!(
        app.get("/ledger/tile/0/%2E%2E%2F%2E%2E%2Fcustody.db")
            .await
            .status(),
        400
    );
    assert_eq!(app.get("/ledger/tile/0/abc").await.status(), 400);
    assert_eq!(app.get("/ledger/tile/0/001").await.status(), 404);
    app.shutdown().await;
}

// ---- custody verify against tampering ----

/// Runs SQL against the test's database, bypassing the server (as an attacker with database access).
async fn sql(app: &TestApp, statements: &str) {
    let url = app.config.database_url();
    let q = sqlx::raw_sql(sqlx::AssertSqlSafe(statements.to_string()));
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        q.execute(&pool).await.unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        q.execute(&pool).await.unwrap();
        pool.close().await;
    }
}

async fn verify(app: &TestApp) -> custody::verify::Report {
    let (meta, blobs) = custody::app::open_storage(&app.config).await.unwrap();
    let r = custody::verify::check(&meta, &blobs, std::slice::from_ref(&app.verifier_key), true)
        .await
        .unwrap();
    meta.close().await;
    r
}

/// Asserts that verification now reports a problem containing every one of `words`.
async fn assert_caught(app: &TestApp, what: &str, words: &[&str]) {
    let r = verify(app).await;
    assert!(
        r.problems
            .iter()
            .any(|p| words.iter().all(|w| p.contains(w))),
        "{what}: expected a problem naming {words:?}, got {:#?}",
        r.problems
    );
}

async fn verify_names_each_kind_of_tampering(b: Backends) {
    let app = spawn_app(b).await;
    let mut up = app.uploader().await;
    let mut ids = Vec::new();
    let mut shas = Vec::new();
    for i in 0..4u8 {
        let data = bytes(5000 + usize::from(i), 40 + i);
        let r = up
            .upload(
                begin_request(&data, if i % 2 == 0 { "ZFY201" } else { "ZFY202" }),
                &source(&data),
            )
            .await
            .unwrap();
        json(&app, &format!("/api/v1/evidence/{}", r.evidence_id)).await;
        ids.push(r.evidence_id);
        shas.push(r.sha256);
    }
    app.settle_ledger().await;
    let honest = verify(&app).await;
    assert!(honest.ok(), "{:#?}", honest.problems);
    assert_eq!(honest.entries, 8);
    assert_eq!(honest.evidence, 4);
    let (_, blobs) = custody::app::open_storage(&app.config).await.unwrap();
    let pg = b == Backends::Real;

    // 1. A checkpoint re-signed with another key (same log name).
    let (other, _) =
        custody_core::ledger::generate_key(&mut rand_core_06::OsRng, custody::admin::TEST_ORIGIN);
    let cp = app.ingest.ledger().checkpoint().await.unwrap().unwrap();
    let forged = String::from_utf8(
        sign_checkpoint(custody::admin::TEST_ORIGIN, cp.size, cp.root, &[&other]).unwrap(),
    )
    .unwrap();
    let allow = if pg {
        "ALTER TABLE ledger_checkpoints DISABLE TRIGGER ALL;"
    } else {
        "DROP TRIGGER ledger_checkpoints_are_append_only_u;"
    };
    sql(
        &app,
        &format!(
            "{allow} UPDATE ledger_checkpoints SET note = '{}' WHERE size = {};",
            forged.replace('\'', "''"),
            cp.size
        ),
    )
    .await;
    assert_caught(
        &app,
        "checkpoint signed with another key",
        &[&format!("checkpoint of size {}", cp.size), "signature"],
    )
    .await;

    // 2. A tile rewritten.
    let tile = "ledger/tile/0/000.p/8";
    let mut t = blobs.get_all(tile).await.unwrap().to_vec();
    t[40] ^= 1;
    blobs.put(tile, t.into()).await.unwrap();
    assert_caught(
        &app,
        "rewritten tile",
        &["object ledger/tile/0/000.p/8", "tile differs"],
    )
    .await;

    // 3. One byte of stored evidence flipped.
    let object = custody_core::content_path(&custody_core::Sha256::parse_hex(&shas[1]).unwrap());
    let mut bytes_ = blobs.get_all(&object).await.unwrap().to_vec();
    bytes_[100] ^= 0x80;
    blobs.put(&object, bytes_.into()).await.unwrap();
    assert_caught(
        &app,
        "flipped evidence byte",
        &[&format!("object {object}"), &ids[1]],
    )
    .await;

    // 4. An evidence row deleted.
    let allow = if pg {
        "ALTER TABLE evidence DISABLE TRIGGER ALL; ALTER TABLE ledger_pending DISABLE TRIGGER ALL;"
    } else {
        "DROP TRIGGER evidence_rows_are_never_deleted; PRAGMA foreign_keys = OFF;"
    };
    sql(
        &app,
        &format!("{allow} DELETE FROM evidence WHERE id = '{}';", ids[2]),
    )
    .await;
    assert_caught(
        &app,
        "deleted evidence row",
        &[&ids[2], "evidence row is gone"],
    )
    .await;

    // 5. A ledger entry row deleted.
    let allow = if pg {
        "ALTER TABLE ledger_entries DISABLE TRIGGER ALL;"
    } else {
        "DROP TRIGGER ledger_entries_are_append_only_d;"
    };
    sql(
        &app,
        &format!("{allow} DELETE FROM ledger_entries WHERE idx = 3;"),
    )
    .await;
    assert_caught(&app, "deleted ledger entry", &["ledger entry 3 is missing"]).await;
    app.shutdown().await;
}

#[tokio::test]
async fn verify_names_each_kind_of_tampering_embedded() {
    verify_names_each_kind_of_tampering(Backends::Embedded).await;
}

#[tokio::test]
async fn verify_names_each_kind_of_tampering_postgres_s3() {
    verify_names_each_kind_of_tampering(Backends::Real).await;
}
