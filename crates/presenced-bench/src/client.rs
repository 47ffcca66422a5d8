//! The few client-server API calls the load tool makes, against any
//! homeserver.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use sha1::Sha1;

use crate::load_http::LoadClient;

/// An error of a setup call, as text for the operator.
pub(crate) type Error = String;

/// Longest a setup call may take (Synapse's createRoom with many invites is slow).
const SETUP_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest a presence PUT may take before it counts as an error.
const PUT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a rate-limited setup call is retried.
const SETUP_RETRIES: usize = 50;

/// A logged-in user.
#[derive(Clone, Debug)]
pub(crate) struct Account {
    pub(crate) user_id: String,
    pub(crate) token: String,
}

/// The outcome of one presence PUT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PutOutcome {
    Ok,
    RateLimited,
    Error,
    /// Never sent: it waited too long behind the user's previous PUT.
    Dropped,
}

/// The part of a `/sync` answer the observers read.
#[derive(Deserialize)]
pub(crate) struct SyncBody {
    pub(crate) next_batch: String,
    #[serde(default)]
    pub(crate) presence: Option<PresenceSection>,
}

#[derive(Deserialize)]
pub(crate) struct PresenceSection {
    #[serde(default)]
    pub(crate) events: Vec<PresenceEvent>,
}

#[derive(Deserialize)]
pub(crate) struct PresenceEvent {
    #[serde(default)]
    pub(crate) content: PresenceContent,
}

#[derive(Deserialize, Default)]
pub(crate) struct PresenceContent {
    #[serde(default)]
    pub(crate) status_msg: Option<String>,
}

/// An observer's `/sync`, prepared once: the fixed part of the path
/// (up to `timeout=`) and the authorization header.
pub(crate) struct SyncTarget {
    path_prefix: String,
    auth: http::HeaderValue,
}

impl SyncTarget {
    /// The request's path (origin form) from `since` with `timeout_ms`.
    pub(crate) fn path(&self, since: Option<&str>, timeout_ms: u64) -> String {
        let mut path = format!("{}{timeout_ms}", self.path_prefix);
        if let Some(s) = since {
            path.push_str("&since=");
            path.push_str(&segment(s));
        }
        path
    }

    /// The `Authorization` header's value (for presenced-longpoll-bench's
    /// hand-written requests).
    #[allow(dead_code)]
    pub(crate) fn auth(&self) -> &http::HeaderValue {
        &self.auth
    }
}

/// A sender's presence PUT, prepared once: path and authorization header.
pub(crate) struct PresenceTarget {
    path: http::Uri,
    auth: http::HeaderValue,
}

#[derive(serde::Serialize)]
struct SetPresence<'a> {
    presence: &'a str,
    status_msg: &'a str,
}

/// A homeserver reached over HTTP: one server, or the nodes of a cluster
/// sharing one load.
#[derive(Clone)]
pub(crate) struct Homeserver {
    /// Setup calls (not measured), to the first node.
    http: reqwest::Client,
    /// The measured load of this handle: presence PUTs and the observers'
    /// syncs, to one node (see [`Self::node`]).
    load: Arc<LoadClient>,
    /// One load client per node, in `--base-url` order.
    nodes: Arc<[Arc<LoadClient>]>,
    /// The base URL of every node; setup goes to the first.
    bases: Arc<[String]>,
}

/// Percent-encodes one path segment (ids contain `!`, `@`, `:`).
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Synapse's shared-secret registration MAC, lowercase hex.
pub(crate) fn registration_mac(secret: &str, nonce: &str, user: &str, password: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("any key length");
    for (i, part) in [nonce, user, password, "notadmin"].iter().enumerate() {
        if i > 0 {
            mac.update(b"\x00");
        }
        mac.update(part.as_bytes());
    }
    hex::encode(mac.finalize().into_bytes())
}

