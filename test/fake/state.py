"""The fake's shared state: the lock, the counters, the config, the fault
rules, the request log and the stats.  Each service adds its own part as a
mixin (airbyte_model.AirbyteState, ...) that extends reset_service_state();
__main__ composes them into the State class."""

import copy
import os
import threading

from .common import b64url


class BaseState:
    """Everything the fake remembers. All access goes through self.lock.

    Counters (token numbers, job ids, etags) are never reset, so a token or
    job id handed out before a /_fake/reset can never become valid again.
    """

    # every service's config keys with their defaults (set by __main__)
    DEFAULT_CONFIG = {}

    def __init__(self, **settings):
        self.lock = threading.RLock()
        for name, value in settings.items():
            setattr(self, name, value)
        self.nonce = b64url(os.urandom(6))  # makes tokens unique per process
        self.counter = 0
        self.reset()

    def next_n(self):
        with self.lock:
            self.counter += 1
            return self.counter

    def bump(self, counter):
        """Count an event in /_fake/stats (caller may hold the lock)."""
        with self.lock:
            self.stats[counter] = self.stats.get(counter, 0) + 1

    def reset(self):
        with self.lock:
            self.config = copy.deepcopy(self.DEFAULT_CONFIG)
            self.faults = []
            self.requests = []
            self.seq = 0
            self.stats = {}
            self.reset_service_state()

    def reset_service_state(self):
        """Each service's mixin extends this (calling super() first)."""
