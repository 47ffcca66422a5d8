//! Request limits and abuse resistance over HTTP: body size, JSON depth,
//! `status_msg` length, Synapse's `rc_login` / `rc_registration` /
//! `rc_presence` (429 `M_LIMIT_EXCEEDED` with `retry_after_ms`, and normal
//! service once the window has passed), and the caps on what
//! unauthenticated requests can make the server remember.

use std::time::{Duration, Instant};

use presenced_server::config::Config;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_error, enc, spawn_app_with, TestApp, User, SECRET};

const LOGIN: &str = "/_matrix/client/v3/login";
const NONCE: &str = "/_synapse/admin/v1/register";

fn login_body(user: &str, password: &str) -> Value {
    json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password,
    })
}

async fn login(app: &TestApp, user: &str, password: &str) -> (StatusCode, Value) {
    app.post(LOGIN, None, login_body(user, password)).await
}

/// The `retry_after_ms` of a 429, checked to be there and sane.
#[track_caller]
fn retry_after(resp: &(StatusCode, Value), at_most_ms: u64) -> Duration {
    assert_error(resp, 429, "M_LIMIT_EXCEEDED");
    let ms = resp.1["retry_after_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("no retry_after_ms: {}", resp.1));
    assert!(ms > 0 && ms <= at_most_ms, "retry_after_ms {ms}");
    Duration::from_millis(ms)
}

/// Every login and registration limit off except what a test turns on
/// (the harness's config already has them off; said here so each test
/// reads whole).
fn no_rate_limits(c: &mut Config) {
    c.rc_login.address.per_second = 0.0;
    c.rc_login.account.per_second = 0.0;
    c.rc_login.failed_attempts.per_second = 0.0;
    c.rc_registration.per_second = 0.0;
}

/// Synapse's default login and registration limits, which the test
/// harness turns off.
fn synapse_default_limits(c: &mut Config) {
    c.rc_login = Default::default();
    c.rc_registration = Default::default();
}

#[tokio::test]
async fn an_oversized_body_is_413_too_large() {
    let app = spawn_app_with(|c| c.request_limits.max_body_size = 4096).await;
    let url = format!("{}{LOGIN}", app.base);
    let padding = "x".repeat(8192);
    let body = json!({"type": "m.login.password", "padding": padding}).to_string();
    let resp = app.client.post(&url).body(body).send().await.unwrap();
    let status = resp.status();
    assert_error(&(status, resp.json().await.unwrap()), 413, "M_TOO_LARGE");
    // A body under the limit is read and answered on its merits.
    let resp = login(&app, "nobody", "wrong").await;
    assert_error(&resp, 403, "M_FORBIDDEN");

    // 32 MiB against the default 1 MiB: refused once the limit is read,
    // not buffered whole.
    let app = spawn_app_with(|_| {}).await;
    let url = format!("{}{LOGIN}", app.base);
    let huge = vec![b' '; 32 << 20];
    let resp = app.client.post(&url).body(huge).send().await.unwrap();
    let status = resp.status();
    assert_error(&(status, resp.json().await.unwrap()), 413, "M_TOO_LARGE");
}

#[tokio::test]
async fn deeply_nested_json_is_bad_json_and_the_server_lives_on() {
    let app = spawn_app_with(|_| {}).await;
    let alice = app.register("alice").await;
    let url = format!(
        "{}/_matrix/client/v3/presence/{}/status",
        app.base,
        enc(&alice.user_id)
    );
    for depth in [128, 1_000, 100_000] {
        let body = format!(
            "{{\"presence\": \"online\", \"x\": {}{}}}",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let resp = app
            .client
            .put(&url)
            .bearer_auth(&alice.token)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        assert_error(&(status, resp.json().await.unwrap()), 400, "M_BAD_JSON");
    }
    // Not JSON at all stays M_NOT_JSON.
    let resp = app.post(LOGIN, None, json!(null)).await;
    assert_error(&resp, 400, "M_NOT_JSON");
    let (status, _) = app.get("/health", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_long_status_msg_is_refused_and_changes_nothing() {
    let app = spawn_app_with(|c| {
        c.request_limits.max_status_msg_length = 16;
        c.rc_presence.per_user.per_second = 1000.0;
        c.rc_presence.per_user.burst_count = 1000.0;
    })
    .await;
    let alice = app.register("alice").await;
    let path = format!("/_matrix/client/v3/presence/{}/status", enc(&alice.user_id));
    let put = |msg: String| {
        app.put(
            &path,
            Some(&alice.token),
            json!({"presence": "online", "status_msg": msg}),
        )
    };
    let (status, body) = put("x".repeat(16)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_error(&put("x".repeat(17)).await, 400, "M_BAD_JSON");
    // Bytes of UTF-8, not characters: nine "é" are 18 bytes.
    assert_error(&put("é".repeat(9)).await, 400, "M_BAD_JSON");
    let (_, now) = app.get(&path, Some(&alice.token)).await;
    assert_eq!(now["status_msg"], "x".repeat(16));
}

#[tokio::test]
async fn default_limits_stop_password_guessing_after_three_hashes() {
    // Synapse's defaults: the issue's "1,000 wrong-password logins in a row
    // all get 403" now hash three passwords and answer the rest 429.
    let app = spawn_app_with(synapse_default_limits).await;
    app.register("alice").await;
    let (mut forbidden, mut limited) = (0, 0);
    let started = Instant::now();
    for _ in 0..1000 {
        let resp = login(&app, "alice", "wrong").await;
        match resp.0.as_u16() {
            403 => forbidden += 1,
            429 => {
                retry_after(&resp, 600_000);
                limited += 1;
            }
            other => panic!("unexpected {other}: {}", resp.1),
        }
    }
    assert_eq!((forbidden, limited), (3, 997));
    eprintln!(
        "1000 wrong-password logins: {forbidden} x 403, {limited} x 429 in {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn failed_attempts_lock_the_account_until_the_bucket_drains() {
    let app = spawn_app_with(|c| {
        no_rate_limits(c);
        c.rc_login.failed_attempts.per_second = 4.0;
        c.rc_login.failed_attempts.burst_count = 3.0;
    })
    .await;
    app.register("alice").await;
    app.register("bob").await;
    for _ in 0..3 {
        assert_error(&login(&app, "alice", "wrong").await, 403, "M_FORBIDDEN");
    }
    let wait = retry_after(&login(&app, "alice", "wrong").await, 250);
    // Even the right password waits: guessing cannot race the lock.
    retry_after(&login(&app, "alice", "password").await, 250);
    // Other accounts are not affected.
    assert_eq!(login(&app, "bob", "password").await.0, StatusCode::OK);
    tokio::time::sleep(wait + Duration::from_millis(20)).await;
    let (status, body) = login(&app, "alice", "password").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn logins_per_address_and_per_account_are_limited() {
    let app = spawn_app_with(|c| {
        no_rate_limits(c);
        c.rc_login.address.per_second = 4.0;
        c.rc_login.address.burst_count = 3.0;
    })
    .await;
    app.register("alice").await;
    // Every attempt counts against the address, right or wrong.
    assert_error(&login(&app, "alice", "wrong").await, 403, "M_FORBIDDEN");
    assert_eq!(login(&app, "alice", "password").await.0, StatusCode::OK);
    assert_error(&login(&app, "nobody", "x").await, 403, "M_FORBIDDEN");
    let wait = retry_after(&login(&app, "alice", "password").await, 250);
    tokio::time::sleep(wait + Duration::from_millis(20)).await;
    assert_eq!(login(&app, "alice", "password").await.0, StatusCode::OK);

    let app = spawn_app_with(|c| {
        no_rate_limits(c);
        c.rc_login.account.per_second = 4.0;
        c.rc_login.account.burst_count = 2.0;
    })
    .await;
    app.register("alice").await;
    app.register("bob").await;
    for _ in 0..2 {
        assert_eq!(login(&app, "alice", "password").await.0, StatusCode::OK);
    }
    let wait = retry_after(&login(&app, "alice", "password").await, 250);
    assert_eq!(login(&app, "bob", "password").await.0, StatusCode::OK);
    tokio::time::sleep(wait + Duration::from_millis(20)).await;
    assert_eq!(login(&app, "alice", "password").await.0, StatusCode::OK);
}

async fn register(app: &TestApp, name: &str) -> (StatusCode, Value) {
    app.post(
        "/_matrix/client/v3/register",
        None,
        json!({"username": name, "password": "pw", "auth": {"type": "m.login.dummy"}}),
    )
    .await
}

#[tokio::test]
async fn registrations_per_address_are_limited() {
    // Synapse's default: three at once, then one every ~6 s. The issue's
    // "200 registrations in 5 s all succeed" now registers three.
    let app = spawn_app_with(|c| {
        synapse_default_limits(c);
        c.enable_registration = true;
    })
    .await;
    let (mut created, mut limited) = (0, 0);
    for i in 0..200 {
        let resp = register(&app, &format!("user{i}")).await;
        match resp.0.as_u16() {
            200 => created += 1,
            429 => {
                retry_after(&resp, 10_000);
                limited += 1;
            }
            other => panic!("unexpected {other}: {}", resp.1),
        }
    }
    assert_eq!((created, limited), (3, 197));

    let app = spawn_app_with(|c| {
        c.enable_registration = true;
        // One a second: slow enough that two registrations (a few store
        // round trips each, on either backend) never outlast a refill.
        c.rc_registration.per_second = 1.0;
        c.rc_registration.burst_count = 2.0;
    })
    .await;
    // The UIA round trip (no `auth`) and refused names do not count.
    for _ in 0..5 {
        let resp = app
            .post(
                "/_matrix/client/v3/register",
                None,
                json!({"username": "x", "password": "pw"}),
            )
            .await;
        assert_eq!(resp.0, StatusCode::UNAUTHORIZED, "{}", resp.1);
        assert_error(
            &register(&app, "_reserved").await,
            400,
            "M_INVALID_USERNAME",
        );
    }
    assert_eq!(register(&app, "a").await.0, StatusCode::OK);
    assert_eq!(register(&app, "b").await.0, StatusCode::OK);
    let wait = retry_after(&register(&app, "c").await, 1_000);
    tokio::time::sleep(wait + Duration::from_millis(20)).await;
    assert_eq!(register(&app, "c").await.0, StatusCode::OK);
}

#[tokio::test]
async fn rc_presence_answers_429_then_serves_after_the_window() {
    let app = spawn_app_with(|c| {
        c.rc_presence.per_user.per_second = 4.0;
        c.rc_presence.per_user.burst_count = 1.0;
    })
    .await;
    let alice = app.register("alice").await;
    let path = format!("/_matrix/client/v3/presence/{}/status", enc(&alice.user_id));
    let put = |p: &'static str| app.put(&path, Some(&alice.token), json!({"presence": p}));
    assert_eq!(put("online").await.0, StatusCode::OK);
    let wait = retry_after(&put("unavailable").await, 250);
    tokio::time::sleep(wait + Duration::from_millis(20)).await;
    assert_eq!(put("unavailable").await.0, StatusCode::OK);
    let (_, now) = app.get(&path, Some(&alice.token)).await;
    assert_eq!(now["presence"], "unavailable");
}

async fn nonce(app: &TestApp) -> String {
    let (status, body) = app.get(NONCE, None).await;
    assert_eq!(status, StatusCode::OK);
    body["nonce"].as_str().unwrap().to_owned()
}

async fn register_with_nonce(app: &TestApp, nonce: &str, name: &str) -> (StatusCode, Value) {
    let mac = presenced_server::api::synapse_admin::registration_mac(
        SECRET, nonce, name, "password", false, None,
    );
    app.post(
        NONCE,
        None,
        json!({"nonce": nonce, "username": name, "password": "password", "mac": mac}),
    )
    .await
}

/// The value of an unlabelled gauge in a `/metrics` scrape.
fn gauge(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

#[tokio::test]
async fn registration_nonces_are_capped() {
    let app = spawn_app_with(|c| {
        c.request_limits.max_registration_nonces = 50;
        c.enable_metrics = true;
    })
    .await;
    let first = nonce(&app).await;
    for _ in 0..1000 {
        nonce(&app).await;
    }
    let last = nonce(&app).await;
    assert_eq!(app.state.held_state().registration_nonces, 50);
    assert_eq!(
        gauge(&app.metrics_text().await, "presenced_registration_nonces"),
        50
    );
    // The oldest unused nonces made room; the newest work.
    let resp = register_with_nonce(&app, &first, "early").await;
    assert_error(&resp, 400, "M_UNKNOWN");
    let (status, body) = register_with_nonce(&app, &last, "late").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn uia_sessions_are_capped() {
    let app = spawn_app_with(|c| c.request_limits.max_uia_sessions = 20).await;
    let alice: User = app.register("alice").await;
    const DEACTIVATE: &str = "/_matrix/client/v3/account/deactivate";
    let start = || app.post(DEACTIVATE, Some(&alice.token), json!({}));
    let (status, body) = start().await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let first = body["session"].as_str().unwrap().to_owned();
    let mut last = String::new();
    for _ in 0..500 {
        let (status, body) = start().await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        last = body["session"].as_str().unwrap().to_owned();
    }
    assert_eq!(app.state.held_state().uia_sessions, 20);
    let auth = |session: &str| {
        json!({"auth": {"type": "m.login.password", "session": session, "password": "password",
                        "identifier": {"type": "m.id.user", "user": alice.user_id}}})
    };
    let resp = app.post(DEACTIVATE, Some(&alice.token), auth(&first)).await;
    assert_error(&resp, 400, "M_UNKNOWN");
    let (status, body) = app.post(DEACTIVATE, Some(&alice.token), auth(&last)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn failed_login_records_are_capped_and_expire() {
    let app = spawn_app_with(|c| {
        no_rate_limits(c);
        // Drains a bucket of one failure in 20 ms.
        c.rc_login.failed_attempts.per_second = 50.0;
        c.rc_login.failed_attempts.burst_count = 3.0;
        c.request_limits.max_rate_limit_keys = 100;
        c.enable_metrics = true;
    })
    .await;
    // Each made-up name is a failed-login record.
    for i in 0..1000 {
        assert_error(
            &login(&app, &format!("ghost{i}"), "x").await,
            403,
            "M_FORBIDDEN",
        );
    }
    let held = app.state.held_state().rate_limit_buckets;
    assert!(held <= 100, "{held} buckets");
    // Drained records go at the next sweep (here, a second later).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_error(&login(&app, "ghost-late", "x").await, 403, "M_FORBIDDEN");
    assert_eq!(app.state.held_state().rate_limit_buckets, 1);
    assert_eq!(
        gauge(&app.metrics_text().await, "presenced_rate_limit_buckets"),
        1
    );
}

#[tokio::test]
async fn behind_a_proxy_each_forwarded_address_has_its_own_bucket() {
    let app = spawn_app_with(|c| {
        no_rate_limits(c);
        c.listeners[0].x_forwarded = true;
        c.rc_login.address.per_second = 0.01;
        c.rc_login.address.burst_count = 1.0;
    })
    .await;
    let url = format!("{}{LOGIN}", app.base);
    let from = |addr: &'static str| {
        app.client
            .post(&url)
            .header("X-Forwarded-For", addr)
            .json(&login_body("nobody", "x"))
            .send()
    };
    assert_eq!(from("203.0.113.7").await.unwrap().status(), 403);
    assert_eq!(from("203.0.113.7, 10.0.0.1").await.unwrap().status(), 429);
    assert_eq!(from("198.51.100.2").await.unwrap().status(), 403);
    // Without the header, the proxy's own address is the key.
    assert_eq!(login(&app, "nobody", "x").await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn uia_password_guesses_count_as_failed_logins() {
    let app = spawn_app_with(|c| {
        no_rate_limits(c);
        c.rc_login.failed_attempts.per_second = 4.0;
        c.rc_login.failed_attempts.burst_count = 3.0;
    })
    .await;
    let alice = app.register("alice").await;
    const DEACTIVATE: &str = "/_matrix/client/v3/account/deactivate";
    let (_, body) = app.post(DEACTIVATE, Some(&alice.token), json!({})).await;
    let session = body["session"].as_str().unwrap().to_owned();
    let attempt = |password: &'static str| {
        app.post(
            DEACTIVATE,
            Some(&alice.token),
            json!({"auth": {"type": "m.login.password", "session": session, "password": password,
                            "identifier": {"type": "m.id.user", "user": alice.user_id}}}),
        )
    };
    for _ in 0..3 {
        assert_error(&attempt("wrong").await, 401, "M_FORBIDDEN");
    }
    let wait = retry_after(&attempt("password").await, 250);
    // The same bucket as /login.
    retry_after(&login(&app, "alice", "password").await, 250);
    tokio::time::sleep(wait + Duration::from_millis(20)).await;
    let (status, body) = attempt("password").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn concurrent_guesses_cannot_slip_past_the_failed_attempts_limit() {
    let app = spawn_app_with(|c| {
        no_rate_limits(c);
        c.rc_login.failed_attempts.per_second = 0.01;
        c.rc_login.failed_attempts.burst_count = 3.0;
    })
    .await;
    app.register("alice").await;
    let guesses = (0..20).map(|_| login(&app, "alice", "wrong"));
    let answers = futures::future::join_all(guesses).await;
    let hashed = answers.iter().filter(|r| r.0.as_u16() == 403).count();
    let limited = answers.iter().filter(|r| r.0.as_u16() == 429).count();
    assert_eq!((hashed, limited), (3, 17));
}
