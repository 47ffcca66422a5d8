//! User-interactive authentication (UIA) for endpoints that want the
//! password again (`POST /account/deactivate`): one flow, one stage,
//! `m.login.password`.
//!
//! The first call without `auth` gets 401 with the flows and a fresh
//! `session`; the client repeats the request with
//! `auth: {type: "m.login.password", identifier: {type: "m.id.user",
//! user}, password, session}`. A wrong password is 401 again (with
//! `M_FORBIDDEN`, same session), an unknown or expired session 400.
//! Sessions live in memory: a restart only makes the client start over.
//! At most `request_limits.max_uia_sessions` are open at once (the oldest
//! go first), each for 15 minutes. On a cluster node a session is signed
//! instead (its user and expiry under an HMAC of a secret the nodes share),
//! so whichever node the client's next request reaches accepts it; it is
//! then not single-use, which costs nothing: each use needs the password.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use presenced_engine::Timestamp;
use ruma_common::{OwnedUserId, UserId};
use serde::Deserialize;
use sha2::Sha256;

use crate::homeserver::accounts;
use crate::homeserver::Error;
use crate::homeserver::Homeserver;
use crate::util::expiring_map::ExpiringMap;
use crate::util::{clock, ids};

/// The only stage offered.
pub const PASSWORD_STAGE: &str = "m.login.password";

/// Open UIA sessions, each bound to the user who started it.
pub(crate) struct UiaSessions {
    open: Mutex<ExpiringMap<String, OwnedUserId>>,
    /// Cluster mode: the key sessions are signed with.
    signing: Option<Vec<u8>>,
}

impl UiaSessions {
    /// Long enough to type a password, short enough to not pile up.
    const LIFETIME: Duration = Duration::from_secs(15 * 60);

