//! User ids in module configs. ruma's own deserializer reports why an id is
//! invalid but not which value it was; operators need the value to find the
//! typo, so configs parse ids through [`ConfigUserId`].

use std::fmt;

use ruma_common::OwnedUserId;
use serde::de::{self, Deserialize, Deserializer};

/// A user id read from a module config; a bad value is rejected with a
/// message quoting it (the loader adds the module's name).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConfigUserId(pub OwnedUserId);

impl ConfigUserId {
    /// The parsed id.
    pub fn into_inner(self) -> OwnedUserId {
        self.0
    }
}

impl fmt::Display for ConfigUserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for ConfigUserId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        OwnedUserId::try_from(value.as_str())
            .map(Self)
            .map_err(|e| de::Error::custom(format!("invalid user id `{value}`: {e}")))
    }
}

/// Unwraps a list of config ids.
pub(crate) fn user_ids(ids: Vec<ConfigUserId>) -> impl Iterator<Item = OwnedUserId> {
    ids.into_iter().map(ConfigUserId::into_inner)
}

#[cfg(test)]
mod tests {
    use super::ConfigUserId;

    #[test]
    fn a_valid_id_parses_and_a_bad_one_is_quoted() {
        let ok: ConfigUserId = serde_json::from_str(r#""@a:example.com""#).unwrap();
        assert_eq!(ok.to_string(), "@a:example.com");
        let err = serde_json::from_str::<ConfigUserId>(r#""a:example.com""#).unwrap_err();
        assert!(err.to_string().contains("`a:example.com`"), "{err}");
    }
}
