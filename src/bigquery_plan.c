/*
 * bigquery_plan.c — the policy tag plan of the current target (see
 * bigquery.h): every allowlisted table with its blocklisted, allowlisted
 * and excluded columns (the lists, in this database), the columns of its
 * source table (read on the target's server, target.h) and what
 * policy_tag_state remembers of it; and the target's BigQuery settings.
 */
#include "postgres.h"

#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "bigquery.h"
#include "bigquery_int.h"
#include "settings.h"
#include "target.h"
#include "target_scope.h"

static int
plan_table_cmp(const void *a, const void *b)
{
	return strcmp((*(PlanTable *const *) a)->table, (*(PlanTable *const *) b)->table);
}

/* the plan's table of that name (the final table), or NULL */
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

/* the lists of the current target: they live in this database, one set per target */
#define LIST_OF_TARGET(alias) " WHERE " alias ".target OPERATOR(pg_catalog.=) $1"

/* 0: allowlisted, 1: blocklisted, 2: excluded, 3: in the source table, 4: seen tagged */
#define PLAN_SOURCE_QUERY 3
static const char *const plan_queries[] = {
	"SELECT table_name, column_name FROM dfe_airbyte.allowlist a" LIST_OF_TARGET("a"),
	"SELECT table_name, column_name, policy_tag FROM dfe_airbyte.blocklist b" LIST_OF_TARGET("b")
	" ORDER BY table_name COLLATE \"C\", column_name COLLATE \"C\"",
	"SELECT table_name, column_name FROM dfe_airbyte.excluded e" LIST_OF_TARGET("e"),
	/* run on the target (target.h): its catalog */
	"SELECT c.relname::pg_catalog.text, a.attname::pg_catalog.text"
	"  FROM pg_catalog.pg_attribute a"
	"  JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) a.attrelid"
	"  JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace"
	" WHERE n.nspname OPERATOR(pg_catalog.=) $1::pg_catalog.name"
	"   AND c.relkind OPERATOR(pg_catalog.=) ANY ('{r,p}'::pg_catalog.\"char\"[])"
	"   AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped",
	"SELECT table_name, column_name, policy_tag, last_seen_tagged::pg_catalog.text"
	"  FROM dfe_airbyte.policy_tag_state WHERE target OPERATOR(pg_catalog.=) $1",
};

/* one row of plan query q, added to its table of the plan */
static void
plan_add_row(PolicyTagPlan *plan, int q, PlanTable *pt, bool raw, DfeRows *r, int i)
{
	char	   *column = pstrdup(dfe_rows_value(r, i, 1));

	if (q == 0)
		pt->allowed = lappend(pt->allowed, column);
	else if (q == 1)
	{
		BlockedColumn *b = palloc0(sizeof(BlockedColumn));
		const char *tag = dfe_rows_value(r, i, 2);

		b->name = column;
		b->tag = tag ? pstrdup(tag) : plan->hidden_tag;
		pt->blocked = lappend(pt->blocked, b);
	}
	else if (q == 2)
		pt->excluded = lappend(pt->excluded, column);
	else if (q == 3)
		pt->source = lappend(pt->source, column);
	else
	{
		SeenColumn *seen = palloc0(sizeof(SeenColumn));

		seen->name = column;
		seen->tag = pstrdup(dfe_rows_value(r, i, 2));
		seen->last_seen = DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in,
																  CStringGetDatum(dfe_rows_value(r, i, 3)),
																  ObjectIdGetDatum(InvalidOid),
																  Int32GetDatum(-1)));
		if (raw)
			pt->seen_raw = lappend(pt->seen_raw, seen);
		else
			pt->seen = lappend(pt->seen, seen);
	}
}

/*
 * The per-column lists of every allowlisted table.  Rows of tables that are
 * not allowlisted are ignored (they have no final table).  The lists and
 * what was seen are this database's; the source columns the target's.
 */
static void
plan_load_columns(PolicyTagPlan *plan, DfeTarget *local, DfeTarget *target)
{
	const char *args[1];
	char	   *raw_prefix = psprintf("%s.%s_raw__stream_", plan->internal_dataset, plan->dataset);
	size_t		raw_len = strlen(raw_prefix);

	for (int q = 0; q < (int) lengthof(plan_queries); q++)
	{
		bool		on_target = q == PLAN_SOURCE_QUERY;
		DfeRows    *r;

		args[0] = on_target ? dfe_setting_source_schema() : dfe_target_current();
		r = dfe_target_query(on_target ? target : local, "read the dfe_airbyte lists",
							 plan_queries[q], 1, args);
		for (int i = 0; i < r->nrows; i++)
		{
			const char *table = dfe_rows_value(r, i, 0);
			bool		raw = q == 4 && strncmp(table, raw_prefix, raw_len) == 0;
			PlanTable  *pt = plan_find(plan, raw ? table + raw_len : table);

			if (pt != NULL)
				plan_add_row(plan, q, pt, raw, r, i);
		}
	}
}

/* the settings of the plan, the current target's (target_scope.h) */
static PolicyTagPlan *
plan_settings(void)
{
	PolicyTagPlan *plan = palloc0(sizeof(PolicyTagPlan));
	const char *tag;

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
	return plan;
}

PolicyTagPlan *
dfe_policy_tag_plan_load(void)
{
	PolicyTagPlan *plan = plan_settings();
	DfeTarget  *local = dfe_target_open(DFE_LOCAL_TARGET);
	DfeTarget  *target = dfe_target_open(dfe_target_current());
	const char *args[1] = {dfe_target_current()};
	DfeRows    *r;

	r = dfe_target_query(local, "read the dfe_airbyte lists",
						 "SELECT table_name FROM dfe_airbyte.allowlist a" LIST_OF_TARGET("a")
						 " GROUP BY table_name ORDER BY table_name COLLATE \"C\"",
						 1, args);
	plan->ntables = r->nrows;
	plan->tables = palloc0(sizeof(PlanTable *) * Max(plan->ntables, 1));
	for (int i = 0; i < plan->ntables; i++)
	{
		plan->tables[i] = palloc0(sizeof(PlanTable));
		plan->tables[i]->table = pstrdup(dfe_rows_value(r, i, 0));
	}
	/* "C" order is strcmp order, but do not bet the lookups on it */
	qsort(plan->tables, plan->ntables, sizeof(PlanTable *), plan_table_cmp);
	plan_load_columns(plan, local, target);
	if (!dfe_target_is_local(target))
		dfe_target_close(target);
	return plan;
}

