//! Buckets shared by every node through Redis: one Lua script does the
//! whole check-and-consume atomically on the server (Redis runs a script
//! alone), with the server's clock (`TIME`), so all nodes spend one budget
//! and no node's clock matters. Each bucket is a hash `{t: units, l: µs}`
//! that expires once it would be full again (a missing bucket is a full
//! one).
//!
//! The script is loaded once (`SCRIPT LOAD`) and run by its SHA-1
//! (`EVALSHA`); a server that lost it (restart, `SCRIPT FLUSH`) answers
//! `NOSCRIPT` and is sent the script itself (`EVAL`, which caches it
//! again). Every call is bounded by the configured timeout; after a
//! failure the connection is dropped and not tried again for a second, so
//! an unreachable Redis costs a request at most one timeout, and then
//! nothing. `rediss://` connects over TLS.

use super::bucket::{Outcome, Params};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// KEYS[1]: the bucket. ARGV: rate (units per µs), capacity (units), cost
/// (units per request). Returns {allowed, remaining, retry_after_us,
/// reset_us}: the same computation as `bucket::take`. Every number stays
/// below 2^53 (settings bound burst * period), so doubles are exact.
const SCRIPT: &str = r"
local rate = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local state = redis.call('HMGET', KEYS[1], 't', 'l')
local tokens = cap
local last = now
if state[1] and state[2] then
  tokens = math.min(tonumber(state[1]), cap)
  last = tonumber(state[2])
  if now > last then
    local needed = math.ceil((cap - tokens) / rate)
    local elapsed = math.min(now - last, needed)
    tokens = math.min(cap, tokens + elapsed * rate)
  else
    now = last
  end
end
local allowed = 0
local retry = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  retry = math.ceil((cost - tokens) / rate)
end
local reset = math.ceil((cap - tokens) / rate)
redis.call('HSET', KEYS[1], 't', string.format('%d', tokens), 'l', string.format('%d', now))
redis.call('PEXPIRE', KEYS[1], math.floor(reset / 1000) + 1000)
return {allowed, math.floor(tokens / cost), retry, reset}
";

/// How long a failed Redis is left alone before the next attempt.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

const RESTING: &str = "unreachable at the last attempt (tried again each second)";

pub struct RedisBuckets {
    client: Result<redis::Client, String>,
    prefix: String,
    timeout: Duration,
    conn: Mutex<Option<redis::aio::MultiplexedConnection>>,
    sha: Mutex<Option<String>>,
    /// Connecting is serialised, so a burst of requests makes one attempt.
    connecting: tokio::sync::Mutex<()>,
    down_until: Mutex<Option<Instant>>,
}

