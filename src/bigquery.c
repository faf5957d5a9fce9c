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
#include "events.h"
#include "google_auth.h"
#include "http.h"
#include "settings.h"
#include "shared.h"
#include "version.h"

/* re-reads after an etag conflict before a table counts as failed */
#define MAX_CONFLICT_ROUNDS 3
#define RAW_DATA_FIELD "_airbyte_data"

/* a blocklisted column and the tag it gets */
typedef struct BlockedColumn
{
	char	   *name;
	char	   *tag;			/* its own policy tag, or the hidden tag */
} BlockedColumn;

/* what policy_tag_state remembers of one column */
typedef struct SeenColumn
{
	char	   *name;
	char	   *tag;			/* the tag the extension set there */
	TimestampTz last_seen;		/* when it was last seen carrying it */
} SeenColumn;

typedef struct PlanTable
{
	char	   *table;			/* allowlisted table = BigQuery final table */
	List	   *blocked;		/* BlockedColumn * */
	List	   *allowed;		/* allowlisted column names (char *) */
	List	   *excluded;		/* dfe_airbyte.excluded column names */
	List	   *source;			/* columns of the source table */
	List	   *seen;			/* SeenColumn * of the final table */
	List	   *seen_raw;		/* SeenColumn * of the raw table */
} PlanTable;

struct PolicyTagPlan
{
	char	   *base_url;
	char	   *project;
	char	   *dataset;
	char	   *internal_dataset;
	char	   *hidden_tag;
	int			concurrency;
	bool		hide_unlisted;
	int			ntables;
	PlanTable **tables;			/* sorted by name (strcmp) */
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

static int
plan_table_cmp(const void *a, const void *b)
{
	return strcmp((*(PlanTable *const *) a)->table, (*(PlanTable *const *) b)->table);
}

static PlanTable *
plan_find(PolicyTagPlan *plan, const char *table)
{
	PlanTable	key;
	PlanTable  *keyp = &key;
	PlanTable **found;

	key.table = (char *) table;
	found = bsearch(&keyp, plan->tables, plan->ntables, sizeof(PlanTable *), plan_table_cmp);
	return found ? *found : NULL;
}

/* run one SELECT of the plan; raises on failure */
static void
plan_query(const char *sql, int nargs, Oid *types, Datum *values)
{
	int			ret = SPI_execute_with_args(sql, nargs, types, values, NULL, true, 0);

	if (ret != SPI_OK_SELECT)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not read the dfe_airbyte lists: %s", SPI_result_code_string(ret)),
				 errhint("Check that the dfe_airbyte extension is installed correctly (ALTER EXTENSION dfe_airbyte UPDATE).")));
}

static char *
col_value(int row, int col)
{
	return SPI_getvalue(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col);
}

/*
 * The per-column lists of every allowlisted table; caller is the memory
 * context the plan lives in.  Rows of tables that are not allowlisted are
 * ignored (they have no final table).
 */
