//! Two (or more) real presenced servers on loopback that federate over
//! TLS: a test CA made here (rcgen) signs one certificate for `localhost`
//! and 127.0.0.1, every server serves it on its federation listener and
//! trusts the CA through `federation_custom_ca_list`. Server names are
//! `localhost:<federation port>`, so discovery is direct (no DNS, SRV or
//! well-known). Each server also has a plain client listener, which the
//! usual [`TestApp`] helpers drive.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use presenced_server::config::presence::ModuleConfig;
use presenced_server::config::{Config, PasswordHashing, Secret};
use presenced_server::process::startup;
use serde_json::json;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::helpers::{install_test_log, TestApp, SECRET};

/// A CA and a `localhost` certificate it signed, as PEM files.
pub struct TestCa {
    _dir: TempDir,
    /// The CA certificate (what `federation_custom_ca_list` names).
    pub ca_path: PathBuf,
    /// The server certificate (chain: leaf only).
    pub cert_path: PathBuf,
    /// Its private key.
    pub key_path: PathBuf,
    /// The CA certificate in PEM, for test clients.
    pub ca_pem: String,
}

impl TestCa {
    /// A fresh CA and `localhost` / 127.0.0.1 / ::1 certificate.
    pub fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "presenced test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_path = dir.path().join("ca.crt");
        let cert_path = dir.path().join("server.crt");
        let key_path = dir.path().join("server.key");
        std::fs::write(&ca_path, ca.pem()).unwrap();
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        Self {
            _dir: dir,
            ca_path,
            cert_path,
            key_path,
            ca_pem: ca.pem(),
        }
    }

    /// An HTTPS client trusting only the test CA.
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap())
            .build()
            .unwrap()
    }
}

/// A listener task and the way to stop it.
struct Serving {
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Serving {
    fn start(
        listener: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        resources: &'static [&'static str],
        state: Arc<presenced_server::AppState>,
    ) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(presenced_server::run_listener(
            listener,
            tls,
            resources,
            state,
            async move {
                let _ = stopped.await;
            },
        ));
        Self { stop, task }
    }

    /// Stops accepting and waits until the port is released (in-flight
    /// requests get a generous while, then the task is aborted).
    async fn stop(self) {
        let _ = self.stop.send(());
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(30), &mut task)
            .await
            .is_err()
        {
            task.abort();
            let _ = task.await;
        }
    }
}

