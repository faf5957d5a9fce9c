/*
 * google_auth.c — Google access token through workload identity federation
 * (Google's "external_account" credential configuration, as google-auth
 * reads it), the way dfe-analytics' Azure workload-identity setup does it:
 *
 *   1. subject token, by credential_source:
 *      - url ending in /oauth2/v2.0/token: Azure AD client-credentials POST
 *        with the federated token file as client assertion (the gem's way);
 *      - any other url: GET it with credential_source.headers (the
 *        dfe-azure-access-token proxy), token as text or in a JSON field;
 *      - file: its contents, same format rules;
 *   2. Google STS token exchange (token_url);
 *   3. service account impersonation (generateAccessToken).
 *
 * The result is cached per process in TopMemoryContext until shortly before
 * expireTime.  Every token, the assertion and the secret-ish parts of the
 * credential configuration are registered with dfe_http_register_secret(), and
 * no message here ever quotes the configuration or a response body that
 * could carry a token.
 */
#include "postgres.h"

#include <ctype.h>
#include <stdio.h>
#include <sys/stat.h>

#include "access/htup_details.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include <cjson/cJSON.h>

#include "compat.h"
#include "google_auth.h"
#include "http.h"
#include "settings.h"
#include "version.h"

#define CLOUD_PLATFORM_SCOPE "https://www.googleapis.com/auth/cloud-platform"
#define TOKEN_EXCHANGE_GRANT "urn:ietf:params:oauth:grant-type:token-exchange"
#define ACCESS_TOKEN_TYPE "urn:ietf:params:oauth:token-type:access_token"
#define AZURE_SCOPE "api://AzureADTokenExchange/.default"
#define JWT_BEARER_ASSERTION "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#define AZURE_TOKEN_PATH "/oauth2/v2.0/token"

/* renew this long before expireTime (less for short-lived tokens) */
#define RENEW_MARGIN_US (5 * 60 * USECS_PER_SEC)
/* lifetime assumed when the answer has no usable expiry */
#define DEFAULT_LIFETIME_US (3600 * USECS_PER_SEC)
/* a credential configuration or token file larger than this is refused */
#define MAX_FILE_BYTES (1024 * 1024)

typedef enum SourceKind
{
	SOURCE_AZURE_AD,
	SOURCE_URL,
	SOURCE_FILE
} SourceKind;

typedef struct CredConfig
{
	char	   *audience;
	char	   *subject_token_type;
	char	   *token_url;
	char	   *impersonation_url;	/* NULL: use the STS token itself */
	SourceKind	kind;
	char	   *source_url;
	char	   *source_file;
	List	   *headers;		/* "Name: value" */
	bool		format_json;
	char	   *field_name;		/* format.subject_token_field_name */
	char	   *service_account;	/* from impersonation_url, for messages */
} CredConfig;

/* what the last dfe_google_access_token() call used; for diagnostics */
typedef struct GoogleTokenInfo
{
	const char *credential_source;	/* azure_ad, url, file */
	const char *service_account;	/* from the impersonation URL, or NULL */
	TimestampTz expires_at;
	TimestampTz renew_after;
	bool		from_cache;		/* the last call reused a cached token */
} GoogleTokenInfo;

/* RFC 3339 time ("2024-05-01T10:00:00Z", fractions and offsets allowed) */
static bool google_parse_rfc3339(const char *s, TimestampTz *result);

/* the cache, all in TopMemoryContext */
static char *cached_token = NULL;
static char *cached_key = NULL;
static TimestampTz cached_expires = 0;
static TimestampTz cached_renew_after = 0;
static SourceKind cached_kind = SOURCE_URL;
static char *cached_service_account = NULL;
static bool last_from_cache = false;

/* for the error context: which step of the chain runs */
static const char *chain_step = NULL;

static const char *
kind_name(SourceKind kind)
{
	switch (kind)
	{
		case SOURCE_AZURE_AD:
			return "azure_ad";
		case SOURCE_URL:
			return "url";
		case SOURCE_FILE:
			return "file";
	}
	return "url";
}

