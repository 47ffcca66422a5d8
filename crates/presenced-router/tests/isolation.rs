//! presenced's isolation of modules (beyond Synapse): an error, a panic or
//! a missed deadline is logged naming the module, counted, and that
//! module's answer is empty while the others' answers still arrive.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use common::{answering, load, load_with, online, uid, Behaviour, Warnings};
use futures::future::BoxFuture;
use futures::FutureExt;
use presenced_router::{Interest, ModuleError};

#[derive(Clone, Copy)]
enum Fault {
    Error,
    PanicWhilePolled,
    PanicWhenCalled,
    Sleep,
}

fn faulty(fault: Fault) -> Behaviour {
    fn fail<T: Send + 'static>(fault: Fault) -> BoxFuture<'static, Result<T, ModuleError>> {
        if let Fault::PanicWhenCalled = fault {
            // A bug in the synchronous part of the callback, before any future.
            panic!("module bug before the future");
        }
        async move {
            match fault {
                Fault::Error => Err(ModuleError::new("database down")),
                Fault::Sleep => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Err(ModuleError::new("never reached"))
                }
                Fault::PanicWhilePolled | Fault::PanicWhenCalled => panic!("module bug"),
            }
        }
        .boxed()
    }
    (
        Arc::new(move |_| fail(fault)),
        Arc::new(move |_| fail(fault)),
    )
}

fn healthy() -> Behaviour {
    answering(
        HashMap::from([(uid("@x:test"), HashSet::from([online("@a:test")]))]),
        Interest::Users(HashSet::from([uid("@a:test")])),
    )
}

#[tokio::test(flavor = "current_thread")]
async fn failing_modules_are_logged_counted_and_empty() {
    let warnings = Warnings::default();
    let _guard = tracing::subscriber::set_default(warnings.clone());
    let router = load_with(
        [
            Fault::Error,
            Fault::PanicWhilePolled,
            Fault::PanicWhenCalled,
            Fault::Sleep,
        ]
        .into_iter()
        .map(|f| (faulty(f), None))
        .chain([(healthy(), None)])
        .collect(),
        Some(Duration::from_millis(50)),
    );

    let merged = router.get_users_for_states(&[online("@a:test")]).await;
    assert_eq!(
        merged,
        HashMap::from([(uid("@x:test"), HashSet::from([online("@a:test")]))]),
        "the healthy module's answer still arrives, the faulty ones add nothing"
    );
    assert_eq!(
        router.get_interested_users(&uid("@me:test")).await,
        Interest::Users(HashSet::from([uid("@a:test")]))
    );

    let stats = router.stats();
    let counts: Vec<_> = stats
        .iter()
        .map(|s| (s.name.as_str(), s.calls, s.errors, s.panics, s.timeouts))
        .collect();
    assert_eq!(
        counts,
        [
            ("m0", 2, 2, 0, 0),
            ("m1", 2, 0, 2, 0),
            ("m2", 2, 0, 2, 0),
            ("m3", 2, 0, 0, 2),
            ("m4", 2, 0, 0, 0),
        ]
    );
    assert!(stats[3].total_latency >= Duration::from_millis(100));
    assert_eq!(
        stats.iter().map(|s| s.failures()).collect::<Vec<_>>(),
        [2, 2, 2, 0, 0],
        "failures are errors and panics; timeouts are apart"
    );

    let lines = warnings.lines();
    for (module, what) in [
        ("m0", "database down"),
        ("m1", "panicked"),
        ("m2", "panicked"),
        ("m3", "deadline"),
    ] {
        let logged = lines
            .iter()
            .filter(|l| l.contains(&format!("module={module} ")) && l.contains(what))
            .count();
        assert_eq!(
            logged, 2,
            "one warning per failed call of {module}: {lines:#?}"
        );
    }
    assert!(
        !lines.iter().any(|l| l.contains("module=m4 ")),
        "{lines:#?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_module_may_choose_its_deadline() {
    // m0 asks for 50 ms itself; it times out quickly rather than after the
    // default second.
    let router = load_with(
        vec![(faulty(Fault::Sleep), Some(Duration::from_millis(50)))],
        None,
    );
    let started = std::time::Instant::now();
    assert_eq!(
        router.get_interested_users(&uid("@me:test")).await,
        Interest::None
    );
    assert!(started.elapsed() < Duration::from_millis(900));
    assert_eq!(router.stats()[0].timeouts, 1);
}

#[tokio::test(flavor = "current_thread")]
async fn the_operators_deadline_overrides_the_modules() {
    // The module asks for 10 s; the operator's 50 ms wins.
    let router = load_with(
        vec![(faulty(Fault::Sleep), Some(Duration::from_secs(10)))],
        Some(Duration::from_millis(50)),
    );
    let started = std::time::Instant::now();
    assert!(router
        .get_users_for_states(&[online("@a:test")])
        .await
        .is_empty());
    assert!(started.elapsed() < Duration::from_millis(900));
    assert_eq!(router.stats()[0].timeouts, 1);
}

#[tokio::test(flavor = "current_thread")]
async fn the_default_deadline_is_one_second() {
    let router = load(vec![faulty(Fault::Sleep)]);
    let started = std::time::Instant::now();
    assert_eq!(
        router.get_interested_users(&uid("@me:test")).await,
        Interest::None
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(990) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    assert_eq!(router.stats()[0].timeouts, 1);
}
