//! A real presence engine behind the `PresenceDriver` seam, as the server
//! will carry it: the owner applies `PUT`-like commands and its timers
//! through the engine and writes the resulting states; every other node
//! applies them as replicated states; takeovers re-arm timers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

// The shipped payload codec, the one the server uses.
use presenced_cluster::record::{decode_state, encode_state, Command, StateRecord};
use presenced_cluster::{partition_of, MemBus, NodeHandle, PresenceDriver, PARTITIONS};
use presenced_engine::{Engine, EngineConfig, Output, Presence, PresenceState, Timestamp};
use ruma_common::{OwnedUserId, ServerName};

pub(crate) struct EngineDriver {
    engine: Mutex<Engine>,
    owned: Mutex<[bool; PARTITIONS as usize]>,
    /// Users the engine has computed states for, per partition, so giving
    /// a partition up reaches all of them (also those whose write failed).
    seen: Mutex<BTreeMap<u16, BTreeSet<String>>>,
    handle: Mutex<Option<NodeHandle<MemBus>>>,
    start: tokio::time::Instant,
    /// States this engine wrote that the codec reads back as another state.
    misread: Mutex<Vec<String>>,
}

/// A fixed epoch so timestamps do not depend on the real clock.
const BASE_MS: u64 = 1_700_000_000_000;

impl EngineDriver {
    pub(crate) fn new() -> Arc<Self> {
        let server = ServerName::parse("example.org").expect("server name");
        Arc::new(Self {
            engine: Mutex::new(Engine::new(EngineConfig::default(), server, 0)),
            owned: Mutex::new([false; PARTITIONS as usize]),
            seen: Mutex::default(),
            handle: Mutex::new(None),
            start: tokio::time::Instant::now(),
            misread: Mutex::default(),
        })
    }

    pub(crate) fn attach(&self, handle: NodeHandle<MemBus>) {
        *self.handle.lock().unwrap() = Some(handle);
    }

    fn now(&self) -> Timestamp {
        Timestamp(BASE_MS + self.start.elapsed().as_millis() as u64)
    }

    /// Takes the engine's persisted states; the owner writes them.
    fn drain(engine: &mut Engine) -> Vec<PresenceState> {
        let mut states = Vec::new();
        while let Some(output) = engine.poll_output() {
            if let Output::Persist(persisted) = output {
                states.extend(persisted.into_iter().map(|(_, s)| s));
            }
        }
        states
    }

    /// The record payload of a state this engine computed, read back with
    /// the shipped decoder as every replica will read it. A mismatch is
    /// kept for the checker: the end-state check compares only what
    /// notifies, so a codec that mixed up timestamps would pass it.
    fn payload(&self, state: &PresenceState) -> serde_json::Value {
        let payload = encode_state(state);
        let read = decode_state(state.user_id.as_str(), &payload);
        if read.as_ref() != Some(state) {
            self.misread
                .lock()
                .unwrap()
                .push(format!("wrote {state:?}, read back {read:?}"));
        }
        payload
    }

    /// What [`Self::payload`] found read back wrong.
    pub(crate) fn misread(&self) -> Vec<String> {
        self.misread.lock().unwrap().clone()
    }

    fn note(&self, user: &str) {
        self.seen
            .lock()
            .unwrap()
            .entry(partition_of(user))
            .or_default()
            .insert(user.to_owned());
    }

    fn publish(&self, states: Vec<PresenceState>) {
        let Some(handle) = self.handle.lock().unwrap().clone() else {
            return;
        };
        for state in states {
            self.note(state.user_id.as_str());
            let payload = self.payload(&state);
            handle.publish_owned(state.user_id.as_str(), payload);
        }
    }

    /// The clock input: timeouts of owned users become writes.
    pub(crate) fn tick(&self) {
        let now = self.now();
        let states = {
            let mut engine = self.engine.lock().unwrap();
            engine.handle_timeout(now);
            Self::drain(&mut engine)
        };
        self.publish(states);
    }

    pub(crate) fn presence_of(&self, user: &str) -> Option<PresenceState> {
        let user_id: OwnedUserId = user.try_into().ok()?;
        Some(self.engine.lock().unwrap().presence(&user_id))
    }
}

impl PresenceDriver for EngineDriver {
    fn apply(&self, _partition: u16, command: &Command) -> Option<serde_json::Value> {
        let user_id: OwnedUserId = command.user.as_str().try_into().ok()?;
        let presence = Presence::parse(command.state["presence"].as_str()?)?;
        let now = self.now();
        let states = {
            let mut engine = self.engine.lock().unwrap();
            engine.handle_set_presence(now, &user_id, None, presence, None);
            Self::drain(&mut engine)
        };
        self.note(&command.user);
        let (mine, others): (Vec<_>, Vec<_>) =
            states.into_iter().partition(|s| s.user_id == user_id);
        self.publish(others);
        mine.last().map(|state| self.payload(state))
    }

    fn replicated(&self, partition: u16, record: &StateRecord) {
        if self.owned.lock().unwrap()[usize::from(partition)] {
            return;
        }
        let Some(state) = decode_state(&record.user, &record.state) else {
            return;
        };
        let mut engine = self.engine.lock().unwrap();
        engine.handle_replicated_state(state);
        Self::drain(&mut engine);
    }

    fn owned(&self, partition: u16, users: Vec<StateRecord>) {
        self.owned.lock().unwrap()[usize::from(partition)] = true;
        let mut engine = self.engine.lock().unwrap();
        let ids: Vec<OwnedUserId> = users
            .iter()
            .filter_map(|r| r.user.as_str().try_into().ok())
            .collect();
        engine.handle_own(ids);
        Self::drain(&mut engine);
    }

    fn disowned(&self, partition: u16, users: Vec<StateRecord>) {
        self.owned.lock().unwrap()[usize::from(partition)] = false;
        let seen = self
            .seen
            .lock()
            .unwrap()
            .get(&partition)
            .cloned()
            .unwrap_or_default();
        let mut engine = self.engine.lock().unwrap();
        let ids: Vec<OwnedUserId> = seen
            .iter()
            .chain(users.iter().map(|r| &r.user))
            .filter_map(|u| u.as_str().try_into().ok())
            .collect();
        engine.handle_disown(ids);
        // What this node computed but could not write is replaced by the log.
        for record in &users {
            if let Some(state) = decode_state(&record.user, &record.state) {
                engine.handle_replicated_state(state);
            }
        }
        Self::drain(&mut engine);
    }
}
