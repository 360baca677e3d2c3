//! The completion rule (CONTRACT section 4).
//!
//! For an enabled group G and a unit U, G is complete for U when, for every
//! receiver R in G, the most recent event (by id order) of R for U has
//! `success = true`. Receivers outside G never affect G.

use crate::id::{EventId, ReceiverId};

/// What the store knows about the latest event of one receiver for one unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latest {
    pub event_id: EventId,
    pub success: bool,
}

/// Decide completion from the group's receivers and, for each, the latest
/// event for the unit (if any). A disabled group is never complete.
/// Returns the completing event (the newest of the latest events) when
/// complete.
pub fn evaluate(
    enabled: bool,
    receivers: &[ReceiverId],
    latest: impl Fn(ReceiverId) -> Option<Latest>,
) -> Option<EventId> {
    if !enabled || receivers.is_empty() {
        return None;
    }
    let mut newest: Option<EventId> = None;
    for r in receivers {
        match latest(*r) {
            Some(l) if l.success => {
                newest = Some(newest.map_or(l.event_id, |n| n.max(l.event_id)));
            }
            _ => return None,
        }
    }
    newest
}

/// A failed event can never complete a group: it is now its receiver's
/// latest event for the unit, and it is not a success.
pub fn may_complete(event_success: bool) -> bool {
    event_success
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;
    use ulid::Ulid;

    fn rid(n: u128) -> ReceiverId {
        ReceiverId::new(Ulid(n))
    }
    fn eid(n: u128) -> EventId {
        EventId::new(Ulid(n))
    }

    #[test]
    fn all_latest_successful_completes_with_newest_event() {
        let rs = [rid(1), rid(2)];
        let mut m = HashMap::new();
        m.insert(
            rid(1),
            Latest {
                event_id: eid(10),
                success: true,
            },
        );
        m.insert(
            rid(2),
            Latest {
                event_id: eid(7),
                success: true,
            },
        );
        assert_eq!(evaluate(true, &rs, |r| m.get(&r).copied()), Some(eid(10)));
        assert_eq!(evaluate(false, &rs, |r| m.get(&r).copied()), None);
        m.insert(
            rid(2),
            Latest {
                event_id: eid(11),
                success: false,
            },
        );
        assert_eq!(evaluate(true, &rs, |r| m.get(&r).copied()), None);
        m.remove(&rid(2));
        assert_eq!(evaluate(true, &rs, |r| m.get(&r).copied()), None);
    }

    proptest! {
        // Brute force over histories: completion holds exactly when every
        // receiver's highest-id event for the unit is a success.
        #[test]
        fn matches_brute_force(
            n_receivers in 1usize..4,
            history in prop::collection::vec((0usize..5, any::<bool>()), 0..20),
        ) {
            let receivers: Vec<ReceiverId> = (0..n_receivers as u128).map(rid).collect();
            // receiver index 3 and 4 are outside the group
            let mut latest: HashMap<usize, (u128, bool)> = HashMap::new();
            for (i, (r, ok)) in history.iter().enumerate() {
                latest.insert(*r, (i as u128, *ok));
            }
            let expected = (0..n_receivers).all(|r| matches!(latest.get(&r), Some((_, true))));
            let got = evaluate(true, &receivers, |r| {
                let idx = r.ulid().0 as usize;
                latest.get(&idx).map(|(e, ok)| Latest { event_id: eid(*e), success: *ok })
            });
            prop_assert_eq!(got.is_some(), expected);
        }
    }
}
