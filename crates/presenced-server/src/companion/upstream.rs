//! The HTTP client presenced reaches Synapse with: one connection pool for
//! forwarded requests, token checks and the admin API.

use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::config::companion::CompanionConfig;

/// Synapse, as presenced calls it.
#[derive(Clone, Debug)]
pub struct Upstream {
    base_url: String,
    http: reqwest::Client,
}

/// Why a call to Synapse failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Synapse could not be reached (or did not answer in time).
    #[error("Synapse at {url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    /// Synapse answered with an error status; its body as it sent it.
    #[error("Synapse answered {status}")]
    Status {
        status: reqwest::StatusCode,
        body: axum::body::Bytes,
    },
    /// Synapse's answer was not what the API says.
    #[error("Synapse's answer to {path} is malformed: {reason}")]
    Malformed { path: String, reason: String },
}

/// How long a call presenced makes on its own behalf (token check, admin
/// API) may take; forwarded requests follow the client's own timing.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl Upstream {
    /// A client for the configured Synapse.
    pub fn new(config: &CompanionConfig) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            // Synapse is the operator's own, on a URL they gave: no
            // redirects followed, no proxy from the environment.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(90))
            .build()?;
        Ok(Self {
            base_url: config.base_url().to_owned(),
            http,
        })
    }

    /// Synapse's base URL (no trailing slash).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The connection pool, for forwarding.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `GET path` with a bearer token; the JSON answer, or why not.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        path_and_query: &str,
        token: &str,
    ) -> Result<T, UpstreamError> {
        let url = format!("{}{path_and_query}", self.base_url);
        let answer = self
            .http
            .get(&url)
            .bearer_auth(token)
            .timeout(CALL_TIMEOUT)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = answer.status();
        let body = answer.bytes().await.map_err(|e| self.unreachable(e))?;
        if !status.is_success() {
            return Err(UpstreamError::Status { status, body });
        }
        serde_json::from_slice(&body).map_err(|e| UpstreamError::Malformed {
            path: path_and_query
                .split('?')
                .next()
                .unwrap_or_default()
                .to_owned(),
            reason: e.to_string(),
        })
    }

    fn unreachable(&self, error: reqwest::Error) -> UpstreamError {
        UpstreamError::Unreachable {
            url: self.base_url.clone(),
            reason: error.without_url().to_string(),
        }
    }
}
