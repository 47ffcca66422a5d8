//! The `presenced` binary's sub-commands.

use std::process::Command;

use presenced_server::config::EXAMPLE_CONFIG;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::spawn_app_with;

fn presenced() -> Command {
    Command::new(env!("CARGO_BIN_EXE_presenced"))
}

#[test]
fn generate_config_prints_the_example() {
    let out = presenced().arg("generate-config").output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), EXAMPLE_CONFIG);
}

#[test]
fn bad_config_fails_start_up_with_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "server_name: example.org\npresence:\n  idle_timeout: soon\n",
    )
    .unwrap();
    let out = presenced().arg("--config").arg(&file).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("idle_timeout") && err.contains("line 3"),
        "{err}"
    );
}

#[tokio::test]
async fn register_user_then_log_in() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("presenced.yaml");
    let data = dir.path().join("data");
    std::fs::write(
        &file,
        format!(
            "server_name: test.local\ndata_dir: {}\npassword_hashing:\n  memory_kib: 64\n  iterations: 1\n  parallelism: 1\n",
            data.display()
        ),
    )
    .unwrap();
    let out = presenced()
        .args([
            "--config",
            file.to_str().unwrap(),
            "register-user",
            "--user",
            "admin",
            "--password",
            "pw",
            "--admin",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .contains("@admin:test.local"));

    // A server on the same data directory lets the new user in.
    let app = spawn_app_with(|c| c.data_dir = data.clone()).await;
    let login = json!({ "type": "m.login.password", "user": "admin", "password": "pw" });
    let (status, body) = app.post("/_matrix/client/v3/login", None, login).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
