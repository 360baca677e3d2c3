//! `AccessStore` on the real embedded store (a fresh data directory per
//! test): users, API keys, roles, grants, sessions and refresh tokens,
//! signing keys, the audit log; and the owners of receivers and groups.

mod common;

use cairn_domain::{NewReceiver, Timestamp};
use cairn_store::access::{
    AccessStore, ApiKeyRecord, AuditFilter, GrantFilter, GrantRecord, LoginFailure, NewAuditEntry,
    NewRefreshToken, RefreshOutcome, RoleRecord, SessionRecord, SigningKeyRecord, UserPatch,
    UserRecord,
};
use cairn_store::sqlite::{SqliteOptions, SqliteStore};
use cairn_store::{GroupFilter, PageRequest, ReceiverFilter, Store, StoreError};
use common::{new_group, receiver_input};
use std::sync::Arc;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_micros(secs * 1_000_000)
}

fn open(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap()
}

fn page(limit: u32, after: Option<&str>) -> PageRequest {
    PageRequest {
        limit,
        after: after.map(str::to_owned),
    }
}

fn user(name: &str) -> UserRecord {
    UserRecord {
        name: name.to_owned(),
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$salt${name}"),
        roles: vec!["reader".to_owned(), "ops".to_owned()],
        disabled: false,
        failed_logins: 0,
        locked_until: None,
        last_login_at: None,
        created_at: at(1),
        updated_at: at(1),
    }
}

fn key(id: &str, principal: &str) -> ApiKeyRecord {
    ApiKeyRecord {
        id: id.to_owned(),
        name: format!("key {id}"),
        secret_hash: format!("{id:0>64}"),
        principal: principal.to_owned(),
        roles: vec!["producer".to_owned()],
        scopes: vec!["events:create".to_owned()],
        expires_at: Some(at(1000)),
        revoked_at: None,
        last_used_at: None,
        created_at: at(2),
        created_by: "cli".to_owned(),
    }
}

