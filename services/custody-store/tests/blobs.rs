//! The blob conformance suite: every test runs on local disk and on the S3 test server.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use bytes::Bytes;
use custody_core::{ContentHasher, ErrorCode, HasErrorCode, UploadId, content_path};
use custody_store::{BlobConfig, Blobs, StagedWriter, testing};
use futures::TryStreamExt;

const PART: usize = 5 << 20;

async fn local() -> (Blobs, Option<tempfile::TempDir>) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = BlobConfig::Local {
        root: dir.path().join("objects"),
    };
    (Blobs::open(&cfg, PART, 1 << 20).await.unwrap(), Some(dir))
}

async fn s3() -> (Blobs, Option<tempfile::TempDir>) {
    (
        Blobs::open(&testing::fresh_s3_config(), PART, 1 << 20)
            .await
            .unwrap(),
        None,
    )
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod on_local_disk { $( #[tokio::test] async fn $name() { let (b, _keep) = super::local().await; super::$name(b).await } )* }
        mod on_s3 { $( #[tokio::test] async fn $name() { let (b, _keep) = super::s3().await; super::$name(b).await } )* }
    };
}

conformance!(
    staged_bytes_survive_reopening_and_become_evidence_at_their_content_address,
    bytes_never_checkpointed_are_dropped_when_the_writer_reopens,
    promoting_never_replaces_evidence_already_stored,
    discarding_removes_every_staged_byte,
    ranges_of_an_object_are_served_exactly,
);

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .rotate_left(seed as u32) as u8
                ^ seed
        })
        .collect()
}

async fn append_all(
    w: &mut StagedWriter,
    bytes: &[u8],
    chunk: usize,
) -> Vec<custody_store::Checkpoint> {
    let mut cps = Vec::new();
    for c in bytes.chunks(chunk) {
        if let Some(cp) = w.append(Bytes::copy_from_slice(c)).await.unwrap() {
            cps.push(cp);
        }
    }
    cps
}

async fn read_all(b: &Blobs, rel: &str) -> Vec<u8> {
    let (_, _, s) = b.get(rel, None).await.unwrap();
    s.try_collect::<Vec<Bytes>>().await.unwrap().concat()
}

async fn staged_bytes_survive_reopening_and_become_evidence_at_their_content_address(b: Blobs) {
    let id = UploadId::new();
    let bytes = data(12 << 20 | 12345, 1);
    let mut staging = b.stage_create(id).await.unwrap();
    let mut w = b.stage_writer(id, &staging, 0).await.unwrap();
    let half = bytes.len() / 2;
    append_all(&mut w, &bytes[..half], 256 << 10).await;
    let cp = w
        .flush()
        .await
        .unwrap()
        .expect("bytes were received, so flushing makes a checkpoint");
    assert_eq!(cp.committed, half as u64);
    drop(w);
    staging = cp.staging;
    // A new writer (another process, another replica) continues from the saved state.
    let mut w = b.stage_writer(id, &staging, half as u64).await.unwrap();
    assert_eq!(w.received(), half as u64);
    append_all(&mut w, &bytes[half..], 1 << 20).await;
    if let Some(cp) = w.flush().await.unwrap() {
        staging = cp.staging;
        assert_eq!(cp.committed, bytes.len() as u64);
    }
    let sealed = b
        .stage_seal(id, &staging, bytes.len() as u64)
        .await
        .unwrap();
    // Sealing again (a retried commit) is harmless.
    let sealed = b.stage_seal(id, &sealed, bytes.len() as u64).await.unwrap();
    let want = ContentHasher::digest(&bytes, true);
    assert_eq!(b.stage_hash(id, true).await.unwrap(), want);
    b.stage_promote(id, &want.sha256).await.unwrap();
    b.stage_promote(id, &want.sha256).await.unwrap();
    assert_eq!(read_all(&b, &content_path(&want.sha256)).await, bytes);
    assert_eq!(
        b.size_of(&format!("staging/{id}")).await.unwrap(),
        None,
        "staged copy left behind"
    );
    b.stage_discard(id, &sealed).await.unwrap();
}

