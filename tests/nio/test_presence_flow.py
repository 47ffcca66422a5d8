#!/usr/bin/env python3
"""Real-client test: matrix-nio's AsyncClient, unchanged, against presenced.

Starts target/debug/presenced on a free port with a fresh data directory,
then drives the presence flow a Matrix client goes through: register, log
in, create a room with an invite, join it, set presence and see the other
user's presence arrive through /sync. A user who shares no room with alice
must not see her presence.

Run with `./scripts/nio-test` (it installs matrix-nio into target/nio-venv
and builds the binary). With PRESENCED_TEST_CLUSTER=1 (`./scripts/nio-test
--cluster`) the same flow runs against a 3-node cluster (3 nats-server, one
PostgreSQL database) through a proxy that sends every request to a random
node (tests/cluster/harness.py). Prints one line per check and a final
`N passed, M failed`; exits 1 on any failure.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from nio import (
    AsyncClient,
    AsyncClientConfig,
    JoinedMembersResponse,
    JoinedRoomsResponse,
    JoinResponse,
    LoginResponse,
    LogoutResponse,
    PresenceEvent,
    PresenceGetError,
    PresenceGetResponse,
    PresenceSetResponse,
    RegisterResponse,
    RoomCreateResponse,
    SyncError,
    SyncResponse,
)

ROOT = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("PRESENCED_BIN", ROOT / "target" / "debug" / "presenced"))
SERVER_NAME = "nio.test"
PASSWORD = "correct horse battery staple"
# Upper bound for one "wait until the other side sees it" step.
SEE_TIMEOUT_S = 30.0
START_TIMEOUT_S = 30.0

CONFIG = f"""\
server_name: "{SERVER_NAME}"
listeners:
  - port: 0
    bind_addresses: ["127.0.0.1"]
    type: http
data_dir: "{{data_dir}}"
registration_shared_secret: "nio-test-shared-secret"
enable_registration: true
password_hashing:
  memory_kib: 8192
  iterations: 1
  parallelism: 1
rc_presence:
  per_user:
    per_second: 100
    burst_count: 100
log:
  format: json
  level: info
