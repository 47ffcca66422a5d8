//! `synapse:` — companion mode (presenced-specific; absent means
//! standalone). presenced runs in front of an existing Synapse whose own
//! presence is off: it answers presence (the endpoints, the presence part
//! of `/sync`, router modules, `m.presence` over federation) and forwards
//! everything else to Synapse unchanged.
//!
//! Three keys: where Synapse is, the application-service registration
//! Synapse also loads (it carries the tokens both sides check), and a
//! Synapse admin's token for reading rooms and members at start.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Secret;

/// How to reach the Synapse presenced stands in front of.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CompanionConfig {
    /// Synapse's base URL, with its client and federation resources
    /// (`http://127.0.0.1:8118`).
    pub url: String,
    /// The registration file Synapse lists in `app_service_config_files`
    /// (`presenced generate-appservice` writes one).
    pub appservice_registration: PathBuf,
    /// A Synapse admin's access token, for the membership bootstrap.
    #[serde(default)]
    pub admin_token: Option<Secret>,
    /// A file holding that token instead (one line).
    #[serde(default)]
    pub admin_token_path: Option<PathBuf>,
}

impl CompanionConfig {
    pub(super) fn validate(&self) -> Result<(), String> {
        let url = self.url.trim_end_matches('/');
        let Some(rest) = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
        else {
            return Err(format!(
                "synapse.url {:?}: an http:// or https:// URL (where Synapse listens, e.g. http://127.0.0.1:8118)",
                self.url
            ));
        };
        if rest.is_empty() || rest.contains(['?', '#']) {
            return Err(format!(
                "synapse.url {:?}: a base URL with a host and no query",
                self.url
            ));
        }
        match (&self.admin_token, &self.admin_token_path) {
            (Some(_), Some(_)) => Err(
                "synapse: give admin_token or admin_token_path, not both".to_owned(),
            ),
            (None, None) => Err(
                "synapse: admin_token (or admin_token_path) is needed: a Synapse admin's access token, \
                 to read the rooms and members that exist already"
                    .to_owned(),
            ),
            _ => Ok(()),
        }
    }

    /// Synapse's base URL without a trailing slash.
    pub fn base_url(&self) -> &str {
        self.url.trim_end_matches('/')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> CompanionConfig {
        CompanionConfig {
            url: url.to_owned(),
            appservice_registration: PathBuf::from("as.yaml"),
            admin_token: Some(Secret::new("syt_x")),
            admin_token_path: None,
        }
    }

    #[test]
    fn urls_and_admin_tokens_are_checked() {
        assert!(config("http://127.0.0.1:8118").validate().is_ok());
        assert_eq!(config("https://synapse/").base_url(), "https://synapse");
        for bad in ["127.0.0.1:8118", "ftp://x", "http://", "http://x/?a=1"] {
            assert!(config(bad).validate().is_err(), "{bad}");
        }
        let mut neither = config("http://x");
        neither.admin_token = None;
        assert!(neither.validate().unwrap_err().contains("admin_token"));
        let mut both = config("http://x");
        both.admin_token_path = Some(PathBuf::from("t"));
        assert!(both.validate().unwrap_err().contains("not both"));
    }
}
