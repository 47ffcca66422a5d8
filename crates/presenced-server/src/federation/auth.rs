//! Checking the X-Matrix authorization of an incoming federation request.
//!
//! The order matters: everything that can be decided from the header alone
//! (present, well-formed, addressed to us, origin allowed by
//! `federation_domain_whitelist`) is checked before any key is fetched, so a
//! request we would refuse anyway never makes us contact its claimed origin;
//! and the key is found before the body is read ([`Verifier::authorize`],
//! then [`Authorized::verify`]), so an unauthenticated body is never read.
//! The signature covers method, URI (path and query as sent), origin,
//! destination and the JSON body; ruma's `XMatrix::verify_request` checks it.

use std::collections::BTreeMap;

use axum::http::{HeaderValue, Method, Request};
use presenced_engine::Timestamp;
use ruma_common::{OwnedServerName, ServerName};
use ruma_federation_api::authentication::{XMatrix, XMatrixParseError};
use ruma_signatures::PublicKeyMap;

use super::keys::{KeyError, RemoteKeyCache};
use super::ServerSigningKey;

/// Why a federation request is refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("missing Authorization header")]
    Missing,
    /// The header is not a valid X-Matrix authorization.
    #[error("malformed X-Matrix authorization: {0}")]
    Malformed(String),
    /// The header names another server as `destination`.
    #[error("request is for {0}, not for this server")]
    WrongDestination(OwnedServerName),
    /// `federation_domain_whitelist` does not list the origin.
    #[error("federation with {0} is not allowed")]
    NotAllowed(OwnedServerName),
    /// The origin's key could not be found.
    #[error("cannot check the signature: {0}")]
    Key(#[from] KeyError),
    /// The signature does not match the request.
    #[error("invalid signature: {0}")]
    BadSignature(String),
}

/// What a request must be checked against.
pub struct Verifier<'a> {
    /// This server's name (the only acceptable `destination`).
    pub server_name: &'a ServerName,
    /// Our own key, for requests that claim to come from ourselves.
    pub own_key: &'a ServerSigningKey,
    /// Other servers' keys.
    pub keys: &'a RemoteKeyCache,
    /// Whether an origin may talk to us (`federation_domain_whitelist`).
    pub allowed: &'a (dyn Fn(&ServerName) -> bool + Sync),
}

impl Verifier<'_> {
    /// Checks what can be checked before the body is read: the header
    /// (present, well-formed, addressed to us, origin allowed) and the
    /// origin's key. A request that fails here is refused without its
    /// body ever being read, so a body costs memory only when its sender
    /// could have signed it.
    pub async fn authorize(
        &self,
        authorization: Option<&HeaderValue>,
        now: Timestamp,
    ) -> Result<Authorized, AuthError> {
        let header = authorization.ok_or(AuthError::Missing)?;
        let header = header
            .to_str()
            .map_err(|_| AuthError::Malformed("not visible ASCII".to_owned()))?;
        let x_matrix = XMatrix::parse(header).map_err(|e| AuthError::Malformed(describe(&e)))?;
        if let Some(destination) = &x_matrix.destination {
            if destination != self.server_name {
                return Err(AuthError::WrongDestination(destination.clone()));
            }
        }
        let origin = x_matrix.origin.clone();
        if !(self.allowed)(&origin) {
            return Err(AuthError::NotAllowed(origin));
        }
        let key_id = x_matrix.key.as_str();
        let public_key = if origin == self.server_name {
            (key_id == self.own_key.key_id())
                .then(|| ruma_common::serde::Base64::parse(self.own_key.public_key_base64()).ok())
                .flatten()
                .ok_or_else(|| KeyError::UnknownKey {
                    server: origin.clone(),
                    key_id: key_id.to_owned(),
                })?
        } else {
            self.keys.key(&origin, key_id, now).await?
        };
        let public_keys: PublicKeyMap = BTreeMap::from([(
            origin.as_str().to_owned(),
            BTreeMap::from([(key_id.to_owned(), public_key)]),
        )]);
        Ok(Authorized {
            x_matrix,
            public_keys,
            server_name: self.server_name.to_owned(),
        })
    }
}

/// A request whose header and key passed [`Verifier::authorize`]; its
/// signature is checked once the body is read.
pub struct Authorized {
    x_matrix: XMatrix,
    public_keys: PublicKeyMap,
    server_name: OwnedServerName,
}

impl Authorized {
    /// Checks the signature over method, `uri` (path and query as
    /// received) and `body` (the raw body; empty for none); returns the
    /// authenticated origin.
    pub fn verify(
        self,
        method: &Method,
        uri: &str,
        body: &[u8],
    ) -> Result<OwnedServerName, AuthError> {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .body(body)
            .map_err(|_| AuthError::Malformed("unusable request URI".to_owned()))?;
        self.x_matrix
            .verify_request(&request, &self.server_name, &self.public_keys)
            .map_err(|e| AuthError::BadSignature(e.to_string()))?;
        Ok(self.x_matrix.origin)
    }
}

/// What is wrong with an Authorization header, in words that never quote
/// it: the header may hold a secret (a client's `Bearer` token sent to the
/// wrong API), and this text goes into the log and the 401 body. ruma's
/// own messages for an unparsable header repeat the input.
fn describe(error: &XMatrixParseError) -> String {
    match error {
        XMatrixParseError::NotFound => "no X-Matrix credentials".to_owned(),
        XMatrixParseError::MissingParameter(name) => format!("missing parameter {name:?}"),
        XMatrixParseError::DuplicateParameter(name) => format!("duplicate parameter {name:?}"),
        XMatrixParseError::ParseId(_) => "origin, destination or key is not a valid ID".to_owned(),
        XMatrixParseError::ParseBase64(_) => "sig is not valid base64".to_owned(),
        _ => "not a valid authorization header".to_owned(),
    }
}
