//! `AccessStore` on PostgreSQL: every method's behaviour and errors, and the
//! rules that must hold when several nodes (here: several `PostgresStore`
//! instances on one database) act at once: one rotation per refresh token,
//! one bootstrap key, one signing key, revocations seen everywhere. Also
//! the owners of receivers and groups. Each test runs on a fresh database;
//! all skip (saying why) when `CAIRN_TEST_DATABASE_URL` is unset.

mod common;

use cairn_domain::group::GroupPatch;
use cairn_domain::{NewReceiver, Text, Timestamp};
use cairn_store::access::{
    AccessStore, ApiKeyRecord, AuditFilter, GrantFilter, GrantRecord, LoginFailure, NewAuditEntry,
    NewRefreshToken, RefreshOutcome, RoleRecord, SessionRecord, SigningKeyRecord, UserPatch,
    UserRecord,
};
use cairn_store::postgres::{PostgresOptions, PostgresStore};
use cairn_store::{GroupFilter, PageRequest, ReceiverFilter, Store, StoreError};
use common::{new_group, receiver_input};
use sqlx_core::connection::Connection;
use sqlx_core::query::query;
use sqlx_core::row::Row;
use sqlx_postgres::PgConnection;
use std::sync::Arc;
use tokio::sync::Barrier;

/// A fixed "now" (2023-11-14), so expiries are exact.
const T0: i64 = 1_700_000_000_000_000;
const SECOND: i64 = 1_000_000;
const HOUR: i64 = 3_600 * SECOND;

fn at(offset: i64) -> Timestamp {
    Timestamp::from_micros(T0 + offset)
}

async fn node(url: &str) -> Arc<PostgresStore> {
    Arc::new(
        PostgresStore::open(url, PostgresOptions::default())
            .await
            .unwrap(),
    )
}

fn user(name: &str) -> UserRecord {
    UserRecord {
        name: name.to_owned(),
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA${name}"),
        roles: vec!["viewer".to_owned()],
        disabled: false,
        failed_logins: 0,
        locked_until: None,
        last_login_at: None,
        created_at: at(0),
        updated_at: at(0),
    }
}

/// The users that the keys, sessions and grants of a test belong to (a
/// `user:<name>` principal must exist).
async fn people(store: &PostgresStore) {
    for name in ["alice", "bob", "carol"] {
        store.create_user(user(name)).await.unwrap();
    }
}

fn key(id: &str, principal: &str) -> ApiKeyRecord {
    ApiKeyRecord {
        id: id.to_owned(),
        name: format!("key {id}"),
        secret_hash: format!("{id:0>64}"),
        principal: principal.to_owned(),
        roles: vec!["producer".to_owned(), "viewer".to_owned()],
        scopes: vec!["events:create".to_owned()],
        expires_at: Some(at(24 * HOUR)),
        revoked_at: None,
        last_used_at: None,
        created_at: at(0),
        created_by: "cli".to_owned(),
    }
}

fn role(name: &str) -> RoleRecord {
    RoleRecord {
        name: name.to_owned(),
        permissions: vec!["receivers:read".to_owned()],
        on_grant: vec!["events:create".to_owned(), "events:read".to_owned()],
        description: format!("the {name} role"),
        created_at: at(0),
    }
}

fn grant(id: &str, principal: &str, kind: &str, object: &str) -> GrantRecord {
    GrantRecord {
        id: id.to_owned(),
        principal: principal.to_owned(),
        object_kind: kind.to_owned(),
        object_id: object.to_owned(),
        permissions: vec!["events:create".to_owned()],
        created_at: at(0),
        created_by: "user:admin".to_owned(),
    }
}

fn session(id: &str, principal: &str, expires: i64) -> SessionRecord {
    SessionRecord {
        id: id.to_owned(),
        principal: principal.to_owned(),
        created_at: at(0),
        expires_at: at(expires),
        revoked_at: None,
        revoked_reason: None,
    }
}

fn token(hash: &str, expires: i64) -> NewRefreshToken {
    NewRefreshToken {
        hash: hash.to_owned(),
        expires_at: at(expires),
    }
}

fn signing_key(kid: &str, created: i64) -> SigningKeyRecord {
    SigningKeyRecord {
        kid: kid.to_owned(),
        algorithm: "EdDSA".to_owned(),
        private_key: format!("private-{kid}"),
        public_key: format!("public-{kid}"),
        created_at: at(created),
        retired_at: None,
    }
}

fn audit(at_offset: i64, actor: &str, action: &str, outcome: &str) -> NewAuditEntry {
    NewAuditEntry {
        at: at(at_offset),
        actor: actor.to_owned(),
        action: action.to_owned(),
        target: "user:alice".to_owned(),
        outcome: outcome.to_owned(),
        detail: format!("{action} by {actor}"),
        request_id: format!("req-{at_offset}"),
        client_addr: "127.0.0.1:5000".to_owned(),
    }
}

fn page(limit: u32, after: Option<&str>) -> PageRequest {
    PageRequest {
        limit,
        after: after.map(str::to_owned),
    }
}

