//! Federation transaction bodies (`PUT /_matrix/federation/v1/send/{txnId}`)
//! with presence EDUs, correctly signed by the one peer whose keys the
//! server knows, so that the body gets past the X-Matrix check into the
//! handler and `presence_edu`. Inputs that are not canonical JSON cannot be
//! signed; they go with a signature over an empty object (and must be
//! refused cleanly).

#![no_main]

use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::Method;
use libfuzzer_sys::fuzz_target;
use presenced_fuzz::{check_response, Harness, US};
use serde_json::Value;

static TXN: AtomicU64 = AtomicU64::new(0);

fuzz_target!(|data: &[u8]| {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let h = Harness::get();
    // Odd first byte: a fresh transaction ID; even: one seen before (the
    // deduplication path).
    let txn_id = if flags % 2 == 1 {
        TXN.fetch_add(1, Ordering::Relaxed).to_string()
    } else {
        "repeated".to_owned()
    };
    let path = format!("/_matrix/federation/v1/send/{txn_id}");
    let us = <&ruma_common::ServerName>::try_from(US).unwrap();
    let signed_over = serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
    let authorization = h
        .peer_key
        .x_matrix_authorization(&h.peer_name, us, "PUT", &path, Some(&signed_over))
        .or_else(|_| {
            h.peer_key.x_matrix_authorization(
                &h.peer_name,
                us,
                "PUT",
                &path,
                Some(&serde_json::json!({})),
            )
        })
        .expect("an empty object signs");
    let Some((status, response)) = h.call(
        Method::PUT,
        &path,
        &[("authorization", authorization.as_bytes())],
        body.to_vec(),
    ) else {
        return;
    };
    check_response(&format!("PUT {path}"), status, &response);
});
