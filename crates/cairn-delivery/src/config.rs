//! Sink configuration: one `[[sinks]]` entry each in cairn.toml (or the
//! `CAIRN_SINKS` environment variable). Each kind has its own struct; a
//! config builds its sink, which is health-checked at start-up.

use crate::Sink;
use crate::backoff::Backoff;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// One configured sink.
#[derive(Debug, Clone, Deserialize)]
pub struct SinkConfig {
    /// Unique among sinks; keys the sink's cursor and dead letters.
    pub name: String,
    /// A required sink whose breaker is open makes the node not ready.
    #[serde(default)]
    pub required: bool,
    #[serde(flatten)]
    pub kind: SinkKind,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub breaker: BreakerConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SinkKind {
    Webhook(crate::webhook::WebhookConfig),
    Memory(crate::memory::MemoryConfig),
    Nats(crate::nats::NatsConfig),
    Redis(crate::redis::RedisConfig),
    Kafka(crate::kafka::KafkaConfig),
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// First retry waits up to this long (milliseconds)...
    pub base_ms: u64,
    /// ...doubling up to this ceiling (milliseconds); full jitter below it.
    pub max_ms: u64,
    /// Attempts at one message before it becomes a dead letter.
    pub max_attempts: u32,
    /// Most messages read and delivered in one batch.
    pub batch_size: u32,
    /// How often the relay looks for new messages when not woken
    /// (milliseconds).
    pub poll_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            base_ms: 100,
            max_ms: 30_000,
            max_attempts: 10,
            batch_size: 256,
            poll_ms: 50,
        }
    }
}

impl RetryConfig {
    pub fn backoff(&self) -> Backoff {
        Backoff {
            base: Duration::from_millis(self.base_ms),
            max: Duration::from_millis(self.max_ms.max(self.base_ms)),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failed deliveries that open the breaker.
    pub failures: u32,
    /// How long it stays open before a trial delivery (milliseconds).
    pub open_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures: 5,
            open_ms: 30_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("sink {0:?} is configured twice")]
    Duplicate(String),
    #[error("sink {name:?}: {reason}")]
    Invalid { name: String, reason: String },
}

impl SinkConfig {
    /// Build the sink this entry describes.
    pub fn build(&self) -> Result<Arc<dyn Sink>, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            name: self.name.clone(),
            reason,
        };
        if self.name.trim().is_empty() {
            return Err(invalid("a sink needs a non-blank name".into()));
        }
        if self.retry.max_attempts == 0 {
            return Err(invalid("retry.max_attempts must be at least 1".into()));
        }
        if self.retry.batch_size == 0 {
            return Err(invalid("retry.batch_size must be at least 1".into()));
        }
        match &self.kind {
            SinkKind::Webhook(c) => Ok(Arc::new(
                crate::webhook::WebhookSink::new(&self.name, c).map_err(invalid)?,
            )),
            SinkKind::Memory(c) => Ok(Arc::new(crate::memory::MemorySink::new(&self.name, c))),
            SinkKind::Nats(c) => Ok(Arc::new(
                crate::nats::NatsSink::new(&self.name, c).map_err(invalid)?,
            )),
            SinkKind::Redis(c) => Ok(Arc::new(
                crate::redis::RedisSink::new(&self.name, c).map_err(invalid)?,
            )),
            SinkKind::Kafka(c) => Ok(Arc::new(
                crate::kafka::KafkaSink::new(&self.name, c).map_err(invalid)?,
            )),
        }
    }
}

/// Refuse two sinks with one name (they would share a cursor).
pub fn check_unique(configs: &[SinkConfig]) -> Result<(), ConfigError> {
    let mut seen = std::collections::HashSet::new();
    for c in configs {
        if !seen.insert(c.name.as_str()) {
            return Err(ConfigError::Duplicate(c.name.clone()));
        }
    }
    Ok(())
}
