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
        let fresh = Ulid::from_parts(ms, Ulid::new().random());
        let id = if fresh > self.last_id {
            fresh
        } else {
            // The same millisecond (or a floor observed from another node
            // ahead of this clock): step above the last id by a random
            // amount, never by one. Two nodes that observed the same floor
            // would otherwise hand out the same ids (a message id twice,
            // which consumers and JetStream deduplicate away).
            step_above(self.last_id)
        };
        self.last_micros = micros;
        self.last_id = id;
        (Timestamp::from_micros(micros), id)
    }
}

/// An id above `last` by 1 to 2^40 (random): keeps ids increasing while
/// leaving 40 random bits in every id. Crossing into the next millisecond
/// is fine (still a valid, larger ULID).
fn step_above(last: Ulid) -> Ulid {
    let step = 1 + (Ulid::new().random() & ((1u128 << 40) - 1));
    Ulid(last.0.saturating_add(step))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_and_times_strictly_increase() {
        let mut clock = Clock::new(None);
        let (mut t, mut id) = clock.next();
        for _ in 0..100_000 {
            let (t2, id2) = clock.next();
            assert!(t2 > t && id2 > id);
            (t, id) = (t2, id2);
        }
    }

    #[test]
    fn two_clocks_that_observe_one_floor_hand_out_different_ids() {
        // Two nodes write one unit in turn: each observes the other's
        // latest id as its floor, from a floor far ahead of the wall clock.
        let floor = Ulid::from_parts(u64::MAX >> 20, 42);
        let (mut a, mut b) = (Clock::new(None), Clock::new(None));
        let mut seen = HashSet::new();
        let mut last = floor;
        for _ in 0..10_000 {
            for clock in [&mut a, &mut b] {
                clock.observe(last);
                for _ in 0..2 {
                    let (_, id) = clock.next();
                    assert!(id > last, "{id} is not above the floor {last}");
                    assert!(seen.insert(id), "{id} handed out twice");
                }
            }
            // Both observed the same floor this round.
            last = a.last_id.max(b.last_id);
        }
    }
}
