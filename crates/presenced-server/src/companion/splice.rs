//! `/sync` in companion mode: Synapse's answer with presenced's presence
//! section spliced in.
//!
//! The client's request goes to Synapse as it came, with Synapse's half of
//! the token as `since` ([`token::SplicedToken`]); meanwhile the presence
//! driver waits for presence after presenced's half. Whichever comes
//! first answers:
//!
//! - **Synapse first**: its body, with the presence section presenced
//!   has now and `next_batch` joining both halves.
//! - **Presence first**: the presence section alone, with Synapse's
//!   half of `next_batch` unchanged, so no room event is lost or repeated.
//!   The Synapse request stays open, parked under the client's token and
//!   query: the client's next sync carries the same Synapse position and
//!   adopts it, so a presence wake-up does not cost Synapse a new `/sync`.
//!
//! A parked request is dropped after [`PARK_LIFETIME`] unadopted (its
//! answer, if it came, with it: the client that does not come back gets
//! Synapse's answer again from its token). An initial sync (no `since`)
//! always waits for Synapse, which has no position to keep yet.

pub mod token;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use ruma_common::{DeviceId, UserId};
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;

use self::token::SplicedToken;
use super::upstream::{Upstream, UpstreamError};
use crate::presence::filter::PresenceFilter;
use crate::presence::token::PresenceToken;
use crate::presence::{wire, PresenceService, SyncEffect, SyncPresence, SyncRequest};
use crate::util::clock::now;
use crate::util::expiring_map::ExpiringMap;

/// How long a parked Synapse request waits for its client to come back.
pub const PARK_LIFETIME: Duration = Duration::from_secs(120);

/// At most this many parked requests (oldest dropped first).
const MAX_PARKED: usize = 100_000;

/// How long a stored filter fetched from Synapse is reused.
const FILTER_LIFETIME: Duration = Duration::from_secs(600);

/// Synapse's answer to a forwarded `/sync`.
#[derive(Debug)]
pub struct UpstreamSync {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Bytes,
}

/// What the api layer writes back.
#[derive(Debug)]
pub enum SpliceAnswer {
    /// Synapse refused (401, 400, ...): its answer as it wrote it.
    Synapse(UpstreamSync),
    /// A spliced answer (JSON bytes).
    Spliced(Vec<u8>),
}

/// Why a spliced sync failed.
#[derive(Debug, thiserror::Error)]
pub enum SpliceError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("Invalid since token: {0}")]
    BadToken(String),
    #[error("Synapse's /sync answer is not a JSON object")]
    Malformed,
}

/// One client `/sync`, as the api layer parsed it.
pub struct SpliceRequest<'a> {
    pub user: &'a UserId,
    pub device: &'a DeviceId,
    /// The client's access token (Synapse checks it again).
    pub access_token: &'a str,
    /// The client's path (`/_matrix/client/v3/sync`, or r0's).
    pub path: &'a str,
    /// The client's query, decoded, in order.
    pub query: Vec<(String, String)>,
    /// `set_presence` (`None`: offline, the sync leaves presence alone).
    pub set_presence: Option<presenced_engine::Presence>,
    /// `X-Forwarded-For` to send Synapse.
    pub forwarded_for: Option<String>,
}

/// The splice's shared parts.
pub struct SyncSplice {
    upstream: Upstream,
    presence: PresenceService,
    /// `rc_presence` for presence-affecting syncs, as standalone's: a
    /// limited sync is answered and keeps its device syncing, only its
    /// `set_presence` does not apply.
    presence_limiter: crate::util::rate_limit::RateLimiter,
    include_offline_users: bool,
    /// Synapse requests whose client answered early, by [`ParkKey`].
    parked: Arc<Mutex<ParkedRequests>>,
    /// Stored filters fetched from Synapse, by (user, filter id).
    filters: Mutex<ExpiringMap<(String, String), Value>>,
    /// Synapse `/sync` requests started, and presence wake-ups answered
    /// early (the upstream cost per wake-up is their ratio).
    pub stats: SpliceStats,
}

