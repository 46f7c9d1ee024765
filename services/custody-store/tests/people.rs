//! The people and cases conformance suite: every test runs on SQLite and on PostgreSQL.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use custody_core::access::{EvidenceScope, Role, Roles, Username};
use custody_core::case::{CaseNo, CaseStatus, Procedure};
use custody_core::ledger::EventKind;
use custody_core::*;
use custody_store::{
    CaseRecord, LinkRecord, Metadata, PendingEvent, StepPlace, StepRecord, StoreError, UserRecord,
};

use custody_store::conformance;
use custody_store::testing::execute_raw;

conformance!(
    users_and_sessions_round_trip_and_a_revoked_or_expired_session_finds_no_one,
    the_audit_log_only_grows,
    evidence_is_attributed_by_the_register_and_re_attributed_when_it_changes,
    checkouts_of_one_recorder_never_overlap,
    scopes_select_the_same_evidence_in_listings_and_single_checks,
    a_link_and_its_ledger_event_are_one_transaction_and_unlinks_keep_history,
    a_case_status_change_is_a_compare_and_set,
);

/// 2026-11-23T00:00:00Z
const T0: i64 = 1_795_392_000_000_000;
const MIN: i64 = 60_000_000;

fn t(us: i64) -> Timestamp {
    Timestamp::from_unix_micros(us)
}

fn user(name: &str, roles: &[Role], badge: Option<&str>) -> UserRecord {
    UserRecord {
        username: Username::parse(name).unwrap(),
        display_name: name.into(),
        roles: Roles::of(roles).unwrap(),
        badge: badge.map(|b| BadgeNo::parse(b).unwrap()),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo".into(),
        created_at: t(T0),
        updated_at: t(T0),
        disabled_at: None,
    }
}

fn badge(b: &str) -> BadgeNo {
    BadgeNo::parse(b).unwrap()
}

fn dev(d: &str) -> DeviceId {
    DeviceId::parse(d).unwrap()
}

/// Commits an evidence row of `device` captured at `at`, reported by the station as bound to `reported`.
async fn evidence(m: &Metadata, device: &str, at: i64, reported: Option<&str>) -> Evidence {
    let seed = format!("{device}-{at}");
    custody_store::testing::commit_evidence(
        m,
        custody_store::testing::TestEvidence {
            bytes: seed.as_bytes(),
            device,
            captured_at: t(at),
            reported,
            ingested_at: t(T0),
        },
    )
    .await
}

async fn officers(m: &Metadata) {
    for b in ["0001", "0002"] {
        m.upsert_officer(&badge(b), "name", "unit", t(T0))
            .await
            .unwrap();
    }
}

async fn users_and_sessions_round_trip_and_a_revoked_or_expired_session_finds_no_one(m: Metadata) {
    let u = user("zhang", &[Role::Officer, Role::CaseHandler], Some("0001"));
    m.insert_user(&u).await.unwrap();
    assert!(matches!(
        m.insert_user(&u).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert_eq!(m.get_user(&u.username).await.unwrap(), Some(u.clone()));
    let (a, b) = ([1u8; 32], [2u8; 32]);
    m.insert_session(&a, &u.username, t(T0), t(T0 + MIN))
        .await
        .unwrap();
    m.insert_session(&b, &u.username, t(T0), t(T0 + MIN))
        .await
        .unwrap();
    assert_eq!(m.session_user(&a, t(T0)).await.unwrap(), Some(u.clone()));
    assert_eq!(
        m.session_user(&a, t(T0 + MIN)).await.unwrap(),
        None,
        "expired"
    );
    assert!(m.revoke_session(&a, t(T0)).await.unwrap());
    assert_eq!(m.session_user(&a, t(T0)).await.unwrap(), None, "revoked");
    assert!(m.session_user(&b, t(T0)).await.unwrap().is_some());
    let mut off = u.clone();
    off.disabled_at = Some(t(T0));
    m.update_user(&off).await.unwrap();
    assert_eq!(
        m.session_user(&b, t(T0)).await.unwrap(),
        None,
        "account disabled"
    );
    assert_eq!(m.list_users(None, 10).await.unwrap(), vec![off]);
}

async fn the_audit_log_only_grows(m: Metadata) {
    m.audit(
        t(T0),
        "user:a",
        "evidence.read",
        Some("evidence:x"),
        "denied",
        Some("why"),
    )
    .await
    .unwrap();
    m.audit(t(T0 + 1), "user:b", "login", None, "ok", None)
        .await
        .unwrap();
    let rows = m.list_audit(None, None, None, None, 10).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].actor, "user:b", "newest first");
    let denied = m
        .list_audit(None, None, Some("denied"), None, 10)
        .await
        .unwrap();
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].target.as_deref(), Some("evidence:x"));
    let older = m
        .list_audit(None, None, None, Some(rows[0].id), 10)
        .await
        .unwrap();
    assert_eq!(older.len(), 1);
    // The database itself refuses to rewrite or remove a record.
    let changed = execute_raw(&m, "UPDATE audit_log SET outcome = 'ok'").await;
    assert!(changed.is_err(), "an audit record was changed");
    let deleted = execute_raw(&m, "DELETE FROM audit_log").await;
    assert!(deleted.is_err(), "an audit record was deleted");
    assert_eq!(
        m.list_audit(None, None, None, None, 10)
            .await
            .unwrap()
            .len(),
        2
    );
}

