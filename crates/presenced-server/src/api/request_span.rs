//! The tracing span of each HTTP request, with secrets taken out of its URI.
//!
//! Every line logged while a request is served carries this span's fields,
//! at every level (a "room created" line at info level shows the URI it
//! was created through). Clients may put their access token in the query
//! (`?access_token=`, still allowed by the spec), so the URI is logged
//! with the values of secret-carrying parameters replaced; everything
//! else that could carry a secret (headers, bodies) is never in the span.
//! Code that logs a URI for its own reasons uses [`redacted_uri`] too.

use axum::http::{Request, Uri};
use tracing::Span;

/// Query parameters whose values are secrets. Compared ASCII
/// case-insensitively, after percent-decoding the name.
const SECRET_PARAMS: &[&str] = &[
    "access_token",
    "token",
    "login_token",
    "logintoken",
    "password",
    "mac",
    "secret",
];

/// What replaces a secret value.
const REDACTED: &str = "<redacted>";

/// The span of one request: method, redacted URI and HTTP version.
pub(crate) fn request_span<B>(request: &Request<B>) -> Span {
    tracing::debug_span!(
        "request",
        method = %request.method(),
        uri = %redacted_uri(request.uri()),
        version = ?request.version(),
    )
}

/// `uri`'s path and query, with the value of every secret-carrying query
/// parameter replaced by `<redacted>`.
pub fn redacted_uri(uri: &Uri) -> String {
    let path = uri.path();
    let Some(query) = uri.query() else {
        return path.to_owned();
    };
    let mut out = String::with_capacity(path.len() + 1 + query.len());
    out.push_str(path);
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((name, _)) if is_secret(name) => {
                out.push_str(name);
                out.push('=');
                out.push_str(REDACTED);
            }
            // A bare name cannot leak a value; a secret name without `=`
            // is kept as is.
            _ => out.push_str(pair),
        }
    }
    out
}

fn is_secret(name: &str) -> bool {
    // `access%5Ftoken` is `access_token` to the query parser.
    let decoded = percent_decode(name);
    SECRET_PARAMS
        .iter()
        .any(|secret| decoded.eq_ignore_ascii_case(secret))
}

/// Percent-decoding of a query parameter name (`+` is a space); invalid
/// escapes are kept as written.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(uri: &str) -> String {
        redacted_uri(&uri.parse().unwrap())
    }

    #[test]
    fn secret_values_are_replaced_and_the_rest_kept() {
        assert_eq!(
            r("/_matrix/client/v3/createRoom?access_token=pd_abc&x=1"),
            "/_matrix/client/v3/createRoom?access_token=<redacted>&x=1"
        );
        assert_eq!(
            r("/a?x=1&ACCESS_TOKEN=s&access%5ftoken=t&token=u"),
            "/a?x=1&ACCESS_TOKEN=<redacted>&access%5ftoken=<redacted>&token=<redacted>"
        );
        assert_eq!(r("/a?since=s1&timeout=0"), "/a?since=s1&timeout=0");
        assert_eq!(r("/a"), "/a");
        assert_eq!(r("/a?access_token"), "/a?access_token");
    }

    #[test]
    fn bad_escapes_do_not_panic() {
        assert_eq!(r("/a?%=1&%4=2&%zz=3"), "/a?%=1&%4=2&%zz=3");
    }
}
