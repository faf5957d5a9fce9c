/*
 * bq_query.c — BigQuery jobs.query with a dry run, a bytes-billed cap and
 * getQueryResults polling (see bq_query.h for the rules and sources).
 *
 * The answer of jobs.query carries jobComplete; while it is false the rows
 * are fetched with GET .../queries/{jobId}?location=… (getQueryResults),
 * and further pages the same way with pageToken.  Between polls the wait is
 * dfe_sleep_ms(), which checks for interrupts every 200 ms, so
 * pg_cancel_backend() and SIGTERM end a long query wait.
 */
#include "postgres.h"

#include <cjson/cJSON.h>

#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/wait_event.h"

#include "bq_query.h"
#include "google_auth.h"
#include "http.h"
#include "settings.h"
#include "shared.h"

#define POLL_MS 500
/* how long one getQueryResults call may wait server-side */
#define GET_TIMEOUT_MS 10000

/* the first error reason of a Google error body, or NULL */
static char *
error_reason(const HttpRequest *req)
{
	cJSON	   *root = cJSON_Parse(req->response ? req->response->data : "");
	cJSON	   *err = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "error") : NULL;
	cJSON	   *errors = cJSON_IsObject(err) ? cJSON_GetObjectItemCaseSensitive(err, "errors") : NULL;
	cJSON	   *item;
	char	   *reason = NULL;

	if (cJSON_IsArray(errors))
	{
		cJSON_ArrayForEach(item, errors)
		{
			cJSON	   *r = cJSON_GetObjectItemCaseSensitive(item, "reason");

			if (cJSON_IsString(r))
			{
				reason = pstrdup(r->valuestring);
				break;
			}
		}
	}
	cJSON_Delete(root);
	return reason;
}

/* the HTTP layer's final_5xx: the bytes-billed cap is not transient */
static bool
bq_final_5xx(const HttpRequest *req)
{
	char	   *reason = error_reason(req);
	bool		final = reason != NULL && strcmp(reason, "bytesBilledLimitExceeded") == 0;

	if (reason)
		pfree(reason);
	return final;
}

/* rate limits come as 403/400 with reason rateLimitExceeded: transient */
static bool
bq_transient_4xx(const HttpRequest *req)
{
	char	   *reason = error_reason(req);
	bool		transient = reason != NULL &&
		(strcmp(reason, "rateLimitExceeded") == 0 || strcmp(reason, "backendError") == 0);

	if (reason)
		pfree(reason);
	return transient;
}

static char *
base_url(void)
{
	char	   *url = pstrdup(dfe_setting_bigquery_url());
	size_t		len = strlen(url);

	while (len > 0 && url[len - 1] == '/')
		url[--len] = '\0';
	return url;
}

static const char *
project(void)
{
	const char *p = dfe_setting_bigquery_project();

	if (p == NULL || p[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("dfe_airbyte.bigquery_project is not set"),
				 errhint("Set dfe_airbyte.bigquery_project (env BIGQUERY_PROJECT_ID): reconciliation queries run there.")));
	return p;
}

/*
 * The datasets' location, taken from the hidden policy tag
 * (projects/P/locations/L/…): a policy tag can only be attached to columns
 * of tables in its own location (BigQuery column-level security docs), so
 * it is where the queries must run.  NULL: BigQuery infers the location
 * from the datasets the query reads.
 */
static char *
query_location(void)
{
	const char *tag = dfe_setting_hidden_policy_tag();
	const char *p;
	const char *end;

	if (tag == NULL || (p = strstr(tag, "/locations/")) == NULL)
		return NULL;
	p += strlen("/locations/");
	end = strchr(p, '/');
	if (end == NULL || end == p)
		return NULL;
	return pnstrdup(p, end - p);
}

