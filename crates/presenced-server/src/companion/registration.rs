//! The application-service registration presenced and Synapse share: the
//! file Synapse lists in `app_service_config_files`, in Synapse's format.
//!
//! presenced reads it for two tokens: `hs_token`, which Synapse sends with
//! every transaction it pushes (presenced refuses a push without it), and
//! `as_token`, presenced's own token when it calls Synapse as the service
//! (the ping at start). `presenced generate-appservice` writes a fresh one.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The registration, as both sides read it.
#[derive(Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Registration {
    /// The service's id (Synapse names it in the ping URL).
    pub id: String,
    /// Where Synapse pushes transactions: presenced's own listener.
    pub url: String,
    /// presenced's token towards Synapse.
    pub as_token: String,
    /// Synapse's token towards presenced.
    pub hs_token: String,
    /// The service's own user on Synapse.
    pub sender_localpart: String,
    /// Whose events Synapse sends: every user's (`@.*`, not exclusive).
    pub namespaces: Namespaces,
    /// presenced's calls are not rate-limited by Synapse.
    #[serde(default)]
    pub rate_limited: bool,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The tokens are secrets: never in a log line.
        f.debug_struct("Registration")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("sender_localpart", &self.sender_localpart)
            .finish_non_exhaustive()
    }
}

/// The namespaces of a registration.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Namespaces {
    #[serde(default)]
    pub users: Vec<Namespace>,
    #[serde(default)]
    pub aliases: Vec<Namespace>,
    #[serde(default)]
    pub rooms: Vec<Namespace>,
}

/// One namespace entry.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Namespace {
    pub exclusive: bool,
    pub regex: String,
}

/// Why the registration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("synapse.appservice_registration {path}: {reason}")]
    Unreadable { path: String, reason: String },
}

impl Registration {
    /// A fresh registration whose transactions Synapse pushes to `url`:
    /// every user's events (`@.*`, not exclusive, so Synapse keeps serving
    /// its users as before), random tokens.
    pub fn generate(url: &str) -> Self {
        Self {
            id: "presenced".to_owned(),
            url: url.trim_end_matches('/').to_owned(),
            as_token: crate::util::ids::new_secret(),
            hs_token: crate::util::ids::new_secret(),
            sender_localpart: "presenced".to_owned(),
            namespaces: Namespaces {
                users: vec![Namespace {
                    exclusive: false,
                    regex: "@.*".to_owned(),
                }],
                ..Namespaces::default()
            },
            rate_limited: false,
        }
    }

    /// Reads a registration file and checks what presenced relies on.
    pub fn load(path: &Path) -> Result<Self, RegistrationError> {
        let fail = |reason: String| RegistrationError::Unreadable {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let registration: Self = serde_yaml::from_str(&text).map_err(|e| fail(e.to_string()))?;
        if registration.hs_token.is_empty() || registration.as_token.is_empty() {
            return Err(fail("as_token and hs_token must not be empty".to_owned()));
        }
        if !registration
            .namespaces
            .users
            .iter()
            .any(|n| n.regex == "@.*")
        {
            return Err(fail(
                "namespaces.users must include the regex \"@.*\": Synapse then sends presenced \
                 every room's membership changes"
                    .to_owned(),
            ));
        }
        Ok(registration)
    }

    /// The file's text (Synapse's YAML).
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("a registration always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_registration_loads_back_with_fresh_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("as.yaml");
        let first = Registration::generate("http://127.0.0.1:8008/");
        std::fs::write(&path, first.to_yaml()).unwrap();
        let loaded = Registration::load(&path).unwrap();
        assert_eq!(loaded, first);
        assert_eq!(loaded.url, "http://127.0.0.1:8008");
        assert_ne!(loaded.as_token, loaded.hs_token);
        assert_ne!(Registration::generate("x").hs_token, first.hs_token);
        assert!(!format!("{loaded:?}").contains(&loaded.hs_token));
    }

    #[test]
    fn a_registration_without_every_user_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("as.yaml");
        let mut narrow = Registration::generate("http://x");
        narrow.namespaces.users[0].regex = "@bot_.*".to_owned();
        std::fs::write(&path, narrow.to_yaml()).unwrap();
        let error = Registration::load(&path).unwrap_err().to_string();
        assert!(error.contains("@.*"), "{error}");
    }
}
