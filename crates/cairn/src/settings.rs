//! Settings in layers: built-in defaults < config file (`--config`) <
//! environment (`CAIRN_*`) < command-line flags. Any bad value stops start-up
//! with a message naming the setting.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// What the server is run as: `development` (the default: readable logs,
/// staging aids such as fault injection allowed) or `production` (JSON
/// logs, staging aids refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Development,
    Production,
}

/// `on` (the default) or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    On,
    Off,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `development` or `production` (`CAIRN_MODE`, `--mode`).
    pub mode: Mode,
    /// Authentication and access control, `on` or `off` (`CAIRN_AUTH`,
    /// `--auth`). Off lets anyone do anything and says so loudly at start.
    pub auth: AuthMode,
    /// `iss` of the access tokens issued here (`CAIRN_AUTH_ISSUER`).
    pub auth_issuer: String,
    /// `aud` of the access tokens issued here (`CAIRN_AUTH_AUDIENCE`).
    pub auth_audience: String,
    /// `EdDSA`, `RS256` or `HS256`: algorithm of newly made signing keys
    /// (`CAIRN_AUTH_JWT_ALGORITHM`).
    pub auth_jwt_algorithm: String,
    /// Access token lifetime (`CAIRN_AUTH_ACCESS_TOKEN_TTL_SECS`).
    pub auth_access_token_ttl_secs: u64,
    /// Refresh token lifetime (`CAIRN_AUTH_REFRESH_TOKEN_TTL_SECS`).
    pub auth_refresh_token_ttl_secs: u64,
    /// A login session's longest life, refreshed or not
    /// (`CAIRN_AUTH_SESSION_TTL_SECS`).
    pub auth_session_ttl_secs: u64,
    /// How long a rotated-out signing key still verifies
    /// (`CAIRN_AUTH_SIGNING_KEY_GRACE_SECS`).
    pub auth_signing_key_grace_secs: u64,
    /// Failed logins before the account is locked
    /// (`CAIRN_AUTH_LOGIN_MAX_FAILURES`).
    pub auth_login_max_failures: u32,
    /// How long a locked account stays locked (`CAIRN_AUTH_LOGIN_LOCKOUT_SECS`).
    pub auth_login_lockout_secs: u64,
    /// Login and refresh attempts per client address per minute
    /// (`CAIRN_AUTH_LOGIN_ATTEMPTS_PER_MINUTE`).
    pub auth_login_attempts_per_minute: u32,
    /// Require `metrics:read` on `/metrics` (`CAIRN_AUTH_PROTECT_METRICS`).
    pub auth_protect_metrics: bool,
    /// An external OpenID Connect issuer whose bearer tokens are accepted
    /// (`[oidc]` table; `CAIRN_OIDC` as an inline TOML table). docs/api.md
    /// lists the keys.
    #[serde(default, skip_serializing)]
    pub oidc: Option<cairn_auth::oidc::OidcConfig>,
    /// Address to listen on (`CAIRN_LISTEN`, `--listen`).
    pub listen: SocketAddr,
    /// Directory of the embedded store (`CAIRN_DATA_DIR`, `--data-dir`).
    pub data_dir: PathBuf,
    /// Largest accepted request body in bytes (`CAIRN_MAX_BODY_BYTES`).
    pub max_body_bytes: usize,
    /// `text` or `json` (`CAIRN_LOG_FORMAT`); unset, it follows `mode`:
    /// JSON in production, text in development.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    /// A tracing filter such as `info` or `cairn=debug` (`CAIRN_LOG_LEVEL`).
    pub log_level: String,
    /// Most writes committed together in one transaction (`CAIRN_WRITE_BATCH_MAX`).
    pub write_batch_max: usize,
    /// Writes that may queue for the writer before callers wait (`CAIRN_WRITE_QUEUE_DEPTH`).
    pub write_queue_depth: usize,
    /// Read connections to the embedded store (`CAIRN_READ_CONNECTIONS`).
    pub read_connections: usize,
    /// PostgreSQL store: event-writing tasks per node, each writing one
    /// group-committed batch at a time (`CAIRN_POSTGRES_WRITERS`).
    pub postgres_writers: usize,
    /// Deepest field nesting a GraphQL document may have
    /// (`CAIRN_GRAPHQL_MAX_DEPTH`, `--graphql-max-depth`).
    pub graphql_max_depth: usize,
    /// Highest GraphQL query complexity: a field costs 1, a list field its
    /// `limit` (default 100) times its selection
    /// (`CAIRN_GRAPHQL_MAX_COMPLEXITY`, `--graphql-max-complexity`).
    pub graphql_max_complexity: usize,
    /// Largest `limit` a GraphQL list field accepts
    /// (`CAIRN_GRAPHQL_MAX_LIST`, `--graphql-max-list`).
    pub graphql_max_list: u32,
    /// Largest GraphQL query document in bytes, refused before parsing
    /// (`CAIRN_GRAPHQL_MAX_QUERY_BYTES`, `--graphql-max-query-bytes`).
    pub graphql_max_query_bytes: usize,
    /// How often the live feed (subscriptions) looks for changes other
    /// nodes committed, in milliseconds (`CAIRN_LIVE_POLL_MS`).
    pub live_poll_ms: u64,
    /// Messages buffered per subscriber before it is cut off as lagging
    /// (`CAIRN_LIVE_CAPACITY`).
    pub live_capacity: usize,
    /// A `postgres://` URL (`CAIRN_DATABASE_URL`, `--database-url`): when
    /// set, the PostgreSQL store is used instead of the embedded one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// Outbox sinks (`[[sinks]]` tables; `CAIRN_SINKS` as an inline TOML
    /// array). None by default: messages then stay in the outbox.
    /// docs/delivery.md lists the keys.
    #[serde(default, skip_serializing)]
    pub sinks: Vec<cairn_delivery::config::SinkConfig>,
    // Issue 6: Idempotency-Key (docs/idempotency.md)
    /// Honour `Idempotency-Key` on POST and PATCH under `/api/v1/`
    /// (`CAIRN_IDEMPOTENCY_ENABLED`); off, the header is ignored.
    pub idempotency_enabled: bool,
    /// How long a key and its stored response are kept, in seconds
    /// (`CAIRN_IDEMPOTENCY_TTL_SECS`); a request still running when it
    /// expires is not protected any more.
    pub idempotency_ttl_secs: u64,
    /// Largest response body stored for replays, in bytes
    /// (`CAIRN_IDEMPOTENCY_MAX_RESPONSE_BYTES`); a larger response is
    /// answered but not stored, and its key is released.
    pub idempotency_max_response_bytes: usize,
    // Issue 6: rate limiting (docs/rate-limits.md)
    /// Rate limiting on or off (`CAIRN_RATE_LIMIT_ENABLED`).
    pub rate_limit_enabled: bool,
    /// Budgets per authenticated principal, one per route class, each
    /// `{ rate, burst, period_secs }` (`CAIRN_RATE_LIMIT_PRINCIPAL_AUTH`
    /// ... as inline TOML tables).
    pub rate_limit_principal_auth: RateLimit,
    pub rate_limit_principal_write: RateLimit,
    pub rate_limit_principal_read: RateLimit,
    pub rate_limit_principal_graphql: RateLimit,
    /// Budgets per client address, checked before authentication
    /// (`CAIRN_RATE_LIMIT_ADDRESS_AUTH` ...).
    pub rate_limit_address_auth: RateLimit,
    pub rate_limit_address_write: RateLimit,
    pub rate_limit_address_read: RateLimit,
    pub rate_limit_address_graphql: RateLimit,
    /// Per-principal budgets by role (`[rate_limit_roles.<role>]` tables
    /// with `auth`/`write`/`read`/`graphql` keys; `CAIRN_RATE_LIMIT_ROLES`
    /// as an inline TOML table). A principal gets the most generous of
    /// its roles' budgets (a role without one counts with the default).
    #[serde(default, skip_serializing)]
    pub rate_limit_roles: std::collections::BTreeMap<String, RateLimitRole>,
    /// Share the budgets of every node through this Redis (`redis://`, or
    /// `rediss://` for TLS; `CAIRN_RATE_LIMIT_REDIS_URL`); unset: each
    /// process counts alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_redis_url: Option<String>,
    /// PEM file of the CAs a `rediss://` server's certificate must chain
    /// to, instead of the system's roots (`CAIRN_RATE_LIMIT_REDIS_CA_FILE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_redis_ca_file: Option<PathBuf>,
    /// PEM certificate chain presented to a `rediss://` server that asks
    /// for one (mutual TLS), with `rate_limit_redis_client_key_file`
    /// (`CAIRN_RATE_LIMIT_REDIS_CLIENT_CERT_FILE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_redis_client_cert_file: Option<PathBuf>,
    /// Its private key (`CAIRN_RATE_LIMIT_REDIS_CLIENT_KEY_FILE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_redis_client_key_file: Option<PathBuf>,
    /// Prefix of the Redis keys (`CAIRN_RATE_LIMIT_REDIS_PREFIX`).
    pub rate_limit_redis_prefix: String,
    /// Longest wait for Redis per check, in milliseconds
    /// (`CAIRN_RATE_LIMIT_REDIS_TIMEOUT_MS`).
    pub rate_limit_redis_timeout_ms: u64,
    /// When Redis cannot be asked: `open` lets requests through, `closed`
    /// refuses them with 503 (`CAIRN_RATE_LIMIT_REDIS_FAILURE`).
    pub rate_limit_redis_failure: RateLimitFailure,
    /// Most keys (addresses, principals) the in-memory limiter holds per
    /// scope (`CAIRN_RATE_LIMIT_MAX_KEYS`).
    pub rate_limit_max_keys: usize,
    // Issue 6: HTTP edge (docs/edge.md)
    /// `X-Content-Type-Options`, `X-Frame-Options`, `Referrer-Policy`, CSP
    /// on HTML, HSTS over TLS (`CAIRN_SECURITY_HEADERS`).
    pub security_headers: bool,
    /// PEM certificate chain; with `tls_key_file`, serve HTTPS only
    /// (`CAIRN_TLS_CERT_FILE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file` (`CAIRN_TLS_KEY_FILE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,
    /// Origins allowed cross-origin, exactly `scheme://host[:port]`; empty:
    /// CORS closed (`CAIRN_CORS_ALLOWED_ORIGINS`, a TOML array).
    pub cors_allowed_origins: Vec<String>,
    /// How long browsers may cache a preflight (`CAIRN_CORS_MAX_AGE_SECS`).
    pub cors_max_age_secs: u64,
    /// Requests served at once before more are shed with 503; 0: no limit
    /// (`CAIRN_MAX_CONCURRENT_REQUESTS`).
    pub max_concurrent_requests: usize,
    /// How long a request may wait for a free slot before it is shed
    /// (`CAIRN_SHED_QUEUE_TIMEOUT_MS`).
    pub shed_queue_timeout_ms: u64,
    /// Longest time to answer a request, then 503; 0: none
    /// (`CAIRN_REQUEST_TIMEOUT_MS`).
    pub request_timeout_ms: u64,
    /// Longest time a client has to send a request's head (line and
    /// headers), counted from its first byte or, on a kept-alive
    /// connection, from the last answer; then the connection is closed
    /// (`CAIRN_HEADER_READ_TIMEOUT_MS`).
    pub header_read_timeout_ms: u64,
    /// gzip, br or zstd as `Accept-Encoding` asks (`CAIRN_COMPRESSION`).
    pub compression: bool,
    /// Smallest response body compressed (`CAIRN_COMPRESSION_MIN_BYTES`).
    pub compression_min_bytes: u16,
    /// Level of all three encodings, 1 (fastest) to 9
    /// (`CAIRN_COMPRESSION_LEVEL`).
    pub compression_level: u8,
    /// `ETag` and `If-None-Match` (304) on `GET /api/v1/...` (`CAIRN_ETAG`).
    pub etag: bool,
    /// Apply `fault_injection` rules; refused in production
    /// (`CAIRN_FAULT_INJECTION_ENABLED`).
    pub fault_injection_enabled: bool,
    /// `[[fault_injection]]` rules (`CAIRN_FAULT_INJECTION` as an inline
    /// TOML array); docs/edge.md lists the keys.
    #[serde(default)]
    pub fault_injection: Vec<FaultRuleSetting>,
    /// Reverse proxies and load balancers (addresses or CIDR networks)
    /// whose `forwarded_header` names the client for per-address rate
    /// limits, login lockouts and the audit log; empty: the connection's
    /// peer is the client (`CAIRN_TRUSTED_PROXIES`, a TOML array).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// The header the trusted proxies name the client in:
    /// `x-forwarded-for` (default) or `forwarded`, RFC 7239's
    /// (`CAIRN_FORWARDED_HEADER`). Only that one is read.
    pub forwarded_header: cairn_api::edge::client::ForwardedHeader,
    // Issue 6: observability (docs/observability.md)
    /// Base URL of an OTLP collector (`CAIRN_OTLP_ENDPOINT`), e.g.
    /// `http://127.0.0.1:4318` or `https://collector:4318` for http/protobuf
    /// (`/v1/traces` is appended) or `http://127.0.0.1:4317` for gRPC.
    /// Unset: no export.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// PEM file of the CAs an `https://` collector's certificate must chain
    /// to, instead of the system's roots (`CAIRN_OTLP_CA_FILE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp_ca_file: Option<PathBuf>,
    /// PEM certificate chain presented to an `https://` collector that asks
    /// for one (mutual TLS), with `otlp_client_key_file`
    /// (`CAIRN_OTLP_CLIENT_CERT_FILE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp_client_cert_file: Option<PathBuf>,
    /// Its private key (`CAIRN_OTLP_CLIENT_KEY_FILE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp_client_key_file: Option<PathBuf>,
    /// `http/protobuf` or `grpc` (`CAIRN_OTLP_PROTOCOL`).
    pub otlp_protocol: OtlpProtocol,
    /// `service.name` of the exported spans (`CAIRN_OTLP_SERVICE_NAME`).
    pub otlp_service_name: String,
    /// Share of new traces sampled, 0.0 to 1.0; a caller's sampling
    /// decision (`traceparent` flags) is followed (`CAIRN_OTLP_SAMPLING_RATIO`).
    pub otlp_sampling_ratio: f64,
    /// Finished spans waiting for export; beyond it spans are dropped and
    /// counted (`CAIRN_OTLP_QUEUE_SIZE`).
    pub otlp_queue_size: usize,
    /// Longest one export may take, in milliseconds (`CAIRN_OTLP_TIMEOUT_MS`).
    pub otlp_timeout_ms: u64,
    /// Read `traceparent`/`tracestate`, give every request a trace id
    /// (logged) and answer with `traceparent` (`CAIRN_TRACE_CONTEXT`).
    pub trace_context: bool,
    /// Spans for store calls, completion checks and outbox delivery
    /// (debug level; exported when OTLP is on) (`CAIRN_TRACE_SPANS`).
    pub trace_spans: bool,
    /// Request metrics and the gauges sampled at scrape (`CAIRN_METRICS`).
    pub metrics: bool,
    /// Receiver types with their own `receiver_type` label; the rest are
    /// `other` (`CAIRN_METRICS_RECEIVER_TYPES_MAX`).
    pub metrics_receiver_types_max: usize,
    /// JSON keys (matched case-insensitively as substrings) whose values
    /// are replaced by `[redacted]` in logged bodies (`CAIRN_LOG_SCRUB_FIELDS`).
    pub log_scrub_fields: Vec<String>,
}

