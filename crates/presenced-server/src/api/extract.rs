//! Request extractors whose failures are Matrix errors.
//!
//! axum's own extractors answer rejections in plain text; these wrap them so
//! every failure goes through [`ApiError`]: bodies that are not JSON give
//! `M_NOT_JSON`, JSON of the wrong shape `M_BAD_JSON`, malformed path
//! segments `M_INVALID_PARAM`, and a missing or dead token
//! `M_MISSING_TOKEN` / `M_UNKNOWN_TOKEN`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use ruma_common::{OwnedDeviceId, OwnedUserId};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::ids;
use crate::state::AppState;

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
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|_| ApiError::NotJson("Content not JSON.".to_owned()))?;
    if !value.is_object() {
        return Err(ApiError::NotJson(
            "Content must be a JSON object.".to_owned(),
        ));
    }
    serde_json::from_value(value).map_err(|e| ApiError::BadJson(e.to_string()))
}

/// Path parameters; a segment that does not parse (say, a room ID without
/// `!`) is `M_INVALID_PARAM`.
pub struct MatrixPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for MatrixPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| Self(t))
            .map_err(|rejection| ApiError::InvalidParam(rejection.body_text()))
    }
}

/// Query parameters; a malformed query string is `M_INVALID_PARAM`.
pub struct MatrixQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for MatrixQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(t)| Self(t))
            .map_err(|rejection| ApiError::InvalidParam(rejection.body_text()))
    }
}

/// The authenticated caller, from `Authorization: Bearer …` or the
/// deprecated `access_token` query parameter.
#[derive(Clone, Debug)]
pub struct AuthUser {
    /// The user.
    pub user_id: OwnedUserId,
    /// The device the token belongs to.
    pub device_id: OwnedDeviceId,
    /// Server admin.
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
        let token = bearer_token(parts).ok_or(ApiError::MissingToken)?;
        let token_hash = ids::hash_token(&token);
        let owner = match state.tokens.get(&token_hash) {
            Ok(owner) => owner,
            Err(generation) => {
                let lookup = token_hash.clone();
                let owner = state
                    .db(move |s| s.token_owner(&lookup))
                    .await?
                    .ok_or(ApiError::UnknownToken)?;
                state
                    .tokens
                    .fill(token_hash.clone(), owner.clone(), generation);
                owner
            }
        };
        Ok(Self {
            user_id: owner.user_id,
            device_id: owner.device_id,
            admin: owner.admin,
            token_hash,
        })
    }
}

/// The access token of a request, if it carries one.
pub(crate) fn bearer_token(parts: &Parts) -> Option<String> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned())
            .filter(|t| !t.is_empty());
    }
    let Query(query) = Query::<HashMap<String, String>>::try_from_uri(&parts.uri).ok()?;
    query.get("access_token").filter(|t| !t.is_empty()).cloned()
}
