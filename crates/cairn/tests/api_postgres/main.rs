//! The black-box API suite of `tests/api`, run against the PostgreSQL store:
//! the same modules, compiled with `SUITE_STORE = "postgres"`. Each test app
//! gets its own database on the server named by `CAIRN_TEST_DATABASE_URL`;
//! when that is unset the target prints why and skips.

/// The store this target runs the suite against.
pub const SUITE_STORE: &str = "postgres";

#[path = "../api/auth_accounts.rs"]
mod auth_accounts;
#[path = "../api/auth_matrix.rs"]
mod auth_matrix;
#[path = "../api/auth_oidc.rs"]
mod auth_oidc;
#[path = "../api/auth_support.rs"]
mod auth_support;
#[path = "../api/auth_tokens.rs"]
mod auth_tokens;
#[path = "../api/batch.rs"]
mod batch;
#[path = "../api/completion.rs"]
mod completion;
#[path = "../api/delivery.rs"]
mod delivery;
#[path = "../api/deploy_files.rs"]
mod deploy_files;
#[path = "../api/edge_headers.rs"]
mod edge_headers;
#[path = "../api/edge_overload.rs"]
mod edge_overload;
#[path = "../api/edge_tls.rs"]
mod edge_tls;
#[path = "../api/errors.rs"]
mod errors;
#[path = "../api/events.rs"]
mod events;
#[path = "../api/graphql.rs"]
mod graphql;
#[path = "../api/group_membership.rs"]
mod group_membership;
#[path = "../api/groups.rs"]
mod groups;
#[path = "../api/health.rs"]
mod health;
#[path = "../api/helpers.rs"]
mod helpers;
#[path = "../api/idempotency.rs"]
mod idempotency;
#[path = "../api/kafka_outage.rs"]
mod kafka_outage;
#[path = "../api/lists.rs"]
mod lists;
#[path = "../api/nats_outage.rs"]
mod nats_outage;
#[path = "../api/persistence.rs"]
mod persistence;
#[path = "../api/rate_limits.rs"]
mod rate_limits;
#[path = "../api/receivers.rs"]
mod receivers;
#[path = "../api/request_ids.rs"]
mod request_ids;
#[path = "../api/signing_keys.rs"]
mod signing_keys;

/// This target must run every module of the embedded-store suite.
#[test]
fn runs_every_module_of_the_api_suite() {
    let suite = include_str!("../api/main.rs");
    let here = include_str!("main.rs");
    for line in suite.lines().filter(|l| l.starts_with("mod ")) {
        assert!(here.contains(line), "tests/api_postgres misses `{line}`");
    }
}
