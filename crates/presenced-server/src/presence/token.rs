//! The presence part of a sync token.
//!
//! A single node hands out its stream position (digits). A cluster node
//! hands out a vector of the 16 partition logs' sequences (`g1.…`, the
//! cluster crate's [`VectorToken`]), which any node can serve. Each kind
//! of node reads the other kind as "no position": the client gets a
//! snapshot once and carries the node's own kind from then on.

use std::fmt;

use presenced_cluster::token::GENERATION;
use presenced_cluster::VectorToken;
use presenced_engine::StreamPos;

/// A presence part that is neither kind of token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a presence stream token")]
pub struct BadToken;

/// Where a client's presence stream stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PresenceToken {
    /// A single node's stream position.
    Local(StreamPos),
    /// A cluster's per-partition sequences.
    Vector(VectorToken),
}

impl PresenceToken {
    /// Reads a token's presence part: `Ok(None)` for a vector of another
    /// generation (the client gets a snapshot), `Err` for anything else.
    pub fn parse(text: &str) -> Result<Option<Self>, BadToken> {
        if let Ok(position) = text.parse() {
            return Ok(Some(Self::Local(position)));
        }
        match VectorToken::decode(text) {
            Some(vector) => Ok(Some(Self::Vector(vector))),
            // Another generation's vector; this one's, malformed, is an error.
            None if is_vector_of_any_generation(text)
                && !text.starts_with(&format!("g{GENERATION}.")) =>
            {
                Ok(None)
            }
            None => Err(BadToken),
        }
    }

    /// The single node's position, if this is one.
    pub fn local(&self) -> Option<StreamPos> {
        match self {
            Self::Local(position) => Some(*position),
            Self::Vector(_) => None,
        }
    }

    /// The cluster's vector, if this is one.
    pub fn vector(&self) -> Option<&VectorToken> {
        match self {
            Self::Vector(vector) => Some(vector),
            Self::Local(_) => None,
        }
    }
}

/// `g<digits>.` followed by dot-separated base-36 numbers.
fn is_vector_of_any_generation(text: &str) -> bool {
    let mut parts = text.split('.');
    let generation_ok = parts.next().is_some_and(|g| {
        g.strip_prefix('g')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    });
    let mut any = false;
    generation_ok
        && parts.all(|p| {
            any = true;
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric())
        })
        && any
}

impl fmt::Display for PresenceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local(position) => write!(f, "{position}"),
            Self::Vector(vector) => f.write_str(&vector.encode()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_kinds_read_back_and_nothing_else_reads() {
        let local = PresenceToken::Local(1_234_567);
        assert_eq!(PresenceToken::parse(&local.to_string()), Ok(Some(local)));
        let mut seqs = [0; 16];
        seqs[3] = 77;
        seqs[15] = 123_456;
        let vector = PresenceToken::Vector(VectorToken(seqs));
        let text = vector.to_string();
        assert!(text.starts_with("g1."), "{text}");
        assert!(!text.contains('_'), "the sync token's separator: {text}");
        assert_eq!(PresenceToken::parse(&text), Ok(Some(vector)));
        // Another generation: a snapshot, not an error.
        assert_eq!(PresenceToken::parse("g2.zz.0"), Ok(None));
        assert_eq!(PresenceToken::parse("-1"), Err(BadToken));
        assert_eq!(PresenceToken::parse("g1"), Err(BadToken));
        assert_eq!(
            PresenceToken::parse("g1.1"),
            Err(BadToken),
            "this generation, too short"
        );
        assert_eq!(PresenceToken::parse("gx.1"), Err(BadToken));
        assert_eq!(PresenceToken::parse(""), Err(BadToken));
    }
}
