"""What every service module of the fake shares: the reply types, the route
decorator, the error bodies of the OAuth and Google APIs, small helpers."""

import base64
import datetime
import re


def iso8601(ts):
    """Epoch seconds -> '2024-01-02T03:04:05Z' (UTC, whole seconds)."""
    return datetime.datetime.fromtimestamp(
        int(ts), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_duration(seconds):
    """Seconds -> ISO 8601 duration as Airbyte (Java Duration) prints it."""
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    out = "PT"
    if h:
        out += "%dH" % h
    if m:
        out += "%dM" % m
    if s or out == "PT":
        out += "%dS" % s
    return out


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def truthy(v):
    return v is True or (isinstance(v, (int, float)) and v != 0) or \
        (isinstance(v, str) and v.lower() in ("1", "true", "yes", "on"))


def is_json_content_type(value):
    return (value or "").split(";")[0].strip().lower() == "application/json"


def bearer_token(headers):
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return None



class Reply:
    """What a handler answers. body: dict/list -> JSON, str -> text/plain."""

    def __init__(self, status, body=None, headers=None):
        self.status = status
        self.body = body
        self.headers = headers or {}


class HTTPError(Exception):
    """Raised by handlers to answer an error Reply."""

    def __init__(self, status, body, headers=None):
        super().__init__(status)
        self.reply = Reply(status, body, headers)


def google_error(status, message, google_status, reason=None):
    err = {"code": status, "message": message, "status": google_status}
    if reason:
        err["errors"] = [{"message": message, "domain": "global",
                          "reason": reason}]
    return HTTPError(status, {"error": err})


def oauth_error(status, error, description):
    return HTTPError(status, {"error": error, "error_description": description})



# --------------------------------------------------------------------------
# Routing
# --------------------------------------------------------------------------

def route(method, pattern, template=None):
    """Decorator registering a handler for METHOD + full-match regex."""
    def deco(fn):
        fn.route = (method, re.compile(pattern), template or pattern)
        return fn
    return deco


SEG = r"([^/]+)"


def routes_of(cls):
    """The route handlers a service class defines, in name order (the order
    the single-file fake matched them in)."""
    out = []
    for name in sorted(vars(cls)):
        fn = vars(cls)[name]
        if callable(fn) and hasattr(fn, "route"):
            out.append(fn)
    return out
