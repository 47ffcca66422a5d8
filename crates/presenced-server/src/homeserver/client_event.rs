//! Stored events in the client-server wire format (`ClientEvent`).

use ruma_common::{DeviceId, UserId};
use serde_json::{json, Map, Value};

use crate::store::StoredEvent;
use crate::util::clock;

/// The client wire format of a stored event (a trait because
/// [`StoredEvent`] lives in the store crate, which knows no wire formats).
pub trait ToClientEvent {
    /// The event as a client sees it. `viewer` is the requesting user and
    /// device: the sender's own device also gets `unsigned.transaction_id`,
    /// which is how clients match their local echo.
    fn to_client_event(&self, viewer: Option<(&UserId, &DeviceId)>) -> Value;
}

impl ToClientEvent for StoredEvent {
    fn to_client_event(&self, viewer: Option<(&UserId, &DeviceId)>) -> Value {
        let mut unsigned = Map::new();
        unsigned.insert(
            "age".to_owned(),
            json!(clock::now()
                .as_millis()
                .saturating_sub(self.origin_server_ts.as_millis())),
        );
        if let (Some(txn), Some((user, device))) = (&self.txn, viewer) {
            if *self.sender == *user && *txn.device_id == *device {
                unsigned.insert("transaction_id".to_owned(), json!(txn.txn_id));
            }
        }
        let mut event = json!({
            "event_id": self.event_id,
            "type": self.event_type,
            "sender": self.sender,
            "room_id": self.room_id,
            "origin_server_ts": self.origin_server_ts.as_millis(),
            "content": self.content,
            "unsigned": unsigned,
        });
        if let Some(state_key) = &self.state_key {
            event["state_key"] = json!(state_key);
        }
        event
    }
}
