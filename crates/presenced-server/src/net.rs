//! Connections: accepting and serving the HTTP and HTTPS listeners.
//!
//! Owns the accept loops, the connection caps, the per-connection
//! deadlines and the process's file-descriptor limit. Knows HTTP framing
//! (hyper), not Matrix: it serves whatever axum router it is given and
//! imports nothing of this crate but `config`.
//!
//! Each accepted TCP connection first takes a place under the connection
//! caps (`caps`); over a cap it is closed at once (plain listeners first
//! write a 503), so the accept loop keeps draining the backlog and
//! established connections keep being served. An admitted connection runs
//! in its own task: the TLS handshake (with a deadline) for `tls: true`
//! listeners, then hyper's HTTP/1.1 server with the header size limit,
//! watched by its `watchdog` deadlines (header read, keep-alive idle,
//! stalled body). Requests reach the axum router with the peer's address
//! as axum's `ConnectInfo<SocketAddr>`.
//!
//! HTTP/1.1 only: TLS listeners offer only `http/1.1` in ALPN, and plain
//! listeners sit behind reverse proxies, which speak 1.1 to backends.

mod caps;
mod error_bodies;
pub mod fd_limit;
mod watchdog;

use std::future::Future;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

pub use self::caps::{Admission, CloseReason, ConnectionTracker};
use self::error_bodies::ErrorBodies;
use self::watchdog::{Activity, TrackedBody, TrackedIo, Verdict};
use crate::config::connections::{ConnectionLimits, MIN_HEADER_BYTES};

/// A TLS handshake that takes longer is dropped (or sooner, when
/// `header_read_timeout` is shorter).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after an accept error that is about the process (out of
/// descriptors or memory), not one connection: retrying at once would
/// spin, since the pending connection stays in the backlog.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// What a plain connection over a cap reads before it is closed.
static OVER_CAP_RESPONSE: LazyLock<Vec<u8>> = LazyLock::new(|| {
    error_bodies::with_error_body(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nConnection: close",
        "M_UNKNOWN",
        "Too many connections",
    )
});

/// Connections the kernel may queue for the accept loop. Sockets are bound
/// with a backlog of 128; a burst of connections (an attack, or many
/// clients reconnecting after a restart) overflows that, and the kernel
/// then drops handshakes or falls back to SYN cookies, which legitimate
/// clients see as resets. The kernel caps it at `net.core.somaxconn`.
const ACCEPT_BACKLOG: i32 = 4096;

/// Listening again on a listening socket only changes its backlog (Linux
/// and the BSDs), so the listener need not be rebuilt.
fn raise_backlog(tcp: &TcpListener) {
    #[cfg(unix)]
    if let Err(e) = rustix::net::listen(tcp, ACCEPT_BACKLOG) {
        tracing::debug!("could not raise the listen backlog: {e}");
    }
    #[cfg(not(unix))]
    let _ = tcp;
}

/// Answers go out at once: Nagle's algorithm would hold a small answer
/// back until the client acknowledges the previous one, and with delayed
/// ACKs that added up to 40 ms to PUTs and long-poll answers under load.
pub(crate) fn set_nodelay(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!("could not set TCP_NODELAY: {e}");
    }
}

/// Serves `app` on `tcp` (over TLS when `tls` is set), under `tracker`'s
/// caps and timeouts, until `shutdown` resolves; then stops accepting,
/// lets in-flight requests finish and returns when every connection is
/// closed.
pub async fn serve(
    tcp: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    tracker: Arc<ConnectionTracker>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    raise_backlog(&tcp);
    let acceptor = tls.map(TlsAcceptor::from);
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = tcp.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                tracing::warn!("accept failed: {e}; pausing accepts for {ACCEPT_BACKOFF:?}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        match (tracker.admit(peer.ip()), &acceptor) {
            // One task type per kind of listener: a task's memory is its
            // future's size, and a plain connection's must not be sized
            // for a TLS connection's state (rustls's buffers and
            // handshake) it never holds: one task for both was 5.4 KiB
            // per connection, a plain one alone is 1.5 KiB (heaptrack,
            // scripts/longpoll-memory).
            (Ok(admission), None) => {
                let task = plain_connection(stream, peer, app.clone(), admission, stop_rx.clone());
                tokio::spawn(task);
            }
            (Ok(admission), Some(acceptor)) => {
                let task = tls_connection(
                    stream,
                    peer,
                    acceptor.clone(),
                    app.clone(),
                    admission,
                    stop_rx.clone(),
                );
                tokio::spawn(task);
            }
            (Err(_), None) => {
                // Best effort: a full socket buffer just means no answer.
                let _ = stream.try_write(&OVER_CAP_RESPONSE);
            }
            (Err(_), Some(_)) => {}
        }
    }
    drop(tcp);
    drop(stop_rx);
    let _ = stop_tx.send(true);
    // Every connection task holds a receiver until it ends.
    stop_tx.closed().await;
    Ok(())
}

