//! Server discovery: where to connect for a server name (Matrix spec,
//! server-server API "Resolving server names").
//!
//! The order is the spec's: an IP literal or an explicit port is used as is;
//! otherwise `https://<host>/.well-known/matrix/server` may delegate to
//! another `host[:port]` (which goes through the same literal / port / SRV
//! steps, without a second well-known), then SRV `_matrix-fed._tcp.<host>`,
//! then the deprecated `_matrix._tcp.<host>`, then port 8448.
//!
//! The answer is a base URL whose host is the name the certificate must
//! carry (TLS SNI and the `Host` header come from it), and, when SRV named
//! a target, the addresses to connect to for that host. The client's DNS
//! hook ([`SrvOverrides`]) hands those addresses to reqwest, so the
//! connection goes to the SRV target while TLS still checks the delegated
//! name, as the spec requires. Answers are cached for an hour (failed
//! well-known lookups too), so discovery costs nothing per transaction;
//! a failed connection drops the server's answer so it is looked up anew.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use ruma_common::{OwnedServerName, ServerName};

/// Port used when nothing names one.
pub const DEFAULT_FEDERATION_PORT: u16 = 8448;
/// How long a discovery answer is reused.
const CACHE_FOR: Duration = Duration::from_secs(3600);
/// A well-known answer larger than this is ignored.
const MAX_WELL_KNOWN_BYTES: usize = 50 * 1024;
/// Servers whose answer is kept at most: anyone can make us look a name up
/// (by naming it as a request's origin), so the cache must not grow with
/// the names an attacker makes up.
const MAX_CACHED: usize = 10_000;

/// Where to send requests for one server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// `https://host[:port]`: the host is the certificate's name.
    pub base_url: String,
    /// Addresses SRV named for the URL's host (the URL then has no port).
    pub srv_target: Option<(String, Vec<SocketAddr>)>,
}

/// Addresses found through SRV, keyed by the host name in the URL; the
/// client's DNS hook (`ip_filter::FilteringResolver`) reads them, other
/// names go to the system resolver.
#[derive(Default)]
pub struct SrvOverrides {
    by_host: Mutex<HashMap<String, Vec<SocketAddr>>>,
}

impl SrvOverrides {
    pub(crate) fn set(&self, host: &str, addrs: Vec<SocketAddr>) {
        let mut by_host = self.by_host.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded like the discovery cache; an entry dropped here is set
        // again the next time discovery hands out its answer.
        if by_host.len() >= MAX_CACHED && !by_host.contains_key(&host.to_ascii_lowercase()) {
            by_host.clear();
        }
        by_host.insert(host.to_ascii_lowercase(), addrs);
    }

    pub(crate) fn get(&self, host: &str) -> Option<Vec<SocketAddr>> {
        self.by_host
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&host.to_ascii_lowercase())
            .cloned()
    }
}

/// Discovers and caches where each server is reached.
pub struct Discovery {
    /// Plain HTTPS client for `.well-known` (system DNS, never SRV targets).
    well_known_client: reqwest::Client,
    dns: Option<TokioResolver>,
    overrides: Arc<SrvOverrides>,
    cache: Mutex<HashMap<OwnedServerName, (Instant, Resolved)>>,
}

impl Discovery {
    /// Discovery using `well_known_client` for `.well-known` lookups and
    /// writing SRV answers into `overrides`.
    pub fn new(well_known_client: reqwest::Client, overrides: Arc<SrvOverrides>) -> Self {
        let dns = match TokioResolver::builder_tokio() {
            Ok(builder) => Some(builder.build()),
            Err(e) => {
                tracing::warn!("no DNS configuration, SRV discovery is off: {e}");
                None
            }
        };
        Self {
            well_known_client,
            dns,
            overrides,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Where to reach `server` (cached).
    pub async fn resolve(&self, server: &ServerName) -> Resolved {
        if let Some((at, resolved)) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(server)
        {
            if at.elapsed() < CACHE_FOR {
                let resolved = resolved.clone();
                if let Some((host, addrs)) = &resolved.srv_target {
                    if self.overrides.get(host).is_none() {
                        self.overrides.set(host, addrs.clone());
                    }
                }
                return resolved;
            }
        }
        let resolved = self.discover(server).await;
        if let Some((host, addrs)) = &resolved.srv_target {
            self.overrides.set(host, addrs.clone());
        }
        tracing::debug!(%server, url = %resolved.base_url, "federation destination resolved");
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, (at, _)| at.elapsed() < CACHE_FOR);
        }
        if cache.len() >= MAX_CACHED {
            // Still full of live answers: drop a tenth (any; they are
            // looked up again when needed).
            let drop: Vec<OwnedServerName> = cache.keys().take(MAX_CACHED / 10).cloned().collect();
            for name in drop {
                cache.remove(&name);
            }
        }
        cache.insert(server.to_owned(), (Instant::now(), resolved.clone()));
        resolved
    }

    /// Drops the cached answer for `server` (after a failed connection,
    /// so a server that moved is found again on the next request).
    pub fn forget(&self, server: &ServerName) {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(server);
    }

