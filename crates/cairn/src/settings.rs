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
    // Issue 6: observability (docs/observability.md)
    /// Base URL of an OTLP collector (`CAIRN_OTLP_ENDPOINT`), e.g.
    /// `http://127.0.0.1:4318` for http/protobuf (`/v1/traces` is
    /// appended) or `http://127.0.0.1:4317` for gRPC. Unset: no export.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
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
            // Issue 6: observability
            otlp_endpoint: None,
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
    // Issue 6: observability
    "otlp_endpoint",
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
            if !(oidc.jwks_url.starts_with("http://") || oidc.jwks_url.starts_with("https://")) {
                return bad("oidc.jwks_url", "must be an http:// or https:// URL");
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
        self.validate_observability()
    }

    fn validate_observability(&self) -> Result<(), SettingsError> {
        let bad = |key: &str, why: &str| Err(SettingsError::Invalid(format!("{key}: {why}")));
        if let Some(url) = &self.otlp_endpoint {
            if url.starts_with("https://") {
                return bad(
                    "otlp_endpoint",
                    "https:// is not supported (this build has no TLS); use http://",
                );
            }
            let parsed = url.parse::<axum::http::Uri>();
            let ok = url.starts_with("http://")
                && parsed
                    .as_ref()
                    .is_ok_and(|u| u.host().is_some_and(|h| !h.is_empty()));
            if !ok {
                return bad(
                    "otlp_endpoint",
                    "must be an http:// URL with a host, e.g. http://127.0.0.1:4318",
                );
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
        }
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
                ("CAIRN_OTLP_ENDPOINT", "https://x:4318", "otlp_endpoint"),
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
                r#"[{name="a",kind="webhook",url="https://x/",secret="t"}]"#,
            );
            let err = Settings::load(None, Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("only http://"), "{err}");
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
}
