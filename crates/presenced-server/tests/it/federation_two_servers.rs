//! Two presenced servers federating over TLS on loopback (see
//! `two_servers.rs`): presence crosses both ways to routed users with no
//! shared room, bad requests are refused, a peer that was away gets only
//! the latest state, and a restarted sender delivers its stored outbox.
//!
//! Timings of first and later deliveries are printed (`--nocapture`);
//! nothing asserts on them beyond generous deadlines.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{TestApp, User};
use crate::ops::{get_presence, presence_of, put_presence, sync};
use crate::two_servers::{bind, static_routes, FedServer, TestCa};

const ACCEPTED: &str = "presenced_federation_presence_accepted_total";
const FAILED: &str = "presenced_federation_outbound_transactions_failed_total";
const PENDING: &str = "presenced_federation_outbox_pending";
const DELIVERED: &str = "presenced_federation_outbound_states_delivered_total";

/// Generous: the machine is a loaded 2-core box and a retry may wait for
/// the sender's backoff.
const DEADLINE: Duration = Duration::from_secs(90);

/// Servers A (alice) and B (bob, carol); alice and bob are routed to each
/// other on both servers, carol to nobody.
struct Pair {
    ca: TestCa,
    a: FedServer,
    b: FedServer,
    alice: User,
    bob: User,
    carol: User,
}

async fn pair() -> Pair {
    let ca = TestCa::new();
    let (fa, fb) = (bind(0).await, bind(0).await);
    let alice_id = format!("@alice:localhost:{}", fa.local_addr().unwrap().port());
    let bob_id = format!("@bob:localhost:{}", fb.local_addr().unwrap().port());
    let routes = static_routes(&[
        (bob_id.as_str(), &[alice_id.as_str()]),
        (alice_id.as_str(), &[bob_id.as_str()]),
    ]);
    let routes_b = routes.clone();
    let a = FedServer::start(&ca, fa, |c| c.modules.push(routes)).await;
    let b = FedServer::start(&ca, fb, |c| c.modules.push(routes_b)).await;
    let alice = a.app.register("alice").await;
    let bob = b.app.register("bob").await;
    let carol = b.app.register("carol").await;
    assert_eq!(alice.user_id, alice_id);
    assert_eq!(bob.user_id, bob_id);
    Pair {
        ca,
        a,
        b,
        alice,
        bob,
        carol,
    }
}

/// What `observer` sees of `target` in an initial sync that leaves the
/// observer's own presence alone.
async fn seen(app: &TestApp, observer: &User, target: &User) -> Option<Value> {
    presence_of(
        &sync(app, observer, "set_presence=offline&timeout=0").await,
        &target.user_id,
    )
}

