"""presenced's stand-in `synapse` package, used when the interpreter has no
Synapse installed.

It gives the names of Synapse's module API that make sense outside a
homeserver (written for presenced from Synapse's documented names and
behaviour; none of Synapse's code): the presence types, user and room ids,
errors and error codes, constants, ConfigError, and the background-work
helpers, which return asyncio futures here where Synapse returns Deferreds
(both are awaited the same way). Every other `synapse.*` module or name
fails with a message naming it and what the stand-in provides.
"""

import asyncio
import collections
import enum
import inspect
import logging
import sys
import traceback
import types
import typing

import presenced_module_api

PRESENCE_ALL_USERS = "ALL"

# ---------------------------------------------------------------------------
# Presence state

STATE_FIELDS = presenced_module_api.STATE_FIELDS
_StateTuple = collections.namedtuple("_StateTuple", STATE_FIELDS)


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
        fields = ", ".join("%s=%r" % (f, getattr(self, f)) for f in STATE_FIELDS)
        return "UserPresenceState(%s)" % fields

    @classmethod
    def default(cls, user_id):
        return cls(user_id, "offline", 0, 0, 0, None, False)

    def copy_and_replace(self, **changes):
        unknown = set(changes) - set(STATE_FIELDS)
        if unknown:
            raise TypeError("UserPresenceState has no field(s) %s" % ", ".join(sorted(unknown)))
        return self._replace(**changes)

    def as_dict(self):
        return dict(zip(STATE_FIELDS, self))

    def __setattr__(self, name, value):
        raise AttributeError("UserPresenceState is frozen; use copy_and_replace")


class _PresenceRouterNames:
    """`synapse.events.presence_router.PresenceRouter`: modules use its
    ALL_USERS constant (in annotations evaluated at definition time)."""

    ALL_USERS = PRESENCE_ALL_USERS


# ---------------------------------------------------------------------------
# Errors (synapse.api.errors, synapse.config)


class Codes(str, enum.Enum):
    """Matrix error codes (the Matrix specification's names), equal to
    their strings."""

    UNRECOGNIZED = "M_UNRECOGNIZED"
    UNAUTHORIZED = "M_UNAUTHORIZED"
    FORBIDDEN = "M_FORBIDDEN"
    BAD_JSON = "M_BAD_JSON"
    NOT_JSON = "M_NOT_JSON"
    UNKNOWN = "M_UNKNOWN"
    NOT_FOUND = "M_NOT_FOUND"
    MISSING_TOKEN = "M_MISSING_TOKEN"
    UNKNOWN_TOKEN = "M_UNKNOWN_TOKEN"
    LIMIT_EXCEEDED = "M_LIMIT_EXCEEDED"
    MISSING_PARAM = "M_MISSING_PARAM"
    INVALID_PARAM = "M_INVALID_PARAM"
    TOO_LARGE = "M_TOO_LARGE"
    INVALID_USERNAME = "M_INVALID_USERNAME"
    USER_DEACTIVATED = "M_USER_DEACTIVATED"
    RESOURCE_LIMIT_EXCEEDED = "M_RESOURCE_LIMIT_EXCEEDED"


class CodeMessageException(RuntimeError):
    """An HTTP status and a message."""

    def __init__(self, code, msg, headers=None):
        super().__init__("%d: %s" % (code, msg))
        self.code = int(code)
        self.msg = msg
        self.headers = headers


class SynapseError(CodeMessageException):
    """An error with a Matrix errcode, as a client would receive it."""

    def __init__(self, code, msg, errcode=Codes.UNKNOWN, additional_fields=None, headers=None):
        super().__init__(code, msg, headers)
        self.errcode = errcode
        self.additional_fields = dict(additional_fields or {})

    def error_dict(self, config=None):
        return dict(self.additional_fields, errcode=str(getattr(self.errcode, "value", self.errcode)), error=self.msg)


class AuthError(SynapseError):
    def __init__(self, code, msg, errcode=Codes.FORBIDDEN, additional_fields=None):
        super().__init__(code, msg, errcode, additional_fields)


