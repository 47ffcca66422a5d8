//! The built-in routers' answers, configured as an operator would.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use presenced_engine::{Interest, Presence, PresenceState};
use presenced_router::{
    command_channel, LocalUsers, ModuleEntry, ModuleRegistry, PresenceRouter, RouteReason,
};
use ruma_common::{OwnedUserId, UserId};
use serde_json::json;

fn uid(s: &str) -> OwnedUserId {
    UserId::parse(s).unwrap()
}

fn state(user: &str) -> PresenceState {
    let mut s = PresenceState::new(uid(user));
    s.presence = Presence::Online;
    s
}

fn router(
    entries: &[(&str, serde_json::Value)],
    directory: Option<Arc<dyn LocalUsers>>,
) -> PresenceRouter {
    let (tx, _rx) = command_channel();
    let entries: Vec<_> = entries
        .iter()
        .map(|(m, c)| ModuleEntry::new(*m, c.clone()))
        .collect();
    ModuleRegistry::default()
        .load(&entries, "example.com".try_into().unwrap(), tx, directory)
        .unwrap()
}

fn set(ids: &[&str]) -> HashSet<OwnedUserId> {
    ids.iter().map(|s| uid(s)).collect()
}

#[tokio::test]
async fn static_routes_follow_the_callbacks_doc_example() {
    let r = router(
        &[(
            "presenced.routers.StaticRoutes",
            json!({"routes": [{"receiver": "@alice:example.com", "senders": ["@bob:example.com", "@charlie:somewhere.org"]}]}),
        )],
        None,
    );
    let (bob, charlie, dave) = (
        state("@bob:example.com"),
        state("@charlie:somewhere.org"),
        state("@dave:example.com"),
    );
    let answer = r
        .get_users_for_states(&[bob.clone(), charlie.clone(), dave])
        .await;
    assert_eq!(answer.len(), 1);
    assert_eq!(
        answer[&uid("@alice:example.com")],
        HashSet::from([bob, charlie])
    );
    assert_eq!(
        r.get_interested_users(&uid("@alice:example.com")).await,
        Interest::Users(set(&["@bob:example.com", "@charlie:somewhere.org"]))
    );
    assert_eq!(
        r.get_interested_users(&uid("@bob:example.com")).await,
        Interest::None
    );
}

#[tokio::test]
async fn static_routes_combine_overlapping_routes() {
    let r = router(
        &[(
            "presenced.routers.StaticRoutes",
            json!({"routes": [
                {"receiver": "@alice:example.com", "senders": ["@bob:example.com"]},
                {"receiver": "@eve:remote.org", "senders": ["@bob:example.com", "@carol:example.com"]},
                {"receiver": "@alice:example.com", "senders": ["@carol:example.com", "@bob:example.com"]},
            ]}),
        )],
        None,
    );
    let (bob, carol) = (state("@bob:example.com"), state("@carol:example.com"));
    let answer = r.get_users_for_states(&[bob.clone(), carol.clone()]).await;
    let both = HashSet::from([bob, carol]);
    assert_eq!(answer.len(), 2);
    assert_eq!(answer[&uid("@alice:example.com")], both);
    assert_eq!(answer[&uid("@eve:remote.org")], both);
    assert_eq!(
        r.get_interested_users(&uid("@alice:example.com")).await,
        Interest::Users(set(&["@bob:example.com", "@carol:example.com"]))
    );
}

/// Synapse catalogue M1/M2: the observer (L = [gobbler]) shares no room
/// yet receives every state of the batch, its own included, and is
/// interested in ALL; others gain nothing.
#[tokio::test]
async fn observers_receive_everything_and_see_all() {
    let r = router(
        &[(
            "presenced.routers.Observers",
            json!({"observers": ["@presence_gobbler:test"]}),
        )],
        None,
    );
    let states = [
        state("@other_user_one:test"),
        state("@other_user_two:test"),
        state("@presence_gobbler:test"),
    ];
    let answer = r.get_users_for_states(&states).await;
    assert_eq!(answer.len(), 1);
    assert_eq!(
        answer[&uid("@presence_gobbler:test")],
        states.iter().cloned().collect::<HashSet<_>>(),
        "all three states, the observer's own included"
    );
    assert_eq!(
        r.get_interested_users(&uid("@presence_gobbler:test")).await,
        Interest::All
    );
    assert_eq!(
        r.get_interested_users(&uid("@other_user_one:test")).await,
        Interest::None
    );
}

/// Synapse catalogue M3/M4: L holds two local users and a remote one; each
/// gets every state and is interested in ALL.
#[tokio::test]
async fn observers_may_be_remote() {
    let listed = [
        "@presence_gobbler1:test",
        "@presence_gobbler2:test",
        "@far_away_person:island",
    ];
    let r = router(
        &[(
            "presenced.routers.Observers",
            json!({ "observers": listed }),
        )],
        None,
    );
    let states = [state("@other_user:test"), state("@presence_gobbler2:test")];
    let all: HashSet<_> = states.iter().cloned().collect();
    let answer = r.get_users_for_states(&states).await;
    assert_eq!(answer.len(), 3);
    for user in listed {
        assert_eq!(answer[&uid(user)], all, "{user}");
        assert_eq!(r.get_interested_users(&uid(user)).await, Interest::All);
    }
}

