//! The `server_name` a database was made for, and the one rule both
//! backends apply when they open it.
//!
//! Every user ID, room ID and access token in a database carries its
//! server's name, so a database opened under another name would keep old
//! tokens working as the old users and let `register-user` add users of
//! the new name beside them. So a database remembers its name (the
//! one-row `presenced_server_name` table, filled at the first open) and
//! each open compares it with the configured one
//! (`sqlite/server_name.rs`, `postgres/server_name.rs`).
//!
//! A database made before the name was recorded is judged by its users,
//! as Synapse judges its own at start-up: a user whose server part is not
//! the configured name refuses the open; otherwise (no users, or all of
//! this name) the configured name is recorded.

use ruma_common::ServerName;

use crate::{StoreError, StoreResult};

/// What a database says about the server it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Evidence {
    /// The name recorded at its first open.
    Recorded(String),
    /// Nothing recorded, and a stored user of another server: its ID.
    ForeignUser(String),
    /// Nothing recorded, and no user of another server.
    Nothing,
}

/// Whether the configured name must be recorded now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Recorded already, and the same.
    Matches,
    /// Nothing recorded and nothing against it.
    Record,
}

impl Evidence {
    /// The rule: a recorded name must equal the configured one, and
    /// without one, no stored user may belong to another server.
    pub(crate) fn judge(self, configured: &ServerName) -> StoreResult<Verdict> {
        let mismatch = |found: &str, evidence: String| StoreError::ServerNameMismatch {
            found: found.to_owned(),
            configured: configured.to_string(),
            evidence,
        };
        match self {
            Self::Recorded(found) if found == configured.as_str() => Ok(Verdict::Matches),
            Self::Recorded(found) => Err(mismatch(
                &found,
                "recorded when presenced first opened it".to_owned(),
            )),
            Self::ForeignUser(user_id) => Err(mismatch(
                server_part(&user_id),
                format!("it holds the user {user_id}"),
            )),
            Self::Nothing => Ok(Verdict::Record),
        }
    }
}

/// `@local:server` → `server` (a localpart has no `:`; a server name
/// may, before its port).
pub(crate) fn server_part(user_id: &str) -> &str {
    user_id
        .split_once(':')
        .map_or(user_id, |(_, server)| server)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> &ServerName {
        s.try_into().unwrap()
    }

    #[test]
    fn a_recorded_name_must_be_the_configured_one() {
        let same = Evidence::Recorded("a.test".to_owned()).judge(name("a.test"));
        assert_eq!(same.unwrap(), Verdict::Matches);
        let err = Evidence::Recorded("a.test".to_owned())
            .judge(name("b.test"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("belongs to server_name a.test"), "{err}");
        assert!(err.contains("the config says server_name: b.test"), "{err}");
    }

    #[test]
    fn without_a_record_a_foreign_user_decides() {
        let err = Evidence::ForeignUser("@alice:localhost:8448".to_owned())
            .judge(name("b.test"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("server_name localhost:8448"), "{err}");
        assert!(err.contains("@alice:localhost:8448"), "{err}");
        let empty = Evidence::Nothing.judge(name("b.test"));
        assert_eq!(empty.unwrap(), Verdict::Record);
    }
}
