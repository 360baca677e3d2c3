//! A tower layer that is either applied or not, decided once when the
//! router is built, so a feature that is off costs a branch per request
//! and nothing else. (tower's `option_layer` makes the error a `BoxError`, which
//! axum's `Router::layer` does not take.)

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use futures_util::future::{Either, Map};
use std::convert::Infallible;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// `Some(layer)`: wrap with it; `None`: leave the service as it is.
#[derive(Clone)]
pub struct Toggle<L>(pub Option<L>);

impl<L, S> Layer<S> for Toggle<L>
where
    L: Layer<S>,
{
    type Service = ToggleService<L::Service, S>;

    fn layer(&self, inner: S) -> Self::Service {
        match &self.0 {
            Some(layer) => ToggleService::On(layer.layer(inner)),
            None => ToggleService::Off(inner),
        }
    }
}

#[derive(Clone)]
pub enum ToggleService<A, B> {
    On(A),
    Off(B),
}

impl<A, B> Service<Request> for ToggleService<A, B>
where
    A: Service<Request, Error = Infallible>,
    A::Response: IntoResponse,
    B: Service<Request, Error = Infallible>,
    B::Response: IntoResponse,
{
    type Response = Response;
    type Error = Infallible;
    #[allow(clippy::type_complexity)]
    type Future = Either<
        Map<A::Future, fn(Result<A::Response, Infallible>) -> Result<Response, Infallible>>,
        Map<B::Future, fn(Result<B::Response, Infallible>) -> Result<Response, Infallible>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        match self {
            Self::On(a) => a.poll_ready(cx),
            Self::Off(b) => b.poll_ready(cx),
        }
    }

    fn call(&mut self, req: Request) -> Self::Future {
        match self {
            Self::On(a) => Either::Left(a.call(req).map(respond::<A::Response> as fn(_) -> _)),
            Self::Off(b) => Either::Right(b.call(req).map(respond::<B::Response> as fn(_) -> _)),
        }
    }
}

fn respond<R: IntoResponse>(res: Result<R, Infallible>) -> Result<Response, Infallible> {
    res.map(IntoResponse::into_response)
}