    /// At most `capacity` open sessions.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            open: Mutex::new(ExpiringMap::new(Self::LIFETIME, capacity)),
            signing: None,
        }
    }

    /// Signed sessions any node holding `key` accepts (cluster mode).
    pub(crate) fn sign_with(&mut self, key: Vec<u8>) {
        self.signing = Some(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ExpiringMap<String, OwnedUserId>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn start(&self, user: &UserId, now: Instant) -> String {
        if let Some(key) = &self.signing {
            let expires = clock::now() + Self::LIFETIME;
            return signed_session(key, user, expires, &ids::new_secret());
        }
        let session = ids::new_secret();
        self.lock().insert(session.clone(), user.to_owned(), now);
        session
    }

    /// Whether `session` is open for `user`.
    fn is_open(&self, session: &str, user: &UserId, now: Instant) -> bool {
        if let Some(key) = &self.signing {
            return signed_session_valid(key, session, user, clock::now());
        }
        self.lock()
            .get(session, now)
            .is_some_and(|owner| owner == user)
    }

    fn finish(&self, session: &str) {
        self.lock().remove(session, Instant::now());
    }

    /// Sessions held, after dropping the expired ones.
    pub(crate) fn len(&self) -> usize {
        let mut open = self.lock();
        open.expire(Instant::now());
        open.len()
    }
}

fn session_proof(key: &[u8], user: &UserId, body: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(user.as_str().as_bytes());
    mac.update(b"\x00");
    mac.update(body.as_bytes());
    mac
}

/// `<expiry ms>.<random>.<proof>`.
fn signed_session(key: &[u8], user: &UserId, expires: Timestamp, random: &str) -> String {
    let body = format!("{}.{random}", expires.as_millis());
    let proof = hex::encode(session_proof(key, user, &body).finalize().into_bytes());
    format!("{body}.{proof}")
}

/// Whether `session` was signed with `key` for `user` and has not expired.
fn signed_session_valid(key: &[u8], session: &str, user: &UserId, now: Timestamp) -> bool {
    let Some((body, proof)) = session.rsplit_once('.') else {
        return false;
    };
    let Some(expires) = body
        .split_once('.')
        .and_then(|(t, _)| t.parse::<u64>().ok())
        .map(Timestamp)
    else {
        return false;
    };
    let given = hex::decode(proof).unwrap_or_default();
    // verify_slice compares in constant time.
    now < expires && session_proof(key, user, body).verify_slice(&given).is_ok()
}

/// The `auth` object of a UIA request.
#[derive(Deserialize)]
pub(crate) struct AuthData {
    #[serde(rename = "type")]
    kind: Option<String>,
    session: Option<String>,
    identifier: Option<Identifier>,
    /// Deprecated top-level user, still sent by older clients.
    user: Option<String>,
    password: Option<String>,
}

#[derive(Deserialize)]
struct Identifier {
    #[serde(rename = "type")]
    kind: String,
    user: Option<String>,
}

/// Passes when `auth` proves `user`'s password; otherwise the UIA answer.
pub(crate) async fn require_password(
    state: &Homeserver,
    user: &UserId,
    auth: Option<AuthData>,
) -> Result<(), Error> {
    let now = Instant::now();
    let sessions = &state.uia_sessions;
    let Some(auth) = auth else {
        return Err(Error::AuthRequired {
            session: sessions.start(user, now),
            failure: None,
        });
    };
    let session = match auth.session {
        Some(s) if sessions.is_open(&s, user, now) => s,
        Some(_) => return Err(Error::BadRequest("Unknown session ID".to_owned())),
        None => sessions.start(user, now),
    };
    let Some(kind) = auth.kind else {
        // No stage attempted: tell the client where it stands.
        return Err(Error::AuthRequired {
            session,
            failure: None,
        });
    };
    if kind != PASSWORD_STAGE {
        return Err(Error::BadRequest(format!("Unrecognised auth type {kind}")));
    }
    let named = match (auth.identifier, auth.user) {
        (Some(id), _) if id.kind == "m.id.user" => id.user,
        (Some(id), _) => {
            return Err(Error::BadRequest(format!(
                "Unknown login identifier type {}",
                id.kind
            )))
        }
        (None, legacy) => legacy,
    };
    if let Some(named) = named {
        if accounts::login_user_id(&named, &state.server_name).as_deref() != Some(user) {
            return Err(Error::Forbidden(
                "The user in auth does not match the access token".to_owned(),
            ));
        }
    }
    let Some(password) = auth.password else {
        return Err(Error::BadJson("missing password in auth".to_owned()));
    };
    // The login limit on failed attempts guards this password check too
    // (as in Synapse), so a stolen token cannot be used to guess it.
    let failed = &state.auth_limiters.login_failed;
    failed
        .take(user, Instant::now())
        .map_err(|retry_after_ms| Error::LimitExceeded { retry_after_ms })?;
    let lookup = user.to_owned();
    let hash = state
        .db(move |s| s.user(&lookup))
        .await?
        .and_then(|record| record.password_hash);
    let ok = match hash {
        // argon2 is slow on purpose: keep it off the async workers.
        Some(hash) => {
            tokio::task::spawn_blocking(move || accounts::verify_password(&password, &hash))
                .await
                .map_err(Error::internal)?
        }
        None => false,
    };
    if !ok {
        return Err(Error::AuthRequired {
            session,
            failure: Some("Invalid password".to_owned()),
        });
    }
    failed.refund(user);
    sessions.finish(&session);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_capped_and_expire() {
        let sessions = UiaSessions::new(3);
        let user = UserId::parse("@u:test").unwrap();
        let t0 = Instant::now();
        let first = sessions.start(&user, t0);
        for _ in 0..10 {
            sessions.start(&user, t0);
        }
        assert_eq!(sessions.lock().len(), 3);
        assert!(
            !sessions.is_open(&first, &user, t0),
            "the oldest went first"
        );
        let last = sessions.start(&user, t0);
        assert!(sessions.is_open(&last, &user, t0));
        let later = t0 + UiaSessions::LIFETIME;
        assert!(!sessions.is_open(&last, &user, later));
        sessions.lock().expire(later);
        assert_eq!(sessions.lock().len(), 0);
    }

    #[test]
    fn signed_sessions_hold_for_their_user_until_they_expire() {
        let (alice, bob) = (
            UserId::parse("@alice:test").unwrap(),
            UserId::parse("@bob:test").unwrap(),
        );
        let session = signed_session(b"key", &alice, Timestamp(2_000), "r4nd0m");
        assert!(signed_session_valid(
            b"key",
            &session,
            &alice,
            Timestamp(1_999)
        ));
        assert!(
            !signed_session_valid(b"key", &session, &alice, Timestamp(2_000)),
            "expired"
        );
        assert!(
            !signed_session_valid(b"key", &session, &bob, Timestamp(1_000)),
            "another user"
        );
        assert!(
            !signed_session_valid(b"other", &session, &alice, Timestamp(1_000)),
            "another key"
        );
        let later = session.replacen("2000", "9000", 1);
        assert!(
            !signed_session_valid(b"key", &later, &alice, Timestamp(1_000)),
            "expiry changed"
        );
        assert!(!signed_session_valid(
            b"key",
            "nonsense",
            &alice,
            Timestamp(1_000)
        ));
        // Another node with the same key (a new UiaSessions) accepts it.
        let mut node = UiaSessions::new(1);
        node.sign_with(b"key".to_vec());
        let started = node.start(&alice, Instant::now());
        let mut other = UiaSessions::new(1);
        other.sign_with(b"key".to_vec());
        assert!(other.is_open(&started, &alice, Instant::now()));
        assert!(!other.is_open(&started, &bob, Instant::now()));
    }
}
