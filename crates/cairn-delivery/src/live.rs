//! The node-local live feed: tails the store's outbox from its head at
//! start-up and broadcasts every message, in outbox order, to this node's
//! subscribers (GraphQL subscriptions; later REST live streams).
//!
//! Unlike a relay sink it holds no lease and keeps no cursor in the store:
//! every node runs its own feed, so a subscriber on any node sees changes
//! committed by every node sharing the database. It reads with
//! [`Store::outbox_deliverable`], so on PostgreSQL it never passes a
//! position a transaction still in flight could fill later. It is woken
//! after local writes and polls for the others' (`poll`).
//!
//! A subscriber that falls more than `capacity` messages behind gets
//! [`broadcast::error::RecvError::Lagged`] from its receiver: it must end
//! its stream with a clear error rather than carry on with a gap.

use crate::OutboxMessage;
use cairn_store::{Store, StoreError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy)]
pub struct LiveConfig {
    /// Messages buffered per subscriber before it counts as lagging.
    pub capacity: usize,
    /// How often to look for changes committed by other nodes.
    pub poll: Duration,
    /// Messages read per store call.
    pub batch: u32,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            capacity: 4096,
            poll: Duration::from_millis(250),
            batch: 512,
        }
    }
}

/// What subscribers and writers hold: subscribe, or wake the tail.
#[derive(Clone)]
pub struct LiveHandle {
    tx: broadcast::Sender<Arc<OutboxMessage>>,
    wake: Arc<Notify>,
}

impl LiveHandle {
    /// Messages committed from now on (see the module docs on lagging).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<OutboxMessage>> {
        self.tx.subscribe()
    }

    /// Read the outbox now rather than at the next poll (after a local
    /// write). Never waits.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Subscribers right now.
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }
}

/// The running tail task.
pub struct LiveFeed {
    handle: LiveHandle,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl LiveFeed {
    /// Start tailing from the outbox's current head.
    pub async fn start(store: Arc<dyn Store>, config: LiveConfig) -> Result<Self, StoreError> {
        let head = store.outbox_head().await?;
        let (tx, _) = broadcast::channel(config.capacity.max(1));
        let wake = Arc::new(Notify::new());
        let (stop, stop_rx) = watch::channel(false);
        let handle = LiveHandle { tx, wake };
        let task = tokio::spawn(tail(store, handle.clone(), config, head, stop_rx));
        Ok(Self { handle, stop, task })
    }

    pub fn handle(&self) -> LiveHandle {
        self.handle.clone()
    }

    /// Stop the tail; subscribers' receivers then report `Closed` once the
    /// last handle is gone.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn tail(
    store: Arc<dyn Store>,
    handle: LiveHandle,
    config: LiveConfig,
    mut cursor: u64,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        match store.outbox_deliverable(cursor, config.batch).await {
            Ok(batch) if !batch.is_empty() => {
                for m in batch {
                    cursor = cursor.max(m.seq);
                    // No subscriber is not a failure: nobody listens yet.
                    let _ = handle.tx.send(Arc::new(m));
                }
                metrics::gauge!("cairn_live_feed_position").set(cursor as f64);
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, cursor, "live feed: reading the outbox"),
        }
        tokio::select! {
            _ = handle.wake.notified() => {}
            _ = tokio::time::sleep(config.poll) => {}
            _ = stop.changed() => return,
        }
    }
}
