"""Self-test of the fake Azure AD and token proxy (azure.py)."""

import unittest
import urllib.parse

import selftest


class AzureTest(selftest.FakeServerTest):

    def test_azure_and_proxy(self):
        self.control("POST", "/_fake/config", {
            "azure_client_id": "az-client", "federated_token": "fed-jwt",
            "proxy_token": "px", "proxy_required_headers": {"X-Key": "k"}})
        form = {"grant_type": "client_credentials", "client_id": "az-client",
                "scope": "api://AzureADTokenExchange/.default",
                "client_assertion_type":
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": "fed-jwt"}
        fh = {"Content-Type": "application/x-www-form-urlencoded"}
        path = "/tenant-1/oauth2/v2.0/token"
        status, _, data = self.call("POST", path,
                                    urllib.parse.urlencode(form), fh)
        self.assertEqual(status, 200, data)
        self.assertTrue(data["access_token"].startswith("azure-"))
        for key, value, want in (("client_assertion", "other", 401),
                                 ("client_id", "other", 400),
                                 ("scope", "x", 400)):
            status, _, data = self.call("POST", path, urllib.parse.urlencode(
                dict(form, **{key: value})), fh)
            self.assertEqual(status, want, key)
            self.assertIn("error", data)
        self.assertEqual(self.call("GET", "/azure-token-proxy")[0], 401)
        self.assertEqual(self.call("GET", "/azure-token-proxy",
                                   headers={"X-Key": "k"})[2], "px")
        self.assertEqual(self.call("GET", "/azure-token-proxy.json",
                                   headers={"x-key": "k"})[2],
                         {"access_token": "px"})


if __name__ == "__main__":
    unittest.main()