/// The hot-path shape: a batch of 1000 states, 10 observers (listed twice
/// for good measure: duplicates collapse).
#[tokio::test]
async fn observers_handle_a_large_batch() {
    let observers: Vec<String> = (0..10).map(|i| format!("@obs{i}:example.com")).collect();
    let mut listed = observers.clone();
    listed.extend(observers.iter().cloned());
    let r = router(
        &[(
            "presenced.routers.Observers",
            json!({ "observers": listed }),
        )],
        None,
    );
    let states: Vec<_> = (0..1000)
        .map(|i| state(&format!("@user{i}:example.com")))
        .collect();
    let answer = r.get_users_for_states(&states).await;
    assert_eq!(answer.len(), 10);
    assert!(answer.values().all(|set| set.len() == 1000));
    assert!(r.get_users_for_states(&[]).await.is_empty());
    assert_eq!(r.stats()[0].calls, 2);
}

#[tokio::test]
async fn group_members_see_each_other() {
    let r = router(
        &[(
            "presenced.routers.Groups",
            json!({"groups": {"ops": ["@a:example.com", "@b:example.com", "@c:partner.org"], "pair": ["@a:example.com", "@d:example.com"]}}),
        )],
        None,
    );
    assert_eq!(
        r.get_interested_users(&uid("@a:example.com")).await,
        Interest::Users(set(&["@b:example.com", "@c:partner.org", "@d:example.com"]))
    );
    assert_eq!(
        r.get_interested_users(&uid("@d:example.com")).await,
        Interest::Users(set(&["@a:example.com"]))
    );
    let c = state("@c:partner.org");
    let answer = r
        .get_users_for_states(&[c.clone(), state("@stranger:example.com")])
        .await;
    assert_eq!(
        answer,
        [
            (uid("@a:example.com"), HashSet::from([c.clone()])),
            (uid("@b:example.com"), HashSet::from([c])),
        ]
        .into_iter()
        .collect(),
        "a remote member's state goes to the other members only"
    );
    assert_eq!(
        r.get_interested_users(&uid("@stranger:example.com")).await,
        Interest::None
    );
}

/// The server's user directory; users may register after start-up.
struct Directory(Mutex<Vec<OwnedUserId>>);
impl LocalUsers for Directory {
    fn local_users(&self) -> Vec<OwnedUserId> {
        self.0.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn server_wide_links_local_users_only() {
    let directory = Arc::new(Directory(Mutex::new(vec![
        uid("@a:example.com"),
        uid("@b:example.com"),
    ])));
    let r = router(
        &[("presenced.routers.ServerWide", json!({}))],
        Some(directory.clone()),
    );
    assert_eq!(
        r.get_interested_users(&uid("@a:example.com")).await,
        Interest::Users(set(&["@b:example.com"]))
    );
    assert_eq!(
        r.get_interested_users(&uid("@x:remote.org")).await,
        Interest::None
    );
    let answer = r
        .get_users_for_states(&[state("@a:example.com"), state("@x:remote.org")])
        .await;
    assert_eq!(
        answer[&uid("@b:example.com")],
        HashSet::from([state("@a:example.com")])
    );
    assert_eq!(
        answer.len(),
        1,
        "a's own state is not routed back to a: {answer:?}"
    );

    directory.0.lock().unwrap().push(uid("@new:example.com"));
    assert_eq!(
        r.get_interested_users(&uid("@a:example.com")).await,
        Interest::Users(set(&["@b:example.com", "@new:example.com"])),
        "a user registered after start-up is included"
    );
    let answer = r.get_users_for_states(&[state("@new:example.com")]).await;
    assert_eq!(
        answer.keys().cloned().collect::<HashSet<_>>(),
        set(&["@a:example.com", "@b:example.com"])
    );
}

#[tokio::test]
async fn explain_names_the_modules_that_grant_visibility() {
    let r = router(
        &[
            (
                "presenced.routers.StaticRoutes",
                json!({"routes": [{"receiver": "@a:example.com", "senders": ["@b:example.com"]}]}),
            ),
            (
                "presenced.routers.Observers",
                json!({"observers": ["@a:example.com"]}),
            ),
            (
                "presenced.routers.Groups",
                json!({"groups": {"g": ["@c:example.com", "@b:example.com"]}}),
            ),
        ],
        None,
    );
    let reasons = r
        .explain(&uid("@a:example.com"), &uid("@b:example.com"))
        .await;
    let names: Vec<_> = reasons
        .iter()
        .map(|m| (m.module.as_str(), m.reason))
        .collect();
    assert_eq!(
        names,
        [
            ("presenced.routers.StaticRoutes", RouteReason::Listed),
            ("presenced.routers.Observers", RouteReason::AllUsers)
        ]
    );
    assert!(r
        .explain(&uid("@c:example.com"), &uid("@a:example.com"))
        .await
        .is_empty());
}
