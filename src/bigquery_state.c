/*
 * bigquery_state.c — what the extension saw of the policy tags:
 * dfe_airbyte.policy_tag_state, per target (see bigquery.h).
 *
 * Every caller that applied a plan (dfe_airbyte_apply_policy_tags(), a
 * deploy, the drift repair after a sync) records here, in the current
 * target's scope (target_scope.h), which columns carry the tag the
 * extension manages, and raises unlisted_column_hidden once per column
 * hidden because it is not allowlisted.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include <cjson/cJSON.h>

#include "bigquery.h"
#include "events.h"
#include "target_scope.h"

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

/* the columns seen carrying the tag the extension manages there */
static void
remember_tagged(List *tables, List *columns, List *tags, Datum target)
{
	Oid			types[4] = {TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTOID};
	Datum		args[4];
	int			ret;

	args[0] = PointerGetDatum(text_array_of(tables));
	args[1] = PointerGetDatum(text_array_of(columns));
	args[2] = PointerGetDatum(text_array_of(tags));
	args[3] = target;
	ret = SPI_execute_with_args(
		"INSERT INTO dfe_airbyte.policy_tag_state AS s (target, table_name, column_name, policy_tag)"
		" SELECT $4, t, c, g FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3)) AS n(t, c, g)"
		" ON CONFLICT (target, table_name, column_name) DO UPDATE"
		"   SET last_seen_tagged = pg_catalog.now(), policy_tag = EXCLUDED.policy_tag,"
		"       first_tagged_at = CASE WHEN s.policy_tag OPERATOR(pg_catalog.=) EXCLUDED.policy_tag"
		"                              THEN s.first_tagged_at ELSE pg_catalog.now() END",
		4, types, args, NULL, false, 0);
	if (ret != SPI_OK_INSERT)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not record the policy tags seen in dfe_airbyte.policy_tag_state: %s",
						SPI_result_code_string(ret)),
				 errhint("Check that the dfe_airbyte extension is up to date (ALTER EXTENSION dfe_airbyte UPDATE).")));
}

/* the columns whose tag the extension removed: forgotten */
static void
forget_untagged(List *tables, List *columns, Datum target)
{
	Oid			types[3] = {TEXTARRAYOID, TEXTARRAYOID, TEXTOID};
	Datum		args[3];
	int			ret;

	args[0] = PointerGetDatum(text_array_of(tables));
	args[1] = PointerGetDatum(text_array_of(columns));
	args[2] = target;
	ret = SPI_execute_with_args(
		"DELETE FROM dfe_airbyte.policy_tag_state AS s"
		" USING ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) AS n(t, c)"
		" WHERE s.target OPERATOR(pg_catalog.=) $3 AND s.table_name OPERATOR(pg_catalog.=) n.t"
		"   AND pg_catalog.lower(s.column_name) OPERATOR(pg_catalog.=) pg_catalog.lower(n.c)",
		3, types, args, NULL, false, 0);
	if (ret != SPI_OK_DELETE)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not update dfe_airbyte.policy_tag_state: %s", SPI_result_code_string(ret)),
				 errhint("Check that the dfe_airbyte extension is up to date (ALTER EXTENSION dfe_airbyte UPDATE).")));
}

void
dfe_policy_tag_state_record(List *results)
{
	List	   *tables = NIL,
			   *columns = NIL,
			   *tags = NIL,
			   *gone_tables = NIL,
			   *gone_columns = NIL;
	ListCell   *lc;

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
	/* the rows are the current target's (target_scope.h) */
	if (tables != NIL)
		remember_tagged(tables, columns, tags, CStringGetTextDatum(dfe_target_current()));
	if (gone_tables != NIL)
		forget_untagged(gone_tables, gone_columns, CStringGetTextDatum(dfe_target_current()));
	SPI_finish();

	/* recorded where every caller records what it did, so once per column */
	foreach(lc, results)
	{
		PolicyTagResult *r = lfirst(lc);

		if (r->unlisted && strcmp(r->action, "tagged") == 0)
			record_unlisted_event(r);
	}
}
