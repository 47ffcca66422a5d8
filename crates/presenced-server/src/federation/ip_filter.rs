//! Which addresses outbound federation and key requests may connect to
//! (`ip_range_blacklist` / `ip_range_whitelist`).
//!
//! Anyone can make presenced contact a server: an unauthenticated request
//! naming an origin makes it fetch that origin's keys. Without this filter
//! a made-up name resolving to `127.0.0.1` or `10.x` would turn presenced
//! into a probe of its own network. The check runs after DNS, on every
//! address a name resolves to (the client's DNS hook drops blocked ones, so
//! a name with only blocked addresses fails like a name without any), and
//! on IP literals in URLs, which reach no resolver ([`IpFilter::check_url`],
//! also used for `.well-known` redirects).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use crate::config::{Config, IpRanges};

use super::discovery::SrvOverrides;

/// The blacklist and its exceptions.
#[derive(Clone, Debug, Default)]
pub struct IpFilter {
    blacklist: IpRanges,
    whitelist: IpRanges,
}

/// A URL or name that may not be contacted.
#[derive(Debug, thiserror::Error)]
#[error("{0} is in ip_range_blacklist")]
pub struct Blocked(pub String);

impl IpFilter {
    /// The filter `config` describes.
    pub fn from_config(config: &Config) -> Self {
        Self::new(
            config.ip_range_blacklist.clone(),
            config.ip_range_whitelist.clone(),
        )
    }

    /// A filter blocking `blacklist` except `whitelist`.
    pub fn new(blacklist: IpRanges, whitelist: IpRanges) -> Self {
        Self {
            blacklist,
            whitelist,
        }
    }

    /// Whether a connection to `ip` is allowed. An IPv4 address written as
    /// IPv6 (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`, 6to4
    /// `2002:aabb:ccdd::`) is checked as that IPv4 address too, so it
    /// cannot slip past a v4 range; a whitelisted form wins.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let forms = forms(ip);
        if forms.iter().any(|f| self.whitelist.contains(f)) {
            return true;
        }
        let unspecified = forms.iter().any(IpAddr::is_unspecified);
        !unspecified && !forms.iter().any(|f| self.blacklist.contains(f))
    }

    /// Refuses a URL whose host is a blocked IP literal (names are checked
    /// by the DNS hook).
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), Blocked> {
        let host = url.host_str().unwrap_or_default();
        // IPv6 literals keep their brackets in the URL.
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        let Ok(ip) = literal.parse::<IpAddr>() else {
            return Ok(());
        };
        if self.allows(ip) {
            Ok(())
        } else {
            Err(Blocked(ip.to_string()))
        }
    }

    /// A redirect policy for `.well-known` lookups: at most `max` hops, none
    /// to a blocked IP literal.
    pub fn redirect_policy(self: &Arc<Self>, max: usize) -> reqwest::redirect::Policy {
        let filter = Arc::clone(self);
        reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= max {
                return attempt.error("too many redirects");
            }
            match filter.check_url(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(blocked) => attempt.error(blocked),
            }
        })
    }
}

/// `ip` and the IPv4 address it embeds, if any.
fn forms(ip: IpAddr) -> Vec<IpAddr> {
    let mut forms = vec![ip];
    if let IpAddr::V6(v6) = ip {
        let segments = v6.segments();
        // `to_ipv4` covers mapped and compatible forms; `::` and `::1` are
        // IPv6's own unspecified and loopback, not IPv4 addresses.
        if let Some(v4) = v6.to_ipv4() {
            if !v6.is_unspecified() && !v6.is_loopback() {
                forms.push(IpAddr::V4(v4));
            }
        }
        if segments[0] == 0x2002 {
            let [a, b] = segments[1].to_be_bytes();
            let [c, d] = segments[2].to_be_bytes();
            forms.push(IpAddr::V4(Ipv4Addr::new(a, b, c, d)));
        }
    }
    forms
}

