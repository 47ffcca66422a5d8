//! The federation client: HTTPS requests to other homeservers, signed with
//! X-Matrix, to wherever [`Discovery`] says each server lives.
//!
//! One reqwest client (rustls) carries all federation traffic; its DNS hook
//! reads [`SrvOverrides`], so a server found through SRV is reached at the
//! SRV target while TLS checks the server's own name, and drops addresses
//! that `ip_range_blacklist` blocks (`ip_filter`; IP literals are checked
//! before the request). Certificates are checked
//! against the built-in web roots, or only against the PEM files of
//! `federation_custom_ca_list` when it is set (as in Synapse), and not at
//! all with `federation_verify_certificates: false` (tests, interop).

use std::sync::Arc;
use std::time::Duration;

use ruma_common::{OwnedServerName, ServerName};

use super::discovery::{Discovery, SrvOverrides};
use super::ip_filter::{FilteringResolver, IpFilter};
use super::keys::{BoxFuture, FetchError, KeyFetcher};
use super::signing::ServerSigningKey;
use crate::config::Config;

/// Longest wait for a connection to a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest wait for a whole request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest response body read from a peer.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// The client could not be built from the config.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A `federation_custom_ca_list` file could not be read or parsed.
    #[error("federation_custom_ca_list: {path}: {message}")]
    CustomCa {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// reqwest refused the TLS setup.
    #[error("federation client: {0}")]
    Http(String),
}

/// A request to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// No answer (DNS, connection, TLS, timeout) or an unreadable one.
    #[error("{destination}: {message}")]
    Transport {
        /// The peer.
        destination: OwnedServerName,
        /// What went wrong.
        message: String,
    },
    /// The peer answered with an error status.
    #[error("{destination} answered {status}: {body}")]
    Status {
        /// The peer.
        destination: OwnedServerName,
        /// The HTTP status.
        status: u16,
        /// The start of its body.
        body: String,
    },
    /// Our request could not be signed (not canonical JSON).
    #[error("cannot sign the request: {0}")]
    Sign(String),
}

/// Signed HTTPS requests to other homeservers.
pub struct FederationClient {
    origin: OwnedServerName,
    key: Arc<ServerSigningKey>,
    http: reqwest::Client,
    discovery: Discovery,
    /// `ip_range_blacklist` / `ip_range_whitelist`, for IP literals (the
    /// DNS hook checks names).
    filter: Arc<IpFilter>,
}

impl FederationClient {
    /// The client for `config`'s server, signing with `key`.
    pub fn new(config: &Config, key: Arc<ServerSigningKey>) -> Result<Self, ClientError> {
        let overrides = Arc::new(SrvOverrides::default());
        let filter = Arc::new(IpFilter::from_config(config));
        let http = tls_builder(config)?
            .dns_resolver(Arc::new(FilteringResolver::new(
                Some(overrides.clone()),
                filter.clone(),
            )))
            // A peer's redirect is not followed: requests are signed for
            // one destination.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ClientError::Http(e.to_string()))?;
        // The spec lets a well-known answer redirect (never to a blocked
        // address).
        let well_known = tls_builder(config)?
            .dns_resolver(Arc::new(FilteringResolver::new(None, filter.clone())))
            .redirect(filter.redirect_policy(5))
            .build()
            .map_err(|e| ClientError::Http(e.to_string()))?;
        Ok(Self {
            origin: config.server_name.clone(),
            key,
            http,
            discovery: Discovery::new(well_known, overrides),
            filter,
        })
    }

    /// Our server name (the `origin` of what we send).
    pub fn origin(&self) -> &ServerName {
        &self.origin
    }

    /// `PUT /_matrix/federation/v1/send/{txn_id}` with `body`, signed.
    pub async fn send_transaction(
        &self,
        destination: &ServerName,
        txn_id: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, RequestError> {
        let path = format!("/_matrix/federation/v1/send/{txn_id}");
        self.request(reqwest::Method::PUT, destination, &path, Some(body), true)
            .await
    }

    /// `GET` of `path` on `destination`, signed or not.
    pub async fn get_json(
        &self,
        destination: &ServerName,
        path: &str,
        signed: bool,
    ) -> Result<serde_json::Value, RequestError> {
        self.request(reqwest::Method::GET, destination, path, None, signed)
            .await
    }

    async fn request(
        &self,
        method: reqwest::Method,
        destination: &ServerName,
        path: &str,
        body: Option<&serde_json::Value>,
        signed: bool,
    ) -> Result<serde_json::Value, RequestError> {
        let transport = |message: String| RequestError::Transport {
            destination: destination.to_owned(),
            message,
        };
        let resolved = self.discovery.resolve(destination).await;
        let url = format!("{}{path}", resolved.base_url);
        let url = reqwest::Url::parse(&url).map_err(|e| transport(format!("bad URL: {e}")))?;
        self.filter
            .check_url(&url)
            .map_err(|blocked| transport(blocked.to_string()))?;
        let mut request = self.http.request(method.clone(), url);
        if signed {
            let auth = self
                .key
                .x_matrix_authorization(&self.origin, destination, method.as_str(), path, body)
                .map_err(|e| RequestError::Sign(e.to_string()))?;
            request = request.header(reqwest::header::AUTHORIZATION, auth);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                // It may have moved (new well-known, SRV or address).
                self.discovery.forget(destination);
                return Err(transport(error_chain(&e)));
            }
        };
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| transport(error_chain(&e)))?;
        if !status.is_success() {
            let body = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
            return Err(RequestError::Status {
                destination: destination.to_owned(),
                status: status.as_u16(),
                body,
            });
        }
        if bytes.len() > MAX_RESPONSE_BYTES {
            return Err(transport("response too large".to_owned()));
        }
        serde_json::from_slice(&bytes).map_err(|e| transport(format!("invalid JSON: {e}")))
    }
}

impl KeyFetcher for FederationClient {
    fn fetch_server_keys<'a>(
        &'a self,
        server: &'a ServerName,
    ) -> BoxFuture<'a, Result<serde_json::Value, FetchError>> {
        Box::pin(async move {
            self.get_json(server, "/_matrix/key/v2/server", false)
                .await
                .map_err(|e| FetchError::Unreachable {
                    server: server.to_owned(),
                    message: e.to_string(),
                })
        })
    }
}

/// A reqwest builder with the TLS trust the config asks for.
fn tls_builder(config: &Config) -> Result<reqwest::ClientBuilder, ClientError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .user_agent(concat!("presenced/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT);
    if !config.federation_verify_certificates {
        builder = builder.danger_accept_invalid_certs(true);
    }
    if let Some(files) = &config.federation_custom_ca_list {
        // As in Synapse, the list replaces the built-in roots.
        builder = builder.tls_built_in_root_certs(false);
        for path in files {
            let ca_err = |message: String| ClientError::CustomCa {
                path: path.display().to_string(),
                message,
            };
            let pem = std::fs::read(path).map_err(|e| ca_err(e.to_string()))?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_err(e.to_string()))?;
            if certs.is_empty() {
                return Err(ca_err("no certificate in the file".to_owned()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
    }
    Ok(builder)
}

/// An error and its causes on one line (reqwest's top-level message alone
/// hides whether DNS, TCP or TLS failed).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
