//! The algorithm: a token bucket kept in exact integer arithmetic, and
//! the in-memory store of buckets (sharded, bounded, idle buckets
//! dropped first).
//!
//! A budget of `rate` requests per `period_secs` seconds, `burst` at
//! most at once, is a bucket holding up to `burst` requests' worth of
//! credit. Credit is counted in *units*: one request costs
//! `period_secs * 1_000_000` units and the bucket gains exactly `rate`
//! units per elapsed microsecond. Both are integers, so refilling loses
//! no fraction ever (no drift, however many small steps it is done in):
//! after `t` µs a bucket has gained exactly `t * rate` units, capped at
//! its capacity `burst * period_secs * 1_000_000`. This is the same
//! schedule as GCRA with emission interval `period_secs / rate` and burst
//! tolerance `burst - 1` intervals; the Redis script does the same
//! computation (`redis.rs`).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The largest `burst * period_secs` a budget may have: keeps every unit
/// count below 2^53, so the Redis script (Lua numbers are doubles)
/// computes exactly what this module does.
pub const MAX_BURST_PERIOD: u64 = 1_000_000_000;
/// The largest `rate` a budget may have.
pub const MAX_RATE: u64 = 1_000_000_000;

/// One budget in the form the algorithm needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Units gained per microsecond (the budget's `rate`).
    pub rate: u64,
    /// Units one request costs (`period_secs * 1_000_000`).
    pub cost: u64,
    /// Units a full bucket holds (`burst * cost`).
    pub capacity: u64,
}

impl Params {
    pub fn new(rate: u64, burst: u64, period_secs: u64) -> Self {
        let rate = rate.clamp(1, MAX_RATE);
        let cost = period_secs.max(1).saturating_mul(1_000_000);
        Self {
            rate,
            cost,
            capacity: burst.max(1).saturating_mul(cost),
        }
    }
}

/// A bucket's stored state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Credit, in units.
    pub tokens: u64,
    /// When `tokens` was last brought up to date (µs on the limiter's
    /// clock).
    pub last_us: u64,
}

/// What one check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub allowed: bool,
    /// Whole requests left in the bucket after this one.
    pub remaining: u64,
    /// Refused: microseconds until one request's credit is back (0 when
    /// allowed).
    pub retry_after_us: u64,
    /// Microseconds until the bucket is full again.
    pub reset_us: u64,
}

/// Refill `state` up to `now_us`, then take one request's credit if it is
/// there. A missing bucket is a full one. Time never runs backwards for a
/// bucket: an earlier `now_us` counts as its last update.
pub fn take(p: Params, state: Option<Bucket>, now_us: u64) -> (Bucket, Outcome) {
    let (mut tokens, now) = match state {
        None => (p.capacity, now_us),
        Some(b) => {
            let tokens = b.tokens.min(p.capacity);
            if now_us > b.last_us {
                // Never more elapsed time than filling the bucket needs:
                // keeps the product small (and exact in Lua).
                let needed = (p.capacity - tokens).div_ceil(p.rate);
                let elapsed = (now_us - b.last_us).min(needed);
                ((tokens + elapsed * p.rate).min(p.capacity), now_us)
            } else {
                (tokens, b.last_us)
            }
        }
    };
    let allowed = tokens >= p.cost;
    if allowed {
        tokens -= p.cost;
    }
    let retry_after_us = if allowed {
        0
    } else {
        (p.cost - tokens).div_ceil(p.rate)
    };
    let outcome = Outcome {
        allowed,
        remaining: tokens / p.cost,
        retry_after_us,
        reset_us: (p.capacity - tokens).div_ceil(p.rate),
    };
    (
        Bucket {
            tokens,
            last_us: now,
        },
        outcome,
    )
}

/// Microseconds on some monotonic clock.
pub trait Clock: Send + Sync {
    fn now_us(&self) -> u64;
}

/// Time since the limiter was made.
pub struct MonotonicClock(Instant);

