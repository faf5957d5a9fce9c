"""The fake Google token services: STS (token exchange of an outside
identity token) and IAM Credentials (generateAccessToken impersonating a
service account).  BigQuery accepts the tokens IAM hands out."""

import re
import time

from .common import (HTTPError, Reply, bearer_token, google_error, iso8601,
                     oauth_error, route, routes_of)

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"

# /v1/token (STS) and /v1/projects/-/serviceAccounts/... (IAM)
PREFIX = r"/v1/"

# Keys of /_fake/config. None means "accept any non-empty value".
CONFIG = {
    "sts_expected_audience": None,
    "sts_expected_subject_token_type": None,
    "sts_expected_subject_token": None,
    "impersonate_expires_in": 3600,
    "service_account": "airbyte@proj.iam.gserviceaccount.com",
}


class GoogleAuthState:
    """STS's and IAM's part of the fake's State."""

    def reset_service_state(self):
        super().reset_service_state()
        # token -> expiry (epoch seconds)
        self.google_sts_tokens = {}
        self.google_access_tokens = {}


class GoogleAuthAPI:
    """Route handlers of STS and IAM Credentials."""

    @route("POST", r"/v1/token")
    def google_sts(self):
        data = self.body_form_or_json()
        cfg = self.cfg

        def need(key, expected, error="invalid_request"):
            if expected is not None and data.get(key) != expected:
                raise oauth_error(400, error, "%s must be %s, got %s"
                                  % (key, expected, data.get(key)))
            if not data.get(key):
                raise oauth_error(400, error, "%s is required" % key)

        need("grant_type", TOKEN_EXCHANGE_GRANT, "unsupported_grant_type")
        need("audience", cfg["sts_expected_audience"], "invalid_target")
        scope = data.get("scope")
        scopes = scope if isinstance(scope, list) else str(scope or "").split()
        if CLOUD_PLATFORM_SCOPE not in scopes:
            raise oauth_error(400, "invalid_scope", "scope must include %s"
                              % CLOUD_PLATFORM_SCOPE)
        need("requested_token_type", ACCESS_TOKEN_TYPE)
        need("subject_token_type", cfg["sts_expected_subject_token_type"])
        # Any non-empty subject token is accepted (the request is recorded,
        # so tests can check which one was sent) unless one is configured.
        need("subject_token", cfg["sts_expected_subject_token"],
             "invalid_grant")
        token = "sts-%s-%d" % (self.state.nonce, self.state.next_n())
        with self.state.lock:
            self.state.google_sts_tokens[token] = time.time() + 3600
        return Reply(200, {"access_token": token,
                           "issued_token_type": ACCESS_TOKEN_TYPE,
                           "token_type": "Bearer", "expires_in": 3600})

    @route("POST", r"/v1/projects/-/serviceAccounts/([^/:]+):generateAccessToken",
           "/v1/projects/-/serviceAccounts/*:generateAccessToken")
    def google_impersonate(self, email):
        token = bearer_token(self.hdrs)
        with self.state.lock:
            exp = self.state.google_sts_tokens.get(token)
        if exp is None or exp <= time.time():
            raise google_error(401, "Request had invalid authentication "
                               "credentials. Expected OAuth 2 access token.",
                               "UNAUTHENTICATED")
        if email != self.cfg["service_account"]:
            raise google_error(403, "Permission 'iam.serviceAccounts."
                               "getAccessToken' denied on resource (or it may "
                               "not exist).", "PERMISSION_DENIED")
        try:
            data = self.body_json()
        except HTTPError:
            raise google_error(400, "Invalid JSON payload received.",
                               "INVALID_ARGUMENT")
        scope = data.get("scope")
        if not isinstance(scope, list) or CLOUD_PLATFORM_SCOPE not in scope:
            raise google_error(400, "scope must be a list including %s"
                               % CLOUD_PLATFORM_SCOPE, "INVALID_ARGUMENT")
        lifetime = data.get("lifetime")
        if lifetime is not None and \
                not re.fullmatch(r"\d+(\.\d+)?s", str(lifetime)):
            raise google_error(400, "Invalid value at 'lifetime'",
                               "INVALID_ARGUMENT")
        expires = time.time() + float(self.cfg["impersonate_expires_in"])
        token = "ya29.fake-%s-%d" % (self.state.nonce, self.state.next_n())
        with self.state.lock:
            self.state.google_access_tokens[token] = expires
        return Reply(200, {"accessToken": token,
                           "expireTime": iso8601(expires)})


ROUTES = routes_of(GoogleAuthAPI)