/// How spans are sent to the OTLP collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OtlpProtocol {
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    #[serde(rename = "grpc")]
    Grpc,
}

/// One budget: `rate` requests per `period_secs` (default 1), `burst` at once.
pub type RateLimit = cairn_api::edge::ratelimit::Limit;
/// A role's budgets per class.
pub type RateLimitRole = cairn_api::edge::ratelimit::RoleLimits;
/// `open` or `closed`.
pub type RateLimitFailure = cairn_api::edge::ratelimit::FailureMode;

impl Default for Settings {
    fn default() -> Self {
        Self {
            mode: Mode::Development,
            auth: AuthMode::On,
            auth_issuer: "cairn".to_owned(),
            auth_audience: "cairn".to_owned(),
            auth_jwt_algorithm: "EdDSA".to_owned(),
            auth_access_token_ttl_secs: 15 * 60,
            auth_refresh_token_ttl_secs: 14 * 24 * 3600,
            auth_session_ttl_secs: 30 * 24 * 3600,
            auth_signing_key_grace_secs: 24 * 3600,
            auth_login_max_failures: 5,
            auth_login_lockout_secs: 15 * 60,
            auth_login_attempts_per_minute: 30,
            auth_protect_metrics: false,
            oidc: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 8042)),
            data_dir: PathBuf::from("./cairn-data"),
            max_body_bytes: 1024 * 1024,
            log_format: None,
            log_level: "info".to_owned(),
            write_batch_max: 512,
            write_queue_depth: 8192,
            read_connections: 8,
            postgres_writers: 4,
            graphql_max_depth: 15,
            graphql_max_complexity: 25_000,
            graphql_max_list: 1000,
            graphql_max_query_bytes: 32 * 1024,
            live_poll_ms: 250,
            live_capacity: 4096,
            database_url: None,
            sinks: Vec::new(),
            // Issue 6: Idempotency-Key
            idempotency_enabled: true,
            idempotency_ttl_secs: 24 * 3600,
            idempotency_max_response_bytes: 1024 * 1024,
            // Issue 6: rate limiting
            rate_limit_enabled: true,
            rate_limit_principal_auth: PRINCIPAL_LIMITS.auth,
            rate_limit_principal_write: PRINCIPAL_LIMITS.write,
            rate_limit_principal_read: PRINCIPAL_LIMITS.read,
            rate_limit_principal_graphql: PRINCIPAL_LIMITS.graphql,
            rate_limit_address_auth: ADDRESS_LIMITS.auth,
            rate_limit_address_write: ADDRESS_LIMITS.write,
            rate_limit_address_read: ADDRESS_LIMITS.read,
            rate_limit_address_graphql: ADDRESS_LIMITS.graphql,
            rate_limit_roles: std::collections::BTreeMap::new(),
            rate_limit_redis_url: None,
            rate_limit_redis_ca_file: None,
            rate_limit_redis_client_cert_file: None,
            rate_limit_redis_client_key_file: None,
            rate_limit_redis_prefix: "cairn:rl:".to_owned(),
            rate_limit_redis_timeout_ms: 100,
            rate_limit_redis_failure: RateLimitFailure::Open,
            rate_limit_max_keys: 100_000,
            // Issue 6: HTTP edge
            security_headers: true,
            tls_cert_file: None,
            tls_key_file: None,
            cors_allowed_origins: Vec::new(),
            cors_max_age_secs: 600,
            max_concurrent_requests: 512,
            shed_queue_timeout_ms: 20,
            request_timeout_ms: 30_000,
            header_read_timeout_ms: 30_000,
            compression: true,
            compression_min_bytes: 1024,
            compression_level: 1,
            etag: true,
            fault_injection_enabled: false,
            fault_injection: Vec::new(),
            trusted_proxies: Vec::new(),
            forwarded_header: cairn_api::edge::client::ForwardedHeader::XForwardedFor,
            // Issue 6: observability
            otlp_endpoint: None,
            otlp_ca_file: None,
            otlp_client_cert_file: None,
            otlp_client_key_file: None,
            otlp_protocol: OtlpProtocol::HttpProtobuf,
            otlp_service_name: "cairn".to_owned(),
            otlp_sampling_ratio: 1.0,
            otlp_queue_size: 2048,
            otlp_timeout_ms: 10_000,
            trace_context: true,
            trace_spans: true,
            metrics: true,
            metrics_receiver_types_max: 50,
            log_scrub_fields: cairn_api::edge::scrub::DEFAULT_FIELDS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        }
    }
}