async fn evidence_is_attributed_by_the_register_and_re_attributed_when_it_changes(m: Metadata) {
    officers(&m).await;
    m.checkout_recorder(&dev("R1"), &badge("0001"), t(T0), "user:admin", None)
        .await
        .unwrap();
    let during = evidence(&m, "R1", T0 + MIN, Some("0002")).await;
    let before = evidence(&m, "R1", T0 - MIN, Some("0002")).await;
    let nobody = evidence(&m, "R2", T0 + MIN, None).await;
    let a = &during.attribution;
    assert_eq!(a.officer, Some(badge("0001")));
    assert_eq!(a.source, AttributionSource::Checkout);
    assert!(a.conflict, "the register says 0001, the recorder 0002");
    assert_eq!(before.attribution.officer, Some(badge("0002")));
    assert_eq!(before.attribution.source, AttributionSource::Recorder);
    assert_eq!(nobody.attribution.source, AttributionSource::None);
    // A back-dated check-out of R2 re-attributes its footage at once.
    m.checkout_recorder(&dev("R2"), &badge("0002"), t(T0), "user:admin", None)
        .await
        .unwrap();
    let again = m.get_evidence(nobody.id).await.unwrap().unwrap();
    assert_eq!(again.attribution.officer, Some(badge("0002")));
    assert_eq!(again.attribution.source, AttributionSource::Checkout);
    assert!(!again.attribution.conflict);
}

async fn checkouts_of_one_recorder_never_overlap(m: Metadata) {
    officers(&m).await;
    m.checkout_recorder(&dev("R1"), &badge("0001"), t(T0), "a", None)
        .await
        .unwrap();
    // Held: a second open check-out is refused, whoever asks.
    assert!(matches!(
        m.checkout_recorder(&dev("R1"), &badge("0002"), t(T0 + MIN), "a", None)
            .await,
        Err(StoreError::Conflict(_))
    ));
    // A return before the check-out is refused; a return after it closes it.
    assert!(matches!(
        m.return_recorder(&dev("R1"), t(T0 - MIN), "a").await,
        Err(StoreError::Conflict(_))
    ));
    let c = m
        .return_recorder(&dev("R1"), t(T0 + 10 * MIN), "a")
        .await
        .unwrap();
    assert_eq!(c.returned_at, Some(t(T0 + 10 * MIN)));
    assert!(matches!(
        m.return_recorder(&dev("R1"), t(T0 + 11 * MIN), "a").await,
        Err(StoreError::NotFound(_))
    ));
    // A back-dated check-out whose open period would run into the closed one is refused too.
    assert!(matches!(
        m.checkout_recorder(&dev("R1"), &badge("0002"), t(T0 - MIN), "a", None)
            .await,
        Err(StoreError::Conflict(_))
    ));
    m.checkout_recorder(&dev("R1"), &badge("0002"), t(T0 + 10 * MIN), "a", None)
        .await
        .unwrap();
    let all = m
        .list_checkouts(Some(&dev("R1")), None, None, 10)
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].badge, badge("0002"), "newest first");
}

