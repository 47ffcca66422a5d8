//! `/sync` query strings: `since` tokens, inline and stored filters,
//! `set_presence`, `full_state`, as the fuzz user. Any `timeout` the input
//! carries is replaced by `timeout=0` so that no input long-polls.

#![no_main]

use axum::http::Method;
use libfuzzer_sys::fuzz_target;
use presenced_fuzz::{check_response, Harness};

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let h = Harness::get();
    let mut kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or_default();
            let decoded: String = form_urlencoded::parse(key.as_bytes())
                .map(|(k, _)| k.into_owned())
                .collect();
            decoded != "timeout" && !pair.is_empty()
        })
        .collect();
    kept.push("timeout=0");
    // `@N` in the input stands for the Nth stored filter's ID.
    let mut query = kept.join("&");
    for (i, id) in h.filter_ids.iter().enumerate() {
        query = query.replace(&format!("@{i}"), id);
    }
    let path = format!("/_matrix/client/v3/sync?{query}");
    let bearer = h.bearer();
    let (status, response) = h.call(
        Method::GET,
        &path,
        &[("authorization", bearer.as_bytes())],
        Vec::new(),
    );
    check_response(&format!("GET {path}"), status, &response);
});
