"""The fake Azure AD token endpoint (client credentials with a federated
client assertion) and the token proxy a pod's sidecar serves."""

import time

from .common import HTTPError, Reply, SEG, oauth_error, route, routes_of

AZURE_SCOPE = "api://AzureADTokenExchange/.default"
JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

# /{tenant}/oauth2/v2.0/token and /azure-token-proxy[.json]
PREFIX = r"/[^/]+/oauth2/v2\.0/token\Z|/azure-token-proxy"

# Keys of /_fake/config. None means "accept any non-empty value".
CONFIG = {
    "azure_client_id": None,
    "federated_token": None,
    "proxy_token": "proxy-subject-token",
    "proxy_required_headers": {},
}


class AzureState:
    """Azure's part of the fake's State."""

    def reset_service_state(self):
        super().reset_service_state()
        self.azure_tokens = {}      # token -> expiry (epoch seconds)


class AzureAPI:
    """Route handlers of Azure AD and the token proxy."""

    @route("POST", r"/" + SEG + r"/oauth2/v2\.0/token",
           "/*/oauth2/v2.0/token")
    def azure_token(self, tenant):
        ctype = (self.hdrs.get("content-type") or "").split(";")[0].strip()
        if ctype.lower() != "application/x-www-form-urlencoded":
            raise oauth_error(400, "invalid_request", "AADSTS900144: the "
                              "request body must be form-urlencoded")
        form = self.body_form_or_json()
        cfg = self.cfg
        if form.get("grant_type") != "client_credentials":
            raise oauth_error(400, "unsupported_grant_type",
                              "AADSTS70003: grant_type must be "
                              "client_credentials")
        if form.get("scope") != AZURE_SCOPE:
            raise oauth_error(400, "invalid_scope", "AADSTS70011: scope must "
                              "be %s" % AZURE_SCOPE)
        if form.get("client_assertion_type") != JWT_BEARER_ASSERTION:
            raise oauth_error(400, "invalid_request", "AADSTS700023: "
                              "client_assertion_type must be %s"
                              % JWT_BEARER_ASSERTION)
        if not form.get("client_id") or (
                cfg["azure_client_id"] is not None
                and form["client_id"] != cfg["azure_client_id"]):
            raise oauth_error(400, "invalid_client", "AADSTS700016: "
                              "application not found in the directory")
        if not form.get("client_assertion") or (
                cfg["federated_token"] is not None
                and form["client_assertion"] != cfg["federated_token"]):
            raise oauth_error(401, "invalid_client", "AADSTS700024: client "
                              "assertion is not valid")
        token = "azure-%d" % self.state.next_n()
        with self.state.lock:
            self.state.azure_tokens[token] = time.time() + 3599
        return Reply(200, {"access_token": token, "token_type": "Bearer",
                           "expires_in": 3599, "ext_expires_in": 3599})

    def check_proxy_headers(self):
        for name, value in (self.cfg["proxy_required_headers"] or {}).items():
            if self.hdrs.get(name.lower()) != value:
                raise HTTPError(401, {"error": "missing or wrong header %s"
                                      % name})

    @route("GET", r"/azure-token-proxy")
    def azure_proxy_text(self):
        self.check_proxy_headers()
        return Reply(200, self.cfg["proxy_token"])

    @route("GET", r"/azure-token-proxy\.json", "/azure-token-proxy.json")
    def azure_proxy_json(self):
        self.check_proxy_headers()
        return Reply(200, {"access_token": self.cfg["proxy_token"]})


ROUTES = routes_of(AzureAPI)
