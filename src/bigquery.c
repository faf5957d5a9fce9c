/*
 * bigquery.c — the hidden policy tag on sensitive columns (SPEC §5).
 *
 * The plan: every allowlisted table with its blocklisted columns.  Tables
 * without blocklisted columns are checked too, so that a tag is removed
 * from a column that is no longer blocklisted.
 *
 * Applying it: one GET per final table (and per legacy raw table of a table
 * that has blocklisted columns), all concurrently, bounded by
 * dfe_airbyte.policy_tag_concurrency; the new schema is computed from the
 * answer and PATCHed with If-Match: <etag> only when something changed, all
 * PATCHes concurrently too.  An etag conflict (412, or 409) re-reads that
 * table and tries again, at most MAX_CONFLICT_ROUNDS times; a 401 fetches a
 * new Google token once.  A table that still fails is reported and the
 * others go on: BigQuery is not transactional, so what was applied stays
 * applied.
 *
 * Decisions (see README.md, "BigQuery policy tags"):
 * - field names match case-insensitively, as BigQuery column names do;
 * - only top-level fields are managed; nested fields are sent back as read;
 * - a blocklisted field carrying another policy tag gets the hidden tag
 *   instead (BigQuery allows one per field); the row says "tagged" and the
 *   replaced tag is reported (NOTICE, event data);
 * - a field no longer blocklisted loses only the hidden tag; any other tag
 *   stays;
 * - raw tables: _airbyte_data is tagged when the table exists and the table
 *   has blocklisted columns; a missing raw table is normal and gives no
 *   row; the tag is never removed from a raw table, because its JSON keeps
 *   the values written while the column was blocklisted.
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/tuplestore.h"

#include <cjson/cJSON.h>

#include "bigquery.h"
#include "events.h"
#include "google_auth.h"
#include "http.h"
#include "settings.h"

/* re-reads after an etag conflict before a table counts as failed */
#define MAX_CONFLICT_ROUNDS 3
#define RAW_DATA_FIELD "_airbyte_data"

typedef struct PlanTable
{
	char	   *table;			/* allowlisted table = BigQuery final table */
	List	   *blocked;		/* blocklisted column names (char *) */
} PlanTable;

struct PolicyTagPlan
{
	char	   *base_url;
	char	   *project;
	char	   *dataset;
	char	   *internal_dataset;
	char	   *hidden_tag;
	int			concurrency;
	List	   *tables;			/* PlanTable * */
};

typedef enum WorkStep
{
	STEP_GET,
	STEP_PATCH,
	STEP_DONE
} WorkStep;

/* one BigQuery table being converged */
typedef struct TagWork
{
	PlanTable  *pt;
	bool		raw;			/* the legacy raw table of pt */
	char	   *label;			/* table_name in the results */
	char	   *url;
	int			conflicts;		/* 412/409 answers so far */
	bool		unauthorized;	/* last answer was 401 */
	char	   *etag;
	char	   *patch_body;
	List	   *rows;			/* PolicyTagResult * from the last GET */
	HttpRequest *req;
} TagWork;

typedef struct ApplyState
{
	PolicyTagPlan *plan;
	const char *token;
	bool		token_renewed;
	List	   *results;
	List	   *failed;
} ApplyState;

static bool
is_set(const char *s)
{
	return s != NULL && s[0] != '\0';
}

bool
bigquery_configured(void)
{
	return is_set(dfe_setting_bigquery_project()) &&
		is_set(dfe_setting_bigquery_dataset()) &&
		is_set(dfe_setting_hidden_policy_tag()) &&
		is_set(dfe_setting_google_credentials());
}

/* ---------------------------------------------------------------------- */
/* the plan                                                               */
/* ---------------------------------------------------------------------- */