const PRINCIPAL_LIMITS: cairn_api::edge::ratelimit::ClassLimits =
    cairn_api::edge::ratelimit::ClassLimits::PRINCIPAL;
const ADDRESS_LIMITS: cairn_api::edge::ratelimit::ClassLimits =
    cairn_api::edge::ratelimit::ClassLimits::ADDRESS;

const KEYS: &[&str] = &[
    "mode",
    "auth",
    "auth_issuer",
    "auth_audience",
    "auth_jwt_algorithm",
    "auth_access_token_ttl_secs",
    "auth_refresh_token_ttl_secs",
    "auth_session_ttl_secs",
    "auth_signing_key_grace_secs",
    "auth_login_max_failures",
    "auth_login_lockout_secs",
    "auth_login_attempts_per_minute",
    "auth_protect_metrics",
    "oidc",
    "listen",
    "data_dir",
    "max_body_bytes",
    "log_format",
    "log_level",
    "write_batch_max",
    "write_queue_depth",
    "read_connections",
    "postgres_writers",
    "graphql_max_depth",
    "graphql_max_complexity",
    "graphql_max_list",
    "graphql_max_query_bytes",
    "live_poll_ms",
    "live_capacity",
    "database_url",
    "sinks",
    // Issue 6: Idempotency-Key
    "idempotency_enabled",
    "idempotency_ttl_secs",
    "idempotency_max_response_bytes",
    // Issue 6: rate limiting
    "rate_limit_enabled",
    "rate_limit_principal_auth",
    "rate_limit_principal_write",
    "rate_limit_principal_read",
    "rate_limit_principal_graphql",
    "rate_limit_address_auth",
    "rate_limit_address_write",
    "rate_limit_address_read",
    "rate_limit_address_graphql",
    "rate_limit_roles",
    "rate_limit_redis_url",
    "rate_limit_redis_ca_file",
    "rate_limit_redis_client_cert_file",
    "rate_limit_redis_client_key_file",
    "rate_limit_redis_prefix",
    "rate_limit_redis_timeout_ms",
    "rate_limit_redis_failure",
    "rate_limit_max_keys",
    // Issue 6: HTTP edge
    "security_headers",
    "tls_cert_file",
    "tls_key_file",
    "cors_allowed_origins",
    "cors_max_age_secs",
    "max_concurrent_requests",
    "shed_queue_timeout_ms",
    "request_timeout_ms",
    "header_read_timeout_ms",
    "compression",
    "compression_min_bytes",
    "compression_level",
    "etag",
    "fault_injection_enabled",
    "fault_injection",
    "trusted_proxies",
    "forwarded_header",
    // Issue 6: observability
    "otlp_endpoint",
    "otlp_ca_file",
    "otlp_client_cert_file",
    "otlp_client_key_file",
    "otlp_protocol",
    "otlp_service_name",
    "otlp_sampling_ratio",
    "otlp_queue_size",
    "otlp_timeout_ms",
    "trace_context",
    "trace_spans",
    "metrics",
    "metrics_receiver_types_max",
    "log_scrub_fields",
];

/// Values given on the command line; `None` leaves the lower layers alone.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graphql_max_depth: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graphql_max_complexity: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graphql_max_list: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graphql_max_query_bytes: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid setting: {0}")]
    Invalid(String),
}

/// `listen: invalid socket address syntax (from CAIRN_LISTEN)`.
fn describe(err: figment::Error) -> String {
    let key = err.path.join(".").to_ascii_lowercase();
    let source = match &err.metadata {
        Some(m) if m.name.contains("environment") => format!("CAIRN_{}", key.to_ascii_uppercase()),
        Some(m) => match &m.source {
            Some(src) => format!("{} {src}", m.name),
            None => m.name.to_string(),
        },
        None => "settings".to_owned(),
    };
    if key.is_empty() {
        format!("{} (from {source})", err.kind)
    } else {
        format!("{key}: {} (from {source})", err.kind)
    }
}

impl Settings {
    /// Running as `production`.
    pub fn production(&self) -> bool {
        self.mode == Mode::Production
    }

    /// The log format in force: the configured one, or the mode's.
    pub fn log_format(&self) -> LogFormat {
        self.log_format.unwrap_or(if self.production() {
            LogFormat::Json
        } else {
            LogFormat::Text
        })
    }

    /// The authentication settings of the API layer.
    pub fn auth_config(&self) -> cairn_api::auth::AuthConfig {
        use std::time::Duration;
        cairn_api::auth::AuthConfig {
            enabled: self.auth == AuthMode::On,
            issuer: self.auth_issuer.clone(),
            audience: self.auth_audience.clone(),
            algorithm: cairn_auth::jwt::Algorithm::parse(&self.auth_jwt_algorithm)
                .unwrap_or(cairn_auth::jwt::Algorithm::EdDSA),
            access_token_ttl: Duration::from_secs(self.auth_access_token_ttl_secs),
            refresh_token_ttl: Duration::from_secs(self.auth_refresh_token_ttl_secs),
            session_ttl: Duration::from_secs(self.auth_session_ttl_secs),
            signing_key_grace: Duration::from_secs(self.auth_signing_key_grace_secs),
            login_max_failures: self.auth_login_max_failures,
            login_lockout: Duration::from_secs(self.auth_login_lockout_secs),
            login_attempts_per_minute: self.auth_login_attempts_per_minute,
            protect_metrics: self.auth_protect_metrics,
            oidc: self.oidc.clone(),
        }
    }

    /// The rate-limit settings of the API layer.
    pub fn rate_limit_config(&self) -> cairn_api::edge::ratelimit::RateLimitConfig {
        use cairn_api::edge::ratelimit::{ClassLimits, RateLimitConfig};
        RateLimitConfig {
            enabled: self.rate_limit_enabled,
            principal: ClassLimits {
                auth: self.rate_limit_principal_auth,
                write: self.rate_limit_principal_write,
                read: self.rate_limit_principal_read,
                graphql: self.rate_limit_principal_graphql,
            },
            address: ClassLimits {
                auth: self.rate_limit_address_auth,
                write: self.rate_limit_address_write,
                read: self.rate_limit_address_read,
                graphql: self.rate_limit_address_graphql,
            },
            roles: self.rate_limit_roles.clone(),
            redis_url: self.rate_limit_redis_url.clone(),
            redis_ca_file: self.rate_limit_redis_ca_file.clone(),
            redis_client_cert_file: self.rate_limit_redis_client_cert_file.clone(),
            redis_client_key_file: self.rate_limit_redis_client_key_file.clone(),
            redis_prefix: self.rate_limit_redis_prefix.clone(),
            redis_timeout: std::time::Duration::from_millis(self.rate_limit_redis_timeout_ms),
            redis_failure: self.rate_limit_redis_failure,
            max_keys: self.rate_limit_max_keys,
        }
    }

