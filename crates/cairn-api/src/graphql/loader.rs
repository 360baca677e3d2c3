//! Batched receiver lookups: every `event_receiver` (and group
//! `event_receivers`) field of one response is served by one
//! `Store::receivers` call per batch instead of one call per event.

use async_graphql::dataloader::{DataLoader, HashMapCache, Loader};
use cairn_domain::{Receiver, ReceiverId};
use cairn_store::{Store, StoreError};
use std::collections::HashMap;
use std::sync::Arc;

/// Receivers by id, through the given store view.
pub struct ReceiverLoader(pub Arc<dyn Store>);

/// Ids per store call: a full page of events names at most this many.
pub const MAX_BATCH: usize = 1000;

impl Loader<ReceiverId> for ReceiverLoader {
    type Value = Arc<Receiver>;
    type Error = StoreError;

    async fn load(
        &self,
        keys: &[ReceiverId],
    ) -> Result<HashMap<ReceiverId, Arc<Receiver>>, StoreError> {
        let found = self.0.receivers(keys.to_vec()).await?;
        Ok(found.into_iter().map(|r| (r.id, r)).collect())
    }
}

pub type Receivers = DataLoader<ReceiverLoader, HashMapCache>;

/// A loader for one request (or one subscription connection). It keeps
/// what it loaded (receivers are immutable), so a receiver is read at most
/// once per request; list resolvers prime it with one batched read.
pub fn receiver_loader(store: Arc<dyn Store>) -> Receivers {
    DataLoader::with_cache(ReceiverLoader(store), tokio::spawn, HashMapCache::default())
        .max_batch_size(MAX_BATCH)
}
