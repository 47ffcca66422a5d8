//! Listeners: each serves the resources it names (Synapse's `resources:`),
//! and `tls: true` listeners speak HTTPS with the configured certificate.
//! A test CA (rcgen) signs a `localhost` certificate; the client trusts
//! only that CA.

use std::path::PathBuf;

use presenced_server::config::Config;
use presenced_server::federation::tls;
use reqwest::StatusCode;
use serde_json::Value;
use tempfile::TempDir;

use crate::helpers::test_config;

/// A CA certificate and a `localhost` certificate + key it signed, as PEM.
pub(crate) struct Pem {
    pub(crate) ca: String,
    pub(crate) cert: String,
    pub(crate) key: String,
}

pub(crate) fn localhost_certificate() -> Pem {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    Pem {
        ca: ca.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

pub(crate) fn write(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

async fn get(client: &reqwest::Client, url: String) -> (StatusCode, Value) {
    let response = client.get(url).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn a_tls_federation_listener_and_a_plain_client_listener_serve_their_resources() {
    let dir = tempfile::tempdir().unwrap();
    let pem = localhost_certificate();
    let (cert, key) = (
        write(&dir, "cert.pem", &pem.cert),
        write(&dir, "key.pem", &pem.key),
    );
    let config: Config = test_config(&dir);
    let (state, receivers, _) = presenced_server::process::startup::build_state(config).unwrap();
    drop(presenced_server::process::feeds::spawn(&state, receivers));

    let tls_config = tls::server_config(&cert, &key).unwrap();
    let federation = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let federation_port = federation.local_addr().unwrap().port();
    tokio::spawn(presenced_server::run_listener(
        federation,
        Some(tls_config),
        &["federation"],
        state.clone(),
        std::future::pending(),
    ));
    let client_api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client_base = format!("http://{}", client_api.local_addr().unwrap());
    tokio::spawn(presenced_server::run_listener(
        client_api,
        None,
        &["client"],
        state.clone(),
        std::future::pending(),
    ));

    let trusting = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pem.ca.as_bytes()).unwrap())
        .build()
        .unwrap();
    let tls_base = format!("https://localhost:{federation_port}");
    let (status, keys) = get(&trusting, format!("{tls_base}/_matrix/key/v2/server")).await;
    assert_eq!(status, StatusCode::OK, "{keys}");
    assert_eq!(keys["server_name"], "test.local");
    let (status, version) = get(
        &trusting,
        format!("{tls_base}/_matrix/federation/v1/version"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{version}");
    // No client API on the federation listener; /health everywhere.
    let (status, body) = get(&trusting, format!("{tls_base}/_matrix/client/versions")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["errcode"], "M_UNRECOGNIZED");
    let health = trusting
        .get(format!("{tls_base}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    // The client listener: client API, no federation.
    let plain = reqwest::Client::new();
    let (status, body) = get(&plain, format!("{client_base}/_matrix/client/versions")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = get(&plain, format!("{client_base}/_matrix/key/v2/server")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["errcode"], "M_UNRECOGNIZED");

    // The TLS is real: a client that does not trust the CA cannot connect,
    // and plain HTTP to the TLS port gets no HTTP answer.
    let untrusting = reqwest::Client::builder().use_rustls_tls().build().unwrap();
    assert!(untrusting
        .get(format!("{tls_base}/health"))
        .send()
        .await
        .is_err());
    assert!(plain
        .get(format!("http://127.0.0.1:{federation_port}/health"))
        .send()
        .await
        .is_err());
}

#[test]
fn a_tls_listener_needs_a_certificate_and_a_key() {
    let yaml =
        "listeners:\n  - port: 8448\n    tls: true\n    resources:\n      - names: [federation]\n";
    let err = Config::from_yaml(yaml, "test.yaml", Vec::new())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("listeners[0].tls") && err.contains("tls_certificate_path"),
        "{err}"
    );
    let with_files =
        format!("{yaml}tls_certificate_path: /etc/cert.pem\ntls_private_key_path: /etc/key.pem\n");
    let config = Config::from_yaml(&with_files, "test.yaml", Vec::new()).unwrap();
    assert!(config.listeners[0].tls);
    assert!(config.listeners[0].serves("federation"));
    assert!(!config.listeners[0].serves("client"));
}

#[test]
fn unreadable_tls_files_are_reported_with_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let empty = write(&dir, "empty.pem", "");
    let missing = dir.path().join("missing.pem");
    let err = tls::server_config(&empty, &missing)
        .unwrap_err()
        .to_string();
    assert!(err.contains("empty.pem"), "{err}");
    let pem = localhost_certificate();
    let cert = write(&dir, "cert.pem", &pem.cert);
    let err = tls::server_config(&cert, &missing).unwrap_err().to_string();
    assert!(err.contains("missing.pem"), "{err}");
}
