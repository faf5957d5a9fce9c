/*
 * airbyte.c — the Airbyte API client (README.md, "Reference") and the SQL functions that
 * expose it: dfe_airbyte_connection_refresh(), dfe_airbyte_start_sync(),
 * dfe_airbyte_job_status() and dfe_airbyte_wait_for_job().
 *
 * The access token is cached per process in TopMemoryContext until shortly
 * before it expires (60 s, or a tenth of its lifetime when that is less).
 * A 401 from any call drops it, fetches a new one and repeats the call
 * once.  Servers before Airbyte 0.63.7 have no public token endpoint
 * (airbyte-platform commit ff7d645cea, config.yaml @ v0.63.7) and answer
 * it 404, or 401/403 where Micronaut Security rejects the unknown route
 * (Airbyte's configuration does not set micronaut.security.reject-not-found
 * to false): on any of those we use the
 * config-API one, whose answer has no expires_in, and read the expiry from
 * the JWT's exp claim instead.  Which endpoint works is remembered until
 * the server's version changes.
 *
 * The server's version (GET /api/v1/instance_configuration, anonymous)
 * decides how jobs are listed (the public list shows refresh jobs only from
 * 1.8.0) and whether a PATCH may be sent at all (selectedFields exists from
 * 0.60.1).  Airbyte is upgraded under a running PostgreSQL, so the version
 * is read again with every new token (Airbyte's access tokens last 3
 * minutes: a few reads an hour) and whenever an answer does not fit the
 * version believed (a token path or a job list shape that fails); when it
 * changes, which token endpoint works is learnt again too.
 *
 * The client secret and every token are registered with the HTTP layer,
 * which redacts them from every message it builds; request bodies that held
 * the secret are zeroed after use.
 */
#include "postgres.h"

#include <time.h>

#include "access/xact.h"
#include "common/base64.h"
#include "common/hashfn.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include <cjson/cJSON.h>

#include "airbyte.h"
#include "compat.h"
#include "target_scope.h"
#include "http.h"
#include "settings.h"
#include "shared.h"
#include "stream_config.h"
#include "version.h"

/* a token without any expiry information is kept this long */
#define TOKEN_DEFAULT_LIFETIME_S 180
/* renew this long before expiry at most ... */
#define TOKEN_RENEW_MARGIN_S 60
/* ... or a tenth of the lifetime when that is shorter */
#define TOKEN_RENEW_FRACTION 0.1
/* how much of a malformed answer an error quotes */
#define ANSWER_EXCERPT 120
/* how many of the newest jobs are read when looking for a running one */
#define RECENT_JOBS 20
/* a 409 without a running job to follow: ask again this often, this far apart */
#define START_SYNC_ROUNDS 3
#define START_SYNC_PAUSE_MS 2000

long		dfe_airbyte_last_http_status = -1;

/* the token cache (TopMemoryContext) */
static char *token = NULL;
static TimestampTz token_renew_at = 0;
static uint32 token_config_hash = 0;
/* 0: not known yet, 1: public endpoint works, 2: only the legacy one */
static int	token_endpoint = 0;
/* tokens fetched by this process */
static uint64 token_renewals = 0;

/* the server version cache (TopMemoryContext); see dfe_airbyte_server_version */
static char *server_version = NULL;
static int	server_version_num[3];
static bool server_version_parsed = false;
static uint32 server_version_hash = 0;
/* true: read the version again at its next use (see the header comment) */
static bool server_version_stale = false;

/* ---------------------------------------------------------------------- */
/* configuration                                                          */
/* ---------------------------------------------------------------------- */

static bool
is_set(const char *s)
{
	return s != NULL && s[0] != '\0';
}

bool
dfe_airbyte_configured(void)
{
	return is_set(dfe_setting_airbyte_url()) &&
		is_set(dfe_setting_airbyte_client_id()) &&
		is_set(dfe_setting_airbyte_client_secret()) &&
		is_set(dfe_setting_connection_id());
}

void
dfe_airbyte_require_configuration(void)
{
	dfe_require_setting(dfe_setting_airbyte_url(), "dfe_airbyte.airbyte_url",
						"AIRBYTE_SERVER_URL");
	dfe_require_setting(dfe_setting_airbyte_client_id(),
						"dfe_airbyte.airbyte_client_id", "AIRBYTE_CLIENT_ID");
	dfe_require_setting(dfe_setting_airbyte_client_secret(),
						"dfe_airbyte.airbyte_client_secret", "AIRBYTE_CLIENT_SECRET");
	dfe_require_setting(dfe_setting_connection_id(),
						"dfe_airbyte.connection_id", "AIRBYTE_CONFIGURATION");
}

/* {airbyte_url}{path} without a doubled slash */
static char *
airbyte_url(const char *path)
{
	const char *base = dfe_setting_airbyte_url();
	int			len = strlen(base);

	while (len > 0 && base[len - 1] == '/')
		len--;
	return psprintf("%.*s%s", len, base, path);
}

/* changes to URL, client id or secret invalidate the cached token */
static uint32
config_hash(void)
{
	char	   *s = psprintf("%s\n%s\n%s", dfe_setting_airbyte_url(),
							 dfe_setting_airbyte_client_id(),
							 dfe_setting_airbyte_client_secret());
	uint32		h = hash_bytes((const unsigned char *) s, strlen(s));

	explicit_bzero(s, strlen(s));
	pfree(s);
	return h;
}

