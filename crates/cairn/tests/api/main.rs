//! Black-box tests of the HTTP API: every test starts its own application on
//! a fresh data directory and talks to it over loopback. This target runs
//! the suite on the embedded store; `tests/api_postgres` runs the same
//! modules on PostgreSQL.

/// The store this target runs the suite against.
pub const SUITE_STORE: &str = "sqlite";

mod auth_accounts;
mod auth_matrix;
mod auth_oidc;
mod auth_support;
mod auth_tokens;
mod batch;
mod completion;
mod delivery;
mod deploy_files;
mod edge_headers;
mod edge_overload;
mod edge_tls;
mod errors;
mod events;
mod graphql;
mod group_membership;
mod groups;
mod health;
mod helpers;
mod idempotency;
mod kafka_outage;
mod lists;
mod nats_outage;
mod persistence;
mod rate_limits;
mod receivers;
mod request_ids;
mod signing_keys;
