//! `IdempotencyStore` on both stores: a key is claimed once, its response
//! stored and found again, only the claim's token completes or releases it,
//! keys are scoped, expired keys count as absent and are purged; and on
//! PostgreSQL, several nodes (several `PostgresStore` instances on one
//! database) racing one key let exactly one claim it. The PostgreSQL tests
//! skip (saying why) when `CAIRN_TEST_DATABASE_URL` is unset.

mod common;

use cairn_domain::Timestamp;
use cairn_store::idempotency::{
    Claim, IdempotencyStore, KeyRecord, KeyState, NewClaim, StoredResponse,
};
use cairn_store::postgres::{PostgresOptions, PostgresStore};
use cairn_store::sqlite::{SqliteOptions, SqliteStore};
use std::sync::Arc;
use tokio::sync::Barrier;

const T0: i64 = 1_700_000_000_000_000;
const SECOND: i64 = 1_000_000;

fn at(offset_secs: i64) -> Timestamp {
    Timestamp::from_micros(T0 + offset_secs * SECOND)
}

fn claim(scope: &str, key: &str, fingerprint: &str, token: &str, now: i64, ttl: i64) -> NewClaim {
    NewClaim {
        scope: scope.to_owned(),
        key: key.to_owned(),
        fingerprint: fingerprint.to_owned(),
        token: token.to_owned(),
        now: at(now),
        expires_at: at(now + ttl),
    }
}

fn response(body: &str) -> StoredResponse {
    StoredResponse {
        status: 200,
        headers: vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("location".to_owned(), "/x".to_owned()),
        ],
        body: body.as_bytes().to_vec(),
    }
}

fn existing(c: Claim) -> KeyRecord {
    match c {
        Claim::Existing(r) => r,
        Claim::Claimed => panic!("expected the key to be held"),
    }
}

/// Everything but concurrency, on any store.
async fn lifecycle(store: &dyn IdempotencyStore) {
    let first = claim("user:a", "k1", "fp1", "t1", 0, 60);
    assert_eq!(
        store.claim_idempotency_key(first).await.unwrap(),
        Claim::Claimed
    );
    // Held: the second claim sees it in progress, with its fingerprint.
    let again = existing(
        store
            .claim_idempotency_key(claim("user:a", "k1", "fp2", "t2", 1, 60))
            .await
            .unwrap(),
    );
    assert_eq!(again.fingerprint, "fp1");
    assert_eq!(again.state, KeyState::InProgress);
    assert_eq!((again.created_at, again.expires_at), (at(0), at(60)));
    // Another scope's key of the same name is another key.
    assert_eq!(
        store
            .claim_idempotency_key(claim("user:b", "k1", "fp9", "t9", 1, 60))
            .await
            .unwrap(),
        Claim::Claimed
    );
    // Only the claim's token completes it.
    assert!(
        !store
            .complete_idempotency_key("user:a", "k1", "t2", response("{}"))
            .await
            .unwrap()
    );
    assert!(
        store
            .complete_idempotency_key("user:a", "k1", "t1", response("{\"data\":1}"))
            .await
            .unwrap()
    );
    // Completed once: not again, and not released.
    assert!(
        !store
            .complete_idempotency_key("user:a", "k1", "t1", response("{}"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .release_idempotency_key("user:a", "k1", "t1")
            .await
            .unwrap()
    );
    let done = existing(
        store
            .claim_idempotency_key(claim("user:a", "k1", "fp1", "t3", 2, 60))
            .await
            .unwrap(),
    );
    assert_eq!(done.state, KeyState::Completed(response("{\"data\":1}")));
    // Released: free again at once.
    assert!(
        !store
            .release_idempotency_key("user:b", "k1", "wrong")
            .await
            .unwrap()
    );
    assert!(
        store
            .release_idempotency_key("user:b", "k1", "t9")
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .claim_idempotency_key(claim("user:b", "k1", "fp10", "t10", 3, 60))
            .await
            .unwrap(),
        Claim::Claimed
    );
    // Expired (at 60): absent, so claimed anew, and the old claim's token
    // no longer completes it.
    assert_eq!(
        store
            .claim_idempotency_key(claim("user:a", "k1", "fp5", "t5", 60, 60))
            .await
            .unwrap(),
        Claim::Claimed
    );
    assert!(
        !store
            .complete_idempotency_key("user:a", "k1", "t1", response("{}"))
            .await
            .unwrap()
    );
    let renewed = existing(
        store
            .claim_idempotency_key(claim("user:a", "k1", "fp6", "t6", 61, 60))
            .await
            .unwrap(),
    );
    assert_eq!(
        (renewed.fingerprint.as_str(), renewed.state),
        ("fp5", KeyState::InProgress)
    );
    // Purge: only expired rows, at most `limit` of them.
    for i in 0..5 {
        let c = claim("user:p", &format!("p{i}"), "fp", "t", 100, 10);
        assert_eq!(
            store.claim_idempotency_key(c).await.unwrap(),
            Claim::Claimed
        );
    }
    assert_eq!(store.purge_idempotency_keys(at(109), 100).await.unwrap(), 0);
    // At 110 the five p-keys have expired (user:b's k1, expired at 63,
    // went with the first p-claim's purge; user:a's k1 lives until 120).
    assert_eq!(store.purge_idempotency_keys(at(110), 3).await.unwrap(), 3);
    assert_eq!(store.purge_idempotency_keys(at(110), 100).await.unwrap(), 2);
    assert_eq!(store.purge_idempotency_keys(at(110), 100).await.unwrap(), 0);
    let live = existing(
        store
            .claim_idempotency_key(claim("user:a", "k1", "fp5", "t7", 110, 60))
            .await
            .unwrap(),
    );
    assert_eq!(live.fingerprint, "fp5");
    // A claim purges expired rows as it goes (bounded): old keys are gone
    // after enough claims even without an explicit purge.
    for i in 0..40 {
        let c = claim("user:q", &format!("q{i}"), "fp", "t", 200, 10);
        assert_eq!(
            store.claim_idempotency_key(c).await.unwrap(),
            Claim::Claimed
        );
    }
    for i in 0..40 {
        let c = claim("user:r", &format!("r{i}"), "fp", "t", 300, 10);
        assert_eq!(
            store.claim_idempotency_key(c).await.unwrap(),
            Claim::Claimed
        );
    }
    // The 40 q-keys (expired at 210) went with the r-claims' purges; only
    // the r-keys (expiring at 310) are left.
    assert_eq!(
        store.purge_idempotency_keys(at(250), 1000).await.unwrap(),
        0
    );
    assert_eq!(
        store.purge_idempotency_keys(at(400), 1000).await.unwrap(),
        40
    );
}

#[tokio::test]
async fn sqlite_claims_complete_release_expire_and_purge() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap();
    lifecycle(&store).await;
}

#[tokio::test]
async fn sqlite_one_of_many_concurrent_claims_wins() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn IdempotencyStore> =
        Arc::new(SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap());
    race(vec![store.clone(); 20]).await;
}

