//! Real NATS servers for tests: one, or three as a JetStream cluster, each
//! on its own loopback ports with its own store, `sync_interval: always`.
//!
//! The binary is `PRESENCED_TEST_NATS_SERVER`, else the pinned one that
//! `scripts/install-nats-server` puts in `target/nats-venv`. When there is
//! none, [`NatsServers::start`] returns `None` after printing `skipped: …`,
//! unless `PRESENCED_REQUIRE_NATS=1` (CI), where it panics.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Running `nats-server` processes, killed and cleaned up on drop.
pub struct NatsServers {
    servers: Vec<NatsServer>,
    root: PathBuf,
}

struct NatsServer {
    child: Option<Child>,
    client_port: u16,
    config: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

/// The nats-server binary to test with, if any.
pub fn nats_server_binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("PRESENCED_TEST_NATS_SERVER") {
        return Some(PathBuf::from(path));
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let pinned = workspace.join("target/nats-venv/bin/nats-server");
    pinned.exists().then_some(pinned)
}

impl NatsServers {
    /// Starts `count` servers (1, or 3 for a cluster with R3 streams) and
    /// waits until JetStream answers on every one.
    pub fn start(count: usize, what: &str) -> Option<Self> {
        let Some(binary) = nats_server_binary() else {
            if std::env::var("PRESENCED_REQUIRE_NATS").as_deref() == Ok("1") {
                panic!(
                    "NATS is required (PRESENCED_REQUIRE_NATS=1) but there is no nats-server: \
                     run scripts/install-nats-server or set PRESENCED_TEST_NATS_SERVER"
                );
            }
            eprintln!(
                "skipped: {what} (no nats-server: run scripts/install-nats-server or set \
                 PRESENCED_TEST_NATS_SERVER)"
            );
            return None;
        };
        let root = std::env::temp_dir().join(format!(
            "presenced-nats-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&root).expect("nats test directory");
        let client_ports: Vec<u16> = (0..count).map(|_| free_port()).collect();
        let cluster_ports: Vec<u16> = (0..count).map(|_| free_port()).collect();
        let mut servers = Vec::with_capacity(count);
        for index in 0..count {
            let store = root.join(format!("n{index}"));
            let mut config = format!(
                "server_name: n{index}\nlisten: 127.0.0.1:{}\n\
                 jetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n",
                client_ports[index],
                store.display()
            );
            if count > 1 {
                let routes: Vec<String> = cluster_ports
                    .iter()
                    .map(|port| format!("nats://127.0.0.1:{port}"))
                    .collect();
                config.push_str(&format!(
                    "cluster {{\n  name: presenced_test\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n",
                    cluster_ports[index],
                    routes.join(", ")
                ));
            }
            let path = root.join(format!("n{index}.conf"));
            std::fs::write(&path, config).expect("nats config");
            servers.push(NatsServer {
                child: None,
                client_port: client_ports[index],
                config: path,
            });
        }
        let mut this = Self { servers, root };
        for index in 0..count {
            this.start_server(index, &binary);
        }
        this.wait_ready();
        Some(this)
    }

    fn start_server(&mut self, index: usize, binary: &Path) {
        let server = &mut self.servers[index];
        let log = std::fs::File::create(self.root.join(format!("n{index}.log"))).expect("nats log");
        let child = Command::new(binary)
            .arg("-c")
            .arg(&server.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        server.child = Some(child);
    }

    /// Waits until every running server's monitoring-free readiness shows:
    /// its client port accepts and the cluster has elected a meta leader
    /// (probed by the caller's first JetStream call, which retries).
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for server in self.servers.iter().filter(|s| s.child.is_some()) {
            while std::net::TcpStream::connect(("127.0.0.1", server.client_port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "nats-server did not start; see {}",
                    self.root.display()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// `nats://127.0.0.1:<port>` of every server.
    pub fn urls(&self) -> Vec<String> {
        self.servers
            .iter()
            .map(|s| format!("nats://127.0.0.1:{}", s.client_port))
            .collect()
    }

    /// Kills server `index` with SIGKILL.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.servers[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts server `index` again on its ports and store.
    pub fn restart(&mut self, index: usize) {
        let binary = nats_server_binary().expect("nats-server binary");
        self.kill(index);
        self.start_server(index, &binary);
        self.wait_ready();
    }

    pub fn pid(&self, index: usize) -> Option<u32> {
        self.servers[index].child.as_ref().map(Child::id)
    }
}

impl Drop for NatsServers {
    fn drop(&mut self) {
        for index in 0..self.servers.len() {
            self.kill(index);
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
