//! Retention with a paused clock: every pass is given the instant it runs at, so the tests walk through
//! months of an item's life in milliseconds. Each test runs on SQLite with a local directory and on
//! PostgreSQL with the S3 test server.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use bytes::Bytes;
use custody_cases::{ItemOutcome, Retention, RetentionConfig};
use custody_core::access::Username;
use custody_core::case::{CaseNo, CaseStatus, Procedure};
use custody_core::ledger::EventKind;
use custody_core::retention::{Period, Policy};
use custody_core::{CaseId, Evidence, HasErrorCode, Timestamp, content_path};
use custody_store::testing::{TestEvidence, commit_evidence, execute_raw};
use custody_store::{
    BlobConfig, Blobs, CaseRecord, LinkRecord, Metadata, PendingEvent, TombstoneGuard,
};

fn t(s: &str) -> Timestamp {
    Timestamp::parse_rfc3339(s).unwrap()
}

/// Everything here was recorded on 10 January 2026 unless said otherwise.
const CAPTURED: &str = "2026-01-10T08:00:00Z";

struct World {
    meta: Metadata,
    blobs: Blobs,
    retention: Retention,
    _dir: Option<tempfile::TempDir>,
}

async fn on_disk() -> World {
    let (meta, dir) = custody_store::testing::sqlite_metadata().await;
    let blobs = Blobs::open(
        &BlobConfig::Local {
            root: dir.path().join("objects"),
        },
        5 << 20,
        1 << 20,
    )
    .await
    .unwrap();
    world(meta, blobs, Some(dir))
}

async fn on_postgres_and_s3() -> World {
    let (meta, ()) = custody_store::testing::postgres_metadata().await;
    let blobs = Blobs::open(&custody_store::testing::fresh_s3_config(), 5 << 20, 1 << 20)
        .await
        .unwrap();
    world(meta, blobs, None)
}

fn world(meta: Metadata, blobs: Blobs, dir: Option<tempfile::TempDir>) -> World {
    let mut policy = Policy::default();
    policy.classes.insert("traffic".into(), Period::Months(12));
    let retention = Retention::new(
        meta.clone(),
        blobs.clone(),
        None,
        RetentionConfig {
            policy,
            page: 2, // several pages even with a handful of items
            ..Default::default()
        },
    );
    World {
        meta,
        blobs,
        retention,
        _dir: dir,
    }
}

impl World {
    /// An item with its bytes and a poster made from it in the object store.
    async fn item(&self, name: &str, captured: &str) -> Evidence {
        let bytes = format!("footage {name}");
        let e = commit_evidence(
            &self.meta,
            TestEvidence {
                bytes: bytes.as_bytes(),
                device: "ZFY001",
                captured_at: t(captured),
                reported: None,
                ingested_at: t(captured),
            },
        )
        .await;
        self.blobs
            .put(&content_path(&e.sha256), Bytes::from(bytes))
            .await
            .unwrap();
        self.blobs
            .put(
                &format!(
                    "{}poster-0000.jpg",
                    custody_core::media::derived_dir(&e.sha256)
                ),
                Bytes::from_static(b"jpeg"),
            )
            .await
            .unwrap();
        e
    }

    async fn has_bytes(&self, e: &Evidence) -> bool {
        self.blobs
            .size_of(&content_path(&e.sha256))
            .await
            .unwrap()
            .is_some()
    }

    async fn derived_files(&self, e: &Evidence) -> usize {
        self.blobs
            .list(&custody_core::media::derived_dir(&e.sha256))
            .await
            .unwrap()
            .len()
    }

    async fn reread(&self, e: &Evidence) -> Evidence {
        self.meta.get_evidence(e.id).await.unwrap().unwrap()
    }

    /// Runs a pass at `at` and returns the ids it handled with their outcome.
    async fn pass(&self, at: &str, dry_run: bool) -> Vec<(custody_core::EvidenceId, ItemOutcome)> {
        let mut seen = Vec::new();
        self.retention
            .run_once(t(at), dry_run, |item, outcome| {
                seen.push((item.evidence.id, outcome))
            })
            .await
            .unwrap();
        seen
    }

