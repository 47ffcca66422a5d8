"""A presenced cluster on loopback for tests: 3 nats-server processes as
one JetStream cluster (R3, `sync_interval: always`), a fresh PostgreSQL
database, N presenced nodes sharing both, and a random-node proxy in front.

Used by the nio client test under PRESENCED_TEST_CLUSTER=1 (same checks,
every request to a random node) and by scripts that need a cluster. Needs
the pinned nats-server (scripts/install-nats-server), `psql`, and a
PostgreSQL that answers at PRESENCED_TEST_POSTGRES (default
postgres://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from random_proxy import RandomProxy

ROOT = Path(__file__).resolve().parents[2]
NATS = Path(os.environ.get("PRESENCED_TEST_NATS_SERVER", ROOT / "target/nats-venv/bin/nats-server"))
START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, what: str, deadline: float, host: str = "127.0.0.1") -> None:
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not listen on {port}")
            time.sleep(0.05)


class Cluster:
    """Start with `start()`; `base_url` is the proxy's; `stop()` ends all."""

    def __init__(
        self,
        node_config: str,
        server_name: str,
        nodes: int = 3,
        private_pg: bool = False,
        bind: str = "127.0.0.1",
        pg_bind: str | None = None,
    ) -> None:
        """`node_config`: the YAML every node shares (no listeners, data_dir,
        database or cluster keys: the harness adds those). `private_pg`: a
        PostgreSQL of the harness's own (initdb as the `postgres` user), which
        a test may stop and start. `bind`: where NATS and that PostgreSQL
        listen (a node in another network namespace needs more than
        loopback)."""
        self.tmp = Path(tempfile.mkdtemp(prefix="presenced-cluster-"))
        self.private_pg = private_pg
        self.bind = bind
        self.host = "127.0.0.1" if bind in ("127.0.0.1", "0.0.0.0") else bind
        # The private PostgreSQL may listen elsewhere than NATS (a test that
        # cuts a node from NATS only).
        self.pg_bind = pg_bind or bind
        self.pg_host = "127.0.0.1" if self.pg_bind in ("127.0.0.1", "0.0.0.0") else self.pg_bind
        self.pg_port = 0
        self.nats_confs: list[Path] = []
        self.nats_monitor: list[int] = []
        # Per node: a command prefix (`ip netns exec NS`) and the address
        # the host reaches it at.
        self.wraps: dict[int, tuple[list[str], str]] = {}
        self.node_config = node_config
        self.server_name = server_name
        self.count = nodes
        self.nats: list[subprocess.Popen] = []
        self.nodes: list[subprocess.Popen | None] = []
        self.node_urls: list[str] = []
        self.configs: list[Path] = []
        self.proxy: RandomProxy | None = None
        self.base_url = ""
        pg = os.environ.get(
            "PRESENCED_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/postgres"
        )
        self.pg_admin = pg
        self.dbname = f"presenced_cluster_{os.getpid()}_{int(time.time() * 1000) % 10**8}"
        # JetStream's durability settings, for measuring what each costs
        # (scripts/bench-cluster --nats-sync / --unreplicated): every test
        # keeps the production ones, an fsync per write and 3 replicas.
        self.nats_sync = "always"
        self.unreplicated = False

    # ---- parts ----------------------------------------------------------

    def _psql(self, sql: str) -> None:
        subprocess.run(
            ["psql", self.pg_admin, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql],
            check=True,
            stdout=subprocess.DEVNULL,
        )

    # ---- a PostgreSQL of our own ----------------------------------------

    def _pg_bin(self, name: str) -> str:
        found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
        if not found:
            raise RuntimeError(f"no PostgreSQL server binaries ({name}) under /usr/lib/postgresql")
        return str(found[-1])

    def _as_postgres(self, *args: str) -> None:
        cmd = list(args)
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _start_private_pg(self) -> None:
        data = self.tmp / "pg"
        data.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.tmp, "postgres")
            shutil.chown(data, "postgres")
        self._as_postgres(self._pg_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust")
        # Nodes in another network namespace connect from their own address.
        with open(data / "pg_hba.conf", "a") as hba:
            hba.write("host all all 0.0.0.0/0 trust\n")
        self.pg_port = free_port()
        self.start_pg()
        self.pg_admin = f"postgres://postgres@{self.pg_host}:{self.pg_port}/postgres"

    def start_pg(self) -> None:
        """(Re)starts the private PostgreSQL and waits for it."""
        data = self.tmp / "pg"
        opts = f"-p {self.pg_port} -k {data} -c listen_addresses={self.pg_bind}"
        self._as_postgres(
            self._pg_bin("pg_ctl"), "-D", str(data), "-o", opts, "-l", str(data / "log"), "-w", "start"
        )

    def stop_pg(self) -> None:
        """Stops the private PostgreSQL (fast shutdown: sessions cut)."""
        self._as_postgres(self._pg_bin("pg_ctl"), "-D", str(self.tmp / "pg"), "-m", "fast", "-w", "stop")

    def _db_url(self) -> str:
        u = urllib.parse.urlsplit(self.pg_admin)
        return urllib.parse.urlunsplit((u.scheme, u.netloc, "/" + self.dbname, "", ""))

    def _start_nats(self) -> list[str]:
        if not NATS.exists():
            raise RuntimeError(f"{NATS} not found: run scripts/install-nats-server")
        clients = [free_port() for _ in range(3)]
        routes = [free_port() for _ in range(3)]
        self.nats_monitor = [free_port() for _ in range(3)]
        for i in range(3):
            conf = self.tmp / f"nats{i}.conf"
            self.nats_confs.append(conf)
            conf.write_text(
                f"server_name: n{i}\nlisten: {self.bind}:{clients[i]}\n"
                f"http: 127.0.0.1:{self.nats_monitor[i]}\n"
                f'jetstream {{\n  store_dir: "{self.tmp / f"nats{i}"}"\n  sync_interval: {self.nats_sync}\n}}\n'
                f"cluster {{\n  name: presenced_harness\n  listen: 127.0.0.1:{routes[i]}\n"
                f"  routes: [{', '.join(f'nats://127.0.0.1:{p}' for p in routes)}]\n}}\n"
            )
            self.nats.append(self._spawn_nats(i))
        deadline = time.monotonic() + START_TIMEOUT_S
        for port in clients:
            wait_port(port, "nats-server", deadline, self.host)
        return [f"nats://{self.host}:{p}" for p in clients]

    def _spawn_nats(self, i: int) -> subprocess.Popen:
        log = open(self.tmp / f"nats{i}.log", "ab")
        return subprocess.Popen([str(NATS), "-c", str(self.nats_confs[i])], stdout=log, stderr=log)

    def kill_nats(self, i: int) -> None:
        self.nats[i].kill()
        self.nats[i].wait()

    def restart_nats(self, i: int) -> None:
        self.nats[i] = self._spawn_nats(i)

    def stream_leader(self, stream: str) -> int | None:
        """Which NATS server leads `stream` now (from the monitoring port)."""
        import json  # noqa: PLC0415

        for port in self.nats_monitor:
            url = f"http://127.0.0.1:{port}/jsz?accounts=true&streams=true"
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    info = json.loads(r.read())
            except OSError:
                continue
            for account in info.get("account_details", []):
                for s in account.get("stream_detail", []):
                    if s.get("name") == stream:
                        leader = (s.get("cluster") or {}).get("leader", "")
                        if leader.startswith("n") and leader[1:].isdigit():
                            return int(leader[1:])
        return None

    def wrap_node(self, i: int, prefix: list[str], address: str) -> None:
        """Runs node `i` under `prefix` (before `start`), listening on every
        address of its namespace; the host reaches it at `address`."""
        self.wraps[i] = (prefix, address)

    def _write_node_config(self, i: int, port: int, nats: list[str]) -> Path:
        data = self.tmp / f"node{i}"
        data.mkdir(exist_ok=True)
        servers = ", ".join(f'"{u}"' for u in nats)
        conf = self.tmp / f"node{i}.yaml"
        conf.write_text(
            self.node_config
            + f"\nlisteners:\n  - port: {port}\n    bind_addresses: [\"{'0.0.0.0' if i in self.wraps else '127.0.0.1'}\"]\n    type: http\n"
            + f'data_dir: "{data}"\n'
            + f'signing_key_path: "{self.tmp / "signing.key"}"\n'
            + f'database:\n  url: "{self._db_url()}"\n'
            + f"cluster:\n  node_name: node{i}\n  nats_servers: [{servers}]\n"
            + ("  allow_unreplicated: true\n" if self.unreplicated else "")
        )
        return conf

    def start_node(self, i: int, binary: Path) -> None:
        log = open(self.tmp / f"node{i}.log", "ab")
        env = dict(os.environ)
        env.pop("RUST_LOG", None)
        prefix = self.wraps.get(i, ([], ""))[0]
        self.nodes[i] = subprocess.Popen(
            [*prefix, str(binary), "--config", str(self.configs[i])],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )

    def wait_healthy(self, i: int, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while True:
            proc = self.nodes[i]
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"node{i} exited with {proc.returncode}:\n{self.log_tail(i)}")
            try:
                with urllib.request.urlopen(self.node_urls[i] + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"node{i} /health did not answer 200:\n{self.log_tail(i)}")
            time.sleep(0.1)

    def kill_node(self, i: int) -> None:
        """`kill -9`: its leases run out and the others take its partitions."""
        proc = self.nodes[i]
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()

    # ---- the whole ------------------------------------------------------

    def start(self, binary: Path) -> None:
        if self.private_pg:
            self._start_private_pg()
        self._psql(f'CREATE DATABASE "{self.dbname}"')
        nats = self._start_nats()
        for i in range(self.count):
            port = free_port()
            address = self.wraps[i][1] if i in self.wraps else "127.0.0.1"
            self.node_urls.append(f"http://{address}:{port}")
            self.configs.append(self._write_node_config(i, port, nats))
            self.nodes.append(None)
        for i in range(self.count):
            self.start_node(i, binary)
        for i in range(self.count):
            self.wait_healthy(i)
        self.proxy = RandomProxy(self.node_urls).start()
        self.base_url = self.proxy.base_url

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        for proc in self.nodes:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for proc in self.nats:
            proc.kill()
            proc.wait()
        if self.private_pg:
            try:
                self.stop_pg()
            except (subprocess.CalledProcessError, RuntimeError):
                pass
            return
        try:
            self._psql(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')
        except subprocess.CalledProcessError:
            pass

    def log_tail(self, i: int | None = None, lines: int = 40) -> str:
        which = range(self.count) if i is None else [i]
        out = []
        for n in which:
            try:
                text = (self.tmp / f"node{n}.log").read_text(errors="replace").splitlines()
            except OSError:
                text = ["(no log)"]
            out.append(f"--- node{n}\n" + "\n".join(text[-lines:]))
        return "\n".join(out)

    def cleanup(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def main() -> int:
    """`harness.py serve SHARED_YAML SERVER_NAME BINARY PORT...`: starts a
    3-node cluster and a random-node proxy on each PORT, prints `ready`,
    and runs until SIGTERM or SIGINT (for shell scripts)."""
    import sys  # noqa: PLC0415

    if len(sys.argv) < 6 or sys.argv[1] != "serve":
        print(main.__doc__)
        return 2
    shared, server_name, binary = Path(sys.argv[2]).read_text(), sys.argv[3], Path(sys.argv[4])
    ports = [int(p) for p in sys.argv[5:]]
    cluster = Cluster(shared, server_name)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    proxies = []
    try:
        cluster.start(binary)
        proxies = [RandomProxy(cluster.node_urls, port).start() for port in ports]
        print(f"ready: nodes {' '.join(cluster.node_urls)}; logs in {cluster.tmp}", flush=True)
        while not stopping:
            time.sleep(0.2)
        return 0
    except Exception as e:  # noqa: BLE001
        print(f"cluster failed: {type(e).__name__}: {e}\n{cluster.log_tail()}", flush=True)
        return 1
    finally:
        for proxy in proxies:
            proxy.stop()
        cluster.stop()
        if os.environ.get("INTEROP_KEEP") != "1":
            cluster.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