impl MonotonicClock {
    pub fn new() -> Self {
        Self(Instant::now())
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now_us(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// Route classes a key has buckets for.
pub const CLASSES: usize = 4;
/// Shards per scope.
const SHARDS: usize = 32;

struct Entry {
    buckets: [Option<Bucket>; CLASSES],
    /// When every bucket of this key is full again: from then on the
    /// entry says nothing a missing one would not.
    idle_at_us: u64,
}

/// Keys are bytes (an address's octets, a principal's id); the hasher is
/// foldhash, seeded at random per process (keys come from clients, so the
/// seed must not be guessable), and much cheaper than SipHash on keys this
/// short.
type Hasher = foldhash::fast::RandomState;
type Shard = Mutex<HashMap<Box<[u8]>, Entry, Hasher>>;

/// Buckets of one scope (addresses or principals) in this process.
///
/// Bounded: each of the [`SHARDS`] shards holds at most
/// `max_keys / SHARDS` keys (at least 16). A shard that is full when a new
/// key arrives first drops every idle entry (all buckets full again);
/// if that frees nothing, it drops the tenth of its entries that are
/// closest to idle. Dropping an entry hands that key a full bucket.
pub struct MemoryBuckets {
    shards: Box<[Shard]>,
    shard_cap: usize,
    hasher: Hasher,
    clock: Arc<dyn Clock>,
}

impl MemoryBuckets {
    pub fn new(max_keys: usize, clock: Arc<dyn Clock>) -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::with_hasher(Hasher::default())))
                .collect(),
            shard_cap: max_keys.div_ceil(SHARDS).max(16),
            hasher: Hasher::default(),
            clock,
        }
    }

    /// Keys held now (all shards).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most keys this store holds.
    pub fn capacity(&self) -> usize {
        self.shard_cap * SHARDS
    }

    /// Check and consume one request of `class` for `key`.
    pub fn take(&self, class: usize, key: impl AsRef<[u8]>, p: Params) -> Outcome {
        let key = key.as_ref();
        let class = class.min(CLASSES - 1);
        let now = self.clock.now_us();
        let shard = &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS];
        let mut map = match shard.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(entry) = map.get_mut(key) {
            let (bucket, outcome) = take(p, entry.buckets[class], now);
            entry.buckets[class] = Some(bucket);
            entry.idle_at_us = entry.idle_at_us.max(now.saturating_add(outcome.reset_us));
            return outcome;
        }
        if map.len() >= self.shard_cap {
            evict(&mut map, self.shard_cap, now);
        }
        let (bucket, outcome) = take(p, None, now);
        let mut buckets = [None; CLASSES];
        buckets[class] = Some(bucket);
        map.insert(
            key.into(),
            Entry {
                buckets,
                idle_at_us: now.saturating_add(outcome.reset_us),
            },
        );
        outcome
    }
}