    /// Merge every layer. `config` is the `--config` file, if given.
    pub fn load(config: Option<&Path>, overrides: Overrides) -> Result<Self, SettingsError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = config {
            if !path.is_file() {
                return Err(SettingsError::MissingFile(path.to_owned()));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment
            .merge(
                Env::prefixed("CAIRN_")
                    .map(|k| k.as_str().to_ascii_lowercase().into())
                    .only(KEYS),
            )
            .merge(Serialized::defaults(overrides));
        let settings: Settings = figment.extract().map_err(|e| {
            SettingsError::Invalid(e.into_iter().map(describe).collect::<Vec<_>>().join("; "))
        })?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), SettingsError> {
        let bad = |key: &str, why: &str| Err(SettingsError::Invalid(format!("{key}: {why}")));
        if self.max_body_bytes == 0 {
            return bad("max_body_bytes", "must be greater than 0");
        }
        if self.write_batch_max == 0 {
            return bad("write_batch_max", "must be greater than 0");
        }
        if self.write_queue_depth == 0 {
            return bad("write_queue_depth", "must be greater than 0");
        }
        if self.read_connections == 0 {
            return bad("read_connections", "must be greater than 0");
        }
        if !(1..=64).contains(&self.postgres_writers) {
            return bad("postgres_writers", "must be between 1 and 64");
        }
        for (key, value) in [
            ("graphql_max_depth", self.graphql_max_depth),
            ("graphql_max_complexity", self.graphql_max_complexity),
            ("graphql_max_query_bytes", self.graphql_max_query_bytes),
            ("live_capacity", self.live_capacity),
        ] {
            if value == 0 {
                return bad(key, "must be greater than 0");
            }
        }
        if !(1..=9).contains(&self.compression_level) {
            return bad("compression_level", "must be from 1 to 9");
        }
        if !(1..=100_000).contains(&self.graphql_max_list) {
            return bad("graphql_max_list", "must be from 1 to 100000");
        }
        if self.live_poll_ms == 0 {
            return bad("live_poll_ms", "must be greater than 0");
        }
        if cairn_auth::jwt::Algorithm::parse(&self.auth_jwt_algorithm).is_none() {
            return bad("auth_jwt_algorithm", "must be EdDSA, RS256 or HS256");
        }
        for (key, value) in [
            (
                "auth_access_token_ttl_secs",
                self.auth_access_token_ttl_secs,
            ),
            (
                "auth_refresh_token_ttl_secs",
                self.auth_refresh_token_ttl_secs,
            ),
            ("auth_session_ttl_secs", self.auth_session_ttl_secs),
            ("auth_login_lockout_secs", self.auth_login_lockout_secs),
        ] {
            if value == 0 {
                return bad(key, "must be greater than 0");
            }
        }
        if self.auth_login_max_failures == 0 {
            return bad("auth_login_max_failures", "must be greater than 0");
        }
        if self.auth_login_attempts_per_minute == 0 {
            return bad("auth_login_attempts_per_minute", "must be greater than 0");
        }
        if self.auth_issuer.is_empty() || self.auth_audience.is_empty() {
            return bad(
                "auth_issuer",
                "auth_issuer and auth_audience must not be empty",
            );
        }
        if let Some(oidc) = &self.oidc {
            if oidc.issuer.is_empty() {
                return bad("oidc.issuer", "must not be empty");
            }
            if oidc.issuer == self.auth_issuer {
                return bad("oidc.issuer", "must differ from auth_issuer");
            }
            // The key fetch's client is made here too, so that a bad URL, a CA
            // file that cannot be read, or an https:// URL on a system with no
            // CA roots stops start-up, named, rather than failing every token.
            if let Err(why) = cairn_auth::oidc::http_client(oidc) {
                return Err(SettingsError::Invalid(why));
            }
            if oidc.audience.is_empty() {
                return bad("oidc.audience", "must not be empty");
            }
        }
        if self.data_dir.as_os_str().is_empty() {
            return bad("data_dir", "must not be empty");
        }
        if let Some(url) = &self.database_url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return bad("database_url", "must be a postgres:// or postgresql:// URL");
        }
        cairn_delivery::config::check_unique(&self.sinks)
            .map_err(|e| SettingsError::Invalid(format!("sinks: {e}")))?;
        for sink in &self.sinks {
            sink.build()
                .map_err(|e| SettingsError::Invalid(format!("sinks: {e}")))?;
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return bad(
                "log_level",
                "is not a valid log filter (e.g. info, cairn=debug)",
            );
        }
        self.validate_idempotency()?;
        self.validate_rate_limit()?;
        self.validate_edge()?;
        self.validate_observability()?;
        Ok(())
    }

    /// Issue 6: Idempotency-Key.
    fn validate_idempotency(&self) -> Result<(), SettingsError> {
        const MAX_TTL_SECS: u64 = 30 * 24 * 3600;
        const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
        let bad = |key: &str, why: String| Err(SettingsError::Invalid(format!("{key}: {why}")));
        if !(1..=MAX_TTL_SECS).contains(&self.idempotency_ttl_secs) {
            return bad(
                "idempotency_ttl_secs",
                format!("must be from 1 to {MAX_TTL_SECS} (30 days)"),
            );
        }
        if !(1..=MAX_RESPONSE_BYTES).contains(&self.idempotency_max_response_bytes) {
            return bad(
                "idempotency_max_response_bytes",
                format!("must be from 1 to {MAX_RESPONSE_BYTES} (64 MiB)"),
            );
        }
        Ok(())
    }

    fn validate_rate_limit(&self) -> Result<(), SettingsError> {
        let bad = |key: &str, why: &str| Err(SettingsError::Invalid(format!("{key}: {why}")));
        for (key, limit) in [
            ("rate_limit_principal_auth", self.rate_limit_principal_auth),
            (
                "rate_limit_principal_write",
                self.rate_limit_principal_write,
            ),
            ("rate_limit_principal_read", self.rate_limit_principal_read),
            (
                "rate_limit_principal_graphql",
                self.rate_limit_principal_graphql,
            ),
            ("rate_limit_address_auth", self.rate_limit_address_auth),
            ("rate_limit_address_write", self.rate_limit_address_write),
            ("rate_limit_address_read", self.rate_limit_address_read),
            (
                "rate_limit_address_graphql",
                self.rate_limit_address_graphql,
            ),
        ] {
            if let Some(why) = limit.problem() {
                return bad(key, &why);
            }
        }
        for (role, limits) in &self.rate_limit_roles {
            if let Some(why) = cairn_api::edge::ratelimit::role_name_problem(role) {
                return bad(&format!("rate_limit_roles.{role}"), &why);
            }
            for (class, limit) in limits.iter() {
                if let Some(why) = limit.problem() {
                    return bad(&format!("rate_limit_roles.{role}.{class}"), &why);
                }
            }
        }
        if self.rate_limit_redis_url.is_none() {
            let tls = [
                ("rate_limit_redis_ca_file", &self.rate_limit_redis_ca_file),
                (
                    "rate_limit_redis_client_cert_file",
                    &self.rate_limit_redis_client_cert_file,
                ),
                (
                    "rate_limit_redis_client_key_file",
                    &self.rate_limit_redis_client_key_file,
                ),
            ];
            if let Some((key, _)) = tls.iter().find(|(_, v)| v.is_some()) {
                return bad(key, "is set but rate_limit_redis_url is not");
            }
        }
        if let Some(why) = cairn_api::edge::ratelimit::redis_problem(&self.rate_limit_config()) {
            return Err(SettingsError::Invalid(why));
        }
        if self.rate_limit_redis_prefix.is_empty() {
            return bad("rate_limit_redis_prefix", "must not be empty");
        }
        if !(1..=10_000).contains(&self.rate_limit_redis_timeout_ms) {
            return bad("rate_limit_redis_timeout_ms", "must be from 1 to 10000");
        }
        if self.rate_limit_max_keys < 1000 {
            return bad("rate_limit_max_keys", "must be at least 1000");
        }
        Ok(())
    }

    /// The `Idempotency-Key` settings of the API layer.
    pub fn idempotency_config(&self) -> cairn_api::edge::idempotency::IdempotencyConfig {
        cairn_api::edge::idempotency::IdempotencyConfig {
            enabled: self.idempotency_enabled,
            ttl: std::time::Duration::from_secs(self.idempotency_ttl_secs),
            max_response_bytes: self.idempotency_max_response_bytes,
        }
    }
}