/// Binds 127.0.0.1:`port` (0: any), retrying while a just-closed
/// listener still holds it.
pub async fn bind(port: u16) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await {
            Ok(l) => return l,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot bind port {port}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One federating presenced.
pub struct FedServer {
    /// The running instance, driven through its client listener.
    pub app: TestApp,
    /// `localhost:<federation port>`.
    pub name: String,
    /// The federation (TLS) port.
    pub fed_port: u16,
    config: Config,
    federation: Option<Serving>,
    client: Option<Serving>,
    _data: Arc<TempDir>,
}

/// A fresh data directory and the config of a server named
/// `localhost:<port>` trusting `ca`, with metrics on.
pub fn fed_config(ca: &TestCa, data: &TempDir, fed_port: u16) -> Config {
    Config {
        server_name: format!("localhost:{fed_port}").try_into().unwrap(),
        data_dir: data.path().to_owned(),
        registration_shared_secret: Some(Secret::new(SECRET)),
        password_hashing: PasswordHashing {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        },
        enable_metrics: true,
        federation_custom_ca_list: Some(vec![ca.ca_path.clone()]),
        // Both servers live on loopback, which the default
        // ip_range_blacklist blocks.
        ip_range_whitelist: loopback(),
        tls_certificate_path: Some(ca.cert_path.clone()),
        tls_private_key_path: Some(ca.key_path.clone()),
        ..Config::default()
    }
}

/// `ip_range_whitelist` entries for servers on this machine.
pub fn loopback() -> presenced_server::config::IpRanges {
    serde_yaml::from_str("['127.0.0.0/8', '::1/128']").unwrap()
}

/// `StaticRoutes` sending each `(receiver, senders)` pair's senders'
/// presence to the receiver.
pub fn static_routes(routes: &[(&str, &[&str])]) -> ModuleConfig {
    let routes: Vec<_> = routes
        .iter()
        .map(|(receiver, senders)| json!({"receiver": receiver, "senders": senders}))
        .collect();
    ModuleConfig {
        module: "presenced.routers.StaticRoutes".to_owned(),
        config: json!({ "routes": routes }),
        deadline_ms: None,
    }
}

impl FedServer {
    /// Starts a server on the already bound federation listener.
    pub async fn start(ca: &TestCa, fed: TcpListener, tweak: impl FnOnce(&mut Config)) -> Self {
        let data = Arc::new(tempfile::tempdir().unwrap());
        let fed_port = fed.local_addr().unwrap().port();
        let mut config = fed_config(ca, &data, fed_port);
        crate::ops::generous(&mut config);
        tweak(&mut config);
        let mut server = Self {
            app: instance(&config).await,
            name: config.server_name.to_string(),
            fed_port,
            config,
            federation: None,
            client: None,
            _data: data,
        };
        server.serve(fed).await;
        server
    }

    /// Serves the federation listener (TLS) and a fresh client listener.
    async fn serve(&mut self, fed: TcpListener) {
        self.serve_federation(fed);
        let client = bind(0).await;
        self.app.base = format!("http://{}", client.local_addr().unwrap());
        self.client = Some(Serving::start(
            client,
            None,
            &["client"],
            self.app.state.clone(),
        ));
    }

    /// `https://localhost:<port>`.
    pub fn fed_base(&self) -> String {
        format!("https://localhost:{}", self.fed_port)
    }

    /// Takes the federation listener down (the server keeps running, as
    /// if the network to it were cut).
    pub async fn stop_federation(&mut self) {
        if let Some(serving) = self.federation.take() {
            serving.stop().await;
        }
    }

    /// Serves federation again on the same port.
    pub async fn resume_federation(&mut self) {
        let fed = bind(self.fed_port).await;
        self.serve_federation(fed);
    }

    /// Serves the federation resource over TLS on `fed`.
    fn serve_federation(&mut self, fed: TcpListener) {
        let tls = presenced_server::federation::tls::server_config(
            self.config.tls_certificate_path.as_ref().unwrap(),
            self.config.tls_private_key_path.as_ref().unwrap(),
        )
        .unwrap();
        self.federation = Some(Serving::start(
            fed,
            Some(tls),
            &["federation"],
            self.app.state.clone(),
        ));
    }

    /// Stops the whole server as the binary does on SIGTERM (presence
    /// flushed; queued federation presence stays in the outbox), then
    /// starts a new instance on the same data directory and ports.
    pub async fn restart(&mut self) {
        let state = self.app.state.clone();
        state.presence.shut_down();
        state.outbound.shut_down();
        for serving in [self.federation.take(), self.client.take()]
            .into_iter()
            .flatten()
        {
            serving.stop().await;
        }
        let store = presenced_server::store::presence::SqlitePresenceStore::open(
            &self.config.database_path(),
        )
        .unwrap();
        state.presence.flush(&store);
        self.app = instance(&self.config).await;
        let fed = bind(self.fed_port).await;
        self.serve(fed).await;
    }

    /// A counter from `/metrics` (0 when absent).
    pub async fn metric(&self, name: &str) -> u64 {
        crate::helpers::metric_value(&self.app.metrics_text().await, name) as u64
    }
}

/// A new server instance over `config` (no listeners yet).
async fn instance(config: &Config) -> TestApp {
    install_test_log();
    let (state, receivers, _) = startup::build_state(config.clone()).unwrap();
    let receivers = presenced_server::process::feeds::spawn(&state, receivers);
    TestApp {
        base: String::new(),
        client: reqwest::Client::new(),
        state,
        membership_rx: receivers.membership_rx,
        activity_rx: receivers.activity_rx,
        _dir: tempfile::tempdir().unwrap(),
        _db: None,
        _cluster: None,
    }
}