/* ---------------------------------------------------------------------- */
/* JSON answers                                                           */
/* ---------------------------------------------------------------------- */

/*
 * Parse an answer; a body that is not JSON (a proxy's HTML page, a cut-off
 * answer) is a clear error rather than a crash further down.
 */
static cJSON *
parse_answer(const HttpRequest *req)
{
	cJSON	   *root = cJSON_Parse(req->response->data);

	if (root == NULL)
	{
		char	   *excerpt = pnstrdup(req->response->data, ANSWER_EXCERPT);
		const char *call = req->what;
		char	   *p;

		/* "the Airbyte job read" → "Airbyte answered the job read ..." */
		if (strncmp(call, "the Airbyte ", 12) == 0)
			call = psprintf("the %s", call + 12);

		/* keep the detail on one line and printable */
		for (p = excerpt; *p; p++)
			if ((unsigned char) *p < 0x20)
				*p = ' ';
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_JSON_TEXT),
				 errmsg("Airbyte answered %s with invalid JSON", call),
				 errdetail("%s %s answered HTTP %ld with %d bytes beginning: %s",
						   req->method, dfe_http_redact(req->url), req->status,
						   req->response->len, dfe_http_redact(excerpt)),
				 errhint("Check that dfe_airbyte.airbyte_url points at the Airbyte server itself, not at a proxy or login page.")));
	}
	return root;
}

static const char *
json_string(cJSON *obj, const char *key)
{
	cJSON	   *item = cJSON_GetObjectItemCaseSensitive(obj, key);

	return cJSON_IsString(item) ? item->valuestring : NULL;
}

static void
answer_lacks(const HttpRequest *req, const char *what)
{
	/* an answer shaped for another version: read the version again */
	server_version_stale = true;
	ereport(ERROR,
			(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
			 errmsg("Airbyte's answer to %s has no %s", req->what, what),
			 errdetail("%s %s answered: %s", req->method, dfe_http_redact(req->url),
					   dfe_http_redact(pnstrdup(req->response->data, 300))),
			 errhint("Check that dfe_airbyte.airbyte_url points at a supported Airbyte server (0.60.1 or later).")));
}

/* ---------------------------------------------------------------------- */
/* the access token                                                       */
/* ---------------------------------------------------------------------- */

/* base64url (no padding) → bytes, NUL-terminated; NULL when invalid */
static char *
base64url_decode(const char *in, int inlen)
{
	char	   *b64;
	char	   *out;
	int			padded = inlen + (4 - inlen % 4) % 4;
	int			i;
	int			outlen;

	if (inlen % 4 == 1)
		return NULL;
	b64 = palloc(padded + 1);
	for (i = 0; i < inlen; i++)
		b64[i] = in[i] == '-' ? '+' : in[i] == '_' ? '/' : in[i];
	for (; i < padded; i++)
		b64[i] = '=';
	b64[padded] = '\0';
	out = palloc(pg_b64_dec_len(padded) + 1);
	outlen = pg_b64_decode(b64, padded, (dfe_b64_byte *) out, pg_b64_dec_len(padded));
	pfree(b64);
	if (outlen < 0)
		return NULL;
	out[outlen] = '\0';
	return out;
}

/* the exp claim of a JWT (seconds since 1970), or -1 */
static double
jwt_exp(const char *jwt)
{
	const char *dot1 = strchr(jwt, '.');
	const char *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
	char	   *payload;
	cJSON	   *root;
	cJSON	   *exp;
	double		result = -1;

	if (dot2 == NULL)
		return -1;
	payload = base64url_decode(dot1 + 1, dot2 - dot1 - 1);
	if (payload == NULL)
		return -1;
	root = cJSON_Parse(payload);
	exp = root ? cJSON_GetObjectItemCaseSensitive(root, "exp") : NULL;
	if (cJSON_IsNumber(exp))
		result = exp->valuedouble;
	if (root)
		cJSON_Delete(root);
	pfree(payload);
	return result;
}

static HttpRequest *
token_request(bool legacy)
{
	HttpRequest *req;
	cJSON	   *body = cJSON_CreateObject();
	char	   *json;

	cJSON_AddStringToObject(body, "client_id", dfe_setting_airbyte_client_id());
	cJSON_AddStringToObject(body, "client_secret", dfe_setting_airbyte_client_secret());
	if (!legacy)
		cJSON_AddStringToObject(body, "grant-type", "client_credentials");
	json = cJSON_PrintUnformatted(body);
	cJSON_Delete(body);

	req = dfe_http_request_new("the Airbyte token request", "POST",
						   airbyte_url(legacy ? "/api/v1/applications/token"
									   : "/api/public/v1/applications/token"));
	dfe_http_set_json_body(req, json);
	PG_TRY();
	{
		dfe_http_perform_one(req);
	}
	PG_FINALLY();
	{
		explicit_bzero(json, strlen(json));
		pfree(json);
		req->body = NULL;
	}
	PG_END_TRY();
	dfe_airbyte_last_http_status = req->status;
	return req;
}

static void
forget_token(void)
{
	if (token)
	{
		explicit_bzero(token, strlen(token));
		pfree(token);
	}
	token = NULL;
	token_renew_at = 0;
}

