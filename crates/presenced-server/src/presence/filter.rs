//! The `presence` part of a sync filter (spec §10.4): `types`,
//! `not_types`, `senders`, `not_senders` and `limit`.

use presenced_engine::PresenceState;
use serde::Deserialize;

/// A sync filter's `presence` section.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PresenceFilter {
    /// Event types to include (`m.presence` or `*`); absent: all.
    pub types: Option<Vec<String>>,
    /// Event types to exclude.
    #[serde(default)]
    pub not_types: Vec<String>,
    /// Senders to include; absent: all.
    pub senders: Option<Vec<String>>,
    /// Senders to exclude.
    #[serde(default)]
    pub not_senders: Vec<String>,
    /// At most this many events. Any JSON number is a valid limit (the
    /// filter schema says "number"): fractions round down, negatives are 0,
    /// so a `limit: 10.0` does not make the whole section unreadable.
    #[serde(default, deserialize_with = "any_number_limit")]
    pub limit: Option<usize>,
}

fn any_number_limit<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    let n: Option<f64> = Option::deserialize(d)?;
    // `as` saturates: negatives and NaN become 0, huge values usize::MAX.
    Ok(n.map(|n| n.floor() as usize))
}

fn matches_type(patterns: &[String]) -> bool {
    patterns
        .iter()
        .any(|p| p == "*" || p == "m.presence" || p == "m.*")
}

impl PresenceFilter {
    /// The `presence` section of a whole filter JSON, if it has one.
    pub fn from_filter(filter: &serde_json::Value) -> Self {
        filter
            .get("presence")
            .and_then(|p| serde_json::from_value(p.clone()).ok())
            .unwrap_or_default()
    }

    /// Whether the filter lets no presence through at all, so presence
    /// need not be computed (nor waited for).
    pub fn blocks_all(&self) -> bool {
        matches_type(&self.not_types)
            || self.types.as_ref().is_some_and(|t| !matches_type(t))
            || self.senders.as_ref().is_some_and(Vec::is_empty)
            || self.not_senders.iter().any(|s| s == "*")
            || self.limit == Some(0)
    }

    /// Applies the sender rules and the limit.
    pub fn apply(&self, mut states: Vec<PresenceState>) -> Vec<PresenceState> {
        states.retain(|s| {
            let sender = s.user_id.as_str();
            self.senders
                .as_ref()
                .is_none_or(|list| list.iter().any(|x| x == sender))
                && !self.not_senders.iter().any(|x| x == sender)
        });
        if let Some(limit) = self.limit {
            states.truncate(limit);
        }
        states
    }
}

#[cfg(test)]
mod tests {
    use ruma_common::UserId;
    use serde_json::json;

    use super::*;

    fn state(user: &str) -> PresenceState {
        PresenceState::new(UserId::parse(user).unwrap())
    }

    #[test]
    fn senders_and_not_senders_match_exactly() {
        let keep = PresenceFilter::from_filter(&json!({"presence": {"senders": ["@foo:bar"]}}));
        assert_eq!(
            keep.apply(vec![state("@foo:bar"), state("@baz:bar")]).len(),
            1
        );
        let drop = PresenceFilter::from_filter(&json!({"presence": {"not_senders": ["@foo:bar"]}}));
        assert!(drop.apply(vec![state("@foo:bar")]).is_empty());
    }

    #[test]
    fn fractional_and_negative_limits_still_read_the_section() {
        let f =
            PresenceFilter::from_filter(&json!({"presence": {"limit": 1.0, "not_types": ["*"]}}));
        assert!(f.blocks_all());
        let f = PresenceFilter::from_filter(&json!({"presence": {"limit": 2.7}}));
        assert_eq!(f.limit, Some(2));
        let f = PresenceFilter::from_filter(&json!({"presence": {"limit": -3}}));
        assert_eq!(f.limit, Some(0));
    }

    #[test]
    fn not_types_star_disables_presence() {
        assert!(
            PresenceFilter::from_filter(&json!({"presence": {"not_types": ["*"]}})).blocks_all()
        );
        assert!(PresenceFilter::from_filter(&json!({"presence": {"types": []}})).blocks_all());
        assert!(
            !PresenceFilter::from_filter(&json!({"presence": {"types": ["m.presence"]}}))
                .blocks_all()
        );
        assert!(!PresenceFilter::from_filter(&json!({"room": {}})).blocks_all());
    }
}