fn session(id: &str, principal: &str, expires: i64) -> SessionRecord {
    SessionRecord {
        id: id.to_owned(),
        principal: principal.to_owned(),
        created_at: at(10),
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

fn signing(kid: &str, created: i64) -> SigningKeyRecord {
    SigningKeyRecord {
        kid: kid.to_owned(),
        algorithm: "EdDSA".to_owned(),
        private_key: format!("cHJpdmF0ZS0{kid}"),
        public_key: format!("cHVibGljLQ{kid}"),
        created_at: at(created),
        retired_at: None,
    }
}

fn audit(secs: i64, actor: &str, action: &str, outcome: &str) -> NewAuditEntry {
    NewAuditEntry {
        at: at(secs),
        actor: actor.to_owned(),
        action: action.to_owned(),
        target: "user:alice".to_owned(),
        outcome: outcome.to_owned(),
        detail: format!("{action} by {actor}"),
        request_id: format!("req-{secs}"),
        client_addr: "127.0.0.1".to_owned(),
    }
}

/// The field an `Invalid` error names (exactly one).
fn invalid_field(e: StoreError) -> String {
    match e {
        StoreError::Invalid(f) => {
            assert_eq!(f.0.len(), 1, "{f}");
            f.0[0].field.clone()
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn assert_not_found(e: StoreError, needle: &str) {
    match e {
        StoreError::NotFound(m) => assert!(m.contains(needle), "{m}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[tokio::test]
async fn users_are_created_read_listed_updated_and_refused_when_taken_or_missing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for name in ["carol", "alice", "bob"] {
        store.create_user(user(name)).await.unwrap();
    }
    assert_eq!(store.user("alice").await.unwrap(), Some(user("alice")));
    assert_eq!(store.user("nobody").await.unwrap(), None);

    let e = store.create_user(user("alice")).await.unwrap_err();
    assert_eq!(invalid_field(e), "name");
    let e = store.create_user(user("")).await.unwrap_err();
    assert_eq!(invalid_field(e), "name");
    let e = store.create_user(user(&"x".repeat(65))).await.unwrap_err();
    assert_eq!(invalid_field(e), "name");
    store.create_user(user(&"é".repeat(64))).await.unwrap();

    let names = |users: Vec<UserRecord>| users.into_iter().map(|u| u.name).collect::<Vec<_>>();
    assert_eq!(
        names(store.list_users(page(3, None)).await.unwrap()),
        ["alice", "bob", "carol"]
    );
    assert_eq!(
        names(store.list_users(page(1, Some("alice"))).await.unwrap()),
        ["bob"]
    );
    assert_eq!(
        names(store.list_users(page(10, Some("bob"))).await.unwrap()),
        ["carol".to_owned(), "é".repeat(64)]
    );

    // A patch changes only what it names.
    let updated = store
        .update_user(
            "bob",
            UserPatch {
                roles: Some(vec!["admin".to_owned()]),
                disabled: Some(true),
                ..UserPatch::default()
            },
            at(50),
        )
        .await
        .unwrap();
    let expected = UserRecord {
        roles: vec!["admin".to_owned()],
        disabled: true,
        updated_at: at(50),
        ..user("bob")
    };
    assert_eq!(updated, expected);
    assert_eq!(store.user("bob").await.unwrap(), Some(expected.clone()));
    let updated = store
        .update_user(
            "bob",
            UserPatch {
                password_hash: Some("$argon2id$new".to_owned()),
                ..UserPatch::default()
            },
            at(51),
        )
        .await
        .unwrap();
    assert_eq!(updated.password_hash, "$argon2id$new");
    assert_eq!(updated.roles, ["admin"]);
    assert!(updated.disabled);

    let e = store
        .update_user("nobody", UserPatch::default(), at(52))
        .await
        .unwrap_err();
    assert_not_found(e, "nobody");
    assert_not_found(
        store.delete_user("nobody", at(52)).await.unwrap_err(),
        "nobody",
    );
    assert_not_found(
        store
            .record_login_failure("nobody", at(52), 3, 10)
            .await
            .unwrap_err(),
        "nobody",
    );
    assert_not_found(
        store
            .record_login_success("nobody", at(52))
            .await
            .unwrap_err(),
        "nobody",
    );

    store.delete_user("carol", at(60)).await.unwrap();
    assert_eq!(store.user("carol").await.unwrap(), None);
    store.close().await;

    // Everything written is still there after a restart.
    let store = open(&dir);
    assert_eq!(store.user("bob").await.unwrap().unwrap().roles, ["admin"]);
    assert_eq!(store.list_users(page(10, None)).await.unwrap().len(), 3);
    store.close().await;
}

#[tokio::test]
async fn login_failures_lock_at_the_threshold_then_count_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.create_user(user("alice")).await.unwrap();
    let lock = 300 * 1_000_000;
    let fail = |secs| store.record_login_failure("alice", at(secs), 3, lock);
    assert_eq!(
        fail(100).await.unwrap(),
        LoginFailure {
            failed_logins: 1,
            locked_until: None
        }
    );
    assert_eq!(fail(101).await.unwrap().failed_logins, 2);
    // The third failure locks the account and starts the count again.
    assert_eq!(
        fail(102).await.unwrap(),
        LoginFailure {
            failed_logins: 0,
            locked_until: Some(at(402))
        }
    );
    let stored = store.user("alice").await.unwrap().unwrap();
    assert_eq!(
        (stored.failed_logins, stored.locked_until),
        (0, Some(at(402)))
    );
    // While locked, failures say so and count nothing.
    assert_eq!(
        fail(200).await.unwrap(),
        LoginFailure {
            failed_logins: 0,
            locked_until: Some(at(402))
        }
    );
    // After the lock ran out, counting starts from zero.
    assert_eq!(
        fail(403).await.unwrap(),
        LoginFailure {
            failed_logins: 1,
            locked_until: None
        }
    );
    assert_eq!(
        store.user("alice").await.unwrap().unwrap().locked_until,
        None
    );

    // A success clears the count and records the login.
    store.record_login_success("alice", at(404)).await.unwrap();
    let stored = store.user("alice").await.unwrap().unwrap();
    assert_eq!(stored.failed_logins, 0);
    assert_eq!(stored.last_login_at, Some(at(404)));

    // Concurrent failures are each counted once: 5 at once with threshold
    // 10 leave exactly 5.
    let results = futures_join(&store, 5, 10).await;
    let mut counts: Vec<u32> = results.iter().map(|f| f.failed_logins).collect();
    counts.sort_unstable();
    assert_eq!(counts, [1, 2, 3, 4, 5]);
    assert_eq!(store.user("alice").await.unwrap().unwrap().failed_logins, 5);

    // `unlock` clears count and lock.
    for s in 0..5 {
        fail(500 + s).await.unwrap();
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
            at(506),
        )
        .await
        .unwrap();
    assert_eq!((unlocked.failed_logins, unlocked.locked_until), (0, None));
    store.close().await;
}

/// `n` failed logins for alice presented at once.
async fn futures_join(store: &SqliteStore, n: usize, threshold: u32) -> Vec<LoginFailure> {
    let calls = (0..n).map(|_| store.record_login_failure("alice", at(450), threshold, 1_000_000));
    let mut out = Vec::new();
    let handles: Vec<_> = calls.collect();
    for r in join_all(handles).await {
        out.push(r.unwrap());
    }
    out
}

/// Poll every future together (no extra dependency for a join_all).
async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futures.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.unwrap()).collect()
}

#[tokio::test]
async fn api_keys_are_created_listed_revoked_and_touched() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store
        .create_api_key(key("bbbbbbbbbbbbbbbb", "user:alice"))
        .await
        .unwrap();
    store
        .create_api_key(key("aaaaaaaaaaaaaaaa", "key:aaaaaaaaaaaaaaaa"))
        .await
        .unwrap();
    store
        .create_api_key(key("cccccccccccccccc", "user:alice"))
        .await
        .unwrap();
    let e = store
        .create_api_key(key("aaaaaaaaaaaaaaaa", "user:bob"))
        .await
        .unwrap_err();
    assert_eq!(invalid_field(e), "id");

    assert_eq!(
        store.api_key("aaaaaaaaaaaaaaaa").await.unwrap(),
        Some(key("aaaaaaaaaaaaaaaa", "key:aaaaaaaaaaaaaaaa"))
    );
    assert_eq!(store.api_key("zzzzzzzzzzzzzzzz").await.unwrap(), None);

    let ids = |keys: Vec<ApiKeyRecord>| keys.into_iter().map(|k| k.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list_api_keys(None, page(10, None)).await.unwrap()),
        ["aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb", "cccccccccccccccc"]
    );
    assert_eq!(
        ids(store
            .list_api_keys(Some("user:alice"), page(10, None))
            .await
            .unwrap()),
        ["bbbbbbbbbbbbbbbb", "cccccccccccccccc"]
    );
    assert_eq!(
        ids(store
            .list_api_keys(Some("user:alice"), page(1, Some("bbbbbbbbbbbbbbbb")))
            .await
            .unwrap()),
        ["cccccccccccccccc"]
    );
    assert_eq!(
        ids(store
            .list_api_keys(None, page(2, Some("aaaaaaaaaaaaaaaa")))
            .await
            .unwrap()),
        ["bbbbbbbbbbbbbbbb", "cccccccccccccccc"]
    );

    let revoked = store
        .revoke_api_key("bbbbbbbbbbbbbbbb", at(20))
        .await
        .unwrap();
    assert_eq!(revoked.revoked_at, Some(at(20)));
    // Revoking again keeps the first time.
    let again = store
        .revoke_api_key("bbbbbbbbbbbbbbbb", at(30))
        .await
        .unwrap();
    assert_eq!(again.revoked_at, Some(at(20)));
    assert_eq!(
        store
            .api_key("bbbbbbbbbbbbbbbb")
            .await
            .unwrap()
            .unwrap()
            .revoked_at,
        Some(at(20))
    );
    assert_not_found(
        store
            .revoke_api_key("zzzzzzzzzzzzzzzz", at(30))
            .await
            .unwrap_err(),
        "zzzzzzzzzzzzzzzz",
    );

    // Touches set last_used_at and never move it back.
    store
        .touch_api_key("aaaaaaaaaaaaaaaa", at(40))
        .await
        .unwrap();
    store
        .touch_api_key("aaaaaaaaaaaaaaaa", at(35))
        .await
        .unwrap();
    assert_eq!(
        store
            .api_key("aaaaaaaaaaaaaaaa")
            .await
            .unwrap()
            .unwrap()
            .last_used_at,
        Some(at(40))
    );
    // Touching a key that does not exist changes nothing and never fails.
    store
        .touch_api_key("zzzzzzzzzzzzzzzz", at(41))
        .await
        .unwrap();
    assert_eq!(store.api_key("zzzzzzzzzzzzzzzz").await.unwrap(), None);
    store.close().await;
}

#[tokio::test]
async fn bootstrap_stores_a_key_only_while_no_user_and_no_live_key_exist() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(&dir));
    // Two nodes' worth of bootstraps at once: exactly one is stored.
    let (a, b) = tokio::join!(
        store.bootstrap_api_key(key("aaaaaaaaaaaaaaaa", "key:aaaaaaaaaaaaaaaa")),
        store.bootstrap_api_key(key("bbbbbbbbbbbbbbbb", "key:bbbbbbbbbbbbbbbb")),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a ^ b, "exactly one bootstrap must win: {a} {b}");
    assert_eq!(
        store
            .list_api_keys(None, page(10, None))
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        !store
            .bootstrap_api_key(key("cccccccccccccccc", "key:cccccccccccccccc"))
            .await
            .unwrap()
    );

    // With every key revoked, bootstrap is allowed again.
    let winner = if a {
        "aaaaaaaaaaaaaaaa"
    } else {
        "bbbbbbbbbbbbbbbb"
    };
    store.revoke_api_key(winner, at(5)).await.unwrap();
    assert!(
        store
            .bootstrap_api_key(key("dddddddddddddddd", "key:dddddddddddddddd"))
            .await
            .unwrap()
    );
    assert!(store.api_key("dddddddddddddddd").await.unwrap().is_some());

    // A user blocks it, even with every key revoked.
    store
        .revoke_api_key("dddddddddddddddd", at(6))
        .await
        .unwrap();
    store.create_user(user("alice")).await.unwrap();
    assert!(
        !store
            .bootstrap_api_key(key("eeeeeeeeeeeeeeee", "key:eeeeeeeeeeeeeeee"))
            .await
            .unwrap()
    );
    assert_eq!(store.api_key("eeeeeeeeeeeeeeee").await.unwrap(), None);
    store.close().await;
}

