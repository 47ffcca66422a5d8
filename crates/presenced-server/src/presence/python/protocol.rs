//! The frames presenced and the Python host exchange (the whole protocol
//! is written up in `python/PROTOCOL.md` at the crate root).
//!
//! A frame is a 4-byte big-endian length and that many bytes of JSON.
//! JSON rather than MessagePack because the host must run on the
//! operator's interpreter with nothing installed (`json` is in the
//! standard library, C-accelerated); a 100-state batch is about 15 KB.

use std::io::{self, Read};
use std::sync::Arc;

use presenced_engine::{Presence, PresenceState, Timestamp};
use serde::{Deserialize, Serialize};

/// Started as `python -c BOOT HOST_SOURCE HOST_PARTS...`: checks the version in syntax
/// every Python parses (so an old interpreter gets a message, not a
/// `SyntaxError`), then runs the host.
pub const BOOT: &str = "import sys\nif sys.version_info < (3, 10):\n    sys.stderr.write(\"presenced: Python 3.10 or newer is needed; %s is %s\\n\" % (sys.executable, sys.version.split()[0]))\n    sys.exit(3)\nexec(compile(sys.argv[1], \"<presenced-host>\", \"exec\"))\n";

/// The exit status of [`BOOT`] on a too old interpreter.
pub const EXIT_TOO_OLD: i32 = 3;

/// The host program, shipped inside the binary.
pub const HOST_SOURCE: &str = include_str!("../../../python/presenced_host.py");

/// The host's other files, passed after [`HOST_SOURCE`] in the order of the
/// host's `PARTS`: the ModuleApi presenced answers, the stand-in `synapse`
/// package, and the adapter to the interpreter's own Synapse.
pub const HOST_PARTS: [&str; 3] = [
    include_str!("../../../python/presenced_module_api.py"),
    include_str!("../../../python/presenced_standin.py"),
    include_str!("../../../python/presenced_real_synapse.py"),
];

/// Frames larger than this are a broken host, not an answer.
const MAX_FRAME: usize = 256 << 20;

/// Encodes one message as a frame.
pub fn frame(message: &impl Serialize) -> Vec<u8> {
    let mut out = vec![0; 4];
    serde_json::to_writer(&mut out, message).expect("protocol messages serialize");
    let len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    out
}

/// Reads one frame; `None` at a clean end of stream.
pub fn read_frame(reader: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes"),
        ));
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    Ok(Some(body))
}

/// One module as the host loads it.
#[derive(Clone, Debug, Serialize)]
pub struct InitModule {
    /// Position in the host's list (calls name modules by it).
    pub index: usize,
    /// `package.module.Class`.
    pub module: String,
    /// The entry's `config:`.
    pub config: serde_json::Value,
    /// Loaded the legacy way (`presence.presence_router`).
    pub legacy: bool,
}

/// presenced → host.
#[derive(Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ToHost<'a> {
    /// The first frame.
    Init {
        server_name: &'a str,
        path: Vec<String>,
        modules: &'a [InitModule],
    },
    /// A `get_users_for_states` call.
    #[serde(rename = "call")]
    UsersForStates {
        id: u64,
        module: usize,
        slot: usize,
        callback: &'static str,
        states: Vec<WireState<'a>>,
    },
    /// A `get_interested_users` call.
    #[serde(rename = "call")]
    InterestedUsers {
        id: u64,
        module: usize,
        slot: usize,
        callback: &'static str,
        user_id: &'a str,
    },
    /// Give up on a call (its deadline passed).
    Cancel { id: u64 },
    /// Liveness: answered by the host's event loop itself.
    Ping { id: u64 },
    /// A module API call succeeded.
    ApiResult { id: u64, value: Option<()> },
    /// A module API call was refused.
    ApiError { id: u64, message: String },
}

/// host → presenced.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum FromHost {
    /// Every module loaded.
    Ready {
        python: String,
        executable: String,
        /// The `synapse` the modules import: the interpreter's own (its
        /// version and folder) or presenced's stand-in.
        synapse: String,
        modules: Vec<ReadyModule>,
    },
    /// A module could not be loaded; the host exits.
    InitError {
        module: Option<String>,
        kind: String,
        message: String,
    },
    /// A call's answer.
    Result { id: u64, value: serde_json::Value },
    /// A call failed (`kind`: `exception` or `wrong_type`).
    Error {
        id: u64,
        kind: String,
        message: String,
    },
    /// Answer to a ping.
    Pong { id: u64 },
    /// A logging record of a module.
    Log {
        logger: String,
        level: String,
        message: String,
        module: Option<String>,
    },
    /// A module API call (`send_local_online_presence_to`,
    /// `set_presence_for_users`).
    Api {
        id: u64,
        method: String,
        args: serde_json::Value,
    },
}

/// How many callback pairs a module registered.
#[derive(Debug, Deserialize)]
pub struct ReadyModule {
    pub index: usize,
    pub pairs: usize,
}

/// A presence state as `UserPresenceState`'s seven fields, in order, as a
/// JSON array: `[user_id, state, last_active_ts, last_federation_update_ts,
/// last_user_sync_ts, status_msg, currently_active]`. An array, not an
/// object, because Python decodes it three times faster and turns it into
/// a `UserPresenceState` (a tuple underneath) without a copy.
#[derive(Serialize)]
pub struct WireState<'a>(&'a str, &'static str, u64, u64, u64, Option<&'a str>, bool);

impl<'a> From<&'a PresenceState> for WireState<'a> {
    fn from(s: &'a PresenceState) -> Self {
        Self(
            s.user_id.as_str(),
            s.presence.as_str(),
            s.last_active_ts.as_millis(),
            s.last_federation_update_ts.as_millis(),
            s.last_user_sync_ts.as_millis(),
            s.status_msg.as_deref(),
            s.currently_active,
        )
    }
}

/// A state in a module's answer (a module may build its own with
/// `copy_and_replace`, so every field is checked again here).
#[derive(Deserialize)]
pub struct OwnedWireState(String, String, u64, u64, u64, Option<String>, bool);

impl OwnedWireState {
    /// The engine's form, or why the module's value is not a state.
    pub fn into_state(self) -> Result<PresenceState, String> {
        let Self(user_id, state, last_active, last_federation, last_sync, status_msg, active) =
            self;
        let user_id = user_id
            .as_str()
            .try_into()
            .map_err(|e| format!("user_id {user_id:?}: {e}"))?;
        let presence = Presence::parse(&state)
            .ok_or_else(|| format!("state {state:?} is not a presence value"))?;
        Ok(PresenceState {
            user_id,
            presence,
            last_active_ts: Timestamp(last_active),
            last_federation_update_ts: Timestamp(last_federation),
            last_user_sync_ts: Timestamp(last_sync),
            status_msg: status_msg.filter(|m| !m.is_empty()).map(Arc::<str>::from),
            currently_active: active,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_a_short_stream_is_the_end() {
        let bytes = frame(&ToHost::Ping { id: 7 });
        assert_eq!(&bytes[..4], &((bytes.len() - 4) as u32).to_be_bytes());
        let mut reader = &bytes[..];
        let body = read_frame(&mut reader).unwrap().unwrap();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value, serde_json::json!({"op": "ping", "id": 7}));
        assert!(read_frame(&mut reader).unwrap().is_none());
    }

    #[test]
    fn a_state_from_a_module_is_checked() {
        let state: OwnedWireState = serde_json::from_value(serde_json::json!([
            "@bob:example.com",
            "away",
            1,
            0,
            0,
            null,
            false
        ]))
        .unwrap();
        assert!(state.into_state().unwrap_err().contains("\"away\""));
    }
}