class NotFoundError(SynapseError):
    def __init__(self, msg="Not found", errcode=Codes.NOT_FOUND):
        super().__init__(404, msg, errcode)


class InvalidClientCredentialsError(SynapseError):
    def __init__(self, msg, errcode):
        super().__init__(401, msg, errcode)


class ConfigError(Exception):
    """Raised by a module's parse_config for a bad config; `path` names
    the offending key."""

    def __init__(self, msg, path=None):
        super().__init__(msg)
        self.msg = msg
        self.path = path


# ---------------------------------------------------------------------------
# Constants (synapse.api.constants): the Matrix specification's values


class PresenceState:
    OFFLINE = "offline"
    UNAVAILABLE = "unavailable"
    ONLINE = "online"
    BUSY = "org.matrix.msc3026.busy"


class Membership:
    INVITE = "invite"
    JOIN = "join"
    KNOCK = "knock"
    LEAVE = "leave"
    BAN = "ban"
    LIST = frozenset((INVITE, JOIN, KNOCK, LEAVE, BAN))


class EventTypes:
    Member = "m.room.member"
    Create = "m.room.create"
    Tombstone = "m.room.tombstone"
    JoinRules = "m.room.join_rules"
    PowerLevels = "m.room.power_levels"
    Aliases = "m.room.aliases"
    Redaction = "m.room.redaction"
    RoomHistoryVisibility = "m.room.history_visibility"
    CanonicalAlias = "m.room.canonical_alias"
    Encrypted = "m.room.encrypted"
    RoomAvatar = "m.room.avatar"
    RoomEncryption = "m.room.encryption"
    GuestAccess = "m.room.guest_access"
    Message = "m.room.message"
    Topic = "m.room.topic"
    Name = "m.room.name"
    SpaceChild = "m.space.child"
    SpaceParent = "m.space.parent"
    Reaction = "m.reaction"


class EduTypes:
    PRESENCE = "m.presence"
    TYPING = "m.typing"
    RECEIPT = "m.receipt"


class JoinRules:
    PUBLIC = "public"
    KNOCK = "knock"
    INVITE = "invite"
    PRIVATE = "private"
    RESTRICTED = "restricted"
    KNOCK_RESTRICTED = "knock_restricted"


# ---------------------------------------------------------------------------
# Identifiers (synapse.types)

JsonDict = typing.Dict[str, typing.Any]
JsonMapping = typing.Mapping[str, typing.Any]
_T = typing.TypeVar("_T")
StateMap = typing.Mapping[typing.Tuple[str, str], _T]
StrCollection = typing.Union[typing.Tuple[str, ...], typing.List[str], typing.AbstractSet[str]]


class DomainSpecificString:
    """A sigil, a local part and a server name: `@alice:example.com`."""

    SIGIL = ""
    __slots__ = ("localpart", "domain")

    def __init__(self, localpart, domain):
        object.__setattr__(self, "localpart", localpart)
        object.__setattr__(self, "domain", domain)

    def __setattr__(self, name, value):
        raise AttributeError("%s is frozen" % type(self).__name__)

    @classmethod
    def from_string(cls, s):
        if len(s) < 1 or s[0] != cls.SIGIL or ":" not in s:
            raise SynapseError(
                400, "Expected %s string to start with '%s' and contain ':'" % (cls.__name__, cls.SIGIL), Codes.INVALID_PARAM
            )
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
        return "%s(localpart=%r, domain=%r)" % (type(self).__name__, self.localpart, self.domain)

    def __eq__(self, other):
        return type(other) is type(self) and (self.localpart, self.domain) == (other.localpart, other.domain)

    def __hash__(self):
        return hash((type(self).__name__, self.localpart, self.domain))


class UserID(DomainSpecificString):
    SIGIL = "@"


class RoomAlias(DomainSpecificString):
    SIGIL = "#"


class RoomID(DomainSpecificString):
    SIGIL = "!"


def get_domain_from_id(string):
    idx = string.find(":")
    if idx == -1:
        raise SynapseError(400, "Invalid ID: %r" % (string,), Codes.INVALID_PARAM)
    return string[idx + 1 :]


