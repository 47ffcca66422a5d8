//! Durations in Synapse's config syntax.
//!
//! Synapse accepts a bare integer (milliseconds) or a string made of an
//! integer and a unit suffix: `s`, `m`, `h`, `d`, `w`, `y` (a year is 365
//! days). presenced also accepts `ms` and a suffix-less numeric string
//! (milliseconds), which Synapse reads the same way.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Serializer;

/// Parses `"30s"`, `"5m"`, `"1500"` or `"250ms"` into a [`Duration`].
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected an integer and an optional unit (ms, s, m, h, d, w, y)"))?;
    let unit_ms: u64 = match unit {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        "y" => 365 * 86_400_000,
        other => {
            return Err(format!(
                "invalid duration {text:?}: unknown unit {other:?} (use ms, s, m, h, d, w or y)"
            ))
        }
    };
    number
        .checked_mul(unit_ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration {text:?} is too large"))
}

/// Formats a duration in the largest unit that divides it exactly.
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms != 0 && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// `#[serde(with = "duration")]` support.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    deserializer.deserialize_any(DurationVisitor)
}

/// Writes the duration back in the string form, so a dumped config reads
/// like a hand-written one.
pub fn serialize<S: Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(*d))
}

/// `#[serde(with = "duration::optional")]`: a duration or `~` (none).
pub mod optional {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Reads `~` as `None`, anything else as [`super::deserialize`] does.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "super")] Duration);
        Ok(Option::<Wrapped>::deserialize(d)?.map(|Wrapped(v)| v))
    }

    /// Writes `None` as `~`, a duration as [`super::serialize`] does.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::serialize(d, s),
            None => s.serialize_none(),
        }
    }
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "a duration: milliseconds as an integer, or a string such as \"30s\", \"5m\", \"1h\"",
        )
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Ok(Duration::from_millis(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        u64::try_from(v)
            .map(Duration::from_millis)
            .map_err(|_| E::custom(format!("invalid duration {v}: must not be negative")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse(v).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synapse_units() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("2d"), Ok(Duration::from_secs(2 * 86400)));
        assert_eq!(parse("1w"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse("1y"), Ok(Duration::from_secs(365 * 86400)));
        assert_eq!(parse("1500"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse("5 minutes").is_err());
        assert!(parse("1.5s").is_err());
        assert!(parse("s").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn optional_durations() {
        #[derive(serde::Deserialize)]
        struct Doc {
            #[serde(with = "optional", default)]
            cap: Option<Duration>,
        }
        let read = |text: &str| serde_yaml::from_str::<Doc>(text).map(|d| d.cap);
        assert_eq!(read("cap: ~").unwrap(), None);
        assert_eq!(read("{}").unwrap(), None);
        assert_eq!(read("cap: 2m").unwrap(), Some(Duration::from_secs(120)));
        assert_eq!(
            read("cap: 1500").unwrap(),
            Some(Duration::from_millis(1500))
        );
        assert!(read("cap: soon").is_err());
    }

    #[test]
    fn formats_round_trip() {
        for text in ["30s", "5m", "1h", "2d", "1w", "250ms"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
    }
}
