//! An in-process sink: every delivered message is broadcast to the
//! subscribers in this process (for live streams). Delivery never fails; a
//! subscriber that falls behind loses the oldest messages (tokio broadcast).

use crate::{OutboxMessage, Sink, SinkError};
use async_trait::async_trait;
use serde::Deserialize;
use tokio::sync::broadcast;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// Messages kept for a slow subscriber.
    #[serde(default = "default_capacity")]
    pub capacity: usize,
}

fn default_capacity() -> usize {
    1024
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            capacity: default_capacity(),
        }
    }
}

pub struct MemorySink {
    name: String,
    tx: broadcast::Sender<OutboxMessage>,
}

impl MemorySink {
    pub fn new(name: &str, config: &MemoryConfig) -> Self {
        let (tx, _) = broadcast::channel(config.capacity.max(1));
        Self {
            name: name.to_owned(),
            tx,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<OutboxMessage> {
        self.tx.subscribe()
    }
}

#[async_trait]
impl Sink for MemorySink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(&self, batch: &[OutboxMessage]) -> Result<(), SinkError> {
        for m in batch {
            // No subscriber is not a failure: nobody is listening yet.
            let _ = self.tx.send(m.clone());
        }
        Ok(())
    }
}