async fn case(m: &Metadata, no: &str, handler: &str) -> CaseRecord {
    let c = CaseRecord {
        id: CaseId::new(),
        case_no: CaseNo::parse(no).unwrap(),
        title: "占道经营".into(),
        procedure: Procedure::General,
        status: CaseStatus::Accepted,
        created_by: format!("user:{handler}"),
        created_at: t(T0),
        updated_at: t(T0),
        handlers: vec![Username::parse(handler).unwrap()],
    };
    m.insert_case(&c).await.unwrap();
    c
}

fn link_of(case: &CaseRecord, e: &Evidence) -> (LinkRecord, PendingEvent) {
    (
        LinkRecord {
            id: 0,
            case_id: case.id,
            evidence_id: e.id,
            step_id: None,
            role: "现场检查".into(),
            note: None,
            linked_by: "user:h".into(),
            linked_at: t(T0),
            unlinked_by: None,
            unlinked_at: None,
            unlink_reason: None,
        },
        PendingEvent {
            kind: EventKind::Link,
            evidence_id: e.id,
            actor: "user:h".into(),
            officer: None,
            detail: Some(case.case_no.to_string()),
            server_time: t(T0),
        },
    )
}

async fn scopes_select_the_same_evidence_in_listings_and_single_checks(m: Metadata) {
    officers(&m).await;
    m.insert_user(&user("hh", &[Role::CaseHandler], None))
        .await
        .unwrap();
    m.checkout_recorder(&dev("R1"), &badge("0001"), t(T0), "a", None)
        .await
        .unwrap();
    m.checkout_recorder(&dev("R2"), &badge("0002"), t(T0), "a", None)
        .await
        .unwrap();
    let e1 = evidence(&m, "R1", T0 + MIN, None).await;
    let e2 = evidence(&m, "R2", T0 + MIN, None).await;
    let c = case(&m, "C-1", "hh").await;
    let (l, ev) = link_of(&c, &e2);
    m.link_evidence(&l, &ev).await.unwrap();
    let officer = EvidenceScope {
        all: false,
        officer: Some(badge("0001")),
        handler: None,
    };
    let handler = EvidenceScope {
        all: false,
        officer: None,
        handler: Some(Username::parse("hh").unwrap()),
    };
    let none = EvidenceScope {
        all: false,
        officer: None,
        handler: None,
    };
    for (scope, want) in [
        (officer, vec![e1.id]),
        (handler, vec![e2.id]),
        (EvidenceScope::everything(), vec![e1.id, e2.id]),
        (none, vec![]),
    ] {
        let page = m
            .list_evidence(&EvidenceFilter::default(), &scope, None, 100)
            .await
            .unwrap();
        let mut got: Vec<EvidenceId> = page.items.iter().map(|e| e.id).collect();
        got.sort();
        let mut want = want.clone();
        want.sort();
        assert_eq!(got, want, "{scope:?}");
        for e in [e1.id, e2.id] {
            assert_eq!(
                m.evidence_in_scope(e, &scope).await.unwrap(),
                want.contains(&e),
                "{scope:?} {e}"
            );
        }
    }
    // The officer filter selects by attribution.
    let f = EvidenceFilter {
        officer: Some(badge("0002")),
        ..Default::default()
    };
    let page = m
        .list_evidence(&f, &EvidenceScope::everything(), None, 100)
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].id, e2.id);
}

