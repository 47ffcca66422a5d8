//! CORS: lets web clients (Element Web, anything on matrix-js-sdk) call
//! presenced from a page served by another origin.
//!
//! A browser only hands a cross-origin answer to the page when it says
//! which origins may read it, and before any request with an
//! `Authorization` header or a JSON body it sends an `OPTIONS` preflight
//! and goes no further unless that succeeds. The client-server spec asks
//! servers for these headers, with the values Synapse sends: any origin,
//! the methods and request headers clients use, and no credentials (access
//! tokens travel in `Authorization`, never in cookies, so `*` hands a page
//! nothing it could not already send). The headers go on every answer,
//! errors included: a client that cannot read a 401, 404 or 429 cannot
//! tell a missing token from a network failure.
//!
//! Synapse's rules, kept here:
//! - an `OPTIONS` request to any path is a preflight and is answered 204
//!   with an empty body, before routing and without authentication (the
//!   browser preflights before it knows whether the path exists);
//! - every other answer gets the same headers (not only answers to requests
//!   that carried an `Origin`, so a cache in front never serves one origin's
//!   copy to another), except `/metrics`: Synapse's metrics resource sends
//!   none, and with them any web page open in an operator's browser could
//!   read the server's counters from a loopback or intranet address.
//!
//! A layer of our own rather than tower-http's `CorsLayer`: that one
//! answers preflights 200, sends the allowed methods and headers only on
//! preflights and adds `Vary` headers, so it cannot give Synapse's headers.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tower::{Layer, Service};

/// The only path whose answers carry no CORS headers (see the module doc).
const NO_CORS_PATH: &str = "/metrics";

/// The CORS headers, with Synapse's values.
const HEADERS: [(axum::http::HeaderName, HeaderValue); 4] = [
    (ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*")),
    (
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, OPTIONS"),
    ),
    (
        ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("X-Requested-With, Content-Type, Authorization, Date"),
    ),
    // Synapse's value: presenced sends neither header itself, but a proxy
    // in front may add `Server`, and a client written against Synapse
    // then reads the same headers here.
    (
        ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Synapse-Trace-Id, Server"),
    ),
];

/// The layer that answers preflights and adds the CORS headers to every
/// other answer (see the module doc).
///
/// A tower layer with a future of its own rather than an
/// `axum::middleware::from_fn` function: that one boxes the function's
/// future and the rest of the chain's, about 2 KiB held for as long as a
/// request is handled, so on every open `/sync` long-poll (measured with
/// `scripts/longpoll-memory`); this future is the inner one plus a
/// function pointer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CorsLayer;

impl<S> Layer<S> for CorsLayer {
    type Service = Cors<S>;

    fn layer(&self, inner: S) -> Cors<S> {
        Cors { inner }
    }
}

/// [`CorsLayer`]'s service around `S`.
#[derive(Clone, Debug)]
pub(crate) struct Cors<S> {
    inner: S,
}

/// What happens to the inner answer: headers added, or left as it is.
type Finish = fn(Response) -> Response;

impl<S> Service<Request> for Cors<S>
where
    S: Service<Request, Response = Response>,
    S::Future: Unpin,
{
    type Response = Response;
    type Error = S::Error;
    type Future = CorsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if req.method() == Method::OPTIONS {
            let mut response = StatusCode::NO_CONTENT.into_response();
            add_headers(response.headers_mut());
            return CorsFuture::Preflight(Some(response));
        }
        let finish: Finish = if req.uri().path() == NO_CORS_PATH {
            std::convert::identity
        } else {
            with_headers
        };
        CorsFuture::Inner {
            inner: self.inner.call(req),
            finish,
        }
    }
}

/// [`Cors`]'s answer: the preflight's, or the inner service's finished.
/// The inner future is `Unpin` (axum's routes box their handlers), so no
/// pinning projection is needed.
pub(crate) enum CorsFuture<F> {
    /// Answered at once; `None` once returned.
    Preflight(Option<Response>),
    Inner {
        inner: F,
        finish: Finish,
    },
}

impl<F, E> Future for CorsFuture<F>
where
    F: Future<Output = Result<Response, E>> + Unpin,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Self::Preflight(response) => {
                Poll::Ready(Ok(response.take().expect("polled after it finished")))
            }
            Self::Inner { inner, finish } => Pin::new(inner).poll(cx).map_ok(*finish),
        }
    }
}

fn with_headers(mut response: Response) -> Response {
    add_headers(response.headers_mut());
    response
}

fn add_headers(headers: &mut HeaderMap) {
    for (name, value) in HEADERS {
        headers.insert(name, value);
    }
}
