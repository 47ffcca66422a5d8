//! The owner's fast path: a node's front door hands a command for a
//! partition it owns straight to its own owner loop, with no bus request;
//! a command for another node's partition still goes over the bus.

use std::time::Duration;

use presenced_cluster::{partition_of, MemBus, MemBusConfig, Node, Timing};
use serde_json::json;

const COMMANDS: &str = "pres.own.";

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..600 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within 60 s");
}

#[tokio::test(start_paused = true)]
async fn an_owner_takes_its_own_front_doors_commands_without_the_bus() {
    let bus = MemBus::new(MemBusConfig::default());
    let a = Node::start("a", bus.endpoint("a"), Timing::default());
    let a = a_handle_owning_everything(&a).await;
    let users: Vec<String> = (0..20).map(|i| format!("@u{i}:example.org")).collect();
    for user in &users {
        a.write(user, json!({"presence": "online"})).await.unwrap();
    }
    assert_eq!(bus.requests_sent(COMMANDS), 0);
    // Written to the log as a bus request's command would be.
    for user in &users {
        let history = bus.history(partition_of(user));
        assert!(
            history
                .iter()
                .any(|e| String::from_utf8_lossy(&e.payload).contains(user.as_str())),
            "{user} is not in its partition's log"
        );
    }

    // A second node owns nothing yet (a holds every lease): each of its
    // writes is one request to a, over the bus.
    let b = Node::start("b", bus.endpoint("b"), Timing::default());
    let b = b.handle();
    assert!(b.owned().is_empty());
    for user in &users {
        b.write(user, json!({"presence": "unavailable"}))
            .await
            .unwrap();
    }
    assert_eq!(bus.requests_sent(COMMANDS), users.len() as u64);
}

async fn a_handle_owning_everything(node: &Node<MemBus>) -> presenced_cluster::NodeHandle<MemBus> {
    let handle = node.handle();
    wait_until("node a owning all 16 partitions", || {
        handle.owned().len() == 16
    })
    .await;
    handle
}
