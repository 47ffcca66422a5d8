//! The admin API: the full engine state of a user and the visibility
//! explanation, for admins and the shared secret only.

use presenced_server::config::presence::ModuleConfig;
use presenced_server::config::Config;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_error, enc, spawn_app_with, SECRET};
use crate::ops::{generous, put_presence, register_admin, shared_room, sync};

fn state_path(user: &str) -> String {
    format!("/_presenced/admin/v1/presence/{}", enc(user))
}

fn visibility_path(observer: &str, target: &str) -> String {
    format!(
        "/_presenced/admin/v1/visibility?observer={}&target={}",
        enc(observer),
        enc(target)
    )
}

#[tokio::test]
async fn admins_and_the_secret_get_the_engine_state_others_do_not() {
    let app = spawn_app_with(generous).await;
    let admin = register_admin(&app, "root").await;
    let alice = app.register("alice").await;
    put_presence(
        &app,
        &alice,
        json!({"presence": "online", "status_msg": "at work"}),
    )
    .await;
    sync(&app, &alice, "timeout=0").await;

    for token in [admin.token.as_str(), SECRET] {
        let (status, body) = app.get(&state_path(&alice.user_id), Some(token)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["user_id"], alice.user_id.as_str());
        assert_eq!(body["presence"], "online");
        assert_eq!(body["status_msg"], "at work");
        assert_eq!(body["currently_active"], true);
        assert_eq!(body["local"], true);
        assert!(body["last_active_ts"].as_u64().unwrap() > 0, "{body}");
        assert!(body["last_user_sync_ts"].as_u64().unwrap() > 0, "{body}");
        assert!(body["last_federation_update_ts"].is_u64(), "{body}");
        let devices = body["devices"].as_array().unwrap();
        let device = devices
            .iter()
            .find(|d| d["device_id"] == alice.device_id.as_str())
            .unwrap_or_else(|| panic!("alice's device in {body}"));
        assert_eq!(device["presence"], "online");
        assert!(device["last_active_ts"].as_u64().unwrap() > 0);
        assert!(device["last_sync_ts"].is_u64());
        assert_eq!(device["syncing"], 0);
    }

    // A non-admin: 403; no token: 401; a bad user ID: 400; unknown: 404.
    assert_error(
        &app.get(&state_path(&alice.user_id), Some(&alice.token))
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &app.get(&state_path(&alice.user_id), Some("not-the-secret"))
            .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    assert_error(
        &app.get(&state_path(&alice.user_id), None).await,
        401,
        "M_MISSING_TOKEN",
    );
    assert_error(
        &app.get(&state_path("not-a-user"), Some(&admin.token)).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &app.get(&state_path("@nobody:test.local"), Some(&admin.token))
            .await,
        404,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn visibility_names_rooms_and_modules() {
    let app = spawn_app_with(|c: &mut Config| {
        generous(c);
        c.modules.push(ModuleConfig {
            module: "presenced.routers.StaticRoutes".to_owned(),
            config: json!({"routes": [{"receiver": "@carol:test.local", "senders": ["@alice:test.local"]}]}),
            deadline_ms: Some(500),
        });
    })
    .await;
    let admin = register_admin(&app, "root").await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let room = shared_room(&app, &alice, &bob).await;

    // Membership reaches the engine through a channel: wait for it.
    let mut body = json!(null);
    for _ in 0..250 {
        let (status, b) = app
            .get(&visibility_path(&bob.user_id, &alice.user_id), Some(SECRET))
            .await;
        assert_eq!(status, StatusCode::OK, "{b}");
        body = b;
        if body["visible"] == true {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(body["visible"], true, "{body}");
    assert_eq!(body["same_user"], false);
    assert_eq!(body["shared_rooms"], json!([room]));
    assert_eq!(body["ineligible_shared_rooms"], json!([]));
    assert_eq!(body["modules"], json!([]));

    let (_, body) = app
        .get(
            &visibility_path(&carol.user_id, &alice.user_id),
            Some(&admin.token),
        )
        .await;
    assert_eq!(body["visible"], true, "{body}");
    assert_eq!(body["shared_rooms"], json!([]));
    assert_eq!(
        body["modules"],
        json!([{"module": "presenced.routers.StaticRoutes", "reason": "listed"}])
    );

    let (_, body) = app
        .get(
            &visibility_path(&carol.user_id, &bob.user_id),
            Some(&admin.token),
        )
        .await;
    assert_eq!(body["visible"], false, "{body}");

    let (_, body) = app
        .get(
            &visibility_path(&bob.user_id, &bob.user_id),
            Some(&admin.token),
        )
        .await;
    assert_eq!(
        (&body["visible"], &body["same_user"]),
        (&json!(true), &json!(true))
    );

    // Bad and missing parameters; non-admins.
    for query in [
        "observer=%40bob%3Atest.local".to_owned(),
        "target=%40bob%3Atest.local".to_owned(),
        "observer=bob&target=%40bob%3Atest.local".to_owned(),
    ] {
        assert_error(
            &app.get(
                &format!("/_presenced/admin/v1/visibility?{query}"),
                Some(&admin.token),
            )
            .await,
            400,
            "M_INVALID_PARAM",
        );
    }
    assert_error(
        &app.get(
            &visibility_path(&bob.user_id, &alice.user_id),
            Some(&bob.token),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
}