static void
plan_load_columns(PolicyTagPlan *plan, MemoryContext caller)
{
	Oid			types[1] = {TEXTOID};
	Datum		schema[1];
	char	   *raw_prefix = psprintf("%s.%s_raw__stream_", plan->internal_dataset, plan->dataset);
	size_t		raw_len = strlen(raw_prefix);

	/* 1: allowlisted, 2: blocklisted, 3: excluded, 4: in the source table, 5: seen tagged */
	static const char *const queries[] = {
		"SELECT table_name, column_name FROM dfe_airbyte.allowlist",
		"SELECT table_name, column_name, policy_tag FROM dfe_airbyte.blocklist"
		" ORDER BY table_name COLLATE \"C\", column_name COLLATE \"C\"",
		"SELECT table_name, column_name FROM dfe_airbyte.excluded",
		"SELECT c.relname::pg_catalog.text, a.attname::pg_catalog.text"
		"  FROM pg_catalog.pg_attribute a"
		"  JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) a.attrelid"
		"  JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace"
		" WHERE n.nspname OPERATOR(pg_catalog.=) $1::pg_catalog.name AND c.relkind IN ('r', 'p')"
		"   AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped",
		"SELECT table_name, column_name, policy_tag, last_seen_tagged FROM dfe_airbyte.policy_tag_state",
	};

	schema[0] = CStringGetTextDatum(dfe_setting_source_schema());
	for (int q = 0; q < (int) lengthof(queries); q++)
	{
		plan_query(queries[q], q == 3 ? 1 : 0, types, schema);
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			MemoryContext spi = MemoryContextSwitchTo(caller);
			char	   *table = col_value(i, 1);
			bool		raw = q == 4 && strncmp(table, raw_prefix, raw_len) == 0;
			PlanTable  *pt = plan_find(plan, raw ? table + raw_len : table);

			if (pt != NULL)
			{
				char	   *column = col_value(i, 2);

				if (q == 0)
					pt->allowed = lappend(pt->allowed, column);
				else if (q == 1)
				{
					BlockedColumn *b = palloc0(sizeof(BlockedColumn));
					char	   *tag = col_value(i, 3);

					b->name = column;
					b->tag = tag ? tag : plan->hidden_tag;
					pt->blocked = lappend(pt->blocked, b);
				}
				else if (q == 2)
					pt->excluded = lappend(pt->excluded, column);
				else if (q == 3)
					pt->source = lappend(pt->source, column);
				else
				{
					SeenColumn *seen = palloc0(sizeof(SeenColumn));
					bool		isnull;

					seen->name = column;
					seen->tag = col_value(i, 3);
					seen->last_seen = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[i],
																	   SPI_tuptable->tupdesc, 4, &isnull));
					if (raw)
						pt->seen_raw = lappend(pt->seen_raw, seen);
					else
						pt->seen = lappend(pt->seen, seen);
				}
			}
			MemoryContextSwitchTo(spi);
		}
	}
}

PolicyTagPlan *
policy_tag_plan_load(void)
{
	MemoryContext caller = CurrentMemoryContext;
	PolicyTagPlan *plan;
	const char *tag;

	plan = palloc0(sizeof(PolicyTagPlan));
	plan->project = pstrdup(dfe_require_setting(dfe_setting_bigquery_project(),
												"dfe_airbyte.bigquery_project",
												"BIGQUERY_PROJECT_ID"));
	plan->dataset = pstrdup(dfe_require_setting(dfe_setting_bigquery_dataset(),
												"dfe_airbyte.bigquery_dataset",
												"BIGQUERY_AIRBYTE_DATASET"));
	tag = dfe_require_setting(dfe_setting_hidden_policy_tag(),
							  "dfe_airbyte.hidden_policy_tag",
							  "BIGQUERY_HIDDEN_POLICY_TAG (or BIGQUERY_POLICY_TAG)");
	if (strncmp(tag, "projects/", 9) != 0 || strstr(tag, "/taxonomies/") == NULL ||
		strstr(tag, "/policyTags/") == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("dfe_airbyte.hidden_policy_tag \"%s\" is not a policy tag name", tag),
				 errhint("It must look like projects/P/locations/L/taxonomies/T/policyTags/ID, "
						 "as the Data Catalog taxonomy shows it (env BIGQUERY_HIDDEN_POLICY_TAG or BIGQUERY_POLICY_TAG).")));
	plan->hidden_tag = pstrdup(tag);
	plan->internal_dataset = pstrdup(dfe_setting_bigquery_internal_dataset());
	plan->base_url = pstrdup(dfe_setting_bigquery_url());
	/* no trailing slash, so that URLs are not built with "//" */
	while (strlen(plan->base_url) > 0 && plan->base_url[strlen(plan->base_url) - 1] == '/')
		plan->base_url[strlen(plan->base_url) - 1] = '\0';
	plan->concurrency = dfe_policy_tag_concurrency;
	plan->hide_unlisted = dfe_hide_unlisted_columns;
	dfe_require_setting(dfe_setting_google_credentials(), "dfe_airbyte.google_credentials",
						"GOOGLE_CLOUD_CREDENTIALS");

	SPI_connect();
	plan_query("SELECT table_name FROM dfe_airbyte.allowlist GROUP BY table_name ORDER BY table_name COLLATE \"C\"",
			   0, NULL, NULL);
	MemoryContextSwitchTo(caller);
	plan->ntables = (int) SPI_processed;
	plan->tables = palloc0(sizeof(PlanTable *) * Max(plan->ntables, 1));
	for (int i = 0; i < plan->ntables; i++)
	{
		plan->tables[i] = palloc0(sizeof(PlanTable));
		plan->tables[i]->table = col_value(i, 1);
	}
	/* "C" order is strcmp order, but do not bet the lookups on it */
	qsort(plan->tables, plan->ntables, sizeof(PlanTable *), plan_table_cmp);
	plan_load_columns(plan, caller);
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