static void
chain_error_context(void *arg)
{
	if (chain_step)
		errcontext("getting a Google access token: %s", chain_step);
}

/* strip leading and trailing white space in place */
static char *
trim(char *s)
{
	char	   *end;

	while (*s && isspace((unsigned char) *s))
		s++;
	end = s + strlen(s);
	while (end > s && isspace((unsigned char) end[-1]))
		end--;
	*end = '\0';
	return s;
}

/*
 * Read a small file whole.  what names it in messages ("Azure federated
 * token file"); the contents are never shown.
 */
static char *
read_small_file(const char *path, const char *what, const char *hint)
{
	FILE	   *f;
	StringInfoData buf;
	char		chunk[8192];
	size_t		n;
	bool		failed;
	int			save_errno;

	/*
	 * AllocateFile, not fopen: the file counts against max_files_per_process
	 * and is closed at transaction abort or by FreeFile, so an ERROR raised
	 * while reading never leaks the descriptor (fd.c).
	 */
	f = AllocateFile(path, "r");
	if (f == NULL)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open %s \"%s\": %m", what, path),
				 errhint("%s", hint)));
	initStringInfo(&buf);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
	{
		if (buf.len + n > MAX_FILE_BYTES)
		{
			FreeFile(f);
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s \"%s\" is larger than %d bytes", what, path, MAX_FILE_BYTES),
					 errhint("%s", hint)));
		}
		appendBinaryStringInfo(&buf, chunk, n);
	}
	failed = ferror(f) != 0;
	save_errno = errno;
	FreeFile(f);
	if (failed)
	{
		errno = save_errno;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not read %s \"%s\": %m", what, path),
				 errhint("%s", hint)));
	}
	if (memchr(buf.data, '\0', buf.len) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s \"%s\" is not a text file", what, path),
				 errhint("%s", hint)));
	return buf.data;
}

/* ---------------------------------------------------------------------- */
/* the credential configuration                                           */
/* ---------------------------------------------------------------------- */

pg_noreturn static void config_error(const char *message, const char *detail);

static void
config_error(const char *message, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("%s", message),
			 errdetail("%s", detail),
			 errhint("dfe_airbyte.google_credentials (env GOOGLE_CLOUD_CREDENTIALS) must hold a "
					 "workload identity federation credential configuration (\"type\": \"external_account\"), "
					 "as JSON or as the path of a file holding it, e.g. the one "
					 "\"gcloud iam workload-identity-pools create-cred-config\" writes.")));
	pg_unreachable();
}

static char *
required_string(cJSON *obj, const char *key, const char *prefix)
{
	cJSON	   *item = cJSON_GetObjectItemCaseSensitive(obj, key);

	if (item == NULL || cJSON_IsNull(item))
		config_error(psprintf("Google credential configuration has no \"%s%s\"", prefix, key),
					 "The field is required for the external_account chain.");
	if (!cJSON_IsString(item) || item->valuestring[0] == '\0')
		config_error(psprintf("Google credential configuration field \"%s%s\" must be a non-empty string",
							  prefix, key),
					 "The value is not shown because the configuration may hold secrets.");
	return pstrdup(item->valuestring);
}

static char *
optional_string(cJSON *obj, const char *key, const char *prefix)
{
	cJSON	   *item = cJSON_GetObjectItemCaseSensitive(obj, key);

	if (item == NULL || cJSON_IsNull(item))
		return NULL;
	if (!cJSON_IsString(item))
		config_error(psprintf("Google credential configuration field \"%s%s\" must be a string",
							  prefix, key),
					 "The value is not shown because the configuration may hold secrets.");
	return item->valuestring[0] ? pstrdup(item->valuestring) : NULL;
}

/* a URL's query string may carry a key (e.g. ?code= of a function app) */
static void
register_url_secrets(const char *url)
{
	const char *q = strchr(url, '?');

	if (q && q[1])
		dfe_http_register_secret(q + 1);
}

