//! Connections over raw TCP: slow and silent clients are closed after the
//! configured timeouts, the per-address cap refuses new connections while
//! established ones keep being served, oversized headers get 431, and a
//! device's extra `/sync` long-poll makes its oldest answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use presenced_server::config::connections::ConnectionsConfig;
use presenced_server::config::Config;
use presenced_server::net::CloseReason;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{spawn_app_with, TestApp};

fn short_timeouts(c: &mut Config) {
    c.connections = ConnectionsConfig {
        header_read_timeout: Duration::from_millis(600),
        keep_alive_timeout: Duration::from_millis(900),
        body_read_timeout: Duration::from_millis(600),
        ..ConnectionsConfig::default()
    };
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads until the server closes the connection (EOF or reset); returns
/// what was read and when the close was seen. Fails after `limit`.
async fn read_until_closed<S: AsyncRead + Unpin>(
    stream: &mut S,
    limit: Duration,
) -> (Vec<u8>, Instant) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => panic!(
                "connection still open after {limit:?}; read {:?}",
                String::from_utf8_lossy(&seen)
            ),
            Ok(Ok(0) | Err(_)) => return (seen, Instant::now()),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// One `GET path` on a kept-alive connection; returns the status line and
/// the body (the server answers with `content-length`).
async fn get_on<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, path: &str) -> (String, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(
            n > 0,
            "closed mid-answer: {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            if body.len() >= content_length(head) {
                let status = head.lines().next().unwrap().to_owned();
                return (status, body.to_owned());
            }
        }
    }
}

/// The `content-length` an answer's head declares.
fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .expect("content-length")
}

#[tokio::test]
async fn silent_and_slow_header_connections_are_closed_after_the_header_timeout() {
    let app = spawn_app_with(short_timeouts).await;
    let opened = Instant::now();
    let mut silent = connect(&app).await;
    let mut partial = connect(&app).await;
    partial
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    // A slowloris: one header byte every 100 ms never finishes in time.
    let mut trickle = connect(&app).await;
    let trickler = tokio::spawn(async move {
        trickle
            .write_all(b"GET /health HTTP/1.1\r\n")
            .await
            .unwrap();
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if trickle.write_all(b"X").await.is_err() {
                return Instant::now();
            }
        }
        panic!("the trickling connection was never closed");
    });
    for stream in [&mut silent, &mut partial] {
        let (read, closed) = read_until_closed(stream, Duration::from_secs(5)).await;
        assert!(read.is_empty(), "{:?}", String::from_utf8_lossy(&read));
        let after = closed - opened;
        assert!(
            after >= Duration::from_millis(550),
            "closed too early: {after:?}"
        );
    }
    let trickle_closed = trickler.await.unwrap() - opened;
    assert!(
        trickle_closed < Duration::from_secs(3),
        "{trickle_closed:?}"
    );
    assert!(app.state.connections.closed(CloseReason::HeaderTimeout) >= 3);
    // Meanwhile and after, other clients are served.
    let (status, _) = app.get("/health", None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn idle_kept_alive_connections_are_closed_and_busy_ones_are_not() {
    let app = spawn_app_with(|c| {
        short_timeouts(c);
        c.enable_metrics = true;
    })
    .await;
    let mut idle = connect(&app).await;
    let mut busy = connect(&app).await;
    let (status, _) = get_on(&mut idle, "/health").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let answered = Instant::now();
    // A request every 300 ms keeps a connection open well past the
    // keep-alive and header timeouts.
    for _ in 0..8 {
        let (status, _) = get_on(&mut busy, "/health").await;
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (read, closed) = read_until_closed(&mut idle, Duration::from_secs(5)).await;
    assert!(read.is_empty());
    let after = closed - answered;
    assert!(
        after >= Duration::from_millis(850),
        "closed too early: {after:?}"
    );
    assert!(app.state.connections.closed(CloseReason::KeepAliveTimeout) >= 1);
    let metrics = app.metrics_text().await;
    let closed: u64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("presenced_connections_closed_total{reason=\"keep_alive_timeout\"} ")
        })
        .expect("the keep-alive closes are in /metrics")
        .parse()
        .unwrap();
    assert!(closed >= 1, "{metrics}");
    assert!(metrics.contains("# TYPE presenced_connections_open gauge"));
}

