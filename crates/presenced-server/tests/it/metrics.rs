//! `GET /metrics`: off by default, Prometheus text when enabled.

use std::collections::HashMap;

use presenced_server::config::presence::ModuleConfig;
use serde_json::json;

use crate::helpers::{assert_error, spawn_app, spawn_app_with, TestApp};
use crate::ops::{generous, put_presence, sync};

async fn scrape(app: &TestApp) -> String {
    let resp = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    resp.text().await.unwrap()
}

/// Parses the text format line by line: every line is `# HELP name text`,
/// `# TYPE name kind` or `name{labels} value`, every sample belongs to a
/// declared family. Returns `name{labels}` → value.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut families: HashMap<String, String> = HashMap::new();
    let mut samples = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP has a name and text");
            assert!(!help.is_empty(), "{line}");
            assert!(valid_name(name), "{line}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a name and kind");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(
                families.insert(name.to_owned(), kind.to_owned()).is_none(),
                "{line}"
            );
        } else {
            assert!(!line.starts_with('#') && !line.is_empty(), "{line:?}");
            let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
            let name = match series.split_once('{') {
                Some((name, labels)) => {
                    let labels = labels.strip_suffix('}').expect("labels close");
                    for pair in labels.split("\",").filter(|p| !p.is_empty()) {
                        let (key, v) = pair.split_once("=\"").expect("key=\"value\"");
                        assert!(valid_name(key), "{line}");
                        assert!(!v.trim_end_matches('"').contains('"'), "{line}");
                    }
                    name
                }
                None => series,
            };
            assert!(valid_name(name), "{line}");
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| families.contains_key(*f)))
                .unwrap_or(name);
            assert!(families.contains_key(family), "sample without TYPE: {line}");
            samples.insert(series.to_owned(), value);
        }
    }
    samples
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[tokio::test]
async fn metrics_are_off_by_default() {
    let app = spawn_app().await;
    assert_error(&app.get("/metrics", None).await, 404, "M_UNRECOGNIZED");
}

#[tokio::test]
async fn counters_move_and_the_text_parses() {
    let app = spawn_app_with(|c| {
        generous(c);
        c.enable_metrics = true;
        c.modules
            .push(ModuleConfig::new("presenced.routers.ServerWide"));
    })
    .await;
    let before = parse(&scrape(&app).await);
    assert_eq!(before["presenced_presence_put_total"], 0.0);
    assert_eq!(before["presenced_sync_duration_seconds_count"], 0.0);

    let alice = app.register("alice").await;
    let _bob = app.register("bob").await;
    put_presence(&app, &alice, json!({"presence": "online"})).await;
    sync(&app, &alice, "timeout=0").await;

    let after = parse(&scrape(&app).await);
    assert_eq!(after["presenced_presence_put_total"], 1.0);
    assert_eq!(after["presenced_sync_total"], 1.0);
    assert_eq!(after["presenced_sync_duration_seconds_count"], 1.0);
    assert_eq!(
        after["presenced_sync_duration_seconds_bucket{le=\"+Inf\"}"],
        1.0
    );
    assert!(after["presenced_sync_duration_seconds_sum"] > 0.0);
    assert!(
        after["presenced_presence_stream_position"] > before["presenced_presence_stream_position"]
    );
    assert!(after["presenced_presence_notified_changes_total"] >= 1.0);
    assert!(after["presenced_presence_local_users"] >= 1.0);
    assert!(after["presenced_presence_users_not_offline"] >= 1.0);
    for name in [
        "presenced_presence_users_tracked",
        "presenced_presence_rooms",
        "presenced_presence_timers",
        "presenced_presence_wakes_total",
        "presenced_federation_presence_states_sent_total",
        "presenced_federation_presence_accepted_total",
        "presenced_federation_presence_dropped_total",
        "presenced_router_batches_in_flight",
    ] {
        assert!(after.contains_key(name), "{name} missing");
    }
    // The router module was called (the sync asked for alice's interest).
    let module = "{module=\"presenced.routers.ServerWide\"}";
    assert!(after[&format!("presenced_router_calls_total{module}")] >= 1.0);
    for name in [
        "presenced_router_errors_total",
        "presenced_router_panics_total",
        "presenced_router_timeouts_total",
    ] {
        assert_eq!(after[&format!("{name}{module}")], 0.0, "{name}");
    }
    assert!(after.contains_key(&format!("presenced_router_latency_seconds_total{module}")));
}
