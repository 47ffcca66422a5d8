//! Catalogue M: presence-router scenarios (`test_presence_router.py`), with
//! the simulator's `router` closure standing in for the module: every state
//! of a batch goes to every listed user (`get_users_for_states`), and the
//! listed users are `Interest::All` when they sync (`get_interested_users`).
//! Syncs here do not change the syncer's presence (as in the catalogue).

use std::collections::{HashMap, HashSet};

use presenced_engine::{Interest, Presence, PresenceState, UsersForStates};

use crate::common::*;

fn routing() -> presenced_engine::EngineConfig {
    config(|c| c.routing = true)
}

/// A router mapping every state of every batch to each of `listed`.
fn route_all_to(listed: &[&str]) -> impl FnMut(&[PresenceState]) -> UsersForStates + 'static {
    let listed: Vec<_> = listed.iter().map(|u| user(u)).collect();
    move |states| {
        let set: HashSet<PresenceState> = states.iter().cloned().collect();
        listed
            .iter()
            .map(|u| (u.clone(), set.clone()))
            .collect::<HashMap<_, _>>()
    }
}

fn interest(listed: &[&str], u: &str) -> Interest {
    if listed.contains(&u) {
        Interest::All
    } else {
        Interest::None
    }
}

const GOBBLER: &str = "@presence_gobbler:test";
const ONE: &str = "@other_user_one:test";
const TWO: &str = "@other_user_two:test";

/// M1/M2 `test_receiving_all_presence` (legacy and module variants are the
/// same to the engine).
#[test]
fn m1_m2_receiving_all_presence() {
    let listed = [GOBBLER];
    let mut t = T::new(routing());
    t.set_router(route_all_to(&listed));
    t.join("!room:test", ONE);
    t.join("!room:test", TWO);

    t.put(ONE, Some("d"), Presence::Online, Some("boop"));
    let (states, token) = t.sync(GOBBLER, None, &interest(&listed, GOBBLER));
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].user_id, ONE);
    assert_eq!(states[0].presence, Presence::Online);
    assert_eq!(states[0].status_msg.as_deref(), Some("boop"));

    t.wait(GOBBLER);
    t.put(ONE, Some("d"), Presence::Online, Some("user_one"));
    // The router's answer woke the gobbler, who shares no room.
    assert_eq!(t.woken(), vec![GOBBLER.to_owned()]);
    t.put(TWO, Some("d"), Presence::Online, Some("user_two"));
    t.put(
        GOBBLER,
        Some("d"),
        Presence::Online,
        Some("presence_gobbler"),
    );
    let (states, _) = t.sync(GOBBLER, Some(token), &interest(&listed, GOBBLER));
    // Three states, the gobbler's own included.
    assert_eq!(ids(&states), names(&[ONE, TWO, GOBBLER]));

    let (states, _) = t.sync(ONE, None, &interest(&listed, ONE));
    assert_eq!(ids(&states), names(&[ONE, TWO]));
    let two = states.iter().find(|s| s.user_id == TWO).unwrap();
    assert_eq!(two.presence, Presence::Online);
    assert_eq!(two.status_msg.as_deref(), Some("user_two"));
}

const OTHER: &str = "@other_user:test";
const G1: &str = "@presence_gobbler1:test";
const G2: &str = "@presence_gobbler2:test";
const FAR: &str = "@far_away_person:island";

