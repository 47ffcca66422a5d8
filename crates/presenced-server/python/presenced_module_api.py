"""The ModuleApi calls presenced answers, for both kinds of `synapse`.

A module gets one ModuleApi object per configured entry, as in Synapse.
Without Synapse installed it is the stand-in's ModuleApi
(presenced_standin.py); with the operator's Synapse it is a subclass of
Synapse's own ModuleApi (presenced_real_synapse.py), so `isinstance` checks
against Synapse's class pass. Both inherit the calls below. What differs is
how waiting looks to the module, which the `driver` hides: asyncio futures
without Synapse, Twisted Deferreds with it (as in Synapse, whose modules
await Deferreds).

Anything else a homeserver's ModuleApi offers (storage, HTTP, accounts,
rooms) is refused by name: "not available in presenced: ModuleApi.<name>".
"""

import functools
import inspect
import logging
import time

# Synapse's UserPresenceState fields, in the order of the protocol's
# STATE arrays (both `synapse` packages build their states from it).
STATE_FIELDS = (
    "user_id",
    "state",
    "last_active_ts",
    "last_federation_update_ts",
    "last_user_sync_ts",
    "status_msg",
    "currently_active",
)


async def run_logged(desc, func, args, kwargs, logger):
    """What a background process runs: func's value (awaited if it is
    awaitable), or None when it raised, logged to `logger`."""
    try:
        result = func(*args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result
    except Exception:
        logger.exception("background process %s failed", desc)
        return None

# What presenced's ModuleApi answers; the README lists the same.
PROVIDED = (
    "server_name",
    "public_baseurl",
    "worker_app",
    "worker_name",
    "should_run_background_tasks",
    "get_current_time_msec",
    "register_presence_router_callbacks",
    "send_local_online_presence_to",
    "set_presence_for_users",
    "is_mine",
    "get_qualified_user_id",
    "sleep",
    "looping_background_call",
    "delayed_background_call",
    "run_as_background_process",
    "defer_to_thread",
)


class RegistrationError(RuntimeError):
    """Only one of the two presence router callbacks registered (Synapse
    refuses that too, with a RuntimeError)."""


class NotAvailable(AttributeError):
    """A ModuleApi member presenced cannot answer outside a homeserver."""


def not_available(owner, name, provided):
    return NotAvailable(
        "not available in presenced: %s.%s (presenced answers only: %s)" % (owner, name, ", ".join(provided))
    )


class PresencedModuleApi:
    """The calls presenced answers. `driver` is the stand-in's asyncio
    driver or the real Synapse's Twisted one (same methods: `loop`,
    `wait(future)`, `spawn(coroutine)`, `call_later(seconds, f)`,
    `SynapseError`)."""

    def __init__(self, host, module_name, driver):
        # Prefixed names: Synapse's own ModuleApi uses `_hs`, `_store`, ...
        # and a subclass must not look as if it had them.
        self._presenced_host = host
        self._presenced_name = module_name
        self._presenced_driver = driver
        self._presenced_pairs = []

    # -- identity ----------------------------------------------------------

    @property
    def server_name(self):
        return self._presenced_host.server_name

    @property
    def public_baseurl(self):
        # Synapse's default for a server that does not set public_baseurl;
        # presenced does not read that option (README, configuration).
        return "https://%s/" % self.server_name

    @property
    def worker_app(self):
        # presenced is Synapse's main process, never a worker.
        return None

    @property
    def worker_name(self):
        return None

    def should_run_background_tasks(self):
        return True

    def get_current_time_msec(self):
        return int(time.time() * 1000)

    # -- presence ----------------------------------------------------------

    def register_presence_router_callbacks(self, *, get_users_for_states=None, get_interested_users=None):
        if (get_users_for_states is None) != (get_interested_users is None):
            only = "get_users_for_states" if get_interested_users is None else "get_interested_users"
            raise RegistrationError(
                "presence router callbacks get_users_for_states and get_interested_users "
                "must be registered together (got only %s)" % only
            )
        if get_users_for_states is not None:
            self._presenced_pairs.append((get_users_for_states, get_interested_users))

    async def send_local_online_presence_to(self, users):
        future = self._presenced_host.api("send_local_online_presence_to", {"users": [str(u) for u in users]})
        await self._presenced_driver.wait(future)

    async def set_presence_for_users(self, users):
        wire = {}
        for user_id, value in users.items():
            state, status_msg = value
            wire[str(user_id)] = [state, status_msg]
        await self._presenced_driver.wait(self._presenced_host.api("set_presence_for_users", {"users": wire}))

    def is_mine(self, id):
        if isinstance(id, str):
            colon = id.find(":")
            if colon == -1:
                raise self._presenced_driver.SynapseError(400, "Invalid ID: %r" % (id,), "M_INVALID_PARAM")
            return id[colon + 1 :] == self.server_name
        return id.domain == self.server_name

    def get_qualified_user_id(self, username):
        if username.startswith("@"):
            return username
        return "@%s:%s" % (username, self.server_name)

    # -- time, threads, background work -------------------------------------

    async def sleep(self, seconds):
        loop = self._presenced_driver.loop
        future = loop.create_future()
        loop.call_later(seconds, _resolve, future)
        await self._presenced_driver.wait(future)

    async def defer_to_thread(self, f, *args, **kwargs):
        loop = self._presenced_driver.loop
        future = loop.run_in_executor(None, functools.partial(f, *args, **kwargs))
        return await self._presenced_driver.wait(future)

    def run_as_background_process(self, desc, func, *args, bg_start_span=True, **kwargs):
        """As in Synapse: the result is awaitable (a Deferred with Synapse)
        and gives func's value, or None when func raised (logged)."""
        logger = logging.getLogger(self._presenced_name)
        return self._presenced_driver.spawn(run_logged(desc, func, args, kwargs, logger))

    def looping_background_call(self, f, msec, *args, desc=None, run_on_all_instances=False, **kwargs):
        """As in Synapse: waits msec, calls f, waits for its result, and
        again; returns None. presenced is the main process, so it always
        runs."""
        desc = desc or getattr(f, "__name__", repr(f))

        async def repeat():
            while True:
                await self.sleep(msec / 1000)
                await self.run_as_background_process(desc, f, *args, **kwargs)

        self._presenced_driver.spawn(repeat())

    def delayed_background_call(self, msec, f, *args, desc=None, **kwargs):
        """Returns the timer (Twisted's IDelayedCall with Synapse, an
        asyncio TimerHandle without); both have cancel()."""
        desc = desc or getattr(f, "__name__", repr(f))
        return self._presenced_driver.call_later(
            msec / 1000, lambda: self.run_as_background_process(desc, f, *args, **kwargs)
        )

    # -- everything else -----------------------------------------------------

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise not_available("ModuleApi", name, PROVIDED)


def _resolve(future):
    if not future.done():
        future.set_result(None)
