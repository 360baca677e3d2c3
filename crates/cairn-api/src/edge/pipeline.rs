//! The whole edge as one middleware (ARCHITECTURE.md "The edge").
//!
//! Each stage is a plain `async fn(&config, Request, impl Next) ->
//! Response`, and [`run`] nests them in a fixed order. They compile into
//! one future, installed with a single `Router::layer`, so a request pays
//! for one boxed service rather than one per stage. (With a `Router::layer`
//! per stage, each stage's `Next` was a boxed clone of the whole chain
//! below it: the clones, their allocations and their drops were about 15%
//! of the server's CPU on the get and create benchmarks.) A stage that is
//! switched off costs a branch. Being a route layer, every stage sees the
//! request's `MatchedPath`.
//!
//! Order, outermost first: trace context and request span, request
//! metrics, security headers, CORS, shedding and timeouts, fault
//! injection, compression, per-address rate limit, authentication,
//! per-principal rate limit, `Idempotency-Key`, ETags, relay wake-up; then
//! the handler.

use super::{compress, cors, etag, fault, headers, idempotency, ratelimit, shed, trace};
use crate::{AppState, metrics};
use axum::body::HttpBody as _;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use futures_util::future::{Either, Map, Ready, ready};
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, ServiceExt};
use tower_http::compression::CompressionLayer;

/// The most headers the stages add to a response: `ETag`, four
/// `RateLimit-*`, three security headers, three CORS headers,
/// `X-Request-Id` and `traceparent`.
const EDGE_HEADERS: usize = 13;

/// The rest of the pipeline after a stage: called at most once, with the
/// request the stage lets through.
pub trait Next: Send {
    type Future: Future<Output = Response> + Send;
    fn run(self, req: Request) -> Self::Future;
}

impl<F, Fut> Next for F
where
    F: FnOnce(Request) -> Fut + Send,
    Fut: Future<Output = Response> + Send,
{
    type Future = Fut;
    fn run(self, req: Request) -> Fut {
        self(req)
    }
}

/// What the stages are configured with; built once per router (the
/// shedding semaphore must be one for the whole router).
pub struct Edge {
    app: AppState,
    policy: Arc<headers::Policy>,
    cors: Option<cors::Cors>,
    compress: Option<CompressionLayer<compress::When>>,
    compress_min: u64,
    shed: Arc<shed::Shed>,
    faults: Arc<fault::Faults>,
    etag: bool,
}

impl Edge {
    pub fn new(app: AppState) -> Arc<Self> {
        let config = &app.config.edge;
        Arc::new(Self {
            policy: headers::Policy::new(config),
            cors: cors::Cors::new(config),
            compress: compress::layer(config),
            compress_min: u64::from(config.compression_min_bytes),
            shed: shed::Shed::new(config),
            faults: fault::Faults::new(&config.faults),
            etag: config.etag,
            app,
        })
    }
}

/// The middleware: every stage, in order, around the handler.
///
/// The stages' future is kilobytes (every stage keeps its request and
/// response); it is boxed here, where it is made, so that axum's layers
/// above move a pointer instead of copying it (about 10,000 instructions
/// of `memcpy` per request, counted by callgrind).
pub fn run(
    State(edge): State<Arc<Edge>>,
    req: Request,
    next: axum::middleware::Next,
) -> std::pin::Pin<Box<dyn Future<Output = Response> + Send>> {
    Box::pin(async move {
        let e = &*edge;
        let s = &e.app;
        // What runs after `Idempotency-Key` may be moved to a task of its own
        // (a claimed key is settled even if the client goes away), so it owns
        // what it uses.
        let inner = {
            let app = s.clone();
            let etag = e.etag;
            move |req: Request| async move {
                etag::conditional(etag, req, |req| {
                    metrics::wake_relay(&app, req, |req| async move {
                        let mut res = next.run(req).await;
                        // Room for the headers the stages add, made once
                        // rather than grown twice on the way out.
                        res.headers_mut().reserve(EDGE_HEADERS);
                        res
                    })
                })
                .await
            }
        };
        trace::layer(s, req, |req| {
            metrics::track(s, req, |req| {
                headers::apply(&e.policy, req, |req| {
                    cors_stage(e.cors.as_ref(), req, |req| {
                        shed::limit(&e.shed, req, |req| {
                            fault::inject(&e.faults, req, |req| {
                                compress_stage(e.compress.as_ref(), e.compress_min, req, |req| {
                                    ratelimit::by_address(s, req, |req| {
                                        crate::auth::layer(s, req, |req| {
                                            ratelimit::by_principal(s, req, |req| {
                                                idempotency::layer(s, req, inner)
                                            })
                                        })
                                    })
                                })
                            })
                        })
                    })
                })
            })
        })
        .await
    })
}

