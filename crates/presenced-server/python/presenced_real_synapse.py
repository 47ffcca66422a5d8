"""The operator's own Synapse, when python_modules.python can import it.

Modules then import Synapse's real modules (its types, errors, constants,
`synapse.module_api`), as they do inside Synapse. Nothing of the homeserver
starts: no config is read, no database opened, nothing listens. presenced
supplies the ModuleApi object, a subclass of Synapse's ModuleApi whose
own members answer what presenced can (presenced_module_api.py) and refuse
the rest by name.

Waiting works as in Synapse: Twisted's asyncio reactor is installed on the
host's event loop before Synapse is imported, module coroutines run under
Twisted's coroutine driver (`ensureDeferred`, as Synapse awaits them), and
so Synapse's own `run_in_background`, `make_deferred_yieldable`, Deferreds
and `reactor.callLater` work, while presenced's calls and frames stay on
the same single-threaded loop.
"""

import asyncio
import importlib.util
import os
import sys
import traceback

import presenced_module_api

STATE_FIELDS = presenced_module_api.STATE_FIELDS


def find():
    """Where the interpreter (with python_modules.path) has a `synapse`
    package, or None; nothing is imported to find out."""
    spec = importlib.util.find_spec("synapse")
    if spec is None:
        return None
    return spec.origin or ", ".join(spec.submodule_search_locations or ()) or "?"


class SetupError(Exception):
    """The interpreter's Synapse cannot be used; the message says why."""


def install(loop):
    """Installs the reactor on `loop`, imports Synapse; returns what the
    host needs. Raises SetupError or Synapse's own import error."""
    # With this set, importing Synapse installs a reactor on a new loop of
    # its own; the host's loop must be the one.
    os.environ.pop("SYNAPSE_ASYNC_IO_REACTOR", None)
    if "twisted.internet.reactor" in sys.modules:
        raise SetupError(
            "a Twisted reactor was installed before presenced's (by sitecustomize or a .pth file?); "
            "presenced needs Twisted's asyncio reactor on its own loop"
        )
    from twisted.internet import asyncioreactor

    asyncioreactor.install(loop)
    from twisted.internet import defer, reactor

    import synapse
    import synapse.api.errors
    import synapse.api.presence
    import synapse.module_api

    fields = _fields(synapse.api.presence.UserPresenceState)
    if fields != STATE_FIELDS:
        raise SetupError(
            "this Synapse's UserPresenceState has the fields %s; presenced exchanges %s"
            % (", ".join(fields), ", ".join(STATE_FIELDS))
        )
    # Starts the reactor's bookkeeping (its thread pool, callWhenRunning)
    # without running a loop of its own: the host's loop already runs.
    reactor.startRunning(installSignalHandlers=False)
    return RealSynapse(loop, defer, reactor, synapse)


def _fields(cls):
    import attr

    try:
        return tuple(a.name for a in attr.fields(cls))
    except Exception:
        return ()


class TwistedDriver:
    """How presenced's ModuleApi waits with Synapse: Deferreds."""

    def __init__(self, loop, defer, reactor, synapse_error):
        self.loop = loop
        self._defer = defer
        self._reactor = reactor
        self.SynapseError = synapse_error

    def wait(self, future):
        return self._defer.Deferred.fromFuture(future)

    def spawn(self, coroutine):
        return self._defer.ensureDeferred(coroutine)

    def call_later(self, seconds, f):
        return self._reactor.callLater(seconds, f)

    def start_call(self, awaitable, done):
        """Awaits a callback's result as Synapse does; done(value, None) or
        done(None, traceback text); nothing when cancelled."""
        defer = self._defer
        if isinstance(awaitable, defer.Deferred):
            deferred = awaitable
        else:
            deferred = defer.ensureDeferred(_awaited(awaitable))

        def failed(failure):
            if failure.check(defer.CancelledError, asyncio.CancelledError):
                return None
            error = failure.value
            text = traceback.format_exception(type(error), error, failure.getTracebackObject())
            done(None, "".join(text).rstrip())
            return None

        deferred.addCallbacks(lambda value: done(value, None), failed)
        return deferred


async def _awaited(awaitable):
    return await awaitable


class RealSynapse:
    """The host's view of the real Synapse (presenced_standin.StandIn has
    the same members)."""

    real = True

    def __init__(self, loop, defer, reactor, synapse):
        self.UserPresenceState = synapse.api.presence.UserPresenceState
        self.SynapseError = synapse.api.errors.SynapseError
        self.driver = TwistedDriver(loop, defer, reactor, self.SynapseError)
        self.ModuleApi = _module_api_class(synapse.module_api.ModuleApi)

    def module_api(self, host, module_name):
        return self.ModuleApi(host, module_name, self.driver)

    def states_from_wire(self, rows):
        cls = self.UserPresenceState
        return [cls(*row) for row in rows]

    @staticmethod
    def states_to_wire(states):
        return [
            [
                s.user_id,
                s.state,
                s.last_active_ts,
                s.last_federation_update_ts,
                s.last_user_sync_ts,
                s.status_msg,
                s.currently_active,
            ]
            for s in states
        ]


def _module_api_class(synapse_module_api):
    """A subclass of Synapse's ModuleApi: isinstance checks pass, its
    __init__ (which needs a homeserver) never runs, and every public member
    presenced does not answer raises NotAvailable naming it."""
    provided = set(presenced_module_api.PROVIDED)
    refused = frozenset(n for n in dir(synapse_module_api) if not n.startswith("_") and n not in provided)

    class ModuleApi(presenced_module_api.PresencedModuleApi, synapse_module_api):
        __doc__ = presenced_module_api.PresencedModuleApi.__doc__

        def __getattribute__(self, name):
            if name in refused:
                raise presenced_module_api.not_available("ModuleApi", name, presenced_module_api.PROVIDED)
            return object.__getattribute__(self, name)

    return ModuleApi