impl Homeserver {
    /// A homeserver at `bases` (one URL, or one per cluster node; at least
    /// one).
    pub(crate) async fn new(bases: &[String]) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .expect("reqwest client");
        if bases.is_empty() {
            return Err("no base URL".to_owned());
        }
        let bases: Vec<String> = bases
            .iter()
            .map(|b| b.trim_end_matches('/').to_owned())
            .collect();
        let mut nodes = Vec::with_capacity(bases.len());
        for base in &bases {
            nodes.push(Arc::new(LoadClient::new(base).await?));
        }
        Ok(Self {
            http,
            load: nodes[0].clone(),
            nodes: nodes.into(),
            bases: bases.into(),
        })
    }

    /// How many nodes the load is spread over.
    pub(crate) fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// This homeserver with its load (PUTs, syncs) sent to node
    /// `index % node_count`: a fixed node per user or observer, so one
    /// user's writes all go through one front door.
    pub(crate) fn node(&self, index: usize) -> Self {
        Self {
            load: self.nodes[index % self.nodes.len()].clone(),
            ..self.clone()
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.bases[0])
    }

    /// The Prometheus text of every node's `GET /metrics` (the server needs
    /// `enable_metrics: true`), in node order.
    pub(crate) async fn metrics(&self) -> Result<Vec<String>, Error> {
        let mut out = Vec::with_capacity(self.bases.len());
        for base in self.bases.iter() {
            let text = self
                .get_text(&format!("{base}/metrics"))
                .await
                .map_err(|e| format!("{e} (does the server have enable_metrics: true?)"))?;
            out.push(text);
        }
        Ok(out)
    }

    /// The body of a plain GET of `url` (another process's metrics).
    pub(crate) async fn get_text(&self, url: &str) -> Result<String, Error> {
        let resp = self
            .http
            .get(url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| format!("GET {url}: {e}"))?;
        if !status.is_success() {
            return Err(format!("GET {url}: {status}"));
        }
        Ok(text)
    }

    /// Sends a setup request, retrying while the server answers 429.
    async fn setup_call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), Error> {
        for _ in 0..SETUP_RETRIES {
            let mut req = self
                .http
                .request(method.clone(), self.url(path))
                .timeout(SETUP_TIMEOUT);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| format!("{method} {path}: {e}"))?;
            let status = resp.status();
            let value: Value = resp.json().await.unwrap_or(Value::Null);
            if status == StatusCode::TOO_MANY_REQUESTS {
                let wait = value["retry_after_ms"].as_u64().unwrap_or(200).min(5_000);
                tokio::time::sleep(Duration::from_millis(wait.max(10))).await;
                continue;
            }
            return Ok((status, value));
        }
        Err(format!(
            "{method} {path}: still rate-limited after {SETUP_RETRIES} tries"
        ))
    }

    async fn setup_ok(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Value, Error> {
        let (status, value) = self.setup_call(method.clone(), path, token, body).await?;
        if status.is_success() {
            Ok(value)
        } else {
            Err(format!("{method} {path}: {status} {value}"))
        }
    }

    /// Registers `localpart` through `/_synapse/admin/v1/register`; if the
    /// name is taken (a fixed monitor name from an earlier run), logs in.
    pub(crate) async fn register_or_login(
        &self,
        secret: &str,
        localpart: &str,
        password: &str,
    ) -> Result<Account, Error> {
        const PATH: &str = "/_synapse/admin/v1/register";
        let nonce = self
            .setup_ok(reqwest::Method::GET, PATH, None, None)
            .await?;
        let nonce = nonce["nonce"]
            .as_str()
            .ok_or_else(|| format!("GET {PATH}: no nonce"))?
            .to_owned();
        let body = json!({
            "nonce": nonce,
            "username": localpart,
            "password": password,
            "admin": false,
            "mac": registration_mac(secret, &nonce, localpart, password),
        });
        let (status, value) = self
            .setup_call(reqwest::Method::POST, PATH, None, Some(&body))
            .await?;
        if status.is_success() {
            if let (Some(user_id), Some(token)) =
                (value["user_id"].as_str(), value["access_token"].as_str())
            {
                return Ok(Account {
                    user_id: user_id.to_owned(),
                    token: token.to_owned(),
                });
            }
        } else if value["errcode"] != "M_USER_IN_USE" {
            return Err(format!("POST {PATH} ({localpart}): {status} {value}"));
        }
        self.login(localpart, password).await
    }

    /// Password login.
    pub(crate) async fn login(&self, localpart: &str, password: &str) -> Result<Account, Error> {
        let body = json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": localpart},
            "password": password,
        });
        let v = self
            .setup_ok(
                reqwest::Method::POST,
                "/_matrix/client/v3/login",
                None,
                Some(&body),
            )
            .await?;
        match (v["user_id"].as_str(), v["access_token"].as_str()) {
            (Some(u), Some(t)) => Ok(Account {
                user_id: u.to_owned(),
                token: t.to_owned(),
            }),
            _ => Err(format!("login {localpart}: unexpected answer {v}")),
        }
    }

    /// Creates a private room inviting `invite`; returns its id.
    pub(crate) async fn create_room(&self, token: &str, invite: &[&str]) -> Result<String, Error> {
        let body = json!({"preset": "private_chat", "invite": invite});
        let v = self
            .setup_ok(
                reqwest::Method::POST,
                "/_matrix/client/v3/createRoom",
                Some(token),
                Some(&body),
            )
            .await?;
        v["room_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("createRoom: no room_id in {v}"))
    }

    /// Joins a room the user was invited to.
    pub(crate) async fn join(&self, token: &str, room_id: &str) -> Result<(), Error> {
        let path = format!("/_matrix/client/v3/rooms/{}/join", segment(room_id));
        self.setup_ok(reqwest::Method::POST, &path, Some(token), Some(&json!({})))
            .await
            .map(drop)
    }

    /// What a sender needs for its presence PUTs, worked out once (the
    /// path and the authorization header), so the load's own CPU goes to
    /// sending rather than to formatting.
    pub(crate) fn presence_target(&self, account: &Account) -> PresenceTarget {
        let path = format!(
            "/_matrix/client/v3/presence/{}/status",
            segment(&account.user_id)
        );
        PresenceTarget {
            path: path.parse().expect("an encoded path is a URI"),
            auth: bearer(&account.token),
        }
    }

    /// One presence PUT, as the load sends it (no retry).
    pub(crate) async fn put_presence(
        &self,
        target: &PresenceTarget,
        presence: &str,
        status_msg: &str,
    ) -> PutOutcome {
        let body = serde_json::to_vec(&SetPresence {
            presence,
            status_msg,
        })
        .expect("strings serialize");
        match self
            .load
            .send(
                http::Method::PUT,
                target.path.clone(),
                &target.auth,
                Some(body),
                PUT_TIMEOUT,
            )
            .await
        {
            Ok((status, _)) if status.is_success() => PutOutcome::Ok,
            Ok((StatusCode::TOO_MANY_REQUESTS, _)) => PutOutcome::RateLimited,
            _ => PutOutcome::Error,
        }
    }

    /// What an observer needs for its syncs, worked out once: a filter
    /// that leaves out room data (the load is presence only), encoded.
    pub(crate) fn sync_target(&self, account: &Account) -> SyncTarget {
        const FILTER: &str = r#"{"room":{"rooms":[],"account_data":{"not_types":["*"]}},"account_data":{"not_types":["*"]}}"#;
        SyncTarget {
            path_prefix: format!(
                "/_matrix/client/v3/sync?set_presence=offline&filter={}&timeout=",
                segment(FILTER)
            ),
            auth: bearer(&account.token),
        }
    }

    /// One `/sync?set_presence=offline` call (see [`Self::sync_target`]).
    pub(crate) async fn sync(
        &self,
        target: &SyncTarget,
        since: Option<&str>,
        timeout_ms: u64,
    ) -> Result<SyncBody, Error> {
        let path: http::Uri = target
            .path(since, timeout_ms)
            .parse()
            .map_err(|e| format!("sync: {e}"))?;
        let timeout = Duration::from_millis(timeout_ms) + Duration::from_secs(30);
        let (status, bytes) = self
            .load
            .send(http::Method::GET, path, &target.auth, None, timeout)
            .await
            .map_err(|e| format!("sync: {e}"))?;
        if !status.is_success() {
            return Err(format!(
                "sync: {status} {}",
                String::from_utf8_lossy(&bytes)
            ));
        }
        serde_json::from_slice(&bytes).map_err(|e| format!("sync: {e}"))
    }
}

/// `Bearer <token>` as a header value.
fn bearer(token: &str) -> http::HeaderValue {
    http::HeaderValue::from_str(&format!("Bearer {token}")).expect("tokens are header-safe")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(segment("!a:b.c"), "%21a%3Ab.c");
        assert_eq!(segment("@u_1:localhost"), "%40u_1%3Alocalhost");
    }

    #[test]
    fn mac_covers_every_field() {
        let a = registration_mac("s", "n", "u", "p");
        assert_eq!(a.len(), 40);
        assert_ne!(a, registration_mac("s", "n", "u", "q"));
        assert_ne!(a, registration_mac("t", "n", "u", "p"));
        // What Python's hmac.new(b"secret", b"nonce\0alice\0pw\0notadmin", sha1) gives.
        assert_eq!(
            registration_mac("secret", "nonce", "alice", "pw"),
            "f9b5e1dbfecb7b1d1b89cbd7a2fd60853cf609f4"
        );
    }
}
