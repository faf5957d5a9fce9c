"""Self-test of what every service shares: the control API (control.py),
fault injection (faults.py), concurrency, keep-alive, the log, TLS and a
clean exit (server.py, __main__.py)."""

import concurrent.futures
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.request

import selftest
from selftest import BQ, CONN, start_server, stop_server


class ServerTest(selftest.FakeServerTest):

    def test_control_config_and_reset(self):
        cfg = self.control("POST", "/_fake/config", {"token_expires_in": 5})
        self.assertEqual(cfg["token_expires_in"], 5)
        self.assertEqual(cfg["connection_id"], CONN)
        status, _, data = self.call("POST", "/_fake/config", {"nope": 1})
        self.assertEqual(status, 400)
        self.control("POST", "/_fake/reset")
        self.assertEqual(self.control("GET", "/_fake/config")
                         ["token_expires_in"], 180)
        self.assertEqual(self.call("GET", "/nowhere")[0], 404)

    def test_fault_status_and_recording(self):
        since = self.control("GET", "/_fake/requests")["next"]
        self.control("POST", "/_fake/faults", {"rules": [
            {"method": "GET", "path": r"^/api/public/v1/jobs$", "times": 2,
             "kind": "status", "status": 503, "retry_after": 1},
            {"path": "connections", "status": 429, "body": "slow down"}]})
        for _ in range(2):
            status, hdrs, body = self.call("GET", "/api/public/v1/jobs")
            self.assertEqual((status, hdrs.get("retry-after"), body),
                             (503, "1", {"message": "injected 503"}))
        self.assertEqual(self.call("GET", "/api/public/v1/jobs")[0], 401)
        self.assertEqual(self.call("GET", "/api/public/v1/connections/x")[:3:2],
                         (429, "slow down"))
        self.assertEqual(self.call("GET", "/api/public/v1/connections/x")[0],
                         401)
        got = self.control("GET", "/_fake/requests?since=%d" % since)
        self.assertEqual([r["status"] for r in got["requests"]],
                         [503, 503, 401, 429, 401])
        self.assertEqual(got["next"], got["requests"][-1]["seq"])
        self.assertEqual(self.control("GET", "/_fake/requests?since=%d"
                                      % got["next"])["requests"], [])
        stats = self.control("GET", "/_fake/stats")
        self.assertEqual(stats["GET /api/public/v1/jobs"], 3)
        self.assertEqual(stats["GET /api/public/v1/connections/*"], 2)
        # forever rule, then cleared
        self.control("POST", "/_fake/faults", {"rules": [
            {"path": "^/v1/token$", "times": None, "status": 500}]})
        for _ in range(3):
            self.assertEqual(self.call("POST", "/v1/token", {})[0], 500)
        self.control("DELETE", "/_fake/faults")
        self.assertEqual(self.call("POST", "/v1/token", {})[0], 400)

    def test_fault_latency_malformed_reset_hang(self):
        self.control("POST", "/_fake/faults", {"rules": [
            {"path": "latency", "kind": "latency", "latency_ms": 300},
            {"path": "malformed", "kind": "malformed"},
            {"path": "reset", "kind": "reset"},
            {"path": "hang", "kind": "hang"}]})
        t0 = time.time()
        self.assertEqual(self.call("GET", "/latency")[0], 404)
        self.assertGreaterEqual(time.time() - t0, 0.3)
        status, hdrs, body = self.call("GET", "/malformed")
        self.assertEqual((status, hdrs["content-type"], body),
                         (200, "application/json", '{"data": ['))
        with self.assertRaises((ConnectionResetError,
                                http.client.RemoteDisconnected)):
            self.call("GET", "/reset")
        with self.assertRaises((TimeoutError, socket.timeout)):
            self.call("GET", "/hang", timeout=0.5)
        reqs = self.control("GET", "/_fake/requests")["requests"]
        self.assertEqual([(r["path"], r.get("fault")) for r in reqs],
                         [("/latency", "latency"), ("/malformed", "malformed"),
                          ("/reset", "reset"), ("/hang", "hang")])
        self.assertEqual(reqs[2]["status"], None)

    def test_concurrency(self):
        self.control("POST", "/_fake/faults", {"rules": [
            {"path": "^/bigquery/", "kind": "latency", "latency_ms": 1000,
             "times": None}]})
        self.control("POST", "/_fake/bigquery/tables", {"tables": [
            {"project": "p", "dataset": "d", "table": "t%d" % i,
             "schema": {"fields": []}} for i in range(32)]})
        auth = self.google_token()
        t0 = time.time()
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            statuses = list(pool.map(
                lambda i: self.call("GET", BQ + "t%d" % i, headers=auth)[0],
                range(32)))
        self.assertEqual(statuses, [200] * 32)
        # serial would take 32 s; half of that leaves a slow machine room
        self.assertLess(time.time() - t0, 16)
        self.assertEqual(self.control("GET", "/_fake/stats")
                         ["GET /bigquery/v2/projects/*/datasets/*/tables/*"],
                         32)

    def test_keep_alive(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        for _ in range(3):
            conn.request("GET", "/_fake/ping")
            resp = conn.getresponse()
            self.assertEqual(resp.status, 200)
            resp.read()
        conn.close()

    def test_log_has_no_secrets(self):
        self.airbyte_token()
        # the server writes the log line after the answer: poll for it
        line = "POST /api/public/v1/applications/token 200"
        deadline = time.time() + 10
        while True:
            with open(self.log) as f:
                log = f.read()
            if line in log or time.time() > deadline:
                break
            time.sleep(0.05)
        self.assertIn(line, log)
        self.assertNotIn("test-secret-value", log)
        self.assertNotIn("Bearer", log)


class TLSAndShutdownTest(unittest.TestCase):

    def test_tls_and_clean_exit(self):
        if not shutil.which("openssl"):
            self.skipTest("openssl not installed")
        tmp = tempfile.mkdtemp(prefix="fake-selftest-tls-")
        try:
            cert, key = os.path.join(tmp, "c.pem"), os.path.join(tmp, "k.pem")
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048",
                            "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                            "-keyout", key, "-out", cert],
                           check=True, capture_output=True)
            cpf = os.path.join(tmp, "cport")
            proc, port = start_server(tmp, "--tls-cert", cert, "--tls-key", key,
                                      "--control-port-file", cpf)
            with open(cpf) as f:
                cport = int(f.read())
            url = "https://127.0.0.1:%d/_fake/ping" % port
            with self.assertRaises(urllib.error.URLError) as cm:
                urllib.request.urlopen(url, timeout=5)
            self.assertIsInstance(cm.exception.reason,
                                  ssl.SSLCertVerificationError)
            ctx = ssl.create_default_context(cafile=cert)
            ctx.check_hostname = False
            with urllib.request.urlopen(url, timeout=5, context=ctx) as r:
                self.assertEqual(json.load(r)["ok"], True)
            # the plain control port serves /_fake/ only
            with urllib.request.urlopen("http://127.0.0.1:%d/_fake/ping"
                                        % cport, timeout=5) as r:
                self.assertEqual(r.status, 200)
            conn = http.client.HTTPConnection("127.0.0.1", cport, timeout=5)
            conn.request("GET", "/v1/token")
            self.assertEqual(conn.getresponse().status, 404)
            conn.close()
            # a hanging request does not delay a clean SIGTERM exit
            req = urllib.request.Request(
                "http://127.0.0.1:%d/_fake/faults" % cport, method="POST",
                data=json.dumps({"rules": [{"path": "hang",
                                            "kind": "hang"}]}).encode(),
                headers={"Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=5).read()
            s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)))
            s.sendall(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.2)
            t0 = time.time()
            self.assertEqual(stop_server(proc), 0)
            self.assertLess(time.time() - t0, 5)
            s.close()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