impl Settings {
    /// The client certificate presented to the OTLP collector, if set
    /// (errors begin with the setting's name without `otlp_`).
    pub fn otlp_identity(&self) -> Result<Option<cairn_http::Identity<'_>>, String> {
        cairn_http::Identity::from_files(
            self.otlp_client_cert_file.as_deref(),
            self.otlp_client_key_file.as_deref(),
        )
    }

    fn validate_observability(&self) -> Result<(), SettingsError> {
        let bad = |key: &str, why: &str| Err(SettingsError::Invalid(format!("{key}: {why}")));
        if let Some(url) = &self.otlp_endpoint {
            let uri = match cairn_http::parse_url(url) {
                Ok(uri) => uri,
                Err(why) => {
                    return bad(
                        "otlp_endpoint",
                        &format!("{why}, e.g. http://127.0.0.1:4318"),
                    );
                }
            };
            // The TLS of either protocol's exporter is checked by making
            // the http/protobuf client, so that a CA or client certificate
            // file that cannot be read, or an https:// collector on a system
            // with no CA roots, stops start-up named.
            let ca = self.otlp_ca_file.as_deref();
            let made = self.otlp_identity().and_then(|identity| {
                cairn_http::HttpClient::with_identity(
                    cairn_http::Trust::for_url(&uri, ca),
                    identity,
                )
            });
            if let Err(e) = made {
                let why = if cairn_http::names_a_file(&e) {
                    format!("otlp_{e}")
                } else {
                    format!("otlp_endpoint: {e}")
                };
                return Err(SettingsError::Invalid(why));
            }
        }
        if self.otlp_service_name.trim().is_empty() {
            return bad("otlp_service_name", "must not be empty");
        }
        if !(0.0..=1.0).contains(&self.otlp_sampling_ratio) {
            return bad("otlp_sampling_ratio", "must be from 0.0 to 1.0");
        }
        if !(1..=1_000_000).contains(&self.otlp_queue_size) {
            return bad("otlp_queue_size", "must be from 1 to 1000000");
        }
        if !(1..=600_000).contains(&self.otlp_timeout_ms) {
            return bad("otlp_timeout_ms", "must be from 1 to 600000");
        }
        if self.metrics_receiver_types_max > 10_000 {
            return bad("metrics_receiver_types_max", "must be at most 10000");
        }
        if self.log_scrub_fields.iter().any(|f| f.trim().is_empty()) {
            return bad("log_scrub_fields", "must not contain empty names");
        }
        Ok(())
    }

    /// The observability settings of the API layer.
    pub fn observability_config(&self) -> cairn_api::edge::trace::ObservabilityConfig {
        cairn_api::edge::trace::ObservabilityConfig {
            trace_context: self.trace_context,
            metrics: self.metrics,
            receiver_types_max: self.metrics_receiver_types_max,
            scrub: std::sync::Arc::new(cairn_api::edge::scrub::Scrubber::new(
                self.log_scrub_fields.iter().cloned(),
            )),
            export_ratio: self
                .otlp_endpoint
                .as_ref()
                .map(|_| self.otlp_sampling_ratio),
        }
    }

    /// Issue 6: the HTTP edge settings. `Application::build` runs this too,
    /// for settings made in code rather than loaded.
    pub fn validate_edge(&self) -> Result<(), SettingsError> {
        let bad = |key: &str, why: &str| Err(SettingsError::Invalid(format!("{key}: {why}")));
        for origin in &self.cors_allowed_origins {
            if let Err(why) = cairn_api::edge::cors::check_origin(origin) {
                return bad("cors_allowed_origins", &why);
            }
        }
        if self.cors_max_age_secs > 86_400 {
            return bad("cors_max_age_secs", "must be at most 86400 (one day)");
        }
        if self.max_concurrent_requests > 1_000_000 {
            return bad(
                "max_concurrent_requests",
                "must be at most 1000000 (0: no limit)",
            );
        }
        if self.shed_queue_timeout_ms > 10_000 {
            return bad("shed_queue_timeout_ms", "must be at most 10000");
        }
        if self.request_timeout_ms > 3_600_000 {
            return bad(
                "request_timeout_ms",
                "must be at most 3600000 (0: no timeout)",
            );
        }
        if !(100..=600_000).contains(&self.header_read_timeout_ms) {
            return bad("header_read_timeout_ms", "must be from 100 to 600000");
        }
        match (&self.tls_cert_file, &self.tls_key_file) {
            (None, None) => {}
            (Some(_), None) => return bad("tls_key_file", "must be set with tls_cert_file"),
            (None, Some(_)) => return bad("tls_cert_file", "must be set with tls_key_file"),
            (Some(cert), Some(key)) => {
                crate::tls::server_config(cert, key).map_err(SettingsError::Invalid)?;
            }
        }
        if self.fault_injection_enabled && self.production() {
            return bad(
                "fault_injection_enabled",
                "fault injection is refused in production mode (mode = production)",
            );
        }
        for (i, rule) in self.fault_injection.iter().enumerate() {
            if let Err(why) = rule.rule() {
                return bad(&format!("fault_injection[{i}]"), &why);
            }
        }
        for (i, proxy) in self.trusted_proxies.iter().enumerate() {
            if let Err(why) = cairn_api::edge::client::parse_proxy(proxy) {
                return bad(&format!("trusted_proxies[{i}]"), &why);
            }
        }
        Ok(())
    }

    /// Issue 6: the HTTP edge settings of the API layer.
    pub fn edge_config(&self) -> cairn_api::edge::config::EdgeConfig {
        use std::time::Duration;
        let faults = if self.fault_injection_enabled && !self.production() {
            self.fault_injection
                .iter()
                .filter_map(|r| r.rule().ok())
                .collect()
        } else {
            Vec::new()
        };
        cairn_api::edge::config::EdgeConfig {
            security_headers: self.security_headers,
            tls: self.tls_cert_file.is_some() && self.tls_key_file.is_some(),
            cors_allowed_origins: self.cors_allowed_origins.clone(),
            cors_max_age: Duration::from_secs(self.cors_max_age_secs),
            max_concurrent_requests: self.max_concurrent_requests,
            shed_queue_timeout: Duration::from_millis(self.shed_queue_timeout_ms),
            request_timeout: (self.request_timeout_ms > 0)
                .then(|| Duration::from_millis(self.request_timeout_ms)),
            compression: self.compression,
            compression_min_bytes: self.compression_min_bytes,
            compression_level: self.compression_level,
            etag: self.etag,
            faults,
            trusted_proxies: self
                .trusted_proxies
                .iter()
                .filter_map(|p| cairn_api::edge::client::parse_proxy(p).ok())
                .collect(),
            forwarded_header: self.forwarded_header,
        }
    }
}

// Issue 6: HTTP edge
/// One `[[fault_injection]]` rule as configured (docs/edge.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRuleSetting {
    /// A route template exactly as routed (`/api/v1/events/{id}`)...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// ...or a path prefix (`/api/v1/`); exactly one of the two.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Methods it applies to; empty: all.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Chance per matching request, from 0 to 1.
    pub probability: f64,
    /// `latency`, `error` or `drop`.
    pub kind: String,
    /// `latency`: milliseconds added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// `error`: the status answered (400 to 599).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