/*
 * POST the client credentials to the token endpoint that works here: the
 * public one, else the config API's (remembered in token_endpoint).
 */
static HttpRequest *
request_token(void)
{
	HttpRequest *req = token_request(token_endpoint == 2);

	if ((req->status == 404 || req->status == 401 || req->status == 403) &&
		token_endpoint != 2)
	{
		/*
		 * Airbyte before 0.63.7: only the config API issues tokens; the
		 * missing public route answers 404, or 401/403 behind Micronaut
		 * Security, which rejects unknown routes.  The legacy endpoint exists
		 * in every version from 0.55 on.
		 */
		ereport(DEBUG1,
				(errmsg_internal("dfe_airbyte: the public token endpoint answered %ld, using /api/v1/applications/token",
								 req->status)));
		req = token_request(true);
		if (dfe_http_ok(req))
			token_endpoint = 2;
	}
	else if (dfe_http_ok(req) && token_endpoint == 0)
		token_endpoint = 1;

	if (req->status == 401 || req->status == 403)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("Airbyte rejected the client credentials: HTTP %ld", req->status),
				 errdetail("POST %s answered: %s", dfe_http_redact(req->url),
						   dfe_http_server_message(req)),
				 errhint("Check dfe_airbyte.airbyte_client_id and dfe_airbyte.airbyte_client_secret (AIRBYTE_CLIENT_ID, AIRBYTE_CLIENT_SECRET).")));
	dfe_http_check(req);
	return req;
}

/* the token's lifetime: expires_in, else the JWT's exp claim, else a default */
static double
token_lifetime_s(cJSON *answer, const char *access)
{
	cJSON	   *expires_in = cJSON_GetObjectItemCaseSensitive(answer, "expires_in");
	double		exp;

	if (cJSON_IsNumber(expires_in) && expires_in->valuedouble > 0)
		return expires_in->valuedouble;
	exp = jwt_exp(access);
	if (exp > 0)
		return exp - (double) time(NULL);
	return TOKEN_DEFAULT_LIFETIME_S;
}

static const char *
get_token(void)
{
	TimestampTz now = GetCurrentTimestamp();
	uint32		h;
	HttpRequest *req;
	cJSON	   *answer;
	const char *access;
	double		lifetime_s;
	double		margin_s;

	dfe_airbyte_require_configuration();
	dfe_http_register_secret(dfe_setting_airbyte_client_secret());

	h = config_hash();
	if (h != token_config_hash)
	{
		forget_token();
		token_endpoint = 0;
		token_config_hash = h;
	}
	if (token != NULL && now < token_renew_at)
		return token;
	forget_token();

	/*
	 * A renewed token: a good moment to check that Airbyte was not upgraded
	 * (the first token of a process follows a fresh version read anyway).
	 */
	if (token_renewals++ > 0)
		server_version_stale = true;
	req = request_token();

	answer = parse_answer(req);
	access = json_string(answer, "access_token");
	if (access == NULL || access[0] == '\0')
		answer_lacks(req, "access_token");
	dfe_http_register_secret(access);

	lifetime_s = token_lifetime_s(answer, access);
	margin_s = Min(TOKEN_RENEW_MARGIN_S, lifetime_s * TOKEN_RENEW_FRACTION);
	token_renew_at = TimestampTzPlusMilliseconds(now, (int64) ((lifetime_s - margin_s) * 1000.0));
	token = MemoryContextStrdup(TopMemoryContext, access);
	explicit_bzero(req->response->data, req->response->len);
	cJSON_Delete(answer);
	return token;
}

/* ---------------------------------------------------------------------- */
/* calls                                                                  */
/* ---------------------------------------------------------------------- */

/*
 * One authenticated call.  A 401 drops the token and repeats the call once
 * with a new one.  The request is returned whatever its status; check says
 * whether a non-2xx answer raises at once.
 */
static HttpRequest *
airbyte_call_once(const char *what, const char *method, const char *path,
				  const char *json_body, bool check, bool no_retry)
{
	HttpRequest *req;
	int			round;

	for (round = 0;; round++)
	{
		req = dfe_http_request_new(what, method, airbyte_url(path));
		req->bearer = get_token();
		/* every call carries the JSON content type, GET included */
		req->content_type = "application/json";
		req->body = json_body;
		req->no_retry = no_retry;
		dfe_http_perform_one(req);
		dfe_airbyte_last_http_status = req->status;
		if (req->status == 401 && round == 0)
		{
			ereport(DEBUG1,
					(errmsg_internal("dfe_airbyte: %s answered 401, fetching a new token", what)));
			forget_token();
			continue;
		}
		break;
	}
	if (check)
		dfe_http_check(req);
	return req;
}

static HttpRequest *
airbyte_call(const char *what, const char *method, const char *path,
			 const char *json_body, bool check)
{
	return airbyte_call_once(what, method, path, json_body, check, false);
}

/* ---------------------------------------------------------------------- */
/* the server version                                                     */
/* ---------------------------------------------------------------------- */

/* "1.2.0", "v1.2.0", "1.2.0-rc1" → {1,2,0}; false for "dev" and the like */
static bool
parse_version(const char *text, int out[3])
{
	int			n;

	out[0] = out[1] = out[2] = 0;
	if (*text == 'v' || *text == 'V')
		text++;
	n = sscanf(text, "%d.%d.%d", &out[0], &out[1], &out[2]);
	return n >= 1;
}

