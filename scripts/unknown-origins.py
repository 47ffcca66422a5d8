#!/usr/bin/env python3
"""Unauthenticated federation requests naming made-up origins.

Starts a `presenced` (default: target/release/presenced) on a fresh data
directory, sends N `PUT /_matrix/federation/v1/send/{txn}` requests, each
with an X-Matrix header naming a different made-up origin (a bad
signature: the server can only refuse them, after looking up the origin's
key), C at a time, and prints the wall time, the statuses seen and the
server's RSS before and after (VmRSS, and VmHWM, the peak).

    scripts/unknown-origins.py [--requests 3000] [--concurrency 1] [--binary PATH]

This is the issue-12 experiment "3,000 requests with distinct made-up
origins"; RELIABILITY.md quotes its figures.
"""

import argparse
import collections
import concurrent.futures
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def wait_up(port, proc):
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"presenced exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit("presenced did not come up")


def one(port, i):
    origin = f"made-up-{i}-{os.getpid()}.example"
    body = json.dumps({"origin": origin, "pdus": [], "edus": []})
    auth = (
        f'X-Matrix origin="{origin}",destination="unknown-origins.test",'
        f'key="ed25519:a",sig="aGVsbG8"'
    )
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.request(
        "PUT",
        f"/_matrix/federation/v1/send/t{i}",
        body=body,
        headers={"Authorization": auth, "Content-Type": "application/json"},
    )
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status, time.monotonic() - started


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=1)
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument(
        "--binary", default=os.path.join(here, "..", "target", "release", "presenced")
    )
    args = parser.parse_args()

    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        config = os.path.join(data, "presenced.yaml")
        with open(config, "w") as f:
            f.write(
                "server_name: unknown-origins.test\n"
                f"listeners: [{{port: {port}, bind_addresses: ['127.0.0.1']}}]\n"
                f"data_dir: {data}\n"
                "log: {level: warn}\n"
                "enable_metrics: true\n"
            )
        proc = subprocess.Popen(
            [args.binary, "--config", config],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_up(port, proc)
            before = rss_kib(proc.pid)
            statuses = collections.Counter()
            slowest = 0.0
            started = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
                for status, took in pool.map(lambda i: one(port, i), range(args.requests)):
                    statuses[status] += 1
                    slowest = max(slowest, took)
            elapsed = time.monotonic() - started
            after = rss_kib(proc.pid)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/metrics")
            metrics = conn.getresponse().read().decode()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(
        f"{args.requests} requests, concurrency {args.concurrency}: "
        f"{elapsed:.1f} s, slowest {slowest:.2f} s, statuses {dict(statuses)}"
    )
    print(
        f"RSS before {before['VmRSS'] / 1024:.1f} MiB, after {after['VmRSS'] / 1024:.1f} MiB "
        f"(peak {after['VmHWM'] / 1024:.1f} MiB)"
    )
    for line in metrics.splitlines():
        if line.startswith("presenced_federation_key_lookups_refused_total{"):
            print(line)


if __name__ == "__main__":
    main()
