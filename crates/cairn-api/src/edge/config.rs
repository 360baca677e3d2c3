//! What the HTTP edge is told by the settings (`docs/edge.md`).

use std::time::Duration;

/// The edge's settings, carried to the API layer as `ApiConfig::edge`.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Security headers on every response (`security_headers`).
    pub security_headers: bool,
    /// The server speaks TLS: add `Strict-Transport-Security`.
    pub tls: bool,
    /// Origins allowed to make cross-origin requests, exact
    /// (`scheme://host[:port]`); empty: CORS closed.
    pub cors_allowed_origins: Vec<String>,
    /// How long a browser may cache a preflight answer.
    pub cors_max_age: Duration,
    /// Most requests served at once (0: no limit).
    pub max_concurrent_requests: usize,
    /// How long a request may wait for a free slot before it is shed.
    pub shed_queue_timeout: Duration,
    /// Longest time to produce a response (`None`: no timeout).
    pub request_timeout: Option<Duration>,
    /// Negotiated response compression.
    pub compression: bool,
    /// Smallest body compressed, in bytes.
    pub compression_min_bytes: u16,
    /// Level of gzip, br and zstd alike (1 to 9).
    pub compression_level: u8,
    /// `ETag` / `If-None-Match` on `GET /api/v1/...`.
    pub etag: bool,
    /// Fault-injection rules; empty unless `fault_injection_enabled`.
    pub faults: Vec<FaultRule>,
    /// Proxies whose `forwarded_header` names the client (`edge::client`);
    /// empty: the peer is the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The header those proxies write: `X-Forwarded-For` or `Forwarded`.
    pub forwarded_header: super::client::ForwardedHeader,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            security_headers: true,
            tls: false,
            cors_allowed_origins: Vec::new(),
            cors_max_age: Duration::from_secs(600),
            max_concurrent_requests: 512,
            shed_queue_timeout: Duration::from_millis(20),
            request_timeout: Some(Duration::from_secs(30)),
            compression: true,
            compression_min_bytes: 1024,
            compression_level: 1,
            etag: true,
            faults: Vec::new(),
            trusted_proxies: Vec::new(),
            forwarded_header: super::client::ForwardedHeader::default(),
        }
    }
}

/// One fault-injection rule: on requests it matches, with `probability`,
/// do `fault`.
#[derive(Debug, Clone)]
pub struct FaultRule {
    pub target: FaultTarget,
    /// Upper-case method names; empty: every method.
    pub methods: Vec<String>,
    /// From 0 to 1.
    pub probability: f64,
    pub fault: Fault,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultTarget {
    /// A route template exactly as routed, e.g. `/api/v1/events/{id}`.
    Route(String),
    /// Any path starting with this.
    PathPrefix(String),
}

impl FaultTarget {
    /// The text the rule names (health routes are skipped unless it starts
    /// with `/healthz`).
    pub fn text(&self) -> &str {
        match self {
            Self::Route(s) | Self::PathPrefix(s) => s,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Wait this long, then serve the request normally.
    Latency(Duration),
    /// Answer with this status and the error envelope, without serving.
    Error(u16),
    /// Close the connection without any response.
    Drop,
}

impl Fault {
    /// The `kind` label of `cairn_fault_injections_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Latency(_) => "latency",
            Self::Error(_) => "error",
            Self::Drop => "drop",
        }
    }
}
