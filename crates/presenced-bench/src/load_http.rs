//! The load's own HTTP/1.1 client: kept-alive hyper connections in a
//! plain LIFO pool, requests built from prepared URIs and headers.
//!
//! The tool runs on the same cores as the server it measures, so every
//! microsecond it spends per request is taken from the server. reqwest
//! (used for the unmeasured setup calls) parses a URL, resolves a pool key
//! and arms a timer per request; at 10,000 PUT/s that was about as much
//! CPU as the server's own. Here a request is a prepared path, two header
//! clones and a body, sent on an idle connection.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

type Sender = SendRequest<Full<Bytes>>;

/// Connections to one plain-HTTP server, reused last-in first-out (the
/// pool holds as many as were ever in flight at once).
pub(crate) struct LoadClient {
    addr: SocketAddr,
    host: HeaderValue,
    idle: Mutex<Vec<Sender>>,
}

/// A request ready to send but for its body.
pub(crate) struct Prepared {
    pub(crate) method: Method,
    pub(crate) path: Uri,
    pub(crate) auth: HeaderValue,
}

impl LoadClient {
    /// A client for `base` (`http://host:port`, resolved once here).
    pub(crate) async fn new(base: &str) -> Result<Self, String> {
        let uri: Uri = base.parse().map_err(|e| format!("{base}: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!("{base}: the load tool speaks plain http only"));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("{base}: no host"))?
            .clone();
        let port = authority.port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((authority.host(), port))
            .await
            .map_err(|e| format!("{base}: {e}"))?
            .next()
            .ok_or_else(|| format!("{base}: host has no address"))?;
        let host = HeaderValue::from_str(authority.as_str()).map_err(|e| format!("{base}: {e}"))?;
        Ok(Self {
            addr,
            host,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Sends one request and reads the whole answer; `None` when the
    /// connection failed or `timeout` passed first.
    pub(crate) async fn send(
        &self,
        prepared: &Prepared,
        path: Option<Uri>,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), String> {
        let mut request = Request::new(Full::new(body.map(Bytes::from).unwrap_or_default()));
        *request.method_mut() = prepared.method.clone();
        *request.uri_mut() = path.unwrap_or_else(|| prepared.path.clone());
        let headers = request.headers_mut();
        headers.insert(HOST, self.host.clone());
        headers.insert(AUTHORIZATION, prepared.auth.clone());
        if prepared.method != Method::GET {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        match tokio::time::timeout(timeout, self.exchange(request)).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    }

    async fn exchange(&self, request: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), String> {
        let mut sender = self.checkout().await?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("sending request: {e}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading answer: {e}"))?
            .to_bytes();
        // Back to the pool only once the answer is read whole: the
        // connection is then ready for the next request.
        self.idle.lock().expect("not poisoned").push(sender);
        Ok((status, body))
    }

    /// An idle open connection, or a new one.
    async fn checkout(&self) -> Result<Sender, String> {
        loop {
            let Some(mut sender) = self.idle.lock().expect("not poisoned").pop() else {
                break;
            };
            // A connection the server closed while idle is dropped.
            if sender.ready().await.is_ok() {
                return Ok(sender);
            }
        }
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connecting to {}: {e}", self.addr))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("TCP_NODELAY: {e}"))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        tokio::spawn(async move {
            // Ends when the server closes or the sender is dropped.
            let _ = connection.await;
        });
        Ok(sender)
    }
}
