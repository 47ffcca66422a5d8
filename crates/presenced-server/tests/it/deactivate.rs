//! `POST /account/deactivate`: user-interactive auth with the password,
//! then the tokens die and the user goes offline without a status (W23).

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_error, spawn_app_with};
use crate::ops::{generous, get_presence, put_presence, shared_room};

const V3: &str = "/_matrix/client/v3/account/deactivate";

fn password_auth(user: &str, password: &str, session: &str) -> serde_json::Value {
    json!({"auth": {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password,
        "session": session,
    }})
}

#[tokio::test]
async fn deactivation_asks_for_the_password_then_ends_presence_and_tokens() {
    let app = spawn_app_with(generous).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    shared_room(&app, &alice, &bob).await;
    put_presence(
        &app,
        &alice,
        json!({"presence": "online", "status_msg": "last words"}),
    )
    .await;
    let (_, seen) = get_presence(&app, &bob, &alice.user_id).await;
    assert_eq!(seen["status_msg"], "last words", "{seen}");

    // First call: 401 with the flows and a session, no errcode.
    let (status, uia) = app.post(V3, Some(&alice.token), json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{uia}");
    assert_eq!(uia["flows"], json!([{"stages": ["m.login.password"]}]));
    assert!(uia.get("errcode").is_none(), "{uia}");
    let session = uia["session"].as_str().unwrap().to_owned();

    // A wrong password: 401 again, same session, M_FORBIDDEN; nothing changed.
    let (status, again) = app
        .post(
            V3,
            Some(&alice.token),
            password_auth(&alice.user_id, "wrong", &session),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{again}");
    assert_eq!(again["errcode"], "M_FORBIDDEN");
    assert_eq!(again["session"], session.as_str());
    let (status, _) = app
        .get("/_matrix/client/v3/account/whoami", Some(&alice.token))
        .await;
    assert_eq!(status, StatusCode::OK);

    // Another user's name in auth is refused.
    assert_error(
        &app.post(
            V3,
            Some(&alice.token),
            password_auth(&bob.user_id, "password", &session),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );

    // The right password (localpart form, as clients often send it).
    let (status, body) = app
        .post(
            V3,
            Some(&alice.token),
            password_auth("alice", "password", &session),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id_server_unbind_result"], "no-support");

    // Tokens are dead and the account cannot log in again.
    assert_error(
        &app.get("/_matrix/client/v3/account/whoami", Some(&alice.token))
            .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    assert_error(
        &app.post(
            "/_matrix/client/v3/login",
            None,
            json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "password"}),
        )
        .await,
        403,
        "M_USER_DEACTIVATED",
    );

    // Bob, still sharing the room, sees alice offline without a message.
    let (status, seen) = get_presence(&app, &bob, &alice.user_id).await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    assert_eq!(seen["presence"], "offline", "{seen}");
    assert!(seen.get("status_msg").is_none_or(|m| m.is_null()), "{seen}");
}

#[tokio::test]
async fn sessions_are_checked_and_r0_works() {
    let app = spawn_app_with(generous).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    // An unknown session is a 400.
    assert_error(
        &app.post(
            V3,
            Some(&alice.token),
            password_auth(&alice.user_id, "password", "nonsense"),
        )
        .await,
        400,
        "M_UNKNOWN",
    );
    // Bob's session is not alice's.
    let (_, uia) = app.post(V3, Some(&bob.token), json!({})).await;
    let bobs = uia["session"].as_str().unwrap();
    assert_error(
        &app.post(
            V3,
            Some(&alice.token),
            password_auth(&alice.user_id, "password", bobs),
        )
        .await,
        400,
        "M_UNKNOWN",
    );
    // No token at all.
    assert_error(&app.post(V3, None, json!({})).await, 401, "M_MISSING_TOKEN");
    // The r0 alias, with auth in one go (no session yet).
    let (status, body) = app
        .post(
            "/_matrix/client/r0/account/deactivate",
            Some(&alice.token),
            json!({"auth": {"type": "m.login.password", "user": "alice", "password": "password"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_error(
        &app.get("/_matrix/client/v3/account/whoami", Some(&alice.token))
            .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
}
