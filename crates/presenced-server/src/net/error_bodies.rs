//! Matrix error bodies on the answers hyper writes by itself.
//!
//! When a request cannot be parsed (headers over `max_header_bytes`, bytes
//! that are not a valid request line or URI, an unsupported version) hyper
//! answers 4xx/5xx and closes, without asking the application, and its
//! answer has an empty body. Every answer presenced gives is meant to carry
//! a Matrix `errcode`, so [`ErrorBodies`] sits between hyper and the
//! connection and swaps such an answer for the same status and headers
//! with a JSON error body.
//!
//! An answer is hyper's own when it is a whole 4xx/5xx head with
//! `content-length: 0` and `connection: close` in one write: the
//! application's errors (`ApiError`) always have a body, so none of them
//! looks like that.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A complete HTTP/1.1 answer with a Matrix error body. `head` is the
/// status line and headers (CRLF-separated, without the blank line) to
/// keep; any `content-length` or `content-type` in it is replaced.
pub(crate) fn with_error_body(head: &str, errcode: &str, error: &str) -> Vec<u8> {
    let body = serde_json::json!({ "errcode": errcode, "error": error }).to_string();
    let mut out = String::with_capacity(head.len() + body.len() + 80);
    for line in head.split("\r\n").filter(|l| !l.is_empty()) {
        let name = line.split(':').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("content-type")
        {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("content-type: application/json\r\n");
    out.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    out.push_str(&body);
    out.into_bytes()
}

/// The Matrix answer for one of hyper's bodiless error answers, or `None`
/// when `bytes` is anything else.
fn replacement(bytes: &[u8]) -> Option<Vec<u8>> {
    let status = bytes.strip_prefix(b"HTTP/1.1 ")?;
    if !matches!(status.first(), Some(b'4' | b'5')) || !bytes.ends_with(b"\r\n\r\n") {
        return None;
    }
    let head = std::str::from_utf8(bytes).ok()?.trim_end();
    let has = |wanted: &str| {
        head.split("\r\n")
            .skip(1)
            .any(|line| line.eq_ignore_ascii_case(wanted))
    };
    if !has("content-length: 0") || !has("connection: close") {
        return None;
    }
    let (errcode, error) = match &status[..3] {
        b"431" => ("M_TOO_LARGE", "Request headers are too large"),
        b"414" => ("M_TOO_LARGE", "Request URI is too long"),
        b"505" => ("M_UNRECOGNIZED", "HTTP version not supported"),
        _ => ("M_UNKNOWN", "Malformed HTTP request"),
    };
    Some(with_error_body(head, errcode, error))
}

/// A connection's byte stream whose bodiless hyper error answers get a
/// Matrix error body (see the module doc).
pub(crate) struct ErrorBodies<S> {
    inner: S,
    /// The answer being written in place of hyper's, how much of it is
    /// written, and the length of hyper's write it stands for.
    swapped: Option<(Vec<u8>, usize, usize)>,
}

impl<S> ErrorBodies<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner,
            swapped: None,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ErrorBodies<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> ErrorBodies<S> {
    /// Writes the swapped answer to its end; then reports hyper's whole
    /// write as done.
    fn poll_swapped(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        while let Some((answer, written, stands_for)) = &mut self.swapped {
            if *written == answer.len() {
                let n = *stands_for;
                self.swapped = None;
                return Poll::Ready(Ok(n));
            }
            match ready!(Pin::new(&mut self.inner).poll_write(cx, &answer[*written..])) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => *written += n,
                Err(e) => {
                    self.swapped = None;
                    return Poll::Ready(Err(e));
                }
            }
        }
        unreachable!("poll_swapped without a swapped answer")
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ErrorBodies<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.swapped.is_none() {
            match replacement(buf) {
                Some(answer) => self.swapped = Some((answer, 0, buf.len())),
                None => return Pin::new(&mut self.inner).poll_write(cx, buf),
            }
        }
        self.poll_swapped(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // hyper's error answer is one buffer; a head followed by a body
        // is never swapped.
        let single = bufs.iter().filter(|b| !b.is_empty()).count() == 1;
        if self.swapped.is_none() {
            match bufs.iter().find(|b| !b.is_empty()) {
                Some(first) if single => match replacement(first) {
                    Some(answer) => self.swapped = Some((answer, 0, first.len())),
                    None => return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs),
                },
                _ => return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs),
            }
        }
        self.poll_swapped(cx)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(answer: &[u8]) -> (String, serde_json::Value) {
        let text = String::from_utf8(answer.to_vec()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .split("\r\n")
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, body.len(), "{text:?}");
        (head.to_owned(), serde_json::from_str(body).unwrap())
    }

    #[test]
    fn hyper_error_answers_get_a_matrix_body() {
        let hyper = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\n\
content-length: 0\r\ndate: Mon, 07 Dec 2026 16:42:09 GMT\r\n\r\n";
        let (head, body) = parts(&replacement(hyper).unwrap());
        assert!(head.starts_with("HTTP/1.1 431 "), "{head}");
        assert!(head.contains("connection: close\r\ndate: "), "{head}");
        assert_eq!(body["errcode"], "M_TOO_LARGE");
        let bad = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(parts(&replacement(bad).unwrap()).1["errcode"], "M_UNKNOWN");
    }

    #[test]
    fn other_writes_pass_unchanged() {
        for bytes in [
            &b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 30\r\nconnection: close\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
            b"{\"errcode\":\"M_UNKNOWN\"}",
        ] {
            assert!(
                replacement(bytes).is_none(),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn the_length_always_matches_the_body() {
        let answer = with_error_body(
            "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nConnection: close",
            "M_UNKNOWN",
            "Too many connections",
        );
        let (head, body) = parts(&answer);
        assert!(head.contains("Retry-After: 5"));
        assert_eq!(body["error"], "Too many connections");
    }
}
