//! Federation, inbound side: the key server and signed transactions
//! (`PUT /_matrix/federation/v1/send/{txnId}`) from a test peer whose key
//! is made in the test and reached through an injected key fetcher.

use std::collections::BTreeMap;

use presenced_server::federation::signing::to_canonical_object;
use presenced_server::federation::ServerSigningKey;
use reqwest::StatusCode;
use ruma_common::serde::Base64;

use crate::helpers::spawn_app_with;

#[tokio::test]
async fn key_server_answers_self_signed_keys_valid_in_the_future() {
    let key_dir = tempfile::tempdir().unwrap();
    let key_path = key_dir.path().join("test.local.signing.key");
    let path = key_path.clone();
    let app = spawn_app_with(move |c| c.signing_key_path = Some(path)).await;
    let (status, body) = app.get("/_matrix/key/v2/server", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["server_name"], "test.local");
    assert_eq!(body["old_verify_keys"], serde_json::json!({}));
    let now = presenced_server::ids::now_ms();
    let valid_until = body["valid_until_ts"].as_u64().unwrap();
    assert!(valid_until > now + 3_600_000, "{valid_until} vs {now}");

    // The key listed is the one in the generated key file.
    let stored = ServerSigningKey::load_or_generate(&key_path).unwrap();
    let verify_keys = body["verify_keys"].as_object().unwrap();
    assert_eq!(verify_keys.len(), 1);
    assert_eq!(
        verify_keys[stored.key_id()]["key"],
        stored.public_key_base64()
    );

    // The response verifies with ruma against the key it lists.
    let public_keys = BTreeMap::from([(
        "test.local".to_owned(),
        BTreeMap::from([(
            stored.key_id().to_owned(),
            Base64::parse(stored.public_key_base64()).unwrap(),
        )]),
    )]);
    let object = to_canonical_object(body.clone()).unwrap();
    ruma_signatures::verify_json(&public_keys, &object).unwrap();

    // The deprecated by-key-ID form answers the same keys.
    let (status, by_id) = app
        .get(&format!("/_matrix/key/v2/server/{}", stored.key_id()), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(by_id["verify_keys"], body["verify_keys"]);
}

#[tokio::test]
async fn signing_key_is_generated_in_the_data_dir_and_kept() {
    let app = spawn_app_with(|_| {}).await;
    let path = app._dir.path().join("test.local.signing.key");
    let on_disk = ServerSigningKey::load_or_generate(&path).unwrap();
    assert_eq!(on_disk.key_id(), app.state.signing_key.key_id());
    assert_eq!(
        on_disk.public_key_base64(),
        app.state.signing_key.public_key_base64()
    );
}
