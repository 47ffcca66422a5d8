"""presenced's Python module host.

presenced starts this program as `python -c BOOT SOURCE` (the source is
compiled into the presenced binary) on the operator's interpreter, and
talks to it over stdin and the original stdout in length-prefixed JSON
frames (PROTOCOL.md beside this file). It loads Synapse presence router
modules the way Synapse does, and answers router calls on one asyncio loop,
as Synapse's modules expect (their state needs no locks). The modules
import the interpreter's own Synapse when it has one
(presenced_real_synapse.py), else presenced's stand-in `synapse` package
(presenced_standin.py); presenced_module_api.py is the ModuleApi of both.
Those three files come as further arguments (PARTS below).

Standard library only: the interpreter may be a bare virtualenv.
"""

import asyncio
import importlib
import inspect
import json
import logging
import os
import struct
import sys
import traceback
import types

# ---------------------------------------------------------------------------
# Frames

_HEADER = struct.Struct(">I")
_out_fd = 1  # replaced at start by a private copy of the original stdout
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_loads = json.loads


def send(message):
    body = _dumps(message).encode("utf-8")
    data = _HEADER.pack(len(body)) + body
    view = memoryview(data)
    while view:
        written = os.write(_out_fd, view)
        view = view[written:]


# ---------------------------------------------------------------------------
# The host's other files

# presenced passes their sources after this file's, in this order
# (protocol.rs's HOST_PARTS); each becomes a module of that name, so they
# import each other as usual.
PARTS = ("presenced_module_api", "presenced_standin", "presenced_real_synapse")


def load_parts(sources):
    if len(sources) != len(PARTS):
        raise SystemExit("presenced host: expected %d part sources, got %d" % (len(PARTS), len(sources)))
    for name, source in zip(PARTS, sources):
        module = types.ModuleType(name)
        module.__file__ = "<presenced-host>/%s.py" % name
        sys.modules[name] = module
        exec(compile(source, module.__file__, "exec"), module.__dict__)


# Synapse's value, in the stand-in and in the real package alike.
PRESENCE_ALL_USERS = "ALL"


# ---------------------------------------------------------------------------
# Answer types (Synapse's declared return types)


class WrongType(Exception):
    pass


def _type_name(value):
    return type(value).__name__


def check_users_for_states(result, synapse):
    """Synapse's declared type; `synapse` is the stand-in or the real
    package's view (its UserPresenceState and how states go on the wire)."""
    if not isinstance(result, dict):
        raise WrongType("returned %s; expected Dict[str, Set[UserPresenceState]]" % _type_name(result))
    out = {}
    for user_id, states in result.items():
        if not isinstance(user_id, str):
            raise WrongType("has a %s key %r; expected str user ids" % (_type_name(user_id), user_id))
        if not isinstance(states, set):
            raise WrongType("maps %s to a %s; expected a set of UserPresenceState" % (user_id, _type_name(states)))
        for state in states:
            if not isinstance(state, synapse.UserPresenceState):
                raise WrongType("maps %s to a set holding a %s; expected UserPresenceState" % (user_id, _type_name(state)))
        out[user_id] = synapse.states_to_wire(states)
    return out


def check_interested_users(result):
    # The string first: iterating "@bob:x" would give characters.
    if isinstance(result, str):
        if result == PRESENCE_ALL_USERS:
            return PRESENCE_ALL_USERS
        raise WrongType("returned the str %r; expected a set of user ids or PRESENCE_ALL_USERS" % result)
    if not isinstance(result, set):
        raise WrongType("returned %s; expected Set[str] or PRESENCE_ALL_USERS" % _type_name(result))
    for user_id in result:
        if not isinstance(user_id, str):
            raise WrongType("returned a set holding a %s; expected str user ids" % _type_name(user_id))
    return list(result)


# ---------------------------------------------------------------------------
# Logging


class _FrameHandler(logging.Handler):
    """Every record at INFO or above goes to presenced's log, tagged with the
    configured module it comes from."""

    def __init__(self, host):
        super().__init__(logging.INFO)
        self._host = host
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record):
        try:
            send(
                {
                    "op": "log",
                    "logger": record.name,
                    "level": record.levelname,
                    "message": self.format(record),
                    "module": self._host.module_of_logger(record.name),
                }
            )
        except Exception:
            self.handleError(record)


# ---------------------------------------------------------------------------
# The host


