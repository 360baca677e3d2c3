//! NATS JetStream sink: each message is published to
//! `<subject_prefix>.<type>` (the type with every character outside
//! `[A-Za-z0-9_-]` replaced by `_`) with the header `Nats-Msg-Id` = the
//! message id, so the broker drops a redelivery within its duplicate
//! window; a message counts as delivered once JetStream acknowledged it.
//! Messages are published one at a time, each after the previous ack, so
//! a retry can never overtake a later message. The connection is made on
//! first use and re-made by the client after a broker restart.

use crate::{OutboxMessage, Sink, SinkError};
use async_nats::jetstream;
use async_trait::async_trait;
use serde::Deserialize;
use std::time::Duration;
use tokio::sync::Mutex;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// `nats://host:port` (no TLS built in yet).
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
        if !config.url.starts_with("nats://") {
            return Err(format!(
                "nats url {:?}: only nats:// is supported (no TLS built in yet)",
                config.url
            ));
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
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(self.timeout())
            .connect(self.config.url.as_str())
            .await
            .map_err(|e| format!("connecting to NATS at {}: {e}", self.config.url))?;
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

    async fn publish(&self, js: &jetstream::Context, m: &OutboxMessage) -> Result<(), String> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            m.id.to_string().as_str(),
        );
        let subject = subject(&self.config.subject_prefix, &m.type_);
        let ack = js
            .publish_with_headers(subject.clone(), headers, m.json.clone().into())
            .await
            .map_err(|e| format!("publishing to {subject}: {e}"))?;
        ack.await
            .map(|_| ())
            .map_err(|e| format!("waiting for the JetStream ack on {subject}: {e}"))
    }
}

#[async_trait]
impl Sink for NatsSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(&self, batch: &[OutboxMessage]) -> Result<(), SinkError> {
        let js = self.context().await.map_err(|e| SinkError::new(0, e))?;
        for (i, m) in batch.iter().enumerate() {
            self.publish(&js, m)
                .await
                .map_err(|e| SinkError::new(i, format!("message {}: {e}", m.id)))?;
        }
        Ok(())
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
    fn types_become_one_subject_token() {
        assert_eq!(super::subject("cairn", "ci.build"), "cairn.ci_build");
        assert_eq!(super::subject("p", "a b*>c"), "p.a_b__c");
    }
}
