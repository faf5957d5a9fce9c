"""The fake Airbyte server: the public API (/api/public/v1/...) and the
config API (/api/v1/...) as the Airbyte versions of airbyte_model.AIRBYTE_PROFILES
answer them.  The state lives in airbyte_model.AirbyteState."""

import copy
import json
import re
import time
import urllib.parse

from .airbyte_model import (ACTIVE_JOB_STATUSES, AIRBYTE_PROFILES, CDC_FIELDS,
                            CONNECTION_STATUSES, NON_BREAKING_BEHAVIORS,
                            SYNC_MODES, airbyte_error, config_error,
                            parse_version)
from .common import (HTTPError, Reply, SEG, b64url, bearer_token,
                     is_json_content_type, route, routes_of, truthy)

# the paths __main__ sends here
PREFIX = r"/api/"


class AirbyteAPI:
    """Route handlers of Airbyte's public and config APIs (a mixin of the
    request handler: self.state, self.cfg, self.body_json() ...)."""

    def version_at_least(self, version):
        """True when the modelled Airbyte server is this version or newer."""
        return parse_version(self.cfg["airbyte_version"]) >= \
            parse_version(version)

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
            # Security, which answers an unknown route 401, not 404.
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
                    # property and select every column
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
        # rejects jobType=refresh (README.md "Supported Airbyte versions")
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


ROUTES = routes_of(AirbyteAPI)
