/*
 * bigquery.c — the hidden policy tag on sensitive columns.
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
 * - the tags converge on blocklist ∪ (final-table columns − allowlist −
 *   Airbyte's _airbyte_* / _ab_cdc_* columns), the second part unless
 *   dfe_airbyte.hide_unlisted_columns is off; a blocklist row may name its
 *   own policy tag;
 * - a field that needs no tag loses only the tags the extension manages:
 *   the hidden tag and the tag it set there itself (policy_tag_state); any
 *   other tag stays;
 * - policy_tag_state also gives exposure windows: a column seen tagged
 *   before that has lost its tag was exposed since the table's creationTime
 *   (recreated after the last sighting) or since some time between the last
 *   sighting and its lastModifiedTime;
 * - rate limits (403/400/429 rateLimitExceeded, backendError) are retried by
 *   the HTTP layer through retry_4xx; PATCHes of one table are paced per
 *   process (see "pacing" below);
 * - raw tables: _airbyte_data is tagged when the table exists and the table
 *   has blocklisted columns; a missing raw table is normal and gives no
 *   row; the tag is never removed from a raw table, because its JSON keeps
 *   the values written while the column was blocklisted.
 */
#include "postgres.h"

#include <time.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include <cjson/cJSON.h>

#include "bigquery.h"
#include "bigquery_int.h"
#include "bigquery_pace.h"
#include "events.h"
#include "google_auth.h"
#include "http.h"
#include "settings.h"
#include "shared.h"
#include "target.h"
#include "target_scope.h"
#include "version.h"