impl FaultRuleSetting {
    /// The rule the API layer applies, or why it is wrong.
    pub fn rule(&self) -> Result<cairn_api::edge::config::FaultRule, String> {
        use cairn_api::edge::config::{Fault, FaultRule, FaultTarget};
        let target = match (&self.route, &self.path_prefix) {
            (Some(r), None) if r.starts_with('/') => FaultTarget::Route(r.clone()),
            (None, Some(p)) if p.starts_with('/') => FaultTarget::PathPrefix(p.clone()),
            (Some(_), None) | (None, Some(_)) => {
                return Err("route and path_prefix must start with /".into());
            }
            _ => return Err("give exactly one of route and path_prefix".into()),
        };
        if !(0.0..=1.0).contains(&self.probability) {
            return Err("probability must be from 0 to 1".into());
        }
        let mut methods = Vec::with_capacity(self.methods.len());
        for m in &self.methods {
            let upper = m.to_ascii_uppercase();
            if !["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
                .contains(&upper.as_str())
            {
                return Err(format!("methods: unknown method {m:?}"));
            }
            methods.push(upper);
        }
        let fault = match (self.kind.as_str(), self.latency_ms, self.status) {
            ("latency", Some(ms), None) if ms > 0 && ms <= 600_000 => {
                Fault::Latency(std::time::Duration::from_millis(ms))
            }
            ("latency", _, None) => {
                return Err("latency needs latency_ms from 1 to 600000".into());
            }
            ("error", None, Some(status)) if (400..=599).contains(&status) => Fault::Error(status),
            ("error", None, _) => return Err("error needs status from 400 to 599".into()),
            ("drop", None, None) => Fault::Drop,
            ("latency" | "error" | "drop", _, _) => {
                return Err(format!(
                    "kind {} takes {}",
                    self.kind,
                    match self.kind.as_str() {
                        "latency" => "latency_ms only",
                        "error" => "status only",
                        _ => "neither latency_ms nor status",
                    }
                ));
            }
            _ => {
                return Err(format!(
                    "kind must be latency, error or drop, not {:?}",
                    self.kind
                ));
            }
        };
        Ok(FaultRule {
            target,
            methods,
            probability: self.probability,
            fault,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::result_large_err)]
    #[test]
    fn observability_settings_are_read_and_bad_values_named() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("CAIRN_OTLP_ENDPOINT", "http://127.0.0.1:4317");
            jail.set_env("CAIRN_OTLP_PROTOCOL", "grpc");
            jail.set_env("CAIRN_OTLP_SAMPLING_RATIO", "0.25");
            jail.set_env("CAIRN_LOG_SCRUB_FIELDS", r#"["ssn","pin"]"#);
            jail.set_env("CAIRN_TRACE_SPANS", "false");
            let s = Settings::load(None, Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(s.otlp_protocol, OtlpProtocol::Grpc);
            assert_eq!(s.otlp_sampling_ratio, 0.25);
            assert_eq!(s.log_scrub_fields, vec!["ssn".to_owned(), "pin".to_owned()]);
            assert!(!s.trace_spans);
            for (key, value, named) in [
                ("CAIRN_OTLP_ENDPOINT", "ftp://x", "otlp_endpoint"),
                ("CAIRN_OTLP_PROTOCOL", "http/json", "otlp_protocol"),
                ("CAIRN_OTLP_SAMPLING_RATIO", "1.5", "otlp_sampling_ratio"),
                ("CAIRN_OTLP_QUEUE_SIZE", "0", "otlp_queue_size"),
                ("CAIRN_OTLP_SERVICE_NAME", " ", "otlp_service_name"),
                ("CAIRN_LOG_SCRUB_FIELDS", r#"["ok",""]"#, "log_scrub_fields"),
                (
                    "CAIRN_METRICS_RECEIVER_TYPES_MAX",
                    "100000",
                    "metrics_receiver_types_max",
                ),
            ] {
                jail.clear_env();
                jail.set_env(key, value);
                let err = Settings::load(None, Overrides::default()).unwrap_err();
                assert!(err.to_string().contains(named), "{key}={value}: {err}");
            }
            // An https:// collector over either protocol, trusting a CA file.
            for protocol in ["http/protobuf", "grpc"] {
                jail.clear_env();
                jail.set_env("CAIRN_OTLP_ENDPOINT", "https://collector.example:4318");
                jail.set_env("CAIRN_OTLP_PROTOCOL", protocol);
                let ca = cairn_testkit::tls::ca_file();
                jail.set_env("CAIRN_OTLP_CA_FILE", ca.display());
                let s = Settings::load(None, Overrides::default()).map_err(|e| e.to_string())?;
                assert_eq!(s.otlp_ca_file.as_deref(), Some(ca.as_path()));
                jail.set_env("CAIRN_OTLP_CA_FILE", "no-such.pem");
                let err = Settings::load(None, Overrides::default()).unwrap_err();
                assert!(
                    err.to_string().contains("otlp_ca_file no-such.pem"),
                    "{protocol}: {err}"
                );
                // A client certificate: both files, each readable.
                jail.set_env("CAIRN_OTLP_CA_FILE", ca.display());
                let (cert, key) = cairn_testkit::tls::client_identity();
                jail.set_env("CAIRN_OTLP_CLIENT_CERT_FILE", cert.display());
                let err = Settings::load(None, Overrides::default()).unwrap_err();
                assert!(
                    err.to_string().contains("otlp_client_key_file: not set"),
                    "{protocol}: {err}"
                );
                jail.set_env("CAIRN_OTLP_CLIENT_KEY_FILE", key.display());
                Settings::load(None, Overrides::default()).map_err(|e| e.to_string())?;
                jail.set_env("CAIRN_OTLP_CLIENT_KEY_FILE", "no-such.key");
                let err = Settings::load(None, Overrides::default()).unwrap_err();
                assert!(
                    err.to_string().contains("otlp_client_key_file no-such.key"),
                    "{protocol}: {err}"
                );
            }
            Ok(())
        });
    }

    #[allow(clippy::result_large_err)]
    #[test]
    fn sinks_come_from_the_file_or_the_environment() {
        use cairn_delivery::config::SinkKind;
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "cairn.toml",
                "[[sinks]]\nname = \"hook\"\nkind = \"webhook\"\nrequired = true\n\
                 url = \"http://127.0.0.1:9/x\"\nsecret = \"s\"\n\
                 retry = { max_attempts = 3 }\n",
            )?;
            let s = Settings::load(Some(Path::new("cairn.toml")), Overrides::default())
                .map_err(|e| e.to_string())?;
            assert_eq!(s.sinks.len(), 1);
            assert!(s.sinks[0].required);
            assert_eq!(s.sinks[0].retry.max_attempts, 3);
            assert_eq!(s.sinks[0].retry.base_ms, 100, "defaults fill the rest");
            assert!(matches!(s.sinks[0].kind, SinkKind::Webhook(_)));
            jail.set_env(
                "CAIRN_SINKS",
                r#"[{name="live",kind="memory"},{name="h2",kind="webhook",url="http://127.0.0.1:9/",secret="t"}]"#,
            );
            let s = Settings::load(None, Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(s.sinks.len(), 2);
            assert!(matches!(s.sinks[0].kind, SinkKind::Memory(_)));
            jail.set_env(
                "CAIRN_SINKS",
                r#"[{name="a",kind="memory"},{name="a",kind="memory"}]"#,
            );
            let err = Settings::load(None, Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("configured twice"), "{err}");
            jail.set_env(
                "CAIRN_SINKS",
                r#"[{name="a",kind="webhook",url="ftp://x/",secret="t"}]"#,
            );
            let err = Settings::load(None, Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("http:// or https://"), "{err}");
            jail.set_env(
                "CAIRN_SINKS",
                r#"[{name="a",kind="webhook",url="https://x/",secret="t",ca_file="no-such.pem"}]"#,
            );
            let err = Settings::load(None, Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("ca_file no-such.pem"), "{err}");
            Ok(())
        });
    }