PolicyTagPlan *
policy_tag_plan_load(void)
{
	MemoryContext caller = CurrentMemoryContext;
	PolicyTagPlan *plan;
	const char *tag;
	PlanTable  *current = NULL;
	int			ret;
	uint64		i;

	plan = palloc0(sizeof(PolicyTagPlan));
	plan->project = pstrdup(dfe_require_setting(dfe_setting_bigquery_project(),
												"dfe_airbyte.bigquery_project",
												"BIGQUERY_PROJECT_ID"));
	plan->dataset = pstrdup(dfe_require_setting(dfe_setting_bigquery_dataset(),
												"dfe_airbyte.bigquery_dataset",
												"BIGQUERY_AIRBYTE_DATASET"));
	tag = dfe_require_setting(dfe_setting_hidden_policy_tag(),
							  "dfe_airbyte.hidden_policy_tag",
							  "BIGQUERY_HIDDEN_POLICY_TAG");
	if (strncmp(tag, "projects/", 9) != 0 || strstr(tag, "/taxonomies/") == NULL ||
		strstr(tag, "/policyTags/") == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("dfe_airbyte.hidden_policy_tag \"%s\" is not a policy tag name", tag),
				 errhint("It must look like projects/P/locations/L/taxonomies/T/policyTags/ID, "
						 "as the Data Catalog taxonomy shows it (env BIGQUERY_HIDDEN_POLICY_TAG).")));
	plan->hidden_tag = pstrdup(tag);
	plan->internal_dataset = pstrdup(dfe_setting_bigquery_internal_dataset());
	plan->base_url = pstrdup(dfe_setting_bigquery_url());
	/* no trailing slash, so that URLs are not built with "//" */
	while (strlen(plan->base_url) > 0 && plan->base_url[strlen(plan->base_url) - 1] == '/')
		plan->base_url[strlen(plan->base_url) - 1] = '\0';
	plan->concurrency = dfe_policy_tag_concurrency;
	dfe_require_setting(dfe_setting_google_credentials(), "dfe_airbyte.google_credentials",
						"GOOGLE_CLOUD_CREDENTIALS");

	SPI_connect();
	ret = SPI_execute("SELECT a.table_name, b.column_name"
					  "  FROM (SELECT DISTINCT table_name FROM dfe_airbyte.allowlist) a"
					  "  LEFT JOIN dfe_airbyte.blocklist b ON b.table_name = a.table_name"
					  " ORDER BY a.table_name COLLATE \"C\", b.column_name COLLATE \"C\"",
					  true, 0);
	if (ret != SPI_OK_SELECT)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not read the dfe_airbyte allowlist and blocklist: %s",
						SPI_result_code_string(ret)),
				 errhint("Check that the dfe_airbyte extension is installed correctly.")));

	MemoryContextSwitchTo(caller);
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		char	   *table = SPI_getvalue(tuple, desc, 1);
		char	   *column = SPI_getvalue(tuple, desc, 2);

		if (current == NULL || strcmp(current->table, table) != 0)
		{
			current = palloc0(sizeof(PlanTable));
			current->table = table;
			plan->tables = lappend(plan->tables, current);
		}
		if (column)
			current->blocked = lappend(current->blocked, column);
	}
	SPI_finish();
	MemoryContextSwitchTo(caller);
	return plan;
}

/* ---------------------------------------------------------------------- */
/* computing the new schema                                               */
/* ---------------------------------------------------------------------- */

static PolicyTagResult *
make_row(const char *table, const char *column, const char *action, const char *detail)
{
	PolicyTagResult *r = palloc0(sizeof(PolicyTagResult));

	r->table_name = pstrdup(table);
	r->column_name = column ? pstrdup(column) : NULL;
	r->action = pstrdup(action);
	r->detail = detail ? pstrdup(detail) : NULL;
	return r;
}

static void
set_policy_tags(cJSON *field, cJSON *names)
{
	cJSON	   *tags = cJSON_CreateObject();

	cJSON_AddItemToObject(tags, "names", names);
	if (cJSON_GetObjectItemCaseSensitive(field, "policyTags"))
		cJSON_ReplaceItemInObjectCaseSensitive(field, "policyTags", tags);
	else
		cJSON_AddItemToObject(field, "policyTags", tags);
}

/*
 * Converge one table's schema (as GET returned it) with the plan: fills
 * w->rows and, when something changed, w->patch_body.  Returns whether a
 * PATCH is needed.
 */