/* the columns Airbyte adds itself (SPEC §5): never "unlisted" */
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
 * − allowlist − Airbyte's own columns) (SPEC §5), the second part unless
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
		detail = psprintf("%s failed: %s (%d attempts)", verb, http_server_message(req), req->attempts);
	else
		detail = psprintf("%s answered HTTP %ld: %s", verb, req->status, http_server_message(req));
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
	/* every row names a column: the sensitive columns that are not protected (SPEC §5) */
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

		req = http_request_new(patch ? "BigQuery table update" : "BigQuery table read",
							   patch ? "PATCH" : "GET", w->url);
		req->bearer = st->token;
		req->retry_4xx = bigquery_transient_4xx;
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

/* ---------------------------------------------------------------------- */
/* pacing the PATCHes of one table                                        */
/* ---------------------------------------------------------------------- */

/*
 * BigQuery allows about 5 metadata updates per 10 s per table ("Maximum
 * rate of table metadata update operations per table", BigQuery quotas),
 * and Airbyte's own schema changes count too.  Each process remembers when
 * it PATCHed each table (within a run and across runs) and holds a PATCH
 * back until fewer than dfe_airbyte.bigquery_table_update_limit of its
 * PATCHes of that table fall in the last bigquery_table_update_window.
 * What other processes do is not known here: a 403 rateLimitExceeded is
 * retried with backoff by the HTTP layer.
 */
#define PACE_KEY_LEN 256
#define PACE_MAX 64

typedef struct PaceEntry
{
	char		key[PACE_KEY_LEN];	/* the table's URL (truncated) */
	int			n;
	int64		at_ms[PACE_MAX];	/* monotonic ms of the last PATCHes, oldest first */
} PaceEntry;

static HTAB *pace_table = NULL;