    async fn case(&self, no: &str) -> CaseId {
        // Its handler's account (made by the first case of the test).
        let _ = self
            .meta
            .insert_user(&custody_store::UserRecord {
                username: Username::parse("handler").unwrap(),
                display_name: "办案人员".into(),
                roles: custody_core::access::Roles::of(&[custody_core::access::Role::CaseHandler])
                    .unwrap(),
                badge: None,
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo".into(),
                created_at: t(CAPTURED),
                updated_at: t(CAPTURED),
                disabled_at: None,
            })
            .await;
        let c = CaseRecord {
            id: CaseId::new(),
            case_no: CaseNo::parse(no).unwrap(),
            title: "占道经营".into(),
            procedure: Procedure::General,
            status: CaseStatus::Accepted,
            created_by: "user:handler".into(),
            created_at: t(CAPTURED),
            updated_at: t(CAPTURED),
            handlers: vec![Username::parse("handler").unwrap()],
        };
        self.meta.insert_case(&c).await.unwrap();
        c.id
    }

    async fn link(&self, case: CaseId, e: &Evidence) -> Result<(), custody_store::StoreError> {
        let link = LinkRecord {
            id: 0,
            case_id: case,
            evidence_id: e.id,
            step_id: None,
            role: "现场检查".into(),
            note: None,
            linked_by: "user:handler".into(),
            linked_at: t(CAPTURED),
            unlinked_by: None,
            unlinked_at: None,
            unlink_reason: None,
        };
        self.meta
            .link_evidence(&link, &event(EventKind::Link, e, "user:handler"))
            .await
            .map(|_| ())
    }

    async fn close(&self, case: CaseId) {
        self.meta
            .set_case_status(
                case,
                CaseStatus::Accepted,
                CaseStatus::Closed,
                "user:handler",
                None,
                t(CAPTURED),
                None,
            )
            .await
            .unwrap();
    }

    async fn hold(&self, e: &Evidence, reason: Option<&str>) {
        self.meta
            .set_legal_hold(e.id, reason, &event(EventKind::LegalHold, e, "user:boss"))
            .await
            .unwrap();
    }
}

