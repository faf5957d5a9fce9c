"""The control API every test uses (/_fake/...): liveness, reset, config,
fault rules, the request log and the stats.  The services' own control
routes are in airbyte_control.py and bigquery.py."""

import copy
import os

from . import faults
from .common import HTTPError, Reply, route, routes_of

PREFIX = r"/_fake"


class Control:
    """Route handlers of the shared control API."""

    @route("GET", r"/_fake/ping")
    def c_ping(self):
        return Reply(200, {"ok": True, "pid": os.getpid()})

    @route("POST", r"/_fake/reset")
    def c_reset(self):
        self.state.reset()
        return Reply(200, {"ok": True})

    @route("GET", r"/_fake/config")
    def c_get_config(self):
        with self.state.lock:
            return Reply(200, copy.deepcopy(self.state.config))

    @route("POST", r"/_fake/config")
    def c_config(self):
        data = self.body_json()
        unknown = sorted(set(data) - set(self.state.DEFAULT_CONFIG))
        if unknown:
            raise HTTPError(400, {"message": "unknown config keys: %s"
                                  % ", ".join(unknown)})
        with self.state.lock:
            self.state.config.update(data)
            return Reply(200, copy.deepcopy(self.state.config))

    @route("POST", r"/_fake/faults")
    def c_add_faults(self):
        data = self.body_json()
        prepared = faults.prepare_rules(data.get("rules"))
        with self.state.lock:
            self.state.faults.extend(prepared)
            return self.c_list_faults()

    @route("GET", r"/_fake/faults")
    def c_list_faults(self):
        with self.state.lock:
            return Reply(200, {"rules": faults.public_rules(
                self.state.faults)})

    @route("DELETE", r"/_fake/faults")
    def c_clear_faults(self):
        with self.state.lock:
            self.state.faults = []
        return Reply(200, {"rules": []})

    @route("GET", r"/_fake/requests")
    def c_requests(self):
        try:
            since = int(self.args.get("since", 0))
        except ValueError:
            raise HTTPError(400, {"message": "since must be an integer"})
        with self.state.lock:
            reqs = [copy.deepcopy(r) for r in self.state.requests
                    if r["seq"] > since]
            # "next" is the newest seq so far: pass it as since next time
            return Reply(200, {"requests": reqs, "next": self.state.seq})

    @route("GET", r"/_fake/requests/next")
    def c_requests_next(self):
        with self.state.lock:
            return Reply(200, {"next": self.state.seq})

    @route("GET", r"/_fake/stats")
    def c_stats(self):
        with self.state.lock:
            return Reply(200, dict(self.state.stats))


ROUTES = routes_of(Control)
