"""Fake outside world for the dfe_airbyte tests.

One HTTP(S) server that plays every remote party the extension talks to,
one module per service:

  * airbyte.py       Airbyte: the public API /api/public/v1/... and the
                     config API /api/v1/... (model: airbyte_model.py)
  * azure.py         Azure AD /{tenant}/oauth2/v2.0/token and the token proxy
                     /azure-token-proxy, /azure-token-proxy.json
  * google_auth.py   Google STS /v1/token and IAM
                     /v1/projects/-/serviceAccounts/{email}:generateAccessToken
  * bigquery.py      BigQuery /bigquery/v2/projects/{p}/datasets/{d}/tables/{t}

Tests drive it through a JSON control API under /_fake/ (control.py,
airbyte_control.py, bigquery.py: state, config, fault injection, request
recording); see test/lib/FakeServer.pm.  This file is the dispatcher: the
SERVICES table below sends each path to the first service whose prefix
matches it; server.py does the HTTP, state.py and faults.py hold what every
service shares.  A new service is one module (a State mixin, a CONFIG dict,
route classes, a PREFIX) and one line in each table below.

Usage (from the repository root):
  python3 test/fake --host 127.0.0.1 --port 0 --port-file PATH [--log PATH]
                    [--tls-cert CERT --tls-key KEY] [--control-port-file PATH]
  (or: PYTHONPATH=test python3 -m fake ...)

The log gets one line per request: time, method, path (no query), status.
Bodies and headers are never logged so that secrets cannot leak into files.

Python 3.11 standard library only.
"""

import argparse
import json
import os
import re
import signal
import ssl
import sys
import threading

if not __package__:
    # Run as "python3 test/fake": make the package importable by its name
    # and let the relative imports below resolve in it (PEP 366).
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    __package__ = "fake"

from . import (airbyte, airbyte_control, airbyte_model, azure,  # noqa: E402
               bigquery, control, google_auth)
from .airbyte_model import AIRBYTE_PROFILES, DEFAULT_AIRBYTE_VERSION  # noqa: E402
from .server import BaseHandler, FakeHTTPServer, write_port_file  # noqa: E402
from .state import BaseState  # noqa: E402


class State(airbyte_model.AirbyteState, azure.AzureState,
            google_auth.GoogleAuthState, bigquery.BigQueryState, BaseState):
    """Everything the fake remembers (each service's part, see state.py)."""

    # the key order is the order /_fake/config has always shown
    DEFAULT_CONFIG = {**airbyte_model.CONFIG, **azure.CONFIG,
                      **google_auth.CONFIG, **bigquery.CONFIG,
                      **airbyte_model.CONNECTION_MODEL_CONFIG}


class Handler(airbyte.AirbyteAPI, airbyte_control.AirbyteControl,
              azure.AzureAPI, google_auth.GoogleAuthAPI,
              bigquery.BigQueryAPI, bigquery.BigQueryControl,
              control.Control, BaseHandler):
    """The request handler: the HTTP plumbing plus every service's routes."""


# (path prefix, is a control route, routes): the first whose prefix matches
# answers; a path no prefix matches gets a 404.  Azure comes before Airbyte
# and Google because its tenant is a path segment (/{tenant}/oauth2/...).
SERVICES = [(re.compile(prefix), is_control, routes)
            for prefix, is_control, routes in (
                (airbyte_control.PREFIX, True, airbyte_control.ROUTES),
                (bigquery.CONTROL_PREFIX, True, bigquery.CONTROL_ROUTES),
                (control.PREFIX, True, control.ROUTES),
                (azure.PREFIX, False, azure.ROUTES),
                (airbyte.PREFIX, False, airbyte.ROUTES),
                (google_auth.PREFIX, False, google_auth.ROUTES),
                (bigquery.PREFIX, False, bigquery.ROUTES))]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log")
    ap.add_argument("--airbyte-version",
                    default=os.environ.get("DFE_AIRBYTE_PROFILE")
                    or DEFAULT_AIRBYTE_VERSION,
                    help="Airbyte version (or profile name: %s) to model"
                         % ", ".join(AIRBYTE_PROFILES))
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--jobs",
                    help="JSON file: a list of jobs (bodies of POST "
                         "/_fake/airbyte/jobs) made before the server "
                         "listens, e.g. to restart a killed server with the "
                         "jobs Airbyte would have kept")
    ap.add_argument("--control-port-file",
                    help="also listen on a plain-HTTP port serving only "
                         "/_fake/ (for clients without TLS support)")
    opts = ap.parse_args(argv)
    if bool(opts.tls_cert) != bool(opts.tls_key):
        ap.error("--tls-cert and --tls-key go together")

    state = State(default_airbyte_version=AIRBYTE_PROFILES.get(
        opts.airbyte_version, opts.airbyte_version))
    if opts.jobs:
        with open(opts.jobs, encoding="utf-8") as f:
            for data in json.load(f):
                airbyte_model.create_job(state, data)
    stopping = threading.Event()
    log_file = open(opts.log, "a", encoding="utf-8") if opts.log else None
    log_lock = threading.Lock()

    ctx = None
    if opts.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(opts.tls_cert, opts.tls_key)

    servers = [FakeHTTPServer((opts.host, opts.port), Handler, SERVICES,
                              state, stopping, log_file, log_lock, ctx)]
    if opts.control_port_file:
        servers.append(FakeHTTPServer((opts.host, 0), Handler, SERVICES,
                                      state, stopping, log_file, log_lock,
                                      None, control_only=True))

    def on_signal(signum, frame):
        stopping.set()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    threads = []
    for srv in servers:
        t = threading.Thread(target=srv.serve_forever,
                             kwargs={"poll_interval": 0.2}, daemon=True)
        t.start()
        threads.append(t)
    # The sockets listen since construction; announce the ports now.
    if opts.control_port_file:
        write_port_file(opts.control_port_file, servers[1].server_address[1])
    write_port_file(opts.port_file, servers[0].server_address[1])

    while not stopping.wait(0.2):
        pass
    for srv in servers:
        srv.shutdown()
        srv.server_close()
    if log_file is not None:
        log_file.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
