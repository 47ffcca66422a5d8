"""The latency presenced adds to a request it forwards to Synapse.

The same requests go straight to Synapse and through presenced,
interleaved on one kept-alive connection each (`whoami`, and a message
send into a fresh room), and the p50/p99 of each are printed with what
presenced adds. Used by scripts/companion-check (a short run) and
scripts/bench-vs-synapse.sh (BENCHMARKS.md's figures).

Three kinds: `whoami` (a GET), an account-data PUT (a body, nothing
pushed to presenced afterwards) and a message send (a room event, which
Synapse then pushes to presenced as an application-service transaction, a
few ms later, while the next request runs). A pause after each pair
(PAUSE_MS, default 0) lets that push finish first, to see the forwarding
alone.

Usage: forwarding_latency.py PRESENCED_URL SYNAPSE_URL TOKEN [ROUNDS] [PAUSE_MS] [--json LABEL]
With --json, one JSON line per request kind goes to stdout as well.
"""

import http.client
import json
import sys
import time
import urllib.parse
import urllib.request


def connection(base):
    host, port = urllib.parse.urlsplit(base).netloc.split(":")
    return http.client.HTTPConnection(host, int(port), timeout=30)


def timed(conn, token, method, path, body=None):
    headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
    start = time.perf_counter()
    conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
    answer = conn.getresponse()
    answer.read()
    assert answer.status == 200, (path, answer.status)
    return (time.perf_counter() - start) * 1000


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main():
    args = sys.argv[1:]
    label = None
    if "--json" in args:
        at = args.index("--json")
        label = args[at + 1]
        del args[at : at + 2]
    presenced, synapse, token = args[:3]
    rounds = int(args[3]) if len(args) > 3 else 300
    pause = (int(args[4]) if len(args) > 4 else 0) / 1000
    req = urllib.request.Request(
        presenced + "/_matrix/client/v3/createRoom", data=b"{}", method="POST",
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    room = json.load(urllib.request.urlopen(req))["room_id"]
    send = f"/_matrix/client/v3/rooms/{urllib.parse.quote(room)}/send/m.room.message/"
    direct, through = connection(synapse), connection(presenced)
    whoami = json.load(urllib.request.urlopen(urllib.request.Request(
        presenced + "/_matrix/client/v3/account/whoami",
        headers={"Authorization": "Bearer " + token})))["user_id"]
    account_data = f"/_matrix/client/v3/user/{urllib.parse.quote(whoami)}/account_data/org.example.latency"
    for name, path, body in [("whoami", "/_matrix/client/v3/account/whoami", None),
                             ("account data PUT", account_data, {"n": 1}),
                             ("message send", send, {"msgtype": "m.text", "body": "x"})]:
        method = "GET" if body is None else "PUT"
        fresh = path == send  # a message send needs a new transaction id each time
        d, t = [], []
        for _ in range(rounds):
            suffix = f"lat{time.time_ns()}" if fresh else ""
            d.append(timed(direct, token, method, path + suffix, body))
            time.sleep(pause)
            suffix = f"lat{time.time_ns()}" if fresh else ""
            t.append(timed(through, token, method, path + suffix, body))
            time.sleep(pause)
        figures = {
            "direct_p50_ms": percentile(d, .5), "direct_p99_ms": percentile(d, .99),
            "through_p50_ms": percentile(t, .5), "through_p99_ms": percentile(t, .99),
        }
        print(f"forwarding latency: {name}: straight to Synapse p50 {figures['direct_p50_ms']:.2f} ms "
              f"p99 {figures['direct_p99_ms']:.2f} ms; through presenced p50 {figures['through_p50_ms']:.2f} ms "
              f"p99 {figures['through_p99_ms']:.2f} ms (adds "
              f"{figures['through_p50_ms'] - figures['direct_p50_ms']:.2f} / "
              f"{figures['through_p99_ms'] - figures['direct_p99_ms']:.2f} ms)", file=sys.stderr)
        if label:
            print(json.dumps({"label": label, "kind": "forwarding", "request": name,
                              "rounds": rounds, "pause_ms": pause * 1000, **figures}), flush=True)


if __name__ == "__main__":
    main()