#[tokio::test]
async fn a_stalled_request_body_closes_its_connection() {
    let app = spawn_app_with(short_timeouts).await;
    let mut stream = connect(&app).await;
    stream
        .write_all(
            b"POST /_matrix/client/v3/login HTTP/1.1\r\nHost: localhost\r\n\
              Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"type\":",
        )
        .await
        .unwrap();
    let sent = Instant::now();
    let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(closed - sent >= Duration::from_millis(550));
    assert_eq!(app.state.connections.closed(CloseReason::BodyTimeout), 1);
}

#[tokio::test]
async fn a_trickling_request_body_is_closed_at_the_minimum_rate() {
    // A byte every 300 ms never stalls for the 600 ms `body_read_timeout`;
    // at 100 B/s minimum, the whole body was due after about 0.6 s.
    let app = spawn_app_with(|c| {
        short_timeouts(c);
        c.connections.body_min_rate = 100;
    })
    .await;
    let mut stream = connect(&app).await;
    stream
        .write_all(
            b"POST /_matrix/client/v3/login HTTP/1.1\r\nHost: localhost\r\n\
              Content-Type: application/json\r\nContent-Length: 100\r\n\r\n",
        )
        .await
        .unwrap();
    let sent = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if writer.write_all(b" ").await.is_err() {
                break;
            }
        }
    });
    let (_, closed) = read_until_closed(&mut reader, Duration::from_secs(5)).await;
    trickle.abort();
    assert!(
        closed - sent < Duration::from_secs(3),
        "closed after {:?}",
        closed - sent
    );
    assert_eq!(app.state.connections.closed(CloseReason::BodyTooSlow), 1);
    assert_eq!(app.state.connections.closed(CloseReason::BodyTimeout), 0);
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let app = spawn_app_with(|c| c.connections.max_header_bytes = 8192).await;
    // Just under the limit: served.
    let mut fits = connect(&app).await;
    let header = format!("X-Padding: {}\r\n", "a".repeat(6000));
    fits.write_all(format!("GET /health HTTP/1.1\r\nHost: localhost\r\n{header}\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = [0u8; 12];
    fits.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    // Over it: 431, then the connection is closed.
    let mut big = connect(&app).await;
    let header = format!("X-Padding: {}\r\n", "a".repeat(12_000));
    big.write_all(format!("GET /health HTTP/1.1\r\nHost: localhost\r\n{header}\r\n").as_bytes())
        .await
        .unwrap();
    let (read, _) = read_until_closed(&mut big, Duration::from_secs(5)).await;
    assert_matrix_error(&read, "431", "M_TOO_LARGE");
}

#[tokio::test]
async fn unparsable_requests_get_a_matrix_error_body() {
    let app = spawn_app_with(|_| {}).await;
    for request in [
        &b"GET /_matrix/client/v3/rooms/\xff\xfe/state HTTP/1.1\r\nHost: localhost\r\n\r\n"[..],
        b"NOT AN HTTP REQUEST\r\n\r\n",
    ] {
        let mut stream = connect(&app).await;
        stream.write_all(request).await.unwrap();
        let (read, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
        assert_matrix_error(&read, "400", "M_UNKNOWN");
    }
}

/// `read` is one whole answer with `status`, a `content-length` that is the
/// body's length, and a JSON body with `errcode`.
fn assert_matrix_error(read: &[u8], status: &str, errcode: &str) {
    let text = String::from_utf8_lossy(read);
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{text:?}");
    assert_eq!(content_length(head), body.len(), "{text:?}");
    let body: Value = serde_json::from_str(body).expect("a JSON body");
    assert_eq!(body["errcode"], errcode, "{text:?}");
}

#[tokio::test]
async fn over_the_per_address_cap_new_connections_are_closed_and_existing_ones_served() {
    let app = spawn_app_with(|c| {
        c.connections.max_connections_per_address = Some(5);
        // Loopback is exempt by default (a reverse proxy); not here.
        c.connections.per_address_exempt = Default::default();
    })
    .await;
    let mut legit = connect(&app).await;
    let (status, _) = get_on(&mut legit, "/health").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(connect(&app).await);
    }
    // Wait until the server has admitted all five.
    let wait = Instant::now();
    while app.state.connections.open() < 5 {
        assert!(wait.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for _ in 0..20 {
        let mut over = connect(&app).await;
        let started = Instant::now();
        let (read, closed) = read_until_closed(&mut over, Duration::from_secs(2)).await;
        assert!(closed - started < Duration::from_secs(1));
        assert_matrix_error(&read, "503", "M_UNKNOWN");
        let read = String::from_utf8_lossy(&read);
        assert!(read.contains("Retry-After"), "{read:?}");
    }
    assert_eq!(app.state.connections.closed(CloseReason::AddressCap), 20);
    // The established client is served throughout.
    let (status, body) = get_on(&mut legit, "/health").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status} {body}");
    // A place given back is a place for the next connection.
    drop(silent.pop());
    let wait = Instant::now();
    while app.state.connections.open() > 4 {
        assert!(wait.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut next = connect(&app).await;
    let (status, _) = get_on(&mut next, "/health").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
}

#[tokio::test]
async fn a_tls_connection_is_timed_from_accept_through_its_headers() {
    use crate::listeners::{localhost_certificate, write};
    let dir = tempfile::tempdir().unwrap();
    let pem = localhost_certificate();
    let (cert, key) = (
        write(&dir, "cert.pem", &pem.cert),
        write(&dir, "key.pem", &pem.key),
    );
    let mut config = crate::helpers::test_config(&dir);
    short_timeouts(&mut config);
    let (state, receivers, _) = presenced_server::process::startup::build_state(config).unwrap();
    drop(presenced_server::process::feeds::spawn(&state, receivers));
    let tls_config = presenced_server::federation::tls::server_config(&cert, &key).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(presenced_server::run_listener(
        listener,
        Some(tls_config),
        &["federation"],
        state.clone(),
        std::future::pending(),
    ));

    // Silent before the handshake.
    let opened = Instant::now();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(5)).await;
    assert!(closed - opened >= Duration::from_millis(550));

    // Handshake done, then a partial request.
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_slice(pem.ca.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = connector.connect(name.clone(), tcp).await.unwrap();
    let (status, body) = get_on(&mut tls, "/health").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status} {body}");
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut slow = connector.connect(name, tcp).await.unwrap();
    let started = Instant::now();
    slow.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
    slow.flush().await.unwrap();
    let (read, closed) = read_until_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(read.is_empty());
    assert!(closed - started < Duration::from_secs(3));
    assert_eq!(state.connections.closed(CloseReason::HandshakeTimeout), 1);
    assert_eq!(state.connections.closed(CloseReason::HeaderTimeout), 1);
}

/// A `GET` in its own task, with the time its answer came.
fn spawn_get(
    app: &TestApp,
    path: &str,
    token: &str,
) -> tokio::task::JoinHandle<(u16, Value, Instant)> {
    let request = app
        .client
        .get(format!("{}{path}", app.base))
        .bearer_auth(token);
    tokio::spawn(async move {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body = response.json().await.unwrap();
        (status, body, Instant::now())
    })
}

#[tokio::test]
async fn a_long_poll_past_the_device_bound_makes_the_oldest_answer() {
    let app = spawn_app_with(|c| c.connections.max_long_polls_per_device = 1).await;
    let alice = app.register("alice").await;
    let (status, first) = app
        .get("/_matrix/client/v3/sync?timeout=0", Some(&alice.token))
        .await;
    assert_eq!(status, 200, "{first}");
    let since = first["next_batch"].as_str().unwrap().to_owned();
    let path = format!("/_matrix/client/v3/sync?timeout=20000&since={since}");
    let older = spawn_get(&app, &path, &alice.token);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!older.is_finished(), "the long-poll should wait");
    let newer = spawn_get(&app, &path, &alice.token);
    let started = Instant::now();
    let (status, body, answered) = tokio::time::timeout(Duration::from_secs(5), older)
        .await
        .expect("the older long-poll answers early")
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(answered - started < Duration::from_secs(3));
    // Nothing new: the same position.
    assert_eq!(body["next_batch"], Value::from(since));
    // The newer one keeps waiting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !newer.is_finished(),
        "the newest long-poll should keep waiting"
    );
    newer.abort();
}

#[tokio::test]
async fn a_slow_client_does_not_hold_up_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::helpers::test_config(&dir);
    let (state, receivers, _) = presenced_server::process::startup::build_state(config).unwrap();
    drop(presenced_server::process::feeds::spawn(&state, receivers));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(presenced_server::run(listener, state, async move {
        let _ = stop_rx.await;
    }));
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
    let mut kept = TcpStream::connect(addr).await.unwrap();
    let (status, _) = get_on(&mut kept, "/health").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let asked = Instant::now();
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("shutdown is not held by the default 30 s header timeout")
        .unwrap()
        .unwrap();
    assert!(asked.elapsed() < Duration::from_secs(2));
    for stream in [&mut slow, &mut kept] {
        read_until_closed(stream, Duration::from_secs(1)).await;
    }
}
