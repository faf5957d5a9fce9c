#!/usr/bin/env python3
"""Fake outside world for the dfe_airbyte tests.

One HTTP(S) server that plays every remote party the extension talks to
(see SPEC.md sections 4, 5 and 8):

  * Airbyte          /api/public/v1/...  and the config API /api/v1/...
  * Azure AD         /{tenant}/oauth2/v2.0/token
  * token proxy      /azure-token-proxy  and  /azure-token-proxy.json
  * Google STS       /v1/token
  * Google IAM       /v1/projects/-/serviceAccounts/{email}:generateAccessToken
  * BigQuery         /bigquery/v2/projects/{p}/datasets/{d}/tables/{t}

Tests drive it through a JSON control API under /_fake/ (state, config,
fault injection, request recording); see CONTROL_ROUTES below and
test/lib/FakeServer.pm.

Usage:
  fake_server.py --host 127.0.0.1 --port 0 --port-file PATH [--log PATH]
                 [--tls-cert CERT --tls-key KEY] [--control-port-file PATH]

The log gets one line per request: time, method, path (no query), status.
Bodies and headers are never logged so that secrets cannot leak into files.

Python 3.11 standard library only.
"""

import argparse
import base64
import copy
import datetime
import json
import os
import re
import signal
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# --------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------

CDC_FIELDS = ("_ab_cdc_lsn", "_ab_cdc_deleted_at", "_ab_cdc_updated_at")
SYNC_MODES = ("incremental_append", "full_refresh_overwrite",
              "incremental_deduped_history", "full_refresh_append")
HEARTBEAT_TABLE = "airbyte_heartbeat"
HEARTBEAT_COLUMNS = ["id", "last_heartbeat"]

# Job statuses during which Airbyte refuses to start another job for the
# connection ("incomplete" = an attempt failed and the job will retry).
ACTIVE_JOB_STATUSES = ("pending", "queued", "running", "incomplete")
FINAL_JOB_STATUSES = ("succeeded", "failed", "cancelled")

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
AZURE_SCOPE = "api://AzureADTokenExchange/.default"
JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

# Airbyte version profiles the fake models (SPEC §4, shared/background/
# api_conformance.md).  A test picks one with --airbyte-version, the
# DFE_AIRBYTE_PROFILE environment variable (through test/lib/FakeServer.pm)
# or the "airbyte_version" config key; version_at_least() below is how every
# handler asks "does this server have that behaviour?".  The default is the
# newest profile.
AIRBYTE_PROFILES = {
    "0.60": "0.60.1",   # no public token path (answers 401), selectedFields exists,
                        # public jobs list rejects jobType=refresh (400)
    "1.1": "1.1.0",     # refresh answers {"value": bool}
    "1.2": "1.2.0",     # refresh answers {"job": {...}|null}; public list hides refresh jobs
    "1.8": "1.8.0",     # public jobs list shows refresh/clear jobs
    "2.x": "2.0.0",
}
DEFAULT_AIRBYTE_VERSION = AIRBYTE_PROFILES["2.x"]


def parse_version(text):
    """'1.2.0' -> (1, 2, 0); a profile name ('1.2', '2.x') -> its version."""
    text = AIRBYTE_PROFILES.get(str(text), str(text))
    parts = []
    for piece in text.split("."):
        m = re.match(r"\d+", piece)
        parts.append(int(m.group(0)) if m else 0)
    while len(parts) < 3:
        parts.append(0)
    return tuple(parts[:3])


DEFAULT_CONFIG = {
    # Airbyte
    "airbyte_version": DEFAULT_AIRBYTE_VERSION,
    "airbyte_client_id": "test-client",
    "airbyte_client_secret": "test-secret-value",
    "token_expires_in": 180,
    "legacy_airbyte": False,
    "connection_id": "11111111-1111-1111-1111-111111111111",
    "source_id": "22222222-2222-2222-2222-222222222222",
    "destination_id": "33333333-3333-3333-3333-333333333333",
    "job_pending_seconds": 0.5,
    "job_running_seconds": 1.0,
    "job_final_status": "succeeded",
    # the destination supports refreshes (BigQuery does); False models one
    # that does not: refresh answers {"value":false} / {"job":null}
    "supports_refreshes": True,
    # Azure / Google. None means "accept any non-empty value".
    "azure_client_id": None,
    "federated_token": None,
    "proxy_token": "proxy-subject-token",
    "proxy_required_headers": {},
    "sts_expected_audience": None,
    "sts_expected_subject_token_type": None,
    "sts_expected_subject_token": None,
    "impersonate_expires_in": 3600,
    "service_account": "airbyte@proj.iam.gserviceaccount.com",
    # BigQuery: table metadata updates allowed per table in a sliding window
    # ("Maximum rate of table metadata update operations per table": 5 per
    # 10 s); past it a PATCH gets the real 403 rateLimitExceeded answer.
    # None turns the limit off.
    "bq_table_update_limit": 5,
    "bq_table_update_window_s": 10.0,
}

# The connection model (issue 8 item 7-9: schema propagation, auto-disable,
# the field limit, the saved CDC state); merged into DEFAULT_CONFIG.
CONNECTION_MODEL_CONFIG = {
    # failed jobs in a row before Airbyte disables the connection; None:
    # as the version does (20 up to 1.2.x, 30 from 1.8.0; airbyte-platform
    # airbyte-server application.yml MAX_FAILED_JOBS_IN_A_ROW_BEFORE_...)
    "disable_after_failed_jobs": None,
    # CatalogValidator's max-fields-per-connection (MAX_FIELDS_PER_CONNECTION)
    "max_fields_per_connection": 20000,
}
DEFAULT_CONFIG.update(CONNECTION_MODEL_CONFIG)
NON_BREAKING_BEHAVIORS = ("ignore", "disable_connection", "propagate_columns",
                          "propagate_fully")
CONNECTION_STATUSES = ("active", "inactive", "deprecated")

HANG_SECONDS = 120
MALFORMED_BODY = b'{"data": ['


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------

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


def create_job(state, data):
    """A job made through the control API (POST /_fake/airbyte/jobs) or,
    before the server listens, from --jobs."""
    with state.lock:
        job = state.new_job(
            data.get("connectionId", state.config["connection_id"]),
            data.get("jobType", "sync"),
            status=data.get("status", "pending"),
            frozen=truthy(data.get("frozen")),
            final_status=data.get("final_status"),
            pending_seconds=data.get("pending_seconds"),
            running_seconds=data.get("running_seconds"),
            created_in=data.get("created_in"))
        set_job_progress(job, data)
        return job


def set_job_progress(job, data):
    """Control API: a job's rowsSynced/bytesSynced (progress of a running
    job, or what a finished one synced); True when data set any."""
    found = False
    for key in ("rowsSynced", "bytesSynced"):
        if key in data:
            job[key] = int(data[key])
            found = True
    return found


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


# Airbyte's public API answers errors as problem bodies, serialised by
# AbstractThrowableProblemHandler (airbyte-platform
# airbyte-api/problems-api/src/main/openapi/api-problems.yaml): "detail" is a
# FIXED sentence per problem type and the specific text is in data.message.
# shared/background/api_conformance.md §2 #3.
PROBLEMS = {
    400: ("bad-request", "The request could not be understood by the server "
          "due to malformed syntax."),
    401: ("unauthorized", "The request requires user authentication."),
    403: ("forbidden", "The server understood the request but refuses to "
          "authorize it."),
    404: ("resource-not-found", "The requested resource could not be found."),
    409: ("try-again-later", "Please try again later."),
    415: ("unsupported-media-type", "The request entity has a media type "
          "which the server or resource does not support."),
    422: ("unprocessable-entity", "The server cannot process the request "
          "because it is semantically incorrect."),
}


def airbyte_error(status, message, type_=None):
    """A public-API error: {"status","type","title","detail","data":{"message"}}.

    type_ is ignored (kept for old callers): the real type follows the status.
    """
    title, detail = PROBLEMS.get(status, ("error", "An error occurred."))
    return HTTPError(status, {
        "status": status,
        "type": "https://reference.airbyte.com/reference/errors#" + title,
        "title": title, "detail": detail, "data": {"message": message}})


def config_error(status, message):
    """A config-API (/api/v1/...) error: {"message", "exceptionClassName"}."""
    return HTTPError(status, {"message": message,
                              "exceptionClassName": "io.airbyte.commons."
                              "server.errors.KnownException"})


def google_error(status, message, google_status, reason=None):
    err = {"code": status, "message": message, "status": google_status}
    if reason:
        err["errors"] = [{"message": message, "domain": "global",
                          "reason": reason}]
    return HTTPError(status, {"error": err})


BQ_RATE_LIMIT_MESSAGE = ("Exceeded rate limits: too many table update operations "
                         "for this table. For more information, see "
                         "https://cloud.google.com/bigquery/docs/troubleshoot-quotas")