static bool
url_path_ends_with(const char *url, const char *suffix)
{
	size_t		len = strcspn(url, "?#");
	size_t		slen = strlen(suffix);

	return len >= slen && strncmp(url + len - slen, suffix, slen) == 0;
}

/* the e-mail in .../serviceAccounts/EMAIL:generateAccessToken */
static char *
service_account_of(const char *url)
{
	const char *p = strstr(url, "/serviceAccounts/");
	const char *end;

	if (p == NULL)
		return NULL;
	p += strlen("/serviceAccounts/");
	end = strchr(p, ':');
	if (end == NULL || end == p)
		return NULL;
	return pnstrdup(p, end - p);
}

/*
 * Read and validate the configuration.  *key_out gets a string that changes
 * whenever anything the chain depends on changes (the cache key).
 */
/* the configuration's text: the setting itself when it is JSON, else the file it names */
static const char *
credential_text(void)
{
	const char *setting = dfe_setting_google_credentials();
	const char *p;

	dfe_require_setting(setting, "dfe_airbyte.google_credentials", "GOOGLE_CLOUD_CREDENTIALS");
	for (p = setting; *p && isspace((unsigned char) *p); p++)
		;
	if (*p == '{')
		return setting;
	return read_small_file(trim(pstrdup(setting)), "Google credential configuration file",
						   "dfe_airbyte.google_credentials (env GOOGLE_CLOUD_CREDENTIALS) holds either the "
						   "credential configuration JSON or the path of a file the server can read.");
}

/* the configuration as an external_account JSON object; never quotes the text */
static cJSON *
parse_external_account(const char *text)
{
	cJSON	   *root = cJSON_Parse(text);
	cJSON	   *item;

	if (root == NULL || !cJSON_IsObject(root))
	{
		const char *at = cJSON_GetErrorPtr();

		config_error("Google credential configuration is not a valid JSON object",
					 (root == NULL && at && at >= text && at <= text + strlen(text))
					 ? psprintf("The JSON is malformed near character %d; the text is not shown because it may hold secrets.",
								(int) (at - text) + 1)
					 : "The text is not shown because it may hold secrets.");
	}

	item = cJSON_GetObjectItemCaseSensitive(root, "type");
	if (!cJSON_IsString(item))
		config_error("Google credential configuration has no \"type\"",
					 "Only \"type\": \"external_account\" (workload identity federation) is supported.");
	if (strcmp(item->valuestring, "external_account") != 0)
		config_error(psprintf("Google credential configuration has type \"%.40s\", expected \"external_account\"",
							  item->valuestring),
					 "Only workload identity federation is supported; service account keys are not.");
	return root;
}

/* credential_source.url or .file, exactly one of them */
static void
read_source_location(CredConfig *cfg, cJSON *src)
{
	if (src == NULL || cJSON_IsNull(src))
		config_error("Google credential configuration has no \"credential_source\"",
					 "credential_source must be an object with \"url\" or \"file\".");
	if (!cJSON_IsObject(src))
		config_error("Google credential configuration field \"credential_source\" must be an object",
					 "credential_source must be an object with \"url\" or \"file\".");

	cfg->source_url = optional_string(src, "url", "credential_source.");
	cfg->source_file = optional_string(src, "file", "credential_source.");
	if (cfg->source_url && cfg->source_file)
		config_error("Google credential configuration has both \"credential_source.url\" and \"credential_source.file\"",
					 "Give exactly one of them.");
	if (cfg->source_url == NULL && cfg->source_file == NULL)
	{
		if (cJSON_GetObjectItemCaseSensitive(src, "environment_id") ||
			cJSON_GetObjectItemCaseSensitive(src, "executable"))
			config_error("Google credential configuration uses an unsupported credential_source",
						 "Only \"url\" and \"file\" credential sources are supported (not AWS environment_id or executable).");
		config_error("Google credential configuration has no \"credential_source.url\" or \"credential_source.file\"",
					 "credential_source must be an object with \"url\" or \"file\".");
	}
	if (cfg->source_url)
	{
		register_url_secrets(cfg->source_url);
		cfg->kind = url_path_ends_with(cfg->source_url, AZURE_TOKEN_PATH) ? SOURCE_AZURE_AD : SOURCE_URL;
	}
	else
		cfg->kind = SOURCE_FILE;
}

