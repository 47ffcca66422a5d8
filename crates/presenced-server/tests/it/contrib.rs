//! What `contrib/` ships next to the binary: the systemd unit (hardening
//! options present, and `systemd-analyze verify` clean where the tool
//! exists) and the Grafana dashboard (every metric its queries name is in
//! a real `/metrics` scrape).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use presenced_server::config::presence::ModuleConfig;
use serde_json::{json, Value};

use crate::helpers::spawn_app_with;
use crate::ops::{generous, put_presence, sync};

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative)
}

const UNIT: &str = "contrib/systemd/presenced.service";
const DASHBOARD: &str = "contrib/grafana/presenced-dashboard.json";

/// `Key=value` settings of the unit's `[Service]` section, in order.
fn service_settings(unit: &str) -> Vec<(String, String)> {
    let mut in_service = false;
    let mut settings = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service && !line.is_empty() && !line.starts_with('#') {
            let (key, value) = line.split_once('=').expect("Key=value");
            settings.push((key.to_owned(), value.to_owned()));
        }
    }
    settings
}

#[test]
fn systemd_unit_has_the_usual_hardening() {
    let unit = std::fs::read_to_string(repo_file(UNIT)).unwrap();
    let settings = service_settings(&unit);
    let value = |key: &str| {
        settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("{UNIT}: no {key}="))
    };
    for (key, expected) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictNamespaces", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("SystemCallFilter", "@system-service"),
        ("ReadWritePaths", "/var/lib/presenced"),
        ("StateDirectory", "presenced"),
    ] {
        assert_eq!(value(key), expected, "{UNIT}: {key}");
    }
    let nofile: u64 = value("LimitNOFILE").parse().unwrap();
    assert!(nofile >= 65_536, "{UNIT}: LimitNOFILE={nofile}");
    assert!(
        value("ExecStart").contains("presenced --config "),
        "{UNIT}: ExecStart runs presenced with a config"
    );
}

/// `systemd-analyze verify` on the unit, with `ExecStart` pointing at the
/// binary under test (verify checks that it is executable). Unknown keys
/// are only warnings for systemd, so any output fails too.
#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze is not installed: {UNIT} not verified");
        return;
    }
    let unit = std::fs::read_to_string(repo_file(UNIT)).unwrap();
    let unit = unit.replace("/usr/local/bin/presenced", env!("CARGO_BIN_EXE_presenced"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("presenced.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && output.trim().is_empty(),
        "systemd-analyze verify {UNIT}: {}\n{output}",
        out.status
    );
}

/// Metric names a PromQL expression selects: identifiers followed by a
/// label matcher (every selector in the dashboard has `{job=~"$job"}`), and
/// every `presenced_…` name wherever it appears.
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    let bytes = expr.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut i = 0;
    while i < bytes.len() {
        if is_ident(bytes[i]) && (i == 0 || !is_ident(bytes[i - 1])) {
            let start = i;
            while i < bytes.len() && is_ident(bytes[i]) {
                i += 1;
            }
            let name = &expr[start..i];
            if name.starts_with("presenced_") || bytes.get(i) == Some(&b'{') {
                into.insert(name.to_owned());
            }
        } else {
            i += 1;
        }
    }
}

/// Every string under an `expr`, `query` or `definition` key.
fn queries(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr" | "query" | "definition", Value::String(s)) => into.push(s.clone()),
                    _ => queries(v, into),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| queries(v, into)),
        _ => {}
    }
}

#[tokio::test]
async fn every_metric_in_the_grafana_dashboard_is_in_the_scrape() {
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(repo_file(DASHBOARD)).unwrap()).unwrap();
    let mut exprs = Vec::new();
    queries(&dashboard, &mut exprs);
    let mut wanted = BTreeSet::new();
    for expr in &exprs {
        metric_names(expr, &mut wanted);
    }
    assert!(wanted.len() >= 20, "dashboard names only {wanted:?}");

    // A server with metrics and a router module (per-module series exist
    // only for loaded modules), exercised a little.
    let app = spawn_app_with(|c| {
        generous(c);
        c.enable_metrics = true;
        c.modules
            .push(ModuleConfig::new("presenced.routers.ServerWide"));
    })
    .await;
    let alice = app.register("alice").await;
    put_presence(&app, &alice, json!({"presence": "online"})).await;
    sync(&app, &alice, "timeout=0").await;
    let text = app.metrics_text().await;
    let scraped: BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap())
        .collect();
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|name| !scraped.contains(name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{DASHBOARD} uses metrics that /metrics does not have: {missing:?}\nscraped: {scraped:?}"
    );
}