const char *
dfe_airbyte_server_version(void)
{
	uint32		h;
	HttpRequest *req;
	cJSON	   *answer;
	const char *version;

	if (!dfe_airbyte_configured())
		return NULL;
	h = config_hash();
	if (server_version != NULL && h == server_version_hash && !server_version_stale)
		return server_version;

	/* anonymous (InstanceConfigurationApiController: IS_ANONYMOUS) */
	req = dfe_http_request_new("the Airbyte version read", "GET",
						   airbyte_url("/api/v1/instance_configuration"));
	req->no_retry = true;
	dfe_http_perform_one(req);
	if (!dfe_http_ok(req))
	{
		/* unknown, asked again next time; the last known one meanwhile */
		return server_version != NULL && h == server_version_hash ? server_version : NULL;
	}
	server_version_stale = false;
	answer = cJSON_Parse(req->response->data);
	version = answer ? json_string(answer, "version") : NULL;
	if (version != NULL && version[0] != '\0')
	{
		/* another version: which token endpoint works may have changed */
		if (server_version != NULL && strcmp(server_version, version) != 0)
			token_endpoint = 0;
		if (server_version)
			pfree(server_version);
		server_version = MemoryContextStrdup(TopMemoryContext, version);
		server_version_parsed = parse_version(server_version, server_version_num);
		server_version_hash = h;
	}
	if (answer)
		cJSON_Delete(answer);
	return server_version != NULL && h == server_version_hash ? server_version : NULL;
}

/* 1: the server is at least major.minor.patch, 0: older, -1: unknown */
static int
airbyte_version_at_least(int major, int minor, int patch)
{
	int			want[3] = {major, minor, patch};

	if (dfe_airbyte_server_version() == NULL || !server_version_parsed)
		return -1;
	for (int i = 0; i < 3; i++)
		if (server_version_num[i] != want[i])
			return server_version_num[i] > want[i] ? 1 : 0;
	return 1;
}

/*
 * Below 0.60.1 the public API has no StreamConfiguration.selectedFields
 * (commit c8781ef13b, absent from config.yaml @ v0.60.0); Airbyte's mapper
 * ignores unknown properties, so the PATCH would select EVERY column of
 * every stream: refuse instead.
 */
static void
refuse_unsafe_version(void)
{
	if (airbyte_version_at_least(0, 60, 1) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("Airbyte %s is too old for dfe_airbyte: the connection was not changed",
						dfe_airbyte_server_version()),
				 errdetail("Airbyte before 0.60.1 ignores selectedFields, so the update would replicate every column of every allowlisted table, sensitive ones included."),
				 errhint("Upgrade Airbyte to 0.60.1 or later (1.2.0 or later recommended); see the supported versions table in the README.")));
}

static char *
json_print(cJSON *obj)
{
	char	   *s = cJSON_PrintUnformatted(obj);

	cJSON_Delete(obj);
	return s;
}

/* the source id: the setting, else read from the connection */
static char *
airbyte_source_id(const char *connection_id)
{
	const char *configured = dfe_setting_source_id();
	HttpRequest *req;
	cJSON	   *answer;
	const char *source;

	if (is_set(configured))
		return pstrdup(configured);
	req = airbyte_call("the Airbyte connection read", "GET",
					   psprintf("/api/public/v1/connections/%s", dfe_http_escape(connection_id)),
					   NULL, true);
	answer = parse_answer(req);
	source = json_string(answer, "sourceId");
	if (source == NULL || source[0] == '\0')
		answer_lacks(req, "sourceId");
	return pstrdup(source);
}

/* POST /api/v1/sources/discover_schema with the cache disabled */
static void
airbyte_discover(const char *source_id)
{
	cJSON	   *body = cJSON_CreateObject();
	HttpRequest *req;
	cJSON	   *answer;
	cJSON	   *info;

	cJSON_AddStringToObject(body, "sourceId", source_id);
	cJSON_AddBoolToObject(body, "disable_cache", true);
	req = airbyte_call("the Airbyte source schema discovery", "POST",
					   "/api/v1/sources/discover_schema", json_print(body), true);
	answer = parse_answer(req);

	/* the discover job can fail while the HTTP call succeeds */
	info = cJSON_GetObjectItemCaseSensitive(answer, "jobInfo");
	if (cJSON_IsObject(info) &&
		cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(info, "succeeded")))
	{
		cJSON	   *reason = cJSON_GetObjectItemCaseSensitive(info, "failureReason");
		const char *msg = NULL;

		if (cJSON_IsObject(reason))
		{
			msg = json_string(reason, "externalMessage");
			if (msg == NULL)
				msg = json_string(reason, "internalMessage");
		}
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("Airbyte could not discover the schema of source %s", source_id),
				 errdetail("%s", msg ? dfe_http_redact(msg) : "The discover job did not succeed and gave no reason."),
				 errhint("Check the source's connection to this database in the Airbyte UI (Sources → Test connection).")));
	}
	cJSON_Delete(answer);
}

