/*
 * airbyte.c — the Airbyte API client (SPEC §4) and the SQL functions that
 * expose it: dfe_airbyte_connection_refresh(), dfe_airbyte_start_sync(),
 * dfe_airbyte_job_status() and dfe_airbyte_wait_for_job().
 *
 * The access token is cached per process in TopMemoryContext until shortly
 * before it expires (60 s, or a tenth of its lifetime when that is less).
 * A 401 from any call drops it, fetches a new one and repeats the call
 * once.  Servers before Airbyte 0.63.10 have no public token endpoint: on a
 * 404 we use the old config-API one, whose answer has no expires_in, and
 * read the expiry from the JWT's exp claim instead.  Which endpoint works
 * is remembered for the process.
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
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include <cjson/cJSON.h>

#include "airbyte.h"
#include "http.h"
#include "settings.h"
#include "stream_config.h"

/* a token without any expiry information is kept this long */
#define TOKEN_DEFAULT_LIFETIME_S 180
/* renew this long before expiry at most ... */
#define TOKEN_RENEW_MARGIN_S 60
/* ... or a tenth of the lifetime when that is shorter */
#define TOKEN_RENEW_FRACTION 0.1
/* how much of a malformed answer an error quotes */
#define ANSWER_EXCERPT 120

long		airbyte_last_http_status = -1;

/* the token cache (TopMemoryContext) */
static char *token = NULL;
static TimestampTz token_renew_at = 0;
static uint32 token_config_hash = 0;
/* 0: not known yet, 1: public endpoint works, 2: only the legacy one */
static int	token_endpoint = 0;

/* ---------------------------------------------------------------------- */
/* configuration                                                          */
/* ---------------------------------------------------------------------- */

static bool
is_set(const char *s)
{
	return s != NULL && s[0] != '\0';
}

bool
airbyte_configured(void)
{
	return is_set(dfe_setting_airbyte_url()) &&
		is_set(dfe_setting_airbyte_client_id()) &&
		is_set(dfe_setting_airbyte_client_secret()) &&
		is_set(dfe_setting_connection_id());
}

void
airbyte_require_configuration(void)
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
						   req->method, http_redact(req->url), req->status,
						   req->response->len, http_redact(excerpt)),
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
	ereport(ERROR,
			(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
			 errmsg("Airbyte's answer to %s has no %s", req->what, what),
			 errdetail("%s %s answered: %s", req->method, http_redact(req->url),
					   http_redact(pnstrdup(req->response->data, 300))),
			 errhint("Check that dfe_airbyte.airbyte_url points at a supported Airbyte server (0.50 or later).")));
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
	outlen = pg_b64_decode(b64, padded, out, pg_b64_dec_len(padded));
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

	req = http_request_new("the Airbyte token request", "POST",
						   airbyte_url(legacy ? "/api/v1/applications/token"
									   : "/api/public/v1/applications/token"));
	http_set_json_body(req, json);
	PG_TRY();
	{
		http_perform_one(req);
	}
	PG_FINALLY();
	{
		explicit_bzero(json, strlen(json));
		pfree(json);
		req->body = NULL;
	}
	PG_END_TRY();
	airbyte_last_http_status = req->status;
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

static const char *
get_token(void)
{
	TimestampTz now = GetCurrentTimestamp();
	uint32		h;
	HttpRequest *req;
	cJSON	   *answer;
	const char *access;
	cJSON	   *expires_in;
	double		lifetime_s;
	double		margin_s;

	airbyte_require_configuration();
	http_register_secret(dfe_setting_airbyte_client_secret());

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

	req = token_request(token_endpoint == 2);
	if (req->status == 404 && token_endpoint != 2)
	{
		/* Airbyte before 0.63.10: only the config API issues tokens */
		ereport(DEBUG1,
				(errmsg_internal("dfe_airbyte: the public token endpoint answered 404, using /api/v1/applications/token")));
		req = token_request(true);
		if (http_ok(req))
			token_endpoint = 2;
	}
	else if (http_ok(req) && token_endpoint == 0)
		token_endpoint = 1;

	if (req->status == 401 || req->status == 403)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("Airbyte rejected the client credentials: HTTP %ld", req->status),
				 errdetail("POST %s answered: %s", http_redact(req->url),
						   http_server_message(req)),
				 errhint("Check dfe_airbyte.airbyte_client_id and dfe_airbyte.airbyte_client_secret (AIRBYTE_CLIENT_ID, AIRBYTE_CLIENT_SECRET).")));
	http_check(req);

	answer = parse_answer(req);
	access = json_string(answer, "access_token");
	if (access == NULL || access[0] == '\0')
		answer_lacks(req, "access_token");
	http_register_secret(access);

	expires_in = cJSON_GetObjectItemCaseSensitive(answer, "expires_in");
	if (cJSON_IsNumber(expires_in) && expires_in->valuedouble > 0)
		lifetime_s = expires_in->valuedouble;
	else
	{
		double		exp = jwt_exp(access);

		if (exp > 0)
			lifetime_s = exp - (double) time(NULL);
		else
			lifetime_s = TOKEN_DEFAULT_LIFETIME_S;
	}
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
airbyte_call(const char *what, const char *method, const char *path,
			 const char *json_body, bool check)
{
	HttpRequest *req;
	int			round;

	for (round = 0;; round++)
	{
		req = http_request_new(what, method, airbyte_url(path));
		req->bearer = get_token();
		/* every call carries the JSON content type, GET included */
		req->content_type = "application/json";
		req->body = json_body;
		http_perform_one(req);
		airbyte_last_http_status = req->status;
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
		http_check(req);
	return req;
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
					   psprintf("/api/public/v1/connections/%s", http_escape(connection_id)),
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
				 errdetail("%s", msg ? http_redact(msg) : "The discover job did not succeed and gave no reason."),
				 errhint("Check the source's connection to this database in the Airbyte UI (Sources → Test connection).")));
	}
	cJSON_Delete(answer);
}

