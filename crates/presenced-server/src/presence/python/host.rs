//! The Python host process: start, handshake, calls, supervision.
//!
//! Threads, not tasks: the first start happens inside the synchronous
//! start-up path, and every blocking pipe read or write stays on a thread
//! of its own, so a stuck host can never hold a tokio worker. Per host
//! process there is a writer (frames from a channel, written in batches),
//! a reader (answers to their waiting callers, pongs, logs, module API
//! calls) and a stderr reader (lines into the log). One supervisor thread
//! lives as long as the [`PythonHost`]: every 250 ms it pings the host and
//! checks that it is alive, answering pings, and under its memory cap;
//! otherwise it kills it, fails the calls in flight (their answers count
//! as empty) and starts a new one after a backoff of 1 s doubling to 60 s.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use presenced_engine::Presence;
use presenced_router::ModuleCommand;
use ruma_common::OwnedUserId;
use tokio::sync::{mpsc::UnboundedSender, oneshot};

use super::protocol::{self, FromHost, InitModule, ReadyModule, ToHost};
use super::stats::HostStats;

/// How long module imports and constructors may take at start.
const INIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the supervisor pings and checks the host.
const TICK: Duration = Duration::from_millis(250);
/// First and last restart delay.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A host that ran this long restarts after [`BACKOFF_MIN`] again.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// Lines of the host's stderr kept for a start-up error message.
const STDERR_TAIL: usize = 40;

/// What to start and how to watch it.
#[derive(Clone, Debug)]
pub struct HostSpec {
    /// The interpreter.
    pub python: PathBuf,
    /// Directories put first on `sys.path`.
    pub path: Vec<PathBuf>,
    /// `ModuleApi.server_name`.
    pub server_name: String,
    /// Every Python module, in load order.
    pub modules: Vec<InitModule>,
    /// The host is restarted when its event loop has not answered a ping
    /// for this long (a busy loop, a blocking C call).
    pub stall: Duration,
    /// The host is restarted past this resident memory, in bytes.
    pub max_rss: u64,
}

/// Why the host could not start; start-up of presenced fails with it.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The interpreter could not be run.
    #[error("Python interpreter `{python}` could not be started ({source}); set python_modules.python or PRESENCED_PYTHON to a Python 3.10 or newer")]
    Spawn {
        /// The configured interpreter.
        python: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The interpreter is older than 3.10.
    #[error("{message}")]
    TooOld {
        /// The host's own words, naming the interpreter and its version.
        message: String,
    },
    /// A module failed to load.
    #[error("Python module `{module}` failed to load ({kind}):\n{message}")]
    Module {
        /// `package.module.Class`.
        module: String,
        /// `import`, `parse_config`, `construct`, `registration`, ...
        kind: String,
        /// The module's traceback or message.
        message: String,
    },
    /// The host stopped or misbehaved before it was ready.
    #[error("the Python module host stopped during start-up ({reason}); its stderr:\n{stderr}")]
    Died {
        /// What was seen.
        reason: String,
        /// The end of its stderr.
        stderr: String,
    },
}

/// A call's failure, counted by kind in the module's metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The callback raised (the message is Python's traceback).
    Exception(String),
    /// The answer is not of the callback's declared type.
    WrongType(String),
    /// No answer within the deadline; the Python task was cancelled.
    Deadline,
    /// The host is not running (restarting after a crash or a kill).
    HostDown,
}

/// A call's answer or failure, as the reader hands it over.
type Reply = Result<serde_json::Value, CallError>;

/// The running host and its supervisor (cheap to clone).
#[derive(Clone)]
pub struct PythonHost {
    inner: Arc<Inner>,
}

struct Inner {
    spec: HostSpec,
    commands: UnboundedSender<ModuleCommand>,
    conn: RwLock<Option<Arc<Conn>>>,
    next_id: AtomicU64,
    stats: Arc<HostStats>,
}

/// One host process's channels.
struct Conn {
    frames: mpsc::Sender<Vec<u8>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    /// Milliseconds since `born` of the last pong.
    last_pong: AtomicU64,
    born: Instant,
}

