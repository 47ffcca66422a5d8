//! Registration, login, whoami, logout.

use presenced_server::api::synapse_admin::registration_mac;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_error, spawn_app, spawn_app_with, SECRET};

#[test]
fn mac_matches_synapse_register_new_matrix_user() {
    // Vectors computed with Python's hmac/hashlib the way Synapse's tool
    // does: nonce NUL user NUL password NUL admin|notadmin.
    assert_eq!(
        registration_mac("s3cret", "abc", "alice", "pw", false, None),
        "d7cd8fe38bb2b37bacf757920ef46050075d427d"
    );
    assert_eq!(
        registration_mac("s3cret", "abc", "bob", "pw2", true, None),
        "c451da4fa0dc46f07b8aa0a2323ccede7f0af9db"
    );
}

#[tokio::test]
async fn shared_secret_registration() {
    if crate::cluster_backend::single_node_only(
        "registration nonces are signed and reusable for a minute on a cluster",
    ) {
        return;
    }
    let app = spawn_app().await;
    let (status, nonce) = app.get("/_synapse/admin/v1/register", None).await;
    assert_eq!(status, StatusCode::OK);
    let nonce = nonce["nonce"].as_str().unwrap().to_owned();

    // A wrong MAC is refused (and burns the nonce).
    let bad = json!({ "nonce": nonce, "username": "alice", "password": "pw", "admin": true,
                      "mac": registration_mac("wrong", &nonce, "alice", "pw", true, None) });
    assert_error(
        &app.post("/_synapse/admin/v1/register", None, bad).await,
        403,
        "M_FORBIDDEN",
    );

    let (_, nonce) = app.get("/_synapse/admin/v1/register", None).await;
    let nonce = nonce["nonce"].as_str().unwrap().to_owned();
    let good = json!({ "nonce": nonce, "username": "alice", "password": "pw", "admin": true,
                       "mac": registration_mac(SECRET, &nonce, "alice", "pw", true, None) });
    let (status, body) = app
        .post("/_synapse/admin/v1/register", None, good.clone())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], "@alice:test.local");
    let token = body["access_token"].as_str().unwrap();

    let (status, who) = app
        .get("/_matrix/client/v3/account/whoami", Some(token))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(who["user_id"], "@alice:test.local");
    assert_eq!(who["device_id"], body["device_id"]);

    // Nonces are single-use.
    assert_error(
        &app.post("/_synapse/admin/v1/register", None, good).await,
        400,
        "M_UNKNOWN",
    );

    // A taken name.
    let (_, nonce) = app.get("/_synapse/admin/v1/register", None).await;
    let nonce = nonce["nonce"].as_str().unwrap().to_owned();
    let again = json!({ "nonce": nonce, "username": "alice", "password": "pw", "admin": false,
                        "mac": registration_mac(SECRET, &nonce, "alice", "pw", false, None) });
    assert_error(
        &app.post("/_synapse/admin/v1/register", None, again).await,
        400,
        "M_USER_IN_USE",
    );
}

