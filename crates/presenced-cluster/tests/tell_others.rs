//! `NodeHandle::tell_others`: a message to every other live node, answered
//! by each node's listener, and the nodes that did not answer.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use presenced_cluster::{MemBus, MemBusConfig, Node, Timing};

#[tokio::test(start_paused = true)]
async fn every_other_live_node_hears_it_and_a_deaf_one_is_named() {
    let bus = MemBus::new(MemBusConfig::default());
    let nodes: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|name| Node::start(name, bus.endpoint(name), Timing::default()))
        .collect();
    let handles: Vec<_> = nodes.iter().map(Node::handle).collect();
    // Every heartbeat is in.
    for _ in 0..100 {
        if handles[0].live_nodes().await.is_some_and(|n| n.len() == 3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // b listens and echoes what it heard; c does not listen.
    let (heard_tx, mut heard) = tokio::sync::mpsc::unbounded_channel();
    let mut listener = handles[1].listen("news").await.unwrap();
    tokio::spawn(async move {
        while let Some(request) = listener.next().await {
            heard_tx.send(request.payload.clone()).unwrap();
            request.respond(Bytes::from_static(b"ok")).await;
        }
    });
    let silent = handles[0]
        .tell_others("news", Bytes::from_static(b"hello"), Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(silent, vec!["c".to_owned()]);
    assert_eq!(heard.recv().await.unwrap(), Bytes::from_static(b"hello"));
    // The sender does not tell itself.
    let mut own = handles[0].listen("news").await.unwrap();
    let silent = handles[0]
        .tell_others("news", Bytes::from_static(b"again"), Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(silent, vec!["c".to_owned()]);
    assert!(futures::FutureExt::now_or_never(own.next()).is_none());
}