/* one call with the Google token; a 401 fetches a new token once */
static HttpRequest *
call(const char *what, const char *method, const char *url, const char *body)
{
	HttpRequest *req = NULL;
	int			attempt;

	for (attempt = 0; attempt < 2; attempt++)
	{
		req = dfe_http_request_new(what, method, url);
		if (body)
			dfe_http_set_json_body(req, body);
		req->bearer = dfe_google_access_token();
		req->retry_4xx = bq_transient_4xx;
		req->final_5xx = bq_final_5xx;
		dfe_http_perform_one(req);
		if (req->status != 401)
			break;
		dfe_google_forget_access_token();
	}
	return req;
}

static void
fail(BqResult *res, const HttpRequest *req)
{
	res->ok = false;
	res->status = req->status;
	res->reason = req->status != 0 ? error_reason(req) : NULL;
	res->message = dfe_http_server_message(req);
}

static int64
json_int64(cJSON *obj, const char *key)
{
	cJSON	   *v = cJSON_GetObjectItemCaseSensitive(obj, key);

	if (cJSON_IsString(v))
		return strtoll(v->valuestring, NULL, 10);
	if (cJSON_IsNumber(v))
		return (int64) v->valuedouble;
	return 0;
}

static char *
json_str(cJSON *obj, const char *key)
{
	cJSON	   *v = cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;

	return cJSON_IsString(v) ? pstrdup(v->valuestring) : NULL;
}

/* appends rows[].f[].v of one answer to res */
static void
take_rows(BqResult *res, cJSON *root)
{
	cJSON	   *fields = cJSON_GetObjectItemCaseSensitive(
		cJSON_GetObjectItemCaseSensitive(root, "schema"), "fields");
	cJSON	   *rows = cJSON_GetObjectItemCaseSensitive(root, "rows");
	cJSON	   *row;
	int			n = cJSON_GetArraySize(rows);

	if (res->fields == NULL && cJSON_IsArray(fields))
	{
		cJSON	   *f;
		int			i = 0;

		res->nfields = cJSON_GetArraySize(fields);
		res->fields = palloc0(sizeof(char *) * Max(res->nfields, 1));
		cJSON_ArrayForEach(f, fields)
			res->fields[i++] = json_str(f, "name");
	}
	if (!cJSON_IsArray(rows) || n == 0)
		return;
	res->rows = res->rows ? repalloc(res->rows, sizeof(char **) * (res->nrows + n))
		: palloc(sizeof(char **) * n);
	cJSON_ArrayForEach(row, rows)
	{
		cJSON	   *cells = cJSON_GetObjectItemCaseSensitive(row, "f");
		char	  **out = palloc0(sizeof(char *) * Max(res->nfields, 1));
		cJSON	   *cell;
		int			j = 0;

		cJSON_ArrayForEach(cell, cells)
		{
			if (j < res->nfields)
				out[j] = json_str(cell, "v");
			j++;
		}
		res->rows[res->nrows++] = out;
	}
}

/* between two polls; a deploy's wake-up of the worker is kept (shared.h) */
static void
poll_wait(void)
{
	dfe_sleep_ms(POLL_MS);
}

/*
 * Reads one answer into res.  Returns the pageToken to fetch next, or
 * NULL when done; *complete says whether jobComplete was true.
 */
static char *
read_answer(BqResult *res, const HttpRequest *req, char **job_id, char **location,
			bool *complete)
{
	cJSON	   *root = cJSON_Parse(req->response->data);
	cJSON	   *ref;
	char	   *token = NULL;

	if (!cJSON_IsObject(root))
	{
		cJSON_Delete(root);
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_EXCEPTION),
				 errmsg("BigQuery answered a query with a body that is not JSON"),
				 errhint("Check dfe_airbyte.bigquery_url.")));
	}
	ref = cJSON_GetObjectItemCaseSensitive(root, "jobReference");
	if (*job_id == NULL)
		*job_id = json_str(ref, "jobId");
	if (*location == NULL)
		*location = json_str(ref, "location");
	*complete = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "jobComplete"));
	if (*complete)
	{
		res->bytes_processed = json_int64(root, "totalBytesProcessed");
		res->bytes_billed = json_int64(root, "totalBytesBilled");
		take_rows(res, root);
		token = json_str(root, "pageToken");
	}
	cJSON_Delete(root);
	return token;
}

