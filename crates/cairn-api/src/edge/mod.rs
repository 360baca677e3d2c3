pub mod scrub;
pub mod trace;
