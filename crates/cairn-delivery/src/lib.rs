//! Delivery of outbox messages (CONTRACT section 5) to sinks.
//!
//! A [`Sink`] takes an ordered batch of messages and says how many it
//! delivered. A [`relay::Relay`] runs one task per sink: it reads messages
//! after the sink's cursor in the store, delivers them in outbox order,
//! advances the cursor only once the sink acknowledged, retries with
//! exponential backoff and full jitter, trips a circuit breaker when the
//! sink keeps failing, and moves a message it gave up on to the dead
//! letters. The request path never waits for any of this. See
//! docs/delivery.md.

pub mod backoff;
pub mod breaker;
pub mod config;
pub mod kafka;
pub mod live;
pub mod memory;
pub mod nats;
pub mod redis;
pub mod relay;
pub mod webhook;

use async_trait::async_trait;
pub use cairn_store::OutboxMessage;

/// Why a delivery stopped, and how far it got.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
pub struct SinkError {
    /// How many messages at the head of the batch were delivered before
    /// the failure (the relay keeps those and retries the next one).
    pub delivered: usize,
    pub reason: String,
}

impl SinkError {
    pub fn new(delivered: usize, reason: impl Into<String>) -> Self {
        Self {
            delivered,
            reason: reason.into(),
        }
    }
}

/// A destination for outbox messages.
#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// The configured name: the key of the sink's cursor and dead letters.
    fn name(&self) -> &str;
    /// Deliver `batch` in order; `Ok` once the sink acknowledged all of it.
    async fn deliver(&self, batch: &[OutboxMessage]) -> Result<(), SinkError>;
    /// A cheap check that the sink is reachable (used at start-up).
    async fn health(&self) -> Result<(), SinkError> {
        Ok(())
    }
}
