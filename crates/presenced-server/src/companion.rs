//! Companion mode: presenced in front of an existing Synapse whose own
//! presence is off, answering presence and forwarding everything else.
//!
//! This folder is the second source of accounts, tokens and room
//! memberships (the first is presenced's own `homeserver`): Synapse owns
//! the accounts, answers for each access token (`tokens`), and tells
//! presenced every membership change through the application-service
//! transactions it pushes (`members`), after a first read of every room's
//! members through its admin API (`bootstrap`). `forward` passes every
//! request presenced does not answer to Synapse unchanged, bodies
//! streamed. It knows no presence rule: memberships go to the presence
//! driver as they would from presenced's own rooms.
//!
//! [`Companion`] holds these parts; start-up builds it once when the config
//! has `synapse:`, `AppState` keeps it, and two seams use it: the
//! homeserver's `identity` (tokens answered by Synapse instead of
//! presenced's own accounts) and the API's companion router (presence
//! answered, everything else handed to `forward`).
//!
//! Its own folder, not a crate: it needs the server's config, store and
//! presence driver, and the axum types of the layer above reach it only
//! as plain requests; a crate would have to re-export all of that.

pub mod bootstrap;
pub mod cluster_changes;
pub mod forward;
pub mod members;
pub mod registration;
pub mod splice;
pub mod tokens;
pub mod upstream;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ruma_common::{OwnedUserId, UserId};

use self::members::MembershipFeed;
use self::registration::{Registration, RegistrationError};
use self::tokens::TokenCheck;
use self::upstream::{Upstream, UpstreamError};
use crate::config::companion::CompanionConfig;
use crate::config::Secret;
use crate::util::expiring_map::ExpiringMap;

/// Companion mode's parts, built once at start-up when the config has a
/// `synapse:` section; standalone mode has none of them.
pub struct Companion {
    /// Synapse, as presenced calls it (forwarding, token checks, admin API).
    pub upstream: Upstream,
    /// The application-service registration Synapse also loads.
    pub registration: Registration,
    /// A Synapse admin's access token (membership bootstrap, user lookups).
    pub admin_token: Secret,
    /// Synapse's answers for access tokens, cached briefly.
    pub tokens: TokenCheck,
    /// Where Synapse's application-service transactions go (`members`);
    /// set at start-up once the presence driver runs.
    pub membership_feed: Option<Arc<MembershipFeed>>,
    /// Users Synapse said it has an account for, so a presence `GET` of
    /// another user asks its admin API once per [`ACCOUNT_TTL`], not on
    /// every request. Only "yes" is kept: a made-up user ID costs a lookup
    /// each time, as it would in Synapse, and cannot fill the map with
    /// useless entries for long.
    known_accounts: Mutex<ExpiringMap<OwnedUserId, ()>>,
}

/// How long Synapse's "this account exists" is trusted. An account
/// deactivated through presenced is dropped at once; one deactivated
/// behind presenced's back still reads as existing (its presence, offline)
/// for up to this long.
pub const ACCOUNT_TTL: Duration = Duration::from_secs(600);

/// Most accounts remembered at once (a miss costs one admin-API call).
pub const MAX_KNOWN_ACCOUNTS: usize = 100_000;

/// Why companion mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum CompanionError {
    /// The registration file is missing or unusable.
    #[error(transparent)]
    Registration(#[from] RegistrationError),
    /// `synapse.admin_token_path` could not be read, or is empty.
    #[error("synapse.admin_token_path {path}: {reason}")]
    AdminToken {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client for Synapse: {0}")]
    Client(#[from] reqwest::Error),
}

impl Companion {
    /// Reads the registration and the admin token and builds the client
    /// for Synapse. Nothing is sent to Synapse yet.
    pub fn load(config: &CompanionConfig) -> Result<Self, CompanionError> {
        let registration = Registration::load(&config.appservice_registration)?;
        let admin_token = admin_token(config)?;
        let upstream = Upstream::new(config)?;
        Ok(Self {
            tokens: TokenCheck::new(upstream.clone()),
            upstream,
            registration,
            admin_token,
            membership_feed: None,
            known_accounts: Mutex::new(ExpiringMap::new(ACCOUNT_TTL, MAX_KNOWN_ACCOUNTS)),
        })
    }

    fn known_accounts(&self) -> MutexGuard<'_, ExpiringMap<OwnedUserId, ()>> {
        self.known_accounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets what is cached about `user_id`: its tokens and that its
    /// account exists (a logout of all devices, a deactivation or an admin
    /// change passed through).
    pub fn forget_user(&self, user_id: &UserId) {
        self.tokens.forget_user(user_id);
        self.known_accounts().remove(user_id, Instant::now());
    }

    /// Whether Synapse has an account `user_id` (one of its own users),
    /// asked through its admin API (`GET /_synapse/admin/v2/users/…`).
    pub async fn has_account(&self, user_id: &UserId) -> Result<bool, UpstreamError> {
        if self.known_accounts().get(user_id, Instant::now()).is_some() {
            return Ok(true);
        }
        let path = format!(
            "/_synapse/admin/v2/users/{}",
            path_segment(user_id.as_str())
        );
        match (self.upstream)
            .get_json::<serde_json::Value>(&path, self.admin_token.expose())
            .await
        {
            Ok(_) => {
                (self.known_accounts()).insert(user_id.to_owned(), (), Instant::now());
                Ok(true)
            }
            Err(UpstreamError::Status { status, .. })
                if status == reqwest::StatusCode::NOT_FOUND =>
            {
                Ok(false)
            }
            Err(other) => Err(other),
        }
    }
}

/// The admin token, given inline or in a file of one line.
fn admin_token(config: &CompanionConfig) -> Result<Secret, CompanionError> {
    if let Some(token) = &config.admin_token {
        return Ok(token.clone());
    }
    let Some(path) = &config.admin_token_path else {
        // `CompanionConfig::validate` refuses a config with neither.
        return Err(CompanionError::AdminToken {
            path: PathBuf::new(),
            reason: "neither admin_token nor admin_token_path is set".to_owned(),
        });
    };
    let fail = |reason: String| CompanionError::AdminToken {
        path: path.clone(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(fail("the file is empty".to_owned()));
    }
    Ok(Secret::new(token))
}

/// `text` as one URL path segment: every byte but the unreserved ones and
/// `@` `:` (which user IDs always carry and a segment allows) escaped, so
/// a historical user ID with `/` or `?` in it stays one segment.
pub(crate) fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~@:".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_id_stays_one_path_segment() {
        assert_eq!(path_segment("@alice:example.org"), "@alice:example.org");
        assert_eq!(path_segment("@a/b?c:x"), "@a%2Fb%3Fc:x");
    }
}