class Host:
    def __init__(self, loop):
        self.loop = loop
        self.synapse = None  # presenced_standin.StandIn or presenced_real_synapse.RealSynapse, chosen at init
        self.server_name = None
        self.callbacks = {}  # (module index, slot) -> (get_users_for_states, get_interested_users)
        self.module_names = []  # (python module path, configured name)
        self.tasks = {}
        self.api_waiters = {}
        self.next_api_id = 1
        self.buffer = bytearray()

    # -- input ----------------------------------------------------------

    def on_readable(self):
        buffer = self.buffer
        while True:
            # 64 KiB reads: a larger size costs an mmap per read in CPython.
            try:
                chunk = os.read(0, 65536)
            except BlockingIOError:
                break
            if not chunk:
                self.loop.stop()
                return
            buffer += chunk
            if len(chunk) < 65536:
                break
        offset = 0
        while len(buffer) - offset >= 4:
            (length,) = _HEADER.unpack_from(buffer, offset)
            if len(buffer) - offset - 4 < length:
                break
            message = _loads(buffer[offset + 4 : offset + 4 + length])
            offset += 4 + length
            try:
                self.dispatch(message)
            except Exception:
                # A bad frame must not stop the host; presenced sees the
                # call time out and the traceback in its log.
                sys.stderr.write("presenced host: cannot handle %r:\n%s\n" % (message.get("op"), _format_exception()))
        del buffer[:offset]

    def dispatch(self, message):
        op = message["op"]
        if op == "call":
            self.call(message)
        elif op == "ping":
            send({"op": "pong", "id": message["id"]})
        elif op == "cancel":
            task = self.tasks.pop(message["id"], None)
            if task is not None:
                task.cancel()
        elif op == "api_result":
            waiter = self.api_waiters.pop(message["id"], None)
            if waiter is not None and not waiter.done():
                waiter.set_result(message.get("value"))
        elif op == "api_error":
            waiter = self.api_waiters.pop(message["id"], None)
            if waiter is not None and not waiter.done():
                waiter.set_exception(self.synapse.SynapseError(400, message["message"]))
        elif op == "init":
            self.init(message)

    # -- calls ----------------------------------------------------------

    def call(self, message):
        call_id = message["id"]
        key = (message["module"], message["slot"])
        pair = self.callbacks.get(key)
        if pair is None:
            send({"op": "error", "id": call_id, "kind": "exception", "message": "no callbacks %r" % (key,)})
            return
        if message["callback"] == "get_users_for_states":
            function = pair[0]
            argument = self.synapse.states_from_wire(message["states"])
            check = self.check_states
        else:
            function = pair[1]
            argument = message["user_id"]
            check = check_interested_users
        try:
            result = function(argument)
        except Exception:
            self.reply_exception(call_id)
            return
        if inspect.isawaitable(result):
            finished = []

            def done(value, error):
                finished.append(True)
                self.tasks.pop(call_id, None)
                if error is None:
                    self.reply(call_id, value, check)
                else:
                    send({"op": "error", "id": call_id, "kind": "exception", "message": error})

            # Awaited as the module's Synapse would: an asyncio task with the
            # stand-in, Twisted's coroutine driver with the real Synapse.
            handle = self.synapse.driver.start_call(result, done)
            if not finished:
                self.tasks[call_id] = handle
            return
        self.reply(call_id, result, check)

    def check_states(self, result):
        return check_users_for_states(result, self.synapse)

    def reply(self, call_id, result, check):
        try:
            value = check(result)
        except WrongType as e:
            send({"op": "error", "id": call_id, "kind": "wrong_type", "message": str(e)})
            return
        send({"op": "result", "id": call_id, "value": value})

    def reply_exception(self, call_id):
        send({"op": "error", "id": call_id, "kind": "exception", "message": _format_exception()})

    # -- module API ---------------------------------------------------------

    def api(self, method, args):
        """A future of presenced's answer to a ModuleApi call."""
        api_id = self.next_api_id
        self.next_api_id += 1
        waiter = self.loop.create_future()
        self.api_waiters[api_id] = waiter
        send({"op": "api", "id": api_id, "method": method, "args": args})
        return waiter

    # -- loading ----------------------------------------------------------

    def module_of_logger(self, logger_name):
        for path, name in self.module_names:
            if logger_name == path or logger_name.startswith(path + "."):
                return name
        return None

    def init(self, message):
        self.server_name = message["server_name"]
        for entry in reversed(message.get("path") or []):
            sys.path.insert(0, entry)
        self.synapse = self.choose_synapse(message["modules"])
        ready = []
        for spec in message["modules"]:
            path = spec["module"].rpartition(".")[0]
            self.module_names.append((path, spec["module"]))
        for spec in message["modules"]:
            pairs = self.load(spec)
            for slot, pair in enumerate(pairs):
                self.callbacks[(spec["index"], slot)] = pair
            ready.append({"index": spec["index"], "pairs": len(pairs)})
        send(
            {
                "op": "ready",
                "python": sys.version,
                "executable": sys.executable,
                "synapse": _synapse_origin(self.synapse),
                "modules": ready,
            }
        )

    def choose_synapse(self, modules):
        """The interpreter's own Synapse when it has one, else the stand-in
        (the README's "Bring your Synapse presence router")."""
        import presenced_real_synapse
        import presenced_standin

        found = presenced_real_synapse.find()
        if found is None:
            return presenced_standin.install(self.loop)
        try:
            return presenced_real_synapse.install(self.loop)
        except presenced_real_synapse.SetupError as e:
            message = str(e)
        except BaseException:
            message = "importing it failed:\n" + _format_exception()
        init_error(
            modules[0] if modules else {"index": 0, "module": None},
            "synapse",
            "the interpreter %s has a synapse package (%s), which presenced then uses for the modules; %s"
            % (sys.executable, found, message),
        )

    def load(self, spec):
        import presenced_module_api

        name = spec["module"]
        module_path, _, class_name = name.rpartition(".")
        try:
            module = importlib.import_module(module_path)
            cls = getattr(module, class_name)
        except BaseException as e:
            self.add_stand_in_note(e)
            init_error(spec, "import", _format_exception())
        config = spec.get("config")
        if config is None:
            config = {}
        parse = getattr(cls, "parse_config", None)
        if parse is not None:
            try:
                config = parse(config)
            except BaseException as e:
                init_error(spec, "parse_config", _describe_config_error(e) + "parse_config raised:\n" + _format_exception())
        api = self.synapse.module_api(self, name)
        try:
            if spec.get("legacy"):
                # As Synapse loads `presence.presence_router`: keywords, then
                # the instance's methods (plain or async) as one pair.
                instance = cls(config=config, module_api=api)
                api.register_presence_router_callbacks(
                    get_users_for_states=getattr(instance, "get_users_for_states", None),
                    get_interested_users=getattr(instance, "get_interested_users", None),
                )
            else:
                cls(config, api)
        except presenced_module_api.RegistrationError as e:
            init_error(spec, "registration", str(e))
        except BaseException as e:
            self.add_stand_in_note(e)
            init_error(spec, "construct", _format_exception())
        return api._presenced_pairs

    def add_stand_in_note(self, error):
        """`from synapse.x import missing` loses the stand-in's message
        (CPython raises its own ImportError): say what is provided."""
        if self.synapse.real or not isinstance(error, ImportError):
            return
        if not (error.name or "").startswith("synapse"):
            return
        import presenced_standin

        note = (
            "not available in presenced: without Synapse installed in python_modules.python, "
            "modules get presenced's stand-in synapse package, which provides: %s" % presenced_standin.provided_summary()
        )
        if hasattr(error, "add_note"):
            error.add_note(note)
        else:
            error.args = ("%s\n%s" % (error.args[0] if error.args else "", note),)