    #[allow(clippy::result_large_err)]
    #[test]
    fn kafka_sinks_are_configured_and_bad_fields_named() {
        use cairn_delivery::config::SinkKind;
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "cairn.toml",
                "[[sinks]]\nname = \"k\"\nkind = \"kafka\"\nbrokers = \"127.0.0.1:19092\"\n",
            )?;
            let s = Settings::load(Some(Path::new("cairn.toml")), Overrides::default())
                .map_err(|e| e.to_string())?;
            let SinkKind::Kafka(k) = &s.sinks[0].kind else {
                panic!("a kafka sink: {:?}", s.sinks[0].kind);
            };
            assert_eq!(k.brokers, "127.0.0.1:19092");
            assert_eq!(
                (k.topic.as_str(), k.timeout_ms),
                ("cairn", 5_000),
                "defaults"
            );
            for (sinks, named) in [
                (
                    r#"[{name="k",kind="kafka",brokers="kafka://h:9092"}]"#,
                    "kafka brokers",
                ),
                (r#"[{name="k",kind="kafka",brokers="h"}]"#, "kafka brokers"),
                (
                    r#"[{name="k",kind="kafka",brokers="h:1",topic="a/b"}]"#,
                    "kafka topic",
                ),
                (
                    r#"[{name="k",kind="kafka",brokers="h:1",timeout_ms=0}]"#,
                    "kafka timeout_ms",
                ),
                (
                    r#"[{name="k",kind="kafka",brokers="h:1",broker="h:2"}]"#,
                    "broker",
                ),
                (r#"[{name="k",kind="kafka"}]"#, "brokers"),
            ] {
                jail.set_env("CAIRN_SINKS", sinks);
                let err = Settings::load(None, Overrides::default()).unwrap_err();
                assert!(err.to_string().contains(named), "{sinks}: {err}");
            }
            Ok(())
        });
    }

    // figment::Jail's closure signature returns figment's (large) error type.
    #[allow(clippy::result_large_err)]
    #[test]
    fn layers_apply_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "cairn.toml",
                "listen = \"127.0.0.1:9000\"\nmax_body_bytes = 10\n",
            )?;
            jail.set_env("CAIRN_MAX_BODY_BYTES", "20");
            let s = Settings::load(Some(Path::new("cairn.toml")), Overrides::default())
                .map_err(|e| e.to_string())?;
            assert_eq!(s.listen.port(), 9000);
            assert_eq!(s.max_body_bytes, 20);
            let s = Settings::load(
                Some(Path::new("cairn.toml")),
                Overrides {
                    listen: Some("127.0.0.1:9001".into()),
                    ..Overrides::default()
                },
            )
            .map_err(|e| e.to_string())?;
            assert_eq!(s.listen.port(), 9001);
            assert_eq!(s.database_url, None);
            jail.set_env("CAIRN_DATABASE_URL", "postgres://env/cairn");
            let s = Settings::load(Some(Path::new("cairn.toml")), Overrides::default())
                .map_err(|e| e.to_string())?;
            assert_eq!(s.database_url.as_deref(), Some("postgres://env/cairn"));
            let s = Settings::load(
                Some(Path::new("cairn.toml")),
                Overrides {
                    database_url: Some("postgres://flag/cairn".into()),
                    ..Overrides::default()
                },
            )
            .map_err(|e| e.to_string())?;
            assert_eq!(s.database_url.as_deref(), Some("postgres://flag/cairn"));
            // The GraphQL limits go through the same layers.
            let s = Settings::load(None, Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(
                (
                    s.graphql_max_depth,
                    s.graphql_max_complexity,
                    s.graphql_max_list
                ),
                (15, 25_000, 1000),
                "safe defaults"
            );
            jail.create_file(
                "limits.toml",
                "graphql_max_depth = 9\ngraphql_max_list = 50\n",
            )?;
            let s = Settings::load(Some(Path::new("limits.toml")), Overrides::default())
                .map_err(|e| e.to_string())?;
            assert_eq!((s.graphql_max_depth, s.graphql_max_list), (9, 50));
            jail.set_env("CAIRN_GRAPHQL_MAX_DEPTH", "8");
            let s = Settings::load(Some(Path::new("limits.toml")), Overrides::default())
                .map_err(|e| e.to_string())?;
            assert_eq!(s.graphql_max_depth, 8);
            let s = Settings::load(
                Some(Path::new("limits.toml")),
                Overrides {
                    graphql_max_depth: Some(7),
                    graphql_max_query_bytes: Some(2048),
                    ..Overrides::default()
                },
            )
            .map_err(|e| e.to_string())?;
            assert_eq!((s.graphql_max_depth, s.graphql_max_query_bytes), (7, 2048));
            Ok(())
        });
    }

    #[allow(clippy::result_large_err)]
    #[test]
    fn the_log_format_follows_the_mode_unless_set() {
        figment::Jail::expect_with(|_jail| {
            let s = Settings::load(None, Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(
                (s.mode, s.production(), s.log_format()),
                (Mode::Development, false, LogFormat::Text)
            );
            let prod = Overrides {
                mode: Some("production".into()),
                ..Overrides::default()
            };
            let s = Settings::load(None, prod.clone()).map_err(|e| e.to_string())?;
            assert_eq!((s.production(), s.log_format()), (true, LogFormat::Json));
            let s = Settings::load(
                None,
                Overrides {
                    log_format: Some("text".into()),
                    ..prod
                },
            )
            .map_err(|e| e.to_string())?;
            assert_eq!(s.log_format(), LogFormat::Text, "an explicit format wins");
            let err = Settings::load(
                None,
                Overrides {
                    mode: Some("staging".into()),
                    ..Overrides::default()
                },
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains("mode"), "{err}");
            Ok(())
        });
    }

    #[allow(clippy::result_large_err)]
    #[test]
    fn an_oidc_issuer_is_read_and_its_jwks_url_checked() {
        figment::Jail::expect_with(|jail| {
            let oidc = |url: &str| {
                format!(r#"{{issuer="https://idp.example",jwks_url="{url}",audience="cairn"}}"#)
            };
            jail.set_env("CAIRN_OIDC", oidc("http://idp.internal/jwks"));
            let s = Settings::load(None, Overrides::default()).map_err(|e| e.to_string())?;
            let read = s.oidc.as_ref().map(|o| o.jwks_url.as_str());
            assert_eq!(read, Some("http://idp.internal/jwks"));
            let ca = cairn_testkit::tls::ca_file();
            jail.set_env(
                "CAIRN_OIDC",
                format!(
                    r#"{{issuer="https://idp.example",jwks_url="https://idp.example/jwks",audience="cairn",ca_file="{}"}}"#,
                    ca.display()
                ),
            );
            let s = Settings::load(None, Overrides::default()).map_err(|e| e.to_string())?;
            let read = s.oidc.as_ref().and_then(|o| o.ca_file.as_deref());
            assert_eq!(read, Some(ca.as_path()));
            jail.set_env("CAIRN_OIDC", oidc("idp.example/jwks"));
            let err = Settings::load(None, Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("oidc.jwks_url") && err.contains("must be an http:// or https://"),
                "{err}"
            );
            jail.set_env(
                "CAIRN_OIDC",
                r#"{issuer="https://idp.example",jwks_url="https://idp.example/jwks",audience="cairn",ca_file="no-such.pem"}"#,
            );
            let err = Settings::load(None, Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("oidc.ca_file no-such.pem"), "{err}");
            Ok(())
        });
    }

    #[allow(clippy::result_large_err)]
    #[test]
    fn bad_values_name_the_setting() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("CAIRN_LISTEN", "not-an-address");
            let err = Settings::load(None, Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("listen"), "{err}");
            jail.set_env("CAIRN_LISTEN", "127.0.0.1:1");
            jail.create_file("bad.toml", "lisen = \"x\"\n")?;
            let err = Settings::load(Some(Path::new("bad.toml")), Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("lisen"), "{err}");
            jail.set_env("CAIRN_MAX_BODY_BYTES", "0");
            let err = Settings::load(None, Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("max_body_bytes"), "{err}");
            jail.set_env("CAIRN_MAX_BODY_BYTES", "10");
            jail.set_env("CAIRN_DATABASE_URL", "mysql://db/cairn");
            let err = Settings::load(None, Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("database_url"), "{err}");
            jail.set_env("CAIRN_DATABASE_URL", "postgres://db/cairn");
            jail.set_env("CAIRN_GRAPHQL_MAX_DEPTH", "0");
            let err = Settings::load(None, Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("graphql_max_depth"), "{err}");
            jail.set_env("CAIRN_GRAPHQL_MAX_DEPTH", "7");
            jail.set_env("CAIRN_GRAPHQL_MAX_LIST", "0");
            let err = Settings::load(None, Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("graphql_max_list"), "{err}");
            Ok(())
        });
    }

    #[allow(clippy::result_large_err)]
    #[test]
    fn idempotency_settings_load_and_bad_values_name_the_setting() {
        figment::Jail::expect_with(|jail| {
            let s = Settings::load(None, Overrides::default()).map_err(|e| e.to_string())?;
            assert!(s.idempotency_enabled);
            assert_eq!(s.idempotency_ttl_secs, 24 * 3600);
            assert_eq!(s.idempotency_max_response_bytes, 1024 * 1024);
            jail.create_file(
                "idem.toml",
                "idempotency_enabled = false\nidempotency_ttl_secs = 60\n",
            )?;
            let s = Settings::load(Some(Path::new("idem.toml")), Overrides::default())
                .map_err(|e| e.to_string())?;
            assert!(!s.idempotency_enabled);
            assert_eq!(s.idempotency_config().ttl.as_secs(), 60);
            jail.set_env("CAIRN_IDEMPOTENCY_MAX_RESPONSE_BYTES", "4096");
            let s = Settings::load(None, Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(s.idempotency_config().max_response_bytes, 4096);
            for (key, value) in [
                ("CAIRN_IDEMPOTENCY_TTL_SECS", "0"),
                ("CAIRN_IDEMPOTENCY_TTL_SECS", "2592001"),
                ("CAIRN_IDEMPOTENCY_MAX_RESPONSE_BYTES", "0"),
                ("CAIRN_IDEMPOTENCY_ENABLED", "maybe"),
            ] {
                jail.set_env(key, value);
                let err = Settings::load(None, Overrides::default())
                    .unwrap_err()
                    .to_string();
                let name = key.trim_start_matches("CAIRN_").to_ascii_lowercase();
                assert!(err.contains(&name), "{key}={value}: {err}");
                jail.set_env(
                    key,
                    match key {
                        "CAIRN_IDEMPOTENCY_ENABLED" => "true",
                        "CAIRN_IDEMPOTENCY_TTL_SECS" => "60",
                        _ => "4096",
                    },
                );
            }
            Ok(())
        });
    }

    #[allow(clippy::result_large_err)]
    #[test]
    fn rate_limits_come_from_every_layer_and_bad_ones_are_named() {
        use cairn_api::edge::ratelimit::{FailureMode, Limit};
        figment::Jail::expect_with(|jail| {
            let s = Settings::load(None, Overrides::default()).map_err(|e| e.to_string())?;
            assert!(s.rate_limit_enabled, "on by default");
            assert_eq!(s.rate_limit_redis_failure, FailureMode::Open);
            assert_eq!(s.rate_limit_principal_write, Limit::new(50_000, 100_000));
            jail.create_file(
                "cairn.toml",
                "rate_limit_principal_write = { rate = 5, burst = 10 }\n\
                 rate_limit_address_auth = { rate = 30, burst = 30, period_secs = 60 }\n\
                 rate_limit_redis_url = \"redis://127.0.0.1:6379\"\n\
                 rate_limit_redis_failure = \"closed\"\n\
                 [rate_limit_roles.producer]\nwrite = { rate = 500, burst = 1000 }\n",
            )?;
            let s = Settings::load(Some(Path::new("cairn.toml")), Overrides::default())
                .map_err(|e| e.to_string())?;
            assert_eq!(s.rate_limit_principal_write, Limit::new(5, 10));
            assert_eq!(s.rate_limit_address_auth.period_secs, 60);
            assert_eq!(s.rate_limit_redis_failure, FailureMode::Closed);
            assert_eq!(
                s.rate_limit_roles["producer"].write,
                Some(Limit::new(500, 1000))
            );
            let config = s.rate_limit_config();
            assert_eq!(config.redis_url.as_deref(), Some("redis://127.0.0.1:6379"));
            // The environment wins over the file; a partial table keeps
            // the rest from below.
            jail.set_env("CAIRN_RATE_LIMIT_PRINCIPAL_WRITE", "{rate=7}");
            jail.set_env("CAIRN_RATE_LIMIT_ROLES", "{reader={read={rate=2,burst=3}}}");
            let s = Settings::load(Some(Path::new("cairn.toml")), Overrides::default())
                .map_err(|e| e.to_string())?;
            assert_eq!(s.rate_limit_principal_write, Limit::new(7, 10));
            assert_eq!(s.rate_limit_roles["reader"].read, Some(Limit::new(2, 3)));
            jail.set_env("CAIRN_RATE_LIMIT_PRINCIPAL_WRITE", "{rate=5}");
            jail.set_env("CAIRN_RATE_LIMIT_ROLES", "{}");
            for (key, value, named) in [
                ("CAIRN_RATE_LIMIT_ENABLED", "maybe", "rate_limit_enabled"),
                (
                    "CAIRN_RATE_LIMIT_ADDRESS_READ",
                    "{rate=0,burst=1}",
                    "rate_limit_address_read: rate",
                ),
                (
                    "CAIRN_RATE_LIMIT_ADDRESS_READ",
                    "{rate=1,burst=0}",
                    "rate_limit_address_read: burst",
                ),
                (
                    "CAIRN_RATE_LIMIT_ADDRESS_READ",
                    "{rate=1,burst=1,per=2}",
                    "per",
                ),
                (
                    "CAIRN_RATE_LIMIT_ROLES",
                    "{Bad={read={rate=1,burst=1}}}",
                    "rate_limit_roles.Bad",
                ),
                (
                    "CAIRN_RATE_LIMIT_ROLES",
                    "{reader={list={rate=1,burst=1}}}",
                    "list",
                ),
                (
                    "CAIRN_RATE_LIMIT_ROLES",
                    "{reader={read={rate=1,burst=0}}}",
                    "rate_limit_roles.reader.read",
                ),
                (
                    "CAIRN_RATE_LIMIT_REDIS_URL",
                    "http://127.0.0.1:6379",
                    "rate_limit_redis_url",
                ),
                (
                    "CAIRN_RATE_LIMIT_REDIS_CA_FILE",
                    "ca.pem",
                    "rate_limit_redis_ca_file ca.pem needs a rediss:// URL",
                ),
                (
                    "CAIRN_RATE_LIMIT_REDIS_FAILURE",
                    "sometimes",
                    "rate_limit_redis_failure",
                ),
                (
                    "CAIRN_RATE_LIMIT_REDIS_TIMEOUT_MS",
                    "0",
                    "rate_limit_redis_timeout_ms",
                ),
                (
                    "CAIRN_RATE_LIMIT_REDIS_PREFIX",
                    "",
                    "rate_limit_redis_prefix",
                ),
                ("CAIRN_RATE_LIMIT_MAX_KEYS", "10", "rate_limit_max_keys"),
                ("CAIRN_COMPRESSION_LEVEL", "0", "compression_level"),
                ("CAIRN_COMPRESSION_LEVEL", "10", "compression_level"),
            ] {
                jail.set_env(key, value);
                let err = Settings::load(Some(Path::new("cairn.toml")), Overrides::default())
                    .unwrap_err()
                    .to_string();
                assert!(err.contains(named), "{key}={value}: {err}");
                jail.clear_env();
            }
            // TLS to Redis: rediss://, trusting a CA file or the system's roots.
            let ca = cairn_testkit::tls::ca_file();
            jail.set_env("CAIRN_RATE_LIMIT_REDIS_URL", "rediss://localhost:6380");
            jail.set_env("CAIRN_RATE_LIMIT_REDIS_CA_FILE", ca.display());
            let s = Settings::load(None, Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(
                s.rate_limit_config().redis_ca_file.as_deref(),
                Some(ca.as_path())
            );
            jail.set_env("CAIRN_RATE_LIMIT_REDIS_CA_FILE", "no-such.pem");
            let err = Settings::load(None, Overrides::default()).unwrap_err();
            assert!(
                err.to_string()
                    .contains("rate_limit_redis_ca_file no-such.pem"),
                "{err}"
            );
            let (cert, key) = cairn_testkit::tls::client_identity();
            jail.set_env("CAIRN_RATE_LIMIT_REDIS_CA_FILE", ca.display());
            jail.set_env("CAIRN_RATE_LIMIT_REDIS_CLIENT_KEY_FILE", key.display());
            let err = Settings::load(None, Overrides::default()).unwrap_err();
            assert!(
                err.to_string()
                    .contains("rate_limit_redis_client_cert_file: not set"),
                "{err}"
            );
            jail.set_env("CAIRN_RATE_LIMIT_REDIS_CLIENT_CERT_FILE", cert.display());
            let s = Settings::load(None, Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(
                s.rate_limit_config().redis_client_cert_file.as_deref(),
                Some(cert.as_path())
            );
            jail.clear_env();
            jail.set_env("CAIRN_RATE_LIMIT_REDIS_CA_FILE", ca.display());
            let err = Settings::load(None, Overrides::default()).unwrap_err();
            assert!(
                err.to_string()
                    .contains("rate_limit_redis_ca_file: is set but rate_limit_redis_url is not"),
                "{err}"
            );
            Ok(())
        });
    }

    // Issue 6: HTTP edge
    #[allow(clippy::result_large_err)]
    #[test]
    fn edge_settings_load_and_bad_values_name_the_setting() {
        figment::Jail::expect_with(|jail| {
            let s = Settings::load(None, Overrides::default()).map_err(|e| e.to_string())?;
            let edge = s.edge_config();
            assert!(edge.security_headers && edge.compression && edge.etag);
            assert!(
                edge.cors_allowed_origins.is_empty(),
                "CORS closed by default"
            );
            assert_eq!(edge.max_concurrent_requests, 512);
            assert!(edge.faults.is_empty(), "no fault injection by default");
            assert!(!edge.tls);
            assert!(
                edge.trusted_proxies.is_empty(),
                "no proxy trusted by default"
            );
            jail.set_env("CAIRN_TRUSTED_PROXIES", "[\"10.0.0.0/8\", \"::1\"]");
            let s = Settings::load(None, Overrides::default()).map_err(|e| e.to_string())?;
            let proxies: Vec<String> = s
                .edge_config()
                .trusted_proxies
                .iter()
                .map(ToString::to_string)
                .collect();
            assert_eq!(proxies, ["10.0.0.0/8", "::1/128"]);
            assert_eq!(
                s.edge_config().forwarded_header,
                cairn_api::edge::client::ForwardedHeader::XForwardedFor,
                "X-Forwarded-For by default"
            );
            jail.set_env("CAIRN_FORWARDED_HEADER", "forwarded");
            let s = Settings::load(None, Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(
                s.edge_config().forwarded_header,
                cairn_api::edge::client::ForwardedHeader::Forwarded
            );
            jail.clear_env();
            jail.create_file(
                "edge.toml",
                "cors_allowed_origins = [\"https://app.example.com\"]\n\
                 max_concurrent_requests = 8\nrequest_timeout_ms = 0\n\
                 fault_injection_enabled = true\n\
                 [[fault_injection]]\nroute = \"/api/v1/events\"\nmethods = [\"post\"]\n\
                 probability = 0.25\nkind = \"latency\"\nlatency_ms = 50\n\
                 [[fault_injection]]\npath_prefix = \"/api/\"\nprobability = 1\nkind = \"drop\"\n",
            )?;
            let s = Settings::load(Some(Path::new("edge.toml")), Overrides::default())
                .map_err(|e| e.to_string())?;
            let edge = s.edge_config();
            assert_eq!(edge.cors_allowed_origins, ["https://app.example.com"]);
            assert_eq!(edge.max_concurrent_requests, 8);
            assert_eq!(edge.request_timeout, None, "0 turns the timeout off");
            assert_eq!(edge.faults.len(), 2);
            assert_eq!(edge.faults[0].methods, ["POST"]);
            // Production refuses fault injection, naming the setting.
            jail.set_env("CAIRN_MODE", "production");
            let err = Settings::load(Some(Path::new("edge.toml")), Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("fault_injection_enabled"), "{err}");
            jail.set_env("CAIRN_MODE", "development");
            for (key, value, named) in [
                (
                    "CAIRN_CORS_ALLOWED_ORIGINS",
                    "[\"*\"]",
                    "cors_allowed_origins",
                ),
                (
                    "CAIRN_CORS_ALLOWED_ORIGINS",
                    "[\"https://a.example.com/\"]",
                    "cors_allowed_origins",
                ),
                (
                    "CAIRN_REQUEST_TIMEOUT_MS",
                    "99999999999",
                    "request_timeout_ms",
                ),
                (
                    "CAIRN_HEADER_READ_TIMEOUT_MS",
                    "10",
                    "header_read_timeout_ms",
                ),
                (
                    "CAIRN_SHED_QUEUE_TIMEOUT_MS",
                    "60000",
                    "shed_queue_timeout_ms",
                ),
                (
                    "CAIRN_TLS_CERT_FILE",
                    "/nonexistent/cert.pem",
                    "tls_key_file",
                ),
                (
                    "CAIRN_TRUSTED_PROXIES",
                    "[\"10.0.0.0/8\", \"10.0.0.0/33\"]",
                    "trusted_proxies[1]: \"10.0.0.0/33\" is neither",
                ),
                ("CAIRN_FORWARDED_HEADER", "x-real-ip", "forwarded_header"),
                (
                    "CAIRN_FAULT_INJECTION",
                    "[{route=\"/x\",probability=2.0,kind=\"drop\"}]",
                    "fault_injection[0]: probability",
                ),
                (
                    "CAIRN_FAULT_INJECTION",
                    "[{route=\"/x\",probability=1,kind=\"error\",status=200}]",
                    "fault_injection[0]: error needs status",
                ),
                (
                    "CAIRN_FAULT_INJECTION",
                    "[{route=\"/x\",probability=1,kind=\"latency\"}]",
                    "fault_injection[0]: latency needs latency_ms",
                ),
                (
                    "CAIRN_FAULT_INJECTION",
                    "[{probability=1,kind=\"drop\"}]",
                    "fault_injection[0]: give exactly one",
                ),
                (
                    "CAIRN_FAULT_INJECTION",
                    "[{route=\"/x\",probability=1,kind=\"explode\"}]",
                    "fault_injection[0]: kind must be",
                ),
                (
                    "CAIRN_FAULT_INJECTION",
                    "[{route=\"/x\",probabilty=1,kind=\"drop\"}]",
                    "probabilty",
                ),
            ] {
                jail.set_env(key, value);
                let err = Settings::load(None, Overrides::default())
                    .unwrap_err()
                    .to_string();
                assert!(err.contains(named), "{key}={value}: {err}");
                jail.clear_env();
            }
            Ok(())
        });
    }
}