#[tokio::test]
async fn roles_are_created_read_in_batches_listed_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let role = |name: &str| RoleRecord {
        name: name.to_owned(),
        permissions: vec!["receivers:read".to_owned(), "events:*".to_owned()],
        on_grant: vec!["groups:update".to_owned()],
        description: format!("the {name} role"),
        created_at: at(3),
    };
    for name in ["ops", "auditor", "release"] {
        store.create_role(role(name)).await.unwrap();
    }
    assert_eq!(
        invalid_field(store.create_role(role("ops")).await.unwrap_err()),
        "name"
    );
    // Built-in roles are never stored.
    assert_eq!(
        invalid_field(store.create_role(role("admin")).await.unwrap_err()),
        "name"
    );
    assert_eq!(store.role("admin").await.unwrap(), None);

    assert_eq!(store.role("ops").await.unwrap(), Some(role("ops")));
    assert_eq!(store.role("nope").await.unwrap(), None);
    let mut got = store
        .roles(&[
            "release".to_owned(),
            "reader".to_owned(),
            "ops".to_owned(),
            "ops".to_owned(),
        ])
        .await
        .unwrap();
    got.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(got, [role("ops"), role("release")]);
    assert!(store.roles(&[]).await.unwrap().is_empty());

    let names = |roles: Vec<RoleRecord>| roles.into_iter().map(|r| r.name).collect::<Vec<_>>();
    assert_eq!(
        names(store.list_roles(page(10, None)).await.unwrap()),
        ["auditor", "ops", "release"]
    );
    assert_eq!(
        names(store.list_roles(page(1, Some("auditor"))).await.unwrap()),
        ["ops"]
    );

    store.delete_role("ops").await.unwrap();
    assert_eq!(store.role("ops").await.unwrap(), None);
    assert_not_found(store.delete_role("ops").await.unwrap_err(), "ops");
    store.close().await;
}

