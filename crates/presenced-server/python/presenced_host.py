"""presenced's Python module host.

presenced starts this program as `python -c BOOT SOURCE` (the source is
compiled into the presenced binary) on the operator's interpreter, and
talks to it over stdin and the original stdout in length-prefixed JSON
frames (PROTOCOL.md beside this file). It loads Synapse presence router
modules the way Synapse does, behind a small `synapse` package of its own,
and answers router calls on one asyncio loop, as Synapse's modules expect
(their state needs no locks).

Standard library only: the interpreter may be a bare virtualenv.
"""

import asyncio
import collections
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
# The `synapse` compatibility package

PRESENCE_ALL_USERS = "ALL"

_STATE_FIELDS = (
    "user_id",
    "state",
    "last_active_ts",
    "last_federation_update_ts",
    "last_user_sync_ts",
    "status_msg",
    "currently_active",
)
_StateTuple = collections.namedtuple("_StateTuple", _STATE_FIELDS)


class UserPresenceState(_StateTuple):
    """Synapse's frozen `UserPresenceState`: seven fields, immutable, equal
    and hashed by value. A tuple underneath because building a hundred of
    them per call is the host's hot path."""

    __slots__ = ()

    def __eq__(self, other):
        return type(other) is type(self) and tuple.__eq__(self, other)

    def __ne__(self, other):
        return not self.__eq__(other)

    __hash__ = tuple.__hash__

    def __repr__(self):
        fields = ", ".join("%s=%r" % (f, getattr(self, f)) for f in _STATE_FIELDS)
        return "UserPresenceState(%s)" % fields

    @classmethod
    def default(cls, user_id):
        return cls(user_id, "offline", 0, 0, 0, None, False)

    def copy_and_replace(self, **changes):
        unknown = set(changes) - set(_STATE_FIELDS)
        if unknown:
            raise TypeError("UserPresenceState has no field(s) %s" % ", ".join(sorted(unknown)))
        return self._replace(**changes)

    def as_dict(self):
        return dict(zip(_STATE_FIELDS, self))

    def __setattr__(self, name, value):
        raise AttributeError("UserPresenceState is frozen; use copy_and_replace")


def _states_from_wire(rows):
    """STATE arrays (PROTOCOL.md) to UserPresenceStates, without a copy
    of the fields: the tuple is built from the decoded list directly."""
    new = tuple.__new__
    cls = UserPresenceState
    return [new(cls, row) for row in rows]


class SynapseError(Exception):
    """Synapse's error with an HTTP code and a Matrix errcode."""

    def __init__(self, code, msg, errcode="M_UNKNOWN", additional_fields=None):
        super().__init__("%d: %s" % (code, msg))
        self.code = code
        self.msg = msg
        self.errcode = errcode
        self.additional_fields = additional_fields or {}


class ConfigError(Exception):
    """Raised by a module's parse_config for a bad config."""

    def __init__(self, msg, path=None):
        super().__init__(msg)
        self.msg = msg
        self.path = path


def get_domain_from_id(string):
    idx = string.find(":")
    if idx == -1:
        raise SynapseError(400, "Invalid ID: %r" % (string,), "M_INVALID_PARAM")
    return string[idx + 1 :]


class UserID:
    """`@localpart:domain`."""

    SIGIL = "@"
    __slots__ = ("localpart", "domain")

    def __init__(self, localpart, domain):
        object.__setattr__(self, "localpart", localpart)
        object.__setattr__(self, "domain", domain)

    def __setattr__(self, name, value):
        raise AttributeError("UserID is frozen")

    @classmethod
    def from_string(cls, s):
        if len(s) < 1 or s[0] != cls.SIGIL or ":" not in s:
            raise SynapseError(400, "Expected UserID string to start with '@' and contain ':'", "M_INVALID_PARAM")
        localpart, domain = s[1:].split(":", 1)
        return cls(localpart, domain)

    @classmethod
    def is_valid(cls, s):
        try:
            cls.from_string(s)
            return True
        except Exception:
            return False

    def to_string(self):
        return "%s%s:%s" % (self.SIGIL, self.localpart, self.domain)

    __str__ = to_string

    def __repr__(self):
        return "UserID(%r, %r)" % (self.localpart, self.domain)

    def __eq__(self, other):
        return type(other) is type(self) and (self.localpart, self.domain) == (other.localpart, other.domain)

    def __hash__(self):
        return hash((self.localpart, self.domain))


class _PresenceRouterNames:
    """`synapse.events.presence_router.PresenceRouter`: modules use its
    ALL_USERS constant (in annotations evaluated at definition time)."""

    ALL_USERS = PRESENCE_ALL_USERS


