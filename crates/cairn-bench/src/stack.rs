//! Which of the server's optional layers a spawned server runs with
//! (`--stack`), and the OTLP collector stand-in the full stack exports to.
//!
//! `bare` switches off everything issue 6 added in front of the handlers
//! (rate limits, idempotency, security headers, CORS, the concurrency
//! limit and request timeout, compression, ETags, trace context and spans,
//! request metrics); authentication stays as configured, so the two runs
//! differ by the edge stack alone. `full` switches all of it on, with
//! every request's spans exported over OTLP/HTTP to [`OtlpSink`].

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Stack {
    /// Whatever the environment configures (the server's defaults).
    AsIs,
    /// Every issue-6 layer off.
    Bare,
    /// Every issue-6 layer on, spans exported to an in-bench OTLP sink.
    Full,
}

/// The origin the full stack allows and the bench's requests name.
pub const ORIGIN: &str = "http://bench.invalid";

impl Stack {
    /// The name `--stack` and `--compare` know it by.
    pub fn name(self) -> &'static str {
        match self {
            Stack::AsIs => "as-is",
            Stack::Bare => "bare",
            Stack::Full => "full",
        }
    }

    /// Environment for the spawned server (`otlp`: the sink's base URL;
    /// `ratio`: the share of traces the full stack samples and exports).
    pub fn env(self, otlp: Option<&str>, ratio: f64) -> Vec<(String, String)> {
        let pairs: Vec<(&str, String)> = match self {
            Stack::AsIs => Vec::new(),
            Stack::Bare => [
                ("CAIRN_RATE_LIMIT_ENABLED", "false"),
                ("CAIRN_IDEMPOTENCY_ENABLED", "false"),
                ("CAIRN_SECURITY_HEADERS", "false"),
                ("CAIRN_MAX_CONCURRENT_REQUESTS", "0"),
                ("CAIRN_REQUEST_TIMEOUT_MS", "0"),
                ("CAIRN_COMPRESSION", "false"),
                ("CAIRN_ETAG", "false"),
                ("CAIRN_TRACE_CONTEXT", "false"),
                ("CAIRN_TRACE_SPANS", "false"),
                ("CAIRN_METRICS", "false"),
            ]
            .into_iter()
            .map(|(k, v)| (k, v.to_owned()))
            .collect(),
            Stack::Full => {
                let mut v: Vec<(&str, String)> = [
                    ("CAIRN_RATE_LIMIT_ENABLED", "true"),
                    ("CAIRN_IDEMPOTENCY_ENABLED", "true"),
                    ("CAIRN_SECURITY_HEADERS", "true"),
                    ("CAIRN_COMPRESSION", "true"),
                    ("CAIRN_ETAG", "true"),
                    ("CAIRN_TRACE_CONTEXT", "true"),
                    ("CAIRN_TRACE_SPANS", "true"),
                    ("CAIRN_METRICS", "true"),
                ]
                .into_iter()
                .map(|(k, v)| (k, v.to_owned()))
                .collect();
                v.push(("CAIRN_CORS_ALLOWED_ORIGINS", format!("[\"{ORIGIN}\"]")));
                if let Some(url) = otlp {
                    v.push(("CAIRN_OTLP_ENDPOINT", url.to_owned()));
                    v.push(("CAIRN_OTLP_PROTOCOL", "http/protobuf".to_owned()));
                    v.push(("CAIRN_OTLP_SAMPLING_RATIO", ratio.to_string()));
                }
                v
            }
        };
        pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }
}

/// What the OTLP sink received.
#[derive(Debug, Default)]
pub struct SinkCounts {
    pub requests: AtomicU64,
    pub bytes: AtomicU64,
}

/// A stand-in OTLP/HTTP collector on 127.0.0.1: it reads each export
/// request whole and answers 200 with an empty protobuf body, so the
/// server does all the work of exporting and nothing is kept.
pub struct OtlpSink {
    pub url: String,
    pub counts: Arc<SinkCounts>,
}

impl OtlpSink {
    pub fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://{}", listener.local_addr()?);
        let counts = Arc::new(SinkCounts::default());
        let shared = counts.clone();
        std::thread::Builder::new()
            .name("otlp-sink".into())
            .spawn(move || {
                for conn in listener.incoming().flatten() {
                    let counts = shared.clone();
                    let _ = std::thread::Builder::new()
                        .name("otlp-sink-conn".into())
                        .spawn(move || serve(conn, &counts));
                }
            })?;
        Ok(Self { url, counts })
    }
}

/// HTTP/1.1 keep-alive: requests with a `Content-Length` body, one after
/// another, until the peer closes.
fn serve(conn: TcpStream, counts: &SinkCounts) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        let mut first = true;
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" || line == "\n" {
                break;
            }
            if first {
                first = false;
                continue;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        counts.requests.fetch_add(1, Ordering::Relaxed);
        counts.bytes.fetch_add(length as u64, Ordering::Relaxed);
        let reply =
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sink_answers_each_export_and_counts_it() {
        let sink = OtlpSink::start().unwrap();
        let addr = sink.url.trim_start_matches("http://").to_owned();
        let mut conn = TcpStream::connect(addr).unwrap();
        for body in ["abc", "defgh"] {
            write!(
                conn,
                "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            let mut reply = [0u8; 80];
            let n = conn.read(&mut reply).unwrap();
            assert!(String::from_utf8_lossy(&reply[..n]).starts_with("HTTP/1.1 200 OK"));
        }
        assert_eq!(sink.counts.requests.load(Ordering::Relaxed), 2);
        assert_eq!(sink.counts.bytes.load(Ordering::Relaxed), 8);
    }

    #[test]
    fn bare_switches_every_layer_off_and_full_exports() {
        let bare = Stack::Bare.env(None, 1.0);
        assert!(bare.iter().all(|(_, v)| v == "false" || v == "0"));
        let full = Stack::Full.env(Some("http://127.0.0.1:9"), 0.25);
        assert!(full.iter().any(|(k, _)| k == "CAIRN_OTLP_ENDPOINT"));
        assert!(
            full.iter()
                .any(|(k, v)| k == "CAIRN_OTLP_SAMPLING_RATIO" && v == "0.25")
        );
        assert!(Stack::AsIs.env(None, 1.0).is_empty());
    }
}