/// Counters of the splice.
#[derive(Debug, Default)]
pub struct SpliceStats {
    pub upstream_syncs: std::sync::atomic::AtomicU64,
    pub adopted: std::sync::atomic::AtomicU64,
    pub early_answers: std::sync::atomic::AtomicU64,
}

/// A Synapse `/sync` under way: its answer arrives here.
type Pending = oneshot::Receiver<Result<UpstreamSync, UpstreamError>>;

/// Parked Synapse requests, by who may adopt them.
type ParkedRequests = ExpiringMap<ParkKey, Pending>;

/// Which later request may adopt a parked Synapse request: the same
/// token, the same Synapse position, the same query otherwise.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct ParkKey {
    access_token: String,
    upstream_query: String,
}

impl SyncSplice {
    pub fn new(
        upstream: Upstream,
        presence: PresenceService,
        include_offline_users: bool,
        presence_limiter: crate::util::rate_limit::RateLimiter,
    ) -> Self {
        Self {
            upstream,
            presence,
            presence_limiter,
            include_offline_users,
            parked: Arc::new(Mutex::new(ExpiringMap::new(PARK_LIFETIME, MAX_PARKED))),
            filters: Mutex::new(ExpiringMap::new(FILTER_LIFETIME, MAX_PARKED)),
            stats: SpliceStats::default(),
        }
    }