#[tokio::test]
async fn login_whoami_logout() {
    let app = spawn_app().await;
    app.register("bob").await;

    let (status, flows) = app.get("/_matrix/client/v3/login", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(flows["flows"][0]["type"], "m.login.password");

    let login = json!({ "type": "m.login.password",
                        "identifier": { "type": "m.id.user", "user": "bob" },
                        "password": "password", "device_id": "PHONE" });
    let (status, body) = app.post("/_matrix/client/v3/login", None, login).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], "@bob:test.local");
    assert_eq!(body["device_id"], "PHONE");
    let token = body["access_token"].as_str().unwrap().to_owned();

    // The legacy `user` field and the r0 prefix still work.
    let legacy =
        json!({ "type": "m.login.password", "user": "@bob:test.local", "password": "password" });
    let (status, body) = app.post("/_matrix/client/r0/login", None, legacy).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let other_token = body["access_token"].as_str().unwrap().to_owned();

    let wrong = json!({ "type": "m.login.password", "user": "bob", "password": "nope" });
    assert_error(
        &app.post("/_matrix/client/v3/login", None, wrong).await,
        403,
        "M_FORBIDDEN",
    );
    let nobody = json!({ "type": "m.login.password", "user": "nobody", "password": "password" });
    assert_error(
        &app.post("/_matrix/client/v3/login", None, nobody).await,
        403,
        "M_FORBIDDEN",
    );

    let (status, who) = app
        .get("/_matrix/client/v3/account/whoami", Some(&token))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(who["device_id"], "PHONE");

    let (status, _) = app
        .post("/_matrix/client/v3/logout", Some(&token), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_error(
        &app.get("/_matrix/client/v3/account/whoami", Some(&token))
            .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    // The other session survives a single logout...
    assert_eq!(
        app.get("/_matrix/client/v3/account/whoami", Some(&other_token))
            .await
            .0,
        StatusCode::OK
    );

    // ...but not logout/all.
    let (_, body) = app
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({ "type": "m.login.password", "user": "bob", "password": "password" }),
        )
        .await;
    let third = body["access_token"].as_str().unwrap().to_owned();
    let (status, _) = app
        .post("/_matrix/client/v3/logout/all", Some(&third), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    for t in [&other_token, &third] {
        assert_error(
            &app.get("/_matrix/client/v3/account/whoami", Some(t)).await,
            401,
            "M_UNKNOWN_TOKEN",
        );
    }
}

#[tokio::test]
async fn relogin_with_same_device_replaces_its_token() {
    let app = spawn_app().await;
    app.register("carol").await;
    let login = json!({ "type": "m.login.password", "user": "carol", "password": "password", "device_id": "DEV" });
    let (_, first) = app
        .post("/_matrix/client/v3/login", None, login.clone())
        .await;
    let first = first["access_token"].as_str().unwrap();
    // Used once, so the server holds it in its token cache.
    assert_eq!(
        app.get("/_matrix/client/v3/account/whoami", Some(first))
            .await
            .0,
        StatusCode::OK
    );
    let (_, second) = app.post("/_matrix/client/v3/login", None, login).await;
    let second = second["access_token"].as_str().unwrap();
    assert_error(
        &app.get("/_matrix/client/v3/account/whoami", Some(first))
            .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    assert_eq!(
        app.get("/_matrix/client/v3/account/whoami", Some(second))
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn register_is_forbidden_when_disabled() {
    let app = spawn_app().await;
    let body = json!({ "username": "eve", "password": "pw", "auth": { "type": "m.login.dummy" } });
    assert_error(
        &app.post("/_matrix/client/v3/register", None, body).await,
        403,
        "M_FORBIDDEN",
    );
}

#[tokio::test]
async fn open_registration_with_dummy_auth() {
    let app = spawn_app_with(|c| c.enable_registration = true).await;
    // Without auth: the user-interactive-auth 401 naming the dummy flow.
    let (status, body) = app
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({ "username": "dave", "password": "pw" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["flows"][0]["stages"][0], "m.login.dummy");
    let session = body["session"].as_str().unwrap();

    let req = json!({ "username": "dave", "password": "pw",
                      "auth": { "type": "m.login.dummy", "session": session } });
    let (status, body) = app
        .post("/_matrix/client/v3/register", None, req.clone())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], "@dave:test.local");
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(
        app.get("/_matrix/client/v3/account/whoami", Some(token))
            .await
            .0,
        StatusCode::OK
    );

    assert_error(
        &app.post("/_matrix/client/v3/register", None, req).await,
        400,
        "M_USER_IN_USE",
    );
    let bad =
        json!({ "username": "bad name", "password": "pw", "auth": { "type": "m.login.dummy" } });
    assert_error(
        &app.post("/_matrix/client/v3/register", None, bad).await,
        400,
        "M_INVALID_USERNAME",
    );
    assert_error(
        &app.get("/_matrix/client/v3/register/available?username=dave", None)
            .await,
        400,
        "M_USER_IN_USE",
    );
}
