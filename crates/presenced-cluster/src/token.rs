//! The presence part of a cluster sync token: a vector of 16 sequences.
//!
//! Component `p` means "seen partition `p` up to this sequence". Each
//! partition has one writer and the log assigns sequences at commit, so a
//! node can serve any token: it sends what it has past each component and
//! answers with the component-wise maximum, which never goes backwards even
//! when the client moves to a node that is behind.

use crate::bus::Seq;
use crate::partition::PARTITIONS;

/// Log generation: bumps when the partition count changes; tokens of
/// another generation get a snapshot.
pub const GENERATION: u32 = 1;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VectorToken(pub [Seq; PARTITIONS as usize]);

impl VectorToken {
    /// `g1.<seq_0>.<seq_1>…<seq_15>`, sequences in base 36.
    pub fn encode(&self) -> String {
        let mut out = format!("g{GENERATION}");
        for seq in self.0 {
            out.push('.');
            out.push_str(&base36(seq));
        }
        out
    }

    /// `None` for anything else, including another generation (the caller
    /// then serves a snapshot).
    pub fn decode(text: &str) -> Option<Self> {
        let mut parts = text.split('.');
        if parts.next()? != format!("g{GENERATION}") {
            return None;
        }
        let mut token = Self::default();
        for slot in &mut token.0 {
            *slot = u64::from_str_radix(parts.next()?, 36).ok()?;
        }
        parts.next().is_none().then_some(token)
    }

    /// Component-wise maximum.
    pub fn max(&self, other: &Self) -> Self {
        let mut out = *self;
        for (mine, theirs) in out.0.iter_mut().zip(other.0) {
            *mine = (*mine).max(theirs);
        }
        out
    }

    /// True when no component of `self` is behind `other`.
    pub fn covers(&self, other: &Self) -> bool {
        self.0
            .iter()
            .zip(other.0)
            .all(|(mine, theirs)| *mine >= theirs)
    }
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    if n == 0 {
        return "0".to_owned();
    }
    let mut out = Vec::new();
    while n > 0 {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut token = VectorToken::default();
        token.0[0] = 1;
        token.0[7] = 36;
        token.0[15] = u64::MAX;
        let text = token.encode();
        assert!(text.starts_with("g1.1.0.0"), "{text}");
        assert_eq!(VectorToken::decode(&text), Some(token));
    }

    #[test]
    fn other_generations_and_junk_are_refused() {
        let text = VectorToken::default().encode();
        assert_eq!(VectorToken::decode(&text.replacen("g1", "g2", 1)), None);
        assert_eq!(VectorToken::decode(&format!("{text}.0")), None);
        assert_eq!(VectorToken::decode("g1.0"), None);
        assert_eq!(VectorToken::decode("s72_5"), None);
    }

    #[test]
    fn max_never_goes_backwards() {
        let mut a = VectorToken::default();
        let mut b = VectorToken::default();
        a.0[1] = 5;
        b.0[1] = 3;
        b.0[2] = 9;
        let m = a.max(&b);
        assert!(m.covers(&a) && m.covers(&b));
        assert_eq!((m.0[1], m.0[2]), (5, 9));
    }
}