/// The single field an `Invalid` error names.
fn invalid_field(e: StoreError) -> String {
    match e {
        StoreError::Invalid(errors) => {
            assert_eq!(errors.0.len(), 1, "{errors:?}");
            errors.0[0].field.clone()
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

/// `Group` has no `PartialEq`: compare everything it shows.
fn debug(g: &cairn_domain::Group) -> String {
    format!("{g:?}")
}

fn is_not_found(e: &StoreError) -> bool {
    matches!(e, StoreError::NotFound(_))
}

#[tokio::test]
async fn users_are_created_read_listed_updated_and_refused_when_taken() {
    let Some(db) = common::pg_test_db("users_are_created_read_listed_updated").await else {
        return;
    };
    let store = node(&db.url).await;
    for name in ["carol", "alice", "bob"] {
        store.create_user(user(name)).await.unwrap();
    }
    assert_eq!(store.user("alice").await.unwrap(), Some(user("alice")));
    assert_eq!(store.user("nobody").await.unwrap(), None);

    let mut again = user("alice");
    again.password_hash = "other".into();
    let e = store.create_user(again).await.unwrap_err();
    assert_eq!(invalid_field(e), "name");
    assert_eq!(
        store.user("alice").await.unwrap().unwrap().password_hash,
        user("alice").password_hash,
        "the refused create changed nothing"
    );
    for bad in [String::new(), "x".repeat(65)] {
        let e = store.create_user(user(&bad)).await.unwrap_err();
        assert_eq!(invalid_field(e), "name");
    }
    store.create_user(user(&"é".repeat(64))).await.unwrap();

    let first: Vec<String> = store
        .list_users(page(2, None))
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(first, ["alice", "bob"]);
    let rest: Vec<String> = store
        .list_users(page(10, Some("bob")))
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(rest, ["carol".to_owned(), "é".repeat(64)]);

    // A patch changes only what it names.
    let updated = store
        .update_user(
            "bob",
            UserPatch {
                roles: Some(vec!["admin".into(), "auditor".into()]),
                disabled: Some(true),
                ..UserPatch::default()
            },
            at(5 * SECOND),
        )
        .await
        .unwrap();
    assert_eq!(updated.roles, ["admin", "auditor"]);
    assert!(updated.disabled);
    assert_eq!(updated.password_hash, user("bob").password_hash);
    assert_eq!(updated.updated_at, at(5 * SECOND));
    assert_eq!(updated.created_at, at(0));
    assert_eq!(store.user("bob").await.unwrap(), Some(updated));
    let updated = store
        .update_user(
            "bob",
            UserPatch {
                password_hash: Some("new-hash".into()),
                disabled: Some(false),
                ..UserPatch::default()
            },
            at(6 * SECOND),
        )
        .await
        .unwrap();
    assert_eq!(updated.password_hash, "new-hash");
    assert!(!updated.disabled);
    assert_eq!(updated.roles, ["admin", "auditor"], "roles were left alone");

    let e = store
        .update_user("nobody", UserPatch::default(), at(0))
        .await
        .unwrap_err();
    assert!(is_not_found(&e), "{e:?}");
    let e = store
        .record_login_success("nobody", at(0))
        .await
        .unwrap_err();
    assert!(is_not_found(&e), "{e:?}");
    let e = store
        .record_login_failure("nobody", at(0), 3, HOUR)
        .await
        .unwrap_err();
    assert!(is_not_found(&e), "{e:?}");
    let e = store.delete_user("nobody", at(0)).await.unwrap_err();
    assert!(is_not_found(&e), "{e:?}");
}

#[tokio::test]
async fn failed_logins_lock_the_account_and_count_again_afterwards() {
    let Some(db) = common::pg_test_db("failed_logins_lock_the_account").await else {
        return;
    };
    let store = node(&db.url).await;
    store.create_user(user("alice")).await.unwrap();
    let fail = |offset: i64| {
        let store = store.clone();
        async move {
            store
                .record_login_failure("alice", at(offset), 3, HOUR)
                .await
                .unwrap()
        }
    };
    let counted = |n: u32| LoginFailure {
        failed_logins: n,
        locked_until: None,
    };
    assert_eq!(fail(1).await, counted(1));
    assert_eq!(fail(2).await, counted(2));
    // The third failure locks for an hour and starts the count again.
    let locked = LoginFailure {
        failed_logins: 0,
        locked_until: Some(at(3 + HOUR)),
    };
    assert_eq!(fail(3).await, locked);
    let stored = store.user("alice").await.unwrap().unwrap();
    assert_eq!(stored.failed_logins, 0);
    assert_eq!(stored.locked_until, Some(at(3 + HOUR)));
    // While locked, a failure neither counts nor extends the lock.
    assert_eq!(fail(4).await, locked);
    assert_eq!(fail(HOUR).await, locked);
    // Once the lock has passed, failures count from one again.
    assert_eq!(fail(3 + HOUR).await, counted(1));
    assert_eq!(fail(4 + HOUR).await, counted(2));

    // A success clears the count and records the login.
    store
        .record_login_success("alice", at(5 + HOUR))
        .await
        .unwrap();
    let stored = store.user("alice").await.unwrap().unwrap();
    assert_eq!(stored.failed_logins, 0);
    assert_eq!(stored.locked_until, None);
    assert_eq!(stored.last_login_at, Some(at(5 + HOUR)));

    // An admin unlock clears a lock.
    for i in 0..3 {
        fail(10 + HOUR + i).await;
    }
    assert!(
        store
            .user("alice")
            .await
            .unwrap()
            .unwrap()
            .locked_until
            .is_some()
    );
    let unlocked = store
        .update_user(
            "alice",
            UserPatch {
                unlock: true,
                ..UserPatch::default()
            },
            at(20 + HOUR),
        )
        .await
        .unwrap();
    assert_eq!((unlocked.failed_logins, unlocked.locked_until), (0, None));

    // Threshold 0 never locks.
    for i in 1..=5 {
        let f = store
            .record_login_failure("alice", at(30 + HOUR), 0, HOUR)
            .await
            .unwrap();
        assert_eq!(f, counted(i));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_failed_logins_on_two_nodes_are_each_counted_once() {
    let Some(db) = common::pg_test_db("concurrent_failed_logins_on_two_nodes").await else {
        return;
    };
    let (a, b) = (node(&db.url).await, node(&db.url).await);
    a.create_user(user("alice")).await.unwrap();
    const TRIES: u32 = 40;
    let tasks: Vec<_> = (0..TRIES)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                store
                    .record_login_failure("alice", at(1), 1000, HOUR)
                    .await
                    .unwrap()
                    .failed_logins
            })
        })
        .collect();
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap());
    }
    seen.sort_unstable();
    // Every failure saw a different count: none was lost or doubled.
    assert_eq!(seen, (1..=TRIES).collect::<Vec<_>>());
    assert_eq!(b.user("alice").await.unwrap().unwrap().failed_logins, TRIES);

    // With threshold 10, exactly four of forty concurrent failures lock.
    a.update_user(
        "alice",
        UserPatch {
            unlock: true,
            ..UserPatch::default()
        },
        at(2),
    )
    .await
    .unwrap();
    let tasks: Vec<_> = (0..TRIES)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            // Each lock lasts no time at all, so counting goes on.
            tokio::spawn(async move {
                store
                    .record_login_failure("alice", at(3), 10, 0)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut locks = 0;
    for t in tasks {
        if t.await.unwrap().locked_until.is_some() {
            locks += 1;
        }
    }
    assert_eq!(locks, 4);
}

#[tokio::test]
async fn api_keys_are_stored_listed_revoked_and_touched() {
    let Some(db) = common::pg_test_db("api_keys_are_stored_listed_revoked").await else {
        return;
    };
    let store = node(&db.url).await;
    people(&store).await;
    store.create_api_key(key("k3", "user:alice")).await.unwrap();
    store.create_api_key(key("k1", "key:k1")).await.unwrap();
    store.create_api_key(key("k2", "user:alice")).await.unwrap();
    assert_eq!(
        store.api_key("k1").await.unwrap(),
        Some(key("k1", "key:k1"))
    );
    assert_eq!(store.api_key("nope").await.unwrap(), None);
    let e = store
        .create_api_key(key("k1", "user:bob"))
        .await
        .unwrap_err();
    assert_eq!(invalid_field(e), "id");
    assert_eq!(
        store.api_key("k1").await.unwrap().unwrap().principal,
        "key:k1"
    );

    let ids = |keys: Vec<ApiKeyRecord>| keys.into_iter().map(|k| k.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list_api_keys(None, page(10, None)).await.unwrap()),
        ["k1", "k2", "k3"]
    );
    assert_eq!(
        ids(store
            .list_api_keys(None, page(1, Some("k1")))
            .await
            .unwrap()),
        ["k2"]
    );
    assert_eq!(
        ids(store
            .list_api_keys(Some("user:alice"), page(10, None))
            .await
            .unwrap()),
        ["k2", "k3"]
    );
    assert_eq!(
        ids(store
            .list_api_keys(Some("user:alice"), page(10, Some("k2")))
            .await
            .unwrap()),
        ["k3"]
    );
    assert!(
        store
            .list_api_keys(Some("user:nobody"), page(10, None))
            .await
            .unwrap()
            .is_empty()
    );

    // Revoking keeps the first revocation time.
    let revoked = store.revoke_api_key("k2", at(10)).await.unwrap();
    assert_eq!(revoked.revoked_at, Some(at(10)));
    let again = store.revoke_api_key("k2", at(20)).await.unwrap();
    assert_eq!(again.revoked_at, Some(at(10)));
    assert_eq!(store.api_key("k2").await.unwrap(), Some(again));
    let e = store.revoke_api_key("nope", at(0)).await.unwrap_err();
    assert!(is_not_found(&e), "{e:?}");

    // Touching records the newest use and never moves it back.
    store.touch_api_key("k1", at(50)).await.unwrap();
    store.touch_api_key("k1", at(40)).await.unwrap();
    assert_eq!(
        store.api_key("k1").await.unwrap().unwrap().last_used_at,
        Some(at(50))
    );
    store.touch_api_key("k1", at(60)).await.unwrap();
    assert_eq!(
        store.api_key("k1").await.unwrap().unwrap().last_used_at,
        Some(at(60))
    );
    // An unknown key is not an error (a touch never fails a request).
    store.touch_api_key("nope", at(60)).await.unwrap();
}

