//! The id and timestamp source shared by the stores.

use cairn_domain::Timestamp;
use std::time::{SystemTime, UNIX_EPOCH};
use ulid::Ulid;

/// Hands out strictly increasing timestamps and ULIDs, so that id order,
/// `created_at` order and commit order agree for everything this store
/// writes.
pub struct Clock {
    last_micros: i64,
    last_id: Ulid,
}

impl Clock {
    pub fn new(floor: Option<Ulid>) -> Self {
        let last_id = floor.unwrap_or(Ulid(0));
        Self {
            last_micros: i64::try_from(last_id.timestamp_ms()).unwrap_or(0) * 1000,
            last_id,
        }
    }

    /// Never hand out an id at or below `floor` from now on (an id another
    /// node committed).
    pub fn observe(&mut self, floor: Ulid) {
        if floor > self.last_id {
            self.last_id = floor;
            let micros = i64::try_from(floor.timestamp_ms()).unwrap_or(0) * 1000;
            self.last_micros = self.last_micros.max(micros);
        }
    }

    pub fn next(&mut self) -> (Timestamp, Ulid) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let micros = now.max(self.last_micros + 1);
        let ms = u64::try_from(micros / 1000).unwrap_or(0);
        let id = if ms == self.last_id.timestamp_ms() {
            // Same millisecond: keep increasing within it.
            match self.last_id.increment() {
                Some(id) => id,
                None => Ulid::from_parts(ms + 1, 0),
            }
        } else {
            Ulid::from_parts(ms, Ulid::new().random())
        };
        self.last_micros = micros;
        self.last_id = id;
        (Timestamp::from_micros(micros), id)
    }
}