static bool
converge_schema(ApplyState *st, TagWork *w, cJSON *table)
{
	const char *hidden = st->plan->hidden_tag;
	cJSON	   *schema = cJSON_GetObjectItemCaseSensitive(table, "schema");
	cJSON	   *fields = cJSON_IsObject(schema) ? cJSON_GetObjectItemCaseSensitive(schema, "fields") : NULL;
	List	   *blocked = w->raw ? list_make1((char *) RAW_DATA_FIELD) : w->pt->blocked;
	int			nblocked = list_length(blocked);
	bool	   *found = palloc0(sizeof(bool) * (nblocked + 1));
	bool		changed = false;
	cJSON	   *field;
	ListCell   *lc;
	int			i;

	w->rows = NIL;
	w->patch_body = NULL;
	if (!cJSON_IsArray(fields))
		fields = NULL;

	cJSON_ArrayForEach(field, fields)
	{
		cJSON	   *name = cJSON_GetObjectItemCaseSensitive(field, "name");
		cJSON	   *tags = cJSON_GetObjectItemCaseSensitive(field, "policyTags");
		cJSON	   *names = cJSON_IsObject(tags) ? cJSON_GetObjectItemCaseSensitive(tags, "names") : NULL;
		cJSON	   *n;
		int			idx = -1;
		int			count = 0;
		bool		has_hidden = false;
		const char *other = NULL;

		if (!cJSON_IsObject(field) || !cJSON_IsString(name))
			continue;
		i = 0;
		foreach(lc, blocked)
		{
			if (pg_strcasecmp((char *) lfirst(lc), name->valuestring) == 0)
			{
				idx = i;
				break;
			}
			i++;
		}
		if (cJSON_IsArray(names))
		{
			cJSON_ArrayForEach(n, names)
			{
				count++;
				if (cJSON_IsString(n) && strcmp(n->valuestring, hidden) == 0)
					has_hidden = true;
				else if (cJSON_IsString(n) && other == NULL)
					other = n->valuestring;
			}
		}

		if (idx >= 0)
		{
			const char *column = list_nth(blocked, idx);

			found[idx] = true;
			if (has_hidden && count == 1)
				w->rows = lappend(w->rows, make_row(w->label, column, "already_tagged", NULL));
			else
			{
				char	   *detail = other
					? psprintf("replaced policy tag %s on %s.%s with the hidden tag (BigQuery allows one tag per field)",
							   other, w->label, name->valuestring)
					: NULL;
				cJSON	   *new_names = cJSON_CreateArray();

				cJSON_AddItemToArray(new_names, cJSON_CreateString(hidden));
				set_policy_tags(field, new_names);
				w->rows = lappend(w->rows, make_row(w->label, column, "tagged", detail));
				changed = true;
			}
		}
		else if (has_hidden && !w->raw)
		{
			cJSON	   *new_names = cJSON_CreateArray();

			/* keep any other tag; drop only ours */
			cJSON_ArrayForEach(n, names)
			{
				if (!(cJSON_IsString(n) && strcmp(n->valuestring, hidden) == 0))
					cJSON_AddItemToArray(new_names, cJSON_Duplicate(n, true));
			}
			set_policy_tags(field, new_names);
			w->rows = lappend(w->rows, make_row(w->label, name->valuestring, "untagged", NULL));
			changed = true;
		}
	}

	i = 0;
	foreach(lc, blocked)
	{
		if (!found[i])
			w->rows = lappend(w->rows, make_row(w->label, (char *) lfirst(lc), "missing_column", NULL));
		i++;
	}
	pfree(found);

	if (changed)
	{
		cJSON	   *body = cJSON_CreateObject();
		cJSON	   *new_schema = cJSON_CreateObject();

		/* the COMPLETE field list, nested fields and all, as read */
		cJSON_AddItemToObject(new_schema, "fields",
							  cJSON_DetachItemFromObjectCaseSensitive(schema, "fields"));
		cJSON_AddItemToObject(body, "schema", new_schema);
		w->patch_body = cJSON_PrintUnformatted(body);
		cJSON_Delete(body);
	}
	return changed;
}

/* ---------------------------------------------------------------------- */
/* applying it                                                            */
/* ---------------------------------------------------------------------- */

