//! Request extractors whose failures are Matrix errors.
//!
//! axum's own extractors answer rejections in plain text; these wrap them so
//! every failure goes through [`ApiError`]: bodies that are not JSON give
//! `M_NOT_JSON`, JSON of the wrong shape `M_BAD_JSON`, malformed path
//! segments `M_INVALID_PARAM`, and a missing or dead token
//! `M_MISSING_TOKEN` / `M_UNKNOWN_TOKEN`. Text with U+0000 in it is
//! refused here, for every endpoint (see `nul`): `M_BAD_JSON` in a body,
//! `M_INVALID_PARAM` in a path or query.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use ruma_common::{OwnedDeviceId, OwnedUserId};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::nul;
use crate::api::state::AppState;

/// A JSON request body. The `Content-Type` header is not checked: several
/// Matrix clients omit it, and Synapse does not require it either.
pub struct MatrixJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for MatrixJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = body_bytes(req, state).await?;
        parse_json(&bytes).map(Self)
    }
}

/// A JSON body that may be absent: an empty body reads as `T::default()`
/// (for endpoints such as `/join` whose body has only optional fields).
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        parse_json(&bytes).map(Self)
    }
}

async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge
        } else {
            ApiError::NotJson(rejection.body_text())
        }
    })
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // The rare body that may carry a NUL escape is read as a tree first,
    // to look at every string (`nul`); the others skip this.
    if nul::may_hold_nul_escape(bytes) {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|_| not_json(bytes))?;
        if nul::value_has_nul(&value) {
            return Err(ApiError::BadJson(
                "Text in the request contains U+0000 (NUL), which is not allowed".to_owned(),
            ));
        }
    }
    // The common case in one pass, straight into `T` (no JSON tree): a
    // JSON object that fits. Anything else takes the two-step path below,
    // which tells the failures apart.
    let object = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if object {
        if let Ok(value) = serde_json::from_slice(bytes) {
            return Ok(value);
        }
    }
    // Two steps so the two failures get their two codes.
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|_| not_json(bytes))?;
    if !value.is_object() {
        return Err(ApiError::NotJson(
            "Content must be a JSON object.".to_owned(),
        ));
    }
    serde_json::from_value(value).map_err(|e| ApiError::BadJson(e.to_string()))
}

/// Deepest nesting of arrays and objects a JSON body may have: serde_json's
/// own recursion limit (it refuses the 128th level), which is what keeps a
/// 100,000-deep body from overflowing the stack. Deeper bodies are
/// well-formed JSON of a shape we refuse, so `M_BAD_JSON`.
pub const MAX_JSON_DEPTH: usize = 127;

/// The error for a body serde_json could not read: too deep (`M_BAD_JSON`),
/// or not JSON at all (`M_NOT_JSON`). Only failures pay for the scan.
fn not_json(bytes: &[u8]) -> ApiError {
    if nesting_exceeds(bytes, MAX_JSON_DEPTH) {
        ApiError::BadJson(format!(
            "JSON is nested more than {MAX_JSON_DEPTH} levels deep"
        ))
    } else {
        ApiError::NotJson("Content not JSON.".to_owned())
    }
}

/// Whether arrays and objects nest more than `max` deep (brackets inside
/// strings do not count). A linear scan without recursion.
pub(crate) fn nesting_exceeds(bytes: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Path parameters; a segment that does not parse (say, a room ID without
/// `!`) or that decodes to text with U+0000 is `M_INVALID_PARAM`.
pub struct MatrixPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for MatrixPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        if nul::uri_part_has_nul(parts.uri.path()) {
            return Err(ApiError::InvalidParam(
                "A path parameter contains U+0000 (%00), which is not allowed".to_owned(),
            ));
        }
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| Self(t))
            .map_err(|rejection| ApiError::InvalidParam(rejection.body_text()))
    }
}

/// Query parameters; a malformed query string, or one that decodes to
/// text with U+0000, is `M_INVALID_PARAM`.
pub struct MatrixQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for MatrixQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        if parts.uri.query().is_some_and(nul::uri_part_has_nul) {
            return Err(ApiError::InvalidParam(
                "A query parameter contains U+0000 (%00), which is not allowed".to_owned(),
            ));
        }
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(t)| Self(t))
            .map_err(|rejection| ApiError::InvalidParam(rejection.body_text()))
    }
}

