//! Keys no presenced field takes: Synapse's (ignored, listed once at start)
//! or nobody's (an error naming the key, its line and the nearest known key).
//!
//! Synapse's option names live in `synapse_options.txt`, extracted from the
//! manual of the Synapse version named in its header. A name is a dotted
//! path without list indices (`listeners.resources.compress`).

use std::collections::HashSet;
use std::fmt;
use std::sync::OnceLock;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The data file, embedded.
pub const SYNAPSE_OPTIONS: &str = include_str!("synapse_options.txt");

/// One step of a key path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// A mapping key.
    Key(String),
    /// A list index.
    Index(usize),
}

/// Where a key sits in the document.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<Segment>);

impl KeyPath {
    /// Converts serde_ignored's path (which also has wrapper steps for
    /// `Option` and newtypes, not visible in YAML).
    pub fn from_ignored(path: &serde_ignored::Path<'_>) -> Self {
        let mut out = Vec::new();
        push_ignored(path, &mut out);
        Self(out)
    }

    /// The path as Synapse's option list spells it: keys joined with dots,
    /// list indices dropped (`listeners.resources.compress`).
    pub fn dotted(&self) -> String {
        let keys: Vec<&str> = (self.0.iter())
            .filter_map(|s| match s {
                Segment::Key(k) => Some(k.as_str()),
                Segment::Index(_) => None,
            })
            .collect();
        keys.join(".")
    }
}

fn push_ignored(path: &serde_ignored::Path<'_>, out: &mut Vec<Segment>) {
    use serde_ignored::Path;
    match path {
        Path::Root => {}
        Path::Seq { parent, index } => {
            push_ignored(parent, out);
            out.push(Segment::Index(*index));
        }
        Path::Map { parent, key } => {
            push_ignored(parent, out);
            out.push(Segment::Key(key.clone()));
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => {
            push_ignored(parent, out);
        }
    }
}

/// `listeners[0].resources[1].compress`: how errors show a path.
impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            match s {
                Segment::Key(k) if i == 0 => f.write_str(k)?,
                Segment::Key(k) => write!(f, ".{k}")?,
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// The parsed data file.
struct SynapseOptions {
    version: String,
    names: HashSet<&'static str>,
}

fn options() -> &'static SynapseOptions {
    static OPTIONS: OnceLock<SynapseOptions> = OnceLock::new();
    OPTIONS.get_or_init(|| {
        let mut version = String::new();
        let mut names = HashSet::new();
        for line in SYNAPSE_OPTIONS.lines().map(str::trim) {
            if let Some(comment) = line.strip_prefix('#') {
                // The first comment line names the version: "# Synapse 1.163.2 ...".
                if version.is_empty() {
                    if let Some(v) = comment.trim().strip_prefix("Synapse ") {
                        version = v.split_whitespace().next().unwrap_or_default().to_owned();
                    }
                }
            } else if !line.is_empty() {
                names.insert(line);
            }
        }
        SynapseOptions { version, names }
    })
}

/// The Synapse version the option list was taken from.
pub fn synapse_version() -> &'static str {
    &options().version
}

/// Whether Synapse has the option at `dotted` (a [`KeyPath::dotted`]).
pub fn is_synapse_option(dotted: &str) -> bool {
    options().names.contains(dotted)
}

/// The known key nearest to `unknown` among its siblings (same parent) in
/// `presenced_keys` and Synapse's options, if one is close enough to be a
/// plausible typo.
pub fn nearest<'a>(
    unknown: &KeyPath,
    presenced_keys: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let dotted = unknown.dotted();
    let (parent, leaf) = match dotted.rsplit_once('.') {
        Some((p, l)) => (Some(p), l),
        None => (None, dotted.as_str()),
    };
    let sibling_leaf = |candidate: &'a str| -> Option<&'a str> {
        match (parent, candidate.rsplit_once('.')) {
            (None, None) => Some(candidate),
            (Some(p), Some((cp, leaf))) if cp == p => Some(leaf),
            _ => None,
        }
    };
    let options = options().names.iter().copied();
    let best = (presenced_keys.into_iter().chain(options))
        .filter_map(sibling_leaf)
        .map(|leaf_candidate| (strsim::osa_distance(leaf, leaf_candidate), leaf_candidate))
        .min()?;
    // Edits with swapped neighbours counting as one (`tsl` is one from
    // `tls`, two from `tag`); a third of the name (at least 2 edits)
    // separates a typo from a different word.
    let limit = (leaf.chars().count() / 3).max(2);
    // Shown with the indices of the user's path: listeners[0].tls.
    let shown = unknown.to_string();
    (best.0 <= limit).then(|| match shown.strip_suffix(leaf) {
        Some(head) => format!("{head}{}", best.1),
        None => best.1.to_owned(),
    })
}

