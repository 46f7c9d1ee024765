//! The access-request conformance suite (approval before copy): every test runs on SQLite and on
//! PostgreSQL.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use custody_core::access::{Role, Roles, Username};
use custody_core::case::{CaseNo, CaseStatus, Procedure};
use custody_core::request::{CopyTarget, RequestState};
use custody_core::*;
use custody_store::{
    CaseRecord, Decision, Metadata, RequestFilter, RequestRecord, StoreError, UserRecord,
};

use custody_store::conformance;
use custody_store::testing::execute_raw;

conformance!(
    a_request_round_trips_and_names_exactly_its_evidence_or_its_case,
    requests_list_newest_first_by_requester_state_and_awaiting_approval_a_page_at_a_time,
    a_decision_is_a_compare_and_set_from_pending_and_final,
    only_a_live_approval_of_the_same_user_and_target_opens_a_copy,
);

/// 2026-11-23T00:00:00Z
const T0: i64 = 1_795_392_000_000_000;
const MIN: i64 = 60_000_000;

fn t(us: i64) -> Timestamp {
    Timestamp::from_unix_micros(us)
}

fn name(s: &str) -> Username {
    Username::parse(s).unwrap()
}

async fn user(m: &Metadata, n: &str, roles: &[Role]) -> Username {
    m.insert_user(&UserRecord {
        username: name(n),
        display_name: n.into(),
        roles: Roles::of(roles).unwrap(),
        badge: None,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo".into(),
        created_at: t(T0),
        updated_at: t(T0),
        disabled_at: None,
    })
    .await
    .unwrap();
    name(n)
}

/// Commits an evidence row whose bytes are `seed`.
async fn evidence(m: &Metadata, seed: &str) -> EvidenceId {
    custody_store::testing::commit_evidence(
        m,
        custody_store::testing::TestEvidence {
            bytes: seed.as_bytes(),
            device: "ZFY001",
            captured_at: t(T0),
            reported: None,
            ingested_at: t(T0),
        },
    )
    .await
    .id
}

async fn case(m: &Metadata, no: &str, handler: &Username) -> CaseId {
    let c = CaseRecord {
        id: CaseId::new(),
        case_no: CaseNo::parse(no).unwrap(),
        title: "占道经营".into(),
        procedure: Procedure::General,
        status: CaseStatus::Accepted,
        created_by: handler.actor(),
        created_at: t(T0),
        updated_at: t(T0),
        handlers: vec![handler.clone()],
    };
    m.insert_case(&c).await.unwrap();
    c.id
}

fn request(target: CopyTarget, by: &Username, at: i64) -> RequestRecord {
    RequestRecord::pending(target, by.clone(), "court hearing".into(), t(at))
}

async fn a_request_round_trips_and_names_exactly_its_evidence_or_its_case(m: Metadata) {
    let li = user(&m, "li", &[Role::CaseHandler]).await;
    let e = evidence(&m, "a").await;
    let c = case(&m, "C-1", &li).await;
    let d = request(CopyTarget::Evidence(e), &li, T0);
    let x = request(CopyTarget::Case(c), &li, T0 + 1);
    m.insert_request(&d).await.unwrap();
    m.insert_request(&x).await.unwrap();
    assert_eq!(m.get_request(d.id).await.unwrap(), Some(d.clone()));
    assert_eq!(m.get_request(x.id).await.unwrap(), Some(x.clone()));
    assert_eq!(m.get_request(RequestId::new()).await.unwrap(), None);
    assert!(matches!(
        m.insert_request(&d).await,
        Err(StoreError::AlreadyExists(_))
    ));
    // Unknown evidence, case or user: not found.
    for bad in [
        request(CopyTarget::Evidence(EvidenceId::new()), &li, T0),
        request(CopyTarget::Case(CaseId::new()), &li, T0),
        request(CopyTarget::Evidence(e), &name("nobody"), T0),
    ] {
        assert!(
            matches!(m.insert_request(&bad).await, Err(StoreError::NotFound(_))),
            "{bad:?}"
        );
    }
    // The database itself refuses a download without its item, an export naming an item, a request
    // without a reason, and an approval without an expiry.
    for sql in [
        "INSERT INTO access_requests (id, kind, requester, reason, state, created_at) \
         VALUES ('r1', 'download', 'li', 'x', 'pending', 0)",
        "INSERT INTO access_requests (id, kind, evidence_id, requester, reason, state, created_at) \
         SELECT 'r2', 'export', id, 'li', 'x', 'pending', 0 FROM evidence",
        "INSERT INTO access_requests (id, kind, case_id, requester, reason, state, created_at) \
         SELECT 'r3', 'export', id, 'li', '', 'pending', 0 FROM cases",
        "INSERT INTO access_requests (id, kind, case_id, requester, reason, state, decided_by, decided_at, created_at) \
         SELECT 'r4', 'export', id, 'li', 'x', 'approved', 'li', 1, 0 FROM cases",
    ] {
        assert!(execute_raw(&m, sql).await.is_err(), "{sql}");
    }
}