class _RegistrationError(RuntimeError):
    pass


class ModuleApi:
    """The part of Synapse's ModuleApi a presence router uses."""

    _PROVIDED = (
        "server_name",
        "register_presence_router_callbacks",
        "send_local_online_presence_to",
        "set_presence_for_users",
        "is_mine",
        "get_qualified_user_id",
        "sleep",
        "looping_background_call",
        "run_as_background_process",
    )

    def __init__(self, host, module_name):
        self._host = host
        self._module_name = module_name
        self._pairs = []

    @property
    def server_name(self):
        return self._host.server_name

    def register_presence_router_callbacks(self, get_users_for_states=None, get_interested_users=None):
        if (get_users_for_states is None) != (get_interested_users is None):
            only = "get_users_for_states" if get_interested_users is None else "get_interested_users"
            raise _RegistrationError(
                "presence router callbacks get_users_for_states and get_interested_users "
                "must be registered together (got only %s)" % only
            )
        if get_users_for_states is not None:
            self._pairs.append((get_users_for_states, get_interested_users))

    async def send_local_online_presence_to(self, users):
        await self._host.api("send_local_online_presence_to", {"users": [str(u) for u in users]})

    async def set_presence_for_users(self, users):
        wire = {}
        for user_id, value in users.items():
            state, status_msg = value
            wire[str(user_id)] = [state, status_msg]
        await self._host.api("set_presence_for_users", {"users": wire})

    def is_mine(self, user_id):
        if isinstance(user_id, UserID):
            return user_id.domain == self.server_name
        return get_domain_from_id(user_id) == self.server_name

    def get_qualified_user_id(self, username):
        if username.startswith("@"):
            return username
        return "@%s:%s" % (username, self.server_name)

    async def sleep(self, seconds):
        await asyncio.sleep(seconds)

    def looping_background_call(self, f, msec, *args, desc=None, run_on_all_instances=False, **kwargs):
        logger = logging.getLogger(self._module_name)

        async def loop():
            while True:
                await asyncio.sleep(msec / 1000)
                try:
                    result = f(*args, **kwargs)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    logger.exception("looping call %s failed", desc or getattr(f, "__name__", f))

        return _BackgroundHandle(asyncio.ensure_future(loop()))

    def run_as_background_process(self, desc, func, *args, bg_start_span=True, **kwargs):
        logger = logging.getLogger(self._module_name)

        async def run():
            try:
                result = func(*args, **kwargs)
                if inspect.isawaitable(result):
                    result = await result
                return result
            except Exception:
                logger.exception("background process %s failed", desc)
                return None

        return asyncio.ensure_future(run())

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(
            "ModuleApi.%s is not provided by presenced (it implements only %s)"
            % (name, ", ".join(self._PROVIDED))
        )


class _BackgroundHandle:
    def __init__(self, task):
        self._task = task

    def stop(self):
        self._task.cancel()

    def running(self):
        return not self._task.done()


# Module name -> names it provides. Packages get an empty __path__.
_SHIM = {
    "synapse": {},
    "synapse.module_api": {"ModuleApi": ModuleApi, "PRESENCE_ALL_USERS": PRESENCE_ALL_USERS},
    "synapse.module_api.errors": {"ConfigError": ConfigError, "SynapseError": SynapseError},
    "synapse.api": {"UserPresenceState": UserPresenceState},
    "synapse.api.presence": {"UserPresenceState": UserPresenceState},
    "synapse.api.errors": {"SynapseError": SynapseError},
    "synapse.handlers": {},
    "synapse.handlers.presence": {"UserPresenceState": UserPresenceState},
    "synapse.events": {},
    "synapse.events.presence_router": {"PresenceRouter": _PresenceRouterNames},
    "synapse.types": {"UserID": UserID, "JsonDict": dict, "get_domain_from_id": get_domain_from_id},
}
_SHIM_PACKAGES = {"synapse", "synapse.module_api", "synapse.api", "synapse.handlers", "synapse.events"}


def _provided_summary():
    parts = []
    for name, names in _SHIM.items():
        if names:
            parts.append("%s (%s)" % (name, ", ".join(sorted(names))))
    return "; ".join(parts)