#[tokio::test]
async fn grants_are_checked_filtered_paged_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let receiver = store
        .create_receiver(NewReceiver::parse(receiver_input()).unwrap())
        .await
        .unwrap();
    let group = store
        .create_group(new_group("gate", false, &[receiver.id.to_string()]))
        .await
        .unwrap();
    let grant = |id: &str, principal: &str, kind: &str, object: &str| GrantRecord {
        id: id.to_owned(),
        principal: principal.to_owned(),
        object_kind: kind.to_owned(),
        object_id: object.to_owned(),
        permissions: vec!["events:create".to_owned()],
        created_at: at(4),
        created_by: "user:admin".to_owned(),
    };
    let rid = receiver.id.to_string();
    let gid = group.id.to_string();
    let g1 = grant("01G1", "user:alice", "receiver", &rid);
    let g2 = grant("01G2", "key:aaaaaaaaaaaaaaaa", "receiver", &rid);
    let g3 = grant("01G3", "user:alice", "group", &gid);
    for g in [&g3, &g1, &g2] {
        store.create_grant(g.clone()).await.unwrap();
    }
    assert_eq!(
        invalid_field(store.create_grant(g1.clone()).await.unwrap_err()),
        "id"
    );
    assert_eq!(
        invalid_field(
            store
                .create_grant(grant("01G4", "user:alice", "event", &rid))
                .await
                .unwrap_err()
        ),
        "object_kind"
    );
    // The object must exist, as what it is said to be.
    assert_eq!(
        invalid_field(
            store
                .create_grant(grant("01G4", "user:alice", "group", &rid))
                .await
                .unwrap_err()
        ),
        "object_id"
    );

    assert_eq!(
        store.grants_of("user:alice").await.unwrap(),
        [g1.clone(), g3.clone()]
    );
    assert!(store.grants_of("user:nobody").await.unwrap().is_empty());

    let all = store
        .list_grants(GrantFilter::default(), page(10, None))
        .await
        .unwrap();
    assert_eq!(all, [g1.clone(), g2.clone(), g3.clone()]);
    let on_receiver = store
        .list_grants(
            GrantFilter {
                object_kind: Some("receiver".to_owned()),
                object_id: Some(rid.clone()),
                ..GrantFilter::default()
            },
            page(10, None),
        )
        .await
        .unwrap();
    assert_eq!(on_receiver, [g1.clone(), g2.clone()]);
    let alices_after_first = store
        .list_grants(
            GrantFilter {
                principal: Some("user:alice".to_owned()),
                ..GrantFilter::default()
            },
            page(10, Some("01G1")),
        )
        .await
        .unwrap();
    assert_eq!(alices_after_first, std::slice::from_ref(&g3));
    assert_eq!(
        store
            .list_grants(GrantFilter::default(), page(1, Some("01G1")))
            .await
            .unwrap(),
        std::slice::from_ref(&g2)
    );

    assert_eq!(store.delete_grant("01G2").await.unwrap(), g2);
    assert_not_found(store.delete_grant("01G2").await.unwrap_err(), "01G2");
    assert_eq!(
        store
            .list_grants(GrantFilter::default(), page(10, None))
            .await
            .unwrap(),
        [g1, g3]
    );
    store.close().await;
}