impl Conn {
    fn send(&self, message: &ToHost<'_>) -> bool {
        self.frames.send(protocol::frame(message)).is_ok()
    }

    /// Fails every call in flight (the host is gone).
    fn fail_all(&self) {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        for (_, waiter) in pending {
            let _ = waiter.send(Err(CallError::HostDown));
        }
    }
}

/// A started host process before the supervisor takes it.
struct Process {
    child: Child,
    conn: Arc<Conn>,
    ready: Vec<ReadyModule>,
}

impl PythonHost {
    /// Starts the host and loads every module; fails with the module's
    /// own message when one does not load. `commands` receives the
    /// modules' module API calls.
    pub fn start(
        spec: HostSpec,
        commands: UnboundedSender<ModuleCommand>,
        stats: Arc<HostStats>,
    ) -> Result<(Self, Vec<usize>), StartError> {
        let inner = Arc::new(Inner {
            spec,
            commands,
            conn: RwLock::new(None),
            next_id: AtomicU64::new(1),
            stats,
        });
        let process = spawn(&inner)?;
        let pairs = (0..inner.spec.modules.len())
            .map(|i| {
                process
                    .ready
                    .iter()
                    .find(|m| m.index == i)
                    .map_or(0, |m| m.pairs)
            })
            .collect();
        *inner.conn.write().unwrap_or_else(|p| p.into_inner()) = Some(process.conn.clone());
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("python-supervisor".into())
            .spawn(move || supervise(weak, process))
            .expect("spawn the Python host supervisor");
        Ok((Self { inner }, pairs))
    }

    /// The counters of this host.
    pub fn stats(&self) -> &Arc<HostStats> {
        &self.inner.stats
    }

    /// Sends one call and waits for its answer, at most `deadline`; a
    /// missed deadline cancels the call's task in the host.
    pub async fn call<'a>(
        &self,
        deadline: Duration,
        make: impl FnOnce(u64) -> ToHost<'a>,
    ) -> Result<serde_json::Value, CallError> {
        let conn = self
            .inner
            .conn
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(CallError::HostDown)?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        conn.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        let mut guard = InFlight {
            conn: &conn,
            id,
            done: false,
        };
        if !conn.send(&make(id)) {
            return Err(CallError::HostDown);
        }
        let outcome = match tokio::time::timeout(deadline, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_dropped)) => Err(CallError::HostDown),
            Err(_elapsed) => return Err(CallError::Deadline),
        };
        guard.done = true;
        outcome
    }
}

/// Forgets a call whose caller stopped waiting (deadline, or the caller's
/// own future dropped) and cancels its task in the host.
struct InFlight<'a> {
    conn: &'a Conn,
    id: u64,
    done: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let removed = self
            .conn
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        if removed.is_some() {
            self.conn.send(&ToHost::Cancel { id: self.id });
        }
    }
}

