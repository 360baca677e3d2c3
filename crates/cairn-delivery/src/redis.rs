//! Redis Streams sink: each batch is one atomic pipeline (`MULTI` ...
//! `EXEC`) of `XADD <key> MAXLEN ~ <maxlen> * id <message id> type <type>
//! message <json>`, in outbox order, so a batch is stored whole or not at
//! all. Redis does not deduplicate: a batch whose `EXEC` reply was lost is
//! added again, so consumers deduplicate on the `id` field. The connection
//! is made on first use and again after any failure.
//!
//! `rediss://` connects over TLS (rustls), verifying the server against
//! the system's CA roots or the CAs of a `ca_file`; [`client`] is also
//! how the rate limiter's shared buckets connect.

use crate::{OutboxMessage, Sink, SinkError};
use async_trait::async_trait;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::Mutex;

/// A Redis client for `url` (`redis://`, or `rediss://` for TLS), the
/// server's certificate checked against the CAs of `ca_file` when given
/// and the system's roots otherwise, presenting `identity` to a server
/// that asks for a client certificate (both need `rediss://`). An error
/// starts with the setting it is about (`url ...`, `ca_file ...`,
/// `client_cert_file ...`), for the caller to prefix with its own name;
/// connecting happens on first use.
pub fn client(
    url: &str,
    ca_file: Option<&Path>,
    identity: Option<cairn_http::Identity<'_>>,
) -> Result<redis::Client, String> {
    let tls = url.starts_with("rediss://");
    if !(tls || url.starts_with("redis://")) {
        return Err(format!("url {url:?}: must be a redis:// or rediss:// URL"));
    }
    if ca_file.is_none() && identity.is_none() {
        return redis::Client::open(url).map_err(|e| format!("url {url:?}: {e}"));
    }
    if !tls {
        let what = match ca_file {
            Some(file) => format!("ca_file {}", file.display()),
            None => "client_cert_file".to_owned(),
        };
        return Err(format!("{what} needs a rediss:// URL (TLS), not {url:?}"));
    }
    // Checked as every component's files are, so that their problems read
    // the same; the redis crate takes the PEM bytes.
    let root_cert = ca_file.map(cairn_http::ca_pem).transpose()?;
    let client_tls = match identity {
        Some(identity) => {
            let (client_cert, client_key) = identity.pem()?;
            Some(redis::ClientTlsConfig {
                client_cert,
                client_key,
            })
        }
        None => None,
    };
    let certs = redis::TlsCertificates {
        client_tls,
        root_cert,
    };
    redis::Client::build_with_tls(url, certs).map_err(|e| format!("url {url:?}: {e}"))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port[/db]`, or `rediss://` for TLS.
    pub url: String,
    /// The stream key.
    #[serde(default = "default_key")]
    pub stream_key: String,
    /// Approximate cap on the stream's length (`MAXLEN ~`); 0: no cap.
    #[serde(default = "default_maxlen")]
    pub maxlen: u64,
    /// Connect and reply timeout (milliseconds).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// PEM file of the CAs the server's certificate must chain to, instead
    /// of the system's roots (with a `rediss://` URL).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain presented to a server that asks for one
    /// (mutual TLS, with `rediss://`); set with `client_key_file`.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// The private key of `client_cert_file` (PEM).
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

fn default_key() -> String {
    "cairn:messages".into()
}
fn default_maxlen() -> u64 {
    1_000_000
}
fn default_timeout_ms() -> u64 {
    5_000
}

pub struct RedisSink {
    name: String,
    config: RedisConfig,
    client: redis::Client,
    conn: Mutex<Option<redis::aio::MultiplexedConnection>>,
}

impl RedisSink {
    pub fn new(name: &str, config: &RedisConfig) -> Result<Self, String> {
        if config.stream_key.is_empty() {
            return Err("redis stream_key must not be empty".into());
        }
        let identity = cairn_http::Identity::from_files(
            config.client_cert_file.as_deref(),
            config.client_key_file.as_deref(),
        )
        .map_err(|e| format!("redis {e}"))?;
        let client = client(&config.url, config.ca_file.as_deref(), identity)
            .map_err(|e| format!("redis {e}"))?;
        Ok(Self {
            name: name.to_owned(),
            config: config.clone(),
            client,
            conn: Mutex::new(None),
        })
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.timeout_ms.max(1))
    }

    async fn connection(&self) -> Result<redis::aio::MultiplexedConnection, String> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let conn = tokio::time::timeout(
            self.timeout(),
            self.client.get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| format!("connecting to Redis at {}: timed out", self.config.url))?
        .map_err(|e| format!("connecting to Redis at {}: {e}", self.config.url))?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    async fn forget_connection(&self) {
        self.conn.lock().await.take();
    }

    async fn add(&self, batch: &[OutboxMessage]) -> Result<(), String> {
        let mut conn = self.connection().await?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for m in batch {
            let cmd = pipe.cmd("XADD").arg(&self.config.stream_key);
            if self.config.maxlen > 0 {
                cmd.arg("MAXLEN").arg("~").arg(self.config.maxlen);
            }
            cmd.arg("*")
                .arg("id")
                .arg(m.id.to_string())
                .arg("type")
                .arg(&m.type_)
                .arg("message")
                .arg(&m.json)
                .ignore();
        }
        tokio::time::timeout(self.timeout(), pipe.query_async::<()>(&mut conn))
            .await
            .map_err(|_| format!("XADD to {}: no reply in time", self.config.stream_key))?
            .map_err(|e| format!("XADD to {}: {e}", self.config.stream_key))
    }
}

#[async_trait]
impl Sink for RedisSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(&self, batch: &[OutboxMessage]) -> Result<(), SinkError> {
        if batch.is_empty() {
            return Ok(());
        }
        match self.add(batch).await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.forget_connection().await;
                Err(SinkError::new(0, e))
            }
        }
    }

    async fn health(&self) -> Result<(), SinkError> {
        self.connection()
            .await
            .map(|_| ())
            .map_err(|e| SinkError::new(0, e))
    }
}