/// Accept errors that concern only the connection being accepted.
fn is_per_connection(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionAborted
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionRefused
            | ErrorKind::Interrupted
            | ErrorKind::PermissionDenied
    )
}

/// One admitted plain connection, until it closes.
async fn plain_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    admission: Admission,
    stop: watch::Receiver<bool>,
) {
    set_nodelay(&stream);
    let activity = Arc::new(Activity::new());
    let io = TrackedIo::new(stream, Arc::clone(&activity));
    serve_http(io, peer, app, admission.tracker(), activity, stop).await;
    drop(admission);
}

/// One admitted TLS connection, from handshake to close.
async fn tls_connection(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    app: Router,
    admission: Admission,
    stop: watch::Receiver<bool>,
) {
    set_nodelay(&stream);
    let activity = Arc::new(Activity::new());
    let tracker = admission.tracker();
    // The handshake is part of the time a client has for its first
    // headers.
    let limit = HANDSHAKE_TIMEOUT.min(tracker.limits().header_read_timeout);
    match tokio::time::timeout(limit, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            let io = TrackedIo::new(tls, Arc::clone(&activity));
            serve_http(io, peer, app, tracker, activity, stop).await;
        }
        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
        Err(_) => {
            tracker.count_close(CloseReason::HandshakeTimeout);
            tracing::debug!(%peer, "TLS handshake timed out");
        }
    }
    drop(admission);
}

/// HTTP/1.1 on an established stream, until the client closes, a deadline
/// passes, or shutdown lets the last request finish.
async fn serve_http<S>(
    io: TrackedIo<S>,
    peer: SocketAddr,
    app: Router,
    tracker: &ConnectionTracker,
    activity: Arc<Activity>,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits: &ConnectionLimits = tracker.limits();
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let running = activity.request_started();
            let (mut parts, body) = request.into_parts();
            parts.extensions.insert(ConnectInfo(peer));
            let request = hyper::Request::from_parts(parts, TrackedBody::new(body, &activity));
            let app = app.clone();
            async move {
                let response = app.oneshot(request).await;
                drop(running);
                response
            }
        })
    };
    // The builder is a temporary: a local would be kept in this future,
    // so in every open connection, until it closes.
    let conn = http1::Builder::new()
        .keep_alive(true)
        .max_buf_size(limits.max_header_bytes.max(MIN_HEADER_BYTES))
        .max_header_size(limits.max_header_bytes)
        .serve_connection(TokioIo::new(ErrorBodies::new(io)), service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        let recheck = match activity.verdict(limits, tokio::time::Instant::now()) {
            Verdict::RecheckAt(at) => at,
            Verdict::Close(reason) => {
                tracker.count_close(reason);
                tracing::debug!(%peer, reason = reason.label(), "closing connection");
                return;
            }
        };
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(%peer, "connection ended: {e}");
                }
                return;
            }
            () = tokio::time::sleep_until(recheck) => {}
            _ = stop.changed(), if !stopping => {
                // Shutting down: a connection with no request being
                // handled (idle, or still sending headers) closes now, so
                // a slow client cannot hold the shutdown up; one with a
                // request answers it, then closes.
                if !activity.handling_request() {
                    return;
                }
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
