//! Synapse's Python presence router modules in the Python host, over
//! real HTTP with a real interpreter (`python3` on `PATH`, or
//! `PRESENCED_TEST_PYTHON`). The fixtures are in `python/fixtures/`;
//! `custom_router.py` is the module API docs' example, verbatim.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use presenced_server::config::presence::ModuleConfig;
use presenced_server::config::Config;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, TestApp, SECRET};
use crate::ops::{eventually, generous, get_presence, presence_of, put_presence, sync};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/fixtures")
}

fn python() -> PathBuf {
    std::env::var_os("PRESENCED_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("python3"))
}

fn module(name: &str, config: Value) -> ModuleConfig {
    ModuleConfig {
        config,
        ..ModuleConfig::new(name)
    }
}

/// example.com (the docs example's server), the fixtures on `sys.path`.
fn python_server(config: &mut Config) {
    generous(config);
    config.server_name = "example.com".try_into().unwrap();
    config.python_modules.python = Some(python());
    config.python_modules.path = vec![fixtures()];
    config.enable_metrics = true;
}

fn with_modules(modules: Vec<ModuleConfig>) -> impl FnOnce(&mut Config) {
    move |config| {
        python_server(config);
        config.modules = modules;
    }
}

async fn metrics(app: &TestApp) -> String {
    app.metrics_text().await
}

/// The value of one sample line of `/metrics`, 0 when absent.
fn sample(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn the_docs_example_routes_bob_to_alice_over_sync_and_get() {
    let app = spawn_app_with(with_modules(vec![module(
        "custom_router.CustomPresenceRouter",
        json!({}),
    )]))
    .await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    put_presence(
        &app,
        &bob,
        json!({"presence": "online", "status_msg": "routed"}),
    )
    .await;

    eventually(|| async {
        presence_of(
            &sync(&app, &alice, "set_presence=offline").await,
            &bob.user_id,
        )
        .is_some_and(|c| c["status_msg"] == "routed")
    })
    .await;
    let (status, body) = get_presence(&app, &alice, &bob.user_id).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["presence"], "online");
    // carol is not routed: no shared room, no answer.
    assert_eq!(get_presence(&app, &carol, &bob.user_id).await.0, 403);
    assert!(presence_of(
        &sync(&app, &carol, "set_presence=offline").await,
        &bob.user_id
    )
    .is_none());

    // The admin explanation names the Python module like any other.
    let (status, body) = app
        .get(
            &format!(
                "/_presenced/admin/v1/visibility?observer={}&target={}",
                crate::helpers::enc(&alice.user_id),
                crate::helpers::enc(&bob.user_id)
            ),
            Some(SECRET),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["visible"], true, "{body}");
    assert_eq!(
        body["modules"][0]["module"], "custom_router.CustomPresenceRouter",
        "{body}"
    );
}

#[tokio::test]
async fn a_legacy_router_and_an_all_users_router_load_in_synapse_order() {
    let app = spawn_app_with(|config: &mut Config| {
        python_server(config);
        config.modules = vec![module(
            "all_users_router.AllUsersRouter",
            json!({"monitors": ["@monitor:example.com"]}),
        )];
        config.presence.presence_router = Some(module(
            "legacy_router.LegacyRouter",
            json!({"routes": {"@dave:example.com": ["@erin:example.com"]}}),
        ));
    })
    .await;
    let monitor = app.register("monitor").await;
    let dave = app.register("dave").await;
    let erin = app.register("erin").await;
    let frank = app.register("frank").await;
    put_presence(&app, &dave, json!({"presence": "online"})).await;
    put_presence(&app, &frank, json!({"presence": "unavailable"})).await;

    // The monitor sees everyone (PRESENCE_ALL_USERS); erin sees dave
    // through the legacy router's routes; frank sees neither.
    eventually(|| async {
        let body = sync(&app, &monitor, "set_presence=offline").await;
        presence_of(&body, &dave.user_id).is_some() && presence_of(&body, &frank.user_id).is_some()
    })
    .await;
    assert_eq!(get_presence(&app, &monitor, &frank.user_id).await.0, 200);
    assert_eq!(get_presence(&app, &erin, &dave.user_id).await.0, 200);
    assert_eq!(get_presence(&app, &erin, &frank.user_id).await.0, 403);
    assert_eq!(get_presence(&app, &frank, &dave.user_id).await.0, 403);

    let text = metrics(&app).await;
    assert!(
        sample(
            &text,
            "presenced_python_module_calls_total{module=\"legacy_router.LegacyRouter\"}"
        ) >= 1.0,
        "{text}"
    );
}

/// Start-up errors name the module and carry Python's own words.
#[test]
fn start_up_fails_clearly_for_a_broken_module_or_interpreter() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let start = |tweak: &dyn Fn(&mut Config)| -> String {
        let dir = tempfile::tempdir().unwrap();
        let mut config = crate::helpers::test_config(&dir);
        python_server(&mut config);
        tweak(&mut config);
        match presenced_server::process::startup::build_state(config) {
            Ok(_) => panic!("start-up should fail"),
            Err(e) => e.to_string(),
        }
    };

    let message = start(&|c| {
        c.modules = vec![module("imports_storage.ImportsStorage", json!({}))];
    });
    assert!(
        message.contains("imports_storage.ImportsStorage"),
        "{message}"
    );
    assert!(message.contains("synapse.storage"), "{message}");

    let message = start(&|c| {
        c.modules = vec![module("no_such_package.Router", json!({}))];
    });
    assert!(
        message.contains("No module named 'no_such_package'"),
        "{message}"
    );

    let message = start(&|c| {
        c.presence.presence_router = Some(module(
            "legacy_router.LegacyRouter",
            json!({"routes": "not a mapping"}),
        ));
    });
    assert!(message.contains("legacy_router.LegacyRouter"), "{message}");
    assert!(message.contains("parse_config"), "{message}");

    let message = start(&|c| {
        c.modules = vec![module("half_registered.HalfRegistered", json!({}))];
    });
    assert!(message.contains("get_users_for_states"), "{message}");
    assert!(message.contains("get_interested_users"), "{message}");

    let message = start(&|c| {
        c.python_modules.python = Some("/nonexistent/bin/python".into());
        c.modules = vec![module("custom_router.CustomPresenceRouter", json!({}))];
    });
    assert!(message.contains("/nonexistent/bin/python"), "{message}");
    assert!(message.contains("PRESENCED_PYTHON"), "{message}");

    // An interpreter older than 3.10: a stand-in that answers the way the
    // boot snippet does on one (no old CPython is installed here).
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("python3.8");
    std::fs::write(
        &old,
        "#!/bin/sh\necho 'presenced: Python 3.10 or newer is needed; /usr/bin/python3.8 is 3.8.10' >&2\nexit 3\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).unwrap();
    let message = start(&|c| {
        c.python_modules.python = Some(old.clone());
        c.modules = vec![module("custom_router.CustomPresenceRouter", json!({}))];
    });
    assert!(message.contains("3.10 or newer"), "{message}");
    assert!(message.contains("3.8.10"), "{message}");

    // And real old interpreters, where the machine has them (pyenv).
    let pyenv = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".pyenv/versions"))
        .and_then(|d| std::fs::read_dir(d).ok());
    for version in pyenv.into_iter().flatten().flatten() {
        let name = version.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("2.") || name.starts_with("3.9.") || name.starts_with("3.8.")) {
            continue;
        }
        let interpreter = version.path().join("bin/python");
        let message = start(&|c| {
            c.python_modules.python = Some(interpreter.clone());
            c.modules = vec![module("custom_router.CustomPresenceRouter", json!({}))];
        });
        assert!(message.contains("3.10 or newer"), "{name}: {message}");
        assert!(message.contains(&name), "{name}: {message}");
    }
}