/// CORS as a stage (`None`: closed, passes through): tower-http's layer
/// answers preflights; every other answer gets the same headers from
/// [`cors::Cors::mark`].
async fn cors_stage(cors: Option<&cors::Cors>, req: Request, next: impl Next) -> Response {
    let Some(cors) = cors else {
        return next.run(req).await;
    };
    if req.method() == axum::http::Method::OPTIONS {
        return match cors.preflight.layer(Rest::new(next)).oneshot(req).await {
            Ok(res) => res,
            Err(never) => match never {},
        };
    }
    let allowed = cors.allowed(req.headers());
    let mut res = next.run(req).await;
    cors.mark(allowed, res.headers_mut());
    res
}

/// Response compression as a stage (tower-http's layer; `None`: off).
///
/// A response whose body is known to be smaller than `min` is the one
/// tower-http's size predicate would pass through untouched (no encoding,
/// no `Vary`), so it is returned as it is without building tower-http's
/// per-response state; every other response goes through tower-http, which
/// negotiates from the request's `Accept-Encoding` kept for it.
async fn compress_stage(
    layer: Option<&CompressionLayer<compress::When>>,
    min: u64,
    req: Request,
    next: impl Next,
) -> Response {
    let Some(layer) = layer else {
        return next.run(req).await;
    };
    // What was asked for, kept for a response that is compressed (no
    // allocation for the one `Accept-Encoding` header clients send); the
    // request tower-http negotiates from is made only then.
    let mut values = req.headers().get_all(header::ACCEPT_ENCODING).iter();
    let first = values.next().cloned();
    let rest: Vec<_> = values.cloned().collect();
    let mut res = next.run(req).await;
    // A 304 for a body tower-http would have given `Vary: accept-encoding`
    // (it does so for every body it may compress, compressed or not) has
    // that `Vary` too: a cache that revalidates a stored response replaces
    // its `Vary` with the 304's.
    if let Some(etag::NotModified { body_len }) = res.extensions().get().copied() {
        if body_len >= min {
            res.headers_mut()
                .append(header::VARY, HeaderValue::from_static("accept-encoding"));
        }
        return res;
    }
    if res.body().size_hint().exact().is_some_and(|n| n < min) {
        return res;
    }
    let mut asked = Request::new(axum::body::Body::empty());
    let values: Vec<HeaderValue> = first.into_iter().chain(rest).collect();
    if let Some(any) = compress::wildcard(&values) {
        asked.headers_mut().append(header::ACCEPT_ENCODING, any);
    }
    for v in values {
        asked.headers_mut().append(header::ACCEPT_ENCODING, v);
    }
    let answered = Rest::new(move |_: Request| ready(res));
    match layer.layer(answered).oneshot(asked).await {
        Ok(res) => res.map(axum::body::Body::new),
        Err(never) => match never {},
    }
}

/// The rest of the pipeline as a tower service, for a tower layer inside
/// the pipeline. It answers one call (tower's layers call their inner
/// service once per request); a second would get a 500.
struct Rest<N>(Option<N>);

impl<N> Rest<N> {
    fn new(next: N) -> Self {
        Self(Some(next))
    }
}

type Answered = fn(Response) -> Result<Response, Infallible>;

impl<N: Next> tower::Service<Request> for Rest<N> {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Map<N::Future, Answered>, Ready<Result<Response, Infallible>>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        match self.0.take() {
            Some(next) => Either::Left(next.run(req).map(Ok as Answered)),
            None => Either::Right(ready(Ok(crate::error::ApiError::Internal(
                "the edge pipeline's inner service was called twice".to_owned(),
            )
            .into_response()))),
        }
    }
}