    async fn discover(&self, server: &ServerName) -> Resolved {
        let (host, port) = split_host_port(server.as_str());
        if let Some(resolved) = literal_or_port(host, port) {
            return resolved;
        }
        if let Some(delegated) = self.well_known(host).await {
            let (d_host, d_port) = split_host_port(&delegated);
            if let Some(resolved) = literal_or_port(d_host, d_port) {
                return resolved;
            }
            return self.srv_or_default(d_host).await;
        }
        self.srv_or_default(host).await
    }

    async fn srv_or_default(&self, host: &str) -> Resolved {
        for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
            if let Some(addrs) = self.srv(&format!("{service}.{host}.")).await {
                return Resolved {
                    base_url: format!("https://{host}"),
                    srv_target: Some((host.to_owned(), addrs)),
                };
            }
        }
        Resolved {
            base_url: format!("https://{host}:{DEFAULT_FEDERATION_PORT}"),
            srv_target: None,
        }
    }

    /// The addresses of the best SRV target (lowest priority value; the
    /// weights only spread load, so the first of that priority is used).
    async fn srv(&self, name: &str) -> Option<Vec<SocketAddr>> {
        let lookup = self.dns.as_ref()?.srv_lookup(name).await.ok()?;
        let mut records: Vec<(u16, String, u16)> = lookup
            .iter()
            .map(|r| {
                let target = r.target().to_utf8();
                (
                    r.priority(),
                    target.trim_end_matches('.').to_owned(),
                    r.port(),
                )
            })
            .collect();
        drop(lookup);
        records.sort_by_key(|r| r.0);
        for (_, target, port) in records {
            // "." means the service is decidedly not available here.
            if target.is_empty() {
                return None;
            }
            let found = tokio::net::lookup_host((target.as_str(), port)).await;
            if let Ok(found) = found {
                let addrs: Vec<SocketAddr> = found.collect();
                if !addrs.is_empty() {
                    return Some(addrs);
                }
            }
        }
        None
    }

    /// `m.server` from `https://<host>/.well-known/matrix/server`, if valid.
    async fn well_known(&self, host: &str) -> Option<String> {
        let url = format!("https://{host}/.well-known/matrix/server");
        let response = self
            .well_known_client
            .get(&url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        let body = response.bytes().await.ok()?;
        if body.len() > MAX_WELL_KNOWN_BYTES {
            return None;
        }
        let value: serde_json::Value = serde_json::from_slice(&body).ok()?;
        let delegated = value.get("m.server")?.as_str()?;
        // It must itself be a valid server name.
        <&ServerName>::try_from(delegated).ok()?;
        Some(delegated.to_owned())
    }
}

/// `host` and its port, if given (`[::1]:8448` keeps its brackets).
fn split_host_port(name: &str) -> (&str, Option<u16>) {
    match name.rsplit_once(':') {
        Some((host, port))
            if !host.ends_with(':') && (!host.contains(':') || host.ends_with(']')) =>
        {
            match port.parse() {
                Ok(p) => (host, Some(p)),
                Err(_) => (name, None),
            }
        }
        _ => (name, None),
    }
}

/// The answer without any lookup: IP literals (port or 8448) and names with
/// an explicit port.
fn literal_or_port(host: &str, port: Option<u16>) -> Option<Resolved> {
    let is_ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .is_ok();
    if is_ip || port.is_some() {
        let port = port.unwrap_or(DEFAULT_FEDERATION_PORT);
        return Some(Resolved {
            base_url: format!("https://{host}:{port}"),
            srv_target: None,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_explicit_ports_need_no_lookup() {
        let url = |name: &str| {
            let (h, p) = split_host_port(name);
            literal_or_port(h, p).map(|r| r.base_url)
        };
        assert_eq!(url("1.2.3.4").as_deref(), Some("https://1.2.3.4:8448"));
        assert_eq!(url("1.2.3.4:99").as_deref(), Some("https://1.2.3.4:99"));
        assert_eq!(url("[::1]").as_deref(), Some("https://[::1]:8448"));
        assert_eq!(url("[::1]:5").as_deref(), Some("https://[::1]:5"));
        assert_eq!(
            url("localhost:8448").as_deref(),
            Some("https://localhost:8448")
        );
        assert_eq!(url("example.org"), None);
    }

    /// The SRV mechanism rests on this: a URL without a port, whose host
    /// the hook maps to an address with a port, connects to that port,
    /// while the request still names the host (what TLS would check).
    #[tokio::test]
    async fn the_dns_hook_sends_a_portless_url_to_the_srv_port() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "connection closed early");
                request.extend_from_slice(&buf[..n]);
            }
            socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                .await
                .unwrap();
            String::from_utf8(request).unwrap()
        });
        let overrides = Arc::new(SrvOverrides::default());
        overrides.set("Target.Example", vec![addr]);
        let resolver = crate::federation::ip_filter::FilteringResolver::new(
            Some(overrides),
            Arc::new(crate::federation::ip_filter::IpFilter::default()),
        );
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(resolver))
            .build()
            .unwrap();
        let body = client
            .get("http://target.example/probe")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "ok");
        let request = server.await.unwrap().to_ascii_lowercase();
        assert!(request.contains("host: target.example\r\n"), "{request}");
    }
}