static void
finish_failed(ApplyState *st, TagWork *w, const char *verb)
{
	HttpRequest *req = w->req;
	char	   *detail;

	if (req->status == 0)
		detail = psprintf("%s failed: %s (%d attempts)", verb, http_server_message(req), req->attempts);
	else
		detail = psprintf("%s answered HTTP %ld: %s", verb, req->status, http_server_message(req));
	st->results = lappend(st->results, make_row(w->label, NULL, "failed", detail));
	st->failed = lappend(st->failed, pstrdup(w->label));
}

static void
finish_rows(ApplyState *st, TagWork *w)
{
	st->results = list_concat(st->results, w->rows);
	w->rows = NIL;
}

static void
finish_missing(ApplyState *st, TagWork *w)
{
	/* a missing raw table is normal: newer destinations write none */
	if (!w->raw)
		st->results = lappend(st->results, make_row(w->label, NULL, "missing_table", NULL));
}

static void
free_request(TagWork *w)
{
	if (w->req)
	{
		if (w->req->response && w->req->response->data)
			pfree(w->req->response->data);
		pfree(w->req);
		w->req = NULL;
	}
}

static void
run_batch(ApplyState *st, List *works, bool patch)
{
	HttpRequest **reqs;
	ListCell   *lc;
	int			n = 0;

	if (works == NIL)
		return;
	reqs = palloc(sizeof(HttpRequest *) * list_length(works));
	foreach(lc, works)
	{
		TagWork    *w = lfirst(lc);
		HttpRequest *req;

		req = http_request_new(patch ? "BigQuery table update" : "BigQuery table read",
							   patch ? "PATCH" : "GET", w->url);
		req->bearer = st->token;
		if (patch)
		{
			http_set_json_body(req, w->patch_body);
			if (w->etag)
				req->headers = list_make1(psprintf("If-Match: %s", w->etag));
		}
		req->user_data = w;
		w->req = req;
		reqs[n++] = req;
	}
	http_perform(reqs, n, st->plan->concurrency);
	pfree(reqs);
}

/* a GET answered: the table goes on to a PATCH, another GET, or is done */
static void
handle_get(ApplyState *st, TagWork *w, List **gets, List **patches)
{
	HttpRequest *req = w->req;
	cJSON	   *root;
	cJSON	   *etag;

	w->unauthorized = false;
	if (req->status == 404)
	{
		finish_missing(st, w);
		return;
	}
	if (req->status == 401 && !st->token_renewed)
	{
		w->unauthorized = true;
		*gets = lappend(*gets, w);
		return;
	}
	if (!http_ok(req))
	{
		finish_failed(st, w, "GET");
		return;
	}
	root = cJSON_Parse(req->response->data);
	if (root == NULL || !cJSON_IsObject(root))
	{
		st->results = lappend(st->results,
							  make_row(w->label, NULL, "failed",
									   "GET answered with a body that is not a JSON table resource"));
		st->failed = lappend(st->failed, pstrdup(w->label));
		if (root)
			cJSON_Delete(root);
		return;
	}
	etag = cJSON_GetObjectItemCaseSensitive(root, "etag");
	w->etag = cJSON_IsString(etag) && etag->valuestring[0] ? pstrdup(etag->valuestring)
		: (req->etag ? pstrdup(req->etag) : NULL);
	if (converge_schema(st, w, root))
		*patches = lappend(*patches, w);
	else
		finish_rows(st, w);
	cJSON_Delete(root);
}

static void
handle_patch(ApplyState *st, TagWork *w, List **gets)
{
	HttpRequest *req = w->req;

	w->unauthorized = false;
	if (http_ok(req))
	{
		finish_rows(st, w);
		return;
	}
	if (req->status == 412 || req->status == 409)
	{
		/* the table changed since we read it: read it again */
		if (++w->conflicts > MAX_CONFLICT_ROUNDS)
		{
			st->results = lappend(st->results,
								  make_row(w->label, NULL, "failed",
										   psprintf("PATCH answered HTTP %ld (the table changed while it was being updated) %d times in a row",
													req->status, w->conflicts)));
			st->failed = lappend(st->failed, pstrdup(w->label));
			return;
		}
		*gets = lappend(*gets, w);
		return;
	}
	if (req->status == 404)
	{
		finish_missing(st, w);
		return;
	}
	if (req->status == 401 && !st->token_renewed)
	{
		w->unauthorized = true;
		*gets = lappend(*gets, w);
		return;
	}
	finish_failed(st, w, "PATCH");
}

