//! The `Authorization` header of federation requests (X-Matrix, parsed by
//! ruma as the server uses it, then the destination, whitelist, key lookup
//! and signature checks), on a fixed transaction.

#![no_main]

use axum::http::Method;
use libfuzzer_sys::fuzz_target;
use presenced_fuzz::{check_response, Harness};

const BODY: &[u8] = br#"{"origin":"peer.fuzz","origin_server_ts":1,"pdus":[],"edus":[]}"#;

fuzz_target!(|data: &[u8]| {
    let h = Harness::get();
    let path = "/_matrix/federation/v1/send/x";
    let Some((status, response)) =
        h.call(Method::PUT, path, &[("authorization", data)], BODY.to_vec())
    else {
        return;
    };
    check_response(&format!("PUT {path}"), status, &response);
});