#[tokio::test]
async fn postgres_claims_complete_release_expire_and_purge() {
    let Some(db) = common::pg_test_db("postgres_claims_complete_release_expire_and_purge").await
    else {
        return;
    };
    let store = PostgresStore::open(&db.url, PostgresOptions::default())
        .await
        .unwrap();
    lifecycle(&store).await;
    store_close(store).await;
}

async fn store_close(store: PostgresStore) {
    use cairn_store::Store;
    store.close().await;
}

#[tokio::test]
async fn postgres_nodes_racing_one_key_let_one_claim_it() {
    let Some(db) = common::pg_test_db("postgres_nodes_racing_one_key_let_one_claim_it").await
    else {
        return;
    };
    let mut nodes: Vec<Arc<dyn IdempotencyStore>> = Vec::new();
    for _ in 0..3 {
        nodes.push(Arc::new(
            PostgresStore::open(&db.url, PostgresOptions::default())
                .await
                .unwrap(),
        ));
    }
    let racers: Vec<_> = (0..21).map(|i| nodes[i % 3].clone()).collect();
    race(racers).await;
}

/// Every store in `racers` claims the same key at once: exactly one wins,
/// every other sees the winner's claim.
async fn race(racers: Vec<Arc<dyn IdempotencyStore>>) {
    let barrier = Arc::new(Barrier::new(racers.len()));
    let tasks: Vec<_> = racers
        .into_iter()
        .enumerate()
        .map(|(i, store)| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let token = format!("t{i}");
                let c = claim("user:race", "same", &format!("fp{i}"), &token, 0, 60);
                (token, store.claim_idempotency_key(c).await.unwrap())
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut seen = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (token, Claim::Claimed) => winners.push(token),
            (_, Claim::Existing(r)) => {
                assert_eq!(r.state, KeyState::InProgress);
                seen.push(r.fingerprint);
            }
        }
    }
    assert_eq!(winners.len(), 1, "exactly one claim wins: {winners:?}");
    let winner_fp = format!("fp{}", &winners[0][1..]);
    assert!(
        seen.iter().all(|fp| *fp == winner_fp),
        "every loser sees the winner's claim ({winner_fp}): {seen:?}"
    );
}
