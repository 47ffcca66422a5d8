//! Forwarding to Synapse: every request presenced does not answer itself
//! goes to Synapse unchanged, bodies streamed both ways.
//!
//! Unchanged means: the method, the path and query as the client sent
//! them, every header but the hop-by-hop ones (they describe this one
//! connection, not the request), and the body as a stream. The client's
//! `Host` stays (Synapse's own reverse-proxy advice keeps it too), and the
//! client's address is appended to `X-Forwarded-For`, which Synapse reads
//! when its listener has `x_forwarded: true`. Synapse's answer comes back
//! the same way: status, headers less hop-by-hop, body streamed.
//!
//! Streamed means a body is never held whole: a 100 MB media upload
//! passes through in the chunks the connection delivers them in. No
//! timeout of presenced's own applies; the client's timing (a `/sync`
//! long-poll, a slow upload) is Synapse's to judge.
//!
//! Tokens die on their way through: a successful logout, logout/all,
//! deactivation or device deletion (the client's or the admin API's)
//! drops the cached answers for them at once (`tokens`).

use std::net::IpAddr;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response};
use ruma_common::OwnedUserId;

use super::upstream::UpstreamError;
use super::Companion;

/// Headers that belong to one connection (RFC 9110, section 7.6.1), plus
/// the proxy ones; never passed on in either direction.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Sends `request` to Synapse and streams its answer back. `client_ip` is
/// the connection's peer (for `X-Forwarded-For`), `token` the request's
/// access token if it has one (to drop it from the cache on logout).
pub async fn forward(
    companion: &Companion,
    request: Request<Body>,
    client_ip: Option<IpAddr>,
    token: Option<&str>,
) -> Result<Response<Body>, UpstreamError> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let revocation = Revocation::of(&parts.method, path);
    // Whose tokens a successful logout ends must be known before it
    // succeeds: afterwards Synapse no longer answers for the token.
    let revoked_user = match (&revocation, token) {
        (Some(Revocation::AllOfCaller), Some(token)) => {
            companion.tokens.owner(token).await.ok().map(|o| o.user_id)
        }
        _ => None,
    };
    let path_and_query = parts.uri.path_and_query().map_or(path, |pq| pq.as_str());
    let url = format!("{}{path_and_query}", companion.upstream.base_url());
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    if let Some(ip) = client_ip {
        append_forwarded_for(&mut headers, ip);
    }
    let answer = companion
        .upstream
        .http()
        .request(parts.method, &url)
        .headers(headers)
        .body(reqwest::Body::wrap_stream(body.into_data_stream()))
        .send()
        .await
        .map_err(|e| UpstreamError::Unreachable {
            url: companion.upstream.base_url().to_owned(),
            reason: e.without_url().to_string(),
        })?;
    if answer.status().is_success() {
        match (revocation, token) {
            (Some(Revocation::Caller), Some(token)) => companion.tokens.forget_token(token),
            (Some(Revocation::AllOfCaller), _) => {
                if let Some(user) = revoked_user {
                    companion.forget_user(&user);
                }
            }
            (Some(Revocation::AllOf(user)), _) => companion.forget_user(&user),
            _ => {}
        }
    }
    let mut response = Response::builder().status(answer.status().as_u16());
    if let Some(headers) = response.headers_mut() {
        *headers = answer.headers().clone();
        strip_hop_by_hop(headers);
    }
    Ok(response
        .body(Body::from_stream(answer.bytes_stream()))
        .expect("a status and headers from a parsed answer make a response"))
}

/// Removes the hop-by-hop headers, and those a `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// Appends `ip` to `X-Forwarded-For`, keeping what earlier proxies wrote
/// (several header lines become one list, in order).
fn append_forwarded_for(headers: &mut HeaderMap, ip: IpAddr) {
    let earlier: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let value = if earlier.is_empty() {
        ip.to_string()
    } else {
        format!("{}, {ip}", earlier.join(", "))
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert("x-forwarded-for", value);
    }
}

/// Which cached tokens a successful request ends.
#[derive(Debug, PartialEq, Eq)]
enum Revocation {
    /// The request's own token (`POST /logout`).
    Caller,
    /// Every token of the caller (`/logout/all`, `/account/deactivate`,
    /// deleting devices).
    AllOfCaller,
    /// Every token of a user the admin API names (deactivate, modify,
    /// delete; a device of theirs).
    AllOf(OwnedUserId),
}

