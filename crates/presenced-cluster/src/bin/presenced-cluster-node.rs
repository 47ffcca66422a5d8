//! One cluster node as its own process, driven over stdin/stdout: the
//! harness of the real-process fault tests (`kill -9`, `SIGSTOP`) and of the
//! bus measurements in SCALING.md. Not an operator's tool: presenced itself
//! runs the same `Node` inside the server.
//!
//! Usage: `presenced-cluster-node NAME NAMESPACE REPLICAS NATS_URL...`
//!
//! Lines in (each answered on its own, in any order, tagged with its id):
//! - `w ID USER JSON` → `ack ID PARTITION SEQ COMMAND` or `err ID REASON`
//! - `s ID USER` → `state ID PARTITION SEQ COMMAND` or `state ID none`
//! - `o ID` → `owned ID P:EPOCH,...`
//!
//! Prints `ready` once connected and started.

use std::time::Duration;

use presenced_cluster::{JetStreamBus, JetStreamConfig, Node, Timing};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        eprintln!("usage: presenced-cluster-node NAME NAMESPACE REPLICAS NATS_URL...");
        std::process::exit(2);
    }
    let timing = Timing {
        owner_ttl: Duration::from_secs(4),
        renew_every: Duration::from_millis(1200),
        heartbeat_every: Duration::from_secs(1),
        ..Timing::default()
    };
    let replicas: usize = args[2].parse().expect("REPLICAS is a number");
    let config = JetStreamConfig {
        servers: args[3..].to_vec(),
        credentials: None,
        replicas,
        allow_unreplicated: replicas < 3,
        node_ttl: Duration::from_secs(3),
        owner_ttl: timing.owner_ttl,
        namespace: args[1].clone(),
    };
    let bus = match JetStreamBus::connect(&config).await {
        Ok(bus) => bus,
        Err(error) => {
            eprintln!("presenced-cluster-node: {error}");
            std::process::exit(1);
        }
    };
    let node = Node::start(&args[0], bus, timing);
    let handle = node.handle();
    let (out, mut lines_out) = mpsc::unbounded_channel::<String>();
    let printer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(line) = lines_out.recv().await {
            let _ = stdout.write_all(line.as_bytes()).await;
            let _ = stdout.write_all(b"\n").await;
            let _ = stdout.flush().await;
        }
    });
    let _ = out.send("ready".to_owned());
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut words = line.splitn(4, ' ');
        let (verb, id) = (
            words.next().unwrap_or(""),
            words.next().unwrap_or("0").to_owned(),
        );
        match verb {
            "w" => {
                let user = words.next().unwrap_or("").to_owned();
                let state =
                    serde_json::from_str(words.next().unwrap_or("null")).unwrap_or_default();
                let (handle, out) = (handle.clone(), out.clone());
                tokio::spawn(async move {
                    let line = match handle.write(&user, state).await {
                        Ok((p, seq, command)) => format!("ack {id} {p} {seq} {command}"),
                        Err(error) => format!("err {id} {error}"),
                    };
                    let _ = out.send(line);
                });
            }
            "s" => {
                let user = words.next().unwrap_or("");
                let line = match handle.replica().get(user) {
                    Some(s) => format!("state {id} {} {} {}", s.partition, s.seq, s.record.command),
                    None => format!("state {id} none"),
                };
                let _ = out.send(line);
            }
            "o" => {
                let owned: Vec<String> = handle
                    .owned()
                    .iter()
                    .map(|(p, epoch)| format!("{p}:{epoch}"))
                    .collect();
                let _ = out.send(format!("owned {id} {}", owned.join(",")));
            }
            _ => {
                let _ = out.send(format!("err {id} unknown command"));
            }
        }
    }
    drop(out);
    let _ = printer.await;
    node.stop();
}