char *
dfe_airbyte_refresh_connection(const char *stream_config_json)
{
	const char *connection_id;
	char	   *source_id;
	HttpRequest *req;
	cJSON	   *answer;

	dfe_airbyte_last_http_status = -1;
	dfe_airbyte_require_configuration();
	connection_id = dfe_setting_connection_id();

	refuse_unsafe_version();
	source_id = airbyte_source_id(connection_id);
	airbyte_discover(source_id);

	/* the body goes out byte for byte as dfe_airbyte_stream_config() built it */
	req = airbyte_call("the Airbyte connection update", "PATCH",
					   psprintf("/api/public/v1/connections/%s", dfe_http_escape(connection_id)),
					   stream_config_json, true);
	answer = parse_answer(req);
	cJSON_Delete(answer);
	return pstrdup(req->response->data);
}

/*
 * connection.c, deploy_plan.c, repair.c: one authenticated, checked call
 * whose JSON answer is returned parsed (cJSON memory lives in the current
 * memory context, see dfe_json_init).  Kept apart from the calls above so
 * that the connection-watch features add no lines to them.
 */
cJSON *
dfe_airbyte_request(const char *what, const char *method, const char *path,
				const char *json_body)
{
	HttpRequest *req;

	dfe_airbyte_last_http_status = -1;
	dfe_airbyte_require_configuration();
	req = airbyte_call(what, method, path, json_body, true);
	return parse_answer(req);
}

static int64
json_int64(cJSON *item)
{
	if (cJSON_IsNumber(item))
		return (int64) item->valuedouble;
	if (cJSON_IsString(item))
	{
		char	   *end;
		long long	v = strtoll(item->valuestring, &end, 10);

		if (end != item->valuestring && *end == '\0')
			return (int64) v;
	}
	return -1;
}

static char *
dup_or_null(const char *s)
{
	return s ? pstrdup(s) : NULL;
}

/*
 * startTime of a public JobResponse, "2024-06-01T12:00:05Z" (seconds are
 * left out when zero: OffsetDateTime.toString(), JobResponseMapper) → a
 * timestamp; 0 when absent or unreadable.  Parsed by hand: timestamptz_in
 * could raise on an odd answer.
 */
static TimestampTz
iso_timestamp(const char *text)
{
	struct pg_tm tm;
	int			n;
	int			sec = 0;
	TimestampTz result;

	if (text == NULL)
		return 0;
	memset(&tm, 0, sizeof(tm));
	n = sscanf(text, "%d-%d-%dT%d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
			   &tm.tm_hour, &tm.tm_min, &sec);
	if (n < 5)
		return 0;
	tm.tm_sec = n == 6 ? sec : 0;
	/* Airbyte writes UTC ("Z"); an offset would be ignored here */
	if (tm2timestamp(&tm, 0, NULL, &result) != 0)
		return 0;
	return result;
}

/* a public-API JobResponse into *job */
static void
job_from_json(const HttpRequest *req, cJSON *obj, AirbyteJob *job)
{
	const char *status;

	job->job_id = json_int64(cJSON_GetObjectItemCaseSensitive(obj, "jobId"));
	status = json_string(obj, "status");
	if (job->job_id < 0)
		answer_lacks(req, "jobId");
	if (status == NULL)
		answer_lacks(req, "job status");
	job->status = pstrdup(status);
	job->job_type = dup_or_null(json_string(obj, "jobType"));
	job->start_time = dup_or_null(json_string(obj, "startTime"));
	job->last_updated_at = dup_or_null(json_string(obj, "lastUpdatedAt"));
	job->created_at = iso_timestamp(job->start_time);
	/* progress, for the data flow checks (flow_checks.c) */
	job->rows_synced = json_int64(cJSON_GetObjectItemCaseSensitive(obj, "rowsSynced"));
	job->bytes_synced = json_int64(cJSON_GetObjectItemCaseSensitive(obj, "bytesSynced"));
}

/* a config-API JobRead ({"id","configType","status","createdAt"(s)}) */
static void
job_from_config_json(const HttpRequest *req, cJSON *obj, AirbyteJob *job)
{
	const char *status = json_string(obj, "status");
	const char *type = json_string(obj, "configType");
	int64		created = json_int64(cJSON_GetObjectItemCaseSensitive(obj, "createdAt"));

	memset(job, 0, sizeof(*job));
	job->job_id = json_int64(cJSON_GetObjectItemCaseSensitive(obj, "id"));
	if (job->job_id < 0)
		answer_lacks(req, "job id");
	if (status == NULL)
		answer_lacks(req, "job status");
	job->status = pstrdup(status);
	/* the public API's names: reset_connection is "reset" there */
	job->job_type = pstrdup(type == NULL ? "unknown"
							: strcmp(type, "reset_connection") == 0 ? "reset" : type);
	if (created > 0)
		job->created_at = time_t_to_timestamptz((pg_time_t) created);
	/* the config API's JobRead carries no progress counters */
	job->rows_synced = -1;
	job->bytes_synced = -1;
}

bool
dfe_airbyte_last_job(const char *job_type, AirbyteJob *job)
{
	HttpRequest *req;
	cJSON	   *answer;
	cJSON	   *data;
	bool		found = false;

	dfe_airbyte_last_http_status = -1;
	dfe_airbyte_require_configuration();
	/* the default order is ascending: without orderBy, limit=1 is the oldest */
	req = airbyte_call("the Airbyte last job read", "GET",
					   psprintf("/api/public/v1/jobs?connectionId=%s&jobType=%s&limit=1&orderBy=createdAt%%7CDESC",
								dfe_http_escape(dfe_setting_connection_id()),
								dfe_http_escape(job_type)),
					   NULL, true);
	answer = parse_answer(req);
	data = cJSON_GetObjectItemCaseSensitive(answer, "data");
	if (!cJSON_IsArray(data))
		answer_lacks(req, "data list");
	if (cJSON_GetArraySize(data) > 0)
	{
		job_from_json(req, cJSON_GetArrayItem(data, 0), job);
		found = true;
	}
	cJSON_Delete(answer);
	return found;
}

