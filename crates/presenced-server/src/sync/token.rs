//! The `/sync` token, `s{events}_{presence}`: the event stream position
//! (rooms) and the presence part ([`PresenceToken`]: a single node's
//! position or a cluster's vector).
//!
//! The two halves move independently, so one token carries both and each
//! half is read by the side that owns it. A `since` token read here may
//! have no presence part we can use (a vector of another generation); the
//! `next_batch` we hand out always has one.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::presence::token::PresenceToken;

/// A `since` token that is not of our shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a sync token")]
pub struct BadSyncToken;

/// Where a client's `since` token says it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinceToken {
    /// The event stream position the rooms section continues from.
    pub events: i64,
    /// The presence part; `None`: a vector of another generation, which
    /// the client gets a presence snapshot for (not an error).
    pub presence: Option<PresenceToken>,
}

impl SinceToken {
    /// Reads a `since` token.
    pub fn parse(token: &str) -> Result<Self, BadSyncToken> {
        let rest = token.strip_prefix('s').ok_or(BadSyncToken)?;
        let (events, presence) = rest.split_once('_').ok_or(BadSyncToken)?;
        Ok(Self {
            events: events.parse().map_err(|_| BadSyncToken)?,
            presence: PresenceToken::parse(presence).map_err(|_| BadSyncToken)?,
        })
    }
}

/// The `next_batch` of an answer: where the client stands after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextBatch {
    /// The event stream position the rooms section was read up to.
    pub events: i64,
    /// The presence part the presence section was read up to.
    pub presence: PresenceToken,
}

impl fmt::Display for NextBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}_{}", self.events, self.presence)
    }
}

/// Written as a JSON string straight into the answer, so a sync does not
/// build the token as a `String` first.
impl Serialize for NextBatch {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn since(events: i64, presence: Option<PresenceToken>) -> SinceToken {
        SinceToken { events, presence }
    }

    #[test]
    fn tokens_round_trip_and_bad_ones_are_refused() {
        assert_eq!(
            SinceToken::parse("s12_34").unwrap(),
            since(12, Some(PresenceToken::Local(34)))
        );
        let next = NextBatch {
            events: 12,
            presence: PresenceToken::Local(34),
        };
        assert_eq!(next.to_string(), "s12_34");
        assert_eq!(serde_json::to_string(&next).unwrap(), "\"s12_34\"");
        let vector = "g1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.z";
        let read = SinceToken::parse(&format!("s7_{vector}")).unwrap();
        assert_eq!(
            (read.events, read.presence.unwrap().to_string()),
            (7, vector.to_owned())
        );
        // A vector of another generation: a snapshot, not an error.
        assert_eq!(SinceToken::parse("s7_g9.1.2").unwrap(), since(7, None));
        for bad in ["", "12_34", "s12", "sx_1", "s1_y", "s1_g1.1"] {
            assert_eq!(SinceToken::parse(bad), Err(BadSyncToken), "{bad}");
        }
    }
}