#[tokio::test]
async fn deleting_a_user_revokes_its_sessions_and_keys_and_drops_its_grants() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let receiver = store
        .create_receiver(NewReceiver::parse(receiver_input()).unwrap())
        .await
        .unwrap();
    let rid = receiver.id.to_string();
    for name in ["alice", "bob"] {
        store.create_user(user(name)).await.unwrap();
        store
            .create_session(
                session(&format!("S-{name}"), &format!("user:{name}"), 1000),
                token(&format!("t-{name}"), 900),
            )
            .await
            .unwrap();
        store
            .create_grant(GrantRecord {
                id: format!("G-{name}"),
                principal: format!("user:{name}"),
                object_kind: "receiver".to_owned(),
                object_id: rid.clone(),
                permissions: vec!["events:create".to_owned()],
                created_at: at(4),
                created_by: "user:admin".to_owned(),
            })
            .await
            .unwrap();
    }
    store
        .create_api_key(key("aaaaaaaaaaaaaaaa", "user:alice"))
        .await
        .unwrap();
    store
        .create_api_key(key("bbbbbbbbbbbbbbbb", "user:bob"))
        .await
        .unwrap();
    // Alice's older, already revoked key keeps its revocation time.
    store
        .create_api_key(ApiKeyRecord {
            revoked_at: Some(at(7)),
            ..key("cccccccccccccccc", "user:alice")
        })
        .await
        .unwrap();

    store.delete_user("alice", at(100)).await.unwrap();

    assert_eq!(store.user("alice").await.unwrap(), None);
    let s = store.session("S-alice").await.unwrap().unwrap();
    assert_eq!(s.revoked_at, Some(at(100)));
    assert_eq!(s.revoked_reason.as_deref(), Some("user deleted"));
    let k = store.api_key("aaaaaaaaaaaaaaaa").await.unwrap().unwrap();
    assert_eq!(k.revoked_at, Some(at(100)));
    let k = store.api_key("cccccccccccccccc").await.unwrap().unwrap();
    assert_eq!(k.revoked_at, Some(at(7)));
    assert!(store.grants_of("user:alice").await.unwrap().is_empty());
    // A revoked session's token is refused.
    assert!(matches!(
        store
            .rotate_refresh_token("t-alice", token("t-alice-2", 950), at(101))
            .await
            .unwrap(),
        RefreshOutcome::Revoked(_)
    ));

    // Bob is untouched.
    assert!(store.user("bob").await.unwrap().is_some());
    assert_eq!(
        store.session("S-bob").await.unwrap().unwrap().revoked_at,
        None
    );
    assert_eq!(
        store
            .api_key("bbbbbbbbbbbbbbbb")
            .await
            .unwrap()
            .unwrap()
            .revoked_at,
        None
    );
    assert_eq!(store.grants_of("user:bob").await.unwrap().len(), 1);
    store.close().await;
}

#[tokio::test]
async fn refresh_tokens_rotate_once_and_reuse_revokes_the_family() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let s = session("S1", "user:alice", 1000);
    store
        .create_session(s.clone(), token("t1", 500))
        .await
        .unwrap();
    assert_eq!(store.session("S1").await.unwrap(), Some(s.clone()));
    assert_eq!(store.session("S2").await.unwrap(), None);
    assert_eq!(
        invalid_field(
            store
                .create_session(s.clone(), token("other", 500))
                .await
                .unwrap_err()
        ),
        "id"
    );
    assert_eq!(
        invalid_field(
            store
                .create_session(session("S2", "user:alice", 1000), token("t1", 500))
                .await
                .unwrap_err()
        ),
        "hash"
    );
    assert_eq!(store.session("S2").await.unwrap(), None);

    assert_eq!(
        store
            .rotate_refresh_token("nope", token("t9", 600), at(20))
            .await
            .unwrap(),
        RefreshOutcome::Unknown
    );
    assert_eq!(
        store
            .rotate_refresh_token("t1", token("t2", 600), at(20))
            .await
            .unwrap(),
        RefreshOutcome::Rotated(s.clone())
    );
    // A next token that is stored already is refused, nothing changes.
    assert_eq!(
        invalid_field(
            store
                .rotate_refresh_token("t2", token("t1", 700), at(21))
                .await
                .unwrap_err()
        ),
        "hash"
    );
    assert_eq!(
        store
            .rotate_refresh_token("t2", token("t3", 700), at(22))
            .await
            .unwrap(),
        RefreshOutcome::Rotated(s.clone())
    );

    // t1 was used: presenting it again ends the whole session.
    let reused = store
        .rotate_refresh_token("t1", token("t4", 800), at(30))
        .await
        .unwrap();
    let revoked = SessionRecord {
        revoked_at: Some(at(30)),
        revoked_reason: Some("reuse".to_owned()),
        ..s.clone()
    };
    assert_eq!(reused, RefreshOutcome::Reused(revoked.clone()));
    assert_eq!(store.session("S1").await.unwrap(), Some(revoked.clone()));
    // The newest token of the family is dead too, and nothing changes.
    assert_eq!(
        store
            .rotate_refresh_token("t3", token("t5", 800), at(31))
            .await
            .unwrap(),
        RefreshOutcome::Revoked(revoked.clone())
    );
    assert_eq!(
        store
            .rotate_refresh_token("t5", token("t6", 800), at(32))
            .await
            .unwrap(),
        RefreshOutcome::Unknown
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_presentations_of_one_token_rotate_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(&dir));
    for round in 0..20 {
        let sid = format!("S{round}");
        let first = format!("t{round}");
        store
            .create_session(session(&sid, "user:alice", 1000), token(&first, 500))
            .await
            .unwrap();
        let (a, b) = {
            let (s1, s2) = (store.clone(), store.clone());
            let (h1, h2) = (first.clone(), first.clone());
            let next1 = format!("{first}-a");
            let next2 = format!("{first}-b");
            let one = tokio::spawn(async move {
                s1.rotate_refresh_token(&h1, token(&next1, 600), at(20))
                    .await
            });
            let two = tokio::spawn(async move {
                s2.rotate_refresh_token(&h2, token(&next2, 600), at(20))
                    .await
            });
            (one.await.unwrap().unwrap(), two.await.unwrap().unwrap())
        };
        let rotated = [&a, &b]
            .iter()
            .filter(|o| matches!(o, RefreshOutcome::Rotated(_)))
            .count();
        let reused = [&a, &b]
            .iter()
            .filter(|o| matches!(o, RefreshOutcome::Reused(_)))
            .count();
        assert_eq!((rotated, reused), (1, 1), "round {round}: {a:?} {b:?}");
        let s = store.session(&sid).await.unwrap().unwrap();
        assert_eq!(s.revoked_reason.as_deref(), Some("reuse"));
    }
    store.close().await;
}