/// What a misbehaving module must leave working: dave and erin share a
/// room, so dave's presence reaches erin whatever the module does, and
/// bob's reaches alice through the docs example in the same host once the
/// host serves again.
struct Scenario {
    app: TestApp,
    trigger: crate::helpers::User,
    alice: crate::helpers::User,
    bob: crate::helpers::User,
    dave: crate::helpers::User,
    erin: crate::helpers::User,
}

async fn scenario(class: &str, tweak: impl FnOnce(&mut Config)) -> Scenario {
    let class = format!("misbehaving.{class}");
    let app = spawn_app_with(|config: &mut Config| {
        python_server(config);
        config.python_modules.deadline_ms = 300;
        config.modules = vec![
            module(&class, json!({"trigger": "@trigger:example.com"})),
            module("custom_router.CustomPresenceRouter", json!({})),
        ];
        tweak(config);
    })
    .await;
    let trigger = app.register("trigger").await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let dave = app.register("dave").await;
    let erin = app.register("erin").await;
    crate::ops::shared_room(&app, &dave, &erin).await;
    Scenario {
        app,
        trigger,
        alice,
        bob,
        dave,
        erin,
    }
}

impl Scenario {
    /// The trigger user syncs and sets presence: both callbacks misbehave.
    async fn provoke(&self) {
        let app = &self.app;
        let _ = app
            .get(
                "/_matrix/client/v3/sync?timeout=0&set_presence=offline",
                Some(&self.trigger.token),
            )
            .await;
        put_presence(app, &self.trigger, json!({"presence": "online"})).await;
    }