/// Starts one host process and waits for `ready`.
fn spawn(inner: &Arc<Inner>) -> Result<Process, StartError> {
    let spec = &inner.spec;
    let mut child = Command::new(&spec.python)
        .arg("-c")
        .arg(protocol::BOOT)
        .arg(protocol::HOST_SOURCE)
        .args(protocol::HOST_PARTS)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| StartError::Spawn {
            python: spec.python.display().to_string(),
            source,
        })?;
    let stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");

    let tail = Arc::new(Mutex::new(Vec::<String>::new()));
    let modules: Vec<String> = spec.modules.iter().map(|m| m.module.clone()).collect();
    spawn_stderr_reader(stderr, tail.clone(), modules.join(", "));

    let (frames_tx, frames_rx) = mpsc::channel();
    let conn = Arc::new(Conn {
        frames: frames_tx,
        pending: Mutex::new(HashMap::new()),
        last_pong: AtomicU64::new(0),
        born: Instant::now(),
    });
    spawn_writer(stdin, frames_rx);
    conn.send(&ToHost::Init {
        server_name: &spec.server_name,
        path: spec.path.iter().map(|p| p.display().to_string()).collect(),
        modules: &spec.modules,
    });
    let (hello_tx, hello_rx) = mpsc::channel();
    spawn_reader(stdout, conn.clone(), inner, hello_tx);

    let died = |child: &mut Child, reason: String| {
        let _ = child.kill();
        let status = child.wait().ok();
        let stderr = tail.lock().unwrap_or_else(|p| p.into_inner()).join("\n");
        if status.and_then(|s| s.code()) == Some(protocol::EXIT_TOO_OLD) {
            return StartError::TooOld {
                message: stderr.trim().to_owned(),
            };
        }
        StartError::Died { reason, stderr }
    };
    match hello_rx.recv_timeout(INIT_TIMEOUT) {
        Ok(FromHost::Ready {
            python,
            executable,
            synapse,
            modules,
        }) => {
            tracing::info!(%python, %executable, %synapse, "Python module host ready");
            // The stall clock starts now, not at spawn: imports may be slow.
            let age = conn.born.elapsed().as_millis() as u64;
            conn.last_pong.store(age, Ordering::Relaxed);
            Ok(Process {
                child,
                conn,
                ready: modules,
            })
        }
        Ok(FromHost::InitError {
            module,
            kind,
            message,
        }) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(StartError::Module {
                module: module.unwrap_or_else(|| "?".to_owned()),
                kind,
                message,
            })
        }
        Ok(other) => Err(died(
            &mut child,
            format!("unexpected first frame {other:?}"),
        )),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(died(
            &mut child,
            format!("no answer within {INIT_TIMEOUT:?}"),
        )),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // Give the stderr reader a moment to collect the last lines.
            let status = child.wait().ok();
            std::thread::sleep(Duration::from_millis(50));
            let reason = match status {
                Some(s) => format!("it exited with {s}"),
                None => "it exited".to_owned(),
            };
            Err(died(&mut child, reason))
        }
    }
}

fn spawn_writer(mut stdin: ChildStdin, frames: mpsc::Receiver<Vec<u8>>) {
    std::thread::Builder::new()
        .name("python-writer".into())
        .spawn(move || {
            // Everything queued goes out in one write: under load, many
            // calls share one system call and one wake-up of the host.
            let mut batch = Vec::new();
            while let Ok(first) = frames.recv() {
                batch.clear();
                batch.extend_from_slice(&first);
                while let Ok(more) = frames.try_recv() {
                    batch.extend_from_slice(&more);
                }
                if stdin.write_all(&batch).is_err() {
                    return;
                }
            }
        })
        .expect("spawn the Python host writer");
}

fn spawn_stderr_reader(
    stderr: std::process::ChildStderr,
    tail: Arc<Mutex<Vec<String>>>,
    modules: String,
) {
    std::thread::Builder::new()
        .name("python-stderr".into())
        .spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                tracing::warn!(modules = %modules, "python: {line}");
                let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
                if tail.len() == STDERR_TAIL {
                    tail.remove(0);
                }
                tail.push(line);
            }
        })
        .expect("spawn the Python host stderr reader");
}

fn spawn_reader(
    stdout: std::process::ChildStdout,
    conn: Arc<Conn>,
    inner: &Arc<Inner>,
    hello: mpsc::Sender<FromHost>,
) {
    let commands = inner.commands.clone();
    let server_name = inner.spec.server_name.clone();
    std::thread::Builder::new()
        .name("python-reader".into())
        .spawn(move || {
            let mut stdout = BufReader::with_capacity(1 << 16, stdout);
            loop {
                let body = match protocol::read_frame(&mut stdout) {
                    Ok(Some(body)) => body,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!("Python module host sent a broken frame: {e}");
                        break;
                    }
                };
                let message: FromHost = match serde_json::from_slice(&body) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::error!("Python module host sent an unknown message: {e}");
                        continue;
                    }
                };
                dispatch(message, &conn, &commands, &server_name, &hello);
            }
            conn.fail_all();
        })
        .expect("spawn the Python host reader");
}

