//! A circuit breaker per sink: closed → open after `failures` consecutive
//! failed deliveries; no calls while open; after `open_for`, half-open: one
//! trial delivery closes it again or reopens it.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    HalfOpen,
    Open,
}

impl BreakerState {
    /// The `cairn_sink_breaker_state` value: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half-open",
            BreakerState::Open => "open",
        }
    }
}

#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    open_for: Duration,
    consecutive: u32,
    open_until: Option<Instant>,
}

impl Breaker {
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            open_for,
            consecutive: 0,
            open_until: None,
        }
    }

    pub fn state(&self, now: Instant) -> BreakerState {
        match self.open_until {
            None => BreakerState::Closed,
            Some(until) if now < until => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// How long calls must still wait (zero unless open).
    pub fn wait(&self, now: Instant) -> Duration {
        self.open_until
            .map_or(Duration::ZERO, |until| until.saturating_duration_since(now))
    }

    pub fn success(&mut self) {
        self.consecutive = 0;
        self.open_until = None;
    }

    pub fn failure(&mut self, now: Instant) {
        self.consecutive = self.consecutive.saturating_add(1);
        // A failed half-open trial reopens at once.
        if self.open_until.is_some() || self.consecutive >= self.threshold {
            self.open_until = Some(now + self.open_for);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_half_opens_and_closes() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3, Duration::from_secs(10));
        b.failure(t0);
        b.failure(t0);
        assert_eq!(b.state(t0), BreakerState::Closed);
        b.failure(t0);
        assert_eq!(b.state(t0), BreakerState::Open);
        assert_eq!(b.wait(t0), Duration::from_secs(10));
        let later = t0 + Duration::from_secs(10);
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        b.failure(later);
        assert_eq!(b.state(later), BreakerState::Open);
        let much_later = later + Duration::from_secs(10);
        assert_eq!(b.state(much_later), BreakerState::HalfOpen);
        b.success();
        assert_eq!(b.state(much_later), BreakerState::Closed);
        b.failure(much_later);
        assert_eq!(b.state(much_later), BreakerState::Closed);
    }
}