/*
 * The job list is chosen by version (dfe_airbyte_recent_jobs): a 4xx other than
 * an authentication or rate limit answer means it does not exist in this
 * server's version, so the version is read again before the next try.
 */
static void
job_list_check(const HttpRequest *req)
{
	if (req->status >= 400 && req->status < 500 && req->status != 401 &&
		req->status != 403 && req->status != 429)
		server_version_stale = true;
	dfe_http_check(req);
}

int
dfe_airbyte_recent_jobs(AirbyteJob *jobs, int max)
{
	HttpRequest *req;
	cJSON	   *answer;
	cJSON	   *list;
	cJSON	   *item;
	int			n = 0;
	const char *connection_id;

	dfe_airbyte_require_configuration();
	connection_id = dfe_setting_connection_id();
	if (airbyte_version_at_least(1, 8, 0) == 1)
	{
		/* from 1.8.0 the public JobTypeEnum has refresh and clear */
		req = airbyte_call("the Airbyte job list", "GET",
						   psprintf("/api/public/v1/jobs?connectionId=%s&limit=%d&orderBy=createdAt%%7CDESC",
									dfe_http_escape(connection_id), max),
						   NULL, false);
		job_list_check(req);
		answer = parse_answer(req);
		list = cJSON_GetObjectItemCaseSensitive(answer, "data");
		if (!cJSON_IsArray(list))
			answer_lacks(req, "data list");
		cJSON_ArrayForEach(item, list)
		{
			if (n >= max)
				break;
			memset(&jobs[n], 0, sizeof(AirbyteJob));
			job_from_json(req, item, &jobs[n]);
			n++;
		}
	}
	else
	{
		/*
		 * Before 1.8.0 (or when the version is unknown) the config API,
		 * which lists every job type in every version, newest first:
		 * JobListRequestBody {configTypes*, configId, pagination} →
		 * JobReadList {jobs: [{job, attempts}], totalJobCount} (config.yaml).
		 * "clear" joined JobConfigType in 1.0; older servers would reject it.
		 */
		cJSON	   *body = cJSON_CreateObject();
		cJSON	   *types = cJSON_AddArrayToObject(body, "configTypes");
		cJSON	   *page = cJSON_AddObjectToObject(body, "pagination");

		cJSON_AddItemToArray(types, cJSON_CreateString("sync"));
		cJSON_AddItemToArray(types, cJSON_CreateString("reset_connection"));
		cJSON_AddItemToArray(types, cJSON_CreateString("refresh"));
		if (airbyte_version_at_least(1, 0, 0) == 1)
			cJSON_AddItemToArray(types, cJSON_CreateString("clear"));
		cJSON_AddStringToObject(body, "configId", connection_id);
		cJSON_AddNumberToObject(page, "pageSize", max);
		cJSON_AddNumberToObject(page, "rowOffset", 0);
		req = airbyte_call("the Airbyte job list", "POST", "/api/v1/jobs/list",
						   json_print(body), false);
		job_list_check(req);
		answer = parse_answer(req);
		list = cJSON_GetObjectItemCaseSensitive(answer, "jobs");
		if (!cJSON_IsArray(list))
			answer_lacks(req, "jobs list");
		cJSON_ArrayForEach(item, list)
		{
			cJSON	   *job = cJSON_GetObjectItemCaseSensitive(item, "job");

			if (n >= max)
				break;
			if (!cJSON_IsObject(job))
				answer_lacks(req, "job in the jobs list");
			job_from_config_json(req, job, &jobs[n]);
			n++;
		}
	}
	cJSON_Delete(answer);
	return n;
}

bool
dfe_airbyte_latest_active_job(AirbyteJob *job)
{
	AirbyteJob	jobs[RECENT_JOBS];
	int			n = dfe_airbyte_recent_jobs(jobs, RECENT_JOBS);

	/* newest first: the first one that has not ended */
	for (int i = 0; i < n; i++)
		if (dfe_airbyte_job_active(jobs[i].status))
		{
			*job = jobs[i];
			return true;
		}
	return false;
}

