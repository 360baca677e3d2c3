//! NATS JetStream sink: each message is published to
//! `<subject_prefix>.<type>` (the type with every character outside
//! `[A-Za-z0-9_-]` replaced by `_`) with the header `Nats-Msg-Id` = the
//! message id, so the broker drops a redelivery within its duplicate
//! window; a message counts as delivered once JetStream acknowledged it.
//! A batch is split into lanes by ordering key (one unit's messages share
//! a key): the lanes publish concurrently, and within a lane each message
//! is published only after the previous one's ack, so a retry can never
//! overtake a later message of the same unit. The connection is made on
//! first use and re-made by the client after a broker restart.

use crate::{OutboxMessage, Sink, SinkError};
use async_nats::jetstream;
use async_trait::async_trait;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::Mutex;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// `nats://host:port`, or `tls://host:port` for TLS.
    pub url: String,
    /// The JetStream stream; created (capturing `<subject_prefix>.>`) if
    /// missing.
    #[serde(default = "default_stream")]
    pub stream: String,
    #[serde(default = "default_prefix")]
    pub subject_prefix: String,
    /// How long to wait for connecting and for each ack (milliseconds).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// PEM file of the CAs the server's certificate must chain to, instead
    /// of the system's roots; setting it requires TLS, whatever the scheme.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain presented to a server that asks for one
    /// (mutual TLS); set with `client_key_file`.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// The private key of `client_cert_file` (PEM).
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

fn default_stream() -> String {
    "CAIRN".into()
}
fn default_prefix() -> String {
    "cairn".into()
}
fn default_timeout_ms() -> u64 {
    5_000
}

/// The subject a message of `type_` goes to.
pub fn subject(prefix: &str, type_: &str) -> String {
    let token: String = type_
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{prefix}.{token}")
}

pub struct NatsSink {
    name: String,
    config: NatsConfig,
    context: Mutex<Option<jetstream::Context>>,
}

impl NatsSink {
    pub fn new(name: &str, config: &NatsConfig) -> Result<Self, String> {
        if !(config.url.starts_with("nats://") || config.url.starts_with("tls://")) {
            return Err(format!(
                "nats url {:?}: must be a nats:// or tls:// URL",
                config.url
            ));
        }
        // Checked here as the other components' CA files are (async-nats
        // reads the file itself when it connects).
        if let Some(file) = &config.ca_file {
            cairn_http::load_ca_file(file).map_err(|e| format!("nats {e}"))?;
        }
        let identity = cairn_http::Identity::from_files(
            config.client_cert_file.as_deref(),
            config.client_key_file.as_deref(),
        )
        .map_err(|e| format!("nats {e}"))?;
        if let Some(identity) = identity {
            identity.load().map_err(|e| format!("nats {e}"))?;
        }
        if config.stream.is_empty() || config.subject_prefix.is_empty() {
            return Err("nats stream and subject_prefix must not be empty".into());
        }
        Ok(Self {
            name: name.to_owned(),
            config: config.clone(),
            context: Mutex::new(None),
        })
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.timeout_ms.max(1))
    }

    /// The JetStream context, connecting (and creating the stream) first
    /// if needed.
    async fn context(&self) -> Result<jetstream::Context, String> {
        let mut slot = self.context.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let mut options = async_nats::ConnectOptions::new().connection_timeout(self.timeout());
        if let Some(file) = &self.config.ca_file {
            options = options
                .add_root_certificates(file.clone())
                .require_tls(true);
        }
        if let (Some(cert), Some(key)) =
            (&self.config.client_cert_file, &self.config.client_key_file)
        {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        let client = options
            .connect(self.config.url.as_str())
            .await
            .map_err(|e| {
                format!(
                    "connecting to NATS at {}: {}",
                    self.config.url,
                    cairn_http::with_causes(&e)
                )
            })?;
        let mut js = jetstream::new(client);
        js.set_timeout(self.timeout());
        js.get_or_create_stream(jetstream::stream::Config {
            name: self.config.stream.clone(),
            subjects: vec![format!("{}.>", self.config.subject_prefix)],
            ..Default::default()
        })
        .await
        .map_err(|e| format!("creating JetStream stream {}: {e}", self.config.stream))?;
        *slot = Some(js.clone());
        Ok(js)
    }
}

/// One message ready to publish: its place in the batch, subject, id and
/// body.
struct Outgoing {
    index: usize,
    subject: String,
    id: String,
    body: bytes::Bytes,
}