static int
result_cmp(const ListCell *a, const ListCell *b)
{
	PolicyTagResult *ra = lfirst(a);
	PolicyTagResult *rb = lfirst(b);
	int			c = strcmp(ra->table_name, rb->table_name);

	if (c != 0)
		return c;
	if (ra->column_name == NULL || rb->column_name == NULL)
		return (ra->column_name != NULL) - (rb->column_name != NULL);
	return strcmp(ra->column_name, rb->column_name);
}

static char *
table_url(PolicyTagPlan *plan, const char *dataset, const char *table)
{
	return psprintf("%s/bigquery/v2/projects/%s/datasets/%s/tables/%s",
					plan->base_url, http_escape(plan->project), http_escape(dataset),
					http_escape(table));
}

List *
policy_tag_plan_apply(PolicyTagPlan *plan, List **failed_tables)
{
	ApplyState	st;
	List	   *gets = NIL;
	ListCell   *lc;

	memset(&st, 0, sizeof(st));
	st.plan = plan;
	*failed_tables = NIL;
	if (plan->tables == NIL)
		return NIL;

	foreach(lc, plan->tables)
	{
		PlanTable  *pt = lfirst(lc);
		TagWork    *w = palloc0(sizeof(TagWork));

		w->pt = pt;
		w->label = pt->table;
		w->url = table_url(plan, plan->dataset, pt->table);
		gets = lappend(gets, w);
		if (pt->blocked != NIL)
		{
			char	   *raw = psprintf("%s_raw__stream_%s", plan->dataset, pt->table);

			w = palloc0(sizeof(TagWork));
			w->pt = pt;
			w->raw = true;
			w->label = psprintf("%s.%s", plan->internal_dataset, raw);
			w->url = table_url(plan, plan->internal_dataset, raw);
			gets = lappend(gets, w);
		}
	}

	st.token = google_access_token();

	while (gets != NIL)
	{
		List	   *next_gets = NIL;
		List	   *patches = NIL;
		bool		unauthorized = false;

		run_batch(&st, gets, false);
		foreach(lc, gets)
		{
			TagWork    *w = lfirst(lc);

			handle_get(&st, w, &next_gets, &patches);
			free_request(w);
		}
		list_free(gets);

		run_batch(&st, patches, true);
		foreach(lc, patches)
		{
			TagWork    *w = lfirst(lc);

			handle_patch(&st, w, &next_gets);
			free_request(w);
			if (w->patch_body)
			{
				pfree(w->patch_body);
				w->patch_body = NULL;
			}
		}
		list_free(patches);

		/* a 401: the cached token may have been revoked; get a new one, once */
		foreach(lc, next_gets)
		{
			if (((TagWork *) lfirst(lc))->unauthorized)
				unauthorized = true;
		}
		if (unauthorized)
		{
			google_forget_access_token();
			st.token = google_access_token();
			st.token_renewed = true;
		}
		gets = next_gets;
	}

	list_sort(st.results, result_cmp);
	*failed_tables = st.failed;
	return st.results;
}

/* ---------------------------------------------------------------------- */
/* SQL: dfe_airbyte_apply_policy_tags()                                   */
/* ---------------------------------------------------------------------- */

PG_FUNCTION_INFO_V1(dfe_airbyte_apply_policy_tags);