char *
airbyte_refresh_connection(const char *stream_config_json)
{
	const char *connection_id;
	char	   *source_id;
	HttpRequest *req;
	cJSON	   *answer;

	airbyte_last_http_status = -1;
	airbyte_require_configuration();
	connection_id = dfe_setting_connection_id();

	source_id = airbyte_source_id(connection_id);
	airbyte_discover(source_id);

	/* the body goes out byte for byte as dfe_airbyte_stream_config() built it */
	req = airbyte_call("the Airbyte connection update", "PATCH",
					   psprintf("/api/public/v1/connections/%s", http_escape(connection_id)),
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
airbyte_request(const char *what, const char *method, const char *path,
				const char *json_body)
{
	HttpRequest *req;

	airbyte_last_http_status = -1;
	airbyte_require_configuration();
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
	job->rows_synced = json_int64(cJSON_GetObjectItemCaseSensitive(obj, "rowsSynced"));
	job->bytes_synced = json_int64(cJSON_GetObjectItemCaseSensitive(obj, "bytesSynced"));
}

bool
airbyte_last_job(const char *job_type, AirbyteJob *job)
{
	HttpRequest *req;
	cJSON	   *answer;
	cJSON	   *data;
	bool		found = false;

	airbyte_last_http_status = -1;
	airbyte_require_configuration();
	/* the default order is ascending: without orderBy, limit=1 is the oldest */
	req = airbyte_call("the Airbyte last job read", "GET",
					   psprintf("/api/public/v1/jobs?connectionId=%s&jobType=%s&limit=1&orderBy=createdAt%%7CDESC",
								http_escape(dfe_setting_connection_id()),
								http_escape(job_type)),
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

int64
airbyte_start_sync(bool *already_running)
{
	cJSON	   *body;
	HttpRequest *req;
	cJSON	   *answer;
	AirbyteJob	job;

	airbyte_last_http_status = -1;
	airbyte_require_configuration();
	*already_running = false;
	body = cJSON_CreateObject();
	cJSON_AddStringToObject(body, "connectionId", dfe_setting_connection_id());
	cJSON_AddStringToObject(body, "jobType", "sync");
	req = airbyte_call("the Airbyte sync start", "POST", "/api/public/v1/jobs",
					   json_print(body), false);
	if (req->status == 409)
	{
		/* "A sync is already running for: ..." — use that job */
		char	   *message = http_server_message(req);

		if (!airbyte_last_job("sync", &job))
			ereport(ERROR,
					(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
					 errmsg("Airbyte refused to start a sync but lists no sync job"),
					 errdetail("POST /api/public/v1/jobs answered HTTP 409: %s", message),
					 errhint("Another kind of job (a reset or refresh) may be running for the connection; try again when it ends.")));
		*already_running = true;
		return job.job_id;
	}
	http_check(req);
	answer = parse_answer(req);
	job_from_json(req, answer, &job);
	cJSON_Delete(answer);
	return job.job_id;
}

void
airbyte_get_job(int64 job_id, AirbyteJob *job)
{
	HttpRequest *req;
	cJSON	   *answer;

	airbyte_last_http_status = -1;
	airbyte_require_configuration();
	req = airbyte_call("the Airbyte job read", "GET",
					   psprintf("/api/public/v1/jobs/" INT64_FORMAT, job_id),
					   NULL, true);
	answer = parse_answer(req);
	job_from_json(req, answer, job);
	cJSON_Delete(answer);
}

int64
airbyte_full_resync(void)
{
	cJSON	   *body;
	HttpRequest *req;
	cJSON	   *answer;
	cJSON	   *jobobj;
	int64		id;

	airbyte_last_http_status = -1;
	airbyte_require_configuration();
	body = cJSON_CreateObject();
	cJSON_AddStringToObject(body, "connectionId", dfe_setting_connection_id());
	cJSON_AddStringToObject(body, "refreshMode", "Merge");
	req = airbyte_call("the Airbyte full re-sync", "POST", "/api/v1/connections/refresh",
					   json_print(body), true);
	answer = parse_answer(req);
	jobobj = cJSON_GetObjectItemCaseSensitive(answer, "job");
	id = cJSON_IsObject(jobobj) ? json_int64(cJSON_GetObjectItemCaseSensitive(jobobj, "id")) : -1;
	if (id < 0)
		answer_lacks(req, "job id");
	cJSON_Delete(answer);
	return id;
}

bool
airbyte_job_finished(const char *status)
{
	return strcmp(status, "succeeded") == 0 || strcmp(status, "failed") == 0 ||
		strcmp(status, "cancelled") == 0;
}

bool
airbyte_job_active(const char *status)
{
	return !airbyte_job_finished(status);
}

bool
airbyte_transient_status(long status)
{
	return status == 0 || status == 429 || status >= 500;
}

/* "5s", "2m 10s", "1h 0m 5s" */
char *
airbyte_format_duration(int64 secs)
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

/* dfe_airbyte_connection_refresh() → jsonb: Airbyte's answer to the PATCH */
Datum
dfe_airbyte_connection_refresh(PG_FUNCTION_ARGS)
{
	char	   *config;
	char	   *answer;

	airbyte_require_configuration();
	config = stream_config_build();
	answer = airbyte_refresh_connection(config);
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(answer)));
}

/* dfe_airbyte_start_sync() → bigint */
Datum
dfe_airbyte_start_sync(PG_FUNCTION_ARGS)
{
	bool		already_running;
	int64		job_id = airbyte_start_sync(&already_running);

	if (already_running)
		ereport(NOTICE,
				(errmsg("a sync is already running: job " INT64_FORMAT, job_id),
				 errhint("Wait for it with SELECT dfe_airbyte_wait_for_job(" INT64_FORMAT ").", job_id)));
	PG_RETURN_INT64(job_id);
}

/* dfe_airbyte_job_status(job_id bigint) → text */
Datum
dfe_airbyte_job_status(PG_FUNCTION_ARGS)
{
	AirbyteJob	job;

	airbyte_get_job(PG_GETARG_INT64(0), &job);
	PG_RETURN_TEXT_P(cstring_to_text(job.status));
}

/* sleep ms in slices of at most a second, interruptible */
static void
sleep_interruptible(long ms)
{
	TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ms);

	for (;;)
	{
		long		left;

		CHECK_FOR_INTERRUPTS();
		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), until);
		if (left <= 0)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Min(left, 1000L), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/* dfe_airbyte_wait_for_job(job_id bigint, timeout interval) → text */
Datum
dfe_airbyte_wait_for_job(PG_FUNCTION_ARGS)
{
	int64		job_id = PG_GETARG_INT64(0);
	Interval   *timeout = PG_GETARG_INTERVAL_P(1);
	int64		timeout_us;
	TimestampTz start = GetCurrentTimestamp();

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

		airbyte_get_job(job_id, &job);
		elapsed_us = GetCurrentTimestamp() - start;

		if (strcmp(job.status, "succeeded") == 0)
			PG_RETURN_TEXT_P(cstring_to_text(job.status));
		if (airbyte_job_finished(job.status))
			ereport(ERROR,
					(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
					 errmsg("Airbyte job " INT64_FORMAT " %s", job_id,
							strcmp(job.status, "cancelled") == 0 ? "was cancelled" : "failed"),
					 errdetail("The job ended with status %s after %s of waiting.", job.status,
							   airbyte_format_duration(elapsed_us / USECS_PER_SEC)),
					 errhint("See the job's logs in the Airbyte UI (connection %s, job " INT64_FORMAT ").",
							 dfe_setting_connection_id(), job_id)));
		if (elapsed_us >= timeout_us)
			ereport(ERROR,
					(errcode(ERRCODE_QUERY_CANCELED),
					 errmsg("Airbyte job " INT64_FORMAT " did not finish within %s", job_id,
							airbyte_format_duration(timeout_us / USECS_PER_SEC)),
					 errdetail("Its status is still %s.", job.status),
					 errhint("The job goes on in Airbyte; wait again with a longer timeout, e.g. SELECT dfe_airbyte_wait_for_job(" INT64_FORMAT ", '2 hours').",
							 job_id)));

		ereport(NOTICE,
				(errmsg("job " INT64_FORMAT ": %s (%s elapsed)", job_id, job.status,
						airbyte_format_duration(elapsed_us / USECS_PER_SEC))));

		sleep_interruptible(Min((int64) dfe_job_poll_interval_s * 1000L,
								(timeout_us - elapsed_us) / 1000 + 1));
	}
}
