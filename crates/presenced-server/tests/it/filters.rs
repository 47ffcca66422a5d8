//! Sync filters are checked as Synapse checks them, whether uploaded or
//! given inline to `/sync`: a refused filter is 400 and never stored.

use serde_json::{json, Value};

use crate::helpers::{assert_error, enc, spawn_app, TestApp, User};

/// Filters Synapse's schema refuses, one per rule.
fn bad_filters() -> Vec<Value> {
    vec![
        json!({"presence": {"senders": ["@bar;pik.test.com"]}}),
        json!({"presence": {"not_senders": ["alice"]}}),
        json!({"presence": {"limit": "10"}}),
        json!({"presence": {"types": "m.presence"}}),
        json!({"presence": {"not_types": [1, 2]}}),
        json!({"presence": []}),
        json!({"account_data": {"senders": [42]}}),
        json!({"room": {"rooms": ["#alias:test.local"]}}),
        json!({"room": {"not_rooms": ["not a room"]}}),
        json!({"room": {"timeline": {"limit": "ten"}}}),
        json!({"room": {"state": {"lazy_load_members": "yes"}}}),
        json!({"room": {"include_leave": 1}}),
        json!({"event_fields": ["content", 5]}),
        json!({"event_format": "xml"}),
    ]
}

fn filter_path(user: &User) -> String {
    format!("/_matrix/client/v3/user/{}/filter", enc(&user.user_id))
}

async fn sync_with(app: &TestApp, user: &User, filter: &str) -> (reqwest::StatusCode, Value) {
    app.get(
        &format!("/_matrix/client/v3/sync?filter={}", enc(filter)),
        Some(&user.token),
    )
    .await
}

#[tokio::test]
async fn bad_uploaded_filters_are_refused_and_never_stored() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let path = filter_path(&alice);
    for filter in bad_filters() {
        let resp = app.post(&path, Some(&alice.token), filter.clone()).await;
        assert_error(&resp, 400, "M_BAD_JSON");
        assert!(
            resp.1["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{filter}: {}",
            resp.1
        );
    }
    // Filter IDs count from 0 per user: nothing was stored.
    let resp = app.get(&format!("{path}/0"), Some(&alice.token)).await;
    assert_error(&resp, 404, "M_NOT_FOUND");
    let resp = app.get(&format!("{path}/zero"), Some(&alice.token)).await;
    assert_error(&resp, 400, "M_UNKNOWN");
    let (status, body) = app
        .post(
            &path,
            Some(&alice.token),
            json!({"presence": {"senders": ["@bob:test.local"], "limit": 5}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["filter_id"], "0",
        "the first filter stored is this one"
    );
}

#[tokio::test]
async fn valid_filters_with_unknown_fields_are_stored_as_given() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let path = filter_path(&alice);
    let filter = json!({
        "presence": {"types": ["m.presence"], "not_senders": ["@alice:example.com"],
                     "org.matrix.msc9999.future_option": true, "limit": 2.5},
        "room": {"rooms": ["!a:test.local"], "timeline": {"limit": 10, "lazy_load_members": true}},
        "event_format": "client",
        "event_fields": ["content.body"],
        "something_new": {"x": 1}
    });
    let (status, body) = app.post(&path, Some(&alice.token), filter.clone()).await;
    assert_eq!(status, 200, "{body}");
    let id = body["filter_id"].as_str().unwrap();
    let (status, stored) = app.get(&format!("{path}/{id}"), Some(&alice.token)).await;
    assert_eq!(status, 200);
    assert_eq!(stored, filter);
}

#[tokio::test]
async fn bad_inline_sync_filters_are_refused() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    for filter in bad_filters() {
        let resp = sync_with(&app, &alice, &filter.to_string()).await;
        assert_error(&resp, 400, "M_BAD_JSON");
    }
    // Authentication comes first.
    let resp = app
        .get(
            &format!("/_matrix/client/v3/sync?filter={}", enc("{not json")),
            None,
        )
        .await;
    assert_error(&resp, 401, "M_MISSING_TOKEN");
    let resp = sync_with(&app, &alice, "{not json").await;
    assert_error(&resp, 400, "M_NOT_JSON");
    let deep = format!("{{\"x\": {}{}}}", "[".repeat(200), "]".repeat(200));
    let resp = sync_with(&app, &alice, &deep).await;
    assert_error(&resp, 400, "M_BAD_JSON");

    // A valid inline filter (with a fractional limit, which the schema
    // allows) syncs as usual.
    let (status, body) = sync_with(
        &app,
        &alice,
        r#"{"presence": {"limit": 3.0, "types": ["m.presence"]}, "room": {"rooms": []}}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["next_batch"].is_string());
}

#[tokio::test]
async fn sync_with_an_unknown_stored_filter_id_is_an_invalid_param() {
    // Synapse turns the store's "not found" into 400 M_INVALID_PARAM here
    // (GET of the filter itself stays 404 M_NOT_FOUND).
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let resp = sync_with(&app, &alice, "7").await;
    assert_error(&resp, 400, "M_INVALID_PARAM");
    let (status, body) = app
        .post(&filter_path(&alice), Some(&alice.token), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let id = body["filter_id"].as_str().unwrap().to_owned();
    let (status, body) = sync_with(&app, &alice, &id).await;
    assert_eq!(status, 200, "{body}");
}