#[tokio::test]
async fn expired_tokens_and_sessions_refresh_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store
        .create_session(session("S1", "user:alice", 1000), token("t1", 100))
        .await
        .unwrap();
    // The token has run out (at its expiry instant too).
    assert_eq!(
        store
            .rotate_refresh_token("t1", token("t2", 200), at(100))
            .await
            .unwrap(),
        RefreshOutcome::Expired
    );
    // Nothing changed: t1 was left unused, so presented within its
    // lifetime it still rotates (rather than counting as reuse).
    assert_eq!(
        store
            .rotate_refresh_token("t1", token("t2", 200), at(99))
            .await
            .unwrap(),
        RefreshOutcome::Rotated(session("S1", "user:alice", 1000))
    );
    // The session has run out, whatever the token says.
    store
        .create_session(session("S2", "user:bob", 50), token("u1", 500))
        .await
        .unwrap();
    assert_eq!(
        store
            .rotate_refresh_token("u1", token("u2", 600), at(60))
            .await
            .unwrap(),
        RefreshOutcome::Expired
    );
    assert_eq!(store.session("S2").await.unwrap().unwrap().revoked_at, None);
    store.close().await;
}

#[tokio::test]
async fn sessions_are_revoked_one_or_all_of_a_principal() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store
        .create_session(session("S1", "user:alice", 1000), token("a1", 900))
        .await
        .unwrap();
    store
        .create_session(session("S2", "user:alice", 1000), token("a2", 900))
        .await
        .unwrap();
    store
        .create_session(session("S3", "user:alice", 1000), token("a3", 900))
        .await
        .unwrap();
    store
        .create_session(session("S4", "user:bob", 1000), token("b1", 900))
        .await
        .unwrap();

    let s1 = store.revoke_session("S1", "logout", at(20)).await.unwrap();
    assert_eq!(
        (s1.revoked_at, s1.revoked_reason.as_deref()),
        (Some(at(20)), Some("logout"))
    );
    // Already revoked: kept as it was.
    let again = store
        .revoke_session("S1", "user disabled", at(30))
        .await
        .unwrap();
    assert_eq!(again, s1);
    assert_not_found(
        store
            .revoke_session("S9", "logout", at(30))
            .await
            .unwrap_err(),
        "S9",
    );

    assert_eq!(
        store
            .revoke_sessions_of("user:alice", "user disabled", at(40))
            .await
            .unwrap(),
        2
    );
    for id in ["S2", "S3"] {
        let s = store.session(id).await.unwrap().unwrap();
        assert_eq!(
            (s.revoked_at, s.revoked_reason.as_deref()),
            (Some(at(40)), Some("user disabled"))
        );
    }
    assert_eq!(store.session("S1").await.unwrap(), Some(s1));
    assert_eq!(store.session("S4").await.unwrap().unwrap().revoked_at, None);
    assert_eq!(
        store
            .revoke_sessions_of("user:alice", "again", at(50))
            .await
            .unwrap(),
        0
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_signing_key_is_ensured_and_rotation_retires_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(&dir));
    assert!(store.signing_keys().await.unwrap().is_empty());
    // Several nodes starting at once agree on one key.
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let s = store.clone();
            tokio::spawn(async move { s.ensure_signing_key(signing(&format!("k{i}"), 10)).await })
        })
        .collect();
    let mut kids = Vec::new();
    for t in tasks {
        kids.push(t.await.unwrap().unwrap().kid);
    }
    kids.dedup();
    assert_eq!(kids.len(), 1, "{kids:?}");
    let first = store.signing_keys().await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].kid, kids[0]);
    assert_eq!(first[0].retired_at, None);
    // Later calls return it.
    assert_eq!(
        store
            .ensure_signing_key(signing("other", 11))
            .await
            .unwrap(),
        first[0]
    );

    store
        .rotate_signing_key(signing("k-new", 20), at(20))
        .await
        .unwrap();
    let keys = store.signing_keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], signing("k-new", 20));
    assert_eq!(keys[1].kid, kids[0]);
    assert_eq!(keys[1].retired_at, Some(at(20)));
    assert_eq!(
        store
            .ensure_signing_key(signing("other", 21))
            .await
            .unwrap(),
        signing("k-new", 20)
    );
    // A kid that exists is refused, and nothing is retired.
    assert_eq!(
        invalid_field(
            store
                .rotate_signing_key(signing("k-new", 30), at(30))
                .await
                .unwrap_err()
        ),
        "kid"
    );
    assert_eq!(store.signing_keys().await.unwrap(), keys);
    store.close().await;
}