fn event(kind: EventKind, e: &Evidence, actor: &str) -> PendingEvent {
    PendingEvent {
        kind,
        evidence_id: e.id,
        actor: actor.into(),
        officer: None,
        detail: None,
        server_time: t(CAPTURED),
    }
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite_and_disk { $( #[tokio::test] async fn $name() { super::$name(super::on_disk().await).await } )* }
        mod on_postgres_and_s3 { $( #[tokio::test] async fn $name() { super::$name(super::on_postgres_and_s3().await).await } )* }
    };
}

on_both!(
    footage_is_deleted_six_calendar_months_after_capture_and_only_what_keeps_nothing,
    a_dry_run_lists_what_would_go_and_changes_nothing,
    a_deletion_interrupted_after_its_tombstone_is_finished_by_the_next_pass,
    nothing_held_or_in_an_open_case_is_ever_deleted_even_by_hand,
    a_decision_made_stale_by_a_new_hold_or_link_deletes_nothing,
);

async fn footage_is_deleted_six_calendar_months_after_capture_and_only_what_keeps_nothing(
    w: World,
) {
    let plain = w.item("plain", CAPTURED).await;
    let held = w.item("held", CAPTURED).await;
    let in_open_case = w.item("open", CAPTURED).await;
    let in_closed_case = w.item("closed", CAPTURED).await;
    let obstruction = w.item("obstruction", CAPTURED).await;
    let traffic = w.item("traffic", CAPTURED).await;
    let later = w.item("later", "2026-03-01T00:00:00Z").await;
    w.hold(&held, Some("行政复议 2026-07")).await;
    let open = w.case("CG-2026-0001").await;
    w.link(open, &in_open_case).await.unwrap();
    let closed = w.case("CG-2026-0002").await;
    w.link(closed, &in_closed_case).await.unwrap();
    w.close(closed).await;
    w.meta
        .set_retention_marks(obstruction.id, Some(true), None)
        .await
        .unwrap();
    w.meta
        .set_retention_marks(traffic.id, None, Some(Some("traffic")))
        .await
        .unwrap();

    // One second before six calendar months are over, nothing is due.
    assert!(w.pass("2026-07-10T07:59:59Z", false).await.is_empty());

    // At six months only the plain item goes: its bytes and what was made from them.
    let gone = w.pass("2026-07-10T08:00:00Z", false).await;
    assert_eq!(gone, vec![(plain.id, ItemOutcome::Deleted)]);
    let tomb = w.reread(&plain).await;
    let d = tomb.deleted().expect("the row stays as a tombstone");
    assert_eq!(d.at, t("2026-07-10T08:00:00Z"));
    assert!(d.reason.contains("6 months"), "{}", d.reason);
    assert!(d.bytes_gone_at.is_some());
    assert!(!w.has_bytes(&plain).await);
    assert_eq!(w.derived_files(&plain).await, 0);
    assert_eq!(
        tomb.sha256, plain.sha256,
        "what identified the bytes is kept"
    );
    assert!(
        w.meta
            .pending_deletions()
            .await
            .unwrap()
            .contains(&plain.id),
        "its retention_delete ledger event is queued"
    );
    for kept in [
        &held,
        &in_open_case,
        &in_closed_case,
        &obstruction,
        &traffic,
        &later,
    ] {
        assert!(w.has_bytes(kept).await);
        assert!(w.reread(kept).await.deleted().is_none());
    }

    // Two months after its own capture date the later item goes too; a year on, the traffic class ends.
    assert_eq!(
        w.pass("2026-09-01T00:00:00Z", false).await,
        vec![(later.id, ItemOutcome::Deleted)]
    );
    assert_eq!(
        w.pass("2027-01-10T08:00:00Z", false).await,
        vec![(traffic.id, ItemOutcome::Deleted)]
    );

    // Decades later the hold, the cases and the obstruction mark still keep theirs.
    assert!(w.pass("2046-01-01T00:00:00Z", false).await.is_empty());
    // Releasing the hold lets the next pass delete it; closing a case keeps its evidence (for ever by
    // default).
    w.hold(&held, None).await;
    w.close(open).await;
    assert_eq!(
        w.pass("2046-01-01T00:00:00Z", false).await,
        vec![(held.id, ItemOutcome::Deleted)]
    );
    assert!(w.has_bytes(&in_open_case).await && w.has_bytes(&in_closed_case).await);
}

async fn a_dry_run_lists_what_would_go_and_changes_nothing(w: World) {
    let a = w.item("a", CAPTURED).await;
    let b = w.item("b", "2026-02-01T00:00:00Z").await;
    let c = w.item("c", "2026-06-01T00:00:00Z").await;
    let listed = w.pass("2026-09-01T00:00:00Z", true).await;
    assert_eq!(
        listed,
        vec![
            (a.id, ItemOutcome::WouldDelete),
            (b.id, ItemOutcome::WouldDelete)
        ]
    );
    for e in [&a, &b, &c] {
        assert!(w.has_bytes(e).await);
        assert!(w.reread(e).await.deleted().is_none());
    }
    assert!(w.meta.pending_deletions().await.unwrap().is_empty());
    // A dry run can look ahead: by next summer c is due as well.
    assert_eq!(w.pass("2026-12-01T00:00:00Z", true).await.len(), 3);
}

async fn a_deletion_interrupted_after_its_tombstone_is_finished_by_the_next_pass(w: World) {
    let e = w.item("interrupted", CAPTURED).await;
    // The worker placed the tombstone and died before deleting the bytes.
    let guard = TombstoneGuard {
        obstruction: false,
        class: None,
        links: 0,
    };
    let ev = PendingEvent {
        server_time: t("2026-08-01T00:00:00Z"),
        ..event(EventKind::RetentionDelete, &e, "system:retention")
    };
    assert!(
        w.meta
            .tombstone(e.id, &guard, "retention ended: test", &ev)
            .await
            .unwrap()
    );
    assert!(w.has_bytes(&e).await);
    assert!(
        w.reread(&e)
            .await
            .deleted()
            .unwrap()
            .bytes_gone_at
            .is_none()
    );
    // Whatever instant the next pass runs at, it finishes the deletion first.
    let report = w
        .retention
        .run_once(t("2026-08-02T00:00:00Z"), false, |_, _| {})
        .await
        .unwrap();
    assert_eq!(report.finished, 1);
    assert_eq!(
        report.deleted, 0,
        "it is not deleted (nor its event queued) twice"
    );
    assert!(!w.has_bytes(&e).await);
    assert_eq!(w.derived_files(&e).await, 0);
    assert!(
        w.reread(&e)
            .await
            .deleted()
            .unwrap()
            .bytes_gone_at
            .is_some()
    );
    assert_eq!(w.meta.pending_deletions().await.unwrap(), vec![e.id]);
}

async fn nothing_held_or_in_an_open_case_is_ever_deleted_even_by_hand(w: World) {
    let held = w.item("held", CAPTURED).await;
    let linked = w.item("linked", CAPTURED).await;
    w.hold(&held, Some("诉讼保全")).await;
    let case = w.case("CG-2026-0003").await;
    w.link(case, &linked).await.unwrap();
    // Someone with database access tries anyway: the triggers refuse.
    for id in [held.id, linked.id] {
        let sql: &'static str = Box::leak(
            format!("UPDATE evidence SET deleted_at = 1, deletion_reason = 'x' WHERE id = '{id}'")
                .into_boxed_str(),
        );
        let err = execute_raw(&w.meta, sql).await.unwrap_err().to_string();
        assert!(err.contains("never deleted"), "{err}");
    }
    // A tombstone is final, and deleted footage cannot be linked.
    let plain = w.item("plain", CAPTURED).await;
    w.pass("2026-08-01T00:00:00Z", false).await;
    assert!(w.reread(&plain).await.deleted().is_some());
    let lift: &'static str = Box::leak(
        format!(
            "UPDATE evidence SET deleted_at = NULL WHERE id = '{}'",
            plain.id
        )
        .into_boxed_str(),
    );
    let err = execute_raw(&w.meta, lift).await.unwrap_err().to_string();
    assert!(err.contains("never lifted"), "{err}");
    let err = w.link(case, &plain).await.unwrap_err();
    assert_eq!(err.code(), custody_core::ErrorCode::Gone, "{err}");
    // Nor can a tombstone be put on hold.
    let out = w
        .meta
        .set_legal_hold(
            plain.id,
            Some("late"),
            &event(EventKind::LegalHold, &plain, "user:boss"),
        )
        .await
        .unwrap();
    assert!(matches!(out, custody_store::MarkOutcome::Deleted(_)));
}

async fn a_decision_made_stale_by_a_new_hold_or_link_deletes_nothing(w: World) {
    let e = w.item("raced", CAPTURED).await;
    // The worker decided on these facts...
    let guard = TombstoneGuard {
        obstruction: false,
        class: None,
        links: 0,
    };
    let ev = event(EventKind::RetentionDelete, &e, "system:retention");
    // ...then a case handler linked the item to a closed case's review (or a supervisor marked it).
    let case = w.case("CG-2026-0004").await;
    w.link(case, &e).await.unwrap();
    w.close(case).await;
    assert!(!w.meta.tombstone(e.id, &guard, "stale", &ev).await.unwrap());
    w.meta
        .set_retention_marks(e.id, Some(true), None)
        .await
        .unwrap();
    let guard = TombstoneGuard { links: 1, ..guard };
    assert!(!w.meta.tombstone(e.id, &guard, "stale", &ev).await.unwrap());
    assert!(w.reread(&e).await.deleted().is_none());
    assert!(w.meta.pending_deletions().await.unwrap().is_empty());
}