/// Waits until `observer` sees `target` with `status_msg`; how long it took.
async fn until_seen(app: &TestApp, observer: &User, target: &User, status: &str) -> Duration {
    let start = Instant::now();
    loop {
        let content = seen(app, observer, target).await;
        if content.as_ref().is_some_and(|c| c["status_msg"] == status) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{} never saw {}'s status {status:?} (last: {content:?})",
            observer.user_id,
            target.user_id
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until a metric of `server` reaches `at_least`.
async fn until_metric(server: &FedServer, name: &str, at_least: u64) {
    let start = Instant::now();
    while server.metric(name).await < at_least {
        assert!(
            start.elapsed() < DEADLINE,
            "{name} never reached {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn set_status(app: &TestApp, user: &User, presence: &str, status: &str) {
    put_presence(
        app,
        user,
        json!({"presence": presence, "status_msg": status}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_crosses_both_ways_to_routed_users_only() {
    let p = pair().await;

    set_status(&p.a.app, &p.alice, "online", "a1").await;
    let first_ab = until_seen(&p.b.app, &p.bob, &p.alice, "a1").await;
    eprintln!("A→B first delivery (keys fetched over TLS): {first_ab:?}");
    let content = seen(&p.b.app, &p.bob, &p.alice).await.unwrap();
    assert_eq!(content["presence"], "online");

    set_status(&p.b.app, &p.bob, "unavailable", "b1").await;
    let first_ba = until_seen(&p.a.app, &p.alice, &p.bob, "b1").await;
    eprintln!("B→A first delivery: {first_ba:?}");
    assert_eq!(
        seen(&p.a.app, &p.alice, &p.bob).await.unwrap()["presence"],
        "unavailable"
    );

    for round in 2..=4 {
        let status = format!("a{round}");
        set_status(&p.a.app, &p.alice, "online", &status).await;
        let ab = until_seen(&p.b.app, &p.bob, &p.alice, &status).await;
        let status = format!("b{round}");
        set_status(&p.b.app, &p.bob, "online", &status).await;
        let ba = until_seen(&p.a.app, &p.alice, &p.bob, &status).await;
        eprintln!("later delivery {round}: A→B {ab:?}, B→A {ba:?}");
    }

    // Carol, on B with bob but routed to nobody, sees nothing of alice,
    // although alice's presence has reached B several times.
    assert!(seen(&p.b.app, &p.carol, &p.alice).await.is_none());
    let (status, _) = get_presence(&p.b.app, &p.carol, &p.alice.user_id).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signature_or_wrong_destination_is_refused_over_tls() {
    let p = pair().await;
    let http = p.ca.client();
    let key = p.a.app.state.signing_key.clone();
    let origin = <&ruma_common::ServerName>::try_from(p.a.name.as_str()).unwrap();
    let body = json!({
        "origin": p.a.name,
        "origin_server_ts": 1,
        "pdus": [],
        "edus": [{"edu_type": "m.presence", "content": {"push": [
            {"user_id": p.alice.user_id, "presence": "online", "status_msg": "signed", "currently_active": true}
        ]}}],
    });
    let send = |txn: &str, destination: &str, body: &Value, signed_body: &Value| {
        let path = format!("/_matrix/federation/v1/send/{txn}");
        let destination = <&ruma_common::ServerName>::try_from(destination).unwrap();
        let auth = key
            .x_matrix_authorization(origin, destination, "PUT", &path, Some(signed_body))
            .unwrap();
        http.put(format!("{}{path}", p.b.fed_base()))
            .header("Authorization", auth)
            .json(body)
            .send()
    };
    let refused = |response: reqwest::Response| async move {
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        (status, body["errcode"].clone())
    };

    // A bad signature: the body differs from what was signed.
    let mut tampered = body.clone();
    tampered["edus"][0]["content"]["push"][0]["status_msg"] = json!("tampered");
    let response = send("t1", &p.b.name, &tampered, &body).await.unwrap();
    assert_eq!(
        refused(response).await,
        (StatusCode::UNAUTHORIZED, json!("M_UNAUTHORIZED"))
    );
    // Signed for another destination.
    let response = send("t2", "localhost:1", &body, &body).await.unwrap();
    assert_eq!(
        refused(response).await,
        (StatusCode::UNAUTHORIZED, json!("M_UNAUTHORIZED"))
    );
    // No authorization at all.
    let response = http
        .put(format!("{}/_matrix/federation/v1/send/t3", p.b.fed_base()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(seen(&p.b.app, &p.bob, &p.alice).await.is_none());

    // The same request, correctly signed, is accepted (B fetched A's key
    // from A over TLS).
    let response = send("t4", &p.b.name, &body, &body).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    until_seen(&p.b.app, &p.bob, &p.alice, "signed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_was_down_gets_only_the_latest_state() {
    let mut p = pair().await;
    set_status(&p.a.app, &p.alice, "online", "before").await;
    until_seen(&p.b.app, &p.bob, &p.alice, "before").await;
    let accepted_before = p.b.metric(ACCEPTED).await;
    let failed_before = p.a.metric(FAILED).await;

    p.b.stop_federation().await;
    let down = Instant::now();
    set_status(&p.a.app, &p.alice, "online", "one").await;
    // A tries (and fails) while B is away.
    until_metric(&p.a, FAILED, failed_before + 1).await;
    for status in ["two", "three"] {
        set_status(&p.a.app, &p.alice, "online", status).await;
    }
    set_status(&p.a.app, &p.alice, "unavailable", "latest").await;
    assert_eq!(
        p.a.metric(PENDING).await,
        1,
        "one entry per user in the outbox"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    p.b.resume_federation().await;
    let up = Instant::now();
    until_seen(&p.b.app, &p.bob, &p.alice, "latest").await;
    eprintln!(
        "B away {:?}; delivered {:?} after B came back ({} failed attempts meanwhile)",
        up - down,
        up.elapsed(),
        p.a.metric(FAILED).await - failed_before
    );
    // Only the latest state crossed: exactly one more entry accepted, and
    // nothing else arrives later.
    until_metric(&p.a, DELIVERED, 2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(p.b.metric(ACCEPTED).await, accepted_before + 1);
    assert_eq!(p.a.metric(PENDING).await, 0);
    let content = seen(&p.b.app, &p.bob, &p.alice).await.unwrap();
    assert_eq!(content["presence"], "unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_delivers_its_stored_outbox() {
    let mut p = pair().await;
    set_status(&p.a.app, &p.alice, "online", "before").await;
    until_seen(&p.b.app, &p.bob, &p.alice, "before").await;

    p.b.stop_federation().await;
    let failed_before = p.a.metric(FAILED).await;
    set_status(
        &p.a.app,
        &p.alice,
        "unavailable",
        "queued before the restart",
    )
    .await;
    until_metric(&p.a, FAILED, failed_before + 1).await;
    assert_eq!(p.a.metric(PENDING).await, 1);

    p.a.restart().await;
    // The new instance found the entry in its outbox.
    assert_eq!(p.a.metric(PENDING).await, 1);
    assert_eq!(p.a.metric(DELIVERED).await, 0);

    p.b.resume_federation().await;
    let up = Instant::now();
    until_seen(&p.b.app, &p.bob, &p.alice, "queued before the restart").await;
    eprintln!("outbox delivered {:?} after B came back", up.elapsed());
    until_metric(&p.a, DELIVERED, 1).await;
    assert_eq!(p.a.metric(PENDING).await, 0);
}

/// A sender that does not trust the peer's certificate delivers nothing
/// (certificates are checked); with `federation_verify_certificates:
/// false` it delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_checked_unless_verification_is_off() {
    for verify in [true, false] {
        let ca = TestCa::new();
        // A trusts only a CA that did not sign B's certificate.
        let other_ca = TestCa::new();
        let (fa, fb) = (bind(0).await, bind(0).await);
        let alice_id = format!("@alice:localhost:{}", fa.local_addr().unwrap().port());
        let bob_id = format!("@bob:localhost:{}", fb.local_addr().unwrap().port());
        let routes = static_routes(&[(bob_id.as_str(), &[alice_id.as_str()])]);
        let routes_b = routes.clone();
        let other_ca_path = other_ca.ca_path.clone();
        let a = FedServer::start(&ca, fa, |c| {
            c.modules.push(routes);
            c.federation_custom_ca_list = Some(vec![other_ca_path]);
            c.federation_verify_certificates = verify;
        })
        .await;
        let b = FedServer::start(&ca, fb, |c| c.modules.push(routes_b)).await;
        let alice = a.app.register("alice").await;
        let bob = b.app.register("bob").await;
        set_status(&a.app, &alice, "online", "hello").await;
        if verify {
            until_metric(&a, FAILED, 2).await;
            assert!(seen(&b.app, &bob, &alice).await.is_none());
            assert_eq!(a.metric(DELIVERED).await, 0);
        } else {
            until_seen(&b.app, &bob, &alice, "hello").await;
        }
    }
}

/// `ip_range_blacklist` holds for outbound transactions and for key
/// fetches: a server with the default blacklist (loopback blocked) and no
/// whitelist neither delivers to a peer on loopback nor accepts that
/// peer's transactions (it cannot fetch the peer's key); the peer, which
/// whitelists loopback, delivers nothing either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_blacklist_keeps_loopback_peers_out() {
    let ca = TestCa::new();
    let (fa, fb) = (bind(0).await, bind(0).await);
    let alice_id = format!("@alice:localhost:{}", fa.local_addr().unwrap().port());
    let bob_id = format!("@bob:localhost:{}", fb.local_addr().unwrap().port());
    let routes = static_routes(&[
        (bob_id.as_str(), &[alice_id.as_str()]),
        (alice_id.as_str(), &[bob_id.as_str()]),
    ]);
    let routes_b = routes.clone();
    let a = FedServer::start(&ca, fa, |c| {
        c.modules.push(routes);
        c.ip_range_whitelist = presenced_server::config::IpRanges::default();
    })
    .await;
    let b = FedServer::start(&ca, fb, |c| c.modules.push(routes_b)).await;
    let alice = a.app.register("alice").await;
    let bob = b.app.register("bob").await;
    set_status(&a.app, &alice, "online", "from a").await;
    set_status(&b.app, &bob, "online", "from b").await;
    until_metric(&a, FAILED, 2).await;
    until_metric(&b, FAILED, 2).await;
    assert_eq!(a.metric(DELIVERED).await, 0);
    assert_eq!(b.metric(DELIVERED).await, 0);
    assert!(seen(&b.app, &bob, &alice).await.is_none());
    assert!(seen(&a.app, &alice, &bob).await.is_none());
    // B's transactions reached A and were refused there, before any
    // presence was taken.
    assert!(
        a.metric("presenced_federation_requests_refused_total")
            .await
            >= 2
    );
    assert_eq!(a.metric(ACCEPTED).await, 0);
}