def _describe_config_error(error):
    """Synapse's ConfigError (its own or the stand-in's) as a first line:
    what is wrong and where."""
    if type(error).__name__ != "ConfigError":
        return ""
    path = getattr(error, "path", None)
    where = " at %s" % ".".join(str(p) for p in path) if path else ""
    return "invalid config%s: %s\n" % (where, getattr(error, "msg", error))


def _synapse_origin(synapse):
    if not synapse.real:
        return "presenced's stand-in"
    import importlib.metadata

    import synapse as package

    # Not synapse.__version__: Synapse adds the git state of the current
    # directory to it.
    try:
        version = importlib.metadata.version("matrix-synapse")
    except importlib.metadata.PackageNotFoundError:
        version = "(unknown version)"
    return "matrix-synapse %s in %s" % (version, os.path.dirname(package.__file__))


def _format_exception():
    return "".join(traceback.format_exception(*sys.exc_info())).rstrip()


def init_error(spec, kind, message):
    send({"op": "init_error", "index": spec["index"], "module": spec["module"], "kind": kind, "message": message})
    sys.stderr.flush()
    os._exit(1)


def main():
    global _out_fd
    # Frames use a private copy of stdout; fd 1 becomes stderr, so a
    # module's print() can never corrupt a frame.
    _out_fd = os.dup(1)
    os.dup2(2, 1)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    if hasattr(asyncio, "eager_task_factory"):
        # 3.12+: a coroutine that never suspends finishes without a loop turn.
        loop.set_task_factory(asyncio.eager_task_factory)
    load_parts(sys.argv[2:])
    host = Host(loop)
    root = logging.getLogger()
    root.addHandler(_FrameHandler(host))
    root.setLevel(logging.INFO)
    os.set_blocking(0, False)
    loop.add_reader(0, host.on_readable)
    try:
        loop.run_forever()
    finally:
        sys.stderr.flush()
        # Modules may have background tasks and threads; presenced closed
        # our stdin, so leave now.
        os._exit(0)


if __name__ == "__main__":
    main()
