//! Loading modules from configuration: entry shape, load order (legacy
//! router last), and start-up errors that name what is wrong.

mod common;

use std::sync::Mutex;

use common::{online, uid};
use futures::FutureExt;
use presenced_router::{
    command_channel, ConstructError, Interest, LoadError, ModuleApi, ModuleEntry, ModuleRegistry,
    PresenceRouter, UsersForStates,
};
use serde_json::json;

fn load(registry: &ModuleRegistry, entries: &[ModuleEntry]) -> Result<PresenceRouter, LoadError> {
    let (tx, _rx) = command_channel();
    registry.load(entries, "example.com".try_into().unwrap(), tx, None)
}

fn entries(value: serde_json::Value) -> Vec<ModuleEntry> {
    serde_json::from_value(value).unwrap()
}

#[test]
fn entries_take_synapse_shape_plus_deadline_ms() {
    let parsed = entries(json!([
        {"module": "a.B", "config": {"x": 1}},
        {"module": "a.C"},
        {"module": "a.D", "config": null, "deadline_ms": 250},
    ]));
    assert_eq!(parsed[0].config, json!({"x": 1}));
    assert_eq!(parsed[0].deadline, None);
    assert!(
        parsed[1].config.is_null(),
        "a missing config is null, read as {{}}"
    );
    assert_eq!(
        parsed[2].deadline,
        Some(std::time::Duration::from_millis(250))
    );

    let unknown = serde_json::from_value::<ModuleEntry>(json!({"module": "a.B", "deadline": 3}));
    assert!(unknown.unwrap_err().to_string().contains("deadline"));
    let zero = serde_json::from_value::<ModuleEntry>(json!({"module": "a.B", "deadline_ms": 0}));
    assert!(zero.unwrap_err().to_string().contains("deadline_ms"));
}

static LOG: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());

/// A module that logs its construction and its calls under `name`.
fn logged(name: &'static str, api: &mut ModuleApi) -> Result<(), ConstructError> {
    LOG.lock().unwrap().push(name);
    Ok(api.register_presence_router_callbacks(
        Some(std::sync::Arc::new(|_| {
            futures::future::ready(Ok(UsersForStates::new())).boxed()
        })),
        Some(std::sync::Arc::new(move |_| {
            LOG.lock().unwrap().push(name);
            futures::future::ready(Ok(Interest::None)).boxed()
        })),
    )?)
}

#[tokio::test]
async fn legacy_presence_router_is_loaded_and_called_after_modules() {
    let mut registry = ModuleRegistry::default();
    registry.register("legacy.Router", |_, api| logged("legacy", api));
    registry.register("new.First", |_, api| logged("first", api));
    registry.register("new.Second", |_, api| logged("second", api));
    let modules = entries(json!([{"module": "new.First"}, {"module": "new.Second"}]));
    let legacy: ModuleEntry =
        serde_json::from_value(json!({"module": "legacy.Router", "config": null})).unwrap();

    let router = load(&registry, &ModuleEntry::load_order(modules, Some(legacy))).unwrap();
    assert_eq!(
        router.module_names().collect::<Vec<_>>(),
        ["new.First", "new.Second", "legacy.Router"]
    );
    router.get_interested_users(&uid("@a:example.com")).await;
    assert_eq!(
        *LOG.lock().unwrap(),
        ["first", "second", "legacy", "first", "second", "legacy"],
        "constructed, then called, in that order"
    );
}

#[test]
fn unknown_module_lists_known_names() {
    let err = load(
        &ModuleRegistry::default(),
        &[ModuleEntry::new("synapse.Nope", json!({}))],
    )
    .err()
    .unwrap();
    assert!(matches!(err, LoadError::UnknownModule { .. }));
    let message = err.to_string();
    assert!(message.contains("synapse.Nope"), "{message}");
    for known in [
        "presenced.routers.Groups",
        "presenced.routers.Observers",
        "presenced.routers.ServerWide",
        "presenced.routers.StaticRoutes",
    ] {
        assert!(message.contains(known), "{message}");
    }
}

fn config_error(module: &str, config: serde_json::Value) -> String {
    let err = load(
        &ModuleRegistry::default(),
        &[ModuleEntry::new(module, config)],
    )
    .err()
    .unwrap();
    assert!(matches!(err, LoadError::BadConfig { .. }), "{err}");
    err.to_string()
}

#[test]
fn a_misspelt_field_names_the_module_and_the_field() {
    let message = config_error(
        "presenced.routers.Observers",
        json!({"observer": ["@a:example.com"]}),
    );
    assert!(message.contains("presenced.routers.Observers"), "{message}");
    assert!(message.contains("`observer`"), "{message}");
}

#[test]
fn a_missing_field_names_the_module_and_the_field() {
    let message = config_error("presenced.routers.Groups", serde_json::Value::Null);
    assert!(message.contains("presenced.routers.Groups"), "{message}");
    assert!(message.contains("`groups`"), "{message}");
}

#[test]
fn an_invalid_user_id_names_the_module_and_the_value() {
    for (module, config) in [
        (
            "presenced.routers.Observers",
            json!({"observers": ["@ok:example.com", "not-a-user"]}),
        ),
        (
            "presenced.routers.StaticRoutes",
            json!({"routes": [{"receiver": "not-a-user", "senders": []}]}),
        ),
        (
            "presenced.routers.Groups",
            json!({"groups": {"g": ["not-a-user"]}}),
        ),
    ] {
        let message = config_error(module, config);
        assert!(message.contains(module), "{message}");
        assert!(message.contains("`not-a-user`"), "{message}");
    }
}

#[test]
fn server_wide_without_a_directory_refuses_start() {
    let message = config_error("presenced.routers.ServerWide", json!({}));
    assert!(
        message.contains("presenced.routers.ServerWide"),
        "{message}"
    );
    assert!(message.contains("directory"), "{message}");
}

#[tokio::test]
async fn a_null_config_is_an_empty_config() {
    // ServerWide takes no options: `config: null` and `{}` both load.
    struct Nobody;
    impl presenced_router::LocalUsers for Nobody {
        fn local_users(&self) -> Vec<ruma_common::OwnedUserId> {
            Vec::new()
        }
    }
    let (tx, _rx) = command_channel();
    let router = ModuleRegistry::default()
        .load(
            &[ModuleEntry::new(
                "presenced.routers.ServerWide",
                serde_json::Value::Null,
            )],
            "example.com".try_into().unwrap(),
            tx,
            Some(std::sync::Arc::new(Nobody)),
        )
        .unwrap();
    assert!(router
        .get_users_for_states(&[online("@a:example.com")])
        .await
        .is_empty());
}