/// The federation clients' DNS hook: SRV targets from discovery (when
/// given) or the system resolver, then only the addresses the filter allows.
pub struct FilteringResolver {
    overrides: Option<Arc<SrvOverrides>>,
    filter: Arc<IpFilter>,
}

impl FilteringResolver {
    /// Resolves through `overrides` first (when given), then the system.
    pub fn new(overrides: Option<Arc<SrvOverrides>>, filter: Arc<IpFilter>) -> Self {
        Self { overrides, filter }
    }
}

impl reqwest::dns::Resolve for FilteringResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let known = self.overrides.as_ref().and_then(|o| o.get(&host));
        let filter = Arc::clone(&self.filter);
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = match known {
                Some(addrs) => addrs,
                // Port 0: the URL's port (explicit or 443) replaces it.
                None => tokio::net::lookup_host((host.as_str(), 0)).await?.collect(),
            };
            let found = addrs.len();
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| filter.allows(a.ip()))
                .collect();
            if allowed.is_empty() && found > 0 {
                tracing::debug!(%host, "every address of the name is in ip_range_blacklist");
                return Err(Box::new(Blocked(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_filter() -> IpFilter {
        IpFilter::new(IpRanges::synapse_default_blacklist(), IpRanges::default())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_default_blocks_private_addresses_in_every_spelling() {
        let f = default_filter();
        for blocked in [
            "127.0.0.1",
            "10.1.2.3",
            "0.0.0.0",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::192.168.0.1",
            "2002:7f00:0001::",
            "2002:0a00:0001:1::5",
            "fe80::1",
        ] {
            assert!(!f.allows(ip(blocked)), "{blocked}");
        }
        for allowed in [
            "1.1.1.1",
            "::ffff:1.1.1.1",
            "2002:0101:0101::",
            "2606:4700::1111",
        ] {
            assert!(f.allows(ip(allowed)), "{allowed}");
        }
    }

    #[test]
    fn the_whitelist_wins_in_every_spelling() {
        let f = IpFilter::new(
            IpRanges::synapse_default_blacklist(),
            serde_yaml::from_str("['127.0.0.0/8']").unwrap(),
        );
        assert!(f.allows(ip("127.0.0.1")));
        assert!(f.allows(ip("::ffff:127.0.0.1")));
        assert!(!f.allows(ip("::1")));
        assert!(!f.allows(ip("10.0.0.1")));
    }

    #[test]
    fn ip_literal_urls_are_checked() {
        let f = default_filter();
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        assert!(f.check_url(&url("https://127.0.0.1:8448/x")).is_err());
        assert!(f.check_url(&url("https://[::1]:8448/x")).is_err());
        assert!(f.check_url(&url("https://[::ffff:7f00:1]/x")).is_err());
        assert!(f.check_url(&url("https://1.1.1.1/x")).is_ok());
        // Names are the DNS hook's business.
        assert!(f.check_url(&url("https://localhost:8448/x")).is_ok());
    }

    #[tokio::test]
    async fn the_dns_hook_drops_blocked_addresses() {
        use reqwest::dns::Resolve;
        let overrides = Arc::new(SrvOverrides::default());
        overrides.set(
            "mixed.test",
            vec!["127.0.0.1:1".parse().unwrap(), "1.1.1.1:1".parse().unwrap()],
        );
        overrides.set("local.test", vec!["10.0.0.1:1".parse().unwrap()]);
        let resolver = FilteringResolver::new(Some(overrides), Arc::new(default_filter()));
        let addrs: Vec<SocketAddr> = resolver
            .resolve("mixed.test".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert_eq!(addrs, vec!["1.1.1.1:1".parse::<SocketAddr>().unwrap()]);
        let err = resolver
            .resolve("local.test".parse().unwrap())
            .await
            .err()
            .expect("blocked");
        assert!(err.to_string().contains("ip_range_blacklist"), "{err}");
        // The system resolver's answers go through the filter too.
        assert!(resolver
            .resolve("localhost".parse().unwrap())
            .await
            .is_err());
    }
}