    /// Presence between room members keeps flowing while the module
    /// misbehaves.
    async fn room_presence_flows(&self, msg: &str) {
        put_presence(
            &self.app,
            &self.dave,
            json!({"presence": "online", "status_msg": msg}),
        )
        .await;
        eventually(|| async {
            presence_of(
                &sync(&self.app, &self.erin, "set_presence=offline").await,
                &self.dave.user_id,
            )
            .is_some_and(|c| c["status_msg"] == msg)
        })
        .await;
    }

    /// Waits until the docs example in the same host routes again.
    async fn routing_recovers(&self, msg: &str) {
        put_presence(
            &self.app,
            &self.bob,
            json!({"presence": "online", "status_msg": msg}),
        )
        .await;
        eventually(|| async {
            // A PUT routed while the host was down reached nobody extra;
            // a fresh one is routed by the new host.
            if get_presence(&self.app, &self.alice, &self.bob.user_id)
                .await
                .0
                != 200
            {
                return false;
            }
            put_presence(
                &self.app,
                &self.bob,
                json!({"presence": "online", "status_msg": msg}),
            )
            .await;
            presence_of(
                &sync(&self.app, &self.alice, "set_presence=offline&timeout=200").await,
                &self.bob.user_id,
            )
            .is_some_and(|c| c["status_msg"] == msg)
        })
        .await;
    }

    async fn counter(&self, line: &str) -> f64 {
        sample(&metrics(&self.app).await, line)
    }
}

fn errors_line(class: &str, kind: &str) -> String {
    format!(
        "presenced_python_module_errors_total{{module=\"misbehaving.{class}\",kind=\"{kind}\"}}"
    )
}

/// Misbehaviours answered inside the host: the call fails, the host
/// keeps serving.
#[tokio::test]
async fn wrong_answers_and_exceptions_are_that_calls_error() {
    for (class, kind) in [
        ("Raises", "exception"),
        ("ReturnsList", "wrong_type"),
        ("ReturnsFrozenset", "wrong_type"),
        ("ReturnsBareStr", "wrong_type"),
        ("AwaitsForever", "deadline"),
    ] {
        let s = scenario(class, |_| {}).await;
        let provoked = Instant::now();
        s.provoke().await;
        s.room_presence_flows(class).await;
        let line = errors_line(class, kind);
        eventually(|| async { s.counter(&line).await >= 1.0 }).await;
        let counted = provoked.elapsed();
        s.routing_recovers(class).await;
        eprintln!(
            "{class}: {kind} counted {counted:?} after the misbehaviour, routing checked at {:?}",
            provoked.elapsed()
        );
        assert_eq!(
            s.counter("presenced_python_host_restarts_total{reason=\"exited\"}")
                .await
                + s.counter("presenced_python_host_restarts_total{reason=\"stalled\"}")
                    .await,
            0.0,
            "{class}: the host keeps running"
        );
    }
}