fn evict(map: &mut HashMap<Box<[u8]>, Entry, Hasher>, cap: usize, now: u64) {
    map.retain(|_, e| e.idle_at_us > now);
    if map.len() < cap {
        return;
    }
    let target = cap - cap / 10 - 1;
    let drop = map.len() - target;
    let mut idle: Vec<u64> = map.values().map(|e| e.idle_at_us).collect();
    let (_, threshold, _) = idle.select_nth_unstable(drop - 1);
    let threshold = *threshold;
    map.retain(|_, e| e.idle_at_us > threshold);
    metrics::counter!("cairn_rate_limit_evictions_total").increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A clock the test moves by hand.
    #[derive(Default)]
    struct Manual(AtomicU64);

    impl Manual {
        fn advance(&self, us: u64) {
            self.0.fetch_add(us, Ordering::SeqCst);
        }
    }

    impl Clock for Manual {
        fn now_us(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn store(max_keys: usize) -> (Arc<Manual>, MemoryBuckets) {
        let clock = Arc::new(Manual::default());
        let buckets = MemoryBuckets::new(max_keys, clock.clone());
        (clock, buckets)
    }

    #[test]
    fn a_full_bucket_serves_its_burst_then_refuses_with_the_exact_wait() {
        let (clock, b) = store(1000);
        let p = Params::new(2, 5, 1); // 2 per second, burst 5
        clock.advance(1_000_000_000);
        let remaining: Vec<u64> = (0..5).map(|_| b.take(0, "k", p).remaining).collect();
        assert_eq!(remaining, [4, 3, 2, 1, 0]);
        let refused = b.take(0, "k", p);
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.retry_after_us, 500_000, "one request every 0.5 s");
        assert_eq!(refused.reset_us, 2_500_000, "five requests' worth to full");
        // One microsecond short is still refused; exactly on time is not.
        clock.advance(499_999);
        let r = b.take(0, "k", p);
        assert!(!r.allowed);
        assert_eq!(r.retry_after_us, 1);
        clock.advance(1);
        let r = b.take(0, "k", p);
        assert!(r.allowed, "{r:?}");
        assert_eq!(r.remaining, 0);
        assert!(!b.take(0, "k", p).allowed);
    }

    #[test]
    fn refilling_in_many_small_steps_does_not_drift() {
        // 3 per second: one request every 333_333.33 µs, which no whole
        // number of microseconds is. Burst 1000, spent at once, so the
        // cap never swallows credit below.
        let p = Params::new(3, 1000, 1);
        let mut state = None;
        for _ in 0..1000 {
            let (b, o) = take(p, state, 0);
            assert!(o.allowed);
            state = Some(b);
        }
        let mut now = 0;
        let mut allowed = 0;
        // Ten seconds, checked every 7 µs (the last check, at
        // 10_000_004 µs, is the first at or after 10 s).
        while now <= 10_000_004 {
            let (b, o) = take(p, state, now);
            state = Some(b);
            allowed += u64::from(o.allowed);
            now += 7;
        }
        // Exactly 3 per second for 10 s.
        assert_eq!(allowed, 30);
        // And not one more before the 31st is due (10_333_334 µs).
        let (b, o) = take(p, state, 10_333_333);
        assert!(!o.allowed);
        assert_eq!(o.retry_after_us, 1);
        assert!(take(p, Some(b), 10_333_334).1.allowed);
    }

    #[test]
    fn a_period_longer_than_a_second_counts_per_period() {
        let p = Params::new(30, 2, 60); // 30 per minute, burst 2
        let (b1, o) = take(p, None, 0);
        assert_eq!(o.remaining, 1);
        let (b2, o) = take(p, Some(b1), 0);
        assert_eq!(o.remaining, 0);
        let (b3, o) = take(p, Some(b2), 0);
        assert!(!o.allowed);
        assert_eq!(o.retry_after_us, 2_000_000, "one every 2 s");
        let (_, o) = take(p, Some(b3), 2_000_000);
        assert!(o.allowed);
    }

    #[test]
    fn time_running_backwards_gives_no_credit() {
        let p = Params::new(1, 1, 1);
        let (b, _) = take(p, None, 5_000_000);
        let (b, o) = take(p, Some(b), 1_000_000);
        assert!(!o.allowed);
        assert_eq!(b.last_us, 5_000_000);
        let (_, o) = take(p, Some(b), 6_000_000);
        assert!(o.allowed);
    }

    #[test]
    fn keys_and_classes_have_separate_buckets() {
        let (_, b) = store(1000);
        let p = Params::new(1, 1, 1);
        assert!(b.take(0, "a", p).allowed);
        assert!(!b.take(0, "a", p).allowed);
        assert!(b.take(1, "a", p).allowed, "another class");
        assert!(b.take(0, "b", p).allowed, "another key");
    }

    #[test]
    fn memory_stays_bounded_and_idle_keys_go_first() {
        let (clock, b) = store(320); // 10 keys per shard
        let p = Params::new(1, 1, 1);
        for i in 0..10_000 {
            b.take(0, format!("10.0.{}.{}", i / 256, i % 256), p);
        }
        assert!(b.len() <= b.capacity(), "{} > {}", b.len(), b.capacity());
        // A key that is still spending keeps its state while full buckets
        // are dropped around it.
        assert!(b.take(0, "busy", p).allowed);
        clock.advance(2_000_000);
        for i in 0..500 {
            b.take(0, format!("idle-{i}"), p);
        }
        assert!(b.len() <= b.capacity());
    }

    #[test]
    fn a_refused_key_is_not_forgotten_by_eviction_of_idle_ones() {
        let (clock, b) = store(16 * 32);
        let slow = Params::new(1, 1, 3600); // one per hour
        assert!(b.take(0, "attacker", slow).allowed);
        clock.advance(1);
        // Many other keys, each full again immediately (fast budget).
        let fast = Params::new(1_000_000, 1, 1);
        for i in 0..5_000 {
            b.take(0, format!("k{i}"), fast);
            clock.advance(2);
        }
        assert!(
            !b.take(0, "attacker", slow).allowed,
            "still inside its hour"
        );
    }
}
