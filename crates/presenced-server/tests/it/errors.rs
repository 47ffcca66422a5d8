//! Matrix error codes at the edges, and the small discovery endpoints.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{assert_error, enc, spawn_app};

#[tokio::test]
async fn body_errors() {
    let app = spawn_app().await;
    let url = format!("{}/_matrix/client/v3/login", app.base);
    let send = |body: &'static str| app.client.post(&url).body(body).send();

    let resp = send("this is not json").await.unwrap();
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_error(&(status, body), 400, "M_NOT_JSON");

    let resp = send("[1, 2]").await.unwrap();
    let status = resp.status();
    assert_error(&(status, resp.json().await.unwrap()), 400, "M_NOT_JSON");

    // JSON, wrong shape.
    let resp = send(r#"{"type": 5}"#).await.unwrap();
    let status = resp.status();
    assert_error(&(status, resp.json().await.unwrap()), 400, "M_BAD_JSON");

    // Over the size limit.
    let limit = presenced_server::config::limits::RequestLimits::default().max_body_size;
    let big = "x".repeat(limit + 10);
    let resp = app.client.post(&url).body(big).send().await.unwrap();
    let status = resp.status();
    assert_error(&(status, resp.json().await.unwrap()), 413, "M_TOO_LARGE");
}

#[tokio::test]
async fn unknown_endpoints_and_methods() {
    let app = spawn_app().await;
    assert_error(
        &app.get("/_matrix/client/v3/no/such/thing", None).await,
        404,
        "M_UNRECOGNIZED",
    );
    assert_error(&app.get("/", None).await, 404, "M_UNRECOGNIZED");
    assert_error(
        &app.request(Method::DELETE, "/_matrix/client/v3/login", None, None)
            .await,
        405,
        "M_UNRECOGNIZED",
    );
}

#[tokio::test]
async fn token_errors() {
    let app = spawn_app().await;
    assert_error(
        &app.get("/_matrix/client/v3/account/whoami", None).await,
        401,
        "M_MISSING_TOKEN",
    );
    assert_error(
        &app.get("/_matrix/client/v3/account/whoami", Some("nope"))
            .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    // The deprecated query parameter works too.
    let alice = app.register("alice").await;
    let (status, who) = app
        .get(
            &format!(
                "/_matrix/client/v3/account/whoami?access_token={}",
                alice.token
            ),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(who["user_id"], alice.user_id);
}

#[tokio::test]
async fn malformed_path_parameters() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let path = format!("/_matrix/client/v3/rooms/{}/join", enc("not-a-room-id"));
    assert_error(
        &app.post(&path, Some(&alice.token), json!({})).await,
        400,
        "M_INVALID_PARAM",
    );
}

#[tokio::test]
async fn discovery_endpoints() {
    let app = spawn_app().await;
    let (status, versions) = app.get("/_matrix/client/versions", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        versions["unstable_features"]["org.matrix.msc3026.busy_presence"],
        true
    );
    assert!(versions["versions"]
        .as_array()
        .unwrap()
        .contains(&json!("v1.11")));

    for path in ["/health", "/_presenced/health"] {
        let (status, body) = app.get(path, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["status"], "ok");
    }

    let alice = app.register("alice").await;
    let (status, caps) = app
        .get("/_matrix/client/v3/capabilities", Some(&alice.token))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(caps["capabilities"]["m.room_versions"]["default"], "10");
    let (status, rules) = app
        .get("/_matrix/client/r0/pushrules/", Some(&alice.token))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(rules["global"]["override"].is_array());
    let upload =
        json!({ "one_time_keys": { "signed_curve25519:AAA": {}, "signed_curve25519:AAB": {} } });
    let (status, counts) = app
        .post("/_matrix/client/v3/keys/upload", Some(&alice.token), upload)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(counts["one_time_key_counts"]["signed_curve25519"], 2);
}
