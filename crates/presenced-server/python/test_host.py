"""Unit tests of the Python module host: the stand-in `synapse` package,
the answer type rules, and the frame protocol through a real child process
started the way presenced starts it, on this interpreter (stand-in) and,
when PRESENCED_TEST_SYNAPSE_PYTHON names an interpreter with matrix-synapse
installed, on that one (the real Synapse; skipped with a message otherwise).

    python3 -m unittest discover -s crates/presenced-server/python -p 'test_*.py'

presenced's integration tests (tests/it/python_modules.rs) drive the same
host through HTTP.
"""

import asyncio
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import threading
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = open(os.path.join(HERE, "presenced_host.py")).read()
FIXTURES = os.path.join(HERE, "fixtures")


def _boot():
    # The exact snippet presenced passes with -c (protocol.rs's BOOT).
    rust = open(os.path.join(HERE, "..", "src", "presence", "python", "protocol.rs")).read()
    literal = re.search(r'pub const BOOT: &str = "(.*?)";\n', rust).group(1)
    return literal.encode().decode("unicode_escape")


BOOT = _boot()


def load_host_module():
    """The host's definitions and its parts, without running main()."""
    namespace = {"__name__": "presenced_host_under_test"}
    exec(compile(SOURCE, "<presenced-host>", "exec"), namespace)
    namespace["load_parts"](PART_SOURCES)
    return namespace


def _part_sources():
    # The order is the host's PARTS (protocol.rs's HOST_PARTS passes the same).
    namespace = {"__name__": "presenced_host_parts"}
    exec(compile(SOURCE, "<presenced-host>", "exec"), namespace)
    return [open(os.path.join(HERE, name + ".py")).read() for name in namespace["PARTS"]]


PART_SOURCES = _part_sources()


