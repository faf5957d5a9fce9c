"""Self-test of the fake BigQuery (bigquery.py)."""

import json
import time
import unittest

import bigquery_jobs
import selftest
from selftest import BQ, TAG


class BigQueryTest(selftest.FakeServerTest):

    def test_bigquery(self):
        schema = {"fields": [
            {"name": "id", "type": "INTEGER", "mode": "REQUIRED"},
            {"name": "email", "type": "STRING", "description": "mail"},
            {"name": "addr", "type": "RECORD", "fields": [
                {"name": "street", "type": "STRING"}]}]}
        self.control("POST", "/_fake/bigquery/tables", {"tables": [
            {"project": "p", "dataset": "d", "table": "users",
             "schema": schema}]})
        self.assertEqual(self.call("GET", BQ + "users")[0], 401)
        auth = self.google_token()
        status, _, t = self.call("GET", BQ + "users", headers=auth)
        self.assertEqual((status, t["id"], t["schema"]),
                         (200, "p:d.users", schema))
        status, _, err = self.call("GET", BQ + "nope", headers=auth)
        self.assertEqual((status, err["error"]["message"]),
                         (404, "Not found: Table p:d.nope"))
        new = json.loads(json.dumps(schema))
        new["fields"][1]["policyTags"] = {"names": [TAG]}
        # wrong etag -> 412, none -> 412
        status, _, err = self.call("PATCH", BQ + "users", {"schema": new},
                                   dict(auth, **{"If-Match": "stale"}))
        self.assertEqual((status, err["error"]["status"]),
                         (412, "FAILED_PRECONDITION"))
        self.assertEqual(self.call("PATCH", BQ + "users", {"schema": new},
                                   auth)[0], 412)
        # a nested field missing -> 400 naming it
        partial = json.loads(json.dumps(new))
        partial["fields"][2]["fields"] = []
        status, _, err = self.call("PATCH", BQ + "users", {"schema": partial},
                                   dict(auth, **{"If-Match": t["etag"]}))
        self.assertEqual(status, 400)
        self.assertIn("Field addr.street is missing in new schema",
                      err["error"]["message"])
        two = json.loads(json.dumps(new))
        two["fields"][1]["policyTags"]["names"].append(TAG + "9")
        self.assertEqual(self.call("PATCH", BQ + "users", {"schema": two},
                                   dict(auth, **{"If-Match": t["etag"]}))[0],
                         400)
        status, _, t2 = self.call("PATCH", BQ + "users", {"schema": new},
                                  dict(auth, **{"If-Match": t["etag"]}))
        self.assertEqual((status, t2["schema"]), (200, new))
        self.assertNotEqual(t2["etag"], t["etag"])
        stored = self.control("GET", "/_fake/bigquery/table?project=p&"
                              "dataset=d&table=users")
        self.assertEqual((stored["schema"], stored["etag"]),
                         (new, t2["etag"]))
        self.assertEqual(self.control("DELETE", "/_fake/bigquery/table?"
                                      "project=p&dataset=d&table=users"),
                         {"dropped": True})
        self.assertEqual(self.call("GET", BQ + "users", headers=auth)[0], 404)
        # expired impersonated token -> 401
        self.control("POST", "/_fake/config", {"impersonate_expires_in": 0})
        self.assertEqual(self.call("GET", BQ + "users",
                                   headers=self.google_token())[0], 401)

    def test_bigquery_rate_limit(self):
        self.control("POST", "/_fake/config", {"bq_table_update_limit": 2,
                                               "bq_table_update_window_s": 1.0})
        self.control("POST", "/_fake/bigquery/tables", {"tables": [
            {"project": "p", "dataset": "d", "table": "t", "schema": {
                "fields": [{"name": "id", "type": "INTEGER"}]}}]})
        auth = self.google_token()
        t = self.call("GET", BQ + "t", headers=auth)[2]
        body = {"schema": t["schema"]}
        # an outside update (Airbyte's) counts in the window too
        self.control("POST", "/_fake/bigquery/table/update?project=p&"
                     "dataset=d&table=t", {})
        t = self.call("GET", BQ + "t", headers=auth)[2]
        status, _, t = self.call("PATCH", BQ + "t", body,
                                 dict(auth, **{"If-Match": t["etag"]}))
        self.assertEqual(status, 200)
        status, _, err = self.call("PATCH", BQ + "t", body,
                                   dict(auth, **{"If-Match": t["etag"]}))
        self.assertEqual(status, 403)
        self.assertEqual(err["error"]["errors"][0]["reason"],
                         "rateLimitExceeded")
        self.assertEqual(err["error"]["errors"][0]["domain"], "usageLimits")
        self.assertIn("too many table update operations for this table",
                      err["error"]["message"])
        time.sleep(1.1)
        self.assertEqual(self.call("PATCH", BQ + "t", body,
                                   dict(auth, **{"If-Match": t["etag"]}))[0],
                         200)
        stored = self.control("GET", "/_fake/bigquery/table?project=p&"
                              "dataset=d&table=t")
        self.assertEqual(stored["rate_limited"], 1)
        self.assertGreaterEqual(int(stored["lastModifiedTime"]),
                                int(stored["creationTime"]))