/* credential_source.headers: sent with the url source's GET; their values are secrets */
static void
read_source_headers(CredConfig *cfg, cJSON *item)
{
	cJSON	   *h;

	if (item == NULL || cJSON_IsNull(item))
		return;
	if (!cJSON_IsObject(item))
		config_error("Google credential configuration field \"credential_source.headers\" must be an object",
					 "Give the headers as {\"Name\": \"value\", ...}.");
	cJSON_ArrayForEach(h, item)
	{
		if (!cJSON_IsString(h) || h->string == NULL || h->string[0] == '\0' ||
			strpbrk(h->string, ":\r\n") || strpbrk(h->valuestring, "\r\n"))
			config_error("Google credential configuration field \"credential_source.headers\" is invalid",
						 "Each header needs a name without \":\" and a string value on one line.");
		dfe_http_register_secret(h->valuestring);
		cfg->headers = lappend(cfg->headers, psprintf("%s: %s", h->string, h->valuestring));
	}
}

/* credential_source.format: the subject token as text (default) or a JSON field */
static void
read_source_format(CredConfig *cfg, cJSON *item)
{
	char	   *type;

	if (item == NULL || cJSON_IsNull(item))
		return;
	if (!cJSON_IsObject(item))
		config_error("Google credential configuration field \"credential_source.format\" must be an object",
					 "Give it as {\"type\": \"json\", \"subject_token_field_name\": \"access_token\"} or {\"type\": \"text\"}.");
	type = optional_string(item, "type", "credential_source.format.");
	if (type == NULL || strcmp(type, "text") == 0)
		cfg->format_json = false;
	else if (strcmp(type, "json") == 0)
	{
		cfg->format_json = true;
		cfg->field_name = required_string(item, "subject_token_field_name",
										   "credential_source.format.");
	}
	else
		config_error(psprintf("Google credential configuration has credential_source.format.type \"%.20s\"", type),
					 "Supported formats are \"text\" (the default) and \"json\".");
}

static CredConfig *
load_config(char **key_out)
{
	const char *text = credential_text();
	cJSON	   *root = parse_external_account(text);
	cJSON	   *src;
	cJSON	   *item;
	CredConfig *cfg = palloc0(sizeof(CredConfig));
	const char *azure_id;
	const char *azure_file;

	/* anything that could act as a credential is a secret */
	item = cJSON_GetObjectItemCaseSensitive(root, "client_secret");
	if (cJSON_IsString(item))
		dfe_http_register_secret(item->valuestring);

	cfg->audience = required_string(root, "audience", "");
	cfg->subject_token_type = required_string(root, "subject_token_type", "");
	cfg->token_url = required_string(root, "token_url", "");
	cfg->impersonation_url = optional_string(root, "service_account_impersonation_url", "");
	if (cfg->impersonation_url)
	{
		register_url_secrets(cfg->impersonation_url);
		cfg->service_account = service_account_of(cfg->impersonation_url);
	}
	register_url_secrets(cfg->token_url);

	src = cJSON_GetObjectItemCaseSensitive(root, "credential_source");
	read_source_location(cfg, src);
	read_source_headers(cfg, cJSON_GetObjectItemCaseSensitive(src, "headers"));
	read_source_format(cfg, cJSON_GetObjectItemCaseSensitive(src, "format"));

	/* the chain also depends on the Azure settings */
	azure_id = dfe_setting_azure_client_id();
	azure_file = dfe_setting_azure_federated_token_file();
	*key_out = psprintf("%s\x1f%s\x1f%s", text, azure_id ? azure_id : "",
						azure_file ? azure_file : "");
	return cfg;
}

