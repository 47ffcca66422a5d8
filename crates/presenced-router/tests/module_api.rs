//! The module API calls reach the driver as commands; registration of
//! nothing loads a module that routes nothing.

mod common;

use std::collections::HashMap;

use common::uid;
use presenced_router::{
    command_channel, ConstructError, ModuleApi, ModuleCommand, ModuleEntry, ModuleRegistry,
    Presence,
};

#[test]
fn typed_set_presence_for_users_reaches_the_driver() {
    let (tx, mut rx) = command_channel();
    let api = ModuleApi::new("test".try_into().unwrap(), tx);
    api.set_presence_for_users(HashMap::from([(
        uid("@a:test"),
        (Presence::Unavailable, None),
    )]));
    api.send_local_online_presence_to(vec![uid("@b:test"), uid("@c:remote")]);
    assert_eq!(
        rx.try_recv().unwrap(),
        ModuleCommand::SetPresenceForUsers(vec![(uid("@a:test"), Presence::Unavailable, None)])
    );
    assert_eq!(
        rx.try_recv().unwrap(),
        ModuleCommand::SendLocalOnlinePresenceTo(vec![uid("@b:test"), uid("@c:remote")])
    );
}

#[test]
fn a_kept_handle_works_after_construction_and_survives_a_stopped_driver() {
    let (tx, mut rx) = command_channel();
    let handle = ModuleApi::new("test".try_into().unwrap(), tx).handle();
    assert_eq!(handle.server_name().as_str(), "test");
    handle.send_local_online_presence_to(vec![uid("@a:test")]);
    assert!(rx.try_recv().is_ok());
    drop(rx);
    // The driver is gone: the call is dropped with a warning, not a panic.
    handle.send_local_online_presence_to(vec![uid("@a:test")]);
}

#[test]
fn raw_presence_strings_are_validated() {
    let (tx, mut rx) = command_channel();
    let api = ModuleApi::new("test".try_into().unwrap(), tx);
    let err = api
        .set_presence_for_users_raw(HashMap::from([(uid("@a:test"), ("away".to_owned(), None))]))
        .unwrap_err();
    assert!(err.to_string().contains("away"), "{err}");
    assert!(rx.try_recv().is_err(), "a rejected call sends nothing");
    api.set_presence_for_users_raw(HashMap::from([(uid("@a:test"), ("busy".to_owned(), None))]))
        .unwrap();
    assert_eq!(
        rx.try_recv().unwrap(),
        ModuleCommand::SetPresenceForUsers(vec![(uid("@a:test"), Presence::Busy, None)])
    );
}

#[test]
fn a_module_registering_nothing_routes_nothing() {
    fn silent(_: serde_json::Value, api: &mut ModuleApi) -> Result<(), ConstructError> {
        Ok(api.register_presence_router_callbacks(None, None)?)
    }
    let mut registry = ModuleRegistry::default();
    registry.register("silent", silent);
    let (tx, _rx) = command_channel();
    let router = registry
        .load(
            &[ModuleEntry::new("silent", serde_json::Value::Null)],
            "test".try_into().unwrap(),
            tx,
            None,
        )
        .unwrap();
    assert!(router.is_empty());
    assert!(!router.has_modules());
    assert_eq!(router.module_names().collect::<Vec<_>>(), ["silent"]);
}