def _missing_attribute(module_name, provided):
    def __getattr__(name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(
            "presenced: %s.%s is not provided by presenced's Synapse compatibility layer "
            "(%s provides: %s)" % (module_name, name, module_name, ", ".join(sorted(provided)) or "nothing")
        )

    return __getattr__


class _ShimFinder:
    """First on sys.meta_path: every `synapse.*` name resolves to the shim
    or fails naming itself, even when a real Synapse is installed."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "synapse" and not fullname.startswith("synapse."):
            return None
        if fullname in sys.modules:
            return None
        raise ModuleNotFoundError(
            "presenced: module %r is not provided by presenced's Synapse compatibility layer "
            "(it provides: %s)" % (fullname, ", ".join(_SHIM)),
            name=fullname,
        )

    def invalidate_caches(self):
        pass


def install_shim():
    for name in list(sys.modules):
        if name == "synapse" or name.startswith("synapse."):
            del sys.modules[name]
    modules = {}
    for name, names in _SHIM.items():
        module = types.ModuleType(name, "presenced's stand-in for Synapse's %s" % name)
        module.__file__ = "<presenced-shim>/%s" % name.replace(".", "/")
        module.__package__ = name if name in _SHIM_PACKAGES else name.rpartition(".")[0]
        if name in _SHIM_PACKAGES:
            module.__path__ = []
        module.__dict__.update(names)
        module.__getattr__ = _missing_attribute(name, names)
        modules[name] = module
        sys.modules[name] = module
    for name, module in modules.items():
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(modules[parent], child, module)
    sys.meta_path.insert(0, _ShimFinder())


# ---------------------------------------------------------------------------
# Answer types (Synapse's declared return types)


class WrongType(Exception):
    pass


def _type_name(value):
    return type(value).__name__


def check_users_for_states(result):
    if not isinstance(result, dict):
        raise WrongType("returned %s; expected Dict[str, Set[UserPresenceState]]" % _type_name(result))
    out = {}
    for user_id, states in result.items():
        if not isinstance(user_id, str):
            raise WrongType("has a %s key %r; expected str user ids" % (_type_name(user_id), user_id))
        if not isinstance(states, set):
            raise WrongType("maps %s to a %s; expected a set of UserPresenceState" % (user_id, _type_name(states)))
        for state in states:
            if not isinstance(state, UserPresenceState):
                raise WrongType("maps %s to a set holding a %s; expected UserPresenceState" % (user_id, _type_name(state)))
        # A UserPresenceState is a tuple: it encodes as the STATE array.
        out[user_id] = list(states)
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
                waiter.set_exception(SynapseError(400, message["message"]))
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
            argument = _states_from_wire(message["states"])
            check = check_users_for_states
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
            task = asyncio.ensure_future(self.finish(call_id, result, check))
            if not task.done():
                self.tasks[call_id] = task
            return
        self.reply(call_id, result, check)

    async def finish(self, call_id, awaitable, check):
        try:
            result = await awaitable
        except asyncio.CancelledError:
            return
        except Exception:
            self.tasks.pop(call_id, None)
            self.reply_exception(call_id)
            return
        self.tasks.pop(call_id, None)
        self.reply(call_id, result, check)

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

    async def api(self, method, args):
        api_id = self.next_api_id
        self.next_api_id += 1
        waiter = self.loop.create_future()
        self.api_waiters[api_id] = waiter
        send({"op": "api", "id": api_id, "method": method, "args": args})
        return await waiter

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
                "modules": ready,
            }
        )

    def load(self, spec):
        name = spec["module"]
        module_path, _, class_name = name.rpartition(".")
        try:
            module = importlib.import_module(module_path)
            cls = getattr(module, class_name)
        except BaseException as e:
            _add_shim_note(e)
            init_error(spec, "import", _format_exception())
        config = spec.get("config")
        if config is None:
            config = {}
        parse = getattr(cls, "parse_config", None)
        if parse is not None:
            try:
                config = parse(config)
            except BaseException:
                init_error(spec, "parse_config", "parse_config raised:\n" + _format_exception())
        api = ModuleApi(self, name)
        try:
            if spec.get("legacy"):
                instance = cls(config=config, module_api=api)
                api.register_presence_router_callbacks(
                    get_users_for_states=getattr(instance, "get_users_for_states", None),
                    get_interested_users=getattr(instance, "get_interested_users", None),
                )
            else:
                cls(config, api)
        except _RegistrationError as e:
            init_error(spec, "registration", str(e))
        except BaseException as e:
            _add_shim_note(e)
            init_error(spec, "construct", _format_exception())
        return api._pairs


def _add_shim_note(error):
    """`from synapse.x import missing` loses the shim's message (CPython
    raises its own ImportError): say what is provided."""
    if isinstance(error, ImportError) and (error.name or "").startswith("synapse"):
        note = (
            "presenced runs Synapse modules against a small Synapse compatibility layer; "
            "it provides: %s" % _provided_summary()
        )
        if hasattr(error, "add_note"):
            error.add_note(note)
        else:
            error.args = ("%s\n%s" % (error.args[0] if error.args else "", note),)


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
    host = Host(loop)
    install_shim()
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
