//! The spliced `/sync` token: Synapse's own token and presenced's presence
//! position in one opaque, URL-safe string, `{synapse}-p{presence}`.
//!
//! Synapse's tokens use letters, digits, `_`, `.` and `~`, never `-`, and
//! presenced's presence part (digits, or `g1.…` for a cluster) has none
//! either, so the last `-p` splits them. A token without it is a plain
//! Synapse token (a client that synced before presenced stood in front):
//! its sync continues Synapse's stream and gets a presence snapshot.

use std::fmt;

use crate::presence::token::PresenceToken;

/// A `since` token as the splice reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplicedToken {
    /// Synapse's half, passed to Synapse as its `since`.
    pub synapse: String,
    /// presenced's half; `None` for a plain Synapse token (or a presence
    /// part of another generation): the client gets a snapshot.
    pub presence: Option<PresenceToken>,
}

impl SplicedToken {
    /// Reads a `since` token; `None` only for one whose presence half is
    /// malformed (the caller answers `M_INVALID_PARAM`).
    pub fn parse(token: &str) -> Option<Self> {
        match token.rsplit_once("-p") {
            Some((synapse, presence)) => Some(Self {
                synapse: synapse.to_owned(),
                presence: PresenceToken::parse(presence).ok()?,
            }),
            None => Some(Self {
                synapse: token.to_owned(),
                presence: None,
            }),
        }
    }
}

impl fmt::Display for SplicedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.presence {
            Some(presence) => write!(f, "{}-p{presence}", self.synapse),
            None => f.write_str(&self.synapse),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_plain_synapse_tokens_read_as_no_presence() {
        for synapse in ["s72594_4483_1934_1_1_1_1_1_1_1", "m56~2.58~3.59_1_2_3"] {
            let token = SplicedToken {
                synapse: synapse.to_owned(),
                presence: Some(PresenceToken::Local(1234)),
            };
            let text = token.to_string();
            assert!(text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)));
            assert_eq!(SplicedToken::parse(&text), Some(token));
            assert_eq!(
                SplicedToken::parse(synapse),
                Some(SplicedToken {
                    synapse: synapse.to_owned(),
                    presence: None
                })
            );
        }
        assert_eq!(SplicedToken::parse("s1_2-pnot-a-position"), None);
    }
}