impl Revocation {
    fn of(method: &axum::http::Method, path: &str) -> Option<Self> {
        use axum::http::Method;
        if let Some(rest) = path
            .strip_prefix("/_matrix/client/v3/")
            .or_else(|| path.strip_prefix("/_matrix/client/r0/"))
        {
            return match (method, rest) {
                (&Method::POST, "logout") => Some(Self::Caller),
                (&Method::POST, "logout/all" | "account/deactivate" | "delete_devices") => {
                    Some(Self::AllOfCaller)
                }
                (&Method::DELETE, device) if device.starts_with("devices/") => {
                    Some(Self::AllOfCaller)
                }
                _ => None,
            };
        }
        // The admin API: any change to a user (`/_synapse/admin/v1/
        // deactivate/{userId}`, `/_synapse/admin/v2/users/{userId}` and
        // what lies under it, such as their devices).
        if *method == Method::GET {
            return None;
        }
        let rest = path
            .strip_prefix("/_synapse/admin/v1/deactivate/")
            .or_else(|| path.strip_prefix("/_synapse/admin/v2/users/"))
            .or_else(|| path.strip_prefix("/_synapse/admin/v1/users/"))?;
        let segment = rest.split('/').next()?;
        let user = percent_decode(segment)?;
        OwnedUserId::try_from(user).ok().map(Self::AllOf)
    }
}

/// A percent-encoded path segment as text (`None` if not UTF-8 or badly
/// escaped).
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use axum::http::Method;

    use super::*;

    #[test]
    fn logouts_and_deactivations_are_recognised() {
        let of = |m: Method, p: &str| Revocation::of(&m, p);
        assert_eq!(
            of(Method::POST, "/_matrix/client/v3/logout"),
            Some(Revocation::Caller)
        );
        assert_eq!(
            of(Method::POST, "/_matrix/client/r0/logout/all"),
            Some(Revocation::AllOfCaller)
        );
        assert_eq!(
            of(Method::POST, "/_matrix/client/v3/account/deactivate"),
            Some(Revocation::AllOfCaller)
        );
        assert_eq!(
            of(Method::DELETE, "/_matrix/client/v3/devices/ABC"),
            Some(Revocation::AllOfCaller)
        );
        assert_eq!(
            of(Method::POST, "/_synapse/admin/v1/deactivate/%40bob%3Ax"),
            Some(Revocation::AllOf("@bob:x".try_into().unwrap()))
        );
        assert_eq!(
            of(Method::PUT, "/_synapse/admin/v2/users/@bob:x"),
            Some(Revocation::AllOf("@bob:x".try_into().unwrap()))
        );
        assert_eq!(of(Method::GET, "/_synapse/admin/v2/users/@bob:x"), None);
        assert_eq!(of(Method::GET, "/_matrix/client/v3/logout"), None);
        assert_eq!(of(Method::PUT, "/_matrix/client/v3/rooms/x/send"), None);
    }

    #[test]
    fn hop_by_hop_headers_go_and_forwarded_for_grows() {
        let mut headers = HeaderMap::new();
        headers.insert("connection", "keep-alive, x-private".parse().unwrap());
        headers.insert("x-private", "1".parse().unwrap());
        headers.insert("transfer-encoding", "chunked".parse().unwrap());
        headers.insert("authorization", "Bearer t".parse().unwrap());
        headers.append("x-forwarded-for", "10.0.0.1".parse().unwrap());
        headers.append("x-forwarded-for", "10.0.0.2".parse().unwrap());
        strip_hop_by_hop(&mut headers);
        append_forwarded_for(&mut headers, "127.0.0.1".parse().unwrap());
        assert!(headers.get("connection").is_none());
        assert!(headers.get("x-private").is_none());
        assert!(headers.get("transfer-encoding").is_none());
        assert_eq!(headers["authorization"], "Bearer t");
        assert_eq!(headers["x-forwarded-for"], "10.0.0.1, 10.0.0.2, 127.0.0.1");
    }
}
