//! The client-server API routes, one file per endpoint group.
//!
//! Every route is served under `/_matrix/client/v3` and, for clients that
//! still call them, the `r0` alias.

mod account;
mod capabilities;
mod create_room;
mod deactivate;
mod filter;
mod keys;
mod login;
mod logout;
mod members;
mod membership;
mod presence;
mod push_rules;
mod receipts;
mod register;
mod send;
mod spliced_sync;
mod sync;
mod typing;
mod versions;

use std::sync::Arc;

use axum::routing::{get, post, put, MethodRouter};
use axum::Router;

use crate::api::state::AppState;

/// Prefixes a client route is served under.
const PREFIXES: &[&str] = &["/_matrix/client/v3", "/_matrix/client/r0"];

/// Adds `path` under every client prefix.
pub(crate) fn client_route(
    router: Router<Arc<AppState>>,
    path: &str,
    method_router: MethodRouter<Arc<AppState>>,
) -> Router<Arc<AppState>> {
    PREFIXES.iter().fold(router, |r, prefix| {
        r.route(&format!("{prefix}{path}"), method_router.clone())
    })
}

/// The presence endpoints' path under each prefix.
const PRESENCE_STATUS: &str = "/presence/{user_id}/status";

fn presence_status() -> MethodRouter<Arc<AppState>> {
    get(presence::get_status).put(presence::put_status)
}

/// What companion mode answers itself of the client-server API: the
/// presence endpoints, and `/sync` spliced (Synapse's answer with
/// presenced's presence section).
pub(crate) fn presence_routes() -> Router<Arc<AppState>> {
    let router = client_route(Router::new(), PRESENCE_STATUS, presence_status());
    client_route(router, "/sync", get(spliced_sync::get_spliced_sync))
}

/// The client-server API.
pub(crate) fn routes() -> Router<Arc<AppState>> {
    let routes: &[(&str, MethodRouter<Arc<AppState>>)] = &[
        (
            "/login",
            get(login::get_login_flows).post(login::post_login),
        ),
        ("/logout", post(logout::post_logout)),
        ("/logout/all", post(logout::post_logout_all)),
        ("/account/whoami", get(account::get_whoami)),
        ("/account/deactivate", post(deactivate::post_deactivate)),
        ("/register", post(register::post_register)),
        ("/register/available", get(register::get_register_available)),
        ("/createRoom", post(create_room::post_create_room)),
        ("/rooms/{room_id}/invite", post(membership::post_invite)),
        ("/rooms/{room_id}/join", post(membership::post_join)),
        (
            "/join/{room_id_or_alias}",
            post(membership::post_join_by_id_or_alias),
        ),
        ("/rooms/{room_id}/leave", post(membership::post_leave)),
        ("/joined_rooms", get(members::get_joined_rooms)),
        (
            "/rooms/{room_id}/joined_members",
            get(members::get_joined_members),
        ),
        ("/rooms/{room_id}/members", get(members::get_members)),
        (
            "/rooms/{room_id}/send/{event_type}/{txn_id}",
            put(send::put_send),
        ),
        ("/rooms/{room_id}/typing/{user_id}", put(typing::put_typing)),
        (
            "/rooms/{room_id}/receipt/{receipt_type}/{event_id}",
            post(receipts::post_receipt),
        ),
        (
            "/rooms/{room_id}/read_markers",
            post(receipts::post_read_markers),
        ),
        ("/user/{user_id}/filter", post(filter::post_filter)),
        (
            "/user/{user_id}/filter/{filter_id}",
            get(filter::get_filter),
        ),
        (PRESENCE_STATUS, presence_status()),
        ("/sync", get(sync::get_sync)),
        ("/capabilities", get(capabilities::get_capabilities)),
        ("/pushrules/", get(push_rules::get_push_rules)),
        ("/pushrules", get(push_rules::get_push_rules)),
        ("/keys/upload", post(keys::post_keys_upload)),
        ("/keys/query", post(keys::post_keys_query)),
    ];
    let router = Router::new().route("/_matrix/client/versions", get(versions::get_versions));
    routes
        .iter()
        .fold(router, |r, (path, mr)| client_route(r, path, mr.clone()))
}