async fn bytes_never_checkpointed_are_dropped_when_the_writer_reopens(b: Blobs) {
    let id = UploadId::new();
    let bytes = data(7 << 20, 2);
    let staging = b.stage_create(id).await.unwrap();
    let mut w = b.stage_writer(id, &staging, 0).await.unwrap();
    let cps = append_all(&mut w, &bytes, 1 << 20).await;
    // Some bytes became durable on the way (every 1 MiB on disk, at each 5 MiB part on S3), the rest
    // were only received. A crash now loses the writer; reopening at the last checkpoint must give
    // exactly that prefix and accept the rest again.
    let last = cps.last().expect("a checkpoint within 7 MiB").clone();
    assert!(last.committed < bytes.len() as u64 || cps.len() > 1);
    drop(w);
    let mut w = b
        .stage_writer(id, &last.staging, last.committed)
        .await
        .unwrap();
    assert_eq!(w.received(), last.committed);
    let mut staging = last.staging.clone();
    for cp in append_all(&mut w, &bytes[last.committed as usize..], 1 << 20).await {
        staging = cp.staging;
    }
    if let Some(cp) = w.flush().await.unwrap() {
        staging = cp.staging;
    }
    let sealed = b
        .stage_seal(id, &staging, bytes.len() as u64)
        .await
        .unwrap();
    assert_eq!(
        b.stage_hash(id, false).await.unwrap(),
        ContentHasher::digest(&bytes, false)
    );
    b.stage_discard(id, &sealed).await.unwrap();
}

async fn promoting_never_replaces_evidence_already_stored(b: Blobs) {
    let original = data(1000, 3);
    let digest = ContentHasher::digest(&original, false).sha256;
    let (first, second) = (UploadId::new(), UploadId::new());
    for (id, bytes) in [(first, original.clone()), (second, data(1000, 4))] {
        let st = b.stage_create(id).await.unwrap();
        let mut w = b.stage_writer(id, &st, 0).await.unwrap();
        append_all(&mut w, &bytes, 1000).await;
        let cp = w.flush().await.unwrap().unwrap();
        b.stage_seal(id, &cp.staging, 1000).await.unwrap();
    }
    b.stage_promote(first, &digest).await.unwrap();
    // A second promotion to the same address (here, wrongly, with other bytes) must leave the first.
    b.stage_promote(second, &digest).await.unwrap();
    assert_eq!(read_all(&b, &content_path(&digest)).await, original);
}

async fn discarding_removes_every_staged_byte(b: Blobs) {
    let id = UploadId::new();
    let st = b.stage_create(id).await.unwrap();
    let mut w = b.stage_writer(id, &st, 0).await.unwrap();
    let mut cps = append_all(&mut w, &data(6 << 20 | 7, 5), 1 << 20).await;
    cps.extend(w.flush().await.unwrap());
    let cp = cps.pop().expect("6 MiB make at least one checkpoint");
    drop(w);
    b.stage_discard(id, &cp.staging).await.unwrap();
    assert_eq!(b.size_of(&format!("staging/{id}")).await.unwrap(), None);
    assert_eq!(
        b.size_of(&format!("staging/{id}.tail")).await.unwrap(),
        None
    );
    let err = b.stage_writer(id, &cp.staging, cp.committed).await;
    assert!(err.is_err(), "a discarded upload must not be writable");
    b.stage_discard(id, &cp.staging).await.unwrap();
}

async fn ranges_of_an_object_are_served_exactly(b: Blobs) {
    let bytes = data(100_000, 6);
    b.put("test/object", Bytes::from(bytes.clone()))
        .await
        .unwrap();
    let (size, served, s) = b.get("test/object", Some(1000..2500)).await.unwrap();
    assert_eq!((size, served), (100_000, 1000..2500));
    assert_eq!(
        s.try_collect::<Vec<Bytes>>().await.unwrap().concat(),
        bytes[1000..2500]
    );
    let missing = b.get("test/nothing-here", None).await.err().unwrap();
    assert_eq!(missing.code(), ErrorCode::NotFound);
}
