//! The object a module receives at construction: registration of callbacks
//! and the module API calls that act on presence.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use presenced_engine::Presence;
use ruma_common::{OwnedServerName, OwnedUserId};
use tokio::sync::mpsc;

use crate::callbacks::{Callbacks, GetInterestedUsers, GetUsersForStates};

/// Registering only one of the two callbacks; presenced refuses to start.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "presence router callbacks `get_users_for_states` and `get_interested_users` \
     must be registered together (got only `{registered}`)"
)]
pub struct RegistrationError {
    /// The callback that was registered alone.
    pub registered: &'static str,
}

/// A module API call that changes presence, for the driver to apply to the
/// engine (modules never touch the engine themselves).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModuleCommand {
    /// `send_local_online_presence_to(users)`.
    SendLocalOnlinePresenceTo(Vec<OwnedUserId>),
    /// `set_presence_for_users({user: (state, status_msg)})`.
    SetPresenceForUsers(Vec<(OwnedUserId, Presence, Option<String>)>),
}

/// An unknown presence value given to `set_presence_for_users_raw`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid presence state `{value}` for {user}")]
pub struct InvalidPresence {
    /// The user it was given for.
    pub user: OwnedUserId,
    /// The rejected value.
    pub value: String,
}

/// Lists local users, for routers such as `ServerWide` that must enumerate
/// them (the module API has no user directory otherwise). Provided by the
/// server; optional, and a module needing it refuses to load without it.
pub trait LocalUsers: Send + Sync {
    /// Every local user (called on the routing path: keep it a cheap
    /// snapshot, not a database query).
    fn local_users(&self) -> Vec<OwnedUserId>;
}

/// What a module is given when it is constructed.
pub struct ModuleApi {
    handle: ModuleHandle,
    pub(crate) registered: Vec<Callbacks>,
    /// The deadline the module asked for, if any (the operator's
    /// `deadline_ms` in the config entry overrides it).
    pub(crate) deadline: Option<Duration>,
}

/// The module API calls a module may keep and use after construction
/// (cheap to clone).
#[derive(Clone)]
pub struct ModuleHandle {
    server_name: OwnedServerName,
    commands: mpsc::UnboundedSender<ModuleCommand>,
    local_users: Option<Arc<dyn LocalUsers>>,
}

/// The default deadline of every callback call.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(1);

impl ModuleApi {
    /// A module API for `server_name`; module commands go to `commands`.
    pub fn new(
        server_name: OwnedServerName,
        commands: mpsc::UnboundedSender<ModuleCommand>,
    ) -> Self {
        Self {
            handle: ModuleHandle {
                server_name,
                commands,
                local_users: None,
            },
            registered: Vec::new(),
            deadline: None,
        }
    }

    /// Gives modules a directory of local users.
    pub fn with_local_users(mut self, directory: Arc<dyn LocalUsers>) -> Self {
        self.handle.local_users = Some(directory);
        self
    }

    /// The module API calls, to keep for later use.
    pub fn handle(&self) -> ModuleHandle {
        self.handle.clone()
    }

    /// This server's name.
    pub fn server_name(&self) -> &OwnedServerName {
        &self.handle.server_name
    }

    /// The local user directory, if the server provided one.
    pub fn local_users(&self) -> Option<Arc<dyn LocalUsers>> {
        self.handle.local_users.clone()
    }

    /// Sets the deadline of each of this module's callback calls (default
    /// [`DEFAULT_DEADLINE`]), e.g. for a module that queries a slow
    /// directory. An operator's `deadline_ms` in the module's config entry
    /// takes precedence.
    pub fn set_deadline(&mut self, deadline: Duration) {
        self.deadline = Some(deadline);
    }

    /// Module API `send_local_online_presence_to` (see
    /// [`ModuleHandle::send_local_online_presence_to`]).
    pub fn send_local_online_presence_to(&self, users: Vec<OwnedUserId>) {
        self.handle.send_local_online_presence_to(users);
    }

    /// Module API `set_presence_for_users` (see
    /// [`ModuleHandle::set_presence_for_users`]).
    pub fn set_presence_for_users(&self, users: HashMap<OwnedUserId, (Presence, Option<String>)>) {
        self.handle.set_presence_for_users(users);
    }

