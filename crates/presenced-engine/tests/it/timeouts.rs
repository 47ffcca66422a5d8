//! Catalogue B: timeout rules (`PresenceTimeoutTestCase`), as pure
//! functions and through the engine, plus the engine's timers-by-deadline
//! contract. Timers fire at their exact deadlines (no 5 s wheel, W12/W13), so
//! every test checks the millisecond before and the deadline itself.

use presenced_engine::machine;
use presenced_engine::{EngineConfig, Presence, PresenceState, Timestamp};

use crate::common::*;

const NOW: Timestamp = Timestamp(5_000_000);
const U: &str = "@foo:test";

#[test]
fn b1_idle_timer_pure() {
    let cfg = EngineConfig::default();
    let mut devices = vec![dev(Presence::Online, NOW - I - MS, NOW, 0)];
    assert!(machine::expire_devices(&mut devices, NOW, &cfg));
    assert_eq!(machine::combine(&devices), Presence::Unavailable);
    // One millisecond earlier nothing happens (strict rule).
    let mut devices = vec![dev(Presence::Online, NOW - I, NOW, 0)];
    assert!(!machine::expire_devices(&mut devices, NOW, &cfg));
    assert_eq!(machine::combine(&devices), Presence::Online);
}

#[test]
fn b2_busy_no_idle_pure() {
    let cfg = EngineConfig::default();
    let mut devices = vec![dev(Presence::Busy, NOW - I - MS, NOW, 0)];
    assert!(!machine::expire_devices(&mut devices, NOW, &cfg));
    assert_eq!(machine::combine(&devices), Presence::Busy);
}

#[test]
fn b3_sync_timeout_pure() {
    let cfg = EngineConfig::default();
    let mut devices = vec![dev(Presence::Online, Timestamp::ZERO, NOW - S - MS, 0)];
    assert!(machine::expire_devices(&mut devices, NOW, &cfg));
    assert!(devices.is_empty());
    assert_eq!(machine::combine(&devices), Presence::Offline);
}

#[test]
fn b4_sync_online_pure() {
    let cfg = EngineConfig::default();
    let t = NOW - S - MS;
    let mut devices = vec![dev(Presence::Online, t, t, 1)];
    assert!(!machine::expire_devices(&mut devices, NOW, &cfg));
    assert_eq!(machine::combine(&devices), Presence::Online);
}

/// B1 through the engine: a device holding one sync open goes unavailable
/// exactly I after its activity; the status message is kept.
#[test]
fn b1_idle_timer() {
    let mut t = T::new(EngineConfig::default());
    t.put(U, Some("dev-1"), Presence::Online, Some("I'm here!"));
    assert!(t.sync_start(U, "dev-1", Presence::Online));
    t.advance(I);
    assert_eq!(t.presence(U), Presence::Online);
    t.advance(MS);
    assert_eq!(t.presence(U), Presence::Unavailable);
    assert_eq!(t.status(U).as_deref(), Some("I'm here!"));
}

/// B2: busy never idles.
#[test]
fn b2_busy_no_idle() {
    let mut t = T::new(EngineConfig::default());
    t.put(U, Some("dev-1"), Presence::Busy, Some("I'm here!"));
    assert!(t.sync_start(U, "dev-1", Presence::Online));
    t.advance(I + secs(60));
    assert_eq!(t.presence(U), Presence::Busy);
    assert_eq!(t.status(U).as_deref(), Some("I'm here!"));
}

/// B3: a client that stops syncing goes offline exactly S after its sync
/// ended (W13: counted from the end of the request), message intact.
#[test]
fn b3_sync_timeout() {
    let mut t = T::new(EngineConfig::default());
    t.put(U, Some("dev-1"), Presence::Online, Some("I'm here!"));
    t.advance(secs(5));
    assert!(t.sync_start(U, "dev-1", Presence::Online));
    t.advance(secs(20)); // a 20 s long-poll
    t.sync_end(U, "dev-1");
    t.advance(S);
    assert_eq!(t.presence(U), Presence::Online);
    t.advance(MS);
    assert_eq!(t.presence(U), Presence::Offline);
    assert_eq!(t.status(U).as_deref(), Some("I'm here!"));
}

/// B4: a device with a sync in flight is never timed out.
#[test]
fn b4_sync_online() {
    let mut t = T::new(EngineConfig::default());
    assert!(t.sync_start(U, "dev-1", Presence::Online));
    t.advance(S * 4);
    assert_eq!(t.presence(U), Presence::Online);
}