/// Misbehaviours that take the host down: it is killed (or found dead)
/// and restarted, and presence flows meanwhile.
#[tokio::test]
async fn a_crashed_or_stuck_host_is_restarted_and_presence_flows() {
    for (class, reason) in [
        ("ExitsProcess", "exited"),
        ("Segfaults", "exited"),
        ("BusyLoops", "stalled"),
        ("SleepsInC", "stalled"),
    ] {
        let s = scenario(class, |_| {}).await;
        let provoked = Instant::now();
        s.provoke().await;
        s.room_presence_flows(class).await;
        let line = format!("presenced_python_host_restarts_total{{reason=\"{reason}\"}}");
        eventually(|| async { s.counter(&line).await >= 1.0 }).await;
        let killed = provoked.elapsed();
        s.routing_recovers(class).await;
        // The figures in RELIABILITY.md come from these lines.
        eprintln!(
            "{class}: host restart counted {killed:?} after the misbehaviour, routing again after {:?}",
            provoked.elapsed()
        );
    }
}

#[tokio::test]
async fn a_leaking_host_is_restarted_at_its_memory_cap() {
    let s = scenario("LeaksMemory", |c| c.python_modules.max_rss_mb = 256).await;
    let provoked = Instant::now();
    s.provoke().await;
    s.room_presence_flows("leak").await;
    eventually(|| async {
        s.counter("presenced_python_host_restarts_total{reason=\"memory\"}")
            .await
            >= 1.0
    })
    .await;
    let killed = provoked.elapsed();
    s.routing_recovers("leak").await;
    eprintln!(
        "LeaksMemory: host restart counted {killed:?} after the misbehaviour, routing again after {:?}",
        provoked.elapsed()
    );
}