    /// Answers one `/sync`.
    pub async fn serve(&self, request: SpliceRequest<'_>) -> Result<SpliceAnswer, SpliceError> {
        let SpliceRequest {
            user,
            device,
            access_token,
            path,
            query,
            set_presence,
            forwarded_for,
        } = request;
        let effect = match set_presence {
            None => SyncEffect::None,
            Some(p) if self.presence_limiter.take(user, Instant::now()).is_ok() => {
                SyncEffect::Set(p)
            }
            Some(_) => SyncEffect::KeepAlive,
        };
        let param = |name: &str| {
            query
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let since = match param("since") {
            Some(text) => Some(
                SplicedToken::parse(text).ok_or_else(|| SpliceError::BadToken(text.to_owned()))?,
            ),
            None => None,
        };
        let full_state = param("full_state") == Some("true");
        let timeout =
            Duration::from_millis(param("timeout").and_then(|t| t.parse().ok()).unwrap_or(0));
        let deadline = tokio::time::Instant::now() + timeout;
        let filter = self
            .presence_filter(user, access_token, param("filter"))
            .await;

        // Synapse's request: the client's query with Synapse's half as since.
        let upstream_query = upstream_query(&query, since.as_ref().map(|s| s.synapse.as_str()));
        let key = ParkKey {
            access_token: access_token.to_owned(),
            upstream_query: strip_timeout(&upstream_query),
        };
        let mut in_flight = InFlight {
            key: key.clone(),
            parked: Arc::clone(&self.parked),
            rx: Some(self.adopt_or_start(&key, path, &upstream_query, access_token, forwarded_for)),
        };

        let _syncing = self
            .presence
            .start_syncing(user, Some(device), effect)
            .await;
        let mut presence_since = since
            .as_ref()
            .filter(|_| !full_state)
            .and_then(|s| s.presence.clone());
        let include_offline = presence_since.is_some() || self.include_offline_users;
        // Only a sync with a Synapse position may answer before Synapse.
        let may_answer_early = since.is_some() && !full_state && !filter.blocks_all();
        let synapse_answer = loop {
            let rx = in_flight.rx.as_mut().expect("held until taken");
            if !may_answer_early {
                break rx.await;
            }
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let presence_wait = self.presence.sync(SyncRequest {
                user,
                since: presence_since.clone(),
                room_since: None,
                include_offline,
                timeout: remaining,
                stop_waiting: None,
            });
            tokio::select! {
                biased;
                answer = &mut *rx => break answer,
                presence = presence_wait => {
                    let states = filter.apply(presence.states);
                    if !states.is_empty() {
                        // Presence first: Synapse's position stays; its
                        // request waits for the client's next sync.
                        self.stats.early_answers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let synapse = since.as_ref().map(|s| s.synapse.clone()).unwrap_or_default();
                        return Ok(SpliceAnswer::Spliced(early_body(&synapse, presence.next, &states)));
                    }
                    if remaining.is_zero() {
                        // Nothing for us: Synapse answers when its own
                        // timeout ends.
                        break rx.await;
                    }
                    if presence_since.is_some() {
                        presence_since = Some(presence.next);
                    }
                }
            }
        };
        in_flight.rx = None;
        let synapse_answer = match synapse_answer {
            Ok(answer) => answer?,
            Err(_) => {
                return Err(UpstreamError::Unreachable {
                    url: self.upstream.base_url().to_owned(),
                    reason: "the request ended without an answer".to_owned(),
                }
                .into())
            }
        };
        if synapse_answer.status != 200 {
            return Ok(SpliceAnswer::Synapse(synapse_answer));
        }
        // Synapse first: what presence has now goes with its answer.
        let presence = if filter.blocks_all() {
            SyncPresence {
                states: Vec::new(),
                next: presence_since.unwrap_or_else(|| self.presence.token()),
            }
        } else {
            self.presence
                .sync(SyncRequest {
                    user,
                    since: presence_since,
                    room_since: None,
                    include_offline,
                    timeout: Duration::ZERO,
                    stop_waiting: None,
                })
                .await
        };
        let states = filter.apply(presence.states);
        let body = spliced_body(&synapse_answer.body, presence.next, &states)?;
        Ok(SpliceAnswer::Spliced(body))
    }

    /// The parked request for `key`, or a new one to Synapse.
    fn adopt_or_start(
        &self,
        key: &ParkKey,
        path: &str,
        upstream_query: &str,
        access_token: &str,
        forwarded_for: Option<String>,
    ) -> Pending {
        let adopted =
            (self.parked.lock().unwrap_or_else(|p| p.into_inner())).remove(key, Instant::now());
        if let Some(rx) = adopted {
            self.stats
                .adopted
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return rx;
        }
        self.stats
            .upstream_syncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let url = if upstream_query.is_empty() {
            format!("{}{path}", self.upstream.base_url())
        } else {
            format!("{}{path}?{upstream_query}", self.upstream.base_url())
        };
        let mut call = self.upstream.http().get(url).bearer_auth(access_token);
        if let Some(forwarded_for) = forwarded_for {
            call = call.header("x-forwarded-for", forwarded_for);
        }
        let base = self.upstream.base_url().to_owned();
        // Its own task: it outlives the client's request when parked.
        tokio::spawn(async move {
            let unreachable = |e: reqwest::Error| UpstreamError::Unreachable {
                url: base.clone(),
                reason: e.without_url().to_string(),
            };
            let answer = async {
                let response = call.send().await.map_err(unreachable)?;
                let status = response.status().as_u16();
                let content_type = (response.headers().get(reqwest::header::CONTENT_TYPE))
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body = response.bytes().await.map_err(unreachable)?;
                Ok(UpstreamSync {
                    status,
                    content_type,
                    body,
                })
            }
            .await;
            let _ = tx.send(answer);
        });
        rx
    }

    /// The filter's presence section: inline JSON, or a stored filter
    /// fetched from Synapse with the user's token (and kept a while). A
    /// filter that cannot be read filters nothing (Synapse answers for
    /// it in its own half).
    async fn presence_filter(
        &self,
        user: &UserId,
        token: &str,
        filter: Option<&str>,
    ) -> PresenceFilter {
        let Some(filter) = filter else {
            return PresenceFilter::default();
        };
        if filter.trim_start().starts_with('{') {
            return serde_json::from_str::<Value>(filter)
                .map(|v| PresenceFilter::from_filter(&v))
                .unwrap_or_default();
        }
        let key = (user.as_str().to_owned(), filter.to_owned());
        let cached = (self.filters.lock().unwrap_or_else(|p| p.into_inner()))
            .get(&key, Instant::now())
            .cloned();
        let value = match cached {
            Some(value) => value,
            None => {
                let path = format!(
                    "/_matrix/client/v3/user/{}/filter/{}",
                    urlencoding(user.as_str()),
                    urlencoding(filter)
                );
                match self.upstream.get_json::<Value>(&path, token).await {
                    Ok(value) => {
                        (self.filters.lock().unwrap_or_else(|p| p.into_inner())).insert(
                            key,
                            value.clone(),
                            Instant::now(),
                        );
                        value
                    }
                    Err(_) => return PresenceFilter::default(),
                }
            }
        };
        PresenceFilter::from_filter(&value)
    }
}

/// The Synapse request of a sync still waiting when the client's request
/// ends (answered early, or the client went away): parked for adoption.
struct InFlight {
    key: ParkKey,
    parked: Arc<Mutex<ParkedRequests>>,
    rx: Option<Pending>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(rx) = self.rx.take() {
            (self.parked.lock().unwrap_or_else(|p| p.into_inner())).insert(
                self.key.clone(),
                rx,
                Instant::now(),
            );
        }
    }
}

