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
            // Level 4 for all three: brotli's own default (11) costs tens
            // of milliseconds per response; 4 is fast and still smaller than
            // gzip's default.
            .quality(CompressionLevel::Precise(4))
            .compress_when(when),
    )
}