async fn a_link_and_its_ledger_event_are_one_transaction_and_unlinks_keep_history(m: Metadata) {
    officers(&m).await;
    m.insert_user(&user("hh", &[Role::CaseHandler], None))
        .await
        .unwrap();
    let e = evidence(&m, "R1", T0, None).await;
    let c = case(&m, "C-2", "hh").await;
    let pending_before = m.pending_count().await.unwrap();
    let (l, ev) = link_of(&c, &e);
    m.link_evidence(&l, &ev).await.unwrap();
    assert_eq!(m.pending_count().await.unwrap(), pending_before + 1);
    // Linking the same item again is refused, and queues nothing.
    assert!(matches!(
        m.link_evidence(&l, &ev).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert_eq!(m.pending_count().await.unwrap(), pending_before + 1);
    let unlink = PendingEvent {
        kind: EventKind::Unlink,
        ..ev.clone()
    };
    m.unlink_evidence(c.id, e.id, "user:h", "wrong case", t(T0 + 1), &unlink)
        .await
        .unwrap();
    assert_eq!(m.pending_count().await.unwrap(), pending_before + 2);
    assert!(matches!(
        m.unlink_evidence(c.id, e.id, "user:h", "again", t(T0 + 2), &unlink)
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(m.links_of(c.id, false).await.unwrap().is_empty());
    let all = m.links_of(c.id, true).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].unlink_reason.as_deref(), Some("wrong case"));
    // It may be linked again after an unlink.
    m.link_evidence(&l, &ev).await.unwrap();
    assert_eq!(m.open_cases_of(e.id).await.unwrap(), vec![c.id]);
    // Steps keep their officers and place.
    let s = StepRecord {
        id: StepId::new(),
        case_id: c.id,
        title: "现场检查".into(),
        starts_at: t(T0),
        ends_at: t(T0 + MIN),
        place: StepPlace {
            name: Some("深南大道".into()),
            point: Some((22.54, 114.05, 200.0)),
        },
        continuous: true,
        officers: vec![badge("0001"), badge("0002")],
        created_by: "user:hh".into(),
        created_at: t(T0),
    };
    m.insert_step(&s).await.unwrap();
    assert_eq!(m.steps_of(c.id).await.unwrap(), vec![s]);
}

async fn a_case_status_change_is_a_compare_and_set(m: Metadata) {
    m.insert_user(&user("hh", &[Role::CaseHandler], None))
        .await
        .unwrap();
    let c = case(&m, "C-3", "hh").await;
    assert!(matches!(
        m.insert_case(&CaseRecord {
            id: CaseId::new(),
            ..c.clone()
        })
        .await,
        Err(StoreError::AlreadyExists(_))
    ));
    m.set_case_status(
        c.id,
        CaseStatus::Accepted,
        CaseStatus::Filed,
        "user:hh",
        None,
        t(T0 + 1),
        None,
    )
    .await
    .unwrap();
    assert!(matches!(
        m.set_case_status(
            c.id,
            CaseStatus::Accepted,
            CaseStatus::Filed,
            "user:hh",
            None,
            t(T0 + 2),
            None,
        )
        .await,
        Err(StoreError::Conflict(_))
    ));
    let h = m.case_history(c.id).await.unwrap();
    assert_eq!(
        h.iter().map(|x| x.to).collect::<Vec<_>>(),
        [CaseStatus::Accepted, CaseStatus::Filed]
    );
    // A change checked against what it read fails when footage was linked meanwhile (the review gate
    // must not pass over a link or unlink made while it computed coverage).
    let seen = m.get_case(c.id).await.unwrap().unwrap().updated_at;
    let e = custody_store::testing::commit_evidence(
        &m,
        custody_store::testing::TestEvidence {
            bytes: b"raced",
            device: "ZFY001",
            captured_at: t(T0),
            reported: None,
            ingested_at: t(T0),
        },
    )
    .await;
    let link = LinkRecord {
        id: 0,
        case_id: c.id,
        evidence_id: e.id,
        step_id: None,
        role: "r".into(),
        note: None,
        linked_by: "user:hh".into(),
        // The same instant as the status change before it: the case still counts as changed.
        linked_at: t(T0 + 1),
        unlinked_by: None,
        unlinked_at: None,
        unlink_reason: None,
    };
    let ev = PendingEvent {
        kind: EventKind::Link,
        evidence_id: e.id,
        actor: "user:hh".into(),
        officer: None,
        detail: None,
        server_time: t(T0 + 1),
    };
    m.link_evidence(&link, &ev).await.unwrap();
    let stale = m
        .set_case_status(
            c.id,
            CaseStatus::Filed,
            CaseStatus::Investigating,
            "user:hh",
            None,
            t(T0 + 3),
            Some(seen),
        )
        .await;
    assert!(
        matches!(stale, Err(StoreError::Conflict(ref m)) if m.contains("footage")),
        "{stale:?}"
    );
    let fresh = m.get_case(c.id).await.unwrap().unwrap().updated_at;
    assert!(fresh > seen);
    m.set_case_status(
        c.id,
        CaseStatus::Filed,
        CaseStatus::Investigating,
        "user:hh",
        None,
        t(T0 + 3),
        Some(fresh),
    )
    .await
    .unwrap();
    let listed = m
        .list_cases(Some(&Username::parse("hh").unwrap()), None, None, None, 10)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].status, CaseStatus::Investigating);
    assert!(
        m.list_cases(
            Some(&Username::parse("other").unwrap()),
            None,
            None,
            None,
            10
        )
        .await
        .unwrap()
        .is_empty()
    );
}