/* ---------------------------------------------------------------------- */
/* the chain                                                              */
/* ---------------------------------------------------------------------- */

/* a string field of a successful JSON answer; ERROR (body not shown) when absent */
static char *
answer_field(HttpRequest *req, const char *field)
{
	cJSON	   *root = cJSON_Parse(req->response->data);
	cJSON	   *item = root ? cJSON_GetObjectItemCaseSensitive(root, field) : NULL;
	char	   *value;

	if (!cJSON_IsString(item) || item->valuestring[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("%s answered without \"%s\"", req->what, field),
				 errdetail("%s %s answered HTTP %ld%s; the body is not shown because it may hold a token.",
						   req->method, dfe_http_redact(req->url), req->status,
						   root ? "" : " with a body that is not JSON"),
				 errhint("Check that the URL in the credential configuration points at the right service.")));
	value = pstrdup(item->valuestring);
	dfe_http_register_secret(value);
	/* the body held the token: wipe it */
	explicit_bzero(req->response->data, req->response->len);
	cJSON_Delete(root);
	return value;
}

static void
wipe(char *s)
{
	if (s)
		explicit_bzero(s, strlen(s));
}

/* token from a url/file source body, by the configured format */
static char *
token_from_body(CredConfig *cfg, char *body, const char *what)
{
	char	   *token;

	if (!cfg->format_json)
	{
		token = pstrdup(trim(body));
		wipe(body);
		if (token[0] == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
					 errmsg("%s gave an empty subject token", what),
					 errhint("Check credential_source in the Google credential configuration.")));
	}
	else
	{
		cJSON	   *root = cJSON_Parse(body);
		cJSON	   *item = root ? cJSON_GetObjectItemCaseSensitive(root, cfg->field_name) : NULL;

		wipe(body);
		if (!cJSON_IsString(item) || item->valuestring[0] == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
					 errmsg("%s gave no \"%s\" field", what, cfg->field_name),
					 errdetail("%s; its contents are not shown because they may hold a token.",
							   root ? "It is JSON without that string field" : "It is not JSON"),
					 errhint("Check credential_source.format in the Google credential configuration.")));
		token = pstrdup(item->valuestring);
		cJSON_Delete(root);
	}
	dfe_http_register_secret(token);
	return token;
}

static char *
subject_token_azure_ad(CredConfig *cfg)
{
	const char *client_id;
	const char *path;
	char	   *file_text;
	char	   *assertion;
	HttpRequest *req;
	char	   *body;
	char	   *token;

	chain_step = "step 1, the subject token from Azure AD (credential_source.url, "
		"dfe_airbyte.azure_client_id, dfe_airbyte.azure_federated_token_file)";
	client_id = dfe_require_setting(dfe_setting_azure_client_id(),
									"dfe_airbyte.azure_client_id", "AZURE_CLIENT_ID");
	path = dfe_require_setting(dfe_setting_azure_federated_token_file(),
							   "dfe_airbyte.azure_federated_token_file",
							   "AZURE_FEDERATED_TOKEN_FILE");
	/* re-read every time: the kubelet rotates it */
	file_text = read_small_file(path, "Azure federated token file",
								"dfe_airbyte.azure_federated_token_file (env AZURE_FEDERATED_TOKEN_FILE) must name "
								"the projected service account token file the server can read.");
	assertion = trim(file_text);
	if (assertion[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("Azure federated token file \"%s\" is empty", path),
				 errhint("Check the workload identity set-up of the pod (azure.workload.identity/use).")));
	dfe_http_register_secret(assertion);

	body = psprintf("grant_type=client_credentials&client_id=%s&scope=%s"
					"&client_assertion_type=%s&client_assertion=%s",
					dfe_http_escape(client_id), dfe_http_escape(AZURE_SCOPE),
					dfe_http_escape(JWT_BEARER_ASSERTION), dfe_http_escape(assertion));
	req = dfe_http_request_new("Azure AD token request", "POST", cfg->source_url);
	req->body = body;
	req->content_type = "application/x-www-form-urlencoded";
	dfe_http_perform_one(req);
	wipe(body);
	wipe(file_text);
	dfe_http_check(req);
	token = answer_field(req, "access_token");
	return token;
}