@unittest.skipIf(bigquery_jobs.sqlglot is None, "python3-sqlglot is not installed")
class BigQueryTranspileTest(unittest.TestCase):
    """The GoogleSQL rewrite of test/fake/bigquery_jobs.py, without a database."""

    def pg(self, sql):
        return bigquery_jobs.transpile(sql)[0]

    def refused(self, sql, text):
        with self.assertRaises(bigquery_jobs.QueryError) as cm:
            bigquery_jobs.transpile(sql)
        self.assertEqual(cm.exception.reason, "invalidQuery")
        self.assertIn(text, cm.exception.message)

    def test_tables_and_columns(self):
        sql, tables, cols = bigquery_jobs.transpile(
            "SELECT id, name FROM `proj.ds.t` WHERE id > 1")
        self.assertIn('"ds"."t"', sql)
        self.assertEqual(tables, {("ds", "t")})
        self.assertEqual(cols, {"id", "name"})

    def test_unqualified_table(self):
        self.refused("SELECT 1 FROM t", "must be qualified with a dataset")

    def test_qualify_needs_where(self):
        self.refused("SELECT id FROM `p.d.t` QUALIFY ROW_NUMBER() OVER "
                     "(PARTITION BY id) = 1", "QUALIFY clause must be used")
        sql = self.pg("SELECT id FROM `p.d.t` WHERE TRUE QUALIFY ROW_NUMBER() "
                      "OVER (PARTITION BY id ORDER BY l DESC) = 1")
        self.assertIn("_bq_qualify", sql)
        self.assertNotIn("QUALIFY", sql.upper().replace("_BQ_QUALIFY", ""))

    def test_functions_become_bq_fake(self):
        sql = self.pg("SELECT TO_HEX(MD5(CONCAT('a', b))), DIV(c, 2), "
                      "COUNTIF(d), CAST(e AS INT64), CAST(f AS STRING) "
                      "FROM `p.d.t` WHERE TRUE").lower()
        for fn in ("bq_fake.to_hex(bq_fake.md5((bq_fake.str_arg(", "bq_fake.div(",
                   "bq_fake.countif(", "bq_fake.int64(", "bq_fake.string("):
            self.assertIn(fn, sql)

    def test_timestamp_types(self):
        sql = self.pg("SELECT CAST(a AS TIMESTAMP), CAST(b AS DATETIME) "
                      "FROM `p.d.t` WHERE TRUE").upper()
        self.assertIn("AS TIMESTAMPTZ)", sql)
        self.assertIn("AS TIMESTAMP)", sql)

    def test_legacy_sql_refused(self):
        status, body = bigquery_jobs.Jobs().query(
            "p", {"query": "SELECT 1 FROM `p.d.t`"}, {}, lambda d, t: {})
        self.assertEqual(status, 400)
        self.assertEqual(body["error"]["errors"][0]["reason"], "invalidQuery")


if __name__ == "__main__":
    unittest.main()
