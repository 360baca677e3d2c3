//! The `cairn` application: settings, telemetry and start-up wiring. The
//! binary in `main.rs` is a thin CLI over this library, which the black-box
//! tests drive directly.

pub mod limits;
pub mod settings;
pub mod startup;
pub mod telemetry;
pub mod tls;
