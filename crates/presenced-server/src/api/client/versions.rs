//! `GET /_matrix/client/versions`

use axum::Json;
use serde_json::{json, Value};

/// Spec versions presenced speaks, oldest first.
const VERSIONS: &[&str] = &[
    "r0.0.1", "r0.1.0", "r0.2.0", "r0.3.0", "r0.4.0", "r0.5.0", "r0.6.0", "r0.6.1", "v1.1", "v1.2",
    "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11",
];

/// GET /_matrix/client/versions
///
/// Advertises busy presence (MSC3026), which presenced supports.
pub(crate) async fn get_versions() -> Json<Value> {
    Json(json!({
        "versions": VERSIONS,
        "unstable_features": { "org.matrix.msc3026.busy_presence": true },
    }))
}