"""


def log(msg: str) -> None:
    print(msg, flush=True)


class Server:
    """presenced as a subprocess: port 0, address read from its JSON log."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="presenced-nio-"))
        self.log_path = self.tmp / "presenced.log"
        self.proc: subprocess.Popen | None = None
        self.base_url = ""

    def start(self) -> None:
        if not BINARY.exists():
            raise RuntimeError(f"{BINARY} not found: run `cargo build --bin presenced`")
        config = self.tmp / "homeserver.yaml"
        config.write_text(CONFIG.format(data_dir=self.tmp / "data"))
        self.log_file = open(self.log_path, "wb")
        env = dict(os.environ)
        env.pop("RUST_LOG", None)
        self.proc = subprocess.Popen(
            [str(BINARY), "--config", str(config)],
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        addr = None
        while addr is None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"presenced exited with {self.proc.returncode} at start-up")
            if time.monotonic() > deadline:
                raise RuntimeError("presenced did not log its listening address")
            addr = self._listening_addr()
            if addr is None:
                time.sleep(0.05)
        self.base_url = f"http://{addr}"
        while True:
            try:
                with urllib.request.urlopen(self.base_url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("presenced /health did not answer 200")
            time.sleep(0.05)

    def _listening_addr(self) -> str | None:
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            fields = entry.get("fields", {})
            if fields.get("message") == "listening" and "addr" in fields:
                return fields["addr"]
        return None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "log_file", None):
            self.log_file.close()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def cleanup(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


class ClusterServer:
    """The same interface as `Server`, over a 3-node cluster behind a
    random-node proxy."""

    def __init__(self) -> None:
        sys.path.insert(0, str(ROOT / "tests" / "cluster"))
        from harness import Cluster  # noqa: PLC0415 - only in cluster mode

        # The nodes' shared YAML: the single server's, without its
        # listener and data directory (the harness gives each node its own).
        shared = CONFIG.split("listeners:")[0] + CONFIG.split('data_dir: "{data_dir}"\n')[1]
        self.cluster = Cluster(shared, SERVER_NAME)
        self.base_url = ""

    def start(self) -> None:
        if not BINARY.exists():
            raise RuntimeError(f"{BINARY} not found: run `cargo build --bin presenced`")
        self.cluster.start(BINARY)
        self.base_url = self.cluster.base_url

    def stop(self) -> None:
        self.cluster.stop()
        if self.cluster.proxy is not None:
            counts = ", ".join(f"{n}: {c}" for n, c in sorted(self.cluster.proxy.counts.items()))
            log(f"requests per node: {counts}")

    def log_tail(self, lines: int = 40) -> str:
        return self.cluster.log_tail(lines=lines)

    def cleanup(self) -> None:
        self.cluster.cleanup()


class Checks:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def ok(self, name: str) -> None:
        self.passed += 1
        log(f"PASS {name}")

    def fail(self, name: str, why: str) -> None:
        self.failed += 1
        log(f"FAIL {name}: {why}")

    def check(self, name: str, cond: bool, why: str = "") -> bool:
        if cond:
            self.ok(name)
        else:
            self.fail(name, why)
        return cond


class Abort(Exception):
    """A step failed and later steps depend on it."""


def expect(checks: Checks, name: str, resp, kind):
    if isinstance(resp, kind):
        checks.ok(name)
        return resp
    checks.fail(name, f"expected {kind.__name__}, got {resp!r}")
    raise Abort(name)


def make_client(server: Server, user: str = "") -> AsyncClient:
    # store_sync_tokens=False: nothing on disk; encryption is not installed.
    config = AsyncClientConfig(store_sync_tokens=False, encryption_enabled=False)
    return AsyncClient(server.base_url, user, config=config)


async def sync_until(client: AsyncClient, what: str, pred) -> SyncResponse:
    """Sync (long-poll) until pred(response) holds, within SEE_TIMEOUT_S."""
    deadline = time.monotonic() + SEE_TIMEOUT_S
    last = None
    while time.monotonic() < deadline:
        resp = await client.sync(timeout=2000)
        if not isinstance(resp, SyncResponse):
            raise Abort(f"{client.user_id} sync failed while waiting for {what}: {resp!r}")
        last = resp
        if pred(resp):
            return resp
    got = "no sync" if last is None else f"last sync's presence: {last.presence_events!r}"
    raise Abort(f"{client.user_id} did not see {what} within {SEE_TIMEOUT_S:.0f}s ({got})")


def presence_of(resp: SyncResponse, user_id: str):
    events = [e for e in resp.presence_events if e.user_id == user_id]
    return events[-1] if events else None


async def flow(server: Server, checks: Checks) -> None:
    alice_id = f"@alice:{SERVER_NAME}"
    bob_id = f"@bob:{SERVER_NAME}"
    carol_id = f"@carol:{SERVER_NAME}"
    clients: list[AsyncClient] = []
    try:
        # Registration (m.login.dummy), as nio does it.
        for name in ("alice", "bob", "carol"):
            c = make_client(server)
            clients.append(c)
            r = expect(checks, f"register {name}", await c.register(name, PASSWORD, "nio-register"), RegisterResponse)
            checks.check(f"register {name}: user id", r.user_id == f"@{name}:{SERVER_NAME}", repr(r.user_id))

        # Password login on fresh clients (new devices).
        alice, bob, carol = make_client(server, alice_id), make_client(server, "bob"), make_client(server, carol_id)
        clients += [alice, bob, carol]
        for name, c in (("alice", alice), ("bob", bob), ("carol", carol)):
            r = expect(checks, f"login {name}", await c.login(PASSWORD, device_name=f"nio-{name}"), LoginResponse)
            checks.check(f"login {name}: access token", bool(r.access_token), repr(r))
        checks.check("login bob by localpart: full user id", bob.user_id == bob_id, repr(bob.user_id))

        # Initial syncs.
        for name, c in (("alice", alice), ("bob", bob), ("carol", carol)):
            expect(checks, f"initial sync {name}", await c.sync(timeout=0, full_state=True), SyncResponse)

        # alice creates a room inviting bob; bob sees the invite and joins.
        created = expect(
            checks, "alice creates a room inviting bob",
            await alice.room_create(name="presence", invite=[bob_id]), RoomCreateResponse,
        )
        room_id = created.room_id
        log(f"     room {room_id}")
        await sync_until(bob, "the invite", lambda r: room_id in r.rooms.invite)
        checks.ok("bob sees the invite through sync")
        expect(checks, "bob joins", await bob.join(room_id), JoinResponse)
        await sync_until(bob, "the joined room", lambda r: room_id in r.rooms.join)
        checks.ok("bob sees the room as joined through sync")
        await sync_until(alice, "bob's join", lambda r: bob_id in (alice.rooms.get(room_id).users if room_id in alice.rooms else {}))
        checks.ok("alice sees bob as a member through sync")

        r = await alice.joined_rooms()
        checks.check("alice's joined_rooms lists the room", isinstance(r, JoinedRoomsResponse) and room_id in r.rooms, repr(r))
        r = await bob.joined_members(room_id)
        checks.check(
            "joined_members lists alice and bob",
            isinstance(r, JoinedMembersResponse) and {m.user_id for m in r.members} == {alice_id, bob_id},
            repr(r),
        )

        # bob's client-side presence callback, as a bot would use it.
        seen_by_callback: list[PresenceEvent] = []

        async def on_presence(event: PresenceEvent) -> None:
            seen_by_callback.append(event)

        bob.add_presence_callback(on_presence, PresenceEvent)

        # alice: online "hello"; bob sees it through sync.
        expect(checks, "alice sets presence online/hello", await alice.set_presence("online", "hello"), PresenceSetResponse)

        def bob_sees_alice(r: SyncResponse) -> bool:
            e = presence_of(r, alice_id)
            return e is not None and e.presence == "online" and e.status_msg == "hello"

        await sync_until(bob, "alice online/hello", bob_sees_alice)
        checks.ok("bob sees alice online with status 'hello' through sync")
        checks.check(
            "bob's presence callback got alice online/hello",
            any(e.user_id == alice_id and e.presence == "online" and e.status_msg == "hello" for e in seen_by_callback),
            repr(seen_by_callback),
        )

        # bob: unavailable "away"; alice sees it through sync.
        expect(checks, "bob sets presence unavailable/away", await bob.set_presence("unavailable", "away"), PresenceSetResponse)

        def alice_sees_bob(r: SyncResponse) -> bool:
            e = presence_of(r, bob_id)
            return e is not None and e.presence == "unavailable" and e.status_msg == "away"

        await sync_until(alice, "bob unavailable/away", alice_sees_bob)
        checks.ok("alice sees bob unavailable with status 'away' through sync")

        # GET /presence for a room-mate works.
        r = await bob.get_presence(alice_id)
        checks.check(
            "bob gets alice's presence (GET /presence)",
            isinstance(r, PresenceGetResponse) and r.presence == "online" and r.status_msg == "hello",
            repr(r),
        )

        # carol shares no room with alice: 403 on GET, nothing in sync.
        log("     (nio logs a validation warning for the 403 error body below: expected)")
        r = await carol.get_presence(alice_id)
        checks.check(
            "carol (no shared room) cannot get alice's presence",
            isinstance(r, PresenceGetError) and r.status_code == "M_FORBIDDEN",
            repr(r),
        )
        expect(checks, "alice sets presence online/again", await alice.set_presence("online", "again"), PresenceSetResponse)
        # bob's client the way bots run it: sync_forever plus the callback.
        forever = asyncio.create_task(bob.sync_forever(timeout=1000))
        try:
            deadline = time.monotonic() + SEE_TIMEOUT_S
            while time.monotonic() < deadline and not forever.done():
                if any(e.user_id == alice_id and e.status_msg == "again" for e in seen_by_callback):
                    break
                await asyncio.sleep(0.05)
        finally:
            forever.cancel()
            try:
                await forever
            except asyncio.CancelledError:
                pass
            except Exception as e:  # noqa: BLE001
                checks.fail("bob's sync_forever", f"{type(e).__name__}: {e}")
        checks.check(
            "bob's sync_forever delivers alice online/again to the callback",
            any(e.user_id == alice_id and e.presence == "online" and e.status_msg == "again" for e in seen_by_callback),
            repr(seen_by_callback[-3:]),
        )
        r = await carol.sync(timeout=0, full_state=True)
        seen = isinstance(r, SyncResponse) and presence_of(r, alice_id) is not None
        r2 = await carol.sync(timeout=1000)
        seen = seen or (isinstance(r2, SyncResponse) and presence_of(r2, alice_id) is not None)
        checks.check(
            "carol sees no presence of alice through sync",
            isinstance(r, SyncResponse) and isinstance(r2, SyncResponse) and not seen,
            f"{r!r} / {r2!r}",
        )

        # Logging out kills the token.
        old_token, old_device = carol.access_token, carol.device_id
        expect(checks, "carol logs out", await carol.logout(), LogoutResponse)
        ghost = make_client(server)
        clients.append(ghost)
        ghost.restore_login(carol_id, old_device, old_token)
        log("     (nio logs a validation warning for the 401 error body below: expected)")
        r = await ghost.sync(timeout=0)
        checks.check(
            "carol's old token is refused",
            isinstance(r, SyncError) and r.status_code == "M_UNKNOWN_TOKEN",
            repr(r),
        )
    finally:
        for c in clients:
            await c.close()


def main() -> int:
    # nio's own warnings, in order with the progress lines.
    logging.basicConfig(level=logging.WARNING, format="     nio %(levelname)s: %(message)s", stream=sys.stdout)
    checks = Checks()
    clustered = os.environ.get("PRESENCED_TEST_CLUSTER") == "1"
    server = ClusterServer() if clustered else Server()
    started = time.monotonic()
    try:
        log(f"starting {BINARY}")
        server.start()
        log(f"presenced listening on {server.base_url}")
        asyncio.run(asyncio.wait_for(flow(server, checks), timeout=120))
    except Abort as e:
        if checks.failed == 0:
            checks.fail("flow", str(e))
        else:
            log(f"     stopped after: {e}")
    except Exception as e:  # noqa: BLE001 - report everything as a failure
        checks.fail("flow", f"{type(e).__name__}: {e}")
    finally:
        server.stop()
        if checks.failed:
            log("---- presenced log (tail) ----")
            log(server.log_tail())
            log("------------------------------")
        server.cleanup()
    log(f"({time.monotonic() - started:.1f}s)")
    log(f"{checks.passed} passed, {checks.failed} failed")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
