//! The built-in routers' answers, configured as an operator would.

use std::collections::HashSet;
use std::sync::Arc;

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

/// Synapse catalogue M: every listed user gets every state of the batch;
/// listed users are interested in ALL, others in nobody.
#[tokio::test]
async fn observers_receive_everything_and_see_all() {
    let r = router(
        &[(
            "presenced.routers.Observers",
            json!({"observers": ["@gobbler:example.com", "@far:island"]}),
        )],
        None,
    );
    let states = [state("@one:example.com"), state("@two:example.com")];
    let answer = r.get_users_for_states(&states).await;
    let all: HashSet<_> = states.iter().cloned().collect();
    assert_eq!(answer[&uid("@gobbler:example.com")], all);
    assert_eq!(answer[&uid("@far:island")], all);
    assert_eq!(
        r.get_interested_users(&uid("@gobbler:example.com")).await,
        Interest::All
    );
    assert_eq!(
        r.get_interested_users(&uid("@one:example.com")).await,
        Interest::None
    );
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
    let answer = r.get_users_for_states(&[state("@c:partner.org")]).await;
    assert_eq!(
        answer.keys().cloned().collect::<HashSet<_>>(),
        set(&["@a:example.com", "@b:example.com"])
    );
}

struct Directory(Vec<OwnedUserId>);
impl LocalUsers for Directory {
    fn local_users(&self) -> Vec<OwnedUserId> {
        self.0.clone()
    }
}

#[tokio::test]
async fn server_wide_links_local_users_only() {
    let directory = Arc::new(Directory(vec![
        uid("@a:example.com"),
        uid("@b:example.com"),
    ]));
    let r = router(
        &[("presenced.routers.ServerWide", json!({}))],
        Some(directory),
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
    assert!(answer
        .get(&uid("@a:example.com"))
        .is_none_or(|s| s.is_empty()));
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
