"""Companion mode's membership feed against a real Synapse (issue 27,
item 3): does Synapse really push membership transactions to presenced,
and does a room made before presenced ever ran show its members to each
other (the admin-API bootstrap)?

What it does, on loopback, in target/companion-feed/ (left there to read):
  1. Synapse (from the venv scripts/interop-synapse.sh installs; presence
     off, no application service yet) and three users; @alice (a Synapse
     admin) makes a room with @bob before presenced exists.
  2. Synapse restarted with presenced's application-service registration,
     then presenced in companion mode (`synapse:` with alice's token as
     the admin token).
  3. Checks, with GET /presence through presenced (200: visible, 403:
     not): alice and bob see
     each other (the bootstrap, or Synapse's replay of history; the log
     says which ran); presenced pinged Synapse at start; a room made now
     with @carol makes alice and carol see each other (a pushed
     transaction), and carol leaving ends it.
  4. A fault (issue 27, item 8): presenced killed with SIGKILL, carol
     invited back and joining while it is down (Synapse's deliveries
     fail), presenced started again on its data: Synapse re-sends what was
     never acknowledged and alice and carol see each other; the delay is
     printed (presenced's ping at start spares it Synapse's retry backoff,
     2 s and doubling).

Room calls go to Synapse directly; presenced is only asked who sees
whom (its front door checks the tokens with Synapse).

Standard library only. Usage:
  python3 tests/companion/membership_feed.py [--presenced target/debug/presenced]
      [--venv target/synapse-venv] [--deadline 30]
Exits 1 with the logs' tails when a check fails.
"""

import argparse
import hashlib
import hmac
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVER_NAME = "companion.test"
SYN_SECRET = "companion-synapse-secret"
PD_SECRET = "companion-presenced-secret"
PASSWORD = "companion-password-1"