#[tokio::test]
async fn the_audit_log_is_append_only_and_read_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
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

    let list = |filter: AuditFilter| store.list_audit(filter);
    let all = list(AuditFilter {
        limit: 10,
        ..AuditFilter::default()
    })
    .await
    .unwrap();
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        seqs.iter().rev().copied().collect::<Vec<_>>()
    );
    assert_eq!(all[0].entry, entries[4]);
    assert_eq!(all[4].entry, entries[0]);

    let alice = list(AuditFilter {
        actor: Some("user:alice".to_owned()),
        limit: 10,
        ..AuditFilter::default()
    })
    .await
    .unwrap();
    assert_eq!(
        alice.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [seqs[4], seqs[2], seqs[0]]
    );
    let failed_logins = list(AuditFilter {
        action: Some("auth.login".to_owned()),
        outcome: Some("failure".to_owned()),
        limit: 10,
        ..AuditFilter::default()
    })
    .await
    .unwrap();
    assert_eq!(
        failed_logins.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [seqs[4], seqs[1]]
    );
    let since = list(AuditFilter {
        since: Some(at(3)),
        limit: 10,
        ..AuditFilter::default()
    })
    .await
    .unwrap();
    assert_eq!(since.len(), 3);
    // Paging newest first: two, then the two before those, then the last.
    let first = list(AuditFilter {
        limit: 2,
        ..AuditFilter::default()
    })
    .await
    .unwrap();
    assert_eq!(first.len(), 2);
    let second = list(AuditFilter {
        limit: 2,
        before_seq: Some(first[1].seq),
        ..AuditFilter::default()
    })
    .await
    .unwrap();
    assert_eq!(
        second.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [seqs[2], seqs[1]]
    );
    let third = list(AuditFilter {
        limit: 2,
        before_seq: Some(second[1].seq),
        ..AuditFilter::default()
    })
    .await
    .unwrap();
    assert_eq!(third.iter().map(|e| e.seq).collect::<Vec<_>>(), [seqs[0]]);

    // A separate connection on the database file can neither change nor
    // delete entries.
    let raw = rusqlite::Connection::open(dir.path().join("cairn.db")).unwrap();
    raw.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    let update = raw
        .execute(
            "UPDATE audit_log SET outcome = 'success' WHERE seq = ?1",
            [seqs[1] as i64],
        )
        .unwrap_err();
    assert!(update.to_string().contains("append-only"), "{update}");
    let delete = raw.execute("DELETE FROM audit_log", []).unwrap_err();
    assert!(delete.to_string().contains("append-only"), "{delete}");
    drop(raw);
    let after = list(AuditFilter {
        limit: 10,
        ..AuditFilter::default()
    })
    .await
    .unwrap();
    assert_eq!(after, all);
    store.close().await;

    // Appends continue after a restart, above every earlier position.
    let store = open(&dir);
    let next = store
        .append_audit(audit(6, "cli", "key.create", "success"))
        .await
        .unwrap();
    assert!(next > seqs[4]);
    store.close().await;
}