/// The client's query for Synapse: `since` replaced by Synapse's half
/// (dropped for an initial sync), everything else as it came.
fn upstream_query(query: &[(String, String)], synapse_since: Option<&str>) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (name, value) in query {
        if name == "since" {
            if let Some(since) = synapse_since {
                out.append_pair("since", since);
            }
        } else {
            out.append_pair(name, value);
        }
    }
    out.finish()
}

/// The query without `timeout`: a later request with another timeout may
/// still adopt a parked one.
fn strip_timeout(query: &str) -> String {
    query
        .split('&')
        .filter(|pair| !pair.starts_with("timeout="))
        .collect::<Vec<_>>()
        .join("&")
}

fn urlencoding(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn presence_events(states: &[presenced_engine::PresenceState]) -> Value {
    let now = now();
    let events: Vec<Value> = states
        .iter()
        .map(|s| serde_json::to_value(wire::sync_event(s, now)).unwrap_or(Value::Null))
        .collect();
    json!({ "events": events })
}

/// The answer when presence comes first: nothing of Synapse's.
fn early_body(
    synapse: &str,
    presence: PresenceToken,
    states: &[presenced_engine::PresenceState],
) -> Vec<u8> {
    let next = SplicedToken {
        synapse: synapse.to_owned(),
        presence: Some(presence),
    };
    // The shape of an answer with nothing new in any room (as standalone
    // writes one), so a client that expects every section finds it.
    let body = json!({
        "next_batch": next.to_string(),
        "presence": presence_events(states),
        "rooms": {"join": {}, "invite": {}, "leave": {}},
        "account_data": {"events": []},
        "to_device": {"events": []},
        "device_lists": {"changed": [], "left": []},
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Synapse's answer with the presence section and the joined token.
fn spliced_body(
    synapse_body: &[u8],
    presence: PresenceToken,
    states: &[presenced_engine::PresenceState],
) -> Result<Vec<u8>, SpliceError> {
    let mut body: Map<String, Value> =
        serde_json::from_slice(synapse_body).map_err(|_| SpliceError::Malformed)?;
    let synapse = body
        .get("next_batch")
        .and_then(Value::as_str)
        .ok_or(SpliceError::Malformed)?
        .to_owned();
    let next = SplicedToken {
        synapse,
        presence: Some(presence),
    };
    body.insert("next_batch".to_owned(), Value::String(next.to_string()));
    if states.is_empty() {
        body.remove("presence");
    } else {
        body.insert("presence".to_owned(), presence_events(states));
    }
    serde_json::to_vec(&body).map_err(|_| SpliceError::Malformed)
}
