"""The fake BigQuery: tables.get and tables.patch (schema with policy tags,
ETag preconditions, the per-table update rate limit), jobs.query and
jobs.getQueryResults running the SQL (bigquery_jobs.py), and its control API
under /_fake/bigquery/."""

import base64
import copy
import time

from . import bigquery_jobs
from .common import (HTTPError, Reply, SEG, bearer_token, google_error, route,
                     routes_of)

# the API paths __main__ sends here (CONTROL_PREFIX: the control API's)
PREFIX = r"/bigquery/"
CONTROL_PREFIX = r"/_fake/bigquery/"

# Keys of /_fake/config.
CONFIG = {
    # BigQuery: table metadata updates allowed per table in a sliding window
    # ("Maximum rate of table metadata update operations per table": 5 per
    # 10 s); past it a PATCH gets the real 403 rateLimitExceeded answer.
    # None turns the limit off.
    "bq_table_update_limit": 5,
    "bq_table_update_window_s": 10.0,
    # jobs.query (bigquery_jobs.py): the PostgreSQL database holding the
    # final tables (libpq DSN), the datasets' location (None: any), and how
    # many answers say jobComplete false first.
    "bq_sql_dsn": None,
    "bq_location": None,
    "bq_query_pending_polls": 0,
}

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


class BigQueryState:
    """BigQuery's part of the fake's State."""

    def reset_service_state(self):
        super().reset_service_state()
        # (project, dataset, table) -> dict
        self.bq_tables = {}
        # query jobs (their ids are never reused: the object stays)
        if getattr(self, "bq_jobs", None) is None:
            self.bq_jobs = bigquery_jobs.Jobs()
        self.bq_jobs.reset()

    def new_etag(self):
        return base64.b64encode(
            ("%s-etag-%d" % (self.nonce, self.next_n())).encode()).decode()


class BigQueryAPI:
    """Route handlers of the BigQuery tables API."""

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
            return Reply(200, bq_table_json((p, d, t), table))

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
            return Reply(200, bq_table_json(key, table))


    def bq_column_tags(self, project, dataset, table):
        """{column: [policy tag names]} of a table the fake knows."""
        with self.state.lock:
            t = self.state.bq_tables.get((project, dataset, table))
            fields = (t or {}).get("schema", {}).get("fields", [])
            return {f.get("name"): (f.get("policyTags") or {}).get("names")
                    for f in fields if isinstance(f, dict)}

    @route("POST", r"/bigquery/v2/projects/" + SEG + "/queries",
           "/bigquery/v2/projects/*/queries")
    def bq_query(self, p):
        self.bq_auth()
        try:
            data = self.body_json()
        except HTTPError:
            raise google_error(400, "Invalid JSON payload received.",
                               "INVALID_ARGUMENT", "invalid")
        with self.state.lock:
            cfg = dict(self.state.config)
        status, body = self.state.bq_jobs.query(
            p, data, cfg, lambda d, t: self.bq_column_tags(p, d, t))
        return Reply(status, body)

    @route("GET", r"/bigquery/v2/projects/" + SEG + "/queries/" + SEG,
           "/bigquery/v2/projects/*/queries/*")
    def bq_query_results(self, p, job_id):
        self.bq_auth()
        status, body = self.state.bq_jobs.get_results(p, job_id, self.args)
        return Reply(status, body)


class BigQueryControl:
    """/_fake/bigquery/: tables made, read, changed and dropped by a test."""

    @route("GET", r"/_fake/bigquery/query_stats")
    def c_bq_query_stats(self):
        """queries, dry_runs, bytes_processed, bytes_billed,
        bytes_limit_exceeded, polls of jobs.query"""
        with self.state.bq_jobs.lock:
            return Reply(200, dict(self.state.bq_jobs.stats))

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
                out.append(bq_table_json(key, self.state.bq_tables[key]))
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
            body = bq_table_json(key, t)
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
            return Reply(200, bq_table_json(key, t))

    @route("DELETE", r"/_fake/bigquery/table")
    def c_bq_drop(self):
        key = self.c_bq_key()
        with self.state.lock:
            found = self.state.bq_tables.pop(key, None) is not None
        return Reply(200, {"dropped": found})


ROUTES = routes_of(BigQueryAPI)
CONTROL_ROUTES = routes_of(BigQueryControl)
