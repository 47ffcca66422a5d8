#!/usr/bin/env python3
"""Faults other than kill -9, on a 3-node presenced cluster under PUT load
through the random-node proxy (the load and the check of kill_cycles.py):

- `sigstop`: SIGSTOP the busiest partition owner past its lease, SIGCONT
  it: the others took its partitions, its held writes are fenced off (no
  acknowledged PUT lost, every node ends on the same states).
- `nats-leader`: kill -9 the nats-server leading partition 0's stream, start
  it again: JetStream elects another leader, no acknowledged PUT lost.
- `postgres`: stop the cluster's PostgreSQL (its own instance, fast
  shutdown) for 5 s and start it again: requests fail meanwhile, then the
  nodes serve again by themselves (no restart), nothing acknowledged lost.
- `netns-cut`: one node in its own network namespace, joined by a veth
  pair; the link goes down: within the lease plus a few seconds its
  /health answers 503 and its PUTs 503 at once, the other nodes keep
  acknowledging; the link comes back and so does the node.

    faults.py [SCENARIO...]      (default: all)

Exits 1 on any loss or check that fails. Needs what the harness needs; the
netns scenario needs root and `ip` (it says so and fails otherwise).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Cluster  # noqa: E402
from kill_cycles import (  # noqa: E402
    BINARY,
    NODE_CONFIG,
    SERVER_NAME,
    USERS,
    busiest_owner,
    gaps_per_fault,
    mark_fault,
    percentile,
    presence_path,
    register_users,
    request,
    start_writers,
    stop_and_check,
)


def wait_until(what: str, check, timeout: float) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.2)
    return time.monotonic() - started


def sigstop(cluster: Cluster, writers) -> str:
    victim = busiest_owner(cluster)
    proc = cluster.nodes[victim]
    mark_fault(writers)
    proc.send_signal(signal.SIGSTOP)
    time.sleep(10)  # past the 6 s lease: the others own its partitions
    proc.send_signal(signal.SIGCONT)
    time.sleep(5)
    return f"node{victim} stopped 10 s"


def nats_leader(cluster: Cluster, writers) -> str:
    leader = cluster.stream_leader("PRES_1_0")
    if leader is None:
        raise RuntimeError("no leader found for stream PRES_1_0")
    mark_fault(writers)
    cluster.kill_nats(leader)
    time.sleep(8)
    cluster.restart_nats(leader)
    time.sleep(5)
    return f"nats n{leader} (leader of PRES_1_0) killed 8 s"


def postgres(cluster: Cluster, writers) -> str:
    mark_fault(writers)
    cluster.stop_pg()
    time.sleep(5)
    cluster.start_pg()
    user, token = writers[0].users[0]

    def served() -> bool:
        status, _ = request(cluster.base_url, "GET", presence_path(user), token)
        return status == 200

    took = wait_until("service back after PostgreSQL restarted", served, 30)
    time.sleep(3)
    return f"PostgreSQL stopped 5 s; serving again {took:.1f} s after its restart"


SCENARIOS = {"sigstop": sigstop, "nats-leader": nats_leader, "postgres": postgres}


def run_load_scenarios(names: list[str]) -> bool:
    cluster = Cluster(NODE_CONFIG, SERVER_NAME, private_pg=True)
    ok = True
    try:
        cluster.start(BINARY)
        users = register_users(cluster.base_url, USERS)
        stop, writers = start_writers(cluster.base_url, users)
        time.sleep(3)
        done = []
        for name in names:
            done.append(SCENARIOS[name](cluster, writers))
            print(f"{name}: {done[-1]}", flush=True)
        lost = stop_and_check(cluster, stop, writers, users)
        gaps = gaps_per_fault(writers)
        acks = sum(w.acks for w in writers)
        failures = sum(w.failures for w in writers)
        print(
            f"faults ({', '.join(names)}): acked {acks} PUTs ({failures} failed or refused), "
            f"checked {len(users)} users x {cluster.count} nodes, lost {len(lost)}; longest wait "
            f"for an acknowledged PUT across a fault p50 {percentile(gaps, 0.5):.2f} s, "
            f"max {max(gaps, default=0):.2f} s",
            flush=True,
        )
        for line in lost[:20]:
            print(f"LOST {line}")
        ok = not lost and acks > 0
    except Exception as e:  # noqa: BLE001
        print(f"FAIL: {type(e).__name__}: {e}")
        print(cluster.log_tail())
        ok = False
    finally:
        cluster.stop()
        cluster.cleanup()
    return ok


# ---- a node cut off by its network namespace --------------------------------

def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True)


def netns_cut() -> bool:
    """Node 2 runs in its own network namespace with two links to the
    host: one to NATS, one to PostgreSQL and its clients. Taking the NATS
    link down cuts it from the bus only, as the issue's scenario says."""
    if os.geteuid() != 0:
        print("FAIL: netns-cut needs root (network namespaces)")
        return False
    tag = f"pc{os.getpid() % 100000}"
    ns = tag
    octet = 16 + os.getpid() % 200
    links = {
        # name: (host side, namespace side, host address, namespace address)
        "nats": (f"{tag}a", f"{tag}A", f"10.{octet}.77.1", f"10.{octet}.77.2"),
        "rest": (f"{tag}b", f"{tag}B", f"10.{octet}.78.1", f"10.{octet}.78.2"),
    }
    ip("netns", "add", ns)
    cluster = None
    try:
        for host_if, ns_if, host_ip, ns_ip in links.values():
            ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
            ip("link", "set", ns_if, "netns", ns)
            ip("addr", "add", f"{host_ip}/30", "dev", host_if)
            ip("link", "set", host_if, "up")
            ip("-n", ns, "addr", "add", f"{ns_ip}/30", "dev", ns_if)
            ip("-n", ns, "link", "set", ns_if, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        nats_if, _, nats_host, _ = links["nats"]
        _, _, rest_host, rest_ns = links["rest"]
        # NATS listens on the NATS link's host address, PostgreSQL on the
        # other; nodes 0 and 1 reach both from the host, node 2 through its
        # links, and everyone reaches node 2 at its address on the second.
        cluster = Cluster(NODE_CONFIG, SERVER_NAME, private_pg=True, bind=nats_host, pg_bind=rest_host)
        cluster.wrap_node(2, ["ip", "netns", "exec", ns], rest_ns)
        cluster.start(BINARY)
        users = register_users(cluster.base_url, 6)
        cut = cluster.node_urls[2]

        def health(node: str) -> int:
            return request(node, "GET", "/health")[0]

        user, token = users[0]
        if health(cut) != 200:
            raise RuntimeError("node 2 is not healthy before the cut")
        ip("link", "set", nats_if, "down")
        cut_at = time.monotonic()
        took = wait_until("node 2 /health 503 after the cut", lambda: health(cut) == 503, 30)
        asked = time.monotonic()
        req = urllib.request.Request(
            cut + presence_path(user),
            data=json.dumps({"presence": "online", "status_msg": "cut"}).encode(),
            method="PUT",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            urllib.request.urlopen(req, timeout=30)
            status, retry_after = 200, ""
        except urllib.error.HTTPError as e:
            status, retry_after = e.code, e.headers.get("Retry-After", "")
        answer_s = time.monotonic() - asked
        if status != 503 or retry_after != "1" or answer_s > 2:
            raise RuntimeError(
                f"a PUT on the cut node answered {status} (Retry-After {retry_after!r}) in {answer_s:.1f} s"
            )
        # It still serves reads (stale is fine).
        if request(cut, "GET", presence_path(user), token)[0] != 200:
            raise RuntimeError("the cut node stopped serving reads")

        # The others took its partitions: every user writable through them.
        def writable(node: str) -> bool:
            return all(
                request(node, "PUT", presence_path(u), t, {"presence": "online", "status_msg": "during"})[0]
                == 200
                for u, t in users
            )

        others = wait_until("the other nodes acknowledge every user", lambda: writable(cluster.node_urls[0]), 30)
        ip("link", "set", nats_if, "up")
        back = wait_until("node 2 healthy after the link came back", lambda: health(cut) == 200, 60)
        wait_until("node 2 acknowledges again", lambda: writable(cut), 30)
        print(
            f"netns-cut: node 2 unhealthy {took:.1f} s after its NATS link went down (lease 6 s), "
            f"its PUT answered 503 in {answer_s * 1000:.0f} ms while reads went on, the others "
            f"acknowledged every user within {took + others:.1f} s of the cut, node 2 healthy "
            f"{back:.1f} s after the link came back ({time.monotonic() - cut_at:.0f} s)",
            flush=True,
        )
        return True
    except Exception as e:  # noqa: BLE001
        print(f"FAIL netns-cut: {type(e).__name__}: {e}")
        if cluster is not None:
            print(cluster.log_tail())
        return False
    finally:
        if cluster is not None:
            cluster.stop()
            cluster.cleanup()
        for host_if, *_ in links.values():
            subprocess.run(["ip", "link", "del", host_if], stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)


def main() -> int:
    names = sys.argv[1:] or [*SCENARIOS, "netns-cut"]
    unknown = [n for n in names if n not in SCENARIOS and n != "netns-cut"]
    if unknown:
        print(f"unknown scenarios {unknown}; known: {[*SCENARIOS, 'netns-cut']}")
        return 2
    if not BINARY.exists():
        print(f"{BINARY} not found: run `cargo build --bin presenced`")
        return 1
    ok = True
    load = [n for n in names if n in SCENARIOS]
    if load:
        ok &= run_load_scenarios(load)
    if "netns-cut" in names:
        ok &= netns_cut()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