static char *
subject_token_url(CredConfig *cfg)
{
	HttpRequest *req;

	chain_step = "step 1, the subject token from credential_source.url";
	req = dfe_http_request_new("subject token request (credential_source.url)", "GET", cfg->source_url);
	req->headers = cfg->headers;
	dfe_http_perform_one(req);
	dfe_http_check(req);
	return token_from_body(cfg, req->response->data, "credential_source.url");
}

static char *
subject_token_file(CredConfig *cfg)
{
	char	   *text;

	chain_step = "step 1, the subject token from credential_source.file";
	text = read_small_file(cfg->source_file, "subject token file (credential_source.file)",
						   "credential_source.file in the Google credential configuration must name a file the server can read.");
	return token_from_body(cfg, text, psprintf("credential_source.file \"%s\"", cfg->source_file));
}

static char *
sts_exchange(CredConfig *cfg, const char *subject_token, long *expires_in)
{
	cJSON	   *body = cJSON_CreateObject();
	char	   *json;
	HttpRequest *req;
	char	   *token;
	cJSON	   *root;
	cJSON	   *item;

	chain_step = "step 2, the Google STS token exchange (token_url, audience, subject_token_type)";
	cJSON_AddStringToObject(body, "grant_type", TOKEN_EXCHANGE_GRANT);
	cJSON_AddStringToObject(body, "audience", cfg->audience);
	cJSON_AddStringToObject(body, "scope", CLOUD_PLATFORM_SCOPE);
	cJSON_AddStringToObject(body, "requested_token_type", ACCESS_TOKEN_TYPE);
	cJSON_AddStringToObject(body, "subject_token", subject_token);
	cJSON_AddStringToObject(body, "subject_token_type", cfg->subject_token_type);
	json = cJSON_PrintUnformatted(body);
	cJSON_Delete(body);

	req = dfe_http_request_new("Google STS token exchange", "POST", cfg->token_url);
	dfe_http_set_json_body(req, json);
	dfe_http_perform_one(req);
	wipe(json);
	dfe_http_check(req);

	/* expires_in matters only without impersonation */
	*expires_in = -1;
	root = cJSON_Parse(req->response->data);
	item = root ? cJSON_GetObjectItemCaseSensitive(root, "expires_in") : NULL;
	if (cJSON_IsNumber(item) && item->valuedouble > 0)
		*expires_in = (long) item->valuedouble;
	if (root)
		cJSON_Delete(root);
	token = answer_field(req, "access_token");
	return token;
}

static char *
impersonate(CredConfig *cfg, const char *sts_token, TimestampTz *expires)
{
	HttpRequest *req;
	cJSON	   *root;
	cJSON	   *item;
	char	   *token;

	chain_step = "step 3, the service account impersonation (service_account_impersonation_url)";
	req = dfe_http_request_new("Google service account impersonation", "POST", cfg->impersonation_url);
	dfe_http_set_json_body(req, "{\"scope\":[\"" CLOUD_PLATFORM_SCOPE "\"],\"lifetime\":\"3600s\"}");
	req->bearer = sts_token;
	dfe_http_perform_one(req);
	dfe_http_check(req);

	*expires = 0;
	root = cJSON_Parse(req->response->data);
	item = root ? cJSON_GetObjectItemCaseSensitive(root, "expireTime") : NULL;
	if (!cJSON_IsString(item) || !google_parse_rfc3339(item->valuestring, expires))
		*expires = 0;
	if (root)
		cJSON_Delete(root);
	token = answer_field(req, "accessToken");
	return token;
}