/// B5 and the federation keepalive: a local user who stays online with no
/// notifiable change is re-sent to servers sharing a room exactly P after
/// the last send, without entering the stream. Our ping has its own timer
/// (Synapse's rides on other evaluations, W13).
#[test]
fn b5_federation_ping() {
    let mut t = T::new(EngineConfig::default());
    t.join("!r:test", U);
    t.join("!r:test", "@remote:other.org");
    t.clear();
    t.put(U, Some("dev-1"), Presence::Busy, Some("I'm here!"));
    // Busy with a sync in flight: nothing changes by itself for an hour.
    assert!(t.sync_start(U, "dev-1", Presence::Online));
    assert_eq!(t.sends(), vec![("other.org".to_owned(), names(&[U]))]);
    let sent_at = t.now();
    let position = t.position();
    let before = t.state(U);
    t.clear();
    t.advance(P);
    assert!(t.sends().is_empty());
    t.advance(MS);
    assert_eq!(t.sends(), vec![("other.org".to_owned(), names(&[U]))]);
    // Nothing notifiable: no stream entry, no persistence, nobody woken.
    assert_eq!(t.position(), position);
    assert!(t.persisted().is_empty());
    let after = t.state(U);
    assert_eq!(after.presence, before.presence);
    assert_eq!(after.status_msg, before.status_msg);
    assert_eq!(after.last_federation_update_ts, sent_at + P + MS);
    // And again 25 min later.
    t.clear();
    t.advance(P + MS);
    assert_eq!(t.sends(), vec![("other.org".to_owned(), names(&[U]))]);
}

/// A notified change resets the keepalive: no ping P after the first send
/// when a change was sent in between.
#[test]
fn ping_counts_from_last_send() {
    let mut t = T::new(EngineConfig::default());
    t.join("!r:test", U);
    t.join("!r:test", "@remote:other.org");
    t.put(U, Some("dev-1"), Presence::Busy, None);
    assert!(t.sync_start(U, "dev-1", Presence::Online));
    t.advance(secs(600));
    t.put(U, Some("dev-1"), Presence::Busy, Some("new message"));
    let changed_at = t.now();
    t.clear();
    // Where the first ping would have been: nothing.
    t.advance(P - secs(600) + MS);
    assert!(t.sends().is_empty());
    t.advance(secs(600) - MS);
    assert_eq!(t.now(), changed_at + P);
    assert!(t.sends().is_empty());
    t.advance(MS);
    assert_eq!(t.sends(), vec![("other.org".to_owned(), names(&[U]))]);
}

/// B6: nothing due, nothing happens.
#[test]
fn b6_no_timeout() {
    let mut t = T::new(EngineConfig::default());
    assert!(t.sync_start(U, "dev-1", Presence::Online));
    let state = t.state(U);
    let position = t.position();
    t.clear();
    let now = t.now();
    t.engine().handle_timeout(now);
    t.sim.step();
    assert_eq!(t.state(U), state);
    assert_eq!(t.position(), position);
    assert!(t.persisted().is_empty());
}

/// B7: a remote user not heard of for F goes offline, message kept.
#[test]
fn b7_federation_timeout() {
    let mut t = T::new(EngineConfig::default());
    assert_eq!(
        t.remote(
            "other.org",
            "@r:other.org",
            Presence::Online,
            Some("I'm here!")
        ),
        1
    );
    t.advance(F);
    assert_eq!(t.presence("@r:other.org"), Presence::Online);
    t.advance(MS);
    assert_eq!(t.presence("@r:other.org"), Presence::Offline);
    assert_eq!(t.status("@r:other.org").as_deref(), Some("I'm here!"));
    // Offline remote users have no timer.
    assert_eq!(t.eng().poll_timeout(), None);
}

/// A fresh update from the origin restarts the remote timeout.
#[test]
fn remote_timeout_restarts_on_update() {
    let mut t = T::new(EngineConfig::default());
    t.remote("other.org", "@r:other.org", Presence::Online, None);
    t.advance(F - secs(60));
    t.remote("other.org", "@r:other.org", Presence::Online, None);
    t.advance(F);
    assert_eq!(t.presence("@r:other.org"), Presence::Online);
    t.advance(MS);
    assert_eq!(t.presence("@r:other.org"), Presence::Offline);
}

/// B8: currently_active turns false exactly G after the last activity, as a
/// notifiable change.
#[test]
fn b8_last_active() {
    let mut t = T::new(EngineConfig::default());
    assert!(t.sync_start(U, "dev-1", Presence::Online));
    assert!(t.state(U).currently_active);
    let position = t.position();
    t.advance(G - MS);
    assert!(t.state(U).currently_active);
    assert_eq!(t.position(), position);
    t.advance(MS);
    let state = t.state(U);
    assert_eq!(state.presence, Presence::Online);
    assert!(!state.currently_active);
    assert_eq!(t.position(), position + 1);
}

