//! Catalogue N: module API presence helpers (`test_api.py`), N1 and N2
//! (N3 is worker topology), plus W7/W8.

use presenced_engine::{EngineConfig, Interest, Presence, Tracking};

use crate::common::*;

const RECEIVER: &str = "@presence_receiver1:test";
const SENDER: &str = "@presence_sender2:test";

/// N1 `test_send_local_online_presence_to`: each token at or before the
/// call gets one snapshot; offline users are never part of it.
#[test]
fn n1_send_local_online_presence_to() {
    let mut t = T::new(EngineConfig::default());
    t.join("!room:test", RECEIVER);
    t.join("!room:test", SENDER);
    t.put(SENDER, Some("d"), Presence::Online, Some("I'm online!"));

    let (states, t1) = t.sync(RECEIVER, None, &Interest::None);
    assert_eq!(ids(&states), names(&[SENDER]));
    assert_eq!(states[0].presence, Presence::Online);
    let (states, t1b) = t.sync(RECEIVER, Some(t1), &Interest::None);
    assert!(states.is_empty());
    // A second device's initial sync.
    let (_, t2) = t.sync(RECEIVER, None, &Interest::None);

    let position = t.position();
    t.wait(RECEIVER);
    t.send_online_to(&[RECEIVER]);
    // The receiver's waiting sync is woken; the stream moved past the
    // tokens handed out so far; nobody's presence changed (W7).
    assert_eq!(t.woken(), vec![RECEIVER.to_owned()]);
    assert!(t.position() > position);
    assert!(t.persisted().iter().all(|(pos, _)| *pos <= position));
    assert_eq!(t.status(SENDER).as_deref(), Some("I'm online!"));

    let (states, t3) = t.sync(RECEIVER, Some(t1b), &Interest::None);
    assert_eq!(ids(&states), names(&[SENDER]));
    assert_eq!(states[0].presence, Presence::Online);
    let (states, _) = t.sync(RECEIVER, Some(t2), &Interest::None);
    assert_eq!(ids(&states), names(&[SENDER]));
    // Once per token: the token from after the snapshot gets nothing.
    let (states, t4) = t.sync(RECEIVER, Some(t3), &Interest::None);
    assert!(states.is_empty());

    t.put(
        SENDER,
        Some("d"),
        Presence::Offline,
        Some("I slink back into the darkness."),
    );
    let (states, t5) = t.sync(RECEIVER, Some(t4), &Interest::None);
    assert_eq!(ids(&states), names(&[SENDER]));
    assert_eq!(states[0].presence, Presence::Offline);

    t.send_online_to(&[RECEIVER]);
    let (states, _) = t.sync(RECEIVER, Some(t5), &Interest::None);
    assert!(states.is_empty(), "offline users are never in the snapshot");
}

/// W7: the snapshot works in untracked mode too, once per token.
#[test]
fn full_presence_resend_untracked_once_per_token() {
    let mut t = T::new(config(|c| c.tracking = Tracking::Untracked));
    t.join("!room:test", RECEIVER);
    t.join("!room:test", SENDER);
    t.module_set(SENDER, Presence::Online, Some("hi"));
    let (_, token) = t.sync(RECEIVER, None, &Interest::None);
    t.send_online_to(&[RECEIVER]);
    let (states, next) = t.sync(RECEIVER, Some(token), &Interest::None);
    assert_eq!(ids(&states), names(&[SENDER]));
    assert!(next > token);
    assert!(t.sync_ids(RECEIVER, Some(next)).is_empty());
    assert_eq!(t.status(SENDER).as_deref(), Some("hi"));
}

