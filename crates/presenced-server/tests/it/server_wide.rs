//! `presenced.routers.ServerWide` over HTTP: the server's local user
//! directory lets every local user see every other, no shared room needed.

use presenced_server::config::presence::ModuleConfig;
use presenced_server::config::Config;
use serde_json::json;

use crate::helpers::{assert_error, spawn_app_with};
use crate::ops::{eventually, generous, get_presence, presence_of, put_presence, sync};

fn server_wide(config: &mut Config) {
    generous(config);
    config
        .modules
        .push(ModuleConfig::new("presenced.routers.ServerWide"));
}

#[tokio::test]
async fn local_users_see_each_other_without_a_shared_room() {
    let app = spawn_app_with(server_wide).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    put_presence(
        &app,
        &alice,
        json!({"presence": "online", "status_msg": "everywhere"}),
    )
    .await;

    // GET: routing counts for visibility.
    let (status, body) = get_presence(&app, &bob, &alice.user_id).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["presence"], "online");
    assert_eq!(body["status_msg"], "everywhere");

    // /sync: alice's state reaches bob through the router.
    eventually(|| async {
        presence_of(
            &sync(&app, &bob, "set_presence=offline").await,
            &alice.user_id,
        )
        .is_some_and(|c| c["status_msg"] == "everywhere")
    })
    .await;

    // A user registered after start-up is in the directory at once.
    let carol = app.register("carol").await;
    put_presence(&app, &carol, json!({"presence": "online"})).await;
    assert_eq!(get_presence(&app, &alice, &carol.user_id).await.0, 200);
    eventually(|| async {
        presence_of(
            &sync(&app, &bob, "set_presence=offline").await,
            &carol.user_id,
        )
        .is_some()
    })
    .await;
}

#[tokio::test]
async fn without_a_router_no_shared_room_means_no_presence() {
    let app = spawn_app_with(generous).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    put_presence(&app, &alice, json!({"presence": "online"})).await;
    assert_error(
        &get_presence(&app, &bob, &alice.user_id).await,
        403,
        "M_FORBIDDEN",
    );
}

#[tokio::test]
async fn deadline_ms_is_accepted_in_module_entries() {
    let config = Config::from_yaml(
        "modules:\n  - module: presenced.routers.ServerWide\n    deadline_ms: 250\n",
        "test",
        [],
    )
    .unwrap();
    assert_eq!(config.modules[0].deadline_ms, Some(250));
    let err = Config::from_yaml(
        "modules:\n  - module: presenced.routers.ServerWide\n    deadline_ms: 0\n",
        "test",
        [],
    )
    .unwrap_err();
    assert!(err.to_string().contains("modules[0].deadline_ms"), "{err}");
}
