"""The fake Airbyte's model: version profiles, the connection, its jobs, the
connection model (schema propagation, auto-disable, the field limit, the saved
CDC state) and the error bodies of Airbyte's two APIs.  The route handlers
are in airbyte.py (the public and config APIs) and airbyte_control.py (the
/_fake/airbyte/ control API)."""

import copy
import json
import re
import time

from .common import HTTPError, iso8601, iso_duration, truthy

CDC_FIELDS = ("_ab_cdc_lsn", "_ab_cdc_deleted_at", "_ab_cdc_updated_at")
SYNC_MODES = ("incremental_append", "full_refresh_overwrite",
              "incremental_deduped_history", "full_refresh_append")
HEARTBEAT_TABLE = "airbyte_heartbeat"
HEARTBEAT_COLUMNS = ["id", "last_heartbeat"]

# Job statuses during which Airbyte refuses to start another job for the
# connection ("incomplete" = an attempt failed and the job will retry).
ACTIVE_JOB_STATUSES = ("pending", "queued", "running", "incomplete")
FINAL_JOB_STATUSES = ("succeeded", "failed", "cancelled")

# Airbyte version profiles the fake models (README.md "Supported Airbyte
# versions" says what differs between them).  A test picks one with --airbyte-version, the
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



# Keys of /_fake/config for Airbyte (merged into the fake's config in the
# order of __main__.SERVICES).
CONFIG = {
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
}

# The connection model (schema propagation, auto-disable, the field limit,
# the saved CDC state); these keys come last in /_fake/config.
CONNECTION_MODEL_CONFIG = {
    # failed jobs in a row before Airbyte disables the connection; None:
    # as the version does (20 up to 1.2.x, 30 from 1.8.0; airbyte-platform
    # airbyte-server application.yml MAX_FAILED_JOBS_IN_A_ROW_BEFORE_...)
    "disable_after_failed_jobs": None,
    # CatalogValidator's max-fields-per-connection (MAX_FIELDS_PER_CONNECTION)
    "max_fields_per_connection": 20000,
}
NON_BREAKING_BEHAVIORS = ("ignore", "disable_connection", "propagate_columns",
                          "propagate_fully")
CONNECTION_STATUSES = ("active", "inactive", "deprecated")


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


# Airbyte's public API answers errors as problem bodies, serialised by
# AbstractThrowableProblemHandler (airbyte-platform
# airbyte-api/problems-api/src/main/openapi/api-problems.yaml): "detail" is a
# FIXED sentence per problem type and the specific text is in data.message.
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


# --------------------------------------------------------------------------
# State (a mixin of the fake's State; all access under self.lock)
# --------------------------------------------------------------------------

class AirbyteState:
    """Airbyte's part of the fake's State."""

    default_airbyte_version = DEFAULT_AIRBYTE_VERSION
    # job ids are never reset (see state.BaseState); the first job is 1
    job_counter = 0

    def reset_service_state(self):
        super().reset_service_state()
        self.config["airbyte_version"] = self.default_airbyte_version
        # token -> expiry (epoch seconds)
        self.airbyte_tokens = {}
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
            # and are consumed by it
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