def log(msg):
    print(f"membership_feed: {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def register(base, localpart, admin=False):
    path = "/_synapse/admin/v1/register"
    nonce = call(base, "GET", path)["nonce"]
    mac = hmac.new(SYN_SECRET.encode(), digestmod=hashlib.sha1)
    flag = b"admin" if admin else b"notadmin"
    mac.update(b"\x00".join([nonce.encode(), localpart.encode(), PASSWORD.encode(), flag]))
    answer = call(base, "POST", path, {
        "nonce": nonce, "username": localpart, "password": PASSWORD,
        "admin": admin, "mac": mac.hexdigest(),
    })
    return answer["user_id"], answer["access_token"]


class Run:
    def __init__(self, args):
        self.args = args
        self.dir = os.path.join(ROOT, "target", "companion-feed")
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.syn_port, self.pd_port = free_port(), free_port()
        self.syn = f"http://127.0.0.1:{self.syn_port}"
        self.pd = f"http://127.0.0.1:{self.pd_port}"
        self.procs = {}
        self.tokens = {}  # user ID -> Synapse access token

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def wait_up(self, name, url):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.procs[name].poll() is not None:
                self.fail(f"{name} exited at start")
            try:
                urllib.request.urlopen(url, timeout=2).read()
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.2)
        self.fail(f"{name} did not come up")

    def start(self, name, cmd):
        out = open(self.path(f"{name}.log"), "ab")
        # In the run directory: Synapse's generated log config writes a
        # relative homeserver.log.
        self.procs[name] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=self.dir)

    def stop(self, name):
        proc = self.procs.pop(name, None)
        if proc and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def kill_9(self, name):
        """SIGKILL: no shutdown, nothing flushed on the way out."""
        proc = self.procs.pop(name)
        proc.kill()
        proc.wait()

    def stop_all(self):
        for name in list(self.procs):
            self.stop(name)

    def fail(self, why):
        log(f"FAILED: {why}")
        for name in ("synapse", "presenced"):
            p = self.path(f"{name}.log")
            if os.path.exists(p):
                with open(p, "rb") as f:
                    tail = f.read()[-4000:].decode(errors="replace")
                log(f"--- tail of {p} ---\n{tail}")
        self.stop_all()
        log(f"run directory kept: {self.dir}")
        sys.exit(1)

    # --- Synapse ---------------------------------------------------------

    def synapse_config(self):
        venv_python = os.path.join(self.args.venv, "bin", "python")
        subprocess.run([
            venv_python, "-m", "synapse.app.homeserver", "--server-name", SERVER_NAME,
            "--config-path", self.path("homeserver.yaml"), "--data-directory", self.dir,
            "--generate-config", "--report-stats=no",
        ], check=True, stdout=subprocess.DEVNULL, cwd=self.dir)
        lim = "{per_second: 100000, burst_count: 100000}"
        with open(self.path("companion.yaml"), "w") as f:
            f.write(f"""listeners:
  - port: {self.syn_port}
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    resources: [{{names: [client], compress: false}}]
registration_shared_secret: "{SYN_SECRET}"
enable_registration: false
bcrypt_rounds: 4
presence: {{enabled: false}}
rc_message: {lim}
rc_registration: {lim}
rc_login: {{address: {lim}, account: {lim}, failed_attempts: {lim}}}
""")
        self.registration = {
            "id": "presenced", "url": self.pd,
            "as_token": secrets.token_urlsafe(24), "hs_token": secrets.token_urlsafe(24),
            "sender_localpart": "presenced",
            "namespaces": {"users": [{"exclusive": False, "regex": "@.*"}], "aliases": [], "rooms": []},
            "rate_limited": False,
        }
        # JSON is YAML: both Synapse and presenced read this file.
        with open(self.path("presenced-appservice.yaml"), "w") as f:
            json.dump(self.registration, f, indent=2)
        with open(self.path("appservice.yaml"), "w") as f:
            f.write(f"app_service_config_files: [\"{self.path('presenced-appservice.yaml')}\"]\n")

    def start_synapse(self, with_appservice):
        venv_python = os.path.join(self.args.venv, "bin", "python")
        cmd = [venv_python, "-m", "synapse.app.homeserver",
               "-c", self.path("homeserver.yaml"), "-c", self.path("companion.yaml")]
        if with_appservice:
            cmd += ["-c", self.path("appservice.yaml")]
        self.start("synapse", cmd)
        self.wait_up("synapse", self.syn + "/_matrix/client/versions")

    # --- presenced -------------------------------------------------------

    def start_presenced(self, admin_token):
        with open(self.path("presenced.yaml"), "w") as f:
            f.write(f"""server_name: "{SERVER_NAME}"
data_dir: "{self.path('presenced-data')}"
signing_key_path: "{self.path(SERVER_NAME + '.signing.key')}"
listeners:
  - port: {self.pd_port}
    bind_addresses: ["127.0.0.1"]
    resources: [{{names: [client]}}]
registration_shared_secret: "{PD_SECRET}"
log: {{level: "info,presenced_server::companion=debug,presenced_server::api::appservice=debug"}}
synapse:
  url: "{self.syn}"
  appservice_registration: "{self.path('presenced-appservice.yaml')}"
  admin_token: "{admin_token}"
""")
        self.start("presenced", [self.args.presenced, "--config", self.path("presenced.yaml")])
        self.wait_up("presenced", self.pd + "/_matrix/client/versions")

    def visible(self, observer, target):
        """GET /presence through presenced's front door with the
        observer's Synapse token: 200 when presenced lets them see the
        target, 403 when not."""
        path = f"/_matrix/client/v3/presence/{urllib.parse.quote(target)}/status"
        try:
            call(self.pd, "GET", path, token=self.tokens[observer])
            return True
        except RuntimeError as e:
            if "HTTP 403" in str(e):
                return False
            raise

    def wait_visible(self, a, b, want, what):
        start = time.monotonic()
        deadline = start + self.args.deadline
        while time.monotonic() < deadline:
            if self.visible(a, b) == want and self.visible(b, a) == want:
                took = time.monotonic() - start
                log(f"ok: {what} ({took * 1000:.0f} ms)")
                return
            time.sleep(0.05)
        self.fail(f"{what}: {a} and {b} should {'' if want else 'not '}see each other")

    def wait_log(self, text, since, what):
        """Waits for `text` in presenced's log after byte `since`."""
        deadline = time.monotonic() + self.args.deadline
        while text not in self.presenced_log()[since:]:
            if time.monotonic() > deadline:
                self.fail(what)
            time.sleep(0.1)

    def presenced_log(self):
        with open(self.path("presenced.log"), "rb") as f:
            return f.read().decode(errors="replace")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presenced", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "debug", "presenced"))
    parser.add_argument("--venv", default=os.path.join(ROOT, "target", "synapse-venv"))
    parser.add_argument("--deadline", type=float, default=30.0)
    args = parser.parse_args()
    run = Run(args)
    try:
        run.synapse_config()
        log(f"Synapse at {run.syn}, no application service yet")
        run.start_synapse(with_appservice=False)
        alice, alice_token = register(run.syn, "alice", admin=True)
        bob, bob_token = register(run.syn, "bob")
        carol, carol_token = register(run.syn, "carol")
        run.tokens = {alice: alice_token, bob: bob_token, carol: carol_token}
        old_room = call(run.syn, "POST", "/_matrix/client/v3/createRoom",
                        {"preset": "private_chat", "invite": [bob]}, alice_token)["room_id"]
        call(run.syn, "POST", f"/_matrix/client/v3/join/{urllib.parse.quote(old_room)}", {}, bob_token)
        log(f"room {old_room} made with {alice} and {bob} before presenced")

        run.stop("synapse")
        log("Synapse restarted with presenced's registration; presenced started")
        run.start_synapse(with_appservice=True)
        run.start_presenced(alice_token)

        run.wait_visible(alice, bob, True, "a room made before presenced shows its members")
        assert not run.visible(alice, carol), "carol shares no room yet"
        text = run.presenced_log()
        if "read Synapse's rooms and members" not in text:
            run.fail("presenced did not log its bootstrap")
        bootstrap = [l for l in text.splitlines() if "read Synapse's rooms and members" in l][0]
        log(f"bootstrap: {bootstrap.strip()[-160:]}")

        deadline = time.monotonic() + args.deadline
        while "Synapse reached presenced's application-service API" not in run.presenced_log():
            if time.monotonic() > deadline:
                run.fail("the ping at start did not reach presenced through Synapse")
            time.sleep(0.1)
        log("ok: the ping at start went through Synapse and back")

        new_room = call(run.syn, "POST", "/_matrix/client/v3/createRoom",
                        {"preset": "private_chat", "invite": [carol]}, alice_token)["room_id"]
        call(run.syn, "POST", f"/_matrix/client/v3/join/{urllib.parse.quote(new_room)}", {}, carol_token)
        call(run.syn, "PUT", f"/_matrix/client/v3/rooms/{urllib.parse.quote(new_room)}/send/m.room.message/t1",
             {"msgtype": "m.text", "body": "a message, which the feed ignores"}, carol_token)
        run.wait_visible(alice, carol, True, "a join Synapse pushed as a transaction")
        call(run.syn, "POST", f"/_matrix/client/v3/rooms/{urllib.parse.quote(new_room)}/leave", {}, carol_token)
        run.wait_visible(alice, carol, False, "a leave Synapse pushed as a transaction")
        if not run.visible(alice, bob):
            run.fail("the old room's members stopped seeing each other")

        # The fault: presenced dies mid-run and misses a join.
        run.kill_9("presenced")
        log("presenced killed (SIGKILL); carol joins again while it is down")
        call(run.syn, "POST", f"/_matrix/client/v3/rooms/{urllib.parse.quote(new_room)}/invite",
             {"user_id": carol}, alice_token)
        call(run.syn, "POST", f"/_matrix/client/v3/join/{urllib.parse.quote(new_room)}", {}, carol_token)
        joined_at = time.monotonic()
        # Long enough for Synapse to fail its delivery and back off.
        time.sleep(3)
        log_before = len(run.presenced_log())
        bootstraps_before = run.presenced_log().count("read Synapse's rooms and members")
        restarted_at = time.monotonic()
        run.start_presenced(alice_token)
        run.wait_visible(alice, carol, True, "a join made while presenced was down, re-sent by Synapse")
        seen_at = time.monotonic()
        log(f"delay: {(seen_at - restarted_at) * 1000:.0f} ms from presenced's restart, "
            f"{(seen_at - joined_at) * 1000:.0f} ms from the join (3000 of them presenced was down)")
        run.wait_log("application-service transaction stored", log_before,
                     "the restarted presenced stored no transaction: the join did not come from Synapse's re-send")
        if run.presenced_log().count("read Synapse's rooms and members") != bootstraps_before:
            run.fail("the restart ran the bootstrap: the join may have come from the admin API, not a re-send")
        run.wait_log("Synapse reached presenced's application-service API", log_before,
                     "the restarted presenced's ping did not reach it through Synapse")
        log("ok: the join came as a re-sent transaction (no bootstrap at restart, the ping went through)")
        if not run.visible(alice, bob):
            run.fail("after the restart the old room's members stopped seeing each other")
        log("all checks passed")
    except (RuntimeError, AssertionError, subprocess.CalledProcessError) as e:
        run.fail(str(e))
    finally:
        run.stop_all()


if __name__ == "__main__":
    main()