#[tokio::test]
async fn module_api_calls_from_python_reach_presence() {
    let app = spawn_app_with(with_modules(vec![module(
        "calls_module_api.CallsModuleApi",
        json!({
            "on_interest_of": "@a:example.com",
            "send_to": ["@c:example.com"],
            "set": {"@b:example.com": ["busy", "in a meeting"]},
        }),
    )]))
    .await;
    let a = app.register("a").await;
    let b = app.register("b").await;
    let c = app.register("c").await;
    let d = app.register("d").await;
    crate::ops::shared_room(&app, &c, &d).await;
    put_presence(
        &app,
        &d,
        json!({"presence": "online", "status_msg": "here"}),
    )
    .await;
    // c has seen d's presence; an incremental sync from here shows it
    // again only if something sends c a full presence snapshot.
    let deadline = Instant::now() + Duration::from_secs(20);
    let since = loop {
        let body = sync(&app, &c, "set_presence=offline&timeout=0").await;
        if presence_of(&body, &d.user_id).is_some() {
            break body["next_batch"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "c never saw d");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let quiet = sync(
        &app,
        &c,
        &format!("set_presence=offline&timeout=0&since={since}"),
    )
    .await;
    assert!(presence_of(&quiet, &d.user_id).is_none(), "{quiet}");

    // a's sync asks get_interested_users(a): the module then calls
    // send_local_online_presence_to([c]) and sets b busy.
    let _ = sync(&app, &a, "set_presence=offline&timeout=0").await;
    eventually(|| async {
        let (status, body) = get_presence(&app, &b, &b.user_id).await;
        status == 200 && body["presence"] == "org.matrix.msc3026.busy"
    })
    .await;
    let (_, body) = get_presence(&app, &b, &b.user_id).await;
    assert_eq!(body["status_msg"], "in a meeting", "{body}");
    let full = sync(
        &app,
        &c,
        &format!("set_presence=offline&timeout=0&since={since}"),
    )
    .await;
    assert_eq!(
        presence_of(&full, &d.user_id).map(|p| p["status_msg"].clone()),
        Some(json!("here")),
        "{full}"
    );
}

/// A virtualenv with a third-party package (attrs from PyPI), made once
/// under cargo's target tmp dir and reused.
fn venv_python() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("python-modules-venv");
    let venv_python = venv.join("bin/python");
    let has_attrs = || {
        std::process::Command::new(&venv_python)
            .args(["-c", "import attrs"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has_attrs() {
        let run = |cmd: &mut std::process::Command| {
            let out = cmd.output().expect("run python");
            assert!(
                out.status.success(),
                "{cmd:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(std::process::Command::new(python())
            .args(["-m", "venv"])
            .arg(&venv));
        run(std::process::Command::new(&venv_python).args(["-m", "pip", "install", "-q", "attrs"]));
    }
    venv_python
}

#[tokio::test]
async fn a_module_with_a_dependency_runs_in_its_virtualenv() {
    let python = tokio::task::spawn_blocking(venv_python).await.unwrap();
    let app = spawn_app_with(|config: &mut Config| {
        python_server(config);
        config.python_modules.python = Some(python);
        config.modules = vec![module("uses_attrs.UsesAttrs", json!({}))];
    })
    .await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    put_presence(&app, &bob, json!({"presence": "online"})).await;
    assert_eq!(get_presence(&app, &alice, &bob.user_id).await.0, 200);
}

/// `send_local_online_presence_to` from Python with a remote user queues
/// the local states that user may see for its server (the outbox is read
/// back; nothing listens at the destination). A built-in router and a
/// Python module share one `modules:` list.
#[tokio::test]
async fn send_local_online_presence_to_from_python_reaches_the_federation_outbox() {
    const NOWHERE: &str = "127.0.0.1:1";
    let bob = format!("@bob:{NOWHERE}");
    let app = spawn_app_with(|config: &mut Config| {
        python_server(config);
        config.federation.destination_min_retry_interval = Duration::from_secs(3600);
        config.federation.destination_max_retry_interval = Duration::from_secs(3600);
        config.modules = vec![
            module(
                "presenced.routers.StaticRoutes",
                json!({"routes": [{"receiver": bob, "senders": ["@alice:example.com"]}]}),
            ),
            module(
                "calls_module_api.CallsModuleApi",
                json!({"on_interest_of": "@a:example.com", "send_to": [bob]}),
            ),
        ];
    })
    .await;
    let destination: ruma_common::OwnedServerName = NOWHERE.try_into().unwrap();
    let pending = || {
        let destination = destination.clone();
        let state = app.state.clone();
        async move {
            state
                .db(move |s| s.pending_presence(&destination, 100))
                .await
                .unwrap()
        }
    };
    let alice = app.register("alice").await;
    let a = app.register("a").await;
    put_presence(
        &app,
        &alice,
        json!({"presence": "online", "status_msg": "hi"}),
    )
    .await;
    // The route queues alice's state on its own; clear it as if bob's
    // server had acknowledged it.
    eventually(|| async { !pending().await.is_empty() }).await;
    let acked: Vec<_> = pending()
        .await
        .into_iter()
        .map(|e| (e.state.user_id, e.seq))
        .collect();
    let d = destination.clone();
    app.state
        .db(move |s| s.remove_sent_presence(&d, &acked))
        .await
        .unwrap();
    assert!(pending().await.is_empty());

    // a's sync makes the module call send_local_online_presence_to([bob]).
    let _ = sync(&app, &a, "set_presence=offline&timeout=0").await;
    eventually(|| async { !pending().await.is_empty() }).await;
    let entries = pending().await;
    assert_eq!(entries[0].state.user_id.as_str(), "@alice:example.com");
    assert_eq!(entries[0].state.status_msg.as_deref(), Some("hi"));
}

/// An interpreter with matrix-synapse installed, from
/// `PRESENCED_TEST_SYNAPSE_PYTHON` (scripts/python-versions makes one with
/// Synapse 1.163 from PyPI and sets it, so CI never skips); without it the
/// test says it is skipped and passes.
fn synapse_python(test: &str) -> Option<PathBuf> {
    let python = std::env::var_os("PRESENCED_TEST_SYNAPSE_PYTHON").map(PathBuf::from);
    if python.is_none() {
        eprintln!(
            "skipped {test}: set PRESENCED_TEST_SYNAPSE_PYTHON to a Python with matrix-synapse \
             (scripts/python-versions makes one)"
        );
    }
    python
}

/// A new-style and a legacy router written against Synapse's module API
/// (imports from `synapse.module_api`, `.types`, `.api.*`, `.config`,
/// `.events.presence_router`, `.handlers.presence`; routing through
/// `run_in_background` and `defer_to_thread`) route over HTTP. `synapse`
/// is which `synapse` the new-style fixture must find, or it refuses to
/// start.
async fn routers_written_against_synapse_route(python: PathBuf, synapse: &str) {
    let app = spawn_app_with(|config: &mut Config| {
        python_server(config);
        config.python_modules.python = Some(python);
        config.modules = vec![module(
            "synapse_surface.SynapseSurfaceRouter",
            json!({"routes": {"@bob:example.com": ["@alice:example.com"]}, "synapse": synapse}),
        )];
        config.presence.presence_router = Some(module(
            "legacy_synapse_router.LegacySynapseRouter",
            json!({"monitors": ["@monitor:example.com"]}),
        ));
    })
    .await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let monitor = app.register("monitor").await;
    put_presence(
        &app,
        &bob,
        json!({"presence": "online", "status_msg": "routed"}),
    )
    .await;
    put_presence(&app, &carol, json!({"presence": "unavailable"})).await;

    // alice gets bob's presence (the new-style router, its answer computed
    // in a thread), the monitor everyone's (the legacy one's ALL_USERS),
    // carol nobody's.
    eventually(|| async {
        presence_of(
            &sync(&app, &alice, "set_presence=offline").await,
            &bob.user_id,
        )
        .is_some_and(|c| c["status_msg"] == "routed")
    })
    .await;
    eventually(|| async {
        let body = sync(&app, &monitor, "set_presence=offline").await;
        presence_of(&body, &bob.user_id).is_some() && presence_of(&body, &carol.user_id).is_some()
    })
    .await;
    assert_eq!(get_presence(&app, &alice, &bob.user_id).await.0, 200);
    assert_eq!(get_presence(&app, &alice, &carol.user_id).await.0, 403);
    assert_eq!(get_presence(&app, &monitor, &carol.user_id).await.0, 200);
    assert_eq!(get_presence(&app, &carol, &bob.user_id).await.0, 403);
}

#[tokio::test]
async fn routers_written_against_synapse_route_on_the_stand_in() {
    routers_written_against_synapse_route(python(), "stand-in").await;
}

#[tokio::test]
async fn with_a_real_synapse_routers_written_against_it_route() {
    let Some(python) = synapse_python("with_a_real_synapse_routers_written_against_it_route")
    else {
        return;
    };
    routers_written_against_synapse_route(python, "real").await;
}

/// `parse_config` raising `synapse.config.ConfigError` stops start-up
/// with the module's name, the key and the module's words first.
fn config_error_stops_start_up(python: PathBuf) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::test_config(&dir);
    python_server(&mut config);
    config.python_modules.python = Some(python);
    config.modules = vec![module(
        "synapse_surface.SynapseSurfaceRouter",
        json!({"routes": ["@bob:example.com"]}),
    )];
    let message = match presenced_server::process::startup::build_state(config) {
        Ok(_) => panic!("start-up should fail"),
        Err(e) => e.to_string(),
    };
    assert!(
        message.contains(
            "`synapse_surface.SynapseSurfaceRouter` failed to load (parse_config):\n\
             invalid config at routes: routes must map a sender to a list of receivers"
        ),
        "{message}"
    );
    assert!(message.contains("ConfigError"), "{message}");
}

#[test]
fn a_config_error_from_parse_config_stops_start_up_on_the_stand_in() {
    config_error_stops_start_up(python());
}

#[test]
fn with_a_real_synapse_a_config_error_from_parse_config_stops_start_up() {
    if let Some(python) =
        synapse_python("with_a_real_synapse_a_config_error_from_parse_config_stops_start_up")
    {
        config_error_stops_start_up(python);
    }
}
