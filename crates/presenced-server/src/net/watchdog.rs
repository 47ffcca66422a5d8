//! What a connection is doing, and when it has taken too long.
//!
//! hyper's own header timer also runs while a kept-alive connection waits
//! for its next request, so it cannot tell "slow headers" from "idle";
//! and a request whose body stops arriving has no timer at all. So each
//! connection keeps an [`Activity`] record, fed by its I/O ([`TrackedIo`]),
//! its requests ([`RequestGuard`]) and their bodies ([`TrackedBody`]), and
//! the connection task asks it for the next deadline:
//!
//! - a request is being handled and its body is still arriving: the last
//!   byte moved plus `body_read_timeout`, or, if sooner, the body's start
//!   plus `body_read_timeout` plus its bytes so far at `body_min_rate` (a
//!   body trickling one byte per almost-`body_read_timeout` would
//!   otherwise restart the first deadline for ever);
//! - a request is being handled, body done (a `/sync` long-poll): none;
//! - no request yet, or bytes of the next one have arrived: the start of
//!   those headers plus `header_read_timeout` (a new connection's headers
//!   start when it is accepted, so a silent connection is timed too);
//! - otherwise (idle between requests): the last byte moved plus
//!   `keep_alive_timeout`.
//!
//! The record is atomics touched by the connection's own task, so the cost
//! per read or write is a clock read and an uncontended store.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use hyper::body::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::caps::CloseReason;
use crate::config::connections::ConnectionLimits;

/// "No headers being read" in [`Activity::head_started`].
const NONE: u64 = 0;

/// One connection's activity. Times are milliseconds since `start`.
#[derive(Debug)]
pub(crate) struct Activity {
    start: Instant,
    last_io: AtomicU64,
    /// When the headers being read started, plus one; [`NONE`] otherwise.
    head_started: AtomicU64,
    in_flight: AtomicU32,
    bodies_pending: AtomicU32,
    /// When the body being read started (ms since `start`).
    body_started: AtomicU64,
    /// Bytes of that body read so far.
    body_bytes: AtomicU64,
}

/// What the connection task should do next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Close the connection now.
    Close(CloseReason),
    /// Look again at this instant.
    RecheckAt(Instant),
}

impl Activity {
    /// A connection accepted now: its first headers are due from now.
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
            last_io: AtomicU64::new(0),
            head_started: AtomicU64::new(1),
            in_flight: AtomicU32::new(0),
            bodies_pending: AtomicU32::new(0),
            body_started: AtomicU64::new(0),
            body_bytes: AtomicU64::new(0),
        }
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.start).as_millis()).unwrap_or(u64::MAX)
    }

    fn at(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms)
    }

    fn read_at(&self, at: Instant) {
        let now = self.ms(at);
        self.last_io.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_started.load(Ordering::Relaxed) == NONE
        {
            self.head_started.store(now + 1, Ordering::Relaxed);
        }
    }

    fn wrote_at(&self, at: Instant) {
        self.last_io.store(self.ms(at), Ordering::Relaxed);
    }

    /// A request's headers are complete and its handler starts.
    pub(crate) fn request_started(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_started.store(NONE, Ordering::Relaxed);
        RequestGuard(Arc::clone(self))
    }

    /// A request body starts arriving now.
    fn body_started_at(&self, at: Instant) {
        self.bodies_pending.fetch_add(1, Ordering::Relaxed);
        self.body_started.store(self.ms(at), Ordering::Relaxed);
        self.body_bytes.store(0, Ordering::Relaxed);
    }

    /// Whether a request is being handled (its headers are complete).
    pub(crate) fn handling_request(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0
    }

    /// Whether the connection has outlived its current deadline at `now`.
    pub(crate) fn verdict(&self, limits: &ConnectionLimits, now: Instant) -> Verdict {
        let (due, reason) = if self.in_flight.load(Ordering::Relaxed) > 0 {
            if self.bodies_pending.load(Ordering::Relaxed) > 0 {
                let stalled =
                    self.at(self.last_io.load(Ordering::Relaxed)) + limits.body_read_timeout;
                let earned_ms = self.body_bytes.load(Ordering::Relaxed).saturating_mul(1000)
                    / limits.body_min_rate.max(1);
                let too_slow = self.at(self.body_started.load(Ordering::Relaxed))
                    + limits.body_read_timeout
                    + Duration::from_millis(earned_ms);
                if too_slow < stalled {
                    (too_slow, CloseReason::BodyTooSlow)
                } else {
                    (stalled, CloseReason::BodyTimeout)
                }
            } else {
                // Handled as long as the handler wants (long-polls); look
                // again soon enough to catch a later deadline on time.
                let shortest = limits
                    .header_read_timeout
                    .min(limits.keep_alive_timeout)
                    .min(limits.body_read_timeout);
                return Verdict::RecheckAt(now + shortest);
            }
        } else {
            match self.head_started.load(Ordering::Relaxed) {
                NONE => {
                    let last = self.at(self.last_io.load(Ordering::Relaxed));
                    (
                        last + limits.keep_alive_timeout,
                        CloseReason::KeepAliveTimeout,
                    )
                }
                started => (
                    self.at(started - 1) + limits.header_read_timeout,
                    CloseReason::HeaderTimeout,
                ),
            }
        };
        if now >= due {
            Verdict::Close(reason)
        } else {
            Verdict::RecheckAt(due)
        }
    }
}

