//! `/sync` query strings: `since` tokens, inline and stored filters,
//! `set_presence`, `full_state`, as the fuzz user. Bytes a client could
//! not put in a URI as they are get percent-encoded (as a client would),
//! so every input reaches the server; any `timeout` the input carries is
//! replaced by `timeout=0` so that no input long-polls.

#![no_main]

use axum::http::Method;
use libfuzzer_sys::fuzz_target;
use presenced_fuzz::{check_response, Harness};

/// Kept as they are in a query; everything else is percent-encoded.
fn allowed_in_query(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b)
}

fuzz_target!(|data: &[u8]| {
    let h = Harness::get();
    let mut query = String::with_capacity(data.len());
    for &b in data {
        if allowed_in_query(b) {
            query.push(char::from(b));
        } else {
            query.push_str(&format!("%{b:02X}"));
        }
    }
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
    let Some((status, response)) = h.call(
        Method::GET,
        &path,
        &[("authorization", bearer.as_bytes())],
        Vec::new(),
    ) else {
        return;
    };
    check_response(&format!("GET {path}"), status, &response);
});
