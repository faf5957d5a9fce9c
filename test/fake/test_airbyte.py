"""Self-test of the fake Airbyte (airbyte.py, airbyte_model.py,
airbyte_control.py): tokens, the connection, the connection model, jobs,
the answers per version."""

import base64
import http.client
import json
import time
import unittest

import selftest
from selftest import CONN, SOURCE


class AirbyteTest(selftest.FakeServerTest):

    def test_airbyte_tokens(self):
        url = "/api/public/v1/applications/token"
        good = {"client_id": "test-client", "client_secret":
                "test-secret-value", "grant-type": "client_credentials"}
        status, _, data = self.call("POST", url, good)
        self.assertEqual((status, data["token_type"], data["expires_in"]),
                         (200, "Bearer", 180))
        self.assertEqual(self.call("POST", url, dict(good, client_secret="x"))
                         [:3:2], (401, {"message":
                                        "invalid client credentials"}))
        underscore = {k.replace("-", "_"): v for k, v in good.items()}
        self.assertEqual(self.call("POST", url, underscore)[0], 400)
        self.assertEqual(self.call("POST", url, json.dumps(good),
                                   {"Content-Type": "text/plain"})[0], 415)
        # legacy Airbyte: public endpoint 404, config API gives a JWT
        self.control("POST", "/_fake/config", {"legacy_airbyte": True})
        self.assertEqual(self.call("POST", url, good)[0], 404)
        status, _, data = self.call("POST", "/api/v1/applications/token",
                                    {"client_id": "test-client",
                                     "client_secret": "test-secret-value"})
        self.assertEqual(status, 200)
        payload = data["access_token"].split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
        self.assertAlmostEqual(claims["exp"], time.time() + 180, delta=5)
        auth = {"Authorization": "Bearer " + data["access_token"]}
        self.assertEqual(self.call("GET", "/api/public/v1/connections/" + CONN,
                                   headers=auth)[0], 200)

    def test_airbyte_auth_revoke_and_expiry(self):
        path = "/api/public/v1/connections/" + CONN
        self.assertEqual(self.call("GET", path)[:3:2],
                         (401, {"message": "Unauthorized"}))
        auth = self.airbyte_token()
        self.assertEqual(self.call("GET", path, headers=auth)[0], 200)
        self.control("POST", "/_fake/airbyte/revoke_tokens")
        self.assertEqual(self.call("GET", path, headers=auth)[0], 401)
        self.control("POST", "/_fake/config", {"token_expires_in": 0.3})
        auth = self.airbyte_token()
        self.assertEqual(self.call("GET", path, headers=auth)[0], 200)
        time.sleep(0.4)
        self.assertEqual(self.call("GET", path, headers=auth)[0], 401)

    def test_airbyte_connection_discover_patch(self):
        auth = self.airbyte_token()
        status, _, conn = self.call("GET", "/api/public/v1/connections/"
                                    + CONN, headers=auth)
        self.assertEqual((status, conn["sourceId"], conn["status"]),
                         (200, SOURCE, "active"))
        self.assertEqual(self.call("GET", "/api/public/v1/connections/nope",
                                   headers=auth)[0], 404)
        self.control("POST", "/_fake/airbyte/source_catalog",
                     {"tables": {"users": ["id", "name", "email"]}})
        stream = {"name": "users", "syncMode": "incremental_append",
                  "cursorField": ["_ab_cdc_lsn"], "primaryKey": [["id"]],
                  "selectedFields": [{"fieldPath": [f]} for f in
                                     ("_ab_cdc_lsn", "_ab_cdc_deleted_at",
                                      "_ab_cdc_updated_at", "id", "name")]}
        hb = {"name": "airbyte_heartbeat", "syncMode": "full_refresh_overwrite",
              "primaryKey": [["id"]],
              "selectedFields": [{"fieldPath": ["id"]},
                                 {"fieldPath": ["last_heartbeat"]}]}
        body = {"configurations": {"streams": [stream, hb]}}
        patch = "/api/public/v1/connections/" + CONN
        # the cached catalog is empty until a discover with disable_cache
        status, _, err = self.call("PATCH", patch, body, auth)
        self.assertEqual((status, err["data"]["message"], err["detail"]),
                         (400, "Invalid stream found: users",
                          "The request could not be understood by the server"
                          " due to malformed syntax."))
        status, _, disc = self.discover(auth, disable_cache=False)
        self.assertEqual((status, disc["catalog"]["streams"]), (200, []))
        status, _, disc = self.discover(auth)
        names = [s["stream"]["name"] for s in disc["catalog"]["streams"]]
        self.assertEqual(names, ["airbyte_heartbeat", "users"])
        self.assertIn("email", disc["catalog"]["streams"][1]["stream"]
                      ["jsonSchema"]["properties"])
        self.assertTrue(disc["jobInfo"]["succeeded"])
        self.assertEqual(self.call("POST", "/api/v1/sources/discover_schema",
                                   {"sourceId": "x", "disable_cache": True},
                                   auth)[0], 404)
        raw = json.dumps(body, indent=1)
        status, _, conn = self.call("PATCH", patch, raw,
                                    dict(auth, **{"Content-Type":
                                                  "application/json"}))
        self.assertEqual(status, 200, conn)
        self.assertEqual(conn["configurations"], body["configurations"])
        seen = self.control("GET", "/_fake/airbyte/connection")
        self.assertEqual(seen["last_patch_raw"], raw)
        self.assertEqual(seen["configurations"], body["configurations"])
        # new column in the source: rejected until rediscovered
        self.control("POST", "/_fake/airbyte/source_catalog",
                     {"tables": {"users": ["id", "name", "email", "phone"]}})
        stream["selectedFields"].append({"fieldPath": ["phone"]})
        status, _, err = self.call("PATCH", patch, body, auth)
        self.assertEqual(status, 400)
        self.assertTrue(err["data"]["message"].startswith(
            "Invalid fields selected for stream users."), err)
        self.discover(auth)
        self.assertEqual(self.call("PATCH", patch, body, auth)[0], 200)
        # primary key not selected, bad sync mode, wrong content type
        bad = json.loads(json.dumps(body))
        bad["configurations"]["streams"][0]["primaryKey"] = [["email"]]
        self.assertEqual(self.call("PATCH", patch, bad, auth)[0], 400)
        bad = json.loads(json.dumps(body))
        bad["configurations"]["streams"][0]["syncMode"] = "incremental"
        self.assertEqual(self.call("PATCH", patch, bad, auth)[0], 400)
        self.assertEqual(self.call("PATCH", patch, json.dumps(body), dict(
            auth, **{"Content-Type": "text/plain"}))[0], 415)
        # also_cache sets both catalogs
        cat = self.control("POST", "/_fake/airbyte/source_catalog",
                           {"tables": {"a": ["id"]}, "also_cache": True})
        self.assertEqual(cat["cached"], {"a": ["id"], "airbyte_heartbeat":
                                         ["id", "last_heartbeat"]})

    # ---------------------------------------------- the connection model

    def patch_users(self, auth, fields, extra=None):
        stream = {"name": "users", "syncMode": "incremental_append",
                  "cursorField": ["_ab_cdc_lsn"], "primaryKey": [["id"]],
                  "selectedFields": [{"fieldPath": [f]} for f in fields]}
        body = {"configurations": {"streams": [stream]}}
        body.update(extra or {})
        return self.call("PATCH", "/api/public/v1/connections/" + CONN, body,
                         auth)

    def selected(self, conn, name):
        for st in conn["configurations"]["streams"]:
            if st["name"] == name:
                return [sf["fieldPath"][0] for sf in st["selectedFields"]]
        return None

    def test_schema_propagation(self):
        auth = self.airbyte_token()
        self.control("POST", "/_fake/airbyte/source_catalog",
                     {"tables": {"users": ["id", "name"]}})
        self.discover(auth)
        status, _, conn = self.patch_users(auth, ["_ab_cdc_lsn", "id"])
        self.assertEqual((status, conn["nonBreakingSchemaUpdatesBehavior"]),
                         (200, "ignore"))
        # ignore: a new column stays out at the schema check
        self.control("POST", "/_fake/airbyte/source_catalog",
                     {"tables": {"users": ["id", "name", "nino"],
                                 "secrets": ["id", "pin"]}})
        conn = self.control("POST", "/_fake/airbyte/schema_check")
        self.assertEqual(self.selected(conn, "users"), ["_ab_cdc_lsn", "id"])
        # propagate_columns: new column of a selected stream, no new stream
        status, _, conn = self.call(
            "PATCH", "/api/public/v1/connections/" + CONN,
            {"nonBreakingSchemaUpdatesBehavior": "propagate_columns"}, auth)
        self.assertEqual(conn["nonBreakingSchemaUpdatesBehavior"],
                         "propagate_columns")
        conn = self.control("POST", "/_fake/airbyte/schema_check")
        self.assertEqual(self.selected(conn, "users"),
                         ["_ab_cdc_lsn", "id", "nino"])
        self.assertIsNone(self.selected(conn, "secrets"))
        # propagate_fully at the start of a sync job: the new table too
        self.control("POST", "/_fake/airbyte/source_catalog",
                     {"tables": {"users": ["id", "name", "nino"],
                                 "secrets": ["id", "pin"],
                                 "more": ["id", "x"]}})
        self.control("POST", "/_fake/airbyte/connection_model",
                     {"nonBreakingSchemaUpdatesBehavior": "propagate_fully"})
        self.control("POST", "/_fake/airbyte/jobs", {"status": "succeeded"})
        conn = self.control("GET", "/_fake/airbyte/connection")
        self.assertEqual(self.selected(conn, "more"),
                         ["_ab_cdc_lsn", "_ab_cdc_deleted_at",
                          "_ab_cdc_updated_at", "id", "x"])
        self.assertIsNone(self.selected(conn, "secrets"),
                          "secrets was already known at the last check")
        self.assertEqual(conn["schema_checks"], 3)
        status, _, err = self.call(
            "PATCH", "/api/public/v1/connections/" + CONN,
            {"nonBreakingSchemaUpdatesBehavior": "sometimes"}, auth)
        self.assertEqual(status, 400)

    def test_disabled_after_failed_jobs(self):
        auth = self.airbyte_token()
        self.control("POST", "/_fake/config", {"airbyte_version": "1.2.0"})
        for _ in range(19):
            self.control("POST", "/_fake/airbyte/jobs",
                         {"status": "failed"})
        conn = self.control("GET", "/_fake/airbyte/connection")
        self.assertEqual(conn["status"], "active")
        self.control("POST", "/_fake/airbyte/jobs", {"status": "failed"})
        conn = self.control("GET", "/_fake/airbyte/connection")
        self.assertEqual(conn["status"], "inactive", "20 failures up to 1.2")
        status, _, err = self.call("POST", "/api/public/v1/jobs",
                                   {"connectionId": CONN, "jobType": "sync"},
                                   auth)
        self.assertEqual(status, 400)
        self.assertIn("active connection", json.dumps(err))
        # stays disabled after a success until PATCHed back to active
        self.control("POST", "/_fake/airbyte/jobs", {"status": "succeeded"})
        self.assertEqual(self.control("GET", "/_fake/airbyte/connection")
                         ["status"], "inactive")
        status, _, conn = self.call("PATCH", "/api/public/v1/connections/"
                                    + CONN, {"status": "active"}, auth)
        self.assertEqual((status, conn["status"]), (200, "active"))
        # 1.8+: 30; the limit is configurable for tests
        self.control("POST", "/_fake/config", {"airbyte_version": "1.8.0"})
        for _ in range(29):
            self.control("POST", "/_fake/airbyte/jobs", {"status": "failed"})
        self.assertEqual(self.control("GET", "/_fake/airbyte/connection")
                         ["status"], "active")
        self.control("POST", "/_fake/config", {"disable_after_failed_jobs": 3})
        self.assertEqual(self.control("GET", "/_fake/airbyte/connection")
                         ["status"], "inactive")

    def test_field_limit(self):
        auth = self.airbyte_token()
        self.control("POST", "/_fake/airbyte/source_catalog",
                     {"tables": {"users": ["id", "a", "b", "c"]}})
        self.discover(auth)
        self.control("POST", "/_fake/config", {"max_fields_per_connection": 4})
        self.assertEqual(self.patch_users(auth, ["_ab_cdc_lsn", "id", "a",
                                                 "b"])[0], 200)
        status, _, err = self.patch_users(auth, ["_ab_cdc_lsn", "id", "a",
                                                 "b", "c"])
        self.assertEqual(status, 400)
        self.assertIn("Total number of selected fields (5) is greater than "
                      "the limit (4)", json.dumps(err))
        conn = self.control("GET", "/_fake/airbyte/connection")
        self.assertEqual(len(self.selected(conn, "users")), 4, "unchanged")

    def test_saved_state(self):
        auth = self.airbyte_token()
        status, _, st = self.call("POST", "/api/v1/state/get",
                                  {"connectionId": CONN}, auth)
        self.assertEqual((status, st["stateType"]), (200, "not_set"))
        self.control("POST", "/_fake/airbyte/saved_state", {"lsn": 23897640})
        status, _, st = self.call("POST", "/api/v1/state/get",
                                  {"connectionId": CONN}, auth)
        offset = st["globalState"]["shared_state"]["state"]
        value = json.loads(list(offset.values())[0])
        self.assertEqual((st["stateType"], value["lsn"]), ("global", 23897640))
        self.control("POST", "/_fake/airbyte/saved_state",
                     {"stateType": "legacy"})
        status, _, st = self.call("POST", "/api/v1/state/get",
                                  {"connectionId": CONN}, auth)
        self.assertEqual(st["stateType"], "legacy")
        self.assertIn("cdc_state", st["state"])
        self.assertEqual(self.call("POST", "/api/v1/state/get",
                                   {"connectionId": "x"}, auth)[0], 404)
        self.assertEqual(self.call("POST", "/api/v1/state/get",
                                   {"connectionId": CONN})[0], 401)

    def test_airbyte_jobs(self):
        auth = self.airbyte_token()
        old = self.control("POST", "/_fake/airbyte/jobs",
                           {"status": "succeeded"})
        status, _, job = self.call("POST", "/api/public/v1/jobs",
                                   {"connectionId": CONN, "jobType": "sync"},
                                   auth)
        self.assertEqual((status, job["status"], job["jobType"]),
                         (200, "pending", "sync"))
        status, _, err = self.call("POST", "/api/public/v1/jobs",
                                   {"connectionId": CONN, "jobType": "sync"},
                                   auth)
        self.assertEqual((status, err["data"]["message"], err["title"],
                          err["detail"]),
                         (409, "A sync is already running for: " + CONN,
                          "try-again-later", "Please try again later."))
        self.assertEqual(self.call("POST", "/api/public/v1/jobs",
                                   {"connectionId": CONN,
                                    "jobType": "refresh"}, auth)[0], 422)
        q = "/api/public/v1/jobs?connectionId=%s&jobType=sync&limit=1" % CONN
        # default order is ascending: the old job; DESC: the new one
        self.assertEqual(self.call("GET", q, headers=auth)[2]["data"][0]
                         ["jobId"], old["jobId"])
        status, _, page = self.call("GET", q + "&orderBy=createdAt%7CDESC",
                                    headers=auth)
        self.assertEqual(page["data"][0]["jobId"], job["jobId"])
        self.assertIn("next", page)
        jp = "/api/public/v1/jobs/%d" % job["jobId"]
        statuses = set()
        deadline = time.time() + 3
        while time.time() < deadline:
            statuses.add(self.call("GET", jp, headers=auth)[2]["status"])
            if "succeeded" in statuses:
                break
            time.sleep(0.05)
        self.assertEqual(statuses, {"pending", "running", "succeeded"})
        self.assertEqual(self.call("GET", "/api/public/v1/jobs/999999",
                                   headers=auth)[0], 404)
        # refresh through the config API, listed with jobType refresh
        status, _, ref = self.call("POST", "/api/v1/connections/refresh",
                                   {"connectionId": CONN,
                                    "refreshMode": "Merge"}, auth)
        self.assertEqual((status, ref["job"]["status"],
                          ref["job"]["configType"]),
                         (200, "pending", "refresh"))
        listed = self.call("GET", "/api/public/v1/jobs?jobType=refresh",
                           headers=auth)[2]["data"]
        self.assertEqual([j["jobId"] for j in listed], [ref["job"]["id"]])
        # a frozen running job blocks new syncs until moved on
        self.control("POST", "/_fake/reset")
        frozen = self.control("POST", "/_fake/airbyte/jobs",
                              {"status": "running", "frozen": True})
        auth = self.airbyte_token()
        time.sleep(0.6)
        self.assertEqual(self.call("GET", "/api/public/v1/jobs/%d"
                                   % frozen["jobId"], headers=auth)[2]
                         ["status"], "running")
        self.assertEqual(self.call("POST", "/api/public/v1/jobs",
                                   {"connectionId": CONN, "jobType": "sync"},
                                   auth)[0], 409)
        self.control("POST", "/_fake/airbyte/jobs/%d" % frozen["jobId"],
                     {"status": "failed"})
        status, _, job = self.call("POST", "/api/public/v1/jobs",
                                   {"connectionId": CONN, "jobType": "sync"},
                                   auth)
        self.assertEqual(status, 200)
        # cancelled through the public API
        status, _, job = self.call("DELETE", "/api/public/v1/jobs/%d"
                                   % job["jobId"], headers=auth)
        self.assertEqual((status, job["status"]), (200, "cancelled"))
        # a control-created running job progresses to the final status
        job = self.control("POST", "/_fake/airbyte/jobs",
                           {"status": "running", "running_seconds": 0.1})
        time.sleep(0.2)
        self.assertEqual(self.call("GET", "/api/public/v1/jobs/%d"
                                   % job["jobId"], headers=auth)[2]["status"],
                         "succeeded")
        rec = self.control("GET", "/_fake/requests")["requests"][-1]
        self.assertEqual(rec["headers"]["authorization"],
                         auth["Authorization"])

    # ------------------------------------------------ Airbyte per version

    def legacy_token(self):
        status, _, data = self.call("POST", "/api/v1/applications/token",
                                    {"client_id": "test-client",
                                     "client_secret": "test-secret-value"})
        self.assertEqual(status, 200, data)
        return {"Authorization": "Bearer " + data["access_token"]}

    def version(self, v):
        self.control("POST", "/_fake/config", {"airbyte_version": v})

    def refresh(self, auth):
        return self.call("POST", "/api/v1/connections/refresh",
                         {"connectionId": CONN, "refreshMode": "Merge"}, auth)

    def test_versions_token_and_instance_configuration(self):
        self.version("0.60")
        status, _, _ = self.call("POST", "/api/public/v1/applications/token",
                                 {"client_id": "test-client",
                                  "client_secret": "test-secret-value",
                                  "grant-type": "client_credentials"})
        self.assertEqual(status, 401)   # not 404: Micronaut Security
        auth = self.legacy_token()
        self.assertEqual(self.call("GET", "/api/public/v1/connections/" + CONN,
                                   headers=auth)[0], 200)
        status, _, conf = self.call("GET", "/api/v1/instance_configuration")
        self.assertEqual((status, conf["version"], conf["edition"]),
                         (200, "0.60.1", "community"))
        self.version("1.8")
        self.airbyte_token()
        self.assertEqual(self.call("GET", "/api/v1/instance_configuration")
                         [2]["version"], "1.8.0")

    def test_refresh_answers_per_version(self):
        for v, shape in (("1.1", "value"), ("1.2", "job"), ("2.x", "job")):
            self.control("POST", "/_fake/reset")
            self.version(v)
            auth = self.airbyte_token()
            status, _, ans = self.refresh(auth)
            self.assertEqual(status, 200, (v, ans))
            if shape == "value":
                self.assertEqual(ans, {"value": True})
            else:
                self.assertEqual((ans["job"]["configType"],
                                  sorted(ans["job"])),
                                 ("refresh", ["configId", "configType",
                                              "createdAt", "id", "status",
                                              "updatedAt"]))
            # a job runs now: still 200, never 409
            status, _, ans = self.refresh(auth)
            self.assertEqual((status, ans),
                             (200, {"value": True} if shape == "value"
                              else {"job": None}), v)
            # the second accepted call saved rows again: the NEXT job
            # created (a scheduled sync) becomes a second refresh
            jobs = self.control("GET", "/_fake/airbyte/jobs")["jobs"]
            self.control("POST", "/_fake/airbyte/jobs/%d" % jobs[-1]["jobId"],
                         {"status": "succeeded"})
            nxt = self.control("POST", "/_fake/airbyte/jobs", {})
            self.assertEqual(nxt["jobType"], "refresh", v)
            stats = self.control("GET", "/_fake/stats")
            self.assertEqual((stats["refresh_requests_accepted"],
                              stats["refresh_jobs_created"]), (2, 2), v)
            # the sync after that is a plain sync again
            self.control("POST", "/_fake/airbyte/jobs/%d" % nxt["jobId"],
                         {"status": "succeeded"})
            self.assertEqual(self.control("POST", "/_fake/airbyte/jobs",
                                          {})["jobType"], "sync")
            # a destination without refreshes
            self.control("POST", "/_fake/reset")
            self.version(v)
            self.control("POST", "/_fake/config", {"supports_refreshes": False})
            auth = self.airbyte_token()
            self.assertEqual(self.refresh(auth)[2],
                             {"value": False} if shape == "value"
                             else {"job": None})
            self.assertNotIn("refresh_requests_accepted",
                             self.control("GET", "/_fake/stats"))

    def test_manual_sync_consumes_refresh_rows(self):
        auth = self.airbyte_token()
        running = self.control("POST", "/_fake/airbyte/jobs",
                               {"status": "running", "frozen": True})
        self.assertEqual(self.refresh(auth)[2], {"job": None})
        self.control("POST", "/_fake/airbyte/jobs/%d" % running["jobId"],
                     {"status": "succeeded"})
        status, _, job = self.call("POST", "/api/public/v1/jobs",
                                   {"connectionId": CONN, "jobType": "sync"},
                                   auth)
        self.assertEqual((status, job["jobType"]), (200, "refresh"))
        # 409 for a running job of any type
        status, _, err = self.call("POST", "/api/public/v1/jobs",
                                   {"connectionId": CONN, "jobType": "sync"},
                                   auth)
        self.assertEqual((status, err["data"]["message"]),
                         (409, "A sync is already running for: " + CONN))

    def test_jobs_lists_per_version(self):
        for v in ("0.60", "1.1", "1.2", "1.8", "2.x"):
            self.control("POST", "/_fake/reset")
            self.version(v)
            auth = self.airbyte_token() if v != "0.60" else self.legacy_token()
            self.control("POST", "/_fake/airbyte/jobs", {"status": "succeeded"})
            self.control("POST", "/_fake/airbyte/jobs",
                         {"jobType": "refresh", "status": "running",
                          "frozen": True})
            status, _, page = self.call(
                "GET", "/api/public/v1/jobs?connectionId=%s&orderBy=createdAt"
                "%%7CDESC" % CONN, headers=auth)
            types = [j["jobType"] for j in page["data"]]
            self.assertEqual(types, ["refresh", "sync"]
                             if v in ("1.8", "2.x") else ["sync"], v)
            status, _, _ = self.call(
                "GET", "/api/public/v1/jobs?jobType=refresh", headers=auth)
            self.assertEqual(status, 400 if v == "0.60" else 200, v)
            # the config API lists every type, newest first
            status, _, lst = self.call(
                "POST", "/api/v1/jobs/list",
                {"configTypes": ["sync", "reset_connection", "refresh"],
                 "configId": CONN}, auth)
            self.assertEqual(status, 200, lst)
            self.assertEqual([(j["job"]["configType"], j["job"]["status"])
                              for j in lst["jobs"]],
                             [("refresh", "running"), ("sync", "succeeded")])
            self.assertEqual(lst["totalJobCount"], 2)
            self.assertIsInstance(lst["jobs"][0]["job"]["createdAt"], int)
            self.assertEqual(lst["jobs"][0]["attempts"], [])
            status, _, err = self.call("POST", "/api/v1/jobs/list",
                                       {"configId": CONN}, auth)
            self.assertEqual(status, 400)
            self.assertIn("configTypes", err["message"])

    def test_tables_without_primary_key(self):
        auth = self.airbyte_token()
        self.control("POST", "/_fake/airbyte/source_catalog",
                     {"tables": {"users": ["id", "name"],
                                 "roles_users": ["role_id", "user_id"]},
                      "no_primary_key": ["roles_users"]})
        disc = {s["stream"]["name"]: s["stream"]
                for s in self.discover(auth)[2]["catalog"]["streams"]}
        ru = disc["roles_users"]
        self.assertEqual(ru["supportedSyncModes"], ["full_refresh"])
        self.assertNotIn("sourceDefinedCursor", ru)
        self.assertEqual(sorted(ru["jsonSchema"]["properties"]),
                         ["role_id", "user_id"])
        self.assertEqual(disc["users"]["supportedSyncModes"],
                         ["full_refresh", "incremental"])
        self.assertIn("_ab_cdc_lsn", disc["users"]["jsonSchema"]["properties"])
        patch = "/api/public/v1/connections/" + CONN
        users = {"name": "users", "syncMode": "incremental_append",
                 "cursorField": ["_ab_cdc_lsn"], "primaryKey": [["id"]],
                 "selectedFields": [{"fieldPath": [f]} for f in
                                    ("_ab_cdc_lsn", "_ab_cdc_deleted_at",
                                     "_ab_cdc_updated_at", "id")]}
        gem = {"name": "roles_users", "syncMode": "incremental_append",
               "cursorField": ["_ab_cdc_lsn"], "primaryKey": [["role_id"]],
               "selectedFields": [{"fieldPath": [f]} for f in
                                  ("_ab_cdc_lsn", "role_id", "user_id")]}
        before = self.control("GET", "/_fake/airbyte/connection")
        status, _, err = self.call("PATCH", patch, {"configurations": {
            "streams": [users, gem]}}, auth)
        self.assertEqual(status, 400)
        self.assertTrue(err["data"]["message"].startswith(
            "Invalid fields selected for stream roles_users"), err)
        gem2 = dict(gem, selectedFields=[{"fieldPath": ["role_id"]}],
                    cursorField=None)
        status, _, err = self.call("PATCH", patch, {"configurations": {
            "streams": [users, gem2]}}, auth)
        self.assertEqual((status, err["data"]["message"]), (400,
                         "Cannot set sync mode to INCREMENTAL_APPEND for "
                         "stream roles_users. Valid sync modes are: "
                         "[FULL_REFRESH_OVERWRITE, FULL_REFRESH_APPEND]"))
        # the whole PATCH was rejected: users did not change either
        self.assertEqual(self.control("GET", "/_fake/airbyte/connection")
                         ["configurations"], before["configurations"])
        good = {"name": "roles_users", "syncMode": "full_refresh_overwrite",
                "selectedFields": [{"fieldPath": ["role_id"]},
                                   {"fieldPath": ["user_id"]}]}
        status, _, conn = self.call("PATCH", patch, {"configurations": {
            "streams": [users, good]}}, auth)
        self.assertEqual(status, 200, conn)

    def test_selected_fields_ignored_before_0_60_1(self):
        self.version("0.59.0")
        auth = self.legacy_token()
        self.control("POST", "/_fake/airbyte/source_catalog",
                     {"tables": {"users": ["id", "email"]}})
        self.discover(auth)
        status, _, conn = self.call(
            "PATCH", "/api/public/v1/connections/" + CONN,
            {"configurations": {"streams": [
                {"name": "users", "syncMode": "full_refresh_overwrite",
                 "selectedFields": [{"fieldPath": ["id"]}]}]}}, auth)
        self.assertEqual(status, 200)
        self.assertNotIn("selectedFields",
                         conn["configurations"]["streams"][0])

    def test_fault_accept_then_lose_answer(self):
        auth = self.airbyte_token()
        for kind in ("accept_reset", "accept_hang"):
            self.control("POST", "/_fake/reset")
            auth = self.airbyte_token()
            self.control("POST", "/_fake/faults", {"rules": [
                {"path": "^/api/v1/connections/refresh$", "kind": kind}]})
            with self.assertRaises((ConnectionError, OSError,
                                    http.client.HTTPException)):
                self.call("POST", "/api/v1/connections/refresh",
                          {"connectionId": CONN, "refreshMode": "Merge"},
                          auth, timeout=1)
            stats = self.control("GET", "/_fake/stats")
            self.assertEqual((stats["refresh_requests_accepted"],
                              stats["refresh_jobs_created"]), (1, 1), kind)
            rec = [r for r in self.control("GET", "/_fake/requests")
                   ["requests"] if r["path"] == "/api/v1/connections/refresh"]
            self.assertEqual((rec[-1]["accepted_status"], rec[-1]["fault"]),
                             (200, kind))

    def test_job_progress(self):
        # rowsSynced/bytesSynced per job, set at creation and updated alone
        auth = self.airbyte_token()
        job = self.control("POST", "/_fake/airbyte/jobs",
                           {"status": "running", "frozen": True,
                            "rowsSynced": 10, "bytesSynced": 1000})
        self.assertEqual((job["rowsSynced"], job["bytesSynced"]), (10, 1000))
        self.control("POST", "/_fake/airbyte/jobs/%d" % job["jobId"],
                     {"rowsSynced": 25})
        got = self.call("GET", "/api/public/v1/jobs/%d" % job["jobId"],
                        headers=auth)[2]
        self.assertEqual((got["status"], got["rowsSynced"],
                          got["bytesSynced"]), ("running", 25, 1000))
        # neither status nor progress: still a 400
        self.assertEqual(self.call("POST", "/_fake/airbyte/jobs/%d"
                                   % job["jobId"], {})[0], 400)
        other = self.control("POST", "/_fake/airbyte/jobs",
                             {"status": "succeeded"})
        self.assertEqual(other["rowsSynced"], 0)

    def test_job_final_status(self):
        self.control("POST", "/_fake/config", {"job_final_status": "failed",
                                               "job_pending_seconds": 0,
                                               "job_running_seconds": 0.1})
        auth = self.airbyte_token()
        job = self.call("POST", "/api/public/v1/jobs",
                        {"connectionId": CONN, "jobType": "sync"}, auth)[2]
        time.sleep(0.2)
        self.assertEqual(self.call("GET", "/api/public/v1/jobs/%d"
                                   % job["jobId"], headers=auth)[2]["status"],
                         "failed")


if __name__ == "__main__":
    unittest.main()