/* re-reads after an etag conflict before a table counts as failed */
#define MAX_CONFLICT_ROUNDS 3
#define RAW_DATA_FIELD "_airbyte_data"

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
dfe_bigquery_configured(void)
{
	return is_set(dfe_setting_bigquery_project()) &&
		is_set(dfe_setting_bigquery_dataset()) &&
		is_set(dfe_setting_hidden_policy_tag()) &&
		is_set(dfe_setting_google_credentials());
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

static bool
name_in(List *names, const char *name)
{
	ListCell   *lc;

	foreach(lc, names)
		if (pg_strcasecmp((char *) lfirst(lc), name) == 0)
			return true;
	return false;
}

static SeenColumn *
find_seen(List *seen, const char *name)
{
	ListCell   *lc;

	foreach(lc, seen)
		if (pg_strcasecmp(((SeenColumn *) lfirst(lc))->name, name) == 0)
			return lfirst(lc);
	return NULL;
}

/* the columns Airbyte adds itself: never "unlisted" */
static bool
airbyte_own_column(const char *name)
{
	return pg_strncasecmp(name, "_airbyte_", 9) == 0 || pg_strncasecmp(name, "_ab_cdc_", 8) == 0;
}

/*
 * BigQuery puts policy tags on leaf fields only, not on a RECORD (STRUCT);
 * Airbyte's destination writes objects as JSON columns, so an unlisted
 * RECORD is someone else's and is left alone (README: Limitations).
 */
static bool
record_field(cJSON *field)
{
	cJSON	   *type = cJSON_GetObjectItemCaseSensitive(field, "type");

	return cJSON_IsString(type) &&
		(pg_strcasecmp(type->valuestring, "RECORD") == 0 || pg_strcasecmp(type->valuestring, "STRUCT") == 0);
}

/* where a column that is not allowlisted came from, as far as we can know */
static char *
unlisted_origin(PlanTable *pt, const char *name)
{
	if (name_in(pt->excluded, name))
		return "it is in dfe_airbyte.excluded (analytics_blocklist.yml), so it should not be replicated at all: "
			"Airbyte's schema propagation or a manual change of the connection selected it";
	if (name_in(pt->source, name))
		return "it is a column of the source table that is not allowlisted: Airbyte's schema propagation "
			"(propagate_columns/propagate_fully) or a manual change of the connection selected it";
	return "it is not a column of the source table: an old column (dropped or renamed in the service; "
		"BigQuery keeps it) or one added to the BigQuery table by hand";
}

/* BigQuery's creationTime / lastModifiedTime: milliseconds since 1970 as a string */
static TimestampTz
table_time(cJSON *table, const char *key)
{
	cJSON	   *v = cJSON_GetObjectItemCaseSensitive(table, key);
	double		ms;

	if (cJSON_IsString(v))
		ms = strtod(v->valuestring, NULL);
	else if (cJSON_IsNumber(v))
		ms = v->valuedouble;
	else
		return 0;
	if (ms <= 0)
		return 0;
	return (TimestampTz) (ms * 1000.0) -
		((TimestampTz) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY);
}

static void
append_detail(PolicyTagResult *r, const char *text)
{
	r->detail = r->detail ? psprintf("%s; %s", r->detail, text) : pstrdup(text);
}

/*
 * The column was seen carrying our tag before and has lost it: since when,
 * as far as the extension can know.  A table created after the last
 * sighting was recreated then (a refresh, a partitioning change, a
 * WRITE_TRUNCATE copy); otherwise the column was replaced or the tag
 * removed some time between the last sighting and the table's last change.
 */
static void
note_exposure(PolicyTagResult *r, SeenColumn *seen, const char *label, const char *field)
{
	/* timestamptz_to_str() returns a static buffer: copy each result */
	char	   *created = pstrdup(timestamptz_to_str(r->table_created));
	char	   *last = pstrdup(timestamptz_to_str(seen->last_seen));
	char	   *modified = r->table_modified ? pstrdup(timestamptz_to_str(r->table_modified)) : "now";

	r->exposed = true;
	r->last_seen_tagged = seen->last_seen;
	if (r->table_created > seen->last_seen)
	{
		r->exposed_since = r->table_created;
		append_detail(r, psprintf("%s.%s was readable without its policy tag since %s, when the table was recreated (last seen tagged %s)",
								  label, field, created, last));
	}
	else
	{
		r->exposed_since = seen->last_seen;
		append_detail(r, psprintf("%s.%s lost its policy tag after %s, when it was last seen tagged, and %s at the latest (the table's last change): the column was replaced (a type change) or the tag removed",
								  label, field, last, modified));
	}
}

/* the tags a field carries, and whether want and tags we manage are among them */
typedef struct FieldTags
{
	cJSON	   *names;			/* the policyTags.names array, or NULL */
	int			count;
	bool		has_want;
	bool		has_managed;	/* the hidden tag or the tag we set before */
	const char *other;			/* the first tag that is not want */
} FieldTags;

static void
read_field_tags(cJSON *field, const char *want, const char *hidden, SeenColumn *seen, FieldTags *ft)
{
	cJSON	   *tags = cJSON_GetObjectItemCaseSensitive(field, "policyTags");
	cJSON	   *n;

	memset(ft, 0, sizeof(*ft));
	ft->names = cJSON_IsObject(tags) ? cJSON_GetObjectItemCaseSensitive(tags, "names") : NULL;
	if (!cJSON_IsArray(ft->names))
	{
		ft->names = NULL;
		return;
	}
	cJSON_ArrayForEach(n, ft->names)
	{
		ft->count++;
		if (!cJSON_IsString(n))
			continue;
		if (want && strcmp(n->valuestring, want) == 0)
			ft->has_want = true;
		else if (ft->other == NULL)
			ft->other = n->valuestring;
		if (strcmp(n->valuestring, hidden) == 0 || (seen && strcmp(n->valuestring, seen->tag) == 0))
			ft->has_managed = true;
	}
}

/* one field that should carry want: a row, and the change if one is needed */
static bool
converge_wanted(ApplyState *st, TagWork *w, cJSON *field, const char *column, const char *want,
				char *unlisted, SeenColumn *seen, TimestampTz created, TimestampTz modified)
{
	const char *name = cJSON_GetObjectItemCaseSensitive(field, "name")->valuestring;
	FieldTags	ft;
	PolicyTagResult *r;
	cJSON	   *new_names;

	read_field_tags(field, want, st->plan->hidden_tag, seen, &ft);
	if (ft.count == 1 && ft.has_want)
	{
		r = make_row(w->label, column, "already_tagged", NULL);
		r->policy_tag = pstrdup(want);
		r->unlisted = unlisted;
		w->rows = lappend(w->rows, r);
		return false;
	}
	/* an unlisted column that someone else protected with their own tag: leave it */
	if (unlisted && ft.count > 0 && !ft.has_want && !ft.has_managed)
	{
		r = make_row(w->label, column, "already_tagged",
					 psprintf("%s.%s is not in the allowlist but carries policy tag %s, set outside dfe_airbyte: left as it is",
							  w->label, name, ft.other ? ft.other : "(unknown)"));
		w->rows = lappend(w->rows, r);
		return false;
	}

	r = make_row(w->label, column, "tagged", NULL);
	r->policy_tag = pstrdup(want);
	r->unlisted = unlisted;
	r->table_created = created;
	r->table_modified = modified;
	if (ft.other)
		append_detail(r, psprintf("replaced policy tag %s on %s.%s with %s (BigQuery allows one tag per field)",
								  ft.other, w->label, name,
								  strcmp(want, st->plan->hidden_tag) == 0 ? "the hidden tag"
								  : psprintf("its own policy tag %s", want)));
	if (unlisted)
		append_detail(r, psprintf("hid %s.%s, which is not in the allowlist: %s", w->label, name, unlisted));
	if (seen && !ft.has_want)
		note_exposure(r, seen, w->label, name);
	new_names = cJSON_CreateArray();
	cJSON_AddItemToArray(new_names, cJSON_CreateString(want));
	set_policy_tags(field, new_names);
	w->rows = lappend(w->rows, r);
	return true;
}

/* one field that should carry none of our tags: remove only those */
static bool
converge_unwanted(ApplyState *st, TagWork *w, cJSON *field, SeenColumn *seen)
{
	const char *hidden = st->plan->hidden_tag;
	const char *name = cJSON_GetObjectItemCaseSensitive(field, "name")->valuestring;
	FieldTags	ft;
	cJSON	   *new_names;
	cJSON	   *n;

	read_field_tags(field, NULL, hidden, seen, &ft);
	/* the raw table keeps its tag: its JSON holds the values written while it was blocklisted */
	if (!ft.has_managed || w->raw)
		return false;
	new_names = cJSON_CreateArray();
	cJSON_ArrayForEach(n, ft.names)
	{
		bool		ours = cJSON_IsString(n) &&
			(strcmp(n->valuestring, hidden) == 0 || (seen && strcmp(n->valuestring, seen->tag) == 0));

		if (!ours)
			cJSON_AddItemToArray(new_names, cJSON_Duplicate(n, true));
	}
	set_policy_tags(field, new_names);
	w->rows = lappend(w->rows, make_row(w->label, name, "untagged", NULL));
	return true;
}

/*
 * Converge one table's schema (as GET returned it) with the plan: fills
 * w->rows and, when something changed, w->patch_body.  Returns whether a
 * PATCH is needed.  The tags converge on blocklist ∪ (columns of the table
 * − allowlist − Airbyte's own columns), the second part unless
 * dfe_airbyte.hide_unlisted_columns is off.
 */
static bool
converge_schema(ApplyState *st, TagWork *w, cJSON *table)
{
	PolicyTagPlan *plan = st->plan;
	cJSON	   *schema = cJSON_GetObjectItemCaseSensitive(table, "schema");
	cJSON	   *fields = cJSON_IsObject(schema) ? cJSON_GetObjectItemCaseSensitive(schema, "fields") : NULL;
	BlockedColumn raw_data = {RAW_DATA_FIELD, plan->hidden_tag};
	List	   *blocked = w->raw ? list_make1(&raw_data) : w->pt->blocked;
	List	   *seen = w->raw ? w->pt->seen_raw : w->pt->seen;
	int			nblocked = list_length(blocked);
	bool	   *found = palloc0(sizeof(bool) * (nblocked + 1));
	TimestampTz created = table_time(table, "creationTime");
	TimestampTz modified = table_time(table, "lastModifiedTime");
	bool		changed = false;
	cJSON	   *field;
	ListCell   *lc;

	w->rows = NIL;
	w->patch_body = NULL;
	if (!cJSON_IsArray(fields))
		fields = NULL;

	cJSON_ArrayForEach(field, fields)
	{
		cJSON	   *name = cJSON_GetObjectItemCaseSensitive(field, "name");
		BlockedColumn *b = NULL;
		SeenColumn *s;

		if (!cJSON_IsObject(field) || !cJSON_IsString(name))
			continue;
		foreach(lc, blocked)
		{
			if (pg_strcasecmp(((BlockedColumn *) lfirst(lc))->name, name->valuestring) == 0)
			{
				b = lfirst(lc);
				found[foreach_current_index(lc)] = true;
				break;
			}
		}
		s = find_seen(seen, name->valuestring);
		if (b)
			changed |= converge_wanted(st, w, field, b->name, b->tag, NULL, s, created, modified);
		else if (!w->raw && plan->hide_unlisted && !airbyte_own_column(name->valuestring) &&
				 !name_in(w->pt->allowed, name->valuestring) && !record_field(field))
			changed |= converge_wanted(st, w, field, name->valuestring, plan->hidden_tag,
									   unlisted_origin(w->pt, name->valuestring), s, created, modified);
		else
			changed |= converge_unwanted(st, w, field, s);
	}

	foreach(lc, blocked)
	{
		if (!found[foreach_current_index(lc)])
			w->rows = lappend(w->rows, make_row(w->label, ((BlockedColumn *) lfirst(lc))->name,
												"missing_column", NULL));
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

/*
 * BigQuery's reason for an error answer (error.errors[0].reason), e.g.
 * rateLimitExceeded, quotaExceeded, backendError; NULL when there is none.
 * Source: "Troubleshoot quota and limit errors" in BigQuery's docs, and
 * google-apis-core's RATE_LIMIT_ERRORS (400/403 with rateLimitExceeded are
 * retried by Google's own Ruby client).
 */
static char *
bigquery_error_reason(const HttpRequest *req)
{
	cJSON	   *root = cJSON_Parse(req->response ? req->response->data : "");
	cJSON	   *err = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "error") : NULL;
	cJSON	   *errors = cJSON_IsObject(err) ? cJSON_GetObjectItemCaseSensitive(err, "errors") : NULL;
	cJSON	   *item;
	char	   *reason = NULL;

	if (!cJSON_IsArray(errors))
		errors = NULL;
	cJSON_ArrayForEach(item, errors)
	{
		cJSON	   *r = cJSON_GetObjectItemCaseSensitive(item, "reason");

		if (cJSON_IsString(r))
		{
			reason = pstrdup(r->valuestring);
			break;
		}
	}
	if (root)
		cJSON_Delete(root);
	return reason;
}

static bool
bigquery_transient_reason(const char *reason)
{
	return strcmp(reason, "rateLimitExceeded") == 0 || strcmp(reason, "backendError") == 0;
}

/*
 * The HTTP layer's retry_4xx: BigQuery answers rate limits with 403 (also
 * 400 or 429) and reason rateLimitExceeded; backendError is transient.
 * quotaExceeded and every other 403 (permissions) are not retried.
 */
static bool
bigquery_transient_4xx(const HttpRequest *req)
{
	char	   *reason = bigquery_error_reason(req);
	bool		transient = reason != NULL && bigquery_transient_reason(reason);

	if (reason)
		pfree(reason);
	return transient;
}

static void
finish_failed(ApplyState *st, TagWork *w, const char *verb)
{
	HttpRequest *req = w->req;
	char	   *detail;

	char	   *reason = req->status != 0 ? bigquery_error_reason(req) : NULL;

	if (req->status == 0)
		detail = psprintf("%s failed: %s (%d attempts)", verb, dfe_http_server_message(req), req->attempts);
	else
		detail = psprintf("%s answered HTTP %ld: %s", verb, req->status, dfe_http_server_message(req));
	if (reason && strcmp(reason, "quotaExceeded") == 0)
		detail = psprintf("%s (quotaExceeded: not retried; the project's quota resets later, or ask for more)", detail);
	else if (reason && bigquery_transient_reason(reason))
		detail = psprintf("%s (%s: still refused after %d attempts; raise dfe_airbyte.http_max_retries or lower dfe_airbyte.bigquery_table_update_limit)",
						  detail, reason, req->attempts);
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
	ListCell   *lc;

	/* a missing raw table is normal: newer destinations write none */
	if (w->raw)
		return;
	/* every row names a column: the sensitive columns that are not protected */
	foreach(lc, w->pt->blocked)
		st->results = lappend(st->results, make_row(w->label, ((BlockedColumn *) lfirst(lc))->name,
													"missing_table", NULL));
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

		req = dfe_http_request_new(patch ? "BigQuery table update" : "BigQuery table read",
							   patch ? "PATCH" : "GET", w->url);
		req->bearer = st->token;
		req->retry_4xx = bigquery_transient_4xx;
		if (patch)
		{
			dfe_http_set_json_body(req, w->patch_body);
			if (w->etag)
				req->headers = list_make1(psprintf("If-Match: %s", w->etag));
		}
		req->user_data = w;
		w->req = req;
		reqs[n++] = req;
	}
	dfe_http_perform(reqs, n, st->plan->concurrency);
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
	if (!dfe_http_ok(req))
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
	if (dfe_http_ok(req))
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

/* the PATCHes, each table's held back as pace_due says; the others go at once */
static void
run_patches_paced(ApplyState *st, List *patches, List **next_gets)
{
	while (patches != NIL)
	{
		int64		now = dfe_bq_mono_ms();
		int64		earliest = PG_INT64_MAX;
		List	   *ready = NIL;
		List	   *later = NIL;
		ListCell   *lc;

		foreach(lc, patches)
		{
			TagWork    *w = lfirst(lc);
			int64		due = dfe_bq_pace_due(w->url, now);

			if (due <= now)
				ready = lappend(ready, w);
			else
			{
				later = lappend(later, w);
				earliest = Min(earliest, due);
			}
		}
		list_free(patches);

		run_batch(st, ready, true);
		foreach(lc, ready)
		{
			TagWork    *w = lfirst(lc);

			if (w->req->status != 0)
				dfe_bq_pace_record(w->url, dfe_bq_mono_ms());
			handle_patch(st, w, next_gets);
			free_request(w);
			if (w->patch_body)
			{
				pfree(w->patch_body);
				w->patch_body = NULL;
			}
		}
		if (ready == NIL && later != NIL)
		{
			ereport(DEBUG1,
					(errmsg_internal("dfe_airbyte: holding back %d BigQuery table update(s) for " INT64_FORMAT " ms (per-table limit)",
									 list_length(later), earliest - now)));
			dfe_sleep_ms((long) (earliest - now));
		}
		list_free(ready);
		patches = later;
	}
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
					plan->base_url, dfe_http_escape(plan->project), dfe_http_escape(dataset),
					dfe_http_escape(table));
}

List *
dfe_policy_tag_plan_apply(PolicyTagPlan *plan, List **failed_tables)
{
	ApplyState	st;
	List	   *gets = NIL;
	ListCell   *lc;

	memset(&st, 0, sizeof(st));
	st.plan = plan;
	*failed_tables = NIL;
	if (plan->ntables == 0)
		return NIL;

	for (int i = 0; i < plan->ntables; i++)
	{
		PlanTable  *pt = plan->tables[i];
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

	st.token = dfe_google_access_token();

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

		run_patches_paced(&st, patches, &next_gets);

		/* a 401: the cached token may have been revoked; get a new one, once */
		foreach(lc, next_gets)
		{
			if (((TagWork *) lfirst(lc))->unauthorized)
				unauthorized = true;
		}
		if (unauthorized)
		{
			dfe_google_forget_access_token();
			st.token = dfe_google_access_token();
			st.token_renewed = true;
		}
		gets = next_gets;
	}

	list_sort(st.results, result_cmp);
	*failed_tables = st.failed;
	return st.results;
}

