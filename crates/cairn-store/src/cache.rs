//! Receivers are immutable, so each one is materialised (and its schema
//! compiled) once per process and shared from here; schemas are never
//! compiled per event.

use cairn_domain::{JsonText, Receiver, ReceiverId, ReceiverSchema, Text, Timestamp};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

#[derive(Default)]
pub struct ReceiverCache {
    receivers: RwLock<HashMap<ReceiverId, Arc<Receiver>>>,
}

/// A receiver row as storage holds it.
pub struct ReceiverRow {
    pub id: ReceiverId,
    pub name: String,
    pub type_: String,
    pub version: String,
    pub description: String,
    pub schema: String,
    pub fingerprint: String,
    pub created_at: Timestamp,
    /// The principal that created it, if stored.
    pub owner: Option<String>,
}

impl ReceiverCache {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, id: ReceiverId) -> Option<Arc<Receiver>> {
        self.receivers.read().ok()?.get(&id).cloned()
    }

    /// The cached receivers among `ids` (duplicates dropped), and the ids
    /// still to read from storage.
    pub fn split(&self, mut ids: Vec<ReceiverId>) -> (Vec<Arc<Receiver>>, Vec<ReceiverId>) {
        ids.sort();
        ids.dedup();
        let mut found = Vec::with_capacity(ids.len());
        let mut missing = Vec::new();
        for id in ids {
            match self.get(id) {
                Some(r) => found.push(r),
                None => missing.push(id),
            }
        }
        (found, missing)
    }

    /// Remember a receiver built elsewhere (on creation, after commit).
    pub fn insert(&self, receiver: Arc<Receiver>) {
        if let Ok(mut map) = self.receivers.write() {
            map.insert(receiver.id, receiver);
        }
    }

    /// The receiver for a stored row, compiling its schema only the first
    /// time this process sees the receiver.
    pub fn materialise(&self, row: ReceiverRow) -> Result<Arc<Receiver>, String> {
        if let Some(r) = self.get(row.id) {
            return Ok(r);
        }
        let schema = ReceiverSchema::compile(JsonText::from_stored(row.schema)).map_err(|e| {
            format!(
                "stored schema of receiver {} no longer compiles: {e}",
                row.id
            )
        })?;
        metrics::counter!("cairn_schema_compilations_total").increment(1);
        let receiver = Arc::new(Receiver {
            id: row.id,
            name: Text::from_stored(row.name),
            type_: Text::from_stored(row.type_),
            version: Text::from_stored(row.version),
            description: Text::from_stored(row.description),
            schema,
            fingerprint: row.fingerprint,
            created_at: row.created_at,
            owner: row.owner,
        });
        self.insert(receiver.clone());
        Ok(receiver)
    }
}