async fn publish(js: &jetstream::Context, m: &Outgoing) -> Result<(), String> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, m.id.as_str());
    let ack = js
        .publish_with_headers(m.subject.clone(), headers, m.body.clone())
        .await
        .map_err(|e| format!("publishing to {}: {e}", m.subject))?;
    let ack = ack
        .await
        .map_err(|e| format!("waiting for the JetStream ack on {}: {e}", m.subject))?;
    if ack.duplicate {
        // Expected after a retry; anything else means two messages shared
        // an id, and the broker kept only the first.
        tracing::warn!(
            id = %m.id,
            subject = %m.subject,
            stream_seq = ack.sequence,
            "JetStream dropped the message as a duplicate of its id"
        );
    }
    Ok(())
}

/// Publish one lane in order, each message after the previous ack; stop
/// at the first failure. Returns the indexes acknowledged and the first
/// failure (its index and reason).
async fn publish_lane(
    js: jetstream::Context,
    lane: Vec<Outgoing>,
) -> (Vec<usize>, Option<(usize, String)>) {
    let mut acked = Vec::with_capacity(lane.len());
    for m in &lane {
        match publish(&js, m).await {
            Ok(()) => acked.push(m.index),
            Err(e) => return (acked, Some((m.index, format!("message {}: {e}", m.id)))),
        }
    }
    (acked, None)
}

/// Split `batch` into lanes by ordering key, each in batch order.
fn lanes(prefix: &str, batch: &[OutboxMessage]) -> Vec<Vec<Outgoing>> {
    let mut by_key: HashMap<&str, usize> = HashMap::new();
    let mut lanes: Vec<Vec<Outgoing>> = Vec::new();
    for (index, m) in batch.iter().enumerate() {
        let lane = *by_key.entry(m.ordering_key.as_str()).or_insert_with(|| {
            lanes.push(Vec::new());
            lanes.len() - 1
        });
        if let Some(lane) = lanes.get_mut(lane) {
            lane.push(Outgoing {
                index,
                subject: subject(prefix, &m.type_),
                id: m.id.to_string(),
                body: bytes::Bytes::from(m.json.clone()),
            });
        }
    }
    lanes
}

/// How much of a batch of `len` counts as delivered: the longest prefix
/// whose every message was acknowledged. Later acknowledged messages (of
/// other units) are published again on the retry; the broker drops them
/// as duplicates by `Nats-Msg-Id`.
fn delivered_prefix(len: usize, acked: &[usize]) -> usize {
    let mut done = vec![false; len];
    for &i in acked {
        if let Some(d) = done.get_mut(i) {
            *d = true;
        }
    }
    done.iter().take_while(|d| **d).count()
}

#[async_trait]
impl Sink for NatsSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(&self, batch: &[OutboxMessage]) -> Result<(), SinkError> {
        let js = self.context().await.map_err(|e| SinkError::new(0, e))?;
        let mut tasks = tokio::task::JoinSet::new();
        for lane in lanes(&self.config.subject_prefix, batch) {
            tasks.spawn(publish_lane(js.clone(), lane));
        }
        let mut acked = Vec::with_capacity(batch.len());
        let mut failures: Vec<(usize, String)> = Vec::new();
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok((ok, failed)) => {
                    acked.extend(ok);
                    failures.extend(failed);
                }
                Err(e) => failures.push((usize::MAX, format!("a publishing task failed: {e}"))),
            }
        }
        let delivered = delivered_prefix(batch.len(), &acked);
        if delivered == batch.len() {
            return Ok(());
        }
        // The reason reported is the failure of the first message not delivered
        // (or, if its lane never got to it, the earliest failure).
        failures.sort_by_key(|(i, _)| *i);
        let reason = failures
            .iter()
            .find(|(i, _)| *i == delivered)
            .or(failures.first())
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| "a message was not acknowledged".to_owned());
        Err(SinkError::new(delivered, reason))
    }

    async fn health(&self) -> Result<(), SinkError> {
        self.context()
            .await
            .map(|_| ())
            .map_err(|e| SinkError::new(0, e))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_delivered_prefix_stops_at_the_first_unacknowledged_message() {
        assert_eq!(super::delivered_prefix(4, &[0, 1, 2, 3]), 4);
        assert_eq!(super::delivered_prefix(4, &[3, 0, 1]), 2);
        assert_eq!(super::delivered_prefix(4, &[1, 2, 3]), 0);
        assert_eq!(super::delivered_prefix(0, &[]), 0);
    }

    #[test]
    fn types_become_one_subject_token() {
        assert_eq!(super::subject("cairn", "ci.build"), "cairn.ci_build");
        assert_eq!(super::subject("p", "a b*>c"), "p.a_b__c");
    }
}
