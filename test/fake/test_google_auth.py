"""Self-test of the fake Google STS and IAM (google_auth.py)."""

import unittest
import urllib.parse

import selftest
from selftest import SA


class GoogleAuthTest(selftest.FakeServerTest):

    def test_sts_impersonation(self):
        self.control("POST", "/_fake/config",
                     {"sts_expected_audience": "aud"})
        sts = {"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
               "audience": "aud",
               "scope": "https://www.googleapis.com/auth/cloud-platform",
               "requested_token_type":
                   "urn:ietf:params:oauth:token-type:access_token",
               "subject_token": "px",
               "subject_token_type": "urn:ietf:params:oauth:token-type:jwt"}
        status, _, data = self.call("POST", "/v1/token", sts)
        self.assertEqual(status, 200, data)
        sts_token = data["access_token"]
        # form-encoded is accepted too
        self.assertEqual(self.call("POST", "/v1/token",
                                   urllib.parse.urlencode(sts),
                                   {"Content-Type": "application/"
                                    "x-www-form-urlencoded"})[0], 200)
        status, _, data = self.call("POST", "/v1/token",
                                    dict(sts, audience="other"))
        self.assertEqual(status, 400)
        self.assertIn("error_description", data)
        iam = "/v1/projects/-/serviceAccounts/%s:generateAccessToken"
        body = {"scope": ["https://www.googleapis.com/auth/cloud-platform"],
                "lifetime": "3600s"}
        status, _, data = self.call("POST", iam % SA, body,
                                    {"Authorization": "Bearer " + sts_token})
        self.assertEqual(status, 200, data)
        self.assertTrue(data["accessToken"].startswith("ya29.fake-"))
        self.assertRegex(data["expireTime"],
                         r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertEqual(self.call("POST", iam % SA, body,
                                   {"Authorization": "Bearer nope"})[0], 401)
        status, _, data = self.call("POST", iam % "other@x", body,
                                    {"Authorization": "Bearer " + sts_token})
        self.assertEqual((status, data["error"]["status"]),
                         (403, "PERMISSION_DENIED"))


if __name__ == "__main__":
    unittest.main()