impl RedisBuckets {
    /// Buckets in the Redis of `client` (`cairn_delivery::redis::client`);
    /// a client that could not be made is every take's error.
    pub fn new(client: Result<redis::Client, String>, prefix: &str, timeout: Duration) -> Self {
        Self {
            client,
            prefix: prefix.to_owned(),
            timeout,
            conn: Mutex::new(None),
            sha: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            down_until: Mutex::new(None),
        }
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        match m.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Check and consume one request for `key` (already namespaced by the
    /// caller with class and scope).
    pub async fn take(&self, key: &str, p: Params) -> Result<Outcome, String> {
        if self.resting() {
            return Err(RESTING.into());
        }
        let key = format!("{}{key}", self.prefix);
        match tokio::time::timeout(self.timeout, self.take_inner(&key, p)).await {
            Ok(Ok(o)) => Ok(o),
            Ok(Err(e)) => {
                self.failed();
                Err(e)
            }
            Err(_) => {
                self.failed();
                Err(format!("no answer within {} ms", self.timeout.as_millis()))
            }
        }
    }

    /// Within a second of a failure: not tried.
    fn resting(&self) -> bool {
        Self::lock(&self.down_until).is_some_and(|t| Instant::now() < t)
    }

    fn failed(&self) {
        *Self::lock(&self.conn) = None;
        *Self::lock(&self.down_until) = Some(Instant::now() + RETRY_AFTER_FAILURE);
    }

    async fn connection(&self) -> Result<(redis::aio::MultiplexedConnection, String), String> {
        if let (Some(c), Some(sha)) = (
            Self::lock(&self.conn).clone(),
            Self::lock(&self.sha).clone(),
        ) {
            return Ok((c, sha));
        }
        let _one = self.connecting.lock().await;
        if self.resting() {
            return Err(RESTING.into());
        }
        if let (Some(c), Some(sha)) = (
            Self::lock(&self.conn).clone(),
            Self::lock(&self.sha).clone(),
        ) {
            return Ok((c, sha));
        }
        let client = self.client.as_ref().map_err(Clone::clone)?;
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| format!("connecting: {e}"))?;
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(SCRIPT)
            .query_async(&mut conn)
            .await
            .map_err(|e| format!("loading the script: {e}"))?;
        *Self::lock(&self.sha) = Some(sha.clone());
        *Self::lock(&self.conn) = Some(conn.clone());
        *Self::lock(&self.down_until) = None;
        Ok((conn, sha))
    }

    async fn take_inner(&self, key: &str, p: Params) -> Result<Outcome, String> {
        let (mut conn, sha) = self.connection().await?;
        // `EVALSHA <sha>` or `EVAL <script>`, then the same arguments.
        let call = |command: &str, script: &str| {
            let mut cmd = redis::cmd(command);
            cmd.arg(script)
                .arg(1)
                .arg(key)
                .arg(p.rate)
                .arg(p.capacity)
                .arg(p.cost);
            cmd
        };
        let reply: Result<(i64, i64, i64, i64), redis::RedisError> =
            call("EVALSHA", &sha).query_async(&mut conn).await;
        let reply = match reply {
            Err(e) if e.code() == Some("NOSCRIPT") => call("EVAL", SCRIPT)
                .query_async(&mut conn)
                .await
                .map_err(|e| format!("running the script: {e}"))?,
            other => other.map_err(|e| format!("running the script: {e}"))?,
        };
        let (allowed, remaining, retry, reset) = reply;
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok(Outcome {
            allowed: allowed == 1,
            remaining: n(remaining),
            retry_after_us: n(retry),
            reset_us: n(reset),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redis_url() -> Option<String> {
        match std::env::var("CAIRN_TEST_REDIS_URL") {
            Ok(url) if !url.is_empty() => Some(url),
            _ => {
                eprintln!("skipping: CAIRN_TEST_REDIS_URL is unset (e.g. redis://127.0.0.1:6379)");
                None
            }
        }
    }

    /// Buckets as the limiter makes them, trusting `ca_file` if given.
    fn buckets(
        url: &str,
        ca_file: Option<&std::path::Path>,
        prefix: &str,
        timeout: Duration,
    ) -> RedisBuckets {
        let client = cairn_delivery::redis::client(url, ca_file, None)
            .map_err(|e| format!("rate_limit_redis_{e}"));
        RedisBuckets::new(client, prefix, timeout)
    }

    fn prefix(test: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("cairn-test:{test}:{}:{nanos}:", std::process::id())
    }

    #[tokio::test]
    async fn the_script_counts_like_the_algorithm_and_is_resent_when_lost() {
        let Some(url) = redis_url() else { return };
        let prefix = prefix("script");
        let b = buckets(&url, None, &prefix, Duration::from_secs(5));
        // One per minute, two at once.
        let p = Params::new(1, 2, 60);
        let o = b.take("k", p).await.expect("first take");
        assert_eq!((o.allowed, o.remaining), (true, 1));
        // The server "lost" the script: EVALSHA says NOSCRIPT, EVAL runs it.
        *RedisBuckets::lock(&b.sha) = Some("0".repeat(40));
        let o = b.take("k", p).await.expect("take after NOSCRIPT");
        assert_eq!((o.allowed, o.remaining), (true, 0));
        let o = b.take("k", p).await.expect("third take");
        assert!(!o.allowed);
        assert_eq!(o.remaining, 0);
        // A minute's credit less the few milliseconds gone by.
        assert!(
            (55_000_000..=60_000_000).contains(&o.retry_after_us),
            "{o:?}"
        );
        assert!((115_000_000..=120_000_000).contains(&o.reset_us), "{o:?}");
        // The bucket expires a second after it would be full again.
        let client = redis::Client::open(url.as_str()).expect("url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let ttl: i64 = redis::cmd("PTTL")
            .arg(format!("{prefix}k"))
            .query_async(&mut conn)
            .await
            .expect("PTTL");
        assert!(
            ttl > 0 && ttl <= i64::try_from(o.reset_us / 1000 + 1000).unwrap_or(i64::MAX),
            "PTTL {ttl}"
        );
        let _: i64 = redis::cmd("DEL")
            .arg(format!("{prefix}k"))
            .query_async(&mut conn)
            .await
            .expect("DEL");
    }

    #[tokio::test]
    async fn over_tls_the_servers_certificate_is_checked() {
        let port = cairn_testkit::free_port();
        let _server = cairn_testkit::start_redis_tls(port).await;
        let url = format!("rediss://localhost:{port}");
        let ca = cairn_testkit::tls::ca_file();
        let p = Params::new(1, 2, 60);
        let trusting = buckets(&url, Some(&ca), "tls:", Duration::from_secs(5));
        let o = trusting.take("k", p).await.expect("over TLS, trusted");
        assert_eq!((o.allowed, o.remaining), (true, 1));
        let o = trusting.take("k", p).await.expect("the same connection");
        assert_eq!((o.allowed, o.remaining), (true, 0));
        // The system's roots do not hold the test CA.
        let untrusting = buckets(&url, None, "tls:", Duration::from_secs(5));
        let e = untrusting.take("k", p).await.expect_err("untrusted");
        assert!(e.contains("certificate"), "{e}");
        // A CA file that cannot be read is the first take's error, named.
        let missing = std::path::Path::new("no-such-ca.pem");
        let b = buckets(&url, Some(missing), "tls:", Duration::from_secs(5));
        let e = b.take("k", p).await.expect_err("no CA file");
        assert!(
            e.starts_with("rate_limit_redis_ca_file no-such-ca.pem"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_server_that_asks_for_a_client_certificate_gets_the_configured_one() {
        let port = cairn_testkit::free_port();
        let _server = cairn_testkit::start_redis_mtls(port).await;
        let url = format!("rediss://localhost:{port}");
        let ca = cairn_testkit::tls::ca_file();
        let (cert, key) = cairn_testkit::tls::client_identity();
        let identity = cairn_http::Identity {
            cert_file: &cert,
            key_file: &key,
        };
        let client = cairn_delivery::redis::client(&url, Some(&ca), Some(identity))
            .map_err(|e| format!("rate_limit_redis_{e}"));
        let b = RedisBuckets::new(client, "mtls:", Duration::from_secs(5));
        let p = Params::new(1, 2, 60);
        let o = b.take("k", p).await.expect("with the client certificate");
        assert_eq!((o.allowed, o.remaining), (true, 1));
        // Without one the server ends the handshake.
        let without = buckets(&url, Some(&ca), "mtls:", Duration::from_secs(5));
        let e = without
            .take("k", p)
            .await
            .expect_err("no client certificate");
        assert!(e.starts_with("connecting"), "{e}");
    }

    #[tokio::test]
    async fn an_unreachable_server_costs_one_timeout_then_nothing() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let b = buckets(
            &format!("redis://127.0.0.1:{port}"),
            None,
            "x:",
            Duration::from_millis(200),
        );
        let p = Params::new(1, 1, 1);
        assert!(b.take("k", p).await.is_err());
        let started = Instant::now();
        for _ in 0..100 {
            let e = b.take("k", p).await.expect_err("still down");
            assert_eq!(e, RESTING);
        }
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "not tried again"
        );
    }
}