def get_localpart_from_id(string):
    idx = string.find(":")
    if idx == -1:
        raise SynapseError(400, "Invalid ID: %r" % (string,), Codes.INVALID_PARAM)
    return string[1:idx]


# ---------------------------------------------------------------------------
# Background work (synapse.logging.context, synapse.module_api)

# asyncio keeps only weak references to tasks: these are the strong ones.
_running = set()


def _keep(task):
    _running.add(task)
    task.add_done_callback(_running.discard)
    return task


def run_in_background(f, *args, **kwargs):
    """Calls f now and returns an awaitable of its result (an asyncio
    future; Synapse returns a Deferred). A raise becomes a failed future,
    as Synapse turns it into a failed Deferred."""
    loop = asyncio.get_event_loop()
    try:
        result = f(*args, **kwargs)
    except Exception as e:
        future = loop.create_future()
        future.set_exception(e)
        return future
    if inspect.isawaitable(result):
        return _keep(asyncio.ensure_future(result))
    future = loop.create_future()
    future.set_result(result)
    return future


def make_deferred_yieldable(awaitable):
    """Synapse restores its log context here; presenced has none to
    restore, so the awaitable is returned as it is."""
    return awaitable


def run_as_background_process(desc, func, *args, bg_start_span=True, **kwargs):
    """Runs func in the background; awaitable, gives its value or None
    when it raised (logged)."""
    logger = logging.getLogger("synapse.module_api")
    run = presenced_module_api.run_logged(desc, func, args, kwargs, logger)
    return _keep(asyncio.ensure_future(run))


class AsyncioDriver:
    """How presenced's ModuleApi waits without Synapse: asyncio."""

    SynapseError = SynapseError

    def __init__(self, loop):
        self.loop = loop

    def wait(self, future):
        return future

    def spawn(self, coroutine):
        return _keep(self.loop.create_task(coroutine))

    def call_later(self, seconds, f):
        return self.loop.call_later(seconds, f)

    def start_call(self, awaitable, done):
        """Awaits a callback's result; done(value, None) or done(None,
        traceback text); nothing when cancelled."""

        async def run():
            try:
                value = await awaitable
            except asyncio.CancelledError:
                return
            except Exception as e:
                done(None, format_error(e))
                return
            done(value, None)

        return self.loop.create_task(run())


def format_error(error):
    return "".join(traceback.format_exception(type(error), error, error.__traceback__)).rstrip()


class ModuleApi(presenced_module_api.PresencedModuleApi):
    """presenced's ModuleApi (the calls presenced_module_api.py lists)."""


# ---------------------------------------------------------------------------
# The package