static char *
results_url(const char *job_id, const char *location, const char *page_token)
{
	StringInfoData url;

	initStringInfo(&url);
	appendStringInfo(&url, "%s/bigquery/v2/projects/%s/queries/%s?timeoutMs=%d",
					 base_url(), dfe_http_escape(project()), dfe_http_escape(job_id), GET_TIMEOUT_MS);
	if (location)
		appendStringInfo(&url, "&location=%s", dfe_http_escape(location));
	if (page_token)
		appendStringInfo(&url, "&pageToken=%s", dfe_http_escape(page_token));
	return url.data;
}

/* jobs.query, then getQueryResults until complete and every page read */
static BqResult *
run(const char *sql, bool dry_run, int64 cap)
{
	BqResult   *res = palloc0(sizeof(BqResult));
	cJSON	   *body = cJSON_CreateObject();
	char	   *location = query_location();
	char	   *job_id = NULL;
	char	   *text;
	HttpRequest *req;
	bool		complete = false;
	char	   *token;

	cJSON_AddStringToObject(body, "query", sql);
	cJSON_AddBoolToObject(body, "useLegacySql", false);
	cJSON_AddNumberToObject(body, "timeoutMs", GET_TIMEOUT_MS);
	if (location)
		cJSON_AddStringToObject(body, "location", location);
	if (dry_run)
		cJSON_AddBoolToObject(body, "dryRun", true);
	else
		cJSON_AddStringToObject(body, "maximumBytesBilled", psprintf(INT64_FORMAT, cap));
	text = cJSON_PrintUnformatted(body);
	cJSON_Delete(body);

	req = call("BigQuery query", "POST",
			   psprintf("%s/bigquery/v2/projects/%s/queries", base_url(), dfe_http_escape(project())), text);
	res->queries++;
	if (!dfe_http_ok(req))
	{
		fail(res, req);
		return res;
	}
	token = read_answer(res, req, &job_id, &location, &complete);
	res->ok = true;
	while (!dry_run && (!complete || token != NULL))
	{
		if (job_id == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_EXCEPTION),
					 errmsg("BigQuery answered an unfinished query without a job id"),
					 errhint("Check dfe_airbyte.bigquery_url.")));
		if (!complete)
			poll_wait();
		req = call("BigQuery query results", "GET", results_url(job_id, location, token), NULL);
		res->queries++;
		if (!dfe_http_ok(req))
		{
			fail(res, req);
			return res;
		}
		token = read_answer(res, req, &job_id, &location, &complete);
	}
	return res;
}

BqResult *
dfe_bq_query_dry_run(const char *sql)
{
	return run(sql, true, 0);
}

BqResult *
dfe_bq_query_run(const char *sql, int64 max_bytes_billed)
{
	Assert(max_bytes_billed > 0);
	return run(sql, false, max_bytes_billed);
}

int64
dfe_bq_billed_upper_bound(int64 estimate, int ntables)
{
	int64		mib = 1024 * 1024;
	int64		rounded = (estimate + mib - 1) / mib * mib;
	int64		bound = rounded + BQ_MIN_BILLED * Max(ntables, 1);

	return Max(bound, BQ_MIN_BILLED);
}

void
dfe_bq_check(const BqResult *res, const char *what)
{
	if (res->ok)
		return;
	if (res->reason && strcmp(res->reason, "bytesBilledLimitExceeded") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("%s would bill more bytes than allowed", what),
				 errdetail("BigQuery: %s", res->message),
				 errhint("Raise dfe_airbyte.reconcile_max_bytes_billed, or use mode => 'count', which reads fewer columns.")));
	ereport(ERROR,
			(errcode(ERRCODE_CONNECTION_EXCEPTION),
			 errmsg("%s failed: BigQuery answered HTTP %ld%s%s", what, res->status,
					res->reason ? " " : "", res->reason ? res->reason : ""),
			 errdetail("BigQuery: %s", res->message),
			 errhint("accessDenied: grant the service account bigquery.jobs.create on the project and read access to the dataset; "
					 "invalidQuery: report it as a bug of dfe_airbyte.")));
}