#[tokio::test]
async fn bootstrap_key_is_stored_only_while_nobody_can_log_in() {
    let Some(db) = common::pg_test_db("bootstrap_key_is_stored_only_while").await else {
        return;
    };
    let store = node(&db.url).await;
    assert!(
        store
            .bootstrap_api_key(key("boot1", "key:boot1"))
            .await
            .unwrap()
    );
    assert!(store.api_key("boot1").await.unwrap().is_some());
    assert!(
        !store
            .bootstrap_api_key(key("boot2", "key:boot2"))
            .await
            .unwrap()
    );
    assert_eq!(store.api_key("boot2").await.unwrap(), None);
    // Once every key is revoked (and no user exists) it may happen again.
    store.revoke_api_key("boot1", at(1)).await.unwrap();
    assert!(
        store
            .bootstrap_api_key(key("boot3", "key:boot3"))
            .await
            .unwrap()
    );
    store.revoke_api_key("boot3", at(2)).await.unwrap();
    // A user alone is enough to refuse it.
    store.create_user(user("alice")).await.unwrap();
    assert!(
        !store
            .bootstrap_api_key(key("boot4", "key:boot4"))
            .await
            .unwrap()
    );
    assert_eq!(store.api_key("boot4").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bootstrap_raced_from_two_nodes_stores_exactly_one_key() {
    let Some(db) = common::pg_test_db("bootstrap_raced_from_two_nodes").await else {
        return;
    };
    let (a, b) = (node(&db.url).await, node(&db.url).await);
    const RACERS: usize = 16;
    let barrier = Arc::new(Barrier::new(RACERS));
    let tasks: Vec<_> = (0..RACERS)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let id = format!("boot{i:02}");
                barrier.wait().await;
                store
                    .bootstrap_api_key(key(&id, &format!("key:{id}")))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut stored = 0;
    for t in tasks {
        if t.await.unwrap() {
            stored += 1;
        }
    }
    assert_eq!(stored, 1);
    assert_eq!(
        a.list_api_keys(None, page(100, None)).await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn roles_are_created_read_listed_and_deleted() {
    let Some(db) = common::pg_test_db("roles_are_created_read_listed").await else {
        return;
    };
    let store = node(&db.url).await;
    for name in ["releaser", "builder", "ops"] {
        store.create_role(role(name)).await.unwrap();
    }
    assert_eq!(store.role("ops").await.unwrap(), Some(role("ops")));
    assert_eq!(store.role("nope").await.unwrap(), None);
    let e = store.create_role(role("ops")).await.unwrap_err();
    assert_eq!(invalid_field(e), "name");

    let names = |roles: Vec<RoleRecord>| roles.into_iter().map(|r| r.name).collect::<Vec<_>>();
    let mut some = names(
        store
            .roles(&["ops".into(), "admin".into(), "builder".into()])
            .await
            .unwrap(),
    );
    some.sort();
    assert_eq!(some, ["builder", "ops"]);
    assert!(store.roles(&[]).await.unwrap().is_empty());
    assert_eq!(
        names(store.list_roles(page(2, None)).await.unwrap()),
        ["builder", "ops"]
    );
    assert_eq!(
        names(store.list_roles(page(2, Some("ops"))).await.unwrap()),
        ["releaser"]
    );

    store.delete_role("ops").await.unwrap();
    assert_eq!(store.role("ops").await.unwrap(), None);
    let e = store.delete_role("ops").await.unwrap_err();
    assert!(is_not_found(&e), "{e:?}");
}

#[tokio::test]
async fn grants_are_created_filtered_and_deleted() {
    let Some(db) = common::pg_test_db("grants_are_created_filtered").await else {
        return;
    };
    let store = node(&db.url).await;
    people(&store).await;
    let all = [
        grant("g1", "user:alice", "receiver", "R1"),
        grant("g2", "user:bob", "receiver", "R1"),
        grant("g3", "user:alice", "group", "G1"),
        grant("g4", "key:k1", "receiver", "R2"),
    ];
    for g in &all {
        store.create_grant(g.clone()).await.unwrap();
    }
    let e = store
        .create_grant(grant("g1", "user:carol", "group", "G9"))
        .await
        .unwrap_err();
    assert_eq!(invalid_field(e), "id");
    let e = store
        .create_grant(grant("g5", "user:carol", "event", "E1"))
        .await
        .unwrap_err();
    assert_eq!(invalid_field(e), "object_kind");

    assert_eq!(
        store.grants_of("user:alice").await.unwrap(),
        [all[0].clone(), all[2].clone()]
    );
    assert!(store.grants_of("user:nobody").await.unwrap().is_empty());

    let ids = |gs: Vec<GrantRecord>| gs.into_iter().map(|g| g.id).collect::<Vec<_>>();
    let list = |filter: GrantFilter, p: PageRequest| {
        let store = store.clone();
        async move { ids(store.list_grants(filter, p).await.unwrap()) }
    };
    assert_eq!(
        list(GrantFilter::default(), page(10, None)).await,
        ["g1", "g2", "g3", "g4"]
    );
    assert_eq!(
        list(GrantFilter::default(), page(2, Some("g1"))).await,
        ["g2", "g3"]
    );
    assert_eq!(
        list(
            GrantFilter {
                object_kind: Some("receiver".into()),
                object_id: Some("R1".into()),
                ..GrantFilter::default()
            },
            page(10, None)
        )
        .await,
        ["g1", "g2"]
    );
    assert_eq!(
        list(
            GrantFilter {
                principal: Some("user:alice".into()),
                object_kind: Some("group".into()),
                ..GrantFilter::default()
            },
            page(10, None)
        )
        .await,
        ["g3"]
    );

    assert_eq!(store.delete_grant("g2").await.unwrap(), all[1]);
    let e = store.delete_grant("g2").await.unwrap_err();
    assert!(is_not_found(&e), "{e:?}");
    assert_eq!(
        list(GrantFilter::default(), page(10, None)).await,
        ["g1", "g3", "g4"]
    );
}

#[tokio::test]
async fn refresh_tokens_rotate_and_reuse_revokes_the_family() {
    let Some(db) = common::pg_test_db("refresh_tokens_rotate_and_reuse").await else {
        return;
    };
    let store = node(&db.url).await;
    people(&store).await;
    let s = session("S1", "user:alice", 10 * HOUR);
    store
        .create_session(s.clone(), token("t1", HOUR))
        .await
        .unwrap();
    assert_eq!(store.session("S1").await.unwrap(), Some(s.clone()));
    assert_eq!(store.session("S9").await.unwrap(), None);
    let e = store
        .create_session(s.clone(), token("t-other", HOUR))
        .await
        .unwrap_err();
    assert_eq!(invalid_field(e), "id");
    // A refused session left no token behind.
    assert_eq!(
        store
            .rotate_refresh_token("t-other", token("x", HOUR), at(1))
            .await
            .unwrap(),
        RefreshOutcome::Unknown
    );

    // t1 -> t2 -> t3, each in the same session.
    assert_eq!(
        store
            .rotate_refresh_token("t1", token("t2", 2 * HOUR), at(10))
            .await
            .unwrap(),
        RefreshOutcome::Rotated(s.clone())
    );
    assert_eq!(
        store
            .rotate_refresh_token("t2", token("t3", 3 * HOUR), at(20))
            .await
            .unwrap(),
        RefreshOutcome::Rotated(s.clone())
    );
    // t1 again: reuse. The whole family is revoked, t3 included.
    let reused = SessionRecord {
        revoked_at: Some(at(30)),
        revoked_reason: Some("reuse".into()),
        ..s.clone()
    };
    assert_eq!(
        store
            .rotate_refresh_token("t1", token("t4", 4 * HOUR), at(30))
            .await
            .unwrap(),
        RefreshOutcome::Reused(reused.clone())
    );
    assert_eq!(store.session("S1").await.unwrap(), Some(reused.clone()));
    assert_eq!(
        store
            .rotate_refresh_token("t3", token("t5", 4 * HOUR), at(40))
            .await
            .unwrap(),
        RefreshOutcome::Revoked(reused.clone())
    );
    // t4 was never stored: the reuse rotated nothing.
    assert_eq!(
        store
            .rotate_refresh_token("t4", token("t6", 4 * HOUR), at(40))
            .await
            .unwrap(),
        RefreshOutcome::Unknown
    );
    assert_eq!(
        store
            .rotate_refresh_token("never-issued", token("t7", HOUR), at(40))
            .await
            .unwrap(),
        RefreshOutcome::Unknown
    );
}

#[tokio::test]
async fn expired_tokens_and_sessions_do_not_rotate() {
    let Some(db) = common::pg_test_db("expired_tokens_and_sessions").await else {
        return;
    };
    let store = node(&db.url).await;
    people(&store).await;
    store
        .create_session(session("S1", "user:alice", 10 * HOUR), token("t1", HOUR))
        .await
        .unwrap();
    assert_eq!(
        store
            .rotate_refresh_token("t1", token("t2", 2 * HOUR), at(HOUR))
            .await
            .unwrap(),
        RefreshOutcome::Expired
    );
    // Nothing changed: the token still rotates before its expiry.
    assert!(matches!(
        store
            .rotate_refresh_token("t1", token("t2", 20 * HOUR), at(HOUR - 1))
            .await
            .unwrap(),
        RefreshOutcome::Rotated(_)
    ));
    // The session's expiry bounds the token's.
    assert_eq!(
        store
            .rotate_refresh_token("t2", token("t3", 30 * HOUR), at(10 * HOUR))
            .await
            .unwrap(),
        RefreshOutcome::Expired
    );
    assert_eq!(store.session("S1").await.unwrap().unwrap().revoked_at, None);
}

#[tokio::test]
async fn sessions_are_revoked_once_and_by_principal() {
    let Some(db) = common::pg_test_db("sessions_are_revoked_once").await else {
        return;
    };
    let store = node(&db.url).await;
    people(&store).await;
    store
        .create_session(session("S1", "user:alice", HOUR), token("a1", HOUR))
        .await
        .unwrap();
    store
        .create_session(session("S2", "user:alice", HOUR), token("a2", HOUR))
        .await
        .unwrap();
    store
        .create_session(session("S3", "user:alice", 10), token("a3", 10))
        .await
        .unwrap();
    store
        .create_session(session("S4", "user:bob", HOUR), token("b1", HOUR))
        .await
        .unwrap();

    let revoked = store.revoke_session("S1", "logout", at(100)).await.unwrap();
    assert_eq!(revoked.revoked_at, Some(at(100)));
    assert_eq!(revoked.revoked_reason.as_deref(), Some("logout"));
    // Revoking again keeps it as it was.
    let again = store
        .revoke_session("S1", "user disabled", at(200))
        .await
        .unwrap();
    assert_eq!(again, revoked);
    let e = store
        .revoke_session("S9", "logout", at(200))
        .await
        .unwrap_err();
    assert!(is_not_found(&e), "{e:?}");

    // Only live sessions: S1 is revoked, S3 expired at 10.
    assert_eq!(
        store
            .revoke_sessions_of("user:alice", "user disabled", at(300))
            .await
            .unwrap(),
        1
    );
    let s2 = store.session("S2").await.unwrap().unwrap();
    assert_eq!(s2.revoked_reason.as_deref(), Some("user disabled"));
    assert_eq!(s2.revoked_at, Some(at(300)));
    assert_eq!(store.session("S3").await.unwrap().unwrap().revoked_at, None);
    assert_eq!(store.session("S4").await.unwrap().unwrap().revoked_at, None);
    assert_eq!(
        store
            .revoke_sessions_of("user:alice", "user disabled", at(400))
            .await
            .unwrap(),
        0
    );
    assert!(matches!(
        store
            .rotate_refresh_token("a2", token("a2b", HOUR), at(500))
            .await
            .unwrap(),
        RefreshOutcome::Revoked(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_token_presented_on_two_nodes_at_once_rotates_exactly_once() {
    let Some(db) = common::pg_test_db("one_token_presented_on_two_nodes").await else {
        return;
    };
    let (a, b) = (node(&db.url).await, node(&db.url).await);
    people(&a).await;
    const ROUNDS: usize = 25;
    for round in 0..ROUNDS {
        let sid = format!("S{round:02}");
        let first = format!("t{round:02}");
        a.create_session(session(&sid, "user:alice", HOUR), token(&first, HOUR))
            .await
            .unwrap();
        let barrier = Arc::new(Barrier::new(2));
        let racers: Vec<_> = [(a.clone(), "a"), (b.clone(), "b")]
            .into_iter()
            .map(|(store, name)| {
                let (barrier, first) = (barrier.clone(), first.clone());
                let next = format!("{first}-next-{name}");
                tokio::spawn(async move {
                    barrier.wait().await;
                    store
                        .rotate_refresh_token(&first, token(&next, HOUR), at(10))
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for r in racers {
            outcomes.push(r.await.unwrap());
        }
        let rotated = outcomes
            .iter()
            .filter(|o| matches!(o, RefreshOutcome::Rotated(_)))
            .count();
        let reused = outcomes
            .iter()
            .filter(|o| matches!(o, RefreshOutcome::Reused(_)))
            .count();
        assert_eq!((rotated, reused), (1, 1), "round {round}: {outcomes:?}");
        // The family is revoked for reuse, as either node sees at once.
        for store in [&a, &b] {
            let s = store.session(&sid).await.unwrap().unwrap();
            assert_eq!(s.revoked_reason.as_deref(), Some("reuse"));
        }
    }
}

#[tokio::test]
async fn revocations_on_one_node_are_seen_by_the_other_at_once() {
    let Some(db) = common::pg_test_db("revocations_on_one_node_are_seen").await else {
        return;
    };
    let (a, b) = (node(&db.url).await, node(&db.url).await);
    people(&a).await;
    a.create_api_key(key("k1", "key:k1")).await.unwrap();
    a.create_session(session("S1", "user:alice", HOUR), token("t1", HOUR))
        .await
        .unwrap();
    // b reads both (nothing may be cached from here on).
    assert_eq!(b.api_key("k1").await.unwrap().unwrap().revoked_at, None);
    assert_eq!(b.session("S1").await.unwrap().unwrap().revoked_at, None);

    a.revoke_api_key("k1", at(5)).await.unwrap();
    a.revoke_session("S1", "logout", at(6)).await.unwrap();
    assert_eq!(
        b.api_key("k1").await.unwrap().unwrap().revoked_at,
        Some(at(5))
    );
    let s = b.session("S1").await.unwrap().unwrap();
    assert_eq!(s.revoked_reason.as_deref(), Some("logout"));
    assert_eq!(
        b.rotate_refresh_token("t1", token("t2", HOUR), at(7))
            .await
            .unwrap(),
        RefreshOutcome::Revoked(s)
    );
    // And the other way round: a grant deleted on b is gone for a.
    b.create_grant(grant("g1", "key:k2", "receiver", "R1"))
        .await
        .unwrap();
    assert_eq!(a.grants_of("key:k2").await.unwrap().len(), 1);
    b.delete_grant("g1").await.unwrap();
    assert!(a.grants_of("key:k2").await.unwrap().is_empty());
}

#[tokio::test]
async fn deleting_a_user_revokes_its_sessions_and_keys_and_drops_its_grants() {
    let Some(db) = common::pg_test_db("deleting_a_user_revokes").await else {
        return;
    };
    let store = node(&db.url).await;
    store.create_user(user("alice")).await.unwrap();
    store.create_user(user("bob")).await.unwrap();
    for (sid, principal) in [
        ("SA1", "user:alice"),
        ("SA2", "user:alice"),
        ("SB1", "user:bob"),
    ] {
        store
            .create_session(
                session(sid, principal, HOUR),
                token(&format!("{sid}-t"), HOUR),
            )
            .await
            .unwrap();
    }
    store
        .create_api_key(key("ka1", "user:alice"))
        .await
        .unwrap();
    let mut old = key("ka2", "user:alice");
    old.revoked_at = Some(at(1));
    store.create_api_key(old).await.unwrap();
    store.create_api_key(key("kb1", "user:bob")).await.unwrap();
    // A standalone key is not alice's even if its name says so.
    store
        .create_api_key(key("kx", "key:user:alice"))
        .await
        .unwrap();
    store
        .create_grant(grant("g1", "user:alice", "receiver", "R1"))
        .await
        .unwrap();
    store
        .create_grant(grant("g2", "user:alice", "group", "G1"))
        .await
        .unwrap();
    store
        .create_grant(grant("g3", "user:bob", "receiver", "R1"))
        .await
        .unwrap();

    store.delete_user("alice", at(50)).await.unwrap();

    assert_eq!(store.user("alice").await.unwrap(), None);
    for sid in ["SA1", "SA2"] {
        let s = store.session(sid).await.unwrap().unwrap();
        assert_eq!(s.revoked_at, Some(at(50)), "{sid}");
        assert!(s.revoked_reason.is_some(), "{sid}");
    }
    assert_eq!(
        store.api_key("ka1").await.unwrap().unwrap().revoked_at,
        Some(at(50))
    );
    assert_eq!(
        store.api_key("ka2").await.unwrap().unwrap().revoked_at,
        Some(at(1)),
        "an earlier revocation is kept"
    );
    assert!(store.grants_of("user:alice").await.unwrap().is_empty());
    // Bob's, and the standalone key, are untouched.
    assert!(store.user("bob").await.unwrap().is_some());
    assert_eq!(
        store.session("SB1").await.unwrap().unwrap().revoked_at,
        None
    );
    assert_eq!(
        store.api_key("kb1").await.unwrap().unwrap().revoked_at,
        None
    );
    assert_eq!(store.api_key("kx").await.unwrap().unwrap().revoked_at, None);
    assert_eq!(store.grants_of("user:bob").await.unwrap().len(), 1);
    assert!(matches!(
        store
            .rotate_refresh_token("SA1-t", token("n", HOUR), at(60))
            .await
            .unwrap(),
        RefreshOutcome::Revoked(_)
    ));

    let e = store.delete_user("alice", at(60)).await.unwrap_err();
    assert!(is_not_found(&e), "{e:?}");
    // The name is free again; the new alice inherits nothing.
    store.create_user(user("alice")).await.unwrap();
    assert!(store.grants_of("user:alice").await.unwrap().is_empty());
}

#[tokio::test]
async fn signing_keys_are_ensured_once_and_rotated() {
    let Some(db) = common::pg_test_db("signing_keys_are_ensured_once").await else {
        return;
    };
    let store = node(&db.url).await;
    assert!(store.signing_keys().await.unwrap().is_empty());
    let first = store
        .ensure_signing_key(signing_key("kid1", 0))
        .await
        .unwrap();
    assert_eq!(first, signing_key("kid1", 0));
    // Another candidate is not stored: the existing key comes back.
    let again = store
        .ensure_signing_key(signing_key("kid2", 10))
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(store.signing_keys().await.unwrap(), vec![first.clone()]);

    store
        .rotate_signing_key(signing_key("kid3", 20), at(20))
        .await
        .unwrap();
    let keys = store.signing_keys().await.unwrap();
    let retired = SigningKeyRecord {
        retired_at: Some(at(20)),
        ..first.clone()
    };
    assert_eq!(keys, [signing_key("kid3", 20), retired.clone()]);
    assert_eq!(
        store
            .ensure_signing_key(signing_key("kid4", 30))
            .await
            .unwrap(),
        signing_key("kid3", 20)
    );
    store
        .rotate_signing_key(signing_key("kid5", 40), at(40))
        .await
        .unwrap();
    let keys = store.signing_keys().await.unwrap();
    assert_eq!(keys.len(), 3);
    assert_eq!(keys[0], signing_key("kid5", 40));
    assert_eq!(keys[1].retired_at, Some(at(40)));
    assert_eq!(keys[2], retired, "an older retirement is kept");

    // A kid already used is refused, and changes nothing.
    let e = store
        .rotate_signing_key(signing_key("kid1", 50), at(50))
        .await
        .unwrap_err();
    assert_eq!(invalid_field(e), "kid");
    assert_eq!(store.signing_keys().await.unwrap(), keys);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signing_key_ensured_and_rotated_from_two_nodes_at_once() {
    let Some(db) = common::pg_test_db("signing_key_ensured_from_two_nodes").await else {
        return;
    };
    let (a, b) = (node(&db.url).await, node(&db.url).await);
    const RACERS: usize = 12;
    let barrier = Arc::new(Barrier::new(RACERS));
    let tasks: Vec<_> = (0..RACERS)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                store
                    .ensure_signing_key(signing_key(&format!("kid{i:02}"), 0))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut kids = Vec::new();
    for t in tasks {
        kids.push(t.await.unwrap().kid);
    }
    kids.dedup();
    assert_eq!(kids.len(), 1, "every node got the same key: {kids:?}");
    assert_eq!(a.signing_keys().await.unwrap().len(), 1);

    // Concurrent rotations each succeed, one after the other: one key left
    // unretired, every other retired.
    let barrier = Arc::new(Barrier::new(RACERS));
    let tasks: Vec<_> = (0..RACERS)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                store
                    .rotate_signing_key(signing_key(&format!("rot{i:02}"), 10), at(10))
                    .await
                    .unwrap()
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let keys = b.signing_keys().await.unwrap();
    assert_eq!(keys.len(), RACERS + 1);
    assert_eq!(keys.iter().filter(|k| k.retired_at.is_none()).count(), 1);
}

#[tokio::test]
async fn audit_log_lists_newest_first_and_refuses_changes() {
    let Some(db) = common::pg_test_db("audit_log_lists_newest_first").await else {
        return;
    };
    let store = node(&db.url).await;
    let entries = [
        audit(1, "user:alice", "auth.login", "success"),
        audit(2, "user:bob", "auth.login", "failure"),
        audit(3, "user:alice", "key.create", "success"),
        audit(4, "anonymous", "permission.denied", "denied"),
        audit(5, "user:alice", "auth.login", "failure"),
    ];
    let mut seqs = Vec::new();
    for e in &entries {
        seqs.push(store.append_audit(e.clone()).await.unwrap());
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    let list = |filter: AuditFilter| {
        let store = store.clone();
        async move {
            store
                .list_audit(filter)
                .await
                .unwrap()
                .into_iter()
                .map(|e| (e.seq, e.entry))
                .collect::<Vec<_>>()
        }
    };
    let expect = |idx: &[usize]| {
        idx.iter()
            .map(|&i| (seqs[i], entries[i].clone()))
            .collect::<Vec<_>>()
    };
    let all = AuditFilter {
        limit: 100,
        ..AuditFilter::default()
    };
    assert_eq!(list(all.clone()).await, expect(&[4, 3, 2, 1, 0]));
    assert_eq!(
        list(AuditFilter {
            actor: Some("user:alice".into()),
            ..all.clone()
        })
        .await,
        expect(&[4, 2, 0])
    );
    assert_eq!(
        list(AuditFilter {
            action: Some("auth.login".into()),
            outcome: Some("failure".into()),
            ..all.clone()
        })
        .await,
        expect(&[4, 1])
    );
    assert_eq!(
        list(AuditFilter {
            since: Some(at(3)),
            ..all.clone()
        })
        .await,
        expect(&[4, 3, 2])
    );
    // Paging, newest first.
    let first = list(AuditFilter {
        limit: 2,
        ..AuditFilter::default()
    })
    .await;
    assert_eq!(first, expect(&[4, 3]));
    let next = list(AuditFilter {
        limit: 2,
        before_seq: Some(first[1].0),
        ..AuditFilter::default()
    })
    .await;
    assert_eq!(next, expect(&[2, 1]));
    let last = list(AuditFilter {
        limit: 2,
        before_seq: Some(next[1].0),
        ..AuditFilter::default()
    })
    .await;
    assert_eq!(last, expect(&[0]));

    // Append-only, whoever asks: a connection of its own, outside the store.
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    for sql in [
        "UPDATE audit_log SET outcome = 'success'",
        "UPDATE audit_log SET detail = 'x' WHERE false",
        "DELETE FROM audit_log",
        "DELETE FROM audit_log WHERE seq < 0",
        "TRUNCATE audit_log",
    ] {
        let e = query(sql).execute(&mut conn).await.unwrap_err();
        assert!(e.to_string().contains("append-only"), "{sql}: {e}");
    }
    let n: i64 = query("SELECT count(*) FROM audit_log")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(n, 5);
    conn.close().await.unwrap();
    assert_eq!(list(all).await, expect(&[4, 3, 2, 1, 0]));
}

#[tokio::test]
async fn owners_of_receivers_and_groups_round_trip() {
    let Some(db) = common::pg_test_db("owners_of_receivers_and_groups").await else {
        return;
    };
    let a = node(&db.url).await;
    let mut owned = NewReceiver::parse(receiver_input()).unwrap();
    owned.owner = Some("user:alice".into());
    let owned = a.create_receiver(owned).await.unwrap();
    assert_eq!(owned.owner.as_deref(), Some("user:alice"));
    let anonymous = a
        .create_receiver(NewReceiver::parse(receiver_input()).unwrap())
        .await
        .unwrap();
    assert_eq!(anonymous.owner, None);
    let ids = [owned.id.to_string(), anonymous.id.to_string()];
    let mut group = new_group("gate", true, &ids);
    group.owner = Some("key:k1".into());
    let group = a.create_group(group).await.unwrap();
    assert_eq!(group.owner.as_deref(), Some("key:k1"));
    let plain = a
        .create_group(new_group("plain", false, &ids))
        .await
        .unwrap();
    assert_eq!(plain.owner, None);

    // A second node has nothing cached: everything comes from the rows.
    let b = node(&db.url).await;
    let r = b.receiver(owned.id).await.unwrap().unwrap();
    assert_eq!(r.owner.as_deref(), Some("user:alice"));
    assert_eq!(b.receiver(anonymous.id).await.unwrap().unwrap().owner, None);
    let c = node(&db.url).await;
    let mut batch = c.receivers(vec![owned.id, anonymous.id]).await.unwrap();
    batch.sort_by_key(|r| r.id);
    let owners: Vec<_> = batch.iter().map(|r| r.owner.clone()).collect();
    assert_eq!(owners, [Some("user:alice".to_owned()), None]);
    let d = node(&db.url).await;
    let listed = d
        .list_receivers(ReceiverFilter::default(), page(10, None))
        .await
        .unwrap();
    let owners: Vec<_> = listed.iter().map(|r| r.owner.clone()).collect();
    assert_eq!(owners, [Some("user:alice".to_owned()), None]);

    assert_eq!(
        debug(&b.group(group.id).await.unwrap().unwrap()),
        debug(&group)
    );
    assert_eq!(b.group(plain.id).await.unwrap().unwrap().owner, None);
    let listed = b
        .list_groups(GroupFilter::default(), page(10, None))
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(debug).collect::<Vec<_>>(),
        [debug(&group), debug(&plain)]
    );
    // Changing a group keeps its owner.
    let renamed = b
        .update_group(
            group.id,
            GroupPatch {
                name: Some(Text::parse("gate2").unwrap()),
                ..GroupPatch::default()
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(renamed.owner.as_deref(), Some("key:k1"));
    let fewer = b
        .remove_group_receiver(group.id, anonymous.id, None)
        .await
        .unwrap();
    assert_eq!(fewer.owner.as_deref(), Some("key:k1"));
    assert_eq!(
        a.group(group.id).await.unwrap().unwrap().owner.as_deref(),
        Some("key:k1")
    );
}

#[tokio::test]
async fn nul_characters_are_refused_on_writes_and_match_nothing_on_reads() {
    let Some(db) = common::pg_test_db("nul_characters_are_refused").await else {
        return;
    };
    let store = node(&db.url).await;
    let nul = "a\0b";
    // Writes name the field that PostgreSQL cannot store.
    // Every such field is named (the test user's hash contains its name).
    match store.create_user(user(nul)).await.unwrap_err() {
        StoreError::Invalid(errors) => {
            let fields: Vec<_> = errors.0.iter().map(|e| e.field.as_str()).collect();
            assert_eq!(fields, ["name", "password_hash"]);
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    let mut bad = user("alice");
    bad.roles.push(nul.into());
    assert_eq!(
        invalid_field(store.create_user(bad).await.unwrap_err()),
        "roles"
    );
    let mut bad = key("k1", "key:k1");
    bad.name = nul.into();
    assert_eq!(
        invalid_field(store.create_api_key(bad.clone()).await.unwrap_err()),
        "name"
    );
    assert_eq!(
        invalid_field(store.bootstrap_api_key(bad).await.unwrap_err()),
        "name"
    );
    let mut bad = role("ops");
    bad.on_grant.push(nul.into());
    assert_eq!(
        invalid_field(store.create_role(bad).await.unwrap_err()),
        "on_grant"
    );
    assert_eq!(
        invalid_field(
            store
                .create_grant(grant("g1", "user:alice", "receiver", nul))
                .await
                .unwrap_err()
        ),
        "object_id"
    );
    assert_eq!(
        invalid_field(
            store
                .create_session(session("S1", "user:alice", HOUR), token(nul, HOUR))
                .await
                .unwrap_err()
        ),
        "hash"
    );
    assert_eq!(
        invalid_field(
            store
                .ensure_signing_key(SigningKeyRecord {
                    algorithm: nul.into(),
                    ..signing_key("kid1", 0)
                })
                .await
                .unwrap_err()
        ),
        "algorithm"
    );
    assert_eq!(
        invalid_field(store.list_users(page(10, Some(nul))).await.unwrap_err()),
        "after"
    );
    // Nothing was stored by any of them.
    assert!(store.list_users(page(10, None)).await.unwrap().is_empty());
    assert!(
        store
            .list_api_keys(None, page(10, None))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.session("S1").await.unwrap(), None);
    assert!(store.signing_keys().await.unwrap().is_empty());

    // Lookups by such a key find nothing.
    store.create_user(user("alice")).await.unwrap();
    assert_eq!(store.user(nul).await.unwrap(), None);
    assert!(is_not_found(
        &store
            .record_login_failure(nul, at(0), 3, HOUR)
            .await
            .unwrap_err()
    ));
    assert!(is_not_found(
        &store.delete_user(nul, at(0)).await.unwrap_err()
    ));
    assert_eq!(store.api_key(nul).await.unwrap(), None);
    store.touch_api_key(nul, at(0)).await.unwrap();
    assert_eq!(store.role(nul).await.unwrap(), None);
    assert!(store.roles(&[nul.to_owned()]).await.unwrap().is_empty());
    assert!(store.grants_of(nul).await.unwrap().is_empty());
    assert_eq!(store.session(nul).await.unwrap(), None);
    assert_eq!(
        store
            .rotate_refresh_token(nul, token("t2", HOUR), at(0))
            .await
            .unwrap(),
        RefreshOutcome::Unknown
    );
    assert_eq!(
        store
            .revoke_sessions_of(nul, "logout", at(0))
            .await
            .unwrap(),
        0
    );

    // An audit entry about such input is recorded, the NUL replaced.
    let seq = store
        .append_audit(audit(1, "anonymous", "auth.login", "failure"))
        .await
        .unwrap();
    let mut odd = audit(2, "anonymous", "auth.login", "failure");
    odd.detail = format!("unknown user {nul:?} {nul}");
    let odd_seq = store.append_audit(odd).await.unwrap();
    assert!(odd_seq > seq);
    let listed = store
        .list_audit(AuditFilter {
            limit: 1,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(listed[0].seq, odd_seq);
    assert_eq!(listed[0].entry.detail, "unknown user \"a\\0b\" a\u{FFFD}b");
    assert!(
        store
            .list_audit(AuditFilter {
                actor: Some(nul.into()),
                limit: 10,
                ..AuditFilter::default()
            })
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_presentations_of_one_token_rotate_once_and_revoke_once() {
    let Some(db) = common::pg_test_db("many_presentations_of_one_token").await else {
        return;
    };
    let (a, b) = (node(&db.url).await, node(&db.url).await);
    people(&a).await;
    const PRESENTERS: usize = 8;
    for round in 0..5 {
        let sid = format!("S{round}");
        let first = format!("t{round}");
        a.create_session(session(&sid, "user:alice", HOUR), token(&first, HOUR))
            .await
            .unwrap();
        let barrier = Arc::new(Barrier::new(PRESENTERS));
        let tasks: Vec<_> = (0..PRESENTERS)
            .map(|i| {
                let store = if i % 2 == 0 { a.clone() } else { b.clone() };
                let (barrier, first) = (barrier.clone(), first.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    store
                        .rotate_refresh_token(&first, token(&format!("{first}-{i}"), HOUR), at(1))
                        .await
                        .unwrap()
                })
            })
            .collect();
        let (mut rotated, mut reused, mut revoked) = (0, 0, 0);
        for t in tasks {
            match t.await.unwrap() {
                RefreshOutcome::Rotated(_) => rotated += 1,
                RefreshOutcome::Reused(_) => reused += 1,
                RefreshOutcome::Revoked(_) => revoked += 1,
                other => panic!("round {round}: {other:?}"),
            }
        }
        // The first rotates, the next revokes for reuse, the rest find the
        // family revoked; none fails (no deadlock between them).
        assert_eq!(
            (rotated, reused, revoked),
            (1, 1, PRESENTERS - 2),
            "round {round}"
        );
    }
}

#[tokio::test]
async fn a_rotation_waits_for_a_revocation_in_flight_and_sees_it() {
    let Some(db) = common::pg_test_db("a_rotation_waits_for_a_revocation").await else {
        return;
    };
    let store = node(&db.url).await;
    people(&store).await;
    store
        .create_session(session("S1", "user:alice", HOUR), token("t1", HOUR))
        .await
        .unwrap();
    // Another node's logout, not committed yet.
    let mut other = PgConnection::connect(&db.url).await.unwrap();
    query("BEGIN").execute(&mut other).await.unwrap();
    query("UPDATE sessions SET revoked_at = $1, revoked_reason = 'logout' WHERE id = 'S1'")
        .bind(T0 + 5)
        .execute(&mut other)
        .await
        .unwrap();
    let rotation = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .rotate_refresh_token("t1", token("t2", HOUR), at(10))
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!rotation.is_finished(), "the rotation waits for the logout");
    query("COMMIT").execute(&mut other).await.unwrap();
    let outcome = rotation.await.unwrap();
    let RefreshOutcome::Revoked(s) = outcome else {
        panic!("expected Revoked, got {outcome:?}");
    };
    assert_eq!(s.revoked_reason.as_deref(), Some("logout"));
    other.close().await.unwrap();
}

#[tokio::test]
async fn credentials_and_grants_need_their_user_even_while_it_is_being_deleted() {
    let Some(db) = common::pg_test_db("credentials_and_grants_need_their_user").await else {
        return;
    };
    let store = node(&db.url).await;
    // No such user: nothing is stored for it.
    let e = store
        .create_api_key(key("k1", "user:ghost"))
        .await
        .unwrap_err();
    assert_eq!(invalid_field(e), "principal");
    let e = store
        .create_session(session("S1", "user:ghost", HOUR), token("t1", HOUR))
        .await
        .unwrap_err();
    assert_eq!(invalid_field(e), "principal");
    let e = store
        .create_grant(grant("g1", "user:ghost", "receiver", "R1"))
        .await
        .unwrap_err();
    assert_eq!(invalid_field(e), "principal");
    assert_eq!(store.api_key("k1").await.unwrap(), None);
    assert_eq!(store.session("S1").await.unwrap(), None);
    assert!(store.grants_of("user:ghost").await.unwrap().is_empty());
    // Other principals have no user to need.
    store
        .create_grant(grant("g2", "oidc:sub-1", "group", "G1"))
        .await
        .unwrap();
    store.create_api_key(key("k2", "key:k2")).await.unwrap();

    // A key issued while the user's deletion is in flight (on another node)
    // waits for it and is then refused: it cannot outlive the user.
    store.create_user(user("alice")).await.unwrap();
    let mut other = PgConnection::connect(&db.url).await.unwrap();
    query("BEGIN").execute(&mut other).await.unwrap();
    query("DELETE FROM users WHERE name = 'alice'")
        .execute(&mut other)
        .await
        .unwrap();
    let issue = tokio::spawn({
        let store = store.clone();
        async move { store.create_api_key(key("k3", "user:alice")).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!issue.is_finished(), "the key waits for the deletion");
    query("COMMIT").execute(&mut other).await.unwrap();
    let e = issue.await.unwrap().unwrap_err();
    assert_eq!(invalid_field(e), "principal");
    assert_eq!(store.api_key("k3").await.unwrap(), None);
    other.close().await.unwrap();
}

/// What authenticating one request reads, in one round trip: the key or
/// session, the user it acts as, its principal's grants; the same as the
/// separate reads give.
#[tokio::test]
async fn credentials_come_with_their_user_and_grants_in_one_read() {
    let Some(db) = common::pg_test_db("credentials_come_with_their_user").await else {
        return;
    };
    let store = node(&db.url).await;
    people(&store).await;
    store.create_api_key(key("k1", "user:alice")).await.unwrap();
    store.create_api_key(key("k2", "key:k2")).await.unwrap();
    let grants = [
        grant("g2", "user:alice", "group", "G1"),
        grant("g1", "user:alice", "receiver", "R1"),
    ];
    for g in &grants {
        store.create_grant(g.clone()).await.unwrap();
    }
    store
        .create_grant(grant("g3", "user:bob", "receiver", "R1"))
        .await
        .unwrap();
    store
        .create_session(session("s1", "user:alice", 1000), token("h1", 900))
        .await
        .unwrap();

    let by_id = vec![grants[1].clone(), grants[0].clone()];
    let c = store.api_key_credential("k1").await.unwrap().unwrap();
    assert_eq!(Some(c.record), store.api_key("k1").await.unwrap());
    assert_eq!(c.user, store.user("alice").await.unwrap());
    assert_eq!(c.grants, by_id, "alice's grants only, by id");

    let c = store.api_key_credential("k2").await.unwrap().unwrap();
    assert_eq!(c.user, None, "a standalone key acts as no user");
    assert!(c.grants.is_empty());

    let c = store.session_credential("s1").await.unwrap().unwrap();
    assert_eq!(Some(c.record), store.session("s1").await.unwrap());
    assert_eq!(c.user, store.user("alice").await.unwrap());
    assert_eq!(c.grants, by_id);

    assert!(store.api_key_credential("k9").await.unwrap().is_none());
    assert!(store.session_credential("s9").await.unwrap().is_none());
    assert!(store.api_key_credential("k\0").await.unwrap().is_none());
}