class StandIn(unittest.TestCase):
    """The stand-in `synapse` package, installed in this process."""

    @classmethod
    def setUpClass(cls):
        cls.saved = dict(sys.modules), list(sys.meta_path)
        cls.host = load_host_module()
        cls.loop = asyncio.new_event_loop()
        cls.standin = sys.modules["presenced_standin"].install(cls.loop)

    @classmethod
    def tearDownClass(cls):
        # Looping calls run until stopped; Synapse gives no handle either.
        pending = asyncio.all_tasks(cls.loop)
        for task in pending:
            task.cancel()
        cls.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        cls.loop.close()
        modules, meta_path = cls.saved
        for name in list(sys.modules):
            if name not in modules:
                del sys.modules[name]
        sys.modules.update(modules)
        sys.meta_path[:] = meta_path

    def test_user_presence_state_behaves_like_synapses_frozen_class(self):
        from synapse.api import UserPresenceState
        from synapse.api.presence import UserPresenceState as FromPresence
        from synapse.handlers.presence import UserPresenceState as FromHandlers

        self.assertIs(UserPresenceState, FromPresence)
        self.assertIs(UserPresenceState, FromHandlers)
        default = UserPresenceState.default("@a:x")
        self.assertEqual(default.state, "offline")
        self.assertEqual(default.last_active_ts, 0)
        self.assertIsNone(default.status_msg)
        self.assertFalse(default.currently_active)
        online = default.copy_and_replace(state="online", status_msg="hi")
        self.assertEqual((online.state, online.status_msg), ("online", "hi"))
        self.assertEqual(default.state, "offline")
        self.assertEqual(online, UserPresenceState.default("@a:x").copy_and_replace(state="online", status_msg="hi"))
        self.assertEqual(len({online, online.copy_and_replace()}), 1)
        self.assertNotEqual(online, tuple(online))
        with self.assertRaises(AttributeError):
            online.state = "offline"
        with self.assertRaises(TypeError):
            online.copy_and_replace(colour="red")
        self.assertEqual(online.as_dict()["user_id"], "@a:x")

    def test_the_provided_names_import(self):
        from synapse.events.presence_router import PresenceRouter
        from synapse.module_api import PRESENCE_ALL_USERS, ModuleApi  # noqa: F401
        from synapse.module_api.errors import ConfigError, SynapseError  # noqa: F401
        from synapse.types import JsonDict, UserID, get_domain_from_id  # noqa: F401

        self.assertEqual(PRESENCE_ALL_USERS, "ALL")
        self.assertEqual(PresenceRouter.ALL_USERS, "ALL")
        user = UserID.from_string("@bob:example.com")
        self.assertEqual((user.localpart, user.domain), ("bob", "example.com"))
        self.assertEqual(user.to_string(), "@bob:example.com")
        self.assertEqual(get_domain_from_id("@bob:example.com"), "example.com")
        self.assertFalse(UserID.is_valid("bob"))

    def test_missing_synapse_modules_and_names_say_what_is_provided(self):
        with self.assertRaises(ModuleNotFoundError) as caught:
            import synapse.storage  # noqa: F401
        self.assertIn("not available in presenced: module 'synapse.storage'", str(caught.exception))
        self.assertIn("synapse.module_api", str(caught.exception))
        import synapse.module_api

        with self.assertRaises(AttributeError) as caught:
            synapse.module_api.cached  # noqa: B018
        self.assertIn("not available in presenced: synapse.module_api.cached", str(caught.exception))
        self.assertIn("run_in_background", str(caught.exception))

    def test_the_names_of_synapses_module_api_that_make_sense_here_import(self):
        from synapse.api.constants import EduTypes, EventTypes, Membership, PresenceState
        from synapse.api.errors import AuthError, Codes, NotFoundError, SynapseError
        from synapse.config import ConfigError
        from synapse.logging.context import make_deferred_yieldable, run_in_background  # noqa: F401
        from synapse.module_api import (  # noqa: F401
            DomainSpecificString,
            JsonMapping,
            RoomAlias,
            RoomID,
            StateMap,
            UserPresenceState,
            errors,
            run_as_background_process,
        )
        from synapse.types import get_localpart_from_id

        self.assertIs(errors.ConfigError, ConfigError)
        self.assertEqual(errors.SynapseError, SynapseError)
        self.assertEqual(
            (PresenceState.ONLINE, PresenceState.UNAVAILABLE, PresenceState.OFFLINE, PresenceState.BUSY),
            ("online", "unavailable", "offline", "org.matrix.msc3026.busy"),
        )
        self.assertEqual((EventTypes.Member, EduTypes.PRESENCE, Membership.JOIN), ("m.room.member", "m.presence", "join"))
        error = AuthError(403, "no")
        self.assertIsInstance(error, SynapseError)
        self.assertEqual(error.error_dict(None), {"errcode": "M_FORBIDDEN", "error": "no"})
        self.assertEqual(NotFoundError().code, 404)
        self.assertEqual(Codes.INVALID_PARAM, "M_INVALID_PARAM")
        self.assertEqual(ConfigError("bad", ("a", "b")).path, ("a", "b"))
        self.assertEqual(RoomID.from_string("!r:x").domain, "x")
        self.assertEqual(RoomAlias.from_string("#a:x").to_string(), "#a:x")
        self.assertEqual(get_localpart_from_id("@bob:x"), "bob")
        with self.assertRaises(SynapseError):
            RoomID.from_string("@not-a-room:x")

    def test_module_api_answers_what_presenced_can(self):
        api = self.standin.module_api(FakeHost(), "m.Class")
        self.assertIsNone(api.worker_app)
        self.assertIsNone(api.worker_name)
        self.assertTrue(api.should_run_background_tasks())
        self.assertEqual(api.public_baseurl, "https://example.com/")
        self.assertTrue(api.is_mine("@a:example.com"))
        from synapse.module_api import UserID, make_deferred_yieldable, run_in_background

        self.assertFalse(api.is_mine(UserID("a", "elsewhere.org")))
        self.assertEqual(api.get_qualified_user_id("bob"), "@bob:example.com")

        async def double(n):
            await api.sleep(0.001)
            return 2 * n

        async def scenario():
            in_thread = await api.defer_to_thread(lambda a, b=0: (threading.current_thread() is threading.main_thread(), a + b), 1, b=2)
            background = await make_deferred_yieldable(run_in_background(double, 21))
            failed = run_in_background(lambda: 1 / 0)
            with self.assertRaises(ZeroDivisionError):
                await failed
            swallowed = await api.run_as_background_process("t", lambda: 1 / 0)
            ticks = []
            api.looping_background_call(ticks.append, 1, "tick")
            while len(ticks) < 2:
                await api.sleep(0.001)
            return in_thread, background, swallowed, ticks[:2]

        with self.assertLogs("m.Class", "ERROR") as logs:
            self.assertEqual(self.loop.run_until_complete(scenario()), ((False, 3), 42, None, ["tick", "tick"]))
        self.assertIn("background process t failed", logs.output[0])

    def test_module_api_refuses_unknown_members_and_half_registrations(self):
        api = self.standin.module_api(None, "m.Class")
        with self.assertRaises(AttributeError) as caught:
            api.get_user_by_req  # noqa: B018
        self.assertIn("not available in presenced: ModuleApi.get_user_by_req", str(caught.exception))
        self.assertIn("register_presence_router_callbacks", str(caught.exception))
        with self.assertRaises(RuntimeError) as caught:
            api.register_presence_router_callbacks(get_users_for_states=lambda s: {})
        self.assertIn("get_interested_users", str(caught.exception))

    def test_answer_types_follow_synapses_declarations(self):
        standin = self.standin

        def check_states(result):
            return self.host["check_users_for_states"](result, standin)

        check_interest = self.host["check_interested_users"]
        wrong = self.host["WrongType"]
        from synapse.api import UserPresenceState

        state = UserPresenceState.default("@b:x")
        self.assertEqual(check_states({"@a:x": {state}}), {"@a:x": [state]})
        for bad in ([state], {"@a:x": [state]}, {"@a:x": frozenset([state])}, {"@a:x": {"@b:x"}}, {1: {state}}):
            with self.assertRaises(wrong, msg=repr(bad)):
                check_states(bad)
        self.assertEqual(check_interest("ALL"), "ALL")
        self.assertEqual(check_interest({"@b:x"}), ["@b:x"])
        for bad in ("@b:x", ["@b:x"], frozenset(["@b:x"]), {1}, None):
            with self.assertRaises(wrong, msg=repr(bad)):
                check_interest(bad)


