//! Client request bodies: the first byte picks the endpoint (presence PUT,
//! filter upload, login, register, createRoom), the rest is the body, sent
//! as the fuzz user through the real router.

#![no_main]

use axum::http::Method;
use libfuzzer_sys::fuzz_target;
use presenced_fuzz::{check_response, Harness};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let h = Harness::get();
    let (method, path, authenticated) = match pick % 5 {
        0 => (
            Method::PUT,
            format!("/_matrix/client/v3/presence/{}/status", h.user_id),
            true,
        ),
        1 => (
            Method::POST,
            format!("/_matrix/client/v3/user/{}/filter", h.user_id),
            true,
        ),
        2 => (Method::POST, "/_matrix/client/v3/login".to_owned(), false),
        3 => (
            Method::POST,
            "/_matrix/client/v3/register".to_owned(),
            false,
        ),
        _ => (
            Method::POST,
            "/_matrix/client/v3/createRoom".to_owned(),
            true,
        ),
    };
    let bearer = h.bearer();
    let headers: &[(&str, &[u8])] = if authenticated {
        &[("authorization", bearer.as_bytes())]
    } else {
        &[]
    };
    let Some((status, response)) = h.call(method.clone(), &path, headers, body.to_vec()) else {
        return;
    };
    check_response(&format!("{method} {path}"), status, &response);
});