async fn requests_list_newest_first_by_requester_state_and_awaiting_approval_a_page_at_a_time(
    m: Metadata,
) {
    let li = user(&m, "li", &[Role::CaseHandler]).await;
    let boss = user(&m, "boss", &[Role::Supervisor]).await;
    let e = evidence(&m, "a").await;
    let mut made = Vec::new();
    for i in 0..5 {
        let by = if i % 2 == 0 { &li } else { &boss };
        let r = request(CopyTarget::Evidence(e), by, T0 + i * MIN);
        m.insert_request(&r).await.unwrap();
        made.push(r);
    }
    m.decide_request(
        made[0].id,
        Decision::Refuse,
        &boss,
        t(T0 + 9 * MIN),
        Some("no"),
    )
    .await
    .unwrap();
    let ids = |rs: Vec<RequestRecord>| rs.into_iter().map(|r| r.id).collect::<Vec<_>>();

    let all = m
        .list_requests(&RequestFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(
        ids(all),
        made.iter().rev().map(|r| r.id).collect::<Vec<_>>(),
        "newest first"
    );
    let of_li = RequestFilter {
        requester: Some(&li),
        ..Default::default()
    };
    assert_eq!(
        ids(m.list_requests(&of_li, None, 10).await.unwrap()),
        [made[4].id, made[2].id, made[0].id]
    );
    let pending = RequestFilter {
        state: Some(RequestState::Pending),
        ..Default::default()
    };
    assert_eq!(m.list_requests(&pending, None, 10).await.unwrap().len(), 4);
    // What boss may decide: pending requests of others.
    let for_boss = RequestFilter {
        awaiting: Some(&boss),
        ..Default::default()
    };
    assert_eq!(
        ids(m.list_requests(&for_boss, None, 10).await.unwrap()),
        [made[4].id, made[2].id]
    );
    // Pages of two continue after the last row of the previous page.
    let first = m
        .list_requests(&RequestFilter::default(), None, 2)
        .await
        .unwrap();
    let last = first.last().unwrap();
    let second = m
        .list_requests(
            &RequestFilter::default(),
            Some((last.created_at, last.id)),
            2,
        )
        .await
        .unwrap();
    assert_eq!(
        [ids(first), ids(second)].concat(),
        [made[4].id, made[3].id, made[2].id, made[1].id]
    );
}

async fn a_decision_is_a_compare_and_set_from_pending_and_final(m: Metadata) {
    let li = user(&m, "li", &[Role::CaseHandler]).await;
    let boss = user(&m, "boss", &[Role::Supervisor]).await;
    let e = evidence(&m, "a").await;
    let r = request(CopyTarget::Evidence(e), &li, T0);
    m.insert_request(&r).await.unwrap();
    let until = t(T0 + 60 * MIN);
    let approved = m
        .decide_request(
            r.id,
            Decision::Approve { until },
            &boss,
            t(T0 + MIN),
            Some("ok"),
        )
        .await
        .unwrap();
    assert_eq!(approved.state, RequestState::Approved);
    assert_eq!(approved.decided_by, Some(boss.clone()));
    assert_eq!(approved.decided_at, Some(t(T0 + MIN)));
    assert_eq!(approved.decision_note.as_deref(), Some("ok"));
    assert_eq!(approved.expires_at, Some(until));
    assert_eq!(m.get_request(r.id).await.unwrap(), Some(approved.clone()));
    // A second decision loses, whatever it is, and says what the request already is.
    for d in [
        Decision::Refuse,
        Decision::Withdraw,
        Decision::Approve { until },
    ] {
        match m
            .decide_request(r.id, d, &boss, t(T0 + 2 * MIN), None)
            .await
        {
            Err(StoreError::Conflict(msg)) => assert!(msg.contains("approved"), "{msg}"),
            other => panic!("expected a conflict, got {other:?}"),
        }
    }
    assert!(matches!(
        m.decide_request(RequestId::new(), Decision::Refuse, &boss, t(T0), None)
            .await,
        Err(StoreError::NotFound(_))
    ));
    // Nobody approves their own request, not even by writing the row directly.
    let own = request(CopyTarget::Evidence(e), &boss, T0);
    m.insert_request(&own).await.unwrap();
    assert!(
        m.decide_request(own.id, Decision::Approve { until }, &boss, t(T0), None)
            .await
            .is_err()
    );
    m.decide_request(own.id, Decision::Withdraw, &boss, t(T0), None)
        .await
        .unwrap();
    // A decided request is final and no request is ever deleted.
    assert!(
        execute_raw(&m, "UPDATE access_requests SET state = 'pending', decided_by = NULL, decided_at = NULL, expires_at = NULL")
            .await
            .is_err()
    );
    assert!(
        execute_raw(
            &m,
            "UPDATE access_requests SET expires_at = expires_at + 1 WHERE state = 'approved'"
        )
        .await
        .is_err()
    );
    assert!(
        execute_raw(&m, "DELETE FROM access_requests")
            .await
            .is_err()
    );
    // What a pending request asks for cannot be rewritten either.
    let p = request(CopyTarget::Evidence(e), &li, T0);
    m.insert_request(&p).await.unwrap();
    assert!(
        execute_raw(
            &m,
            "UPDATE access_requests SET reason = 'other' WHERE state = 'pending'"
        )
        .await
        .is_err()
    );
    assert_eq!(m.get_request(r.id).await.unwrap(), Some(approved));
}

async fn only_a_live_approval_of_the_same_user_and_target_opens_a_copy(m: Metadata) {
    let li = user(&m, "li", &[Role::CaseHandler]).await;
    let wang = user(&m, "wang", &[Role::CaseHandler]).await;
    let boss = user(&m, "boss", &[Role::Supervisor]).await;
    let e = evidence(&m, "a").await;
    let other = evidence(&m, "b").await;
    let c = case(&m, "C-1", &li).await;
    let ev = CopyTarget::Evidence(e);
    let cs = CopyTarget::Case(c);

    // Pending and refused requests open nothing.
    let pending = request(ev, &li, T0);
    m.insert_request(&pending).await.unwrap();
    let refused = request(ev, &li, T0);
    m.insert_request(&refused).await.unwrap();
    m.decide_request(refused.id, Decision::Refuse, &boss, t(T0), Some("no"))
        .await
        .unwrap();
    assert_eq!(m.live_approval(&li, ev, t(T0 + MIN)).await.unwrap(), None);

    // An approval until T0 + 10 min opens the item for li, before that instant only.
    let ok = request(ev, &li, T0);
    m.insert_request(&ok).await.unwrap();
    m.decide_request(
        ok.id,
        Decision::Approve {
            until: t(T0 + 10 * MIN),
        },
        &boss,
        t(T0),
        None,
    )
    .await
    .unwrap();
    let live = m
        .live_approval(&li, ev, t(T0 + MIN))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(live.id, ok.id);
    assert_eq!(
        m.live_approval(&li, ev, t(T0 + 10 * MIN)).await.unwrap(),
        None
    );
    // Not for another user, another item, or an export of a case.
    assert_eq!(m.live_approval(&wang, ev, t(T0 + MIN)).await.unwrap(), None);
    assert_eq!(
        m.live_approval(&li, CopyTarget::Evidence(other), t(T0 + MIN))
            .await
            .unwrap(),
        None
    );
    assert_eq!(m.live_approval(&li, cs, t(T0 + MIN)).await.unwrap(), None);

    // Exports work the same way, by case.
    let x = request(cs, &li, T0);
    m.insert_request(&x).await.unwrap();
    m.decide_request(
        x.id,
        Decision::Approve {
            until: t(T0 + 5 * MIN),
        },
        &boss,
        t(T0),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        m.live_approval(&li, cs, t(T0 + MIN))
            .await
            .unwrap()
            .map(|r| r.id),
        Some(x.id)
    );
    assert_eq!(
        m.live_approval(&li, cs, t(T0 + 6 * MIN)).await.unwrap(),
        None
    );
}
