//! The presence state machine as pure functions (spec §1.4, §3, §4, §5).
//!
//! Nothing here touches the engine's tables: each function takes the states
//! it needs and `now`, and returns what changed. The engine applies results.

use ruma_common::OwnedDeviceId;

use crate::{EngineConfig, Presence, PresenceState, Timestamp};

/// What one device of a local user contributes (Synapse's device record).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceState {
    /// `None` for requests without a device (and the restore pseudo-device).
    pub device_id: Option<OwnedDeviceId>,
    /// The device's own presence value.
    pub presence: Presence,
    /// Last activity seen from this device.
    pub last_active_ts: Timestamp,
    /// End of the device's last presence-affecting sync (start while one runs).
    pub last_sync_ts: Timestamp,
    /// Presence-affecting syncs in flight right now.
    pub syncing: u32,
}

impl DeviceState {
    /// A fresh, offline device record.
    pub fn new(device_id: Option<OwnedDeviceId>) -> Self {
        Self {
            device_id,
            presence: Presence::Offline,
            last_active_ts: Timestamp::ZERO,
            last_sync_ts: Timestamp::ZERO,
            syncing: 0,
        }
    }

    /// How long this device survives without syncing or acting.
    fn keepalive(&self, config: &EngineConfig) -> std::time::Duration {
        if self.presence == Presence::Busy {
            config.busy_timeout
        } else {
            config.sync_online_timeout
        }
    }

    /// The instant after which a non-syncing device is dropped.
    fn expiry(&self, config: &EngineConfig) -> Timestamp {
        self.last_sync_ts.max(self.last_active_ts) + self.keepalive(config)
    }

    /// A record that says nothing: offline and not syncing. Dropping it
    /// changes no combination, so it is pruned at once (W10).
    pub fn is_inert(&self) -> bool {
        self.presence == Presence::Offline && self.syncing == 0
    }
}

/// Combines device states: the highest rank wins; no devices means offline.
pub fn combine(devices: &[DeviceState]) -> Presence {
    devices
        .iter()
        .map(|d| d.presence)
        .max()
        .unwrap_or(Presence::Offline)
}

/// Is a change worth telling anyone (spec §4)? All comparisons strict.
pub fn should_notify(old: &PresenceState, new: &PresenceState, config: &EngineConfig) -> bool {
    if old == new {
        return false;
    }
    if old.status_msg != new.status_msg || old.presence != new.presence {
        return true;
    }
    let granularity = config.last_active_granularity.as_millis() as u64;
    let moved = new.last_active_ts.0.saturating_sub(old.last_active_ts.0) > granularity;
    if old.presence == Presence::Online {
        old.currently_active != new.currently_active || (moved && !new.currently_active)
    } else {
        moved
    }
}

/// The result of running a proposed state through the update rules (spec §3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateOutcome {
    /// The state to keep.
    pub state: PresenceState,
    /// The change must enter the stream and reach its audience.
    pub notify: bool,
    /// Not notifiable, but due for a federation keepalive.
    pub federation_ping: bool,
}

/// Applies the update rules to a proposed state: recomputes
/// `currently_active` for local online users, decides keepalive pings and
/// notification, and stamps `last_federation_update_ts` when the state is
/// (or counts as) sent. `untracked` skips the timer-driven parts.
pub fn apply_update(
    prev: &PresenceState,
    mut new: PresenceState,
    is_local: bool,
    now: Timestamp,
    config: &EngineConfig,
) -> UpdateOutcome {
    let mut federation_ping = false;
    if is_local {
        if new.presence == Presence::Online {
            new.currently_active =
                now.saturating_since(new.last_active_ts) < config.last_active_granularity;
        }
        if new.presence != Presence::Offline
            && now.saturating_since(new.last_federation_update_ts) > config.federation_ping_interval
        {
            new.last_federation_update_ts = now;
            federation_ping = true;
        }
    }
    let notify = should_notify(prev, &new, config);
    if notify {
        new.last_federation_update_ts = now;
        federation_ping = false;
    }
    UpdateOutcome {
        state: new,
        notify,
        federation_ping,
    }
}

/// Applies device timeouts (spec §5, step 1): online devices idle into
/// unavailable; devices that neither sync nor act past their keepalive are
/// removed. Returns whether any device changed.
pub fn expire_devices(
    devices: &mut Vec<DeviceState>,
    now: Timestamp,
    config: &EngineConfig,
) -> bool {
    let mut changed = false;
    for device in devices.iter_mut() {
        if device.presence == Presence::Online
            && now.saturating_since(device.last_active_ts) > config.idle_timeout
        {
            device.presence = Presence::Unavailable;
            changed = true;
        }
    }
    let before = devices.len();
    devices.retain(|d| d.syncing > 0 || now <= d.expiry(config));
    changed || devices.len() != before
}

/// The earliest instant at which anything about this user can change by
/// itself, or `None` if nothing will (offline users, untracked mode).
///
/// Deadlines are one millisecond past each threshold because every timeout
/// rule is strict ("longer than").
pub fn next_deadline(
    state: &PresenceState,
    devices: &[DeviceState],
    is_local: bool,
    config: &EngineConfig,
) -> Option<Timestamp> {
    const TICK: std::time::Duration = std::time::Duration::from_millis(1);
    if state.presence == Presence::Offline && devices.iter().all(DeviceState::is_inert) {
        return None;
    }
    if !is_local {
        return Some(state.last_federation_update_ts + config.federation_timeout + TICK);
    }
    let mut next: Option<Timestamp> = None;
    let mut consider = |t: Timestamp| next = Some(next.map_or(t, |n| n.min(t)));
    for device in devices {
        if device.presence == Presence::Online {
            consider(device.last_active_ts + config.idle_timeout + TICK);
        }
        if device.syncing == 0 {
            consider(device.expiry(config) + TICK);
        }
    }
    if state.presence == Presence::Online && state.currently_active {
        consider(state.last_active_ts + config.last_active_granularity);
    }
    if state.presence != Presence::Offline {
        consider(state.last_federation_update_ts + config.federation_ping_interval + TICK);
    }
    next
}
