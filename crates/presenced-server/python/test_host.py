"""Unit tests of the Python module host: the `synapse` compatibility
layer, the answer type rules, and the frame protocol through a real
child process started the way presenced starts it.

    python3 -m unittest discover -s crates/presenced-server/python -p 'test_*.py'

presenced's integration tests (tests/it/python_modules.rs) drive the same
host through HTTP.
"""

import json
import os
import re
import struct
import subprocess
import sys
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
    """The host's definitions, without running main()."""
    namespace = {"__name__": "presenced_host_under_test"}
    exec(compile(SOURCE, "<presenced-host>", "exec"), namespace)
    return namespace


class Shim(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.host = load_host_module()
        cls.saved = dict(sys.modules), list(sys.meta_path)
        cls.host["install_shim"]()

    @classmethod
    def tearDownClass(cls):
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
        self.assertIn("synapse.storage", str(caught.exception))
        self.assertIn("synapse.module_api", str(caught.exception))
        import synapse.module_api

        with self.assertRaises(AttributeError) as caught:
            synapse.module_api.run_in_background  # noqa: B018
        self.assertIn("run_in_background", str(caught.exception))
        self.assertIn("ModuleApi", str(caught.exception))

    def test_module_api_refuses_unknown_members_and_half_registrations(self):
        api = self.host["ModuleApi"](None, "m.Class")
        with self.assertRaises(AttributeError) as caught:
            api.get_user_by_req  # noqa: B018
        self.assertIn("get_user_by_req", str(caught.exception))
        self.assertIn("register_presence_router_callbacks", str(caught.exception))
        with self.assertRaises(RuntimeError) as caught:
            api.register_presence_router_callbacks(get_users_for_states=lambda s: {})
        self.assertIn("get_interested_users", str(caught.exception))

    def test_answer_types_follow_synapses_declarations(self):
        check_states = self.host["check_users_for_states"]
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


class Process(unittest.TestCase):
    """The host as a child process, over its real pipes."""

    def start(self, modules, legacy=False):
        proc = subprocess.Popen(
            [sys.executable, "-c", BOOT, SOURCE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        # Cleanups run last-registered first: kill, reap, then close.
        self.addCleanup(proc.stdout.close)
        self.addCleanup(proc.stderr.close)
        self.addCleanup(proc.wait)
        self.addCleanup(proc.kill)
        self.proc = proc
        entries = [
            {"index": i, "module": name, "config": config, "legacy": legacy}
            for i, (name, config) in enumerate(modules)
        ]
        self.send({"op": "init", "server_name": "example.com", "path": [FIXTURES], "modules": entries})
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

    def test_end_of_input_ends_the_host(self):
        self.start([("custom_router.CustomPresenceRouter", {})])
        self.proc.stdin.close()
        self.assertEqual(self.proc.wait(5), 0)


if __name__ == "__main__":
    unittest.main()