Datum
dfe_airbyte_apply_policy_tags(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext cxt;
	MemoryContext old;
	PolicyTagPlan *plan;
	List	   *results;
	List	   *failed;
	ListCell   *lc;
	int			tagged = 0,
				untagged = 0,
				already = 0;
	StringInfoData names;
	StringInfoData details;
	int			nfailed = 0;

	InitMaterializedSRF(fcinfo, 0);

	cxt = AllocSetContextCreate(CurrentMemoryContext, "dfe_airbyte policy tags",
								ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(cxt);

	plan = policy_tag_plan_load();
	results = policy_tag_plan_apply(plan, &failed);

	initStringInfo(&names);
	initStringInfo(&details);
	foreach(lc, results)
	{
		PolicyTagResult *r = lfirst(lc);
		Datum		values[3];
		bool		nulls[3] = {false, false, false};

		if (strcmp(r->action, "failed") == 0)
		{
			if (nfailed < 10)
				appendStringInfo(&names, "%s%s", nfailed ? ", " : "", r->table_name);
			appendStringInfo(&details, "%s%s: %s", nfailed ? "\n" : "", r->table_name,
							 r->detail ? r->detail : "failed");
			nfailed++;
			continue;
		}
		if (strcmp(r->action, "tagged") == 0)
			tagged++;
		else if (strcmp(r->action, "untagged") == 0)
			untagged++;
		else if (strcmp(r->action, "already_tagged") == 0)
			already++;
		if (r->detail)
			ereport(NOTICE,
					(errmsg("%s", r->detail)));

		values[0] = CStringGetTextDatum(r->table_name);
		if (r->column_name)
			values[1] = CStringGetTextDatum(r->column_name);
		else
			nulls[1] = true;
		values[2] = CStringGetTextDatum(r->action);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}

	if (nfailed > 0)
	{
		if (nfailed > 10)
			appendStringInfo(&names, " and %d more", nfailed - 10);
		ereport(NOTICE,
				(errmsg("the other tables were converged: %d column(s) tagged, %d untagged, %d already tagged",
						tagged, untagged, already)));
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("could not apply BigQuery policy tags to %d table(s): %s", nfailed, names.data),
				 errdetail("%s", details.data),
				 errhint("Changes made to the other tables stay applied (BigQuery is not transactional). "
						 "Check the service account's permissions (BigQuery Data Owner on the dataset, "
						 "Data Catalog access to the policy tag taxonomy) and the server's message above, "
						 "then run dfe_airbyte_apply_policy_tags() again.")));
	}

	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	return (Datum) 0;
}

/* ---------------------------------------------------------------------- */
/* the worker's drift repair                                              */
/* ---------------------------------------------------------------------- */

static cJSON *
json_array_of(List *strings)
{
	cJSON	   *arr = cJSON_CreateArray();
	ListCell   *lc;

	foreach(lc, strings)
		cJSON_AddItemToArray(arr, cJSON_CreateString((char *) lfirst(lc)));
	return arr;
}

/* the data of a policy_tags_repaired event */
static char *
repair_data(int64 job_id, const char *table, List *tagged, List *untagged, List *replaced)
{
	cJSON	   *obj = cJSON_CreateObject();
	char	   *out;

	cJSON_AddNumberToObject(obj, "job_id", (double) job_id);
	cJSON_AddStringToObject(obj, "table", table);
	cJSON_AddItemToObject(obj, "tagged", json_array_of(tagged));
	cJSON_AddItemToObject(obj, "untagged", json_array_of(untagged));
	if (replaced)
		cJSON_AddItemToObject(obj, "replaced", json_array_of(replaced));
	out = cJSON_PrintUnformatted(obj);
	cJSON_Delete(obj);
	return out;
}

static char *
join_strings(List *strings)
{
	StringInfoData buf;
	ListCell   *lc;

	initStringInfo(&buf);
	foreach(lc, strings)
		appendStringInfo(&buf, "%s%s", buf.len ? ", " : "", (char *) lfirst(lc));
	return buf.data;
}

