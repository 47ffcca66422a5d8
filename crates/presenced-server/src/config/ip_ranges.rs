//! `ip_range_blacklist` / `ip_range_whitelist`: lists of CIDR ranges (or
//! single addresses) that outbound federation and key requests may not,
//! or may after all, connect to.
//!
//! The default blacklist is Synapse's (1.163): loopback, private,
//! carrier-grade NAT, link-local, documentation and test, multicast, and
//! the IPv6 unique-local and site-local ranges. `0.0.0.0` and `::` are
//! always blocked, as in Synapse. How an address is matched (IPv4 inside
//! IPv6 forms too) is `federation::ip_filter`'s job.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

/// Synapse's default `ip_range_blacklist`.
pub const SYNAPSE_DEFAULT_BLACKLIST: &[&str] = &[
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "192.0.0.0/24",
    "169.254.0.0/16",
    "192.88.99.0/24",
    "198.18.0.0/15",
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "::1/128",
    "fe80::/10",
    "fc00::/7",
    "2001:db8::/32",
    "ff00::/8",
    "fec0::/10",
];

/// A list of address ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpRanges(pub Vec<IpNet>);

impl IpRanges {
    /// Synapse's default blacklist.
    pub fn synapse_default_blacklist() -> Self {
        Self::parse_all(SYNAPSE_DEFAULT_BLACKLIST).expect("valid built-in ranges")
    }

    /// Parses ranges written as in the config.
    pub fn parse_all(texts: &[&str]) -> Result<Self, String> {
        texts
            .iter()
            .map(|t| parse_range(t))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Whether a range holds `ip`.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(ip))
    }
}

/// `10.0.0.0/8`, or a single address (`::1`, a /32 or /128).
fn parse_range(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net);
    }
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("{text:?} is not an IP address or CIDR range"))
}

impl<'de> Deserialize<'de> for IpRanges {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // YAML `~` is an empty list, as in Synapse.
        let items: Option<Vec<String>> = Option::deserialize(deserializer)?;
        items
            .unwrap_or_default()
            .iter()
            .map(|s| parse_range(s).map_err(de::Error::custom))
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

impl Serialize for IpRanges {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(ToString::to_string))
    }
}

impl fmt::Display for IpRanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&list.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_single_addresses_parse() {
        let r: IpRanges = serde_yaml::from_str("['10.0.0.0/8', '::1', ' 192.0.2.7 ']").unwrap();
        assert!(r.contains(&"10.1.2.3".parse().unwrap()));
        assert!(r.contains(&"::1".parse().unwrap()));
        assert!(r.contains(&"192.0.2.7".parse().unwrap()));
        assert!(!r.contains(&"192.0.2.8".parse().unwrap()));
        let empty: IpRanges = serde_yaml::from_str("~").unwrap();
        assert!(empty.0.is_empty());
    }

    #[test]
    fn a_bad_range_is_refused_with_its_text() {
        let err = serde_yaml::from_str::<IpRanges>("['10.0.0.0/33']").unwrap_err();
        assert!(err.to_string().contains("10.0.0.0/33"), "{err}");
        assert!(serde_yaml::from_str::<IpRanges>("['example.org']").is_err());
    }

    #[test]
    fn the_default_blocks_loopback_and_private_ranges() {
        let r = IpRanges::synapse_default_blacklist();
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "192.168.1.1",
            "::1",
            "fd00::1",
            "169.254.1.1",
        ] {
            assert!(r.contains(&ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "2606:4700::1111"] {
            assert!(!r.contains(&ip.parse().unwrap()), "{ip}");
        }
    }
}