static int64
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static PaceEntry *
pace_entry(const char *url)
{
	char		key[PACE_KEY_LEN];
	bool		found;
	PaceEntry  *e;

	if (pace_table == NULL)
	{
		HASHCTL		ctl;

		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = PACE_KEY_LEN;
		ctl.entrysize = sizeof(PaceEntry);
		ctl.hcxt = TopMemoryContext;
		pace_table = hash_create("dfe_airbyte BigQuery table updates", 64, &ctl,
								 HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	}
	strlcpy(key, url, sizeof(key));
	e = hash_search(pace_table, key, HASH_ENTER, &found);
	if (!found)
		e->n = 0;
	return e;
}

/* when the next PATCH of url may go (monotonic ms) */
static int64
pace_due(const char *url, int64 now)
{
	PaceEntry  *e = pace_entry(url);
	int			limit = Min(dfe_bigquery_table_update_limit, PACE_MAX);
	int64		window = dfe_bigquery_table_update_window_ms;
	int			drop = 0;

	while (drop < e->n && e->at_ms[drop] <= now - window)
		drop++;
	if (drop > 0)
	{
		memmove(e->at_ms, e->at_ms + drop, sizeof(int64) * (e->n - drop));
		e->n -= drop;
	}
	if (e->n < limit)
		return now;
	/* the (n - limit + 1)-th newest must leave the window first */
	return e->at_ms[e->n - limit] + window + 1;
}

static void
pace_record(const char *url, int64 at)
{
	PaceEntry  *e = pace_entry(url);

	if (e->n == PACE_MAX)
	{
		memmove(e->at_ms, e->at_ms + 1, sizeof(int64) * (PACE_MAX - 1));
		e->n--;
	}
	e->at_ms[e->n++] = at;
}

/* the PATCHes, each table's held back as pace_due says; the others go at once */
static void
run_patches_paced(ApplyState *st, List *patches, List **next_gets)
{
	while (patches != NIL)
	{
		int64		now = mono_ms();
		int64		earliest = PG_INT64_MAX;
		List	   *ready = NIL;
		List	   *later = NIL;
		ListCell   *lc;

		foreach(lc, patches)
		{
			TagWork    *w = lfirst(lc);
			int64		due = pace_due(w->url, now);

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
				pace_record(w->url, mono_ms());
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

		run_patches_paced(&st, patches, &next_gets);

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
/* what the extension saw: dfe_airbyte.policy_tag_state                   */
/* ---------------------------------------------------------------------- */

static ArrayType *
text_array_of(List *strings)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(list_length(strings), 1));
	ListCell   *lc;

	foreach(lc, strings)
		elems[foreach_current_index(lc)] = CStringGetTextDatum((char *) lfirst(lc));
	return construct_array(elems, list_length(strings), TEXTOID, -1, false, TYPALIGN_INT);
}

/*
 * One event per column hidden because it is not allowlisted, whoever hid it
 * (dfe_airbyte_apply_policy_tags(), a deploy, the drift repair after a
 * sync): each is a column the service's configuration does not classify.
 */
static void
record_unlisted_event(PolicyTagResult *r)
{
	cJSON	   *data = cJSON_CreateObject();
	char	   *object = psprintf("%s.%s", r->table_name, r->column_name);
	char	   *when = r->sync_job_id
		? psprintf(" (after sync job " INT64_FORMAT ")", r->sync_job_id) : "";

	if (r->sync_job_id)
		cJSON_AddNumberToObject(data, "job_id", (double) r->sync_job_id);
	else
		cJSON_AddNullToObject(data, "job_id");
	cJSON_AddStringToObject(data, "table", r->table_name);
	cJSON_AddStringToObject(data, "column", r->column_name);
	cJSON_AddStringToObject(data, "origin", r->unlisted);
	if (r->table_created)
		cJSON_AddStringToObject(data, "table_created", timestamptz_to_str(r->table_created));
	else
		cJSON_AddNullToObject(data, "table_created");
	dfe_event("warning", "unlisted_column_hidden", object,
			  psprintf("column %s of BigQuery table %s is not in the allowlist: %s. It now carries the hidden policy tag%s; "
					   "classify it in analytics.yml, analytics_hidden_pii.yml or analytics_blocklist.yml",
					   r->column_name, r->table_name, r->unlisted, when),
			  cJSON_PrintUnformatted(data));
	cJSON_Delete(data);
}

void
policy_tag_state_record(List *results)
{
	List	   *tables = NIL,
			   *columns = NIL,
			   *tags = NIL,
			   *gone_tables = NIL,
			   *gone_columns = NIL;
	Oid			types[3] = {TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID};
	Datum		args[3];
	ListCell   *lc;
	int			ret;

	foreach(lc, results)
	{
		PolicyTagResult *r = lfirst(lc);

		if (r->policy_tag && r->column_name)
		{
			tables = lappend(tables, r->table_name);
			columns = lappend(columns, r->column_name);
			tags = lappend(tags, r->policy_tag);
		}
		else if (strcmp(r->action, "untagged") == 0)
		{
			gone_tables = lappend(gone_tables, r->table_name);
			gone_columns = lappend(gone_columns, r->column_name);
		}
	}
	if (tables == NIL && gone_tables == NIL)
		return;

	SPI_connect();
	if (tables != NIL)
	{
		args[0] = PointerGetDatum(text_array_of(tables));
		args[1] = PointerGetDatum(text_array_of(columns));
		args[2] = PointerGetDatum(text_array_of(tags));
		ret = SPI_execute_with_args(
			"INSERT INTO dfe_airbyte.policy_tag_state AS s (table_name, column_name, policy_tag)"
			" SELECT t, c, g FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3)) AS n(t, c, g)"
			" ON CONFLICT (table_name, column_name) DO UPDATE"
			"   SET last_seen_tagged = pg_catalog.now(), policy_tag = EXCLUDED.policy_tag,"
			"       first_tagged_at = CASE WHEN s.policy_tag OPERATOR(pg_catalog.=) EXCLUDED.policy_tag"
			"                              THEN s.first_tagged_at ELSE pg_catalog.now() END",
			3, types, args, NULL, false, 0);
		if (ret != SPI_OK_INSERT)
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not record the policy tags seen in dfe_airbyte.policy_tag_state: %s",
							SPI_result_code_string(ret)),
					 errhint("Check that the dfe_airbyte extension is up to date (ALTER EXTENSION dfe_airbyte UPDATE).")));
	}
	if (gone_tables != NIL)
	{
		args[0] = PointerGetDatum(text_array_of(gone_tables));
		args[1] = PointerGetDatum(text_array_of(gone_columns));
		ret = SPI_execute_with_args(
			"DELETE FROM dfe_airbyte.policy_tag_state AS s"
			" USING ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) AS n(t, c)"
			" WHERE s.table_name OPERATOR(pg_catalog.=) n.t"
			"   AND pg_catalog.lower(s.column_name) OPERATOR(pg_catalog.=) pg_catalog.lower(n.c)",
			2, types, args, NULL, false, 0);
		if (ret != SPI_OK_DELETE)
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not update dfe_airbyte.policy_tag_state: %s", SPI_result_code_string(ret)),
					 errhint("Check that the dfe_airbyte extension is up to date (ALTER EXTENSION dfe_airbyte UPDATE).")));
	}
	SPI_finish();

	/* recorded where every caller records what it did, so once per column */
	foreach(lc, results)
	{
		PolicyTagResult *r = lfirst(lc);

		if (r->unlisted && strcmp(r->action, "tagged") == 0)
			record_unlisted_event(r);
	}
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

	DFE_REQUIRE_MATCHING_SQL();
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

	/* what was seen is true whatever failed elsewhere, but an ERROR rolls it back */
	if (nfailed == 0)
		policy_tag_state_record(results);

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

