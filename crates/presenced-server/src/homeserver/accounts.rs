//! Accounts: user-ID rules, password hashing, registration and sessions.
//!
//! Shared by `POST /register`, Synapse's shared-secret registration,
//! `POST /login` and the `presenced register-user` command. The functions
//! here block (argon2 is deliberately slow, the store is synchronous), so
//! async callers run them through `Homeserver::db` (or `AppState::db` in handlers).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use ruma_common::{OwnedDeviceId, OwnedUserId, ServerName};

use crate::config::PasswordHashing;
use crate::store::{NewUser, Store, StoreError};
use crate::util::{clock, ids};

/// Why an account operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The requested user ID is not allowed.
    #[error("{0}")]
    InvalidUsername(String),
    /// The user ID is taken.
    #[error("User ID already taken.")]
    UserInUse,
    /// The hash parameters or the hasher failed.
    #[error("password hashing failed: {0}")]
    Hash(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Builds the user ID for a new account from the requested localpart.
///
/// As in Synapse, the name is lower-cased and may only use the characters
/// the Matrix spec allows in new localparts; names starting with `_` are
/// reserved (application services, guests).
pub fn new_user_id(localpart: &str, server: &ServerName) -> Result<OwnedUserId, AccountError> {
    let localpart = localpart.to_lowercase();
    if localpart.is_empty() {
        return Err(AccountError::InvalidUsername(
            "User ID cannot be empty".to_owned(),
        ));
    }
    if localpart.starts_with('_') {
        return Err(AccountError::InvalidUsername(
            "User ID may not begin with _".to_owned(),
        ));
    }
    if !localpart
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "=_-./+".contains(c))
    {
        return Err(AccountError::InvalidUsername(
            "User ID can only contain characters a-z, 0-9, or '=_-./+'".to_owned(),
        ));
    }
    let full = format!("@{localpart}:{server}");
    if full.len() > 255 {
        return Err(AccountError::InvalidUsername(
            "User ID may not be longer than 255 characters".to_owned(),
        ));
    }
    OwnedUserId::try_from(full).map_err(|e| AccountError::InvalidUsername(e.to_string()))
}

/// The local user a login names: a full ID on this server, or a localpart.
/// `None` when it names another server or cannot be a user ID at all.
pub fn login_user_id(user: &str, server: &ServerName) -> Option<OwnedUserId> {
    let full = if user.starts_with('@') {
        user.to_owned()
    } else {
        format!("@{user}:{server}")
    };
    let id = OwnedUserId::try_from(full).ok()?;
    // Logins are case-insensitive on the localpart, as registration lower-cases.
    let id = OwnedUserId::try_from(format!(
        "@{}:{}",
        id.localpart().to_lowercase(),
        id.server_name()
    ))
    .ok()?;
    (id.server_name() == server).then_some(id)
}

fn hasher(cost: &PasswordHashing) -> Result<Argon2<'static>, AccountError> {
    let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
        .map_err(|e| AccountError::Hash(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes a password with argon2id into a PHC string (which records its own
/// parameters, so changing the cost later keeps old hashes verifiable).
pub fn hash_password(password: &str, cost: &PasswordHashing) -> Result<String, AccountError> {
    let mut salt_bytes = [0u8; 16];
    rand::Rng::fill(&mut rand::rng(), &mut salt_bytes);
    let salt =
        SaltString::encode_b64(&salt_bytes).map_err(|e| AccountError::Hash(e.to_string()))?;
    hasher(cost)?
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Hash(e.to_string()))
}

/// Checks a password against a stored PHC hash.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// Creates an account (blocking: hashes the password).
pub fn create_account(
    store: &dyn Store,
    user_id: &OwnedUserId,
    password: Option<&str>,
    admin: bool,
    cost: &PasswordHashing,
) -> Result<(), AccountError> {
    let password_hash = password.map(|p| hash_password(p, cost)).transpose()?;
    store
        .create_user(&NewUser {
            user_id: user_id.clone(),
            password_hash,
            admin,
            created_ts: clock::now(),
        })
        .map_err(|e| match e {
            StoreError::UserInUse => AccountError::UserInUse,
            other => other.into(),
        })
}

/// A logged-in device.
#[derive(Clone, Debug)]
pub struct Session {
    /// The new access token (only its hash is stored).
    pub access_token: String,
    /// The device it belongs to.
    pub device_id: OwnedDeviceId,
}

/// Issues a token for a device, creating the device when needed.
pub fn start_session(
    store: &dyn Store,
    user_id: &OwnedUserId,
    device_id: Option<OwnedDeviceId>,
    display_name: Option<&str>,
) -> Result<Session, StoreError> {
    let device_id = device_id.unwrap_or_else(ids::new_device_id);
    let access_token = ids::new_access_token();
    store.issue_token(
        user_id,
        &device_id,
        display_name,
        &ids::hash_token(&access_token),
        clock::now(),
    )?;
    Ok(Session {
        access_token,
        device_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> &'static ServerName {
        "example.org".try_into().unwrap()
    }

    #[test]
    fn localpart_rules() {
        assert_eq!(
            new_user_id("Alice", server()).unwrap().as_str(),
            "@alice:example.org"
        );
        assert!(new_user_id("_bot", server()).is_err());
        assert!(new_user_id("a b", server()).is_err());
        assert!(new_user_id("", server()).is_err());
    }

    #[test]
    fn login_names() {
        assert_eq!(
            login_user_id("alice", server()).unwrap().as_str(),
            "@alice:example.org"
        );
        assert_eq!(
            login_user_id("@Alice:example.org", server())
                .unwrap()
                .as_str(),
            "@alice:example.org"
        );
        assert!(login_user_id("@alice:other.org", server()).is_none());
    }

    #[test]
    fn hash_and_verify() {
        let cost = PasswordHashing {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        let hash = hash_password("secret", &cost).unwrap();
        assert!(verify_password("secret", &hash));
        assert!(!verify_password("wrong", &hash));
        assert!(!verify_password("secret", "not a hash"));
    }
}