class FakeHost:
    server_name = "example.com"


class Pipes(unittest.TestCase):
    """Starts the host as a child process and talks to it over its pipes."""

    python = sys.executable

    def start(self, modules, legacy=False, path=(FIXTURES,)):
        proc = subprocess.Popen(
            [self.python, "-c", BOOT, SOURCE, *PART_SOURCES],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        # Cleanups run last-registered first: kill, reap, then close.
        self.addCleanup(proc.stdin.close)
        self.addCleanup(proc.stdout.close)
        self.addCleanup(proc.stderr.close)
        self.addCleanup(proc.wait)
        self.addCleanup(proc.kill)
        self.proc = proc
        entries = [
            {"index": i, "module": name, "config": config, "legacy": legacy}
            for i, (name, config) in enumerate(modules)
        ]
        self.send({"op": "init", "server_name": "example.com", "path": list(path), "modules": entries})
        return self.receive()

    def send(self, message):
        body = json.dumps(message).encode()
        self.proc.stdin.write(struct.pack(">I", len(body)) + body)
        self.proc.stdin.flush()

    def receive(self):
        header = self.proc.stdout.read(4)
        self.assertEqual(len(header), 4, self.proc.stderr.read().decode() if self.proc.poll() is not None else "")
        (length,) = struct.unpack(">I", header)
        return json.loads(self.proc.stdout.read(length))

    def receive_op(self, op):
        while True:
            message = self.receive()
            if message["op"] == op:
                return message


class Process(Pipes):
    """The host as a child process, over its real pipes."""

    def test_the_docs_example_answers_through_the_pipe(self):
        ready = self.start([("custom_router.CustomPresenceRouter", {})])
        self.assertEqual(ready["op"], "ready", ready)
        self.assertEqual(ready["modules"], [{"index": 0, "pairs": 1}])
        bob = ["@bob:example.com", "online", 5, 0, 0, "hi", True]
        dave = ["@dave:example.com", "online", 5, 0, 0, None, True]
        self.send({"op": "call", "id": 1, "module": 0, "slot": 0, "callback": "get_users_for_states", "states": [bob, dave]})
        self.send({"op": "call", "id": 2, "module": 0, "slot": 0, "callback": "get_interested_users", "user_id": "@alice:example.com"})
        self.send({"op": "ping", "id": 9})
        answers = {}
        while len(answers) < 3:
            message = self.receive()
            answers[message["id"]] = message
        self.assertEqual(answers[1], {"op": "result", "id": 1, "value": {"@alice:example.com": [bob]}})
        self.assertEqual(sorted(answers[2]["value"]), ["@bob:example.com", "@charlie:somewhere.org"])
        self.assertEqual(answers[9]["op"], "pong")

    def test_a_hanging_call_is_cancelled_and_the_next_answered(self):
        self.start([("misbehaving.AwaitsForever", {"trigger": "@t:example.com"})])
        self.send({"op": "call", "id": 1, "module": 0, "slot": 0, "callback": "get_interested_users", "user_id": "@t:example.com"})
        self.send({"op": "cancel", "id": 1})
        self.send({"op": "call", "id": 2, "module": 0, "slot": 0, "callback": "get_interested_users", "user_id": "@u:example.com"})
        self.assertEqual(self.receive(), {"op": "result", "id": 2, "value": []})

    def test_an_exception_carries_the_modules_file_and_line(self):
        self.start([("misbehaving.Raises", {"trigger": "@t:example.com"})])
        self.send({"op": "call", "id": 1, "module": 0, "slot": 0, "callback": "get_interested_users", "user_id": "@t:example.com"})
        error = self.receive()
        self.assertEqual(error["kind"], "exception")
        self.assertIn("misbehaving.py", error["message"])
        self.assertIn("ValueError: this router fails on purpose", error["message"])

    def test_print_in_a_module_does_not_corrupt_frames(self):
        self.start([("custom_router.CustomPresenceRouter", {})])
        self.send({"op": "call", "id": 1, "module": 0, "slot": 0, "callback": "get_interested_users", "user_id": "@x:example.com"})
        self.assertEqual(self.receive()["value"], [])

    def test_load_errors_name_the_module_and_the_cause(self):
        error = self.start([("imports_storage.ImportsStorage", {})])
        self.assertEqual((error["op"], error["kind"]), ("init_error", "import"))
        self.assertIn("synapse.storage", error["message"])
        self.assertEqual(self.proc.wait(5), 1)

    def test_a_legacy_module_loads_with_parse_config(self):
        ready = self.start([("legacy_router.LegacyRouter", {"routes": {"@d:example.com": ["@e:example.com"]}})], legacy=True)
        self.assertEqual(ready["modules"], [{"index": 0, "pairs": 1}])
        self.send({"op": "call", "id": 1, "module": 0, "slot": 0, "callback": "get_interested_users", "user_id": "@e:example.com"})
        self.assertEqual(self.receive()["value"], ["@d:example.com"])

    def test_a_synapse_package_that_fails_to_import_stops_start_up_naming_it(self):
        # Found on the path, so taken for the operator's Synapse.
        with tempfile.TemporaryDirectory() as broken:
            os.mkdir(os.path.join(broken, "synapse"))
            with open(os.path.join(broken, "synapse", "__init__.py"), "w") as f:
                f.write("raise RuntimeError('this synapse is broken')\n")
            error = self.start([("custom_router.CustomPresenceRouter", {})], path=(broken, FIXTURES))
        self.assertEqual((error["op"], error["kind"], error["module"]), ("init_error", "synapse", "custom_router.CustomPresenceRouter"), error)
        self.assertIn("has a synapse package (%s" % broken, error["message"])
        # Twisted, imported first, may be what is missing.
        self.assertRegex(error["message"], "(?s)importing it failed:.*(this synapse is broken|No module named 'twisted')")

    def test_end_of_input_ends_the_host(self):
        self.start([("custom_router.CustomPresenceRouter", {})])
        self.proc.stdin.close()
        self.assertEqual(self.proc.wait(5), 0)


BOB = ["@bob:example.com", "online", 5, 0, 0, "hi", True]
PROBED = {
    "@%s:probe" % name
    for name in (
        "run_in_background",
        "defer_to_thread",
        "run_as_background_process",
        "looping_background_call",
        "constants",
        "public_baseurl",
        "delayed_background_call",
        "refusal",
    )
}


class Surface:
    """Routers written against Synapse's module API; the same tests on the
    stand-in and on a real Synapse (`synapse` is which one they expect)."""

    synapse = None

    def call(self, call_id, callback, **argument):
        self.send({"op": "call", "id": call_id, "module": 0, "slot": 0, "callback": callback, **argument})
        return self.receive_op("result" if call_id else "error")

    def test_a_new_style_router_importing_synapses_modules_routes(self):
        config = {"routes": {"@bob:example.com": ["@alice:example.com"]}, "synapse": self.synapse, "probe": "@probe:example.com"}
        ready = self.start([("synapse_surface.SynapseSurfaceRouter", config)])
        self.assertEqual(ready["op"], "ready", ready)
        self.assertEqual(ready["synapse"].startswith("matrix-synapse 1.163."), self.synapse == "real", ready["synapse"])
        self.send({"op": "call", "id": 1, "module": 0, "slot": 0, "callback": "get_users_for_states", "states": [BOB]})
        self.assertEqual(self.receive_op("result"), {"op": "result", "id": 1, "value": {"@alice:example.com": [BOB]}})
        self.send({"op": "call", "id": 2, "module": 0, "slot": 0, "callback": "get_interested_users", "user_id": "@alice:example.com"})
        self.assertEqual(self.receive_op("result")["value"], ["@bob:example.com"])
        # Synapse's Twisted-returning calls, as the module sees them.
        self.send({"op": "call", "id": 3, "module": 0, "slot": 0, "callback": "get_interested_users", "user_id": "@probe:example.com"})
        self.assertEqual(set(self.receive_op("result")["value"]), PROBED)

    def test_a_legacy_router_importing_synapses_modules_routes(self):
        ready = self.start([("legacy_synapse_router.LegacySynapseRouter", {"monitors": ["@m:example.com"]})], legacy=True)
        self.assertEqual(ready["modules"], [{"index": 0, "pairs": 1}], ready)
        self.send({"op": "call", "id": 1, "module": 0, "slot": 0, "callback": "get_users_for_states", "states": [BOB]})
        self.assertEqual(self.receive_op("result")["value"], {"@m:example.com": [BOB]})
        self.send({"op": "call", "id": 2, "module": 0, "slot": 0, "callback": "get_interested_users", "user_id": "@m:example.com"})
        self.assertEqual(self.receive_op("result")["value"], "ALL")

    def test_a_config_error_from_parse_config_stops_start_up_clearly(self):
        error = self.start([("synapse_surface.SynapseSurfaceRouter", {"routes": ["@bob:example.com"]})])
        self.assertEqual((error["op"], error["kind"]), ("init_error", "parse_config"), error)
        self.assertTrue(error["message"].startswith("invalid config at routes: routes must map"), error["message"])
        self.assertIn("ConfigError", error["message"])
        error = self.start([("legacy_synapse_router.LegacySynapseRouter", {"monitors": ["bob"]})], legacy=True)
        self.assertTrue(error["message"].startswith("invalid config at monitors: "), error["message"])

    def test_module_api_calls_and_logs_go_to_presenced(self):
        self.start(
            [
                (
                    "calls_module_api.CallsModuleApi",
                    {"on_interest_of": "@a:example.com", "send_to": ["@c:example.com"], "set": {"@b:example.com": ["busy", None]}},
                )
            ]
        )
        self.send({"op": "call", "id": 1, "module": 0, "slot": 0, "callback": "get_interested_users", "user_id": "@a:example.com"})
        first = self.receive_op("api")
        self.assertEqual(first["method"], "send_local_online_presence_to")
        self.assertEqual(first["args"], {"users": ["@c:example.com"]})
        self.send({"op": "api_result", "id": first["id"], "value": None})
        second = self.receive_op("api")
        self.assertEqual(second["args"], {"users": {"@b:example.com": ["busy", None]}})
        self.send({"op": "api_result", "id": second["id"], "value": None})
        log = self.receive_op("log")
        self.assertEqual(log["module"], "calls_module_api.CallsModuleApi")
        self.assertIn("@a:example.com", log["message"])
        self.assertEqual(self.receive_op("result")["value"], [])

    def test_a_failing_callback_is_that_calls_error(self):
        self.start([("misbehaving.Raises", {"trigger": "@t:example.com"})])
        self.send({"op": "call", "id": 1, "module": 0, "slot": 0, "callback": "get_interested_users", "user_id": "@t:example.com"})
        error = self.receive()
        self.assertEqual(error["kind"], "exception", error)
        self.assertIn("misbehaving.py", error["message"])
        self.assertIn("ValueError: this router fails on purpose", error["message"])


class SurfaceOnTheStandIn(Surface, Pipes):
    synapse = "stand-in"


class SurfaceOnARealSynapse(Surface, Pipes):
    """On the interpreter PRESENCED_TEST_SYNAPSE_PYTHON names (a virtualenv
    with matrix-synapse 1.163; scripts/python-versions makes one)."""

    synapse = "real"

    @classmethod
    def setUpClass(cls):
        cls.python = os.environ.get("PRESENCED_TEST_SYNAPSE_PYTHON")
        if not cls.python:
            sys.stderr.write("\nskipped: the host on a real Synapse (set PRESENCED_TEST_SYNAPSE_PYTHON to a Python with matrix-synapse)\n")
            raise unittest.SkipTest("PRESENCED_TEST_SYNAPSE_PYTHON is not set")


if __name__ == "__main__":
    unittest.main()