static void
add_time(cJSON *obj, const char *key, TimestampTz t)
{
	if (t != 0)
		cJSON_AddStringToObject(obj, key, timestamptz_to_str(t));
	else
		cJSON_AddNullToObject(obj, key);
}

/* the data of a policy_tags_repaired event */
static char *
repair_data(int64 job_id, const char *table, List *tagged_rows, List *untagged, List *replaced)
{
	cJSON	   *obj = cJSON_CreateObject();
	cJSON	   *tagged = cJSON_AddArrayToObject(obj, "tagged");
	cJSON	   *exposed = cJSON_CreateArray();
	cJSON	   *unlisted = cJSON_CreateArray();
	ListCell   *lc;
	char	   *out;

	cJSON_AddNumberToObject(obj, "job_id", (double) job_id);
	cJSON_AddStringToObject(obj, "table", table);
	foreach(lc, tagged_rows)
	{
		PolicyTagResult *r = lfirst(lc);

		cJSON_AddItemToArray(tagged, cJSON_CreateString(r->column_name));
		if (r->exposed)
		{
			cJSON	   *e = cJSON_CreateObject();

			cJSON_AddStringToObject(e, "column", r->column_name);
			add_time(e, "exposed_since", r->exposed_since);
			add_time(e, "last_seen_tagged", r->last_seen_tagged);
			add_time(e, "table_created", r->table_created);
			add_time(e, "table_modified", r->table_modified);
			cJSON_AddBoolToObject(e, "table_recreated", r->table_created > r->last_seen_tagged);
			cJSON_AddItemToArray(exposed, e);
		}
		if (r->unlisted)
		{
			cJSON	   *u = cJSON_CreateObject();

			cJSON_AddStringToObject(u, "column", r->column_name);
			cJSON_AddStringToObject(u, "origin", r->unlisted);
			cJSON_AddItemToArray(unlisted, u);
		}
	}
	cJSON_AddItemToObject(obj, "untagged", json_array_of(untagged));
	cJSON_AddItemToObject(obj, "exposed", exposed);
	cJSON_AddItemToObject(obj, "unlisted", unlisted);
	if (replaced)
		cJSON_AddItemToObject(obj, "details", json_array_of(replaced));
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
	List	   *tagged_rows = NIL;
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
				appendStringInfoString(&detail, ". Airbyte's destination drops tags when it recreates a table (a refresh, a schema migration, a WRITE_TRUNCATE copy) or replaces a column (a type change).");
				dfe_event("warning", "policy_tags_repaired", table, detail.data,
						  repair_data(job_id, table, tagged_rows, untagged, replaced));
			}
			tagged = tagged_rows = untagged = replaced = NIL;
		}
		if (r == NULL)
			break;
		table = r->table_name;
		if (strcmp(r->action, "tagged") == 0)
		{
			tagged = lappend(tagged, r->column_name);
			tagged_rows = lappend(tagged_rows, r);
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

			r->sync_job_id = job_id;
			if (strcmp(r->action, "tagged") == 0 || strcmp(r->action, "untagged") == 0)
				changes = true;
		}
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
		MemoryContextSwitchTo(cxt);
		policy_tag_state_record(results);
		if (changes || failed)
			record_repair_events(job_id, results);
		PopActiveSnapshot();
		CommitTransactionCommand();
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
