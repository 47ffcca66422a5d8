//! Feeding the presence driver from the room and activity channels.

use std::sync::Arc;

use tokio::sync::mpsc::unbounded_channel;

use crate::api::state::{AppState, StateReceivers};

/// Consumes the state's membership and activity channels, applying each
/// message to presence, and returns receivers that see a copy of every
/// message (tests watch them; the server drops them).
pub fn spawn(state: &Arc<AppState>, receivers: StateReceivers) -> StateReceivers {
    let StateReceivers {
        mut membership_rx,
        mut activity_rx,
    } = receivers;
    let (membership_copy, membership_out) = unbounded_channel();
    let (activity_copy, activity_out) = unbounded_channel();
    let presence = state.presence.clone();
    tokio::spawn(async move {
        while let Some(change) = membership_rx.recv().await {
            presence.membership_written(&change);
            let _ = membership_copy.send(change);
        }
    });
    let presence = state.presence.clone();
    tokio::spawn(async move {
        while let Some(activity) = activity_rx.recv().await {
            presence.activity(&activity.user, Some(&activity.device));
            let _ = activity_copy.send(activity);
        }
    });
    StateReceivers {
        membership_rx: membership_out,
        activity_rx: activity_out,
    }
}
