#!/usr/bin/env python3
"""Self-test of the fake server (test/fake): every endpoint and every fault
kind, one test_*.py file per service.

Each file runs the server as a subprocess on a free port; standard library
only; takes a few seconds.  python3 test/fake/selftest.py [-v] runs them all;
python3 test/fake/test_bigquery.py [-v] runs one.  This file holds what the
tests share: starting the server and the client helpers.
"""

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = HERE  # the package directory: "python3 test/fake"

CONN = "11111111-1111-1111-1111-111111111111"
SOURCE = "22222222-2222-2222-2222-222222222222"
SA = "airbyte@proj.iam.gserviceaccount.com"
TAG = "projects/p/locations/eu/taxonomies/1/policyTags/2"
BQ = "/bigquery/v2/projects/p/datasets/d/tables/"


def start_server(tmp, *extra):
    port_file = os.path.join(tmp, "port")
    # the self-test picks versions itself (config key airbyte_version)
    env = {k: v for k, v in os.environ.items() if k != "DFE_AIRBYTE_PROFILE"}
    proc = subprocess.Popen([sys.executable, SERVER, "--host", "127.0.0.1",
                             "--port", "0", "--port-file", port_file]
                            + list(extra), env=env)
    deadline = time.time() + 10
    while not os.path.exists(port_file):
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError("fake server did not start")
        time.sleep(0.02)
    with open(port_file) as f:
        return proc, int(f.read())


def stop_server(proc):
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=10)


class FakeServerTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="fake-selftest-")
        cls.log = os.path.join(cls.tmp, "requests.log")
        cls.proc, cls.port = start_server(cls.tmp, "--log", cls.log)

    @classmethod
    def tearDownClass(cls):
        if cls.proc.poll() is None:
            stop_server(cls.proc)
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        self.control("POST", "/_fake/reset")
        self.control("POST", "/_fake/config", {"job_pending_seconds": 0.2,
                                               "job_running_seconds": 0.3})

    # ----------------------------------------------------------- helpers

    def call(self, method, path, body=None, headers=None, timeout=5,
             port=None):
        """-> (status, headers dict lower-case, parsed JSON or raw text)."""
        conn = http.client.HTTPConnection("127.0.0.1", port or self.port,
                                          timeout=timeout)
        hdrs = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
            hdrs.setdefault("Content-Type", "application/json")
        try:
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = data.decode()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, \
            parsed

    def control(self, method, path, body=None):
        status, _, data = self.call(method, path, body)
        self.assertLess(status, 300, data)
        return data

    def airbyte_token(self):
        status, _, data = self.call("POST", "/api/public/v1/applications/token",
                                    {"client_id": "test-client",
                                     "client_secret": "test-secret-value",
                                     "grant-type": "client_credentials"})
        self.assertEqual(status, 200, data)
        return {"Authorization": "Bearer " + data["access_token"]}

    def google_token(self):
        status, _, data = self.call("POST", "/v1/token", {
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "audience": "//iam.googleapis.com/x",
            "scope": "https://www.googleapis.com/auth/cloud-platform",
            "requested_token_type":
                "urn:ietf:params:oauth:token-type:access_token",
            "subject_token": "azure-1",
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt"})
        self.assertEqual(status, 200, data)
        status, _, data = self.call(
            "POST", "/v1/projects/-/serviceAccounts/%s:generateAccessToken"
            % SA, {"scope": ["https://www.googleapis.com/auth/cloud-platform"],
                   "lifetime": "3600s"},
            {"Authorization": "Bearer " + data["access_token"]})
        self.assertEqual(status, 200, data)
        return {"Authorization": "Bearer " + data["accessToken"]}

    def discover(self, auth, disable_cache=True):
        return self.call("POST", "/api/v1/sources/discover_schema",
                         {"sourceId": SOURCE, "disable_cache": disable_cache},
                         auth)


def main():
    """Run every test_*.py beside this file."""
    suite = unittest.defaultTestLoader.discover(HERE, pattern="test_*.py",
                                                top_level_dir=HERE)
    verbosity = 2 if "-v" in sys.argv[1:] else 1
    result = unittest.TextTestRunner(verbosity=verbosity).run(suite)
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
