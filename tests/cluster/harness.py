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


def wait_port(port: int, what: str, deadline: float) -> None:
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not listen on {port}")
            time.sleep(0.05)


class Cluster:
    """Start with `start()`; `base_url` is the proxy's; `stop()` ends all."""

    def __init__(self, node_config: str, server_name: str, nodes: int = 3) -> None:
        """`node_config`: the YAML every node shares (no listeners, data_dir,
        database or cluster keys: the harness adds those)."""
        self.tmp = Path(tempfile.mkdtemp(prefix="presenced-cluster-"))
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

    # ---- parts ----------------------------------------------------------

    def _psql(self, sql: str) -> None:
        subprocess.run(
            ["psql", self.pg_admin, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql],
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def _db_url(self) -> str:
        u = urllib.parse.urlsplit(self.pg_admin)
        return urllib.parse.urlunsplit((u.scheme, u.netloc, "/" + self.dbname, "", ""))

    def _start_nats(self) -> list[str]:
        if not NATS.exists():
            raise RuntimeError(f"{NATS} not found: run scripts/install-nats-server")
        clients = [free_port() for _ in range(3)]
        routes = [free_port() for _ in range(3)]
        for i in range(3):
            conf = self.tmp / f"nats{i}.conf"
            conf.write_text(
                f"server_name: n{i}\nlisten: 127.0.0.1:{clients[i]}\n"
                f'jetstream {{\n  store_dir: "{self.tmp / f"nats{i}"}"\n  sync_interval: always\n}}\n'
                f"cluster {{\n  name: presenced_harness\n  listen: 127.0.0.1:{routes[i]}\n"
                f"  routes: [{', '.join(f'nats://127.0.0.1:{p}' for p in routes)}]\n}}\n"
            )
            log = open(self.tmp / f"nats{i}.log", "wb")
            self.nats.append(
                subprocess.Popen([str(NATS), "-c", str(conf)], stdout=log, stderr=log)
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        for port in clients:
            wait_port(port, "nats-server", deadline)
        return [f"nats://127.0.0.1:{p}" for p in clients]

    def _write_node_config(self, i: int, port: int, nats: list[str]) -> Path:
        data = self.tmp / f"node{i}"
        data.mkdir(exist_ok=True)
        servers = ", ".join(f'"{u}"' for u in nats)
        conf = self.tmp / f"node{i}.yaml"
        conf.write_text(
            self.node_config
            + f"\nlisteners:\n  - port: {port}\n    bind_addresses: [\"127.0.0.1\"]\n    type: http\n"
            + f'data_dir: "{data}"\n'
            + f'signing_key_path: "{self.tmp / "signing.key"}"\n'
            + f'database:\n  url: "{self._db_url()}"\n'
            + f"cluster:\n  node_name: node{i}\n  nats_servers: [{servers}]\n"
        )
        return conf

    def start_node(self, i: int, binary: Path) -> None:
        log = open(self.tmp / f"node{i}.log", "ab")
        env = dict(os.environ)
        env.pop("RUST_LOG", None)
        self.nodes[i] = subprocess.Popen(
            [str(binary), "--config", str(self.configs[i])],
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
        self._psql(f'CREATE DATABASE "{self.dbname}"')
        nats = self._start_nats()
        for i in range(self.count):
            port = free_port()
            self.node_urls.append(f"http://127.0.0.1:{port}")
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