int64
dfe_airbyte_api_start_sync(bool *already_running)
{
	HttpRequest *req = NULL;
	cJSON	   *answer;
	AirbyteJob	job;

	dfe_airbyte_last_http_status = -1;
	dfe_airbyte_require_configuration();
	*already_running = false;
	for (int round = 0; round < START_SYNC_ROUNDS; round++)
	{
		cJSON	   *body = cJSON_CreateObject();

		cJSON_AddStringToObject(body, "connectionId", dfe_setting_connection_id());
		cJSON_AddStringToObject(body, "jobType", "sync");
		req = airbyte_call("the Airbyte sync start", "POST", "/api/public/v1/jobs",
						   json_print(body), false);
		if (req->status != 409)
			break;

		/*
		 * 409 "A sync is already running for: ..." comes for a running job
		 * of ANY type — a refresh, reset or clear too (TemporalClient.
		 * startNewManualSync: isWorkflowStateRunning).  Follow the newest
		 * job that has not ended; a finished sync is never "the running
		 * one".  When none is found, it ended in between: try again.
		 */
		if (dfe_airbyte_latest_active_job(&job))
		{
			*already_running = true;
			return job.job_id;
		}
		if (round + 1 < START_SYNC_ROUNDS)
			dfe_sleep_ms(START_SYNC_PAUSE_MS);
	}
	if (req->status == 409)
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("Airbyte refused to start a sync but lists no running job"),
				 errdetail("POST /api/public/v1/jobs answered HTTP 409 %d times: %s",
						   START_SYNC_ROUNDS, dfe_http_server_message(req)),
				 errhint("A job may be starting for the connection; try again when the Airbyte UI shows it.")));
	dfe_http_check(req);
	answer = parse_answer(req);
	job_from_json(req, answer, &job);
	cJSON_Delete(answer);
	return job.job_id;
}

void
dfe_airbyte_get_job(int64 job_id, AirbyteJob *job)
{
	HttpRequest *req;
	cJSON	   *answer;

	dfe_airbyte_last_http_status = -1;
	dfe_airbyte_require_configuration();
	req = airbyte_call("the Airbyte job read", "GET",
					   psprintf("/api/public/v1/jobs/" INT64_FORMAT, job_id),
					   NULL, true);
	answer = parse_answer(req);
	job_from_json(req, answer, job);
	cJSON_Delete(answer);
}

AirbyteRefreshAnswer
dfe_airbyte_full_resync(int64 *job_id)
{
	cJSON	   *body;
	HttpRequest *req;
	cJSON	   *answer;
	cJSON	   *item;
	AirbyteRefreshAnswer result;

	dfe_airbyte_last_http_status = -1;
	dfe_airbyte_require_configuration();
	*job_id = -1;
	body = cJSON_CreateObject();
	cJSON_AddStringToObject(body, "connectionId", dfe_setting_connection_id());
	cJSON_AddStringToObject(body, "refreshMode", "Merge");

	/*
	 * One attempt only: StreamRefreshesHandler saves the streams to refresh
	 * BEFORE it starts a job, so a retry after a lost answer would queue a
	 * second full refresh (airbyte-platform, StreamRefreshesHandler.
	 * createRefreshesForConnection and ConnectionApiController).
	 */
	req = airbyte_call_once("the Airbyte full re-sync", "POST", "/api/v1/connections/refresh",
							json_print(body), false, true);
	if (req->status == 0 && !dfe_http_never_sent(req))
		return REFRESH_LOST;

	/*
	 * 500 and 504: the server (or a gateway waiting for it) may have saved
	 * the rows and then failed.  502 and 503 come from a gateway that could
	 * not reach the server, and 429 from a rate limit in front of it: the
	 * request did not arrive, like a refused connection or a 4xx.
	 */
	if (req->status == 500 || req->status == 504 ||
		(req->status > 504 && req->status < 600))
		return REFRESH_LOST;
	dfe_http_check(req);			/* never sent, 502/503/429 or a 4xx: nothing saved */

	/*
	 * <= 1.1.x: BooleanRead {"value"} (config.yaml @ v1.1.0;
	 * ConnectionApiController.java @ v1.1.0:176); >= 1.2.0: JobReadResponse
	 * {"job": JobRead | null}, null with HTTP 200 when a job already runs or
	 * the destination lacks refreshes (commit d64b416732).  Never 409.
	 */
	answer = cJSON_Parse(req->response->data);
	item = answer ? cJSON_GetObjectItemCaseSensitive(answer, "value") : NULL;
	if (cJSON_IsBool(item))
		result = cJSON_IsTrue(item) ? REFRESH_ACCEPTED : REFRESH_UNSUPPORTED;
	else if (answer && (item = cJSON_GetObjectItemCaseSensitive(answer, "job")) != NULL)
	{
		*job_id = cJSON_IsObject(item)
			? json_int64(cJSON_GetObjectItemCaseSensitive(item, "id")) : -1;
		result = *job_id >= 0 ? REFRESH_JOB : REFRESH_NULL_JOB;
	}
	else
		result = REFRESH_ACCEPTED;	/* a 2xx: accepted, shape unknown */
	if (answer)
		cJSON_Delete(answer);
	return result;
}

bool
dfe_airbyte_job_finished(const char *status)
{
	return strcmp(status, "succeeded") == 0 || strcmp(status, "failed") == 0 ||
		strcmp(status, "cancelled") == 0;
}

bool
dfe_airbyte_job_active(const char *status)
{
	return !dfe_airbyte_job_finished(status);
}

bool
dfe_airbyte_transient_status(long status)
{
	return status == 0 || status == 429 || status >= 500;
}

/* "5s", "2m 10s", "1h 0m 5s" */
char *
dfe_airbyte_format_duration(int64 secs)
{
	if (secs < 0)
		secs = 0;
	if (secs < 60)
		return psprintf(INT64_FORMAT "s", secs);
	if (secs < 3600)
		return psprintf(INT64_FORMAT "m " INT64_FORMAT "s", secs / 60, secs % 60);
	return psprintf(INT64_FORMAT "h " INT64_FORMAT "m " INT64_FORMAT "s",
					secs / 3600, (secs % 3600) / 60, secs % 60);
}