/// M3/M4 `test_send_local_online_presence_to_with_module`: local targets
/// get a snapshot; the remote target gets the online local users the router
/// gives it, never a remote user's state and never an offline one (W5/W6).
/// The catalogue waits 60 s around the calls for Synapse's staggered
/// federation sends; ours are immediate, and waiting would let these
/// PUT-only users time out after S (W13), so there is no wait.
#[test]
fn m3_m4_send_local_online_presence_to_with_module() {
    let listed = [G1, G2, FAR];
    let mut t = T::new(routing());
    // The module also hands a remote user's state to everyone: it must
    // never be sent over federation (W6).
    let mut inner = route_all_to(&listed);
    let remote = PresenceState {
        presence: Presence::Online,
        ..PresenceState::new(user("@remote:elsewhere.org"))
    };
    t.set_router(move |states| {
        let mut answer = inner(states);
        for set in answer.values_mut() {
            set.insert(remote.clone());
        }
        answer
    });
    t.put(OTHER, Some("d"), Presence::Online, Some("I'm online!"));
    t.put(G1, Some("d"), Presence::Online, Some("I'm also online!"));
    t.put(
        G2,
        Some("d"),
        Presence::Unavailable,
        Some("I'm in a meeting!"),
    );
    // A remote user the router also hands to everyone, and a local offline one.
    t.remote(
        "elsewhere.org",
        "@remote:elsewhere.org",
        Presence::Online,
        None,
    );
    t.put("@gone:test", Some("d"), Presence::Online, None);
    t.put("@gone:test", Some("d"), Presence::Offline, None);
    let messages_before: Vec<_> = [OTHER, G1, G2].iter().map(|u| t.status(u)).collect();

    t.send_online_to(&[G1, G2]);
    let (states, _) = t.sync(OTHER, None, &interest(&listed, OTHER));
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].user_id, OTHER);
    assert_eq!(states[0].presence, Presence::Online);
    assert_eq!(states[0].status_msg.as_deref(), Some("I'm online!"));
    for g in [G1, G2] {
        let (states, _) = t.sync(g, None, &interest(&listed, g));
        // Catalogue: 3 states (other, gobbler1, gobbler2); ours also
        // includes the online remote user, who is part of "all presence".
        assert_eq!(
            ids(&states),
            names(&[OTHER, G1, G2, "@remote:elsewhere.org"]),
            "{g}"
        );
    }

    t.clear();
    t.send_online_to(&[FAR]);
    let sent = t.sent_states().to_vec();
    assert!(!sent.is_empty());
    let mut seen = HashSet::new();
    for (destination, states) in &sent {
        assert_eq!(destination.as_str(), "island");
        for s in states {
            assert_ne!(s.presence, Presence::Offline, "{s:?}");
            seen.insert(s.user_id.to_string());
        }
    }
    let expected: HashSet<String> = [OTHER, G1, G2].iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(seen, expected);
    // W7: nobody's status message or presence changed.
    let messages_after: Vec<_> = [OTHER, G1, G2].iter().map(|u| t.status(u)).collect();
    assert_eq!(messages_before, messages_after);
    assert_eq!(t.presence(G2), Presence::Unavailable);
}

/// W2: a router answer without an entry for an `Interest::All` user never
/// fails a sync, and an empty answer still lets the changes reach rooms.
#[test]
fn router_answer_without_entry() {
    let mut t = T::new(routing());
    t.set_router(|_| UsersForStates::new());
    t.join("!r:test", ONE);
    t.join("!r:test", TWO);
    let p = t.position();
    t.wait(TWO);
    t.put(ONE, Some("d"), Presence::Online, None);
    assert_eq!(t.woken(), vec![TWO.to_owned()]);
    assert_eq!(
        ids(&t.sync(GOBBLER, Some(p), &Interest::All).0),
        names(&[ONE])
    );
    assert_eq!(t.sync_ids(TWO, Some(p)), names(&[ONE]));
}

/// With routing on, fan-out waits for the router's answer: nothing is woken
/// or sent before `handle_route_answer`.
#[test]
fn fan_out_waits_for_router_answer() {
    use presenced_engine::Output;
    let mut t = T::new(routing());
    t.join("!r:test", ONE);
    t.join("!r:test", TWO);
    t.join("!r:test", "@far:island");
    t.clear();
    t.wait(TWO);
    let now = t.now();
    t.engine()
        .handle_set_presence(now, &user(ONE), Some(device("d")), Presence::Online, None);
    let mut route = None;
    while let Some(out) = t.engine().poll_output() {
        match out {
            Output::Persist(rows) => assert_eq!(rows.len(), 1),
            Output::Route { batch, states } => {
                assert_eq!(ids(&states), names(&[ONE]));
                route = Some(batch);
            }
            other => panic!("unexpected before the answer: {other:?}"),
        }
    }
    let batch = route.expect("a route request");
    assert_eq!(t.eng().stats().batches_in_flight, 1);
    let mut answer = UsersForStates::new();
    answer.insert(user(GOBBLER), HashSet::from([t.state(ONE)]));
    t.engine().handle_route_answer(now, batch, answer);
    let mut woken = Vec::new();
    let mut sent = Vec::new();
    while let Some(out) = t.engine().poll_output() {
        match out {
            Output::Wake(users) => woken.extend(users.into_iter().map(|u| u.to_string())),
            Output::Send {
                destination,
                states,
            } => sent.push((destination.to_string(), ids(&states))),
            other => panic!("unexpected: {other:?}"),
        }
    }
    woken.sort();
    assert_eq!(woken, names(&[TWO]));
    assert_eq!(sent, vec![("island".to_owned(), names(&[ONE]))]);
    assert_eq!(t.eng().stats().batches_in_flight, 0);
}