fn dispatch(
    message: FromHost,
    conn: &Conn,
    commands: &UnboundedSender<ModuleCommand>,
    server_name: &str,
    hello: &mpsc::Sender<FromHost>,
) {
    let answer = |id: u64, reply: Reply| {
        let waiter = conn
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        if let Some(waiter) = waiter {
            let _ = waiter.send(reply);
        }
    };
    match message {
        FromHost::Result { id, value } => answer(id, Ok(value)),
        FromHost::Error { id, kind, message } => answer(
            id,
            Err(if kind == "wrong_type" {
                CallError::WrongType(message)
            } else {
                CallError::Exception(message)
            }),
        ),
        FromHost::Pong { .. } => {
            let age = conn.born.elapsed().as_millis() as u64;
            conn.last_pong.store(age, Ordering::Relaxed);
        }
        FromHost::Log {
            logger,
            level,
            message,
            module,
        } => {
            let module = module.unwrap_or_default();
            match level.as_str() {
                "CRITICAL" | "ERROR" => tracing::error!(module, logger, "{message}"),
                "WARNING" => tracing::warn!(module, logger, "{message}"),
                "INFO" => tracing::info!(module, logger, "{message}"),
                _ => tracing::debug!(module, logger, "{message}"),
            }
        }
        FromHost::Api { id, method, args } => {
            let reply = match module_api(&method, &args, server_name) {
                Ok(command) => {
                    let _ = commands.send(command);
                    ToHost::ApiResult { id, value: None }
                }
                Err(message) => ToHost::ApiError { id, message },
            };
            conn.send(&reply);
        }
        hello_frame @ (FromHost::Ready { .. } | FromHost::InitError { .. }) => {
            let _ = hello.send(hello_frame);
        }
    }
}

/// A module API call from Python as the driver's command; a bad argument
/// is refused whole, so nothing half-applies.
fn module_api(
    method: &str,
    args: &serde_json::Value,
    _server_name: &str,
) -> Result<ModuleCommand, String> {
    let user = |u: &serde_json::Value| -> Result<OwnedUserId, String> {
        let s = u
            .as_str()
            .ok_or_else(|| format!("{method}: user ids must be strings, got {u}"))?;
        OwnedUserId::try_from(s).map_err(|e| format!("{method}: {s:?} is not a user id: {e}"))
    };
    match method {
        "send_local_online_presence_to" => {
            let users = args["users"]
                .as_array()
                .ok_or("send_local_online_presence_to: users must be a list")?;
            Ok(ModuleCommand::SendLocalOnlinePresenceTo(
                users.iter().map(user).collect::<Result<_, _>>()?,
            ))
        }
        "set_presence_for_users" => {
            let users = args["users"]
                .as_object()
                .ok_or("set_presence_for_users: users must be a mapping")?;
            let mut out = Vec::with_capacity(users.len());
            for (id, value) in users {
                let id = user(&serde_json::Value::String(id.clone()))?;
                let Some([state, msg]) = value.as_array().map(Vec::as_slice) else {
                    return Err(format!(
                        "set_presence_for_users: {id}: expected (state, status_msg), got {value}"
                    ));
                };
                let presence = state.as_str().and_then(Presence::parse).ok_or_else(|| {
                    format!("set_presence_for_users: invalid presence state {state} for {id}")
                })?;
                let msg = match msg {
                    serde_json::Value::Null => None,
                    serde_json::Value::String(s) => Some(s.clone()),
                    other => {
                        return Err(format!(
                            "set_presence_for_users: status_msg for {id} must be a string or None, got {other}"
                        ))
                    }
                };
                out.push((id, presence, msg));
            }
            Ok(ModuleCommand::SetPresenceForUsers(out))
        }
        other => Err(format!("unknown module API call {other}")),
    }
}

