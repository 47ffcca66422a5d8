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

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ruma_common::{OwnedUserId, UserId};
use serde::Deserialize;

use crate::accounts;
use crate::api::error::ApiError;
use crate::ids;
use crate::state::AppState;

/// The only stage offered.
pub const PASSWORD_STAGE: &str = "m.login.password";

/// Open UIA sessions, each bound to the user who started it.
#[derive(Default)]
pub(crate) struct UiaSessions {
    open: Mutex<HashMap<String, (OwnedUserId, Instant)>>,
}

impl UiaSessions {
    /// Long enough to type a password, short enough to not pile up.
    const LIFETIME: Duration = Duration::from_secs(15 * 60);

    fn start(&self, user: &UserId, now: Instant) -> String {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|_, (_, at)| now.duration_since(*at) < Self::LIFETIME);
        let session = ids::new_secret();
        open.insert(session.clone(), (user.to_owned(), now));
        session
    }

    /// Whether `session` is open for `user`.
    fn is_open(&self, session: &str, user: &UserId, now: Instant) -> bool {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(session)
            .is_some_and(|(owner, at)| owner == user && now.duration_since(*at) < Self::LIFETIME)
    }

    fn finish(&self, session: &str) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(session);
    }
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
    state: &AppState,
    user: &UserId,
    auth: Option<AuthData>,
) -> Result<(), ApiError> {
    let now = Instant::now();
    let sessions = &state.uia_sessions;
    let Some(auth) = auth else {
        return Err(ApiError::AuthRequired {
            session: sessions.start(user, now),
            failure: None,
        });
    };
    let session = match auth.session {
        Some(s) if sessions.is_open(&s, user, now) => s,
        Some(_) => return Err(ApiError::BadRequest("Unknown session ID".to_owned())),
        None => sessions.start(user, now),
    };
    let Some(kind) = auth.kind else {
        // No stage attempted: tell the client where it stands.
        return Err(ApiError::AuthRequired {
            session,
            failure: None,
        });
    };
    if kind != PASSWORD_STAGE {
        return Err(ApiError::BadRequest(format!(
            "Unrecognised auth type {kind}"
        )));
    }
    let named = match (auth.identifier, auth.user) {
        (Some(id), _) if id.kind == "m.id.user" => id.user,
        (Some(id), _) => {
            return Err(ApiError::BadRequest(format!(
                "Unknown login identifier type {}",
                id.kind
            )))
        }
        (None, legacy) => legacy,
    };
    if let Some(named) = named {
        if accounts::login_user_id(&named, &state.server_name).as_deref() != Some(user) {
            return Err(ApiError::Forbidden(
                "The user in auth does not match the access token".to_owned(),
            ));
        }
    }
    let Some(password) = auth.password else {
        return Err(ApiError::BadJson("missing password in auth".to_owned()));
    };
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
                .map_err(ApiError::internal)?
        }
        None => false,
    };
    if !ok {
        return Err(ApiError::AuthRequired {
            session,
            failure: Some("Invalid password".to_owned()),
        });
    }
    sessions.finish(&session);
    Ok(())
}
