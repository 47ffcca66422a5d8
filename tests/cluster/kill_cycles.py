#!/usr/bin/env python3
"""kill -9 of presenced cluster nodes under load: no acknowledged PUT lost.

A 3-node cluster (3 nats-server R3, one PostgreSQL database) behind the
random-node proxy. Writer threads PUT presence for their own users
through the proxy, each PUT with a status message that counts up per user,
and remember the last one answered 200. Each cycle kills one node with
SIGKILL (it owns about a third of the partitions), starts it again once the
survivors have taken its partitions, and waits until it is healthy. At the
end every node must show, for every user, the last acknowledged message or
a later attempted one (a PUT that failed may still have been written):
anything older is an acknowledged update lost.

    kill_cycles.py [CYCLES]     (PRESENCED_TEST_KILL_CYCLES, default 3)

Prints `acked / checked / lost` and, per kill, the longest wait of any
user between two acknowledged PUTs across it (p50, p99, max: the takeover
as a client of the dead node's partitions sees it, PUTs that the front
node holds while no owner answers included). The proxy skips a node that
refuses connections, as a load balancer does. Exits 1 on any loss or a
cluster that stops acknowledging.
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ROOT, Cluster  # noqa: E402

BINARY = Path(os.environ.get("PRESENCED_BIN", ROOT / "target" / "debug" / "presenced"))
SERVER_NAME = "kill.test"
USERS = 24
WRITERS = 4
NODE_CONFIG = f"""\
server_name: "{SERVER_NAME}"
registration_shared_secret: "kill-cycles"
enable_registration: true
enable_registration_without_verification: true
password_hashing: {{memory_kib: 64, iterations: 1, parallelism: 1}}
rc_registration: {{per_second: 0}}
rc_presence: {{per_user: {{per_second: 100000, burst_count: 100000}}}}
log: {{level: warn}}
"""


def request(base: str, method: str, path: str, token: str | None = None, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")
    except OSError as e:
        return 0, {"error": str(e)}


def presence_path(user: str) -> str:
    return "/_matrix/client/v3/presence/" + user.replace("@", "%40").replace(":", "%3A") + "/status"


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]


def busiest_owner(cluster: Cluster) -> int:
    """The node owning most partitions (a restarted node owns none until
    its preferred partitions are handed back, about 10 s: killing it then
    would test nothing)."""
    owned = []
    for i, node in enumerate(cluster.node_urls):
        status, body = request(node, "GET", "/health")
        count = len(body.get("cluster", {}).get("owned_partitions", [])) if status == 200 else -1
        owned.append((count, random.random(), i))
    return max(owned)[2]


class Writer(threading.Thread):
    def __init__(self, base: str, users: list[tuple[str, str]], stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.base, self.users, self.stop = base, users, stop
        self.acked: dict[str, int] = {}
        self.attempted: dict[str, int] = {}
        self.last_ack: dict[str, float] = {}
        # Per kill: the longest wait between two acknowledged PUTs of one
        # user across it (what a client of the dead node's partitions sees).
        self.gaps: dict[float, float] = {}
        self.kill_at = 0.0
        self.acks = 0
        self.failures = 0
        self.lock = threading.Lock()

    def run(self) -> None:
        seq = 0
        while not self.stop.is_set():
            seq += 1
            for user, token in self.users:
                self.attempted[user] = seq
                status, _ = request(
                    self.base,
                    "PUT",
                    presence_path(user),
                    token,
                    {"presence": "online", "status_msg": f"w{seq}"},
                )
                now = time.monotonic()
                with self.lock:
                    if status == 200:
                        self.acked[user] = seq
                        self.acks += 1
                        before = self.last_ack.get(user)
                        if before is not None and self.kill_at and before <= self.kill_at <= now:
                            gap = now - before
                            self.gaps[self.kill_at] = max(self.gaps.get(self.kill_at, 0.0), gap)
                        self.last_ack[user] = now
                    else:
                        self.failures += 1


def register_users(base: str, count: int) -> list[tuple[str, str]]:
    users = []
    for i in range(count):
        status, body = request(
            base,
            "POST",
            "/_matrix/client/v3/register",
            body={"username": f"u{i}", "password": "pw", "auth": {"type": "m.login.dummy"}},
        )
        if status != 200:
            raise RuntimeError(f"register u{i}: {status} {body}")
        users.append((body["user_id"], body["access_token"]))
    return users


def start_writers(base: str, users: list[tuple[str, str]]) -> tuple[threading.Event, list[Writer]]:
    stop = threading.Event()
    writers = [Writer(base, users[w::WRITERS], stop) for w in range(WRITERS)]
    for w in writers:
        w.start()
    return stop, writers


def mark_fault(writers: list[Writer]) -> None:
    """A fault starts now: gaps across it are measured."""
    at = time.monotonic()
    for w in writers:
        with w.lock:
            w.kill_at = at


def stop_and_check(
    cluster: Cluster,
    stop: threading.Event,
    writers: list[Writer],
    users: list[tuple[str, str]],
    nodes: list[int] | None = None,
) -> list[str]:
    """Stops the writers; every node (of `nodes`) must come to show each
    user's last acknowledged message or a later attempted one. Returns
    what was lost."""
    stop.set()
    for w in writers:
        w.join(timeout=60)
    acked = {u: s for w in writers for u, s in w.acked.items()}
    attempted = {u: s for w in writers for u, s in w.attempted.items()}
    lost: list[str] = []
    for user, token in users:
        for i in nodes if nodes is not None else range(cluster.count):
            node = cluster.node_urls[i]
            deadline = time.monotonic() + 10
            while True:
                status, body = request(node, "GET", presence_path(user), token)
                msg = body.get("status_msg") or "w0"
                seen = int(msg[1:]) if status == 200 else -1
                if acked.get(user, 0) <= seen <= attempted.get(user, 0):
                    break
                if time.monotonic() > deadline:
                    lost.append(f"{user} on node{i}: shows {msg!r} ({status}), acked w{acked.get(user)}")
                    break
                time.sleep(0.1)
    return lost


def gaps_per_fault(writers: list[Writer]) -> list[float]:
    per_fault: dict[float, float] = {}
    for w in writers:
        for at, gap in w.gaps.items():
            per_fault[at] = max(per_fault.get(at, 0.0), gap)
    return list(per_fault.values())


def main() -> int:
    cycles = int(sys.argv[1]) if len(sys.argv) > 1 else int(
        os.environ.get("PRESENCED_TEST_KILL_CYCLES", "3")
    )
    if not BINARY.exists():
        print(f"{BINARY} not found: run `cargo build --bin presenced`")
        return 1
    cluster = Cluster(NODE_CONFIG, SERVER_NAME)
    started = time.monotonic()
    try:
        cluster.start(BINARY)
        users = register_users(cluster.base_url, USERS)
        stop, writers = start_writers(cluster.base_url, users)
        time.sleep(3)
        for cycle in range(cycles):
            victim = busiest_owner(cluster)
            mark_fault(writers)
            cluster.kill_node(victim)
            # The survivors take its partitions within the lease (6 s);
            # then it comes back, owning nothing until another node dies.
            time.sleep(8)
            cluster.start_node(victim, BINARY)
            cluster.wait_healthy(victim)
            time.sleep(2)
            acks = sum(w.acks for w in writers)
            print(f"cycle {cycle + 1}/{cycles}: killed node{victim}, {acks} acknowledged so far", flush=True)
        lost = stop_and_check(cluster, stop, writers, users)
        resumed = gaps_per_fault(writers)
        total_acks = sum(w.acks for w in writers)
        failures = sum(w.failures for w in writers)
        print(
            f"kill cycles: {cycles} kills, acked {total_acks} PUTs ({failures} failed or refused), "
            f"checked {len(users)} users x {cluster.count} nodes, lost {len(lost)}; "
            f"longest wait for an acknowledged PUT across a kill p50 {percentile(resumed, 0.5):.2f} s, "
            f"p99 {percentile(resumed, 0.99):.2f} s, max {max(resumed, default=0):.2f} s "
            f"({time.monotonic() - started:.0f} s)",
            flush=True,
        )
        for line in lost[:20]:
            print(f"LOST {line}")
        if total_acks == 0:
            print("FAIL: nothing was acknowledged")
            return 1
        return 1 if lost else 0
    except Exception as e:  # noqa: BLE001
        print(f"FAIL: {type(e).__name__}: {e}")
        print(cluster.log_tail())
        return 1
    finally:
        cluster.stop()
        cluster.cleanup()


if __name__ == "__main__":
    sys.exit(main())
