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

    /// Sends one request (`path` in origin form, `auth` the prepared
    /// authorization header) and reads the whole answer; an error when the
    /// connection failed or `timeout` passed first.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: Uri,
        auth: &HeaderValue,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), String> {
        let has_body = body.is_some();
        let mut request = Request::new(Full::new(body.map(Bytes::from).unwrap_or_default()));
        *request.method_mut() = method;
        *request.uri_mut() = path;
        let headers = request.headers_mut();
        headers.insert(HOST, self.host.clone());
        headers.insert(AUTHORIZATION, auth.clone());
        if has_body {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        match tokio::time::timeout(timeout, self.exchange(request)).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    }

    async fn exchange(&self, request: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), String> {
        let (mut sender, reused) = self.checkout().await?;
        let response = match sender.try_send_request(request).await {
            Ok(response) => response,
            Err(mut e) => match (reused, e.take_message()) {
                // An idle connection the server closed after `ready()`
                // said yes: the request never left, so it goes on a new one.
                (true, Some(request)) => {
                    sender = self.connect().await?;
                    sender
                        .send_request(request)
                        .await
                        .map_err(|e| format!("sending request: {e}"))?
                }
                _ => return Err(format!("sending request: {}", e.into_error())),
            },
        };
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

    /// An idle open connection (`true`), or a new one (`false`).
    async fn checkout(&self) -> Result<(Sender, bool), String> {
        loop {
            let Some(mut sender) = self.idle.lock().expect("not poisoned").pop() else {
                break;
            };
            // A connection the server closed while idle is dropped.
            if sender.ready().await.is_ok() {
                return Ok((sender, true));
            }
        }
        Ok((self.connect().await?, false))
    }

    async fn connect(&self) -> Result<Sender, String> {
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A peer that answers every request head with `200 ok`, counting the
    /// connections it accepted; with `close`, it hangs up after each answer.
    async fn peer(close: bool) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 1024];
                    loop {
                        let Ok(n) = socket.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            let answer: &[u8] = if close {
                                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                            } else {
                                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                            };
                            if socket.write_all(answer).await.is_err() || close {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (base, accepted)
    }

    /// `GET /x`, which the peer answers `200 ok`.
    async fn get_ok(client: &LoadClient) {
        let auth = HeaderValue::from_static("Bearer t");
        let (status, body) = client
            .send(
                Method::GET,
                Uri::from_static("/x"),
                &auth,
                None,
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&body[..], b"ok");
    }

    #[tokio::test]
    async fn requests_in_turn_share_one_connection() {
        let (base, accepted) = peer(false).await;
        let client = LoadClient::new(&base).await.unwrap();
        for _ in 0..3 {
            get_ok(&client).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_replaced() {
        let (base, accepted) = peer(true).await;
        let client = LoadClient::new(&base).await.unwrap();
        for _ in 0..2 {
            get_ok(&client).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn only_plain_http_is_accepted() {
        let err = LoadClient::new("https://127.0.0.1:1").await.err().unwrap();
        assert!(err.contains("plain http"), "{err}");
    }
}