/* ---------------------------------------------------------------------- */
/* SQL functions                                                          */
/* ---------------------------------------------------------------------- */

PG_FUNCTION_INFO_V1(dfe_airbyte_connection_refresh);
PG_FUNCTION_INFO_V1(dfe_airbyte_start_sync);
PG_FUNCTION_INFO_V1(dfe_airbyte_job_status);
PG_FUNCTION_INFO_V1(dfe_airbyte_wait_for_job);

/* the target argument of a function acting on one service ("local" without it) */
static DfeTargetScope *
enter_target_arg(FunctionCallInfo fcinfo, int argno)
{
	return dfe_target_scope_enter(PG_NARGS() > argno
								  ? text_to_cstring(PG_GETARG_TEXT_PP(argno)) : DFE_LOCAL_TARGET);
}

/*
 * dfe_airbyte_connection_refresh(target text DEFAULT 'local') → jsonb:
 * Airbyte's answer to the PATCH of the target's connection
 */
Datum
dfe_airbyte_connection_refresh(PG_FUNCTION_ARGS)
{
	DfeTargetScope *scope;
	char	   *config;
	char	   *answer;

	DFE_REQUIRE_MATCHING_SQL();
	scope = enter_target_arg(fcinfo, 0);
	dfe_airbyte_require_configuration();
	config = dfe_stream_config_build();
	answer = dfe_airbyte_refresh_connection(config);
	dfe_target_scope_leave(scope);
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(answer)));
}

/* dfe_airbyte_start_sync(target text DEFAULT 'local') → bigint */
Datum
dfe_airbyte_start_sync(PG_FUNCTION_ARGS)
{
	DfeTargetScope *scope;
	bool		already_running;
	int64		job_id;

	DFE_REQUIRE_MATCHING_SQL();
	scope = enter_target_arg(fcinfo, 0);
	job_id = dfe_airbyte_api_start_sync(&already_running);
	dfe_target_scope_leave(scope);
	if (already_running)
		ereport(NOTICE,
				(errmsg("a job is already running: job " INT64_FORMAT, job_id),
				 errhint("Wait for it with SELECT dfe_airbyte_wait_for_job(" INT64_FORMAT ").", job_id)));
	PG_RETURN_INT64(job_id);
}

/* dfe_airbyte_job_status(job_id bigint) → text */
Datum
dfe_airbyte_job_status(PG_FUNCTION_ARGS)
{
	AirbyteJob	job;

	DFE_REQUIRE_MATCHING_SQL();
	dfe_airbyte_get_job(PG_GETARG_INT64(0), &job);
	PG_RETURN_TEXT_P(cstring_to_text(job.status));
}

/* dfe_airbyte_wait_for_job(job_id bigint, timeout interval) → text */
Datum
dfe_airbyte_wait_for_job(PG_FUNCTION_ARGS)
{
	int64		job_id = PG_GETARG_INT64(0);
	Interval   *timeout = PG_GETARG_INTERVAL_P(1);
	int64		timeout_us;
	TimestampTz start = GetCurrentTimestamp();

	DFE_REQUIRE_MATCHING_SQL();
	timeout_us = timeout->time +
		(int64) timeout->day * USECS_PER_DAY +
		(int64) timeout->month * DAYS_PER_MONTH * USECS_PER_DAY;
	if (timeout_us < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the timeout must not be negative"),
				 errhint("Pass an interval such as '1 hour'.")));

	for (;;)
	{
		AirbyteJob	job;
		int64		elapsed_us;

		dfe_airbyte_get_job(job_id, &job);
		elapsed_us = GetCurrentTimestamp() - start;

		if (strcmp(job.status, "succeeded") == 0)
			PG_RETURN_TEXT_P(cstring_to_text(job.status));
		if (dfe_airbyte_job_finished(job.status))
			ereport(ERROR,
					(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
					 errmsg("Airbyte job " INT64_FORMAT " %s", job_id,
							strcmp(job.status, "cancelled") == 0 ? "was cancelled" : "failed"),
					 errdetail("The job ended with status %s after %s of waiting.", job.status,
							   dfe_airbyte_format_duration(elapsed_us / USECS_PER_SEC)),
					 errhint("See the job's logs in the Airbyte UI (connection %s, job " INT64_FORMAT ").",
							 dfe_setting_connection_id(), job_id)));
		if (elapsed_us >= timeout_us)
			ereport(ERROR,
					(errcode(ERRCODE_QUERY_CANCELED),
					 errmsg("Airbyte job " INT64_FORMAT " did not finish within %s", job_id,
							dfe_airbyte_format_duration(timeout_us / USECS_PER_SEC)),
					 errdetail("Its status is still %s.", job.status),
					 errhint("The job goes on in Airbyte; wait again with a longer timeout, e.g. SELECT dfe_airbyte_wait_for_job(" INT64_FORMAT ", '2 hours').",
							 job_id)));

		ereport(NOTICE,
				(errmsg("job " INT64_FORMAT ": %s (%s elapsed)", job_id, job.status,
						dfe_airbyte_format_duration(elapsed_us / USECS_PER_SEC))));

		dfe_sleep_ms(Min((int64) dfe_job_poll_interval_s * 1000L,
								(timeout_us - elapsed_us) / 1000 + 1));
	}
}
