//! A deterministic simulator: one or more homeservers, simulated time and
//! in-memory `m.presence` exchange. Tests drive it the way quinn-proto's
//! test `Pair` drives two endpoints.

use std::time::Duration;

use ruma_common::{OwnedServerName, OwnedUserId};

use crate::stream::StreamPos;
use crate::{
    Engine, EngineConfig, Output, PresenceState, RemotePresence, Timestamp, UsersForStates,
};

/// A synchronous stand-in for the router's `get_users_for_states`.
pub type SimRouter = Box<dyn FnMut(&[PresenceState]) -> UsersForStates>;

/// One simulated homeserver and everything its engine asked for.
pub struct SimServer {
    /// The engine under test.
    pub engine: Engine,
    /// Answers `Output::Route`; `None` answers with no extra users.
    pub router: Option<SimRouter>,
    /// Every `Output::Persist` entry, in order.
    pub persisted: Vec<(StreamPos, PresenceState)>,
    /// Every user woken, in order.
    pub woken: Vec<OwnedUserId>,
    /// Every `Output::Send`, in order.
    pub sent: Vec<(OwnedServerName, Vec<PresenceState>)>,
    /// Every `Output::PersistFullPresence` mark, in order.
    pub marks: Vec<(OwnedUserId, StreamPos)>,
    /// Every `Output::Forget` entry, in order.
    pub forgotten: Vec<(OwnedUserId, StreamPos)>,
}

/// Several homeservers sharing one simulated clock.
pub struct Sim {
    /// The simulated time.
    pub now: Timestamp,
    /// The servers, addressed by index.
    pub servers: Vec<SimServer>,
}

impl Sim {
    /// A simulation starting at `now` with one server per name.
    pub fn new(now: Timestamp, servers: &[(&str, EngineConfig)]) -> Self {
        let servers = servers
            .iter()
            .map(|(name, config)| SimServer {
                engine: Engine::new(config.clone(), name.parse().expect("valid server name"), 0),
                router: None,
                persisted: Vec::new(),
                woken: Vec::new(),
                sent: Vec::new(),
                marks: Vec::new(),
                forgotten: Vec::new(),
            })
            .collect();
        Self { now, servers }
    }

    /// One server with the given configuration, named `test`.
    pub fn single(config: EngineConfig) -> Self {
        Self::new(Timestamp(1_000_000), &[("test", config)])
    }

    /// The engine of server `i`.
    pub fn engine(&mut self, i: usize) -> &mut Engine {
        &mut self.servers[i].engine
    }

    /// Drains every server's outputs until all are idle, delivering sends
    /// between simulated servers.
    pub fn step(&mut self) {
        loop {
            let mut idle = true;
            for i in 0..self.servers.len() {
                while let Some(output) = self.servers[i].engine.poll_output() {
                    idle = false;
                    self.act(i, output);
                }
            }
            if idle {
                return;
            }
        }
    }

    fn act(&mut self, i: usize, output: Output) {
        let now = self.now;
        let server = &mut self.servers[i];
        match output {
            Output::Persist(states) => server.persisted.extend(states),
            Output::Wake(users) => server.woken.extend(users),
            Output::PersistFullPresence { users, at } => {
                server.marks.extend(users.into_iter().map(|u| (u, at)));
            }
            Output::Forget(users) => server.forgotten.extend(users),
            Output::Route { batch, states } => {
                let answer = server
                    .router
                    .as_mut()
                    .map(|r| r(&states))
                    .unwrap_or_default();
                server.engine.handle_route_answer(now, batch, answer);
            }
            Output::Send {
                destination,
                states,
            } => {
                let origin = server.engine.server_name().to_owned();
                server.sent.push((destination.clone(), states.clone()));
                let entries: Vec<RemotePresence> = states
                    .iter()
                    .map(|s| RemotePresence {
                        user_id: s.user_id.clone(),
                        presence: s.presence,
                        last_active_ago: s.last_active_ago(now),
                        currently_active: s.shown_currently_active(),
                        status_msg: s.status_msg.as_deref().map(ToOwned::to_owned),
                    })
                    .collect();
                if let Some(peer) = self
                    .servers
                    .iter_mut()
                    .find(|p| p.engine.server_name() == destination)
                {
                    peer.engine.handle_remote_presence(now, &origin, entries);
                }
            }
        }
    }

    /// Moves time forward by `by`, firing every timer at its exact deadline.
    pub fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        self.step();
        loop {
            let next = self
                .servers
                .iter()
                .filter_map(|s| s.engine.poll_timeout())
                .min();
            match next {
                Some(at) if at <= until => {
                    self.now = self.now.max(at);
                    let now = self.now;
                    for server in &mut self.servers {
                        server.engine.handle_timeout(now);
                    }
                    self.step();
                }
                _ => break,
            }
        }
        self.now = until;
    }

    /// Forgets recorded outputs (persisted, woken, sent) on every server.
    pub fn clear_records(&mut self) {
        for server in &mut self.servers {
            server.persisted.clear();
            server.woken.clear();
            server.sent.clear();
            server.marks.clear();
            server.forgotten.clear();
        }
    }
}