/// Held while a request is being handled.
pub(crate) struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The connection's byte stream, reporting every transfer to [`Activity`].
pub(crate) struct TrackedIo<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> TrackedIo<S> {
    pub(crate) fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TrackedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read_at(Instant::now());
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TrackedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote_at(Instant::now());
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote_at(Instant::now());
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A request body that tells [`Activity`] while it is still arriving.
pub(crate) struct TrackedBody<B> {
    inner: B,
    /// Set while counted in `bodies_pending`.
    activity: Option<Arc<Activity>>,
}

impl<B: Body> TrackedBody<B> {
    pub(crate) fn new(inner: B, activity: &Arc<Activity>) -> Self {
        let activity = (!inner.is_end_stream()).then(|| {
            activity.body_started_at(Instant::now());
            Arc::clone(activity)
        });
        Self { inner, activity }
    }
}

impl<B> TrackedBody<B> {
    fn done(&mut self) {
        if let Some(activity) = self.activity.take() {
            activity.bodies_pending.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl<B> Drop for TrackedBody<B> {
    fn drop(&mut self) {
        self.done();
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for TrackedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let result = Pin::new(&mut self.inner).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(activity)) = (&result, &self.activity) {
            if let Some(data) = frame.data_ref() {
                activity
                    .body_bytes
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        match &result {
            Poll::Ready(None | Some(Err(_))) => self.done(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.done(),
            _ => {}
        }
        result
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::connections::ConnectionsConfig;

    fn limits() -> ConnectionLimits {
        ConnectionsConfig {
            header_read_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(20),
            body_min_rate: 1024,
            ..ConnectionsConfig::default()
        }
        .resolve(None)
    }

    #[test]
    fn deadlines_follow_the_connection() {
        let limits = limits();
        let a = Arc::new(Activity::new());
        let t0 = a.start;
        // Silent since accepted: the header deadline.
        assert_eq!(
            a.verdict(&limits, t0),
            Verdict::RecheckAt(t0 + Duration::from_secs(10))
        );
        assert_eq!(
            a.verdict(&limits, t0 + Duration::from_secs(10)),
            Verdict::Close(CloseReason::HeaderTimeout)
        );
        // Bytes trickling in do not move the header deadline.
        a.read_at(t0 + Duration::from_secs(5));
        assert_eq!(
            a.verdict(&limits, t0 + Duration::from_secs(10)),
            Verdict::Close(CloseReason::HeaderTimeout)
        );
        // A request with a body: timed by the body's bytes.
        let guard = a.request_started();
        a.body_started_at(t0 + Duration::from_secs(5));
        a.body_bytes.store(20 * 1024 * 1024, Ordering::Relaxed);
        assert_eq!(
            a.verdict(&limits, t0 + Duration::from_secs(24)),
            Verdict::RecheckAt(t0 + Duration::from_secs(25))
        );
        assert_eq!(
            a.verdict(&limits, t0 + Duration::from_secs(25)),
            Verdict::Close(CloseReason::BodyTimeout)
        );
        // Body read: the handler may take as long as it likes.
        a.bodies_pending.fetch_sub(1, Ordering::Relaxed);
        let late = t0 + Duration::from_secs(500);
        assert_eq!(
            a.verdict(&limits, late),
            Verdict::RecheckAt(late + Duration::from_secs(10))
        );
        // Answered: idle, timed from the last byte written.
        a.wrote_at(t0 + Duration::from_secs(100));
        drop(guard);
        assert_eq!(
            a.verdict(&limits, t0 + Duration::from_secs(120)),
            Verdict::RecheckAt(t0 + Duration::from_secs(160))
        );
        assert_eq!(
            a.verdict(&limits, t0 + Duration::from_secs(160)),
            Verdict::Close(CloseReason::KeepAliveTimeout)
        );
        // The next request's first byte starts its header deadline.
        a.read_at(t0 + Duration::from_secs(130));
        assert_eq!(
            a.verdict(&limits, t0 + Duration::from_secs(131)),
            Verdict::RecheckAt(t0 + Duration::from_secs(140))
        );
    }

    #[test]
    fn a_trickling_body_is_due_at_the_minimum_rate() {
        let limits = limits();
        let a = Arc::new(Activity::new());
        let t0 = a.start;
        let _guard = a.request_started();
        a.body_started_at(t0);
        // One byte every 19 s never trips the 20 s stall deadline...
        for i in 1..=3u64 {
            a.read_at(t0 + Duration::from_secs(19 * i));
            a.body_bytes.fetch_add(1, Ordering::Relaxed);
        }
        // ...but 3 bytes in 57 s is far below 1024 B/s: the whole body was
        // due at 20 s plus 3 bytes' worth (3 ms).
        assert_eq!(
            a.verdict(&limits, t0 + Duration::from_secs(57)),
            Verdict::Close(CloseReason::BodyTooSlow)
        );
        // A body keeping up the rate is timed by its stalls alone.
        let b = Arc::new(Activity::new());
        let _guard = b.request_started();
        b.body_started_at(b.start);
        b.read_at(b.start + Duration::from_secs(50));
        b.body_bytes.store(100 * 1024, Ordering::Relaxed);
        assert_eq!(
            b.verdict(&limits, b.start + Duration::from_secs(60)),
            Verdict::RecheckAt(b.start + Duration::from_secs(70))
        );
    }
}
