"""Fault injection: rules a test posts to /_fake/faults, and the first rule
that matches a request.  server.BaseHandler applies the fault."""

import re

from .common import HTTPError

# how long a "hang" or "accept_hang" holds the connection before closing it
# (test/t/032_guard_independence.pl relies on it outlasting its checks)
HANG_SECONDS = 120
MALFORMED_BODY = b'{"data": ['

KINDS = ("status", "latency", "hang", "reset", "malformed", "accept_hang",
         "accept_reset")


def prepare_rules(rules):
    """Validated copies of the posted rules with their compiled path regex."""
    if not isinstance(rules, list):
        raise HTTPError(400, {"message": 'want {"rules": [...]}'})
    prepared = []
    for rule in rules:
        if not isinstance(rule, dict) or not rule.get("path"):
            raise HTTPError(400, {"message": "each rule needs a path regex"})
        kind = rule.get("kind", "status")
        if kind not in KINDS:
            raise HTTPError(400, {"message": "unknown fault kind %s" % kind})
        try:
            rx = re.compile(rule["path"])
        except re.error as e:
            raise HTTPError(400, {"message": "bad path regex: %s" % e})
        r = dict(rule)
        r.setdefault("times", 1)   # absent -> once; null -> forever
        r["_re"] = rx
        prepared.append(r)
    return prepared


def public_rules(rules):
    """The rules as /_fake/faults shows them (without the compiled regex)."""
    return [{k: v for k, v in r.items() if k != "_re"} for r in rules]


def take_fault(rules, method, path):
    """First matching rule with times left fires (caller holds the lock)."""
    for rule in rules:
        if rule.get("method") and rule["method"].upper() != method.upper():
            continue
        if not rule["_re"].search(path):
            continue
        left = rule.get("times", 1)
        if left is None:
            return rule
        if int(left) <= 0:
            continue
        rule["times"] = int(left) - 1
        return rule
    return None