    /// `set_presence_for_users` with wire strings (see
    /// [`ModuleHandle::set_presence_for_users_raw`]).
    pub fn set_presence_for_users_raw(
        &self,
        users: HashMap<OwnedUserId, (String, Option<String>)>,
    ) -> Result<(), InvalidPresence> {
        self.handle.set_presence_for_users_raw(users)
    }

    /// Registers the two presence router callbacks. Exactly one of them is
    /// an error; neither registers nothing.
    pub fn register_presence_router_callbacks(
        &mut self,
        get_users_for_states: Option<GetUsersForStates>,
        get_interested_users: Option<GetInterestedUsers>,
    ) -> Result<(), RegistrationError> {
        match (get_users_for_states, get_interested_users) {
            (Some(get_users_for_states), Some(get_interested_users)) => {
                self.registered.push(Callbacks {
                    get_users_for_states,
                    get_interested_users,
                });
                Ok(())
            }
            (None, None) => Ok(()),
            (Some(_), None) => Err(RegistrationError {
                registered: "get_users_for_states",
            }),
            (None, Some(_)) => Err(RegistrationError {
                registered: "get_interested_users",
            }),
        }
    }
}

impl ModuleHandle {
    /// This server's name.
    pub fn server_name(&self) -> &OwnedServerName {
        &self.server_name
    }

    /// Module API `send_local_online_presence_to`: local users get a full
    /// presence snapshot at their next sync; remote users' servers get the
    /// presence of the online local users those users may see.
    pub fn send_local_online_presence_to(&self, users: Vec<OwnedUserId>) {
        self.send(ModuleCommand::SendLocalOnlinePresenceTo(users));
    }

    /// Module API `set_presence_for_users` with typed presence values.
    pub fn set_presence_for_users(&self, users: HashMap<OwnedUserId, (Presence, Option<String>)>) {
        let users = users.into_iter().map(|(u, (p, m))| (u, p, m)).collect();
        self.send(ModuleCommand::SetPresenceForUsers(users));
    }

    /// `set_presence_for_users` with wire strings: an unknown presence value
    /// rejects the whole call (W8) and changes nothing.
    pub fn set_presence_for_users_raw(
        &self,
        users: HashMap<OwnedUserId, (String, Option<String>)>,
    ) -> Result<(), InvalidPresence> {
        let mut typed = Vec::with_capacity(users.len());
        for (user, (value, msg)) in users {
            let Some(presence) = Presence::parse(&value) else {
                return Err(InvalidPresence { user, value });
            };
            typed.push((user, presence, msg));
        }
        self.send(ModuleCommand::SetPresenceForUsers(typed));
        Ok(())
    }

    fn send(&self, command: ModuleCommand) {
        if self.commands.send(command).is_err() {
            tracing::warn!("module API call after the presence driver stopped; ignored");
        }
    }
}

/// A channel for module commands: the sender goes into every `ModuleApi`,
/// the receiver to the driver.
pub fn command_channel() -> (
    mpsc::UnboundedSender<ModuleCommand>,
    mpsc::UnboundedReceiver<ModuleCommand>,
) {
    mpsc::unbounded_channel()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::FutureExt;
    use presenced_engine::{Interest, UsersForStates};

    use super::{command_channel, ModuleApi};

    #[test]
    fn pairs_are_appended_in_registration_order_and_one_alone_adds_nothing() {
        let (tx, _rx) = command_channel();
        let mut api = ModuleApi::new("test".try_into().unwrap(), tx);
        for _ in 0..2 {
            api.register_presence_router_callbacks(
                Some(Arc::new(|_| {
                    futures::future::ready(Ok(UsersForStates::new())).boxed()
                })),
                Some(Arc::new(|_| {
                    futures::future::ready(Ok(Interest::All)).boxed()
                })),
            )
            .unwrap();
        }
        let alone = api.register_presence_router_callbacks(
            None,
            Some(Arc::new(|_| {
                futures::future::ready(Ok(Interest::None)).boxed()
            })),
        );
        assert_eq!(alone.unwrap_err().registered, "get_interested_users");
        assert_eq!(api.registered.len(), 2);
        assert_eq!(api.deadline, None, "the default applies unless set");
    }
}