static void
forget(void)
{
	if (cached_token)
	{
		wipe(cached_token);
		pfree(cached_token);
	}
	if (cached_key)
	{
		wipe(cached_key);
		pfree(cached_key);
	}
	if (cached_service_account)
		pfree(cached_service_account);
	cached_token = NULL;
	cached_key = NULL;
	cached_service_account = NULL;
	cached_expires = 0;
	cached_renew_after = 0;
}

void
dfe_google_forget_access_token(void)
{
	forget();
}

/* the chain: subject token, STS exchange, impersonation; returns the access token */
static char *
run_chain(CredConfig *cfg, TimestampTz started, TimestampTz *expires)
{
	char	   *subject;
	char	   *sts;
	char	   *token;
	long		sts_expires_in;
	ErrorContextCallback errcb;

	chain_step = NULL;
	errcb.callback = chain_error_context;
	errcb.arg = NULL;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;

	switch (cfg->kind)
	{
		case SOURCE_AZURE_AD:
			subject = subject_token_azure_ad(cfg);
			break;
		case SOURCE_FILE:
			subject = subject_token_file(cfg);
			break;
		default:
			subject = subject_token_url(cfg);
			break;
	}
	sts = sts_exchange(cfg, subject, &sts_expires_in);
	wipe(subject);
	*expires = 0;
	if (cfg->impersonation_url)
	{
		token = impersonate(cfg, sts, expires);
		wipe(sts);
		if (*expires == 0)
			*expires = started + DEFAULT_LIFETIME_US;
	}
	else
	{
		token = sts;
		*expires = started + (sts_expires_in > 0 ? sts_expires_in * USECS_PER_SEC : DEFAULT_LIFETIME_US);
	}

	chain_step = NULL;
	error_context_stack = errcb.previous;
	return token;
}

/* keep the token (in TopMemoryContext) until shortly before it expires */
static void
cache_token(CredConfig *cfg, const char *token, const char *key, TimestampTz started,
			TimestampTz expires)
{
	int64		lifetime = expires - started;
	int64		margin = Min(RENEW_MARGIN_US, lifetime / 2);
	MemoryContext old;

	forget();
	old = MemoryContextSwitchTo(TopMemoryContext);
	cached_token = pstrdup(token);
	cached_key = pstrdup(key);
	cached_service_account = cfg->service_account ? pstrdup(cfg->service_account) : NULL;
	MemoryContextSwitchTo(old);
	cached_kind = cfg->kind;
	cached_expires = expires;
	cached_renew_after = expires - margin;
	last_from_cache = false;
}