/// Watches the running host and restarts it; ends when the
/// [`PythonHost`] is dropped (killing the host).
fn supervise(inner: Weak<Inner>, mut process: Process) {
    let mut backoff = BACKOFF_MIN;
    let mut ping_id = 0u64;
    loop {
        std::thread::sleep(TICK);
        let Some(strong) = inner.upgrade() else {
            let _ = process.child.kill();
            let _ = process.child.wait();
            return;
        };
        let Some(reason) = unhealthy(&strong.spec, &mut process) else {
            ping_id += 1;
            process.conn.send(&ToHost::Ping { id: ping_id });
            continue;
        };
        // Stop routing to it first, so new calls fail fast as "host down".
        *strong.conn.write().unwrap_or_else(|p| p.into_inner()) = None;
        let _ = process.child.kill();
        let _ = process.child.wait();
        process.conn.fail_all();
        strong.stats.restarted(reason.label());
        let names: Vec<String> = strong
            .spec
            .modules
            .iter()
            .map(|m| m.module.clone())
            .collect();
        if process.conn.born.elapsed() > HEALTHY_RUN {
            backoff = BACKOFF_MIN;
        }
        tracing::error!(
            modules = %names.join(", "),
            "Python module host {reason}; killed, restarting in {backoff:?} (their answers count as empty meanwhile)"
        );
        drop(strong);
        process = loop {
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(BACKOFF_MAX);
            let Some(strong) = inner.upgrade() else {
                return;
            };
            match spawn(&strong) {
                Ok(next) => {
                    *strong.conn.write().unwrap_or_else(|p| p.into_inner()) =
                        Some(next.conn.clone());
                    tracing::info!(modules = %names.join(", "), "Python module host serving again");
                    break next;
                }
                Err(e) => {
                    strong.stats.restarted("start_failed");
                    tracing::error!(modules = %names.join(", "), "Python module host did not restart: {e}; next try in {backoff:?}");
                }
            }
        };
    }
}

/// Why a host has to go.
enum Unhealthy {
    Exited(String),
    Stalled(Duration),
    Memory(u64),
}

impl Unhealthy {
    fn label(&self) -> &'static str {
        match self {
            Self::Exited(_) => "exited",
            Self::Stalled(_) => "stalled",
            Self::Memory(_) => "memory",
        }
    }
}

impl std::fmt::Display for Unhealthy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exited(status) => write!(f, "exited ({status})"),
            Self::Stalled(for_) => write!(
                f,
                "stopped answering for {for_:?} (a module blocks its event loop)"
            ),
            Self::Memory(rss) => {
                write!(f, "uses {} MiB, over python_modules.max_rss_mb", rss >> 20)
            }
        }
    }
}

fn unhealthy(spec: &HostSpec, process: &mut Process) -> Option<Unhealthy> {
    if let Ok(Some(status)) = process.child.try_wait() {
        return Some(Unhealthy::Exited(status.to_string()));
    }
    let age = process.conn.born.elapsed();
    let last = Duration::from_millis(process.conn.last_pong.load(Ordering::Relaxed));
    let silent = age.saturating_sub(last);
    if silent > spec.stall {
        return Some(Unhealthy::Stalled(silent));
    }
    match resident_bytes(process.child.id()) {
        Some(rss) if rss > spec.max_rss => Some(Unhealthy::Memory(rss)),
        _ => None,
    }
}

/// Resident memory of a process (Linux `/proc`; elsewhere unknown, and the
/// cap is not enforced).
fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::module_api;
    use presenced_router::ModuleCommand;

    #[test]
    fn module_api_arguments_are_checked_whole() {
        let bad = serde_json::json!({"users": {"@a:x": ["online", null], "@b:x": ["away", null]}});
        let err = module_api("set_presence_for_users", &bad, "x").unwrap_err();
        assert!(err.contains("\"away\""), "{err}");
        let good = serde_json::json!({"users": ["@a:x"]});
        assert!(matches!(
            module_api("send_local_online_presence_to", &good, "x"),
            Ok(ModuleCommand::SendLocalOnlinePresenceTo(u)) if u.len() == 1
        ));
    }
}