# Module name -> names it provides. Packages get an empty __path__.
MODULES = {
    "synapse": {},
    "synapse.module_api": {
        "ModuleApi": ModuleApi,
        "PRESENCE_ALL_USERS": PRESENCE_ALL_USERS,
        "UserPresenceState": UserPresenceState,
        "UserID": UserID,
        "DomainSpecificString": DomainSpecificString,
        "RoomAlias": RoomAlias,
        "RoomID": RoomID,
        "JsonDict": JsonDict,
        "JsonMapping": JsonMapping,
        "StateMap": StateMap,
        "run_in_background": run_in_background,
        "make_deferred_yieldable": make_deferred_yieldable,
        "run_as_background_process": run_as_background_process,
    },
    "synapse.module_api.errors": {
        "Codes": Codes,
        "ConfigError": ConfigError,
        "SynapseError": SynapseError,
        "InvalidClientCredentialsError": InvalidClientCredentialsError,
    },
    "synapse.api": {"UserPresenceState": UserPresenceState},
    "synapse.api.presence": {"UserPresenceState": UserPresenceState},
    "synapse.api.errors": {
        "Codes": Codes,
        "CodeMessageException": CodeMessageException,
        "SynapseError": SynapseError,
        "AuthError": AuthError,
        "NotFoundError": NotFoundError,
        "InvalidClientCredentialsError": InvalidClientCredentialsError,
    },
    "synapse.api.constants": {
        "PresenceState": PresenceState,
        "Membership": Membership,
        "EventTypes": EventTypes,
        "EduTypes": EduTypes,
        "JoinRules": JoinRules,
    },
    "synapse.config": {"ConfigError": ConfigError},
    "synapse.handlers": {},
    "synapse.handlers.presence": {"UserPresenceState": UserPresenceState},
    "synapse.events": {},
    "synapse.events.presence_router": {"PresenceRouter": _PresenceRouterNames},
    "synapse.logging": {},
    "synapse.logging.context": {
        "run_in_background": run_in_background,
        "make_deferred_yieldable": make_deferred_yieldable,
    },
    "synapse.types": {
        "UserID": UserID,
        "DomainSpecificString": DomainSpecificString,
        "RoomAlias": RoomAlias,
        "RoomID": RoomID,
        "JsonDict": JsonDict,
        "JsonMapping": JsonMapping,
        "StateMap": StateMap,
        "StrCollection": StrCollection,
        "get_domain_from_id": get_domain_from_id,
        "get_localpart_from_id": get_localpart_from_id,
    },
}
PACKAGES = {"synapse", "synapse.module_api", "synapse.api", "synapse.handlers", "synapse.events", "synapse.logging"}
_HINT = "install matrix-synapse in python_modules.python's interpreter to use Synapse's own"


def provided_summary():
    parts = []
    for name, names in MODULES.items():
        if names:
            parts.append("%s (%s)" % (name, ", ".join(sorted(names))))
    return "; ".join(parts)


def _missing_attribute(module_name, provided):
    def __getattr__(name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(
            "not available in presenced: %s.%s (presenced's stand-in %s provides: %s; %s)"
            % (module_name, name, module_name, ", ".join(sorted(provided)) or "nothing", _HINT)
        )

    return __getattr__


class _StandInFinder:
    """First on sys.meta_path: a `synapse.*` module the stand-in does not
    have fails naming itself and what is provided."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "synapse" and not fullname.startswith("synapse."):
            return None
        if fullname in sys.modules:
            return None
        raise ModuleNotFoundError(
            "not available in presenced: module %r (presenced's stand-in synapse package provides: %s; %s)"
            % (fullname, ", ".join(MODULES), _HINT),
            name=fullname,
        )

    def invalidate_caches(self):
        pass


def install(loop):
    """Puts the stand-in in sys.modules; returns what the host needs."""
    modules = {}
    for name, names in MODULES.items():
        module = types.ModuleType(name, "presenced's stand-in for Synapse's %s" % name)
        module.__file__ = "<presenced-stand-in>/%s" % name.replace(".", "/")
        module.__package__ = name if name in PACKAGES else name.rpartition(".")[0]
        if name in PACKAGES:
            module.__path__ = []
        module.__dict__.update(names)
        module.__getattr__ = _missing_attribute(name, names)
        modules[name] = module
        sys.modules[name] = module
    for name, module in modules.items():
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(modules[parent], child, module)
    modules["synapse.module_api"].errors = modules["synapse.module_api.errors"]
    sys.meta_path.insert(0, _StandInFinder())
    return StandIn(loop)


class StandIn:
    """The host's view of the stand-in (presenced_real_synapse.RealSynapse
    has the same members)."""

    real = False
    UserPresenceState = UserPresenceState
    SynapseError = SynapseError

    def __init__(self, loop):
        self.driver = AsyncioDriver(loop)

    def module_api(self, host, module_name):
        return ModuleApi(host, module_name, self.driver)

    @staticmethod
    def states_from_wire(rows):
        """STATE arrays (PROTOCOL.md) to UserPresenceStates, without a copy
        of the fields: the tuple is built from the decoded list directly."""
        new = tuple.__new__
        cls = UserPresenceState
        return [new(cls, row) for row in rows]

    @staticmethod
    def states_to_wire(states):
        # A UserPresenceState is a tuple: it encodes as the STATE array.
        return list(states)
