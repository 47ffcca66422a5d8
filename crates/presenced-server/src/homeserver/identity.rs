//! Where accounts and access tokens come from: the one seam the two modes
//! differ at for "who is asking" and "does this local user exist".
//!
//! [`Identity::Own`] is standalone mode: presenced's own accounts, tokens
//! by hash in [`TokenCache`](super::token_cache::TokenCache), then the
//! store. [`Identity::Synapse`] is companion mode: Synapse owns the
//! accounts and answers for each token (`companion::tokens`).
//!
//! It is chosen once, at start-up (`AppState::new`), and held by
//! [`Homeserver`] rather than `AppState`: the homeserver is what the rest
//! of the server already asks about accounts and tokens (its token cache,
//! its store), and handlers keep asking it the same two questions in both
//! modes. An enum rather than a trait object: two implementations, both
//! known here, and no allocation or dynamic call on every request.
//!
//! What companion mode cannot know cheaply: whether the caller is a
//! Synapse admin (that would cost an admin-API call per token). Callers
//! from Synapse are never presenced admins ([`Caller::admin`] is false);
//! presenced's own admin API is for standalone accounts.

use std::sync::Arc;

use ruma_common::{OwnedDeviceId, OwnedUserId, UserId};

use super::{Error, Homeserver};
use crate::companion::upstream::UpstreamError;
use crate::companion::Companion;
use crate::util::ids;

/// Where accounts and tokens come from; see the module docs.
pub enum Identity {
    /// presenced's own accounts (standalone mode).
    Own,
    /// Synapse's accounts (companion mode).
    Synapse(Arc<Companion>),
}

/// The owner of a valid access token.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The user.
    pub user_id: OwnedUserId,
    /// The token's device.
    pub device_id: OwnedDeviceId,
    /// A presenced server admin (always false for Synapse's users).
    pub admin: bool,
    /// The token's stored form (what logout deletes).
    pub token_hash: String,
}

/// Why a token or account question got no answer.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// presenced's own store knows no such token.
    #[error("Unrecognised access token.")]
    UnknownToken,
    /// Synapse refused the token (its answer, to pass on as it is), or
    /// could not be asked.
    #[error(transparent)]
    Synapse(#[from] UpstreamError),
    /// The store failed.
    #[error(transparent)]
    Homeserver(#[from] Error),
}

impl Homeserver {
    /// The owner of `token`.
    pub async fn caller(&self, token: &str) -> Result<Caller, IdentityError> {
        let token_hash = ids::hash_token(token);
        match &self.identity {
            Identity::Own => {
                let owner = match self.tokens.get(&token_hash) {
                    Ok(owner) => owner,
                    Err(generation) => {
                        let lookup = token_hash.clone();
                        let owner = self
                            .db(move |s| s.token_owner(&lookup))
                            .await?
                            .ok_or(IdentityError::UnknownToken)?;
                        self.tokens
                            .fill(token_hash.clone(), owner.clone(), generation);
                        owner
                    }
                };
                Ok(Caller {
                    user_id: owner.user_id,
                    device_id: owner.device_id,
                    admin: owner.admin,
                    token_hash,
                })
            }
            Identity::Synapse(companion) => {
                let owner = companion.tokens.owner(token).await?;
                Ok(Caller {
                    user_id: owner.user_id,
                    device_id: owner.device_id,
                    admin: false,
                    token_hash,
                })
            }
        }
    }

    /// Whether `user_id`, a user of this server, has an account. `asker`
    /// is the authenticated caller: asking about oneself needs no lookup
    /// in companion mode.
    pub async fn has_local_account(
        &self,
        user_id: &UserId,
        asker: &UserId,
    ) -> Result<bool, IdentityError> {
        match &self.identity {
            Identity::Own => {
                let target = user_id.to_owned();
                Ok(self.db(move |s| s.user(&target)).await?.is_some())
            }
            Identity::Synapse(_) if user_id == asker => Ok(true),
            Identity::Synapse(companion) => Ok(companion.has_account(user_id).await?),
        }
    }
}
