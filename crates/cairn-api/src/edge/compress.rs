//! Response compression (`docs/edge.md` "Compression"): gzip, br or zstd
//! as the client's `Accept-Encoding` prefers (q-values honoured, `q=0`
//! refuses), streamed by tower-http as the body is produced. Bodies
//! smaller than `compression_min_bytes`, event streams, images and
//! responses already encoded are sent as they are; a WebSocket upgrade
//! (101, no body) never is.

use super::config::EdgeConfig;
use tower_http::compression::predicate::{And, NotForContentType, Predicate, SizeAbove};
use tower_http::compression::{CompressionLayer, CompressionLevel};

pub type When = And<And<And<SizeAbove, NotForContentType>, NotForContentType>, NotForContentType>;

/// The layer (`compression = false`: none).
pub fn layer(config: &EdgeConfig) -> Option<CompressionLayer<When>> {
    if !config.compression {
        return None;
    }
    let when = SizeAbove::new(config.compression_min_bytes)
        .and(NotForContentType::SSE)
        .and(NotForContentType::IMAGES)
        .and(NotForContentType::GRPC);
    Some(
        CompressionLayer::new()
            .gzip(true)
            .br(true)
            .zstd(true)
            .no_deflate()
            // One level for all three (tower-http takes one). Level 1 by
            // default: a streamed zstd encoder at level 4 zeroes 2 MiB of
            // match tables for every response (768 KiB at 3, 64 KiB at 1),
            // and brotli's own default (11) costs tens of milliseconds.
            .quality(CompressionLevel::Precise(i32::from(
                config.compression_level,
            )))
            .compress_when(when),
    )
}