/// `poll_timeout` is the earliest deadline of all users; `handle_timeout`
/// early or twice changes nothing.
#[test]
fn timers_by_deadline() {
    let mut t = T::new(EngineConfig::default());
    let t0 = t.now();
    // PUT-only client: gone S after the PUT.
    t.put("@a:test", Some("d"), Presence::Online, None);
    t.advance(secs(10));
    t.put("@b:test", Some("d"), Presence::Online, None);
    assert_eq!(t.eng().poll_timeout(), Some(t0 + S + MS));
    let position = t.position();
    let (a, b) = (t.state("@a:test"), t.state("@b:test"));
    // Early: a no-op.
    t.engine().handle_timeout(t0 + S);
    t.sim.step();
    assert_eq!(t.position(), position);
    assert_eq!((t.state("@a:test"), t.state("@b:test")), (a, b.clone()));
    assert_eq!(t.eng().poll_timeout(), Some(t0 + S + MS));
    // Due: a goes offline, b's deadline is next.
    t.engine().handle_timeout(t0 + S + MS);
    t.sim.step();
    assert_eq!(t.presence("@a:test"), Presence::Offline);
    assert_eq!(t.position(), position + 1);
    assert_eq!(t.eng().poll_timeout(), Some(t0 + secs(10) + S + MS));
    // Twice: a no-op.
    t.engine().handle_timeout(t0 + S + MS);
    t.sim.step();
    assert_eq!(t.position(), position + 1);
    assert_eq!(t.state("@b:test"), b);
    t.engine().handle_timeout(t0 + secs(10) + S + MS);
    t.sim.step();
    assert_eq!(t.presence("@b:test"), Presence::Offline);
    assert_eq!(t.eng().poll_timeout(), None);
}

/// W11: only notifiable changes enter the stream; the end of a sync (a
/// timestamp-only change) does not move it.
#[test]
fn sync_end_is_not_notified() {
    let mut t = T::new(EngineConfig::default());
    assert!(t.sync_start(U, "dev-1", Presence::Online));
    let position = t.position();
    t.advance(secs(20));
    t.sync_end(U, "dev-1");
    assert!(t.sync_start(U, "dev-1", Presence::Online));
    t.advance(secs(20));
    t.sync_end(U, "dev-1");
    assert_eq!(t.position(), position);
    assert_eq!(t.state(U).last_user_sync_ts, t.now());
}

/// A deadline that moved later (a second PUT) is honoured: the earlier,
/// stale timer entry re-evaluates the user without taking them offline.
#[test]
fn moved_deadline_is_honoured() {
    let mut t = T::new(EngineConfig::default());
    let t0 = t.now();
    t.put(U, Some("dev-1"), Presence::Online, None);
    t.advance(secs(20));
    t.put(U, Some("dev-1"), Presence::Online, Some("still here"));
    let position = t.position();
    t.advance(S - secs(20) + MS);
    assert_eq!(t.presence(U), Presence::Online);
    assert_eq!(t.position(), position);
    t.advance(millis((t0 + secs(20) + S).0 - t.now().0));
    assert_eq!(t.presence(U), Presence::Online);
    t.advance(MS);
    assert_eq!(t.presence(U), Presence::Offline);
    assert_eq!(t.eng().poll_timeout(), None);
}

/// A busy device that stops syncing survives for B (1 h), exactly.
#[test]
fn busy_keepalive_is_one_hour() {
    let mut t = T::new(EngineConfig::default());
    t.put(U, Some("dev-1"), Presence::Busy, Some("dnd"));
    t.advance(B);
    assert_eq!(t.presence(U), Presence::Busy);
    t.advance(MS);
    assert_eq!(t.presence(U), Presence::Offline);
    assert_eq!(t.status(U).as_deref(), Some("dnd"));
}

/// The keepalive also reaches servers that only the router names (no
/// shared room): every P the router is asked again and the user's state
/// goes to the routed user's server.
#[test]
fn federation_ping_reaches_routed_servers() {
    let mut t = T::new(config(|c| c.routing = true));
    t.set_router(|states: &[PresenceState]| {
        let set: std::collections::HashSet<PresenceState> = states.iter().cloned().collect();
        std::collections::HashMap::from([(user("@friend:other.org"), set)])
    });
    t.put(U, Some("dev-1"), Presence::Busy, None);
    assert!(t.sync_start(U, "dev-1", Presence::Online));
    assert_eq!(t.sends(), vec![("other.org".to_owned(), names(&[U]))]);
    t.clear();
    t.advance(P);
    assert!(t.sends().is_empty());
    t.advance(MS);
    assert_eq!(t.sends(), vec![("other.org".to_owned(), names(&[U]))]);
}