/// The authenticated caller, from `Authorization: Bearer …` or the
/// deprecated `access_token` query parameter (not both: see
/// [`bearer_token`]).
#[derive(Clone, Debug)]
pub struct AuthUser {
    /// The user.
    pub user_id: OwnedUserId,
    /// The device the token belongs to.
    pub device_id: OwnedDeviceId,
    /// A presenced server admin. Always false for a user of Synapse
    /// (companion mode): whether they are Synapse's admin is not asked.
    pub admin: bool,
    /// The stored form of the token (for logout).
    pub token_hash: String,
}

impl FromRequestParts<Arc<AppState>> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let token = bearer_token(parts)?.ok_or(ApiError::MissingToken)?;
        // Standalone: presenced's own tokens; companion: Synapse's answer
        // (see `homeserver::identity`).
        let caller = state.homeserver.caller(&token).await?;
        Ok(Self {
            user_id: caller.user_id,
            device_id: caller.device_id,
            admin: caller.admin,
            token_hash: caller.token_hash,
        })
    }
}

/// The access token of a request, if it carries one. A request with both
/// an `Authorization` header and an `access_token` query parameter is
/// refused (401 `M_MISSING_TOKEN`, as Synapse does) rather than picking
/// one: the two could name different users, and whichever we chose, a
/// proxy or log reading the other would disagree about who is asking.
pub(crate) fn bearer_token(parts: &Parts) -> Result<Option<String>, ApiError> {
    let query_token = query_token(parts);
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return Ok(query_token.filter(|t| !t.is_empty()));
    };
    if query_token.is_some() {
        return Err(ApiError::TokenGivenTwice);
    }
    let Some((scheme, token)) = value.to_str().ok().and_then(|v| v.split_once(' ')) else {
        return Ok(None);
    };
    Ok(scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
        .filter(|t| !t.is_empty()))
}

/// The `access_token` query parameter, present even if empty (an empty
/// one next to a header is still two ways of giving the token). Most
/// requests have no query, or none that names it or escapes anything
/// (`access%5Ftoken` names it too): those skip the parse.
fn query_token(parts: &Parts) -> Option<String> {
    let named = |q: &str| q.contains("access_token") || q.contains('%');
    if !parts.uri.query().is_some_and(named) {
        return None;
    }
    let Query(query) = Query::<HashMap<String, String>>::try_from_uri(&parts.uri).ok()?;
    query.get("access_token").cloned()
}

/// The client's IP address, for the per-address rate limits: the leftmost
/// `X-Forwarded-For` entry when a listener is configured with
/// `x_forwarded: true` (a reverse proxy in front), else the peer of the
/// connection. `None` when neither is known (a connection served without
/// connect info, such as a TLS listener today): the per-address limits
/// then do not apply, rather than lumping every such client together.
///
/// `x_forwarded` is read from the whole config, not per listener: with a
/// proxied listener next to a direct one, a client of the direct one could
/// pick its address (only to dodge the per-address limits; the per-account
/// ones still hold).
pub struct ClientAddr(pub Option<IpAddr>);

impl FromRequestParts<Arc<AppState>> for ClientAddr {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        if state.config.listeners.iter().any(|l| l.x_forwarded) {
            let forwarded = parts
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .and_then(|first| first.trim().parse().ok());
            if forwarded.is_some() {
                return Ok(Self(forwarded));
            }
        }
        Ok(Self(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_counted_outside_strings_only() {
        assert!(!nesting_exceeds(br#"{"a": [[1]]}"#, 3));
        assert!(nesting_exceeds(br#"{"a": [[[1]]]}"#, 3));
        assert!(!nesting_exceeds(br#"{"a": "[[[[[[\"[[["}"#, 1));
    }

    #[test]
    fn a_very_deep_body_is_bad_json_not_a_stack_overflow() {
        let deep = format!("{{\"a\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        let err = parse_json::<serde_json::Value>(deep.as_bytes()).unwrap_err();
        assert!(matches!(err, ApiError::BadJson(_)), "{err:?}");
        // Just under the limit still parses.
        let ok = format!(
            "{}{}",
            "[".repeat(MAX_JSON_DEPTH - 1),
            "]".repeat(MAX_JSON_DEPTH - 1)
        );
        let body = format!("{{\"a\": {ok}}}");
        assert!(parse_json::<serde_json::Value>(body.as_bytes()).is_ok());
    }
}