const char *
dfe_google_access_token(void)
{
	MemoryContext cxt;
	MemoryContext old;
	CredConfig *cfg;
	char	   *key;
	char	   *token;
	TimestampTz started;
	TimestampTz expires;

	/* all the chain's garbage (bodies, assertions) goes away at the end */
	cxt = AllocSetContextCreate(CurrentMemoryContext, "dfe_airbyte google auth",
								ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(cxt);

	cfg = load_config(&key);
	started = GetCurrentTimestamp();
	if (cached_token && cached_key && strcmp(cached_key, key) == 0 &&
		started < cached_renew_after)
	{
		MemoryContextSwitchTo(old);
		wipe(key);
		MemoryContextDelete(cxt);
		last_from_cache = true;
		return cached_token;
	}

	token = run_chain(cfg, started, &expires);
	cache_token(cfg, token, key, started, expires);
	MemoryContextSwitchTo(old);

	wipe(token);
	wipe(key);
	MemoryContextDelete(cxt);
	return cached_token;
}

static void
google_token_info(GoogleTokenInfo *info)
{
	memset(info, 0, sizeof(*info));
	info->credential_source = kind_name(cached_kind);
	info->service_account = cached_service_account;
	info->expires_at = cached_expires;
	info->renew_after = cached_renew_after;
	info->from_cache = last_from_cache;
}

/* ---------------------------------------------------------------------- */
/* RFC 3339                                                               */
/* ---------------------------------------------------------------------- */

static bool
digits(const char **p, int n, int *out)
{
	int			v = 0;
	int			i;

	for (i = 0; i < n; i++)
	{
		if (!isdigit((unsigned char) (*p)[i]))
			return false;
		v = v * 10 + ((*p)[i] - '0');
	}
	*p += n;
	*out = v;
	return true;
}

static bool
expect(const char **p, const char *chars)
{
	if (**p == '\0' || strchr(chars, **p) == NULL)
		return false;
	(*p)++;
	return true;
}

static bool
google_parse_rfc3339(const char *s, TimestampTz *result)
{
	struct pg_tm tm;
	const char *p = s;
	int			year,
				mon,
				mday,
				hour,
				min,
				sec;
	fsec_t		fsec = 0;
	int			offset_east = 0;
	int			tz;
	Timestamp	ts;

	if (s == NULL)
		return false;
	if (!digits(&p, 4, &year) || !expect(&p, "-") || !digits(&p, 2, &mon) ||
		!expect(&p, "-") || !digits(&p, 2, &mday) || !expect(&p, "Tt ") ||
		!digits(&p, 2, &hour) || !expect(&p, ":") || !digits(&p, 2, &min) ||
		!expect(&p, ":") || !digits(&p, 2, &sec))
		return false;
	if (*p == '.')
	{
		int			scale = 100000;

		p++;
		if (!isdigit((unsigned char) *p))
			return false;
		while (isdigit((unsigned char) *p))
		{
			fsec += (*p - '0') * scale;
			scale /= 10;
			p++;
		}
	}
	if (*p == 'Z' || *p == 'z')
		p++;
	else if (*p == '+' || *p == '-')
	{
		int			sign = (*p == '-') ? -1 : 1;
		int			oh,
					om;

		p++;
		if (!digits(&p, 2, &oh) || !expect(&p, ":") || !digits(&p, 2, &om) ||
			oh > 23 || om > 59)
			return false;
		offset_east = sign * (oh * 3600 + om * 60);
	}
	else
		return false;
	if (*p != '\0')
		return false;
	if (mon < 1 || mon > 12 || mday < 1 || mday > day_tab[isleap(year)][mon - 1] ||
		hour > 23 || min > 59 || sec > 60)
		return false;
	if (sec == 60)				/* leap second: PostgreSQL has none */
		sec = 59;

	memset(&tm, 0, sizeof(tm));
	tm.tm_year = year;
	tm.tm_mon = mon;
	tm.tm_mday = mday;
	tm.tm_hour = hour;
	tm.tm_min = min;
	tm.tm_sec = sec;
	/* PostgreSQL counts time zone offsets in seconds WEST of Greenwich */
	tz = -offset_east;
	if (tm2timestamp(&tm, fsec, &tz, &ts) != 0)
		return false;
	*result = (TimestampTz) ts;
	return true;
}

/* ---------------------------------------------------------------------- */
/* SQL: dfe_airbyte_google_auth_check()                                   */
/* ---------------------------------------------------------------------- */

PG_FUNCTION_INFO_V1(dfe_airbyte_google_auth_check);

/*
 * Runs the credential chain (or reuses this session's cached token) and
 * says what it used, never the token: a way to test the Google credential
 * configuration without touching BigQuery.
 */
Datum
dfe_airbyte_google_auth_check(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};
	GoogleTokenInfo info;

	DFE_REQUIRE_MATCHING_SQL();
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("dfe_airbyte_google_auth_check() must be called where a record is expected"),
				 errhint("Call it as SELECT * FROM dfe_airbyte_google_auth_check().")));
	tupdesc = BlessTupleDesc(tupdesc);

	(void) dfe_google_access_token();
	google_token_info(&info);

	values[0] = CStringGetTextDatum(info.credential_source);
	if (info.service_account)
		values[1] = CStringGetTextDatum(info.service_account);
	else
		nulls[1] = true;
	values[2] = TimestampTzGetDatum(info.expires_at);
	values[3] = TimestampTzGetDatum(info.renew_after);
	values[4] = BoolGetDatum(info.from_cache);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