/* one event per table where something changed, one for the failures */
static void
record_repair_events(int64 job_id, List *results)
{
	const char *table = NULL;
	List	   *tagged = NIL;
	List	   *untagged = NIL;
	List	   *replaced = NIL;
	List	   *failed = NIL;

	/* results are sorted by table: flush at each table change (and at the end) */
	for (int i = 0; i <= list_length(results); i++)
	{
		PolicyTagResult *r = i < list_length(results) ? list_nth(results, i) : NULL;

		if (table && (r == NULL || strcmp(r->table_name, table) != 0))
		{
			if (tagged || untagged)
			{
				StringInfoData detail;

				initStringInfo(&detail);
				if (tagged)
					appendStringInfo(&detail, "re-applied the hidden policy tag to %d column(s) of %s after sync job " INT64_FORMAT ": %s",
									 list_length(tagged), table, job_id, join_strings(tagged));
				if (tagged && untagged)
					appendStringInfo(&detail, "; removed it from %d column(s) no longer blocklisted: %s",
									 list_length(untagged), join_strings(untagged));
				else if (untagged)
					appendStringInfo(&detail, "removed the hidden policy tag from %d column(s) of %s no longer blocklisted after sync job " INT64_FORMAT ": %s",
									 list_length(untagged), table, job_id, join_strings(untagged));
				if (replaced)
					appendStringInfo(&detail, " (%s)", join_strings(replaced));
				appendStringInfoString(&detail, ". Airbyte recreates tables without their tags when it refreshes a stream.");
				dfe_event("warning", "policy_tags_repaired", table, detail.data,
						  repair_data(job_id, table, tagged, untagged, replaced));
			}
			tagged = untagged = replaced = NIL;
		}
		if (r == NULL)
			break;
		table = r->table_name;
		if (strcmp(r->action, "tagged") == 0)
		{
			tagged = lappend(tagged, r->column_name);
			if (r->detail)
				replaced = lappend(replaced, r->detail);
		}
		else if (strcmp(r->action, "untagged") == 0)
			untagged = lappend(untagged, r->column_name);
		else if (strcmp(r->action, "failed") == 0)
			failed = lappend(failed, r);
	}

	if (failed)
	{
		cJSON	   *data = cJSON_CreateObject();
		cJSON	   *arr = cJSON_AddArrayToObject(data, "tables");
		List	   *texts = NIL;
		ListCell   *lc;

		cJSON_AddNumberToObject(data, "job_id", (double) job_id);
		foreach(lc, failed)
		{
			PolicyTagResult *r = lfirst(lc);
			cJSON	   *item = cJSON_CreateObject();

			cJSON_AddStringToObject(item, "table", r->table_name);
			cJSON_AddStringToObject(item, "error", r->detail ? r->detail : "failed");
			cJSON_AddItemToArray(arr, item);
			texts = lappend(texts, psprintf("%s (%s)", r->table_name, r->detail ? r->detail : "failed"));
		}
		dfe_event("warning", "policy_tags_failed", NULL,
				  psprintf("could not check the BigQuery policy tags of %d table(s) after sync job " INT64_FORMAT ": %s; "
						   "they are checked again after the next sync, or run dfe_airbyte_apply_policy_tags()",
						   list_length(failed), job_id, join_strings(texts)),
				  cJSON_PrintUnformatted(data));
	}
}

void
policy_tags_repair_after_sync(int64 job_id)
{
	MemoryContext cxt;
	MemoryContext old = CurrentMemoryContext;

	if (!bigquery_configured())
		return;

	/* a child of the caller's (non-transaction) context: it survives the commits */
	cxt = AllocSetContextCreate(old, "dfe_airbyte policy tag repair",
								ALLOCSET_DEFAULT_SIZES);
	PG_TRY();
	{
		PolicyTagPlan *plan;
		List	   *results;
		List	   *failed;
		bool		changes = false;
		ListCell   *lc;

		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
		MemoryContextSwitchTo(cxt);
		plan = policy_tag_plan_load();
		PopActiveSnapshot();
		CommitTransactionCommand();

		/* no transaction is open during the HTTP calls */
		MemoryContextSwitchTo(cxt);
		results = policy_tag_plan_apply(plan, &failed);

		foreach(lc, results)
		{
			PolicyTagResult *r = lfirst(lc);

			if (strcmp(r->action, "tagged") == 0 || strcmp(r->action, "untagged") == 0)
				changes = true;
		}
		if (changes || failed)
		{
			StartTransactionCommand();
			PushActiveSnapshot(GetTransactionSnapshot());
			MemoryContextSwitchTo(cxt);
			record_repair_events(job_id, results);
			PopActiveSnapshot();
			CommitTransactionCommand();
		}
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		/* record why, instead of losing the repair of this sync silently */
		HOLD_INTERRUPTS();
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		RESUME_INTERRUPTS();

		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
		MemoryContextSwitchTo(cxt);
		dfe_event("warning", "policy_tags_failed", NULL,
				  psprintf("could not check the BigQuery policy tags after sync job " INT64_FORMAT ": %s%s%s",
						   job_id, edata->message,
						   edata->detail ? "; " : "", edata->detail ? edata->detail : ""),
				  psprintf("{\"job_id\": " INT64_FORMAT "}", job_id));
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_END_TRY();

	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
}