/// N2 `test_send_local_online_presence_to_federation`: a remote target
/// gets the online local users it shares a room with; never remote users'
/// states (W6), even its own, and never offline users.
#[test]
fn n2_send_local_online_presence_to_federation() {
    const FAR: &str = "@far_away_person:island";
    let mut t = T::new(EngineConfig::default());
    t.join("!room:test", "@presence_sender1:test");
    t.put(
        "@presence_sender1:test",
        Some("d"),
        Presence::Online,
        Some("I'm online!"),
    );
    t.join("!room:test", "@offline:test");
    t.join("!room:test", "@other:elsewhere.org");
    t.remote(
        "elsewhere.org",
        "@other:elsewhere.org",
        Presence::Online,
        None,
    );
    t.join("!room:test", FAR);
    // The join itself already pushed the sender's presence to island.
    assert!(t
        .sends()
        .iter()
        .any(|(d, users)| d == "island" && users.contains(&"@presence_sender1:test".to_owned())));
    t.remote("island", FAR, Presence::Online, None);
    t.clear();

    t.send_online_to(&[FAR]);
    t.advance(secs(1000));
    let first = t.sent_states().first().cloned().expect("a send");
    assert_eq!(first.0.as_str(), "island");
    assert_eq!(ids(&first.1), names(&["@presence_sender1:test"]));
    assert_eq!(first.1[0].status_msg.as_deref(), Some("I'm online!"));
}

/// W8: a module-set remote user counts as freshly heard of: offline F after
/// the module call, not at once.
#[test]
fn module_set_remote_user_is_fresh() {
    let mut t = T::new(EngineConfig::default());
    t.advance(F * 2);
    t.module_set("@r:other.org", Presence::Online, Some("via module"));
    assert_eq!(t.presence("@r:other.org"), Presence::Online);
    t.advance(F);
    assert_eq!(t.presence("@r:other.org"), Presence::Online);
    t.advance(MS);
    assert_eq!(t.presence("@r:other.org"), Presence::Offline);
    assert_eq!(t.status("@r:other.org").as_deref(), Some("via module"));
}

/// `set_presence_for_users` always notifies (force), even with no change,
/// and a null message clears.
#[test]
fn module_set_always_notifies() {
    let mut t = T::new(EngineConfig::default());
    t.join("!room:test", RECEIVER);
    t.join("!room:test", SENDER);
    t.module_set(SENDER, Presence::Unavailable, Some("x"));
    let p = t.position();
    t.wait(RECEIVER);
    t.module_set(SENDER, Presence::Unavailable, Some("x"));
    assert_eq!(t.position(), p + 1);
    assert_eq!(t.woken(), vec![RECEIVER.to_owned()]);
    assert_eq!(t.sync_ids(RECEIVER, Some(p)), names(&[SENDER]));
    t.module_set(SENDER, Presence::Unavailable, None);
    assert_eq!(t.status(SENDER), None);
}

/// Full-presence marks are handed out for storage and, restored into a
/// fresh engine past the mark, give each old token its one snapshot.
#[test]
fn full_presence_marks_survive_a_restart() {
    let mut t = T::new(EngineConfig::default());
    t.join("!room:test", RECEIVER);
    t.join("!room:test", SENDER);
    t.put(SENDER, Some("d"), Presence::Online, None);
    let (_, token) = t.sync(RECEIVER, None, &Interest::None);
    t.send_online_to(&[RECEIVER]);
    let marks = t.sim.servers[0].marks.clone();
    assert_eq!(marks.len(), 1);
    assert_eq!(marks[0].0, user(RECEIVER));
    let at = marks[0].1;
    assert!(at >= token);

    // "Restart": a new engine from the stored states and marks, created
    // past the mark as the driver must.
    let stored = t.persisted().to_vec();
    let stored_max = stored.iter().map(|(p, _)| *p).max().unwrap();
    let mut restarted = T::new(EngineConfig::default());
    let fresh = presenced_engine::Engine::new(
        EngineConfig::default(),
        server("test"),
        stored_max.max(at + 1),
    );
    *restarted.engine() = fresh;
    restarted.engine().restore(stored);
    restarted
        .engine()
        .restore_full_presence(&user(RECEIVER), at);
    restarted.join("!room:test", RECEIVER);
    restarted.join("!room:test", SENDER);

    let (states, next) = restarted.sync(RECEIVER, Some(token), &Interest::None);
    assert_eq!(ids(&states), names(&[SENDER]));
    assert!(next > at, "tokens after the restart are past the mark");
    assert!(restarted.sync_ids(RECEIVER, Some(next)).is_empty());
}
