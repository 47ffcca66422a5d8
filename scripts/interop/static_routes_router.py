"""A Synapse presence router with fixed routes, for scripts/interop-synapse.sh.

It behaves like presenced's `presenced.routers.StaticRoutes` and takes the
same config, so both servers of the interop run read one route table:

    modules:
      - module: static_routes_router.StaticRoutes
        config:
          routes:
            - receiver: "@alice:example.com"
              senders: ["@bob:example.org"]

Each receiver gets its senders' presence (Synapse sends it over federation
when the receiver is remote) and may see it in /sync, with no shared room.
"""

from collections import defaultdict


class StaticRoutes:
    def __init__(self, config, api):
        self._senders_of = defaultdict(set)
        self._receivers_of = defaultdict(set)
        for route in config["routes"]:
            receiver = route["receiver"]
            for sender in route["senders"]:
                self._senders_of[receiver].add(sender)
                self._receivers_of[sender].add(receiver)
        api.register_presence_router_callbacks(
            get_users_for_states=self.get_users_for_states,
            get_interested_users=self.get_interested_users,
        )

    @staticmethod
    def parse_config(config):
        routes = config.get("routes")
        if not isinstance(routes, list):
            raise Exception("static_routes_router: `routes` must be a list")
        for route in routes:
            if not isinstance(route.get("receiver"), str) or not isinstance(
                route.get("senders"), list
            ):
                raise Exception(
                    "static_routes_router: each route needs `receiver` and `senders`"
                )
        return config

    async def get_users_for_states(self, state_updates):
        # Only receivers with something to get: Synapse turns each remote
        # receiver in the answer into a federation destination. (Synapse's
        # sync reads this answer only for routers returning "all users",
        # which this one never does.)
        answer = {}
        for state in state_updates:
            for receiver in self._receivers_of.get(state.user_id, ()):
                answer.setdefault(receiver, set()).add(state)
        return answer

    async def get_interested_users(self, user_id):
        return set(self._senders_of.get(user_id, ()))