/// The 1-based line of the key at `path` in the YAML `text`, if it is there.
pub fn line_of(text: &str, path: &KeyPath) -> Option<usize> {
    if path.0.is_empty() {
        return None;
    }
    let deserializer = serde_yaml::Deserializer::from_str(text);
    let err = Locate(&path.0).deserialize(deserializer).err()?;
    // Only the error Locate raises at the key carries its place (serde_yaml
    // may prefix it with the path).
    if err.to_string().contains(FOUND) {
        err.location().map(|l| l.line())
    } else {
        None
    }
}

/// Fails on whatever value it is given, with [`FOUND`].
struct FailHere;

impl<'de> DeserializeSeed<'de> for FailHere {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FailHere {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(FOUND)
    }
}

const FOUND: &str = "presenced: the key sought is here";

/// Walks the document down `path`, failing on purpose at its last key so
/// that serde_yaml reports where that is.
struct Locate<'p>(&'p [Segment]);

impl<'de> DeserializeSeed<'de> for Locate<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Locate<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML document")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Segment::Key(wanted), rest)) = self.0.split_first() else {
            return Ok(());
        };
        while let Some(key) = map.next_key::<serde_yaml::Value>()? {
            if key.as_str() == Some(wanted.as_str()) {
                if rest.is_empty() {
                    // Fail while reading the value: serde_yaml marks an
                    // error with the event being read, and the value starts
                    // on the key's line (a nested block: the next line).
                    return map.next_value_seed(FailHere);
                }
                return map.next_value_seed(Locate(rest));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Segment::Index(wanted), rest)) = self.0.split_first() else {
            return Ok(());
        };
        for _ in 0..*wanted {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        seq.next_element_seed(Locate(rest)).map(|_| ())
    }

    // Scalars on the way: the path is not there.
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(keys: &[&str]) -> KeyPath {
        KeyPath(
            keys.iter()
                .map(|k| match k.parse() {
                    Ok(n) => Segment::Index(n),
                    Err(_) => Segment::Key((*k).to_owned()),
                })
                .collect(),
        )
    }

    #[test]
    fn the_list_names_its_version_and_the_usual_keys() {
        assert!(
            synapse_version().starts_with("1.163"),
            "{}",
            synapse_version()
        );
        for key in [
            "pid_file",
            "report_stats",
            "media_store_path",
            "trusted_key_servers",
            "listeners.x_forwarded",
            "listeners.resources.compress",
            "database.txn_limit",
            "database.allow_unsafe_locale",
            "database.args.cp_min",
            "rc_login.address.per_second",
        ] {
            assert!(is_synapse_option(key), "{key}");
        }
        assert!(!is_synapse_option("database.args.databse"));
        assert!(!is_synapse_option("presence.idle_timout"));
    }

    #[test]
    fn paths_show_indices_and_drop_them_for_lookups() {
        let p = path(&["listeners", "0", "resources", "1", "compres"]);
        assert_eq!(p.to_string(), "listeners[0].resources[1].compres");
        assert_eq!(p.dotted(), "listeners.resources.compres");
        assert_eq!(
            nearest(&p, []).as_deref(),
            Some("listeners[0].resources[1].compress")
        );
    }

    #[test]
    fn nearest_looks_among_siblings_only() {
        assert_eq!(
            nearest(
                &path(&["presence", "idle_timout"]),
                ["presence.idle_timeout"]
            )
            .as_deref(),
            Some("presence.idle_timeout")
        );
        assert_eq!(
            nearest(&path(&["pid_fil"]), []).as_deref(),
            Some("pid_file")
        );
        assert_eq!(nearest(&path(&["zzzzzzzzzzzz"]), []), None);
    }

    #[test]
    fn line_of_finds_nested_and_listed_keys() {
        let text = "a: 1\nlisteners:\n  - port: 1\n  - port: 2\n    tsl: true\nb:\n  c: 3\n";
        assert_eq!(line_of(text, &path(&["listeners", "1", "tsl"])), Some(5));
        assert_eq!(line_of(text, &path(&["b", "c"])), Some(7));
        assert_eq!(line_of(text, &path(&["a"])), Some(1));
        assert_eq!(line_of(text, &path(&["nope"])), None);
        // A key whose value is a block: the line where the block starts.
        assert_eq!(line_of(text, &path(&["b"])), Some(7));
    }
}