#[tokio::test]
async fn receivers_and_groups_keep_their_owner() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut owned = NewReceiver::parse(receiver_input()).unwrap();
    owned.owner = Some("user:alice".to_owned());
    let owned = store.create_receiver(owned).await.unwrap();
    assert_eq!(owned.owner.as_deref(), Some("user:alice"));
    let unowned = store
        .create_receiver(NewReceiver::parse(receiver_input()).unwrap())
        .await
        .unwrap();
    assert_eq!(unowned.owner, None);

    let mut group = new_group("gate", true, &[owned.id.to_string()]);
    group.owner = Some("key:aaaaaaaaaaaaaaaa".to_owned());
    let group = store.create_group(group).await.unwrap();
    assert_eq!(group.owner.as_deref(), Some("key:aaaaaaaaaaaaaaaa"));
    let plain = store
        .create_group(new_group("plain", false, &[unowned.id.to_string()]))
        .await
        .unwrap();
    assert_eq!(plain.owner, None);

    let (owned, unowned, group_id, plain) = (owned.id, unowned.id, group.id, plain.id);
    let check = move |store: SqliteStore| async move {
        let r = store.receiver(owned).await.unwrap().unwrap();
        assert_eq!(r.owner.as_deref(), Some("user:alice"));
        let r = store.receiver(unowned).await.unwrap().unwrap();
        assert_eq!(r.owner, None);
        let listed = store
            .list_receivers(ReceiverFilter::default(), page(10, None))
            .await
            .unwrap();
        let owners: Vec<_> = listed.iter().map(|r| (r.id, r.owner.clone())).collect();
        assert_eq!(
            owners,
            [(owned, Some("user:alice".to_owned())), (unowned, None)]
        );
        let batch = store.receivers(vec![owned]).await.unwrap();
        assert_eq!(batch[0].owner.as_deref(), Some("user:alice"));

        let g = store.group(group_id).await.unwrap().unwrap();
        assert_eq!(g.owner.as_deref(), Some("key:aaaaaaaaaaaaaaaa"));
        let listed = store
            .list_groups(GroupFilter::default(), page(10, None))
            .await
            .unwrap();
        let owners: Vec<_> = listed.iter().map(|g| (g.id, g.owner.clone())).collect();
        assert_eq!(
            owners,
            [
                (group_id, Some("key:aaaaaaaaaaaaaaaa".to_owned())),
                (plain, None)
            ]
        );
        store
    };
    let store = check(store).await;
    // A change to the group keeps its owner.
    let renamed = store
        .update_group(
            group_id,
            cairn_domain::GroupPatch {
                description: Some(cairn_domain::Text::parse("changed").unwrap()),
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(renamed.owner.as_deref(), Some("key:aaaaaaaaaaaaaaaa"));
    store.close().await;

    // After a restart (empty receiver cache) the owners come from the rows.
    let store = check(open(&dir)).await;
    store.close().await;
}

/// What authenticating one request reads, in one go: the key or session,
/// the user it acts as, its principal's grants; and exactly what the
/// separate reads give.
#[tokio::test]
async fn credentials_come_with_their_user_and_grants() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let receiver = store
        .create_receiver(NewReceiver::parse(receiver_input()).unwrap())
        .await
        .unwrap();
    store.create_user(user("alice")).await.unwrap();
    store
        .create_api_key(key("aaaaaaaaaaaaaaaa", "user:alice"))
        .await
        .unwrap();
    store
        .create_api_key(key("bbbbbbbbbbbbbbbb", "key:bbbbbbbbbbbbbbbb"))
        .await
        .unwrap();
    let grant = GrantRecord {
        id: "01G1".to_owned(),
        principal: "user:alice".to_owned(),
        object_kind: "receiver".to_owned(),
        object_id: receiver.id.to_string(),
        permissions: vec!["events:create".to_owned()],
        created_at: at(4),
        created_by: "cli".to_owned(),
    };
    store.create_grant(grant.clone()).await.unwrap();
    store
        .create_session(session("01S1", "user:alice", 1000), token("h1", 900))
        .await
        .unwrap();

    let c = store
        .api_key_credential("aaaaaaaaaaaaaaaa")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        Some(c.record),
        store.api_key("aaaaaaaaaaaaaaaa").await.unwrap()
    );
    assert_eq!(c.user, store.user("alice").await.unwrap());
    assert_eq!(c.grants, vec![grant.clone()]);

    let c = store
        .api_key_credential("bbbbbbbbbbbbbbbb")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.user, None, "a standalone key acts as no user");
    assert!(c.grants.is_empty());

    let c = store.session_credential("01S1").await.unwrap().unwrap();
    assert_eq!(Some(c.record), store.session("01S1").await.unwrap());
    assert_eq!(c.user.map(|u| u.name), Some("alice".to_owned()));
    assert_eq!(c.grants, vec![grant]);

    assert!(
        store
            .api_key_credential("cccccccccccccccc")
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.session_credential("01S9").await.unwrap().is_none());

    // A deleted user is gone from its key's credential (the key is revoked).
    store.delete_user("alice", at(5)).await.unwrap();
    let c = store
        .api_key_credential("aaaaaaaaaaaaaaaa")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.user, None);
    assert!(c.record.revoked_at.is_some());
}

/// Authenticating reads credentials through a cache on the embedded store;
/// every identity write must be seen by the very next read, as if there
/// were none.
#[tokio::test]
async fn every_identity_write_is_seen_by_the_next_credential_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let receiver = store
        .create_receiver(NewReceiver::parse(receiver_input()).unwrap())
        .await
        .unwrap();
    store.create_user(user("alice")).await.unwrap();
    let id = "aaaaaaaaaaaaaaaa";
    store.create_api_key(key(id, "user:alice")).await.unwrap();
    store
        .create_session(session("01S1", "user:alice", 1000), token("h1", 900))
        .await
        .unwrap();
    let read_key = || async { store.api_key_credential(id).await.unwrap().unwrap() };
    let read_session = || async { store.session_credential("01S1").await.unwrap().unwrap() };
    // Read twice: the second read is served from the cache.
    for _ in 0..2 {
        assert!(read_key().await.grants.is_empty());
        assert!(read_session().await.record.revoked_at.is_none());
    }

    let grant = GrantRecord {
        id: "01G1".to_owned(),
        principal: "user:alice".to_owned(),
        object_kind: "receiver".to_owned(),
        object_id: receiver.id.to_string(),
        permissions: vec!["events:create".to_owned()],
        created_at: at(4),
        created_by: "cli".to_owned(),
    };
    store.create_grant(grant.clone()).await.unwrap();
    assert_eq!(read_key().await.grants, vec![grant.clone()]);
    assert_eq!(read_session().await.grants, vec![grant]);

    store.delete_grant("01G1").await.unwrap();
    assert!(read_key().await.grants.is_empty());
    assert!(read_session().await.grants.is_empty());

    let disable = UserPatch {
        password_hash: None,
        roles: Some(vec!["admin".to_owned()]),
        disabled: Some(true),
        unlock: false,
    };
    store.update_user("alice", disable, at(6)).await.unwrap();
    let user_now = read_key().await.user.unwrap();
    assert!(user_now.disabled);
    assert_eq!(user_now.roles, vec!["admin".to_owned()]);
    assert!(read_session().await.user.unwrap().disabled);

    store.revoke_session("01S1", "logout", at(7)).await.unwrap();
    assert!(read_session().await.record.revoked_at.is_some());

    store.revoke_api_key(id, at(8)).await.unwrap();
    assert!(read_key().await.record.revoked_at.is_some());

    // Recording a use changes nothing authenticating reads.
    store.touch_api_key(id, at(9)).await.unwrap();
    assert!(read_key().await.record.revoked_at.is_some());
}