def bq_rate_limit_error():
    """The answer BigQuery gives past the per-table update rate (HTTP 403,
    domain usageLimits, reason rateLimitExceeded)."""
    return HTTPError(403, {"error": {
        "code": 403, "message": BQ_RATE_LIMIT_MESSAGE,
        "errors": [{"message": BQ_RATE_LIMIT_MESSAGE, "domain": "usageLimits",
                    "reason": "rateLimitExceeded"}],
        "status": "PERMISSION_DENIED"}})


def oauth_error(status, error, description):
    return HTTPError(status, {"error": error, "error_description": description})


# --------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------

class State:
    """Everything the fake remembers. All access goes through self.lock.

    Counters (token numbers, job ids, etags) are never reset, so a token or
    job id handed out before a /_fake/reset can never become valid again.
    """

    def __init__(self, airbyte_version=DEFAULT_AIRBYTE_VERSION):
        self.lock = threading.RLock()
        self.default_airbyte_version = airbyte_version
        self.nonce = b64url(os.urandom(6))  # makes tokens unique per process
        self.counter = 0
        self.job_counter = 0
        self.reset()

    def next_n(self):
        with self.lock:
            self.counter += 1
            return self.counter

    def reset(self):
        with self.lock:
            self.config = copy.deepcopy(DEFAULT_CONFIG)
            self.config["airbyte_version"] = self.default_airbyte_version
            self.faults = []
            self.requests = []
            self.seq = 0
            self.stats = {}
            # token -> expiry (epoch seconds)
            self.airbyte_tokens = {}
            self.google_sts_tokens = {}
            self.google_access_tokens = {}
            self.azure_tokens = {}
            # Airbyte
            self.source_catalog = {HEARTBEAT_TABLE: list(HEARTBEAT_COLUMNS)}
            self.cached_catalog = {}
            self.configurations = {"streams": []}
            self.last_patch = None
            self.last_patch_raw = None
            self.patch_count = 0
            self.jobs = []          # in creation order
            # connection id -> True while refresh rows are saved and not yet
            # consumed by the next job created (StreamRefreshesRepository)
            self.pending_refresh = {}
            # tables the source offers without a primary key (only
            # full_refresh, no _ab_cdc_* fields); the DfE heartbeat table has
            # none (terraform-modules aks/airbyte/files/airbyte.sql.tmpl)
            self.no_pk_tables = {HEARTBEAT_TABLE}
            # BigQuery: (project, dataset, table) -> dict
            self.bq_tables = {}
            self.reset_connection_model()

    # -- jobs ---------------------------------------------------------------

    def new_job(self, connection_id, job_type, status="pending", frozen=False,
                final_status=None, pending_seconds=None, running_seconds=None,
                created_in=0):
        """Create a job whose status follows a timeline of (time, status).
        created_in: seconds from now of its creation time, to model a job
        Airbyte creates that much later without a test waiting for it."""
        with self.lock:
            if job_type == "sync":
                self.schema_check()
            self.job_counter += 1
            now = time.time() + float(created_in or 0)
            cfg = self.config
            p = float(cfg["job_pending_seconds"] if pending_seconds is None
                      else pending_seconds)
            r = float(cfg["job_running_seconds"] if running_seconds is None
                      else running_seconds)
            final = final_status or cfg["job_final_status"]
            # DefaultJobCreator: saved refresh rows turn the NEXT job created
            # for the connection (scheduled or manual sync) into a refresh
            # and are consumed by it (api_conformance.md §2 #1)
            if job_type == "sync" and self.pending_refresh.pop(connection_id,
                                                              False):
                job_type = "refresh"
            if job_type == "refresh":
                self.bump("refresh_jobs_created")
            if frozen:
                timeline = [(now, status)]
            elif status in ("pending", "queued"):
                timeline = [(now, status), (now + p, "running"),
                            (now + p + r, final)]
            elif status == "running":
                timeline = [(now, "running"), (now + r, final)]
            else:  # already final (or any other status given): stays there
                timeline = [(now, status)]
            job = {"id": self.job_counter, "connectionId": connection_id,
                   "jobType": job_type, "created": now, "timeline": timeline}
            self.jobs.append(job)
            return job

    def bump(self, counter):
        """Count an event in /_fake/stats (caller may hold the lock)."""
        with self.lock:
            self.stats[counter] = self.stats.get(counter, 0) + 1

    def config_job_json(self, job):
        """The config API's JobRead (createdAt/updatedAt: epoch seconds)."""
        since, status = self.job_status(job)
        config_type = {"reset": "reset_connection"}.get(job["jobType"],
                                                        job["jobType"])
        return {"id": job["id"], "configType": config_type,
                "configId": job["connectionId"], "status": status,
                "createdAt": int(job["created"]),
                "updatedAt": int(max(since, job["created"]))}

    def set_job_status(self, job, status, frozen=True, final_status=None,
                       running_seconds=None):
        """Move a job to a status now, dropping its future transitions."""
        with self.lock:
            now = time.time()
            timeline = [t for t in job["timeline"] if t[0] <= now]
            timeline.append((now, status))
            if not frozen and status in ("pending", "queued", "running"):
                cfg = self.config
                r = float(cfg["job_running_seconds"] if running_seconds is None
                          else running_seconds)
                final = final_status or cfg["job_final_status"]
                if status != "running":
                    p = float(cfg["job_pending_seconds"])
                    timeline.append((now + p, "running"))
                    now += p
                timeline.append((now + r, final))
            job["timeline"] = timeline

    @staticmethod
    def job_status(job, now=None):
        now = time.time() if now is None else now
        current = job["timeline"][0]
        for t in job["timeline"]:
            if t[0] <= now:
                current = t
        return current

    def job_json(self, job):
        """The public API's JobResponse."""
        now = time.time()
        since, status = self.job_status(job, now)
        end = since if status in FINAL_JOB_STATUSES else now
        return {"jobId": job["id"], "status": status,
                "jobType": job["jobType"],
                "startTime": iso8601(job["created"]),
                "connectionId": job["connectionId"],
                "lastUpdatedAt": iso8601(since),
                "duration": iso_duration(end - job["created"]),
                "bytesSynced": job.get("bytesSynced", 0),
                "rowsSynced": job.get("rowsSynced", 0)}

    def find_job(self, job_id):
        for job in self.jobs:
            if job["id"] == job_id:
                return job
        return None

    def active_job(self, connection_id):
        for job in reversed(self.jobs):
            if job["connectionId"] == connection_id and \
                    self.job_status(job)[1] in ACTIVE_JOB_STATUSES:
                return job
        return None

    # -- airbyte connection -------------------------------------------------

    def connection_json(self):
        cfg = self.config
        return {"connectionId": cfg["connection_id"],
                "sourceId": cfg["source_id"],
                "destinationId": cfg["destination_id"],
                "name": "fake-connection",
                "status": self.connection_status_now(),
                "nonBreakingSchemaUpdatesBehavior": self.schema_behavior,
                "namespaceDefinition": "destination",
                "configurations": copy.deepcopy(self.configurations)}

    # -- connection model: propagation, auto-disable, saved state ----------

    def reset_connection_model(self):
        with self.lock:
            self.connection_status = "active"
            self.enabled_at = 0.0       # jobs before this do not count
            self.disabled_at = None
            self.schema_behavior = "ignore"
            # the catalog the connection was last updated with (PATCH or
            # propagation); a schema check diffs the source against it
            self.connection_catalog = None
            self.schema_checks = 0
            self.saved_lsn = None       # None: stateType not_set
            self.saved_state_type = "global"

    def failed_jobs_limit(self):
        n = self.config.get("disable_after_failed_jobs")
        if n is not None:
            return int(n)
        return 30 if parse_version(self.config["airbyte_version"]) >= \
            parse_version("1.8.0") else 20

    def connection_status_now(self):
        """Airbyte disables an active connection after N failed jobs in a
        row (ConnectionsHandler/AutoDisableConnectionActivity); it stays
        disabled until PATCHed back to active."""
        with self.lock:
            if self.connection_status != "active":
                return self.connection_status
            failed = 0
            now = time.time()
            for job in reversed(self.jobs):
                if job["connectionId"] != self.config["connection_id"] or \
                        job["created"] < self.enabled_at:
                    continue
                status = self.job_status(job, now)[1]
                if status == "failed":
                    failed += 1
                elif status == "succeeded":
                    break
            if failed >= self.failed_jobs_limit():
                self.connection_status = "inactive"
                self.disabled_at = now
            return self.connection_status

    def schema_check(self):
        """Airbyte's schema check at the start of a sync: rediscover, and
        under propagate_columns / propagate_fully add every new column of a
        selected stream to its selectedFields, under propagate_fully every
        new table as a selected stream (ApplySchemaChangeHelper)."""
        with self.lock:
            self.schema_checks += 1
            new = copy.deepcopy(self.source_catalog)
            self.cached_catalog = copy.deepcopy(new)
            old = self.connection_catalog
            if old is None:
                self.connection_catalog = new
                return
            if self.schema_behavior not in ("propagate_columns",
                                            "propagate_fully"):
                return
            streams = self.configurations.setdefault("streams", [])
            names = set()
            for stream in streams:
                name = stream.get("name")
                names.add(name)
                if name not in new or name not in old or \
                        "selectedFields" not in stream:
                    continue
                have = {sf["fieldPath"][0] for sf in stream["selectedFields"]}
                for col in new[name]:
                    if col not in old[name] and col not in have:
                        stream["selectedFields"].append({"fieldPath": [col]})
            if self.schema_behavior == "propagate_fully":
                for table in sorted(new):
                    if table in old or table in names:
                        continue
                    cols = list(new[table])
                    streams.append({
                        "name": table, "syncMode": "incremental_append",
                        "cursorField": ["_ab_cdc_lsn"],
                        "primaryKey": [["id"]] if "id" in cols else [],
                        "selectedFields": [{"fieldPath": [c]} for c in
                                           list(CDC_FIELDS) + cols]})
            self.connection_catalog = new

    def selected_field_count(self, conf):
        """CatalogValidator.fieldCount: selected fields where a stream
        selects fields, else every property of its schema."""
        n = 0
        for stream in conf.get("streams", []):
            if "selectedFields" in stream:
                n += len(stream["selectedFields"])
            else:
                n += len(self.cached_catalog.get(stream.get("name"), [])) \
                    + len(CDC_FIELDS)
        return n

    def saved_state_json(self):
        """POST /api/v1/state/get: ConnectionState (config.yaml) holding
        the Postgres source's Debezium offset, whose "lsn" the source
        compares with the slot's confirmed_flush_lsn."""
        cid = self.config["connection_id"]
        if self.saved_lsn is None:
            return {"stateType": "not_set", "connectionId": cid}
        offset = {"[\"db\",{\"server\":\"db\"}]": json.dumps(
            {"transaction_id": None, "lsn": self.saved_lsn,
             "lsn_commit": self.saved_lsn, "txId": 505,
             "ts_usec": int(time.time() * 1e6)})}
        if self.saved_state_type == "legacy":
            return {"stateType": "legacy", "connectionId": cid,
                    "state": {"cdc": True, "cdc_state": {"state": offset},
                              "streams": []}}
        streams = [{"streamDescriptor": {"name": s.get("name"),
                                         "namespace": "public"},
                    "streamState": {"stream_name": s.get("name"),
                                    "stream_namespace": "public",
                                    "cursor_field": []}}
                   for s in self.configurations.get("streams", [])]
        # the wire name is shared_state (config.yaml GlobalState)
        return {"stateType": "global", "connectionId": cid,
                "globalState": {"shared_state": {"state": offset},
                                "streamStates": streams}}

    # -- bigquery -----------------------------------------------------------

    def new_etag(self):
        return base64.b64encode(
            ("%s-etag-%d" % (self.nonce, self.next_n())).encode()).decode()

    @staticmethod
    def bq_table_json(key, t):
        p, d, name = key
        return {"kind": "bigquery#table",
                "id": "%s:%s.%s" % (p, d, name),
                "selfLink": "/bigquery/v2/projects/%s/datasets/%s/tables/%s"
                            % (p, d, name),
                "etag": t["etag"],
                "tableReference": {"projectId": p, "datasetId": d,
                                   "tableId": name},
                "schema": copy.deepcopy(t["schema"]),
                "numRows": "0",
                "type": "TABLE",
                "location": "europe-west2",
                "creationTime": str(int(t["created"] * 1000)),
                "lastModifiedTime": str(int(t["modified"] * 1000))}


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


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "dfe-airbyte-fake/1.0"
    # A request line or header block slower than this is dropped.
    timeout = 300

    # Set per request in _dispatch.
    path_only = ""
    query = ""
    args = {}
    hdrs = {}
    raw_body = b""
    record = None

    # ---------------------------------------------------------------- plumbing

    def log_message(self, fmt, *args):  # silence the default stderr log
        pass

    def setup(self):
        super().setup()
        # The headers and the body go out in separate writes: without
        # TCP_NODELAY, Nagle holds the body back until the client's delayed
        # ACK (40-200 ms) on every request of a kept-alive connection.
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def do_GET(self):
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    def _read_body(self):
        te = self.headers.get("Transfer-Encoding", "").lower()
        if "chunked" in te:
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    # trailers until blank line
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self):
        state = self.server.state
        self.record = None  # the connection may have served requests before
        split = urllib.parse.urlsplit(self.path)
        self.path_only = split.path
        self.query = split.query
        self.args = {k: v[-1] for k, v in
                     urllib.parse.parse_qs(split.query,
                                           keep_blank_values=True).items()}
        self.hdrs = {k.lower(): v for k, v in self.headers.items()}
        try:
            self.raw_body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return

        if self.path_only.startswith("/_fake/") or self.path_only == "/_fake":
            reply = self._call(CONTROL_ROUTES, self.path_only)
            self._send(reply)
            return

        if self.server.control_only:
            self._send(Reply(404, {"message": "control listener: only /_fake/"}))
            return

        handler, template, match = self._find(API_ROUTES, self.path_only)
        with state.lock:
            state.seq += 1
            try:
                parsed = json.loads(self.raw_body) if self.raw_body else None
            except ValueError:
                parsed = None
            self.record = {
                "seq": state.seq, "time": time.time(),
                "method": self.command, "path": self.path_only,
                "query": self.query, "args": self.args,
                "headers": dict(self.hdrs),
                "body": self.raw_body.decode("utf-8", "replace"),
                "json": parsed, "status": None}
            state.requests.append(self.record)
            key = "%s %s" % (self.command, template or self.path_only)
            state.stats[key] = state.stats.get(key, 0) + 1
            fault = self._take_fault(state)

        if fault is not None:
            kind = fault.get("kind", "status")
            self.record["fault"] = kind
            if kind == "latency":
                time.sleep(float(fault.get("latency_ms", 50)) / 1000.0)
            elif kind == "hang":
                self.server.stopping.wait(HANG_SECONDS)
                self._abort(rst=False)
                return
            elif kind == "reset":
                self._abort(rst=True)
                return
            elif kind in ("accept_hang", "accept_reset"):
                # the server does the work, then the answer is lost: a
                # timeout or a reset after the request was accepted
                reply = self._call(API_ROUTES, self.path_only)
                self.record["accepted_status"] = reply.status
                if kind == "accept_hang":
                    self.server.stopping.wait(HANG_SECONDS)
                self._abort(rst=kind == "accept_reset")
                return
            elif kind == "malformed":
                self._send(Reply(200, MALFORMED_BODY,
                                 {"Content-Type": "application/json"}))
                return
            else:  # "status"
                status = int(fault.get("status", 503))
                body = fault.get("body")
                if body is None:
                    body = {"message": "injected %d" % status}
                headers = {}
                if fault.get("retry_after") is not None:
                    headers["Retry-After"] = str(fault["retry_after"])
                self._send(Reply(status, body, headers))
                return

        self._send(self._call(API_ROUTES, self.path_only))

    def _take_fault(self, state):
        """First matching rule with times left fires (caller holds lock)."""
        for rule in state.faults:
            if rule.get("method") and \
                    rule["method"].upper() != self.command.upper():
                continue
            if not rule["_re"].search(self.path_only):
                continue
            left = rule.get("times", 1)
            if left is None:
                return rule
            if int(left) <= 0:
                continue
            rule["times"] = int(left) - 1
            return rule
        return None

    @staticmethod
    def _find(routes, path):
        for fn in routes:
            _, rx, template = fn.route
            m = rx.fullmatch(path)
            if m:
                return fn, template, m
        return None, None, None

    def _call(self, routes, path):
        allowed = []
        for fn in routes:
            method, rx, _ = fn.route
            m = rx.fullmatch(path)
            if not m:
                continue
            if method != self.command:
                allowed.append(method)
                continue
            try:
                return fn(self, *[urllib.parse.unquote(g) for g in m.groups()])
            except HTTPError as e:
                return e.reply
            except Exception as e:  # a bug in the fake: say so loudly
                import traceback
                traceback.print_exc()
                return Reply(500, {"message": "fake server bug: %r" % e})
        if allowed:
            return Reply(405, {"message": "method not allowed"},
                         {"Allow": ", ".join(sorted(set(allowed)))})
        return Reply(404, {"message": "no such endpoint in the fake: %s"
                           % path})

    def _send(self, reply):
        body = reply.body
        headers = dict(reply.headers)
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            data = body.encode()
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        elif body is None:
            data = b""
        else:
            data = body
        # record the status before answering: a client that reads the
        # request log right after its answer must see it
        if self.record is not None:
            self.record["status"] = reply.status
        try:
            self.send_response(reply.status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            self.close_connection = True
        self._finish_log(reply.status)

    def _abort(self, rst):
        """Close the connection without answering (RST when rst=True)."""
        self.close_connection = True
        try:
            if rst:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass
        self._finish_log(None)

    def _finish_log(self, status):
        """Set the recorded status; log it ("-(hang)" etc. when unanswered)."""
        shown = status
        if self.record is not None:
            self.record["status"] = status
            if status is None:
                shown = "-(%s)" % self.record.get("fault")
        self.server.log_line(self.command, self.path_only, shown)

    # -------------------------------------------------------------- utilities

    @property
    def state(self):
        return self.server.state

    @property
    def cfg(self):
        return self.server.state.config

    def version_at_least(self, version):
        """True when the modelled Airbyte server is this version or newer."""
        return parse_version(self.cfg["airbyte_version"]) >= \
            parse_version(version)

    def body_json(self, required=True):
        """Request body as a JSON object, or 400."""
        if not self.raw_body:
            if required:
                raise HTTPError(400, {"message": "request body required"})
            return {}
        try:
            data = json.loads(self.raw_body)
        except ValueError:
            raise HTTPError(400, {"message": "malformed JSON body"})
        if not isinstance(data, dict):
            raise HTTPError(400, {"message": "JSON body must be an object"})
        return data

    def body_form_or_json(self):
        if is_json_content_type(self.hdrs.get("content-type")):
            return self.body_json()
        return {k: v[-1] for k, v in urllib.parse.parse_qs(
            self.raw_body.decode("utf-8", "replace"),
            keep_blank_values=True).items()}

    def base_url(self):
        scheme = "https" if self.server.tls else "http"
        return "%s://%s" % (scheme, self.hdrs.get("host", "localhost"))

    # --------------------------------------------------------- airbyte common

    def airbyte_auth(self, needs_json=False):
        """401 unless a valid unexpired Airbyte token; 415 unless JSON."""
        token = bearer_token(self.hdrs)
        with self.state.lock:
            exp = self.state.airbyte_tokens.get(token)
        if token is None or exp is None or exp <= time.time():
            raise HTTPError(401, {"message": "Unauthorized"})
        if needs_json and not is_json_content_type(
                self.hdrs.get("content-type")):
            raise airbyte_error(415, "Unsupported Media Type: expected "
                                     "application/json")

    def check_connection_id(self, connection_id):
        if connection_id != self.cfg["connection_id"]:
            raise airbyte_error(404, "Could not find connection with id: %s"
                                % connection_id,
                                "https://reference.airbyte.com/reference/"
                                "errors#resource-not-found")

    def issue_airbyte_token(self, data):
        if data.get("client_id") != self.cfg["airbyte_client_id"] or \
                data.get("client_secret") != self.cfg["airbyte_client_secret"]:
            raise HTTPError(401, {"message": "invalid client credentials"})
        n = self.state.next_n()
        # Normally whole seconds; tests may configure fractions to expire
        # tokens quickly.
        expires_in = self.cfg["token_expires_in"]
        return n, expires_in, time.time() + float(expires_in)

    # ================================================================ AIRBYTE

    @route("POST", r"/api/public/v1/applications/token")
    def airbyte_token(self):
        if truthy(self.cfg["legacy_airbyte"]):
            # a server (or proxy) without the route that answers 404
            return Reply(404, {"message": "Not Found"})
        if not self.version_at_least("0.63.7"):
            # The public token path exists from 0.63.7 (airbyte-platform
            # commit ff7d645cea, config.yaml @ v0.63.7).  Before that the
            # public API lives inside airbyte-server behind Micronaut
            # Security, which answers an unknown route 401, not 404
            # (api_conformance.md §2 #7).
            return Reply(401, "")
        if not is_json_content_type(self.hdrs.get("content-type")):
            raise airbyte_error(415, "Unsupported Media Type: expected "
                                     "application/json")
        data = self.body_json()
        if data.get("grant-type") != "client_credentials":
            raise airbyte_error(400, "grant-type must be client_credentials "
                                     "(key spelt with a hyphen)")
        n, expires_in, exp = self.issue_airbyte_token(data)
        token = "airbyte-%s-%d" % (self.state.nonce, n)
        with self.state.lock:
            self.state.airbyte_tokens[token] = exp
        return Reply(200, {"access_token": token, "token_type": "Bearer",
                           "expires_in": expires_in})

    @route("POST", r"/api/v1/applications/token")
    def airbyte_token_legacy(self):
        if not is_json_content_type(self.hdrs.get("content-type")):
            raise config_error(415, "Unsupported Media Type: expected "
                                    "application/json")
        data = self.body_json()
        n, _, exp = self.issue_airbyte_token(data)
        header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        payload = b64url(json.dumps({
            "sub": data["client_id"], "iat": int(time.time()),
            "exp": int(exp), "jti": "%s-%d" % (self.state.nonce, n)}).encode())
        token = "%s.%s.%s" % (header, payload, b64url(b"fake-signature-%d" % n))
        with self.state.lock:
            self.state.airbyte_tokens[token] = exp
        return Reply(200, {"access_token": token})

    @route("GET", r"/api/public/v1/connections/" + SEG,
           "/api/public/v1/connections/*")
    def airbyte_get_connection(self, connection_id):
        self.airbyte_auth()
        self.check_connection_id(connection_id)
        with self.state.lock:
            return Reply(200, self.state.connection_json())

    @route("PATCH", r"/api/public/v1/connections/" + SEG,
           "/api/public/v1/connections/*")
    def airbyte_patch_connection(self, connection_id):
        self.airbyte_auth(needs_json=True)
        self.check_connection_id(connection_id)
        data = self.body_json()
        with self.state.lock:
            if "configurations" in data:
                self.validate_configurations(data["configurations"])
                self.check_field_limit(data["configurations"])
            self.check_connection_fields(data)
            if "configurations" in data:
                conf = copy.deepcopy(data["configurations"])
                if not self.version_at_least("0.60.1"):
                    # StreamConfiguration.selectedFields arrived in 0.60.1
                    # (commit c8781ef13b); older servers drop the unknown
                    # property and select every column (api_conformance.md
                    # §2 #6)
                    for st in conf.get("streams", []):
                        st.pop("selectedFields", None)
                self.state.configurations = conf
                self.state.connection_catalog = copy.deepcopy(
                    self.state.cached_catalog)
            self.apply_connection_fields(data)
            self.state.last_patch = data
            self.state.last_patch_raw = self.raw_body.decode("utf-8",
                                                             "replace")
            self.state.patch_count += 1
            return Reply(200, self.state.connection_json())

    def validate_configurations(self, conf):
        """Validate streams against the CACHED catalog, as Airbyte does."""
        bad = "https://reference.airbyte.com/reference/errors#"
        if not isinstance(conf, dict) or \
                not isinstance(conf.get("streams"), list):
            raise airbyte_error(400, "configurations.streams must be a list",
                                bad + "bad-request")
        catalog = self.state.cached_catalog
        seen = set()
        for stream in conf["streams"]:
            if not isinstance(stream, dict) or \
                    not isinstance(stream.get("name"), str):
                raise airbyte_error(400, "Each stream needs a name",
                                    bad + "bad-request")
            name = stream["name"]
            if name not in catalog:
                raise airbyte_error(400, "Invalid stream found: %s" % name,
                                    bad + "invalid-stream")
            if name in seen:
                raise airbyte_error(400, "Duplicate stream found in "
                                    "configuration for: %s" % name,
                                    bad + "duplicate-stream")
            seen.add(name)
            mode = stream.get("syncMode")
            if mode not in SYNC_MODES:
                raise airbyte_error(400, "Invalid sync mode %r for stream %s;"
                                    " expected one of %s"
                                    % (mode, name, ", ".join(SYNC_MODES)),
                                    bad + "invalid-sync-mode")
            has_pk = name not in self.state.no_pk_tables
            known = set(catalog[name]) | (set(CDC_FIELDS) if has_pk else set())

            def field_of(path, what):
                if not isinstance(path, list) or not path or \
                        not isinstance(path[0], str):
                    raise airbyte_error(400, "Invalid %s in stream %s: %s"
                                        % (what, name, json.dumps(path)),
                                        bad + "bad-request")
                if path[0] not in known:
                    if what == "selected field":
                        # AirbyteCatalogHelper.validateFieldSelection
                        raise airbyte_error(
                            400, "Invalid fields selected for stream %s. The "
                            "list of valid field names includes: [%s]"
                            % (name, ", ".join(sorted(known))))
                    raise airbyte_error(
                        400, "Invalid %s found: %s is not a field of stream %s"
                        % (what, path[0], name), bad + "invalid-field")
                return path[0]

            selected = None
            if "selectedFields" in stream:
                if not isinstance(stream["selectedFields"], list):
                    raise airbyte_error(400, "selectedFields of stream %s must"
                                        " be a list" % name,
                                        bad + "bad-request")
                selected = []
                for sf in stream["selectedFields"]:
                    path = sf.get("fieldPath") if isinstance(sf, dict) else None
                    f = field_of(path, "selected field")
                    if f in selected:
                        raise airbyte_error(400, "Duplicate fields selected in"
                                            " configuration for stream %s: %s"
                                            % (name, f), bad + "bad-request")
                    selected.append(f)
            if not has_pk and mode != "full_refresh_overwrite" and \
                    not mode.startswith("full_refresh"):
                # AirbyteCatalogHelper.validateStreamConfig: the mode must be
                # one the stream supports (only full_refresh without a PK)
                raise airbyte_error(
                    400, "Cannot set sync mode to %s for stream %s. Valid "
                    "sync modes are: [FULL_REFRESH_OVERWRITE, "
                    "FULL_REFRESH_APPEND]" % (mode.upper(), name))
            if stream.get("cursorField") is not None:
                field_of(stream["cursorField"], "cursor field")
            for pk in (stream.get("primaryKey") or []) if has_pk else []:
                f = field_of(pk, "primary key field")
                if selected is not None and f not in selected:
                    raise airbyte_error(400, "Primary key field %s of stream "
                                        "%s is not selected" % (f, name),
                                        bad + "invalid-field")

    # -- connection model (own block: propagation, disable, limits, state) --

    def check_field_limit(self, conf):
        limit = int(self.cfg["max_fields_per_connection"])
        n = self.state.selected_field_count(conf)
        if n > limit:
            # CatalogValidator.fieldCount -> BadRequestException
            raise airbyte_error(
                400, "Total number of selected fields (%d) is greater than "
                "the limit (%d) configured for this workspace. Please "
                "de-select fields or see documentation about raising the "
                "limit." % (n, limit),
                "https://reference.airbyte.com/reference/errors#bad-request")

    def check_connection_fields(self, data):
        if "status" in data and data["status"] not in CONNECTION_STATUSES:
            raise airbyte_error(400, "Invalid status: %r" % data["status"])
        b = data.get("nonBreakingSchemaUpdatesBehavior")
        if b is not None and b not in NON_BREAKING_BEHAVIORS:
            raise airbyte_error(400, "Invalid nonBreakingSchemaUpdatesBehavior"
                                ": %r" % b)

    def apply_connection_fields(self, data):
        st = self.state
        if "status" in data:
            if data["status"] == "active" and \
                    st.connection_status_now() != "active":
                st.enabled_at = time.time()
            st.connection_status = data["status"]
        if data.get("nonBreakingSchemaUpdatesBehavior") is not None:
            st.schema_behavior = data["nonBreakingSchemaUpdatesBehavior"]

    def refuse_if_disabled(self):
        if self.state.connection_status_now() != "active":
            raise airbyte_error(400, "Can only sync an active connection",
                                "https://reference.airbyte.com/reference/"
                                "errors#bad-request")

    @route("POST", r"/api/v1/state/get")
    def airbyte_state_get(self):
        self.airbyte_auth(needs_json=True)
        data = self.body_json()
        if data.get("connectionId") != self.cfg["connection_id"]:
            raise HTTPError(404, {"message": "Could not find connection with "
                                  "id: %s" % data.get("connectionId")})
        with self.state.lock:
            return Reply(200, self.state.saved_state_json())

    @route("POST", r"/api/v1/sources/discover_schema")
    def airbyte_discover(self):
        self.airbyte_auth(needs_json=True)
        data = self.body_json()
        if data.get("sourceId") != self.cfg["source_id"]:
            raise config_error(404, "Could not find source with id: %s"
                               % data.get("sourceId"))
        with self.state.lock:
            if data.get("disable_cache") is True:
                self.state.cached_catalog = copy.deepcopy(
                    self.state.source_catalog)
            catalog = copy.deepcopy(self.state.cached_catalog)
            no_pk = set(self.state.no_pk_tables)
        streams = []
        for table in sorted(catalog):
            props = {c: {"type": "string"} for c in catalog[table]}
            if table in no_pk:
                # CDC without a primary key: only full_refresh, no cursor,
                # no _ab_cdc_* fields (airbyte source-postgres
                # PostgresCdcCatalogHelper.removeIncrementalWithoutPk;
                # bulk-CDK PostgresSourceStreamFactory.create: isCdc && hasPK)
                streams.append({
                    "stream": {"name": table, "namespace": "public",
                               "jsonSchema": {"type": "object",
                                              "properties": props},
                               "supportedSyncModes": ["full_refresh"],
                               "sourceDefinedPrimaryKey": []},
                    "config": {"syncMode": "full_refresh",
                               "destinationSyncMode": "overwrite",
                               "selected": True}})
                continue
            for c in CDC_FIELDS:
                props.setdefault(c, {"type": "string"})
            pk = [["id"]] if "id" in catalog[table] else \
                [[catalog[table][0]]] if catalog[table] else []
            streams.append({
                "stream": {"name": table, "namespace": "public",
                           "jsonSchema": {"type": "object",
                                          "properties": props},
                           "supportedSyncModes": ["full_refresh",
                                                  "incremental"],
                           "sourceDefinedCursor": True,
                           "defaultCursorField": ["_ab_cdc_lsn"],
                           "sourceDefinedPrimaryKey": pk},
                "config": {"syncMode": "incremental",
                           "destinationSyncMode": "append",
                           "selected": True}})
        return Reply(200, {"catalog": {"streams": streams},
                           "jobInfo": {"succeeded": True,
                                       "configType": "discover_schema"}})

    @route("GET", r"/api/public/v1/jobs")
    def airbyte_list_jobs(self):
        self.airbyte_auth()
        a = self.args
        try:
            limit = int(a.get("limit", 20))
            offset = int(a.get("offset", 0))
        except ValueError:
            raise airbyte_error(400, "limit and offset must be integers")
        # Airbyte's default order is createdAt ASCENDING: a client that
        # forgets orderBy=createdAt|DESC with limit=1 gets the OLDEST job.
        order_field, order_dir = "createdAt", "ASC"
        if "orderBy" in a:
            m = re.fullmatch(r"(createdAt|updatedAt)\|(ASC|DESC)", a["orderBy"])
            if not m:
                raise airbyte_error(400, "Invalid orderBy: %s" % a["orderBy"])
            order_field, order_dir = m.groups()
        # JobTypeEnum of the public API: refresh and clear only from 1.8.0;
        # before that the list keeps sync and reset jobs only, and 0.60
        # rejects jobType=refresh (SPEC §4, api_conformance.md)
        visible = ("sync", "reset", "refresh", "clear") \
            if self.version_at_least("1.8.0") else ("sync", "reset")
        if "jobType" in a and a["jobType"] not in visible and \
                not self.version_at_least("0.63.0"):
            raise airbyte_error(400, "Invalid jobType: %s" % a["jobType"])
        with self.state.lock:
            jobs = [j for j in self.state.jobs
                    if ("connectionId" not in a
                        or j["connectionId"] == a["connectionId"])
                    and j["jobType"] in visible
                    and ("jobType" not in a or j["jobType"] == a["jobType"])]
            views = [self.state.job_json(j) for j in jobs]
        if "status" in a:
            views = [v for v in views if v["status"] == a["status"]]
        if order_field == "updatedAt":
            views.sort(key=lambda v: (v["lastUpdatedAt"], v["jobId"]))
        if order_dir == "DESC":
            views.reverse()
        page = views[offset:offset + limit]

        def link(off):
            q = dict(a, offset=str(off), limit=str(limit))
            return "%s/api/public/v1/jobs?%s" % (self.base_url(),
                                                 urllib.parse.urlencode(q))
        body = {"data": page}
        if offset > 0:
            body["previous"] = link(max(0, offset - limit))
        if offset + limit < len(views):
            body["next"] = link(offset + limit)
        return Reply(200, body)

    @route("POST", r"/api/public/v1/jobs")
    def airbyte_create_job(self):
        self.airbyte_auth(needs_json=True)
        data = self.body_json()
        job_type = data.get("jobType")
        if job_type not in ("sync", "reset"):
            # includes "refresh", which only the config API can start
            raise airbyte_error(422, "Invalid jobType: %s (expected sync or "
                                "reset)" % job_type,
                                "https://reference.airbyte.com/reference/"
                                "errors#unprocessable-entity")
        self.check_connection_id(data.get("connectionId"))
        with self.state.lock:
            self.refuse_if_disabled()
            self.refuse_if_running(data["connectionId"])
            job = self.state.new_job(data["connectionId"], job_type)
            return Reply(200, self.state.job_json(job))

    def job_or_404(self, job_id):
        """The job with this id (caller holds the state lock), or Airbyte's 404."""
        job = self.state.find_job(int(job_id)) if job_id.isdigit() else None
        if job is None:
            raise airbyte_error(404, "Could not find job with id: %s" % job_id)
        return job

    def refuse_if_running(self, connection_id):
        # TemporalClient.startNewManualSync: a running workflow of ANY job
        # type (sync, refresh, reset, clear) -> ValueConflictKnownException
        # -> 409 TryAgainLaterConflictProblem (ConfigClientErrorHandler)
        if self.state.active_job(connection_id) is not None:
            raise airbyte_error(409, "A sync is already running for: %s"
                                % connection_id)

    @route("GET", r"/api/public/v1/jobs/" + SEG, "/api/public/v1/jobs/*")
    def airbyte_get_job(self, job_id):
        self.airbyte_auth()
        with self.state.lock:
            return Reply(200, self.state.job_json(self.job_or_404(job_id)))

    @route("DELETE", r"/api/public/v1/jobs/" + SEG, "/api/public/v1/jobs/*")
    def airbyte_cancel_job(self, job_id):
        self.airbyte_auth()
        with self.state.lock:
            job = self.job_or_404(job_id)
            if self.state.job_status(job)[1] in ACTIVE_JOB_STATUSES:
                self.state.set_job_status(job, "cancelled")
            return Reply(200, self.state.job_json(job))

    @route("POST", r"/api/v1/connections/refresh")
    def airbyte_refresh(self):
        """StreamRefreshesHandler.createRefreshesForConnection.

        Saves the streams to refresh FIRST (skipping streams already
        pending), then asks for a manual sync; the next job created consumes
        the rows and becomes the refresh.  Answers (never 409):
          <= 1.1.x  {"value": true|false}  (config.yaml @ v1.1.0 BooleanRead;
                    ConnectionApiController.java @ v1.1.0:176)
          >= 1.2.0  {"job": JobRead} or {"job": null} with HTTP 200 when a
                    job already runs or refreshes are unsupported
                    (commit d64b416732, JobReadResponse)
        """
        self.airbyte_auth(needs_json=True)
        data = self.body_json()
        if data.get("refreshMode") not in ("Merge", "Truncate"):
            raise config_error(422, "refreshMode must be Merge or Truncate")
        if data.get("connectionId") != self.cfg["connection_id"]:
            raise config_error(404, "Could not find connection with id: %s"
                               % data.get("connectionId"))
        connection_id = data["connectionId"]
        new_shape = self.version_at_least("1.2.0")
        with self.state.lock:
            if not truthy(self.cfg["supports_refreshes"]):
                return Reply(200, {"job": None} if new_shape
                             else {"value": False})
            self.state.pending_refresh[connection_id] = True
            self.state.bump("refresh_requests_accepted")
            if self.state.active_job(connection_id) is not None:
                # startNewManualSync fails: "A sync is already running"; the
                # rows stay and the next job created becomes the refresh
                return Reply(200, {"job": None} if new_shape
                             else {"value": True})
            job = self.state.new_job(connection_id, "sync")
            if not new_shape:
                return Reply(200, {"value": True})
            return Reply(200, {"job": self.state.config_job_json(job)})

    @route("POST", r"/api/v1/jobs/list")
    def airbyte_config_list_jobs(self):
        """Config API JobListRequestBody {configTypes*, configId, pagination}
        -> JobReadList {jobs: [JobWithAttemptsRead {job, attempts}],
        totalJobCount}, newest first, every job type."""
        self.airbyte_auth(needs_json=True)
        data = self.body_json()
        types = data.get("configTypes")
        known = ["check_connection_source", "check_connection_destination",
                 "discover_schema", "get_spec", "sync", "reset_connection",
                 "refresh"]
        if self.version_at_least("1.0.0"):
            known.append("clear")
        if not isinstance(types, list) or not types or \
                any(t not in known for t in types):
            raise config_error(400, "configTypes must be a non-empty list of"
                               " %s" % ", ".join(known))
        page = data.get("pagination") or {}
        size = int(page.get("pageSize", 200))
        offset = int(page.get("rowOffset", 0))
        with self.state.lock:
            views = [self.state.config_job_json(j)
                     for j in reversed(self.state.jobs)
                     if ("configId" not in data
                         or j["connectionId"] == data["configId"])]
        views = [v for v in views if v["configType"] in types]
        return Reply(200, {"jobs": [{"job": v, "attempts": []}
                                    for v in views[offset:offset + size]],
                           "totalJobCount": len(views)})

    @route("GET", r"/api/v1/instance_configuration")
    def airbyte_instance_configuration(self):
        """InstanceConfigurationApiController: anonymous; the version."""
        return Reply(200, {"edition": "community",
                           "version": AIRBYTE_PROFILES.get(
                               str(self.cfg["airbyte_version"]),
                               str(self.cfg["airbyte_version"])),
                           "licenseType": "community",
                           "webappUrl": self.base_url(),
                           "initialSetupComplete": True,
                           "defaultUserId": "00000000-0000-0000-0000-000000000000",
                           "defaultOrganizationId": "00000000-0000-0000-0000-000000000000",
                           "trackingStrategy": "logging",
                           "auth": {"mode": "simple"}})

    # ================================================================== AZURE

    @route("POST", r"/" + SEG + r"/oauth2/v2\.0/token",
           "/*/oauth2/v2.0/token")
    def azure_token(self, tenant):
        ctype = (self.hdrs.get("content-type") or "").split(";")[0].strip()
        if ctype.lower() != "application/x-www-form-urlencoded":
            raise oauth_error(400, "invalid_request", "AADSTS900144: the "
                              "request body must be form-urlencoded")
        form = self.body_form_or_json()
        cfg = self.cfg
        if form.get("grant_type") != "client_credentials":
            raise oauth_error(400, "unsupported_grant_type",
                              "AADSTS70003: grant_type must be "
                              "client_credentials")
        if form.get("scope") != AZURE_SCOPE:
            raise oauth_error(400, "invalid_scope", "AADSTS70011: scope must "
                              "be %s" % AZURE_SCOPE)
        if form.get("client_assertion_type") != JWT_BEARER_ASSERTION:
            raise oauth_error(400, "invalid_request", "AADSTS700023: "
                              "client_assertion_type must be %s"
                              % JWT_BEARER_ASSERTION)
        if not form.get("client_id") or (
                cfg["azure_client_id"] is not None
                and form["client_id"] != cfg["azure_client_id"]):
            raise oauth_error(400, "invalid_client", "AADSTS700016: "
                              "application not found in the directory")
        if not form.get("client_assertion") or (
                cfg["federated_token"] is not None
                and form["client_assertion"] != cfg["federated_token"]):
            raise oauth_error(401, "invalid_client", "AADSTS700024: client "
                              "assertion is not valid")
        token = "azure-%d" % self.state.next_n()
        with self.state.lock:
            self.state.azure_tokens[token] = time.time() + 3599
        return Reply(200, {"access_token": token, "token_type": "Bearer",
                           "expires_in": 3599, "ext_expires_in": 3599})

    def check_proxy_headers(self):
        for name, value in (self.cfg["proxy_required_headers"] or {}).items():
            if self.hdrs.get(name.lower()) != value:
                raise HTTPError(401, {"error": "missing or wrong header %s"
                                      % name})

    @route("GET", r"/azure-token-proxy")
    def azure_proxy_text(self):
        self.check_proxy_headers()
        return Reply(200, self.cfg["proxy_token"])

    @route("GET", r"/azure-token-proxy\.json", "/azure-token-proxy.json")
    def azure_proxy_json(self):
        self.check_proxy_headers()
        return Reply(200, {"access_token": self.cfg["proxy_token"]})

    # ================================================================= GOOGLE

    @route("POST", r"/v1/token")
    def google_sts(self):
        data = self.body_form_or_json()
        cfg = self.cfg

        def need(key, expected, error="invalid_request"):
            if expected is not None and data.get(key) != expected:
                raise oauth_error(400, error, "%s must be %s, got %s"
                                  % (key, expected, data.get(key)))
            if not data.get(key):
                raise oauth_error(400, error, "%s is required" % key)

        need("grant_type", TOKEN_EXCHANGE_GRANT, "unsupported_grant_type")
        need("audience", cfg["sts_expected_audience"], "invalid_target")
        scope = data.get("scope")
        scopes = scope if isinstance(scope, list) else str(scope or "").split()
        if CLOUD_PLATFORM_SCOPE not in scopes:
            raise oauth_error(400, "invalid_scope", "scope must include %s"
                              % CLOUD_PLATFORM_SCOPE)
        need("requested_token_type", ACCESS_TOKEN_TYPE)
        need("subject_token_type", cfg["sts_expected_subject_token_type"])
        # Any non-empty subject token is accepted (the request is recorded,
        # so tests can check which one was sent) unless one is configured.
        need("subject_token", cfg["sts_expected_subject_token"],
             "invalid_grant")
        token = "sts-%s-%d" % (self.state.nonce, self.state.next_n())
        with self.state.lock:
            self.state.google_sts_tokens[token] = time.time() + 3600
        return Reply(200, {"access_token": token,
                           "issued_token_type": ACCESS_TOKEN_TYPE,
                           "token_type": "Bearer", "expires_in": 3600})

    @route("POST", r"/v1/projects/-/serviceAccounts/([^/:]+):generateAccessToken",
           "/v1/projects/-/serviceAccounts/*:generateAccessToken")
    def google_impersonate(self, email):
        token = bearer_token(self.hdrs)
        with self.state.lock:
            exp = self.state.google_sts_tokens.get(token)
        if exp is None or exp <= time.time():
            raise google_error(401, "Request had invalid authentication "
                               "credentials. Expected OAuth 2 access token.",
                               "UNAUTHENTICATED")
        if email != self.cfg["service_account"]:
            raise google_error(403, "Permission 'iam.serviceAccounts."
                               "getAccessToken' denied on resource (or it may "
                               "not exist).", "PERMISSION_DENIED")
        try:
            data = self.body_json()
        except HTTPError:
            raise google_error(400, "Invalid JSON payload received.",
                               "INVALID_ARGUMENT")
        scope = data.get("scope")
        if not isinstance(scope, list) or CLOUD_PLATFORM_SCOPE not in scope:
            raise google_error(400, "scope must be a list including %s"
                               % CLOUD_PLATFORM_SCOPE, "INVALID_ARGUMENT")
        lifetime = data.get("lifetime")
        if lifetime is not None and \
                not re.fullmatch(r"\d+(\.\d+)?s", str(lifetime)):
            raise google_error(400, "Invalid value at 'lifetime'",
                               "INVALID_ARGUMENT")
        expires = time.time() + float(self.cfg["impersonate_expires_in"])
        token = "ya29.fake-%s-%d" % (self.state.nonce, self.state.next_n())
        with self.state.lock:
            self.state.google_access_tokens[token] = expires
        return Reply(200, {"accessToken": token,
                           "expireTime": iso8601(expires)})

    # =============================================================== BIGQUERY

    def bq_auth(self):
        token = bearer_token(self.hdrs)
        with self.state.lock:
            exp = self.state.google_access_tokens.get(token)
        if exp is None or exp <= time.time():
            raise google_error(401, "Request had invalid authentication "
                               "credentials.", "UNAUTHENTICATED", "authError")

    def bq_lookup(self, key):
        t = self.state.bq_tables.get(key)
        if t is None:
            raise google_error(404, "Not found: Table %s:%s.%s" % key,
                               "NOT_FOUND", "notFound")
        return t

    def bq_check_rate(self, table):
        """The per-table sliding window (caller holds the lock): raises the
        real 403 rateLimitExceeded when the window is full.  Only updates
        that succeed are counted (bq_patch appends them)."""
        limit = self.cfg.get("bq_table_update_limit")
        now = time.time()
        window = float(self.cfg.get("bq_table_update_window_s") or 0)
        updates = [t for t in table.setdefault("updates", [])
                   if t > now - window]
        table["updates"] = updates
        if limit is not None and len(updates) >= int(limit):
            table["rate_limited"] = table.get("rate_limited", 0) + 1
            raise bq_rate_limit_error()

    BQ_TABLE = (r"/bigquery/v2/projects/" + SEG + "/datasets/" + SEG +
                "/tables/" + SEG)
    BQ_TEMPLATE = "/bigquery/v2/projects/*/datasets/*/tables/*"

    @route("GET", BQ_TABLE, BQ_TEMPLATE)
    def bq_get(self, p, d, t):
        self.bq_auth()
        with self.state.lock:
            table = self.bq_lookup((p, d, t))
            return Reply(200, State.bq_table_json((p, d, t), table))

    @route("PATCH", BQ_TABLE, BQ_TEMPLATE)
    def bq_patch(self, p, d, t):
        self.bq_auth()
        key = (p, d, t)
        try:
            data = self.body_json()
        except HTTPError:
            raise google_error(400, "Invalid JSON payload received.",
                               "INVALID_ARGUMENT", "invalid")
        with self.state.lock:
            table = self.bq_lookup(key)
            self.bq_check_rate(table)
            etag = (self.hdrs.get("if-match") or "").strip()
            if etag.startswith('"') and etag.endswith('"') and len(etag) > 1:
                etag = etag[1:-1]
            if etag != table["etag"]:
                raise google_error(412, "Precondition check failed.",
                                   "FAILED_PRECONDITION", "conditionNotMet")
            if "schema" in data:
                fields = (data["schema"] or {}).get("fields")
                if not isinstance(fields, list):
                    raise google_error(400, "schema.fields must be a list",
                                       "INVALID_ARGUMENT", "invalid")
                problem = bq_schema_problem(table["schema"].get("fields", []),
                                            fields)
                if problem:
                    raise google_error(
                        400, "Provided Schema does not match Table %s:%s.%s. "
                        % key + problem, "INVALID_ARGUMENT", "invalid")
                tags = bq_tag_problem(fields)
                if tags:
                    raise google_error(400, tags, "INVALID_ARGUMENT",
                                       "invalid")
                table["schema"] = {"fields": copy.deepcopy(fields)}
            table["etag"] = self.state.new_etag()
            table["modified"] = time.time()
            table["patches"] += 1
            table.setdefault("updates", []).append(table["modified"])
            return Reply(200, State.bq_table_json(key, table))

    # ========================================================== CONTROL (/_fake)

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
        unknown = sorted(set(data) - set(DEFAULT_CONFIG))
        if unknown:
            raise HTTPError(400, {"message": "unknown config keys: %s"
                                  % ", ".join(unknown)})
        with self.state.lock:
            self.state.config.update(data)
            return Reply(200, copy.deepcopy(self.state.config))

    @route("POST", r"/_fake/airbyte/source_catalog")
    def c_source_catalog(self):
        data = self.body_json()
        tables = data.get("tables")
        if not isinstance(tables, dict) or not all(
                isinstance(v, list) for v in tables.values()):
            raise HTTPError(400, {"message": 'want {"tables": {"t": '
                                  '["col", ...]}}'})
        catalog = {k: list(v) for k, v in tables.items()}
        catalog.setdefault(HEARTBEAT_TABLE, list(HEARTBEAT_COLUMNS))
        no_pk = data.get("no_primary_key") or []
        if not isinstance(no_pk, list):
            raise HTTPError(400, {"message": "no_primary_key: a list of tables"})
        with self.state.lock:
            self.state.source_catalog = catalog
            self.state.no_pk_tables = set(no_pk) | {HEARTBEAT_TABLE}
            if truthy(data.get("also_cache")):
                self.state.cached_catalog = copy.deepcopy(catalog)
            return self.c_get_catalog()

    @route("GET", r"/_fake/airbyte/source_catalog")
    def c_get_catalog(self):
        with self.state.lock:
            return Reply(200, {"source": copy.deepcopy(self.state.source_catalog),
                               "cached": copy.deepcopy(self.state.cached_catalog),
                               "no_primary_key": sorted(self.state.no_pk_tables)})

    @route("GET", r"/_fake/airbyte/connection")
    def c_connection(self):
        with self.state.lock:
            body = self.state.connection_json()
            body["last_patch"] = copy.deepcopy(self.state.last_patch)
            body["last_patch_raw"] = self.state.last_patch_raw
            body["patch_count"] = self.state.patch_count
            body["schema_checks"] = self.state.schema_checks
            body["disabled_at"] = self.state.disabled_at
            return Reply(200, body)

    @route("POST", r"/_fake/airbyte/schema_check")
    def c_schema_check(self):
        """Run Airbyte's schema check now (as at the start of a sync)."""
        with self.state.lock:
            self.state.schema_check()
        return self.c_connection()

    @route("POST", r"/_fake/airbyte/connection_model")
    def c_connection_model(self):
        """Set status / nonBreakingSchemaUpdatesBehavior directly (as
        Terraform or Airbyte itself would)."""
        data = self.body_json()
        with self.state.lock:
            self.check_connection_fields(data)
            self.apply_connection_fields(data)
        return self.c_connection()

    @route("POST", r"/_fake/airbyte/saved_state")
    def c_saved_state(self):
        """{"lsn": N | null, "stateType": "global" | "legacy"}"""
        data = self.body_json()
        with self.state.lock:
            if "lsn" in data:
                self.state.saved_lsn = None if data["lsn"] is None \
                    else int(data["lsn"])
            if data.get("stateType") in ("global", "legacy"):
                self.state.saved_state_type = data["stateType"]
            return Reply(200, self.state.saved_state_json())

    @route("POST", r"/_fake/airbyte/revoke_tokens")
    def c_revoke(self):
        with self.state.lock:
            n = len(self.state.airbyte_tokens)
            self.state.airbyte_tokens.clear()
            return Reply(200, {"revoked": n})

    @route("POST", r"/_fake/airbyte/jobs")
    def c_create_job(self):
        data = self.body_json(required=False)
        with self.state.lock:
            job = create_job(self.state, data)
            return Reply(200, self.state.job_json(job))

    @route("GET", r"/_fake/airbyte/jobs")
    def c_list_jobs(self):
        with self.state.lock:
            return Reply(200, {"jobs": [self.state.job_json(j)
                                        for j in self.state.jobs]})

    @route("POST", r"/_fake/airbyte/jobs/(\d+)", "/_fake/airbyte/jobs/*")
    def c_update_job(self, job_id):
        data = self.body_json()
        with self.state.lock:
            job = self.state.find_job(int(job_id))
            if job is None:
                raise HTTPError(404, {"message": "no job %s" % job_id})
            if "status" not in data:
                if set_job_progress(job, data):
                    return Reply(200, self.state.job_json(job))
                raise HTTPError(400, {"message": "status required"})
            set_job_progress(job, data)
            self.state.set_job_status(
                job, data["status"], frozen=truthy(data.get("frozen", True)),
                final_status=data.get("final_status"),
                running_seconds=data.get("running_seconds"))
            return Reply(200, self.state.job_json(job))

    @route("POST", r"/_fake/bigquery/tables")
    def c_bq_tables(self):
        data = self.body_json()
        out = []
        with self.state.lock:
            for spec in data.get("tables") or []:
                try:
                    key = (spec["project"], spec["dataset"], spec["table"])
                except (KeyError, TypeError):
                    raise HTTPError(400, {"message": "each table needs "
                                          "project, dataset, table"})
                now = time.time()
                self.state.bq_tables[key] = {
                    "schema": copy.deepcopy(spec.get("schema")
                                            or {"fields": []}),
                    "etag": self.state.new_etag(), "created": now,
                    "modified": now, "patches": 0}
                out.append(State.bq_table_json(key, self.state.bq_tables[key]))
        return Reply(200, {"tables": out})

    def c_bq_key(self):
        try:
            return (self.args["project"], self.args["dataset"],
                    self.args["table"])
        except KeyError:
            raise HTTPError(400, {"message": "need ?project=&dataset=&table="})

    @route("GET", r"/_fake/bigquery/table")
    def c_bq_table(self):
        key = self.c_bq_key()
        with self.state.lock:
            t = self.state.bq_tables.get(key)
            if t is None:
                raise HTTPError(404, {"message": "no table %s:%s.%s" % key})
            body = State.bq_table_json(key, t)
            body["patches"] = t["patches"]
            body["rate_limited"] = t.get("rate_limited", 0)
            return Reply(200, body)

    @route("POST", r"/_fake/bigquery/table/update")
    def c_bq_outside_update(self):
        """An update by someone else (Airbyte's destination): optional new
        fields (e.g. a column replaced without its tag); counts in the
        per-table rate window, changes etag and lastModifiedTime."""
        key = self.c_bq_key()
        data = self.body_json(required=False) or {}
        with self.state.lock:
            t = self.state.bq_tables.get(key)
            if t is None:
                raise HTTPError(404, {"message": "no table %s:%s.%s" % key})
            t.setdefault("updates", []).append(time.time())
            if "fields" in data:
                t["schema"] = {"fields": copy.deepcopy(data["fields"])}
            t["etag"] = self.state.new_etag()
            t["modified"] = time.time()
            return Reply(200, State.bq_table_json(key, t))

    @route("DELETE", r"/_fake/bigquery/table")
    def c_bq_drop(self):
        key = self.c_bq_key()
        with self.state.lock:
            found = self.state.bq_tables.pop(key, None) is not None
        return Reply(200, {"dropped": found})

    @route("POST", r"/_fake/faults")
    def c_add_faults(self):
        data = self.body_json()
        rules = data.get("rules")
        if not isinstance(rules, list):
            raise HTTPError(400, {"message": 'want {"rules": [...]}'})
        prepared = []
        for rule in rules:
            if not isinstance(rule, dict) or not rule.get("path"):
                raise HTTPError(400, {"message": "each rule needs a path regex"})
            kind = rule.get("kind", "status")
            if kind not in ("status", "latency", "hang", "reset", "malformed",
                            "accept_hang", "accept_reset"):
                raise HTTPError(400, {"message": "unknown fault kind %s" % kind})
            try:
                rx = re.compile(rule["path"])
            except re.error as e:
                raise HTTPError(400, {"message": "bad path regex: %s" % e})
            r = dict(rule)
            r.setdefault("times", 1)   # absent -> once; null -> forever
            r["_re"] = rx
            prepared.append(r)
        with self.state.lock:
            self.state.faults.extend(prepared)
            return self.c_list_faults()

    @route("GET", r"/_fake/faults")
    def c_list_faults(self):
        with self.state.lock:
            return Reply(200, {"rules": [
                {k: v for k, v in r.items() if k != "_re"}
                for r in self.state.faults]})

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


def bq_schema_problem(old_fields, new_fields, prefix=""):
    """Why BigQuery would reject replacing old_fields by new_fields, or None.

    Every existing field (recursively) must still be there with the same
    type; a mode may only be relaxed (REQUIRED -> NULLABLE)."""
    new_by_name = {f.get("name"): f for f in new_fields if isinstance(f, dict)}
    for old in old_fields:
        name = old.get("name")
        full = prefix + name
        new = new_by_name.get(name)
        if new is None:
            return "Field %s is missing in new schema" % full
        ot, nt = old.get("type", "").upper(), new.get("type", "").upper()
        alias = {"INT64": "INTEGER", "FLOAT64": "FLOAT", "BOOL": "BOOLEAN",
                 "STRUCT": "RECORD"}
        if alias.get(ot, ot) != alias.get(nt, nt):
            return "Field %s has changed type from %s to %s" % (full, ot, nt)
        om = (old.get("mode") or "NULLABLE").upper()
        nm = (new.get("mode") or "NULLABLE").upper()
        if om != nm and not (om == "REQUIRED" and nm == "NULLABLE"):
            return "Field %s has changed mode from %s to %s" % (full, om, nm)
        if old.get("fields"):
            problem = bq_schema_problem(old["fields"], new.get("fields") or [],
                                        full + ".")
            if problem:
                return problem
    return None


def bq_tag_problem(fields, prefix=""):
    """BigQuery allows at most one policy tag per field."""
    for f in fields:
        if not isinstance(f, dict):
            return "Invalid field in schema"
        names = (f.get("policyTags") or {}).get("names") or []
        if len(names) > 1:
            return ("Too many policy tags on field %s%s: at most one policy "
                    "tag is allowed per field" % (prefix, f.get("name")))
        problem = bq_tag_problem(f.get("fields") or [],
                                 prefix + str(f.get("name")) + ".")
        if problem:
            return problem
    return None


def _collect_routes(prefix_control):
    out = []
    for name in dir(Handler):
        fn = getattr(Handler, name)
        if callable(fn) and hasattr(fn, "route"):
            is_control = fn.route[2].startswith("/_fake")
            if is_control == prefix_control:
                out.append(fn)
    return out


API_ROUTES = _collect_routes(False)
CONTROL_ROUTES = _collect_routes(True)


# --------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------

class FakeHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # the extension opens 16+ connections at once with libcurl multi
    request_queue_size = 128

    def __init__(self, addr, state, stopping, log_file, log_lock,
                 tls_context=None, control_only=False):
        super().__init__(addr, Handler)
        self.state = state
        self.stopping = stopping
        self.log_file = log_file
        self.log_lock = log_lock
        self.control_only = control_only
        self.tls = tls_context is not None
        if tls_context is not None:
            # Handshake lazily in the handler thread, so that a client that
            # aborts the handshake (untrusted cert) cannot block accept().
            self.socket = tls_context.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False)

    def server_bind(self):
        # HTTPServer.server_bind resolves the host name (getfqdn), which can
        # stall on a machine with slow DNS; the name is never needed here.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def log_line(self, method, path, status):
        if self.log_file is None:
            return
        line = "%s %s %s %s\n" % (
            datetime.datetime.now(datetime.timezone.utc)
            .strftime("%Y-%m-%dT%H:%M:%S.%fZ"), method, path, status)
        with self.log_lock:
            self.log_file.write(line)
            self.log_file.flush()

    def handle_error(self, request, client_address):
        # Clients that drop connections or refuse our TLS certificate are
        # part of the tests; one line instead of a traceback.
        exc = sys.exc_info()[1]
        if self.log_file is not None and not isinstance(
                exc, (ConnectionError, ssl.SSLError, TimeoutError)):
            self.log_line("-", "-", "error %s" % type(exc).__name__)
        if not isinstance(exc, (ConnectionError, ssl.SSLError, TimeoutError,
                                OSError)):
            super().handle_error(request, client_address)


def write_port_file(path, port):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write("%d\n" % port)
    os.replace(tmp, path)


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

    state = State(AIRBYTE_PROFILES.get(opts.airbyte_version,
                                       opts.airbyte_version))
    if opts.jobs:
        with open(opts.jobs, encoding="utf-8") as f:
            for data in json.load(f):
                create_job(state, data)
    stopping = threading.Event()
    log_file = open(opts.log, "a", encoding="utf-8") if opts.log else None
    log_lock = threading.Lock()

    ctx = None
    if opts.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(opts.tls_cert, opts.tls_key)

    servers = [FakeHTTPServer((opts.host, opts.port), state, stopping,
                              log_file, log_lock, ctx)]
    if opts.control_port_file:
        servers.append(FakeHTTPServer((opts.host, 0), state, stopping,
                                      log_file, log_lock, None,
                                      control_only=True))

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
