//! U+0000 in client text: refused at the edge.
//!
//! PostgreSQL cannot store U+0000 in `TEXT`, SQLite can; a NUL that got in
//! answered 500 on one backend, failed the grouped presence commit of
//! everyone sharing it, and made `port-db` fail later. No Matrix client
//! needs the character, so a body, path or query carrying one is refused
//! with 400 before anything is stored: the same answer on both backends.
//!
//! A raw 0x00 byte is not valid JSON (serde_json refuses control
//! characters in strings), so in a body only the escape `\u0000` can make
//! one. Bodies without the six bytes `\u0000` (nearly all) pay for one
//! byte search; the others are parsed into a tree and every key and string
//! is checked, which is exact: `"\\u0000"` (an escaped backslash, then the
//! text `u0000`) finds no NUL there and passes.

use serde_json::Value;

/// Whether `bytes` may hold the JSON escape `\u0000`: true for every body
/// that does (and for a few that merely contain the text after an escaped
/// backslash; [`value_has_nul`] tells those apart).
pub(crate) fn may_hold_nul_escape(bytes: &[u8]) -> bool {
    const ESCAPE: &[u8] = b"\\u0000";
    let mut rest = bytes;
    // Jump from backslash to backslash: the scan is the cost every body pays.
    while let Some(at) = rest.iter().position(|&b| b == b'\\') {
        if rest[at..].starts_with(ESCAPE) {
            return true;
        }
        rest = &rest[at + 1..];
    }
    false
}

/// Whether any key or string in `value` contains U+0000. Iterative, so a
/// tree as deep as serde_json allows cannot overflow the stack here.
pub(crate) fn value_has_nul(value: &Value) -> bool {
    let mut pending = vec![value];
    while let Some(v) = pending.pop() {
        match v {
            Value::String(s) if s.contains('\0') => return true,
            Value::Array(items) => pending.extend(items),
            Value::Object(map) => {
                for (key, item) in map {
                    if key.contains('\0') {
                        return true;
                    }
                    pending.push(item);
                }
            }
            _ => {}
        }
    }
    false
}

/// Whether a raw (still percent-encoded) path or query decodes to text
/// with U+0000 in it. `%00` is the only way: a URI cannot carry the raw
/// byte, and every `%` starts an escape, so the text `%00` is exactly a
/// NUL once decoded (`%2500` is `%`, `2`, `5`... and decodes to `%00`).
pub(crate) fn uri_part_has_nul(raw: &str) -> bool {
    raw.contains("%00")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_has_nul(json: &str) -> bool {
        may_hold_nul_escape(json.as_bytes())
            && value_has_nul(&serde_json::from_str(json).expect("test JSON"))
    }

    #[test]
    fn a_nul_escape_in_a_string_or_key_is_found() {
        assert!(body_has_nul(r#"{"status_msg": "a\u0000b"}"#));
        assert!(body_has_nul(r#"{"a\u0000": 1}"#));
        assert!(body_has_nul(r#"{"a": [{"b": ["x", "\u0000"]}]}"#));
        // An escaped backslash, then a real escape.
        assert!(body_has_nul(r#"{"a": "\\\u0000"}"#));
    }

    #[test]
    fn an_escaped_backslash_before_u0000_is_text_not_a_nul() {
        let json = r#"{"a": "C:\\u0000"}"#;
        // The cheap scan cannot tell; the tree can.
        assert!(may_hold_nul_escape(json.as_bytes()));
        assert!(!body_has_nul(json));
        assert!(!body_has_nul(r#"{"a": "\\\\u0000", "b": "\u0001"}"#));
    }

    #[test]
    fn ordinary_bodies_pay_only_the_scan() {
        for json in [
            r#"{"presence": "online", "status_msg": "hi \"there\" \\ \n"}"#,
            r#"{"a": "\u00e9\u0010"}"#,
            "{}",
            r"\",
        ] {
            assert!(!may_hold_nul_escape(json.as_bytes()), "{json}");
        }
    }

    #[test]
    fn percent_00_is_a_nul_and_percent_2500_is_not() {
        assert!(uri_part_has_nul("/send/m.room.message/txn%00x"));
        assert!(uri_part_has_nul("filter=%00"));
        assert!(!uri_part_has_nul("/send/m.room.message/txn%2500"));
        assert!(!uri_part_has_nul("since=s100_200"));
    }
}
