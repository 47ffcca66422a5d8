"""Client side of scripts/interop-synapse.sh: presence across federation.

Registers users on both servers (Synapse's shared-secret registration,
which presenced serves too), sets presence on one side and long-polls
/sync on the other until the update is seen, both ways, several times.
Prints PUT -> first-sighting times; exits 1 when an update does not cross
within the deadline or reaches a user it was not routed to.

Standard library only, so any python3 runs it.

Usage: drive.py SYNAPSE_URL SYNAPSE_SECRET PRESENCED_URL PRESENCED_SECRET
       [--rounds N] [--deadline SECONDS]
"""

import argparse
import hashlib
import hmac
import json
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

PASSWORD = "interop-password-1"


def call(base, method, path, body=None, token=None, timeout=30):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{method} {base}{path}: HTTP {e.code}: {e.read()[:300]!r}")


def register(base, secret, localpart):
    """Shared-secret registration: HMAC-SHA1 over nonce, user, password, admin."""
    path = "/_synapse/admin/v1/register"
    nonce = call(base, "GET", path)["nonce"]
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha1)
    mac.update(b"\x00".join([nonce.encode(), localpart.encode(), PASSWORD.encode(), b"notadmin"]))
    answer = call(base, "POST", path, {
        "nonce": nonce, "username": localpart, "password": PASSWORD,
        "admin": False, "mac": mac.hexdigest(),
    })
    return answer["user_id"], answer["access_token"]


class Watcher(threading.Thread):
    """Long-polls /sync for one user and records each presence event seen,
    with the monotonic time its response arrived. `set_presence=offline`
    keeps the syncing itself from changing the user's presence."""

    def __init__(self, name, base, token):
        super().__init__(daemon=True, name=name)
        self.base, self.token = base, token
        self.seen = []  # (monotonic time, sender, presence, status_msg)
        self.errors = []
        self.cond = threading.Condition()
        self.since = None
        self.stop = False

    def sync_once(self, timeout_ms):
        query = {"timeout": str(timeout_ms), "set_presence": "offline"}
        if self.since:
            query["since"] = self.since
        answer = call(self.base, "GET", "/_matrix/client/v3/sync?" + urllib.parse.urlencode(query),
                      token=self.token, timeout=timeout_ms / 1000 + 30)
        now = time.monotonic()
        self.since = answer["next_batch"]
        events = answer.get("presence", {}).get("events", [])
        with self.cond:
            for ev in events:
                c = ev.get("content", {})
                self.seen.append((now, ev.get("sender"), c.get("presence"), c.get("status_msg")))
            self.cond.notify_all()

    def run(self):
        while not self.stop:
            try:
                self.sync_once(5000)
            except Exception as e:  # keep polling: a hiccup must not end the run
                self.errors.append(str(e))
                time.sleep(0.5)

    def wait_for(self, sender, status_msg, after, deadline):
        """The first sighting of `sender` with `status_msg` after `after`."""
        with self.cond:
            while True:
                for (t, s, _p, m) in self.seen:
                    if t >= after and s == sender and m == status_msg:
                        return t
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def sightings_of(self, sender):
        with self.cond:
            return [x for x in self.seen if x[1] == sender]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("synapse_url")
    ap.add_argument("synapse_secret")
    ap.add_argument("presenced_url")
    ap.add_argument("presenced_secret")
    ap.add_argument("--rounds", type=int, default=4, help="deliveries per direction")
    ap.add_argument("--deadline", type=float, default=60.0, help="seconds per delivery")
    ap.add_argument("--only", choices=["synapse->presenced", "presenced->synapse"],
                    help="test one direction only (debugging)")
    ap.add_argument("--quiet-wait", type=float, default=3.0,
                    help="seconds the unrouted users keep listening at the end")
    args = ap.parse_args()

    syn, pd = args.synapse_url, args.presenced_url
    alice, alice_tok = register(syn, args.synapse_secret, "alice")
    carol, carol_tok = register(syn, args.synapse_secret, "carol")
    bob, bob_tok = register(pd, args.presenced_secret, "bob")
    dave, dave_tok = register(pd, args.presenced_secret, "dave")
    print(f"drive: routed {alice} <-> {bob}; unrouted {carol}, {dave}", flush=True)

    watchers = {
        "alice": Watcher("alice", syn, alice_tok), "carol": Watcher("carol", syn, carol_tok),
        "bob": Watcher("bob", pd, bob_tok), "dave": Watcher("dave", pd, dave_tok),
    }
    for w in watchers.values():
        w.sync_once(0)  # initial sync: a since token, so only new events follow
        w.start()

    directions = [
        # (label, sender, its server, its token, watcher that must see it)
        ("synapse->presenced", alice, syn, alice_tok, watchers["bob"]),
        ("presenced->synapse", bob, pd, bob_tok, watchers["alice"]),
    ]
    if args.only:
        directions = [d for d in directions if d[0] == args.only]
    times = {label: [] for (label, *_rest) in directions}
    # One direction after the other, so a direction that does not work yet
    # still lets the other one be measured.
    failures = []
    for (label, sender, base, token, watcher) in directions:
        for rnd in range(args.rounds):
            presence = "online" if rnd % 2 == 0 else "unavailable"
            msg = f"interop {label} #{rnd + 1}"
            t0 = time.monotonic()
            call(base, "PUT", "/_matrix/client/v3/presence/" + urllib.parse.quote(sender) + "/status",
                 {"presence": presence, "status_msg": msg}, token=token)
            seen = watcher.wait_for(sender, msg, t0, t0 + args.deadline)
            if seen is None:
                why = f"{label}: {sender} {presence} {msg!r} not seen by {watcher.name} within {args.deadline:.0f} s"
                others = watcher.sightings_of(sender)
                if others:
                    why += f"; it saw other updates of {sender}: {[(p, m) for (_t, _s, p, m) in others]}"
                if watcher.errors:
                    why += f"; its /sync errors: {watcher.errors[-3:]}"
                failures.append(why)
                print("drive: " + why, flush=True)
                break
            times[label].append((seen - t0) * 1000)
            print(f"drive: {label} delivery {rnd + 1}: {(seen - t0) * 1000:.0f} ms", flush=True)

    # The unrouted users: keep listening a little, then nothing of the other
    # side must have reached them.
    time.sleep(args.quiet_wait)
    for (name, foreign) in (("carol", bob), ("dave", alice)):
        leaked = watchers[name].sightings_of(foreign)
        if leaked:
            failures.append(f"unrouted {name} saw {foreign}'s presence: {leaked}")
    if not any(f.startswith("unrouted") for f in failures):
        print(f"drive: unrouted {carol} and {dave} saw nothing of {bob} / {alice}", flush=True)

    for w in watchers.values():
        w.stop = True
    summary = {}
    for label, ms in times.items():
        if ms:
            later = ms[1:]
            summary[label] = {
                "first_ms": round(ms[0], 1),
                "later_ms": [round(x, 1) for x in later],
                "later_median_ms": round(sorted(later)[len(later) // 2], 1) if later else None,
            }
    print("drive: summary " + json.dumps(summary), flush=True)
    if failures:
        print("drive: FAILED: " + " | ".join(failures), file=sys.stderr, flush=True)
        sys.exit(1)
    print("drive: presence crossed: " + ", ".join(times), flush=True)


if __name__ == "__main__":
    main()
