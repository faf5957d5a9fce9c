"""/_fake/airbyte/: what a test sets or reads of the fake Airbyte (the
source catalog, the connection model, the saved state, tokens, jobs)."""

import copy

from .airbyte_model import HEARTBEAT_COLUMNS, HEARTBEAT_TABLE, create_job, set_job_progress
from .common import HTTPError, Reply, route, routes_of, truthy

PREFIX = r"/_fake/airbyte/"


class AirbyteControl:
    """Route handlers of /_fake/airbyte/."""

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


ROUTES = routes_of(AirbyteControl)
