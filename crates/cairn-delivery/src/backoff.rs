//! Exponential backoff with full jitter.

use std::time::Duration;

/// Retry timing of one sink.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The ceiling of the wait before retry `attempt` (1-based):
    /// `min(max, base * 2^(attempt - 1))`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1).min(30))
            .unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// A uniformly random wait in `[0, ceiling(attempt)]` ("full jitter").
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(0..=nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_jitters_below_it() {
        let b = Backoff {
            base: Duration::from_millis(10),
            max: Duration::from_millis(100),
        };
        assert_eq!(b.ceiling(1), Duration::from_millis(10));
        assert_eq!(b.ceiling(2), Duration::from_millis(20));
        assert_eq!(b.ceiling(4), Duration::from_millis(80));
        assert_eq!(b.ceiling(5), Duration::from_millis(100));
        assert_eq!(b.ceiling(100), Duration::from_millis(100));
        for attempt in 1..10 {
            assert!(b.delay(attempt) <= b.ceiling(attempt));
        }
    }
}
