pub mod idempotency;
pub mod ratelimit;
