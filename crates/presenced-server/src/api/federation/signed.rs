//! `SignedJson`: the extractor for federation requests. The header and the
//! origin's key are checked before the body is read, and the body is read
//! only with room in the federation body budget (`body_budget`). It yields the
//! authenticated origin and the JSON body, or fails with 401
//! `M_UNAUTHORIZED` (missing, malformed, misaddressed or unverifiable
//! authorization, or the origin's key not looked up: failed recently or
//! too many look-ups running) or 403 `M_FORBIDDEN` (origin not in
//! `federation_domain_whitelist`, answered before any key look-up; Synapse
//! 1.163 answers this case with 403 `M_FORBIDDEN` too).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, OriginalUri, Request};
use axum::http::{header, StatusCode};
use ruma_common::OwnedServerName;
use serde_json::Value;

use crate::api::error::ApiError;
use crate::api::state::AppState;
use crate::federation::auth::{AuthError, Verifier};
use crate::federation::keys::KeyError;
use crate::util::clock;

/// A verified federation request with a JSON object body.
pub(crate) struct SignedJson {
    /// The server that signed the request.
    pub(crate) origin: OwnedServerName,
    /// The body.
    pub(crate) body: Value,
    /// The request as it came (headers, URI) and its body's bytes, for
    /// companion mode, which passes it on to Synapse unchanged.
    pub(crate) raw: (axum::http::request::Parts, Bytes),
    /// The body's room in the budget, held while the handler uses it.
    pub(crate) _room: tokio::sync::OwnedSemaphorePermit,
}

impl FromRequest<Arc<AppState>> for SignedJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let authorization = parts.headers.get(header::AUTHORIZATION).cloned();
        // The signature covers the URI as the peer sent it; a nested
        // router would have stripped a prefix from `parts.uri`.
        let uri = parts
            .extensions
            .get::<OriginalUri>()
            .map_or(&parts.uri, |o| &o.0);
        let logged_uri = crate::api::request_span::redacted_uri(uri);
        let uri = uri
            .path_and_query()
            .map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned());
        let method = parts.method.clone();
        let refused = |e: AuthError| {
            state.metrics.federation_refused();
            match &e {
                AuthError::Key(KeyError::RateLimited { .. }) => {
                    state.metrics.key_lookup_refused(false);
                }
                AuthError::Key(KeyError::Busy { .. }) => state.metrics.key_lookup_refused(true),
                _ => {}
            }
            tracing::info!(%method, uri = %logged_uri, "federation request refused: {e}");
            ApiError::from(e)
        };
        let config = state.config.clone();
        let allowed = move |server: &ruma_common::ServerName| config.federation_allowed(server);
        let verifier = Verifier {
            server_name: &state.server_name,
            own_key: &state.signing_key,
            keys: &state.remote_keys,
            allowed: &allowed,
        };
        // Header, origin and key first: an unauthenticated body is never
        // read (see `federation::auth`).
        let authorized = verifier
            .authorize(authorization.as_ref(), clock::now())
            .await
            .map_err(refused)?;
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        let room = state
            .federation_bodies
            .reserve(declared.unwrap_or(super::MAX_TRANSACTION_BYTES))
            .await?;
        let kept = parts.clone();
        let bytes = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::TooLarge
                } else {
                    ApiError::NotJson(rejection.body_text())
                }
            })?;
        // The body must be JSON before its signature can be checked (the
        // signature covers the parsed content, not the bytes).
        let body: Value = serde_json::from_slice(&bytes)
            .map_err(|_| ApiError::NotJson("Content not JSON.".to_owned()))?;
        if !body.is_object() {
            return Err(ApiError::NotJson(
                "Content must be a JSON object.".to_owned(),
            ));
        }
        let origin = authorized.verify(&method, &uri, &bytes).map_err(refused)?;
        Ok(Self {
            origin,
            body,
            raw: (kept, bytes),
            _room: room,
        })
    }
}
