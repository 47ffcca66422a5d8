//! CORS: preflights are answered on any path without authentication, and
//! answers (successes and Matrix errors alike) carry Synapse's CORS
//! headers, so a web client on another origin can read them.
//! `scripts/browser-test` checks the same with matrix-js-sdk in Chromium.

use reqwest::header::HeaderMap;
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{enc, spawn_app, spawn_app_with, TestApp};
use crate::ops::spawn_rate_limited;

/// Synapse's CORS headers and values.
const CORS: [(&str, &str); 4] = [
    ("access-control-allow-origin", "*"),
    (
        "access-control-allow-methods",
        "GET, HEAD, POST, PUT, DELETE, OPTIONS",
    ),
    (
        "access-control-allow-headers",
        "X-Requested-With, Content-Type, Authorization, Date",
    ),
    ("access-control-expose-headers", "Synapse-Trace-Id, Server"),
];

#[track_caller]
fn assert_cors(headers: &HeaderMap, what: &str) {
    for (name, want) in CORS {
        let got: Vec<_> = headers.get_all(name).iter().collect();
        assert_eq!(got, [want], "{what}: {name} (headers: {headers:?})");
    }
}

/// What a browser sends before a PUT with a token and a JSON body.
async fn preflight(app: &TestApp, path: &str) -> Response {
    app.client
        .request(Method::OPTIONS, format!("{}{path}", app.base))
        .header("origin", "http://web.client.example")
        .header("access-control-request-method", "PUT")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap()
}

/// Sends a request and returns its status, headers and JSON body.
async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<String>,
) -> (StatusCode, HeaderMap, Value) {
    let mut req = app
        .client
        .request(method, format!("{}{path}", app.base))
        .header("origin", "http://web.client.example");
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let resp = req.send().await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("{path}: answer is not JSON: {text:?}"));
    (status, headers, body)
}

#[tokio::test]
async fn preflights_are_answered_on_any_path_without_auth() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let presence = format!("/_matrix/client/v3/presence/{}/status", enc(&alice.user_id));
    // A real endpoint (GET and PUT only: OPTIONS used to be a 405), one
    // that does not exist, the root, and the key server.
    for path in [
        presence.as_str(),
        "/_matrix/client/v3/sync",
        "/_matrix/client/v3/no/such/thing",
        "/",
        "/_matrix/key/v2/server",
    ] {
        let resp = preflight(&app, path).await;
        assert_eq!(resp.status(), StatusCode::NO_CONTENT, "OPTIONS {path}");
        assert_cors(resp.headers(), &format!("OPTIONS {path}"));
        assert_eq!(resp.text().await.unwrap(), "", "OPTIONS {path}: body");
    }
}

#[tokio::test]
async fn answers_and_matrix_errors_carry_the_cors_headers() {
    let app = spawn_app_with(|c| c.request_limits.max_body_size = 4096).await;
    let alice = app.register("alice").await;
    let token = Some(alice.token.as_str());
    let path = format!("/_matrix/client/v3/presence/{}/status", enc(&alice.user_id));
    let online = json!({"presence": "online", "status_msg": "cors"}).to_string();

    let (status, headers, _) = send(&app, Method::PUT, &path, token, Some(online)).await;
    assert_eq!(status, StatusCode::OK);
    assert_cors(&headers, "PUT presence");

    let (status, headers, body) = send(&app, Method::GET, &path, token, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status_msg"], "cors");
    assert_cors(&headers, "GET presence");

    // Each Matrix error a web client must be able to read.
    let whoami = "/_matrix/client/v3/account/whoami";
    let login = "/_matrix/client/v3/login";
    let too_big = format!(
        r#"{{"type": "m.login.password", "x": "{}"}}"#,
        "x".repeat(5000)
    );
    let cases = [
        (Method::POST, login, None, Some(too_big), 413, "M_TOO_LARGE"),
        (
            Method::POST,
            login,
            None,
            Some("{".to_owned()),
            400,
            "M_NOT_JSON",
        ),
        (Method::GET, whoami, None, None, 401, "M_MISSING_TOKEN"),
        (
            Method::GET,
            whoami,
            Some("nope"),
            None,
            401,
            "M_UNKNOWN_TOKEN",
        ),
        (
            Method::GET,
            "/_matrix/client/v3/no/such",
            None,
            None,
            404,
            "M_UNRECOGNIZED",
        ),
        (Method::DELETE, login, None, None, 405, "M_UNRECOGNIZED"),
    ];
    for (method, path, token, body, want_status, want_code) in cases {
        let what = format!("{method} {path} ({want_code})");
        let (status, headers, body) = send(&app, method, path, token, body).await;
        assert_eq!(status.as_u16(), want_status, "{what}: {body}");
        assert_eq!(body["errcode"], want_code, "{what}: {body}");
        assert_cors(&headers, &what);
    }
}

#[tokio::test]
async fn a_429_carries_the_cors_headers() {
    // One PUT, then 429 for ten seconds.
    let Some(app) = spawn_rate_limited().await else {
        return;
    };
    let alice = app.register("alice").await;
    let token = Some(alice.token.as_str());
    let path = format!("/_matrix/client/v3/presence/{}/status", enc(&alice.user_id));
    let online = || Some(json!({"presence": "online"}).to_string());
    let (status, _, _) = send(&app, Method::PUT, &path, token, online()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, headers, body) = send(&app, Method::PUT, &path, token, online()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED", "{body}");
    assert_cors(&headers, "PUT presence (429)");
}

#[tokio::test]
async fn federation_answers_carry_the_cors_headers_too() {
    // As Synapse: every listener's JSON answers, not only the client API's.
    let app = spawn_app().await;
    let (status, headers, body) =
        send(&app, Method::GET, "/_matrix/key/v2/server", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_cors(&headers, "GET /_matrix/key/v2/server");
}

#[tokio::test]
async fn metrics_answers_carry_no_cors_headers() {
    // Any web page open in an operator's browser could otherwise read the
    // counters of a server on a loopback or intranet address.
    let app = spawn_app_with(|c| c.enable_metrics = true).await;
    let resp = app
        .client
        .get(format!("{}/metrics", app.base))
        .header("origin", "http://web.client.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    for (name, _) in CORS {
        assert!(resp.headers().get(name).is_none(), "/metrics has {name}");
    }
}
