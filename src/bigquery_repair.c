/*
 * bigquery_repair.c — the worker's drift repair after a sync (see
 * bigquery.h): the plan of the current target applied again, and events
 * for what had to be put back.
 */
#include "postgres.h"

#include "access/xact.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include <cjson/cJSON.h>

#include "bigquery.h"
#include "events.h"
#include "spi_xact.h"

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

/* read the plan, apply it (no transaction open during the HTTP calls), record */
static void
repair_after_sync(void *arg)
{
	int64		job_id = *(int64 *) arg;
	MemoryContext cxt = CurrentMemoryContext;
	PolicyTagPlan *plan;
	List	   *results;
	List	   *failed;
	bool		changes = false;
	ListCell   *lc;

	/* the plan and the results live in cxt, across the commits */
	dfe_xact_begin("dfe_airbyte policy tag repair");
	MemoryContextSwitchTo(cxt);
	plan = dfe_policy_tag_plan_load();
	dfe_xact_end();

	results = dfe_policy_tag_plan_apply(plan, &failed);
	foreach(lc, results)
	{
		PolicyTagResult *r = lfirst(lc);

		r->sync_job_id = job_id;
		if (strcmp(r->action, "tagged") == 0 || strcmp(r->action, "untagged") == 0)
			changes = true;
	}
	dfe_xact_begin("dfe_airbyte policy tag repair");
	MemoryContextSwitchTo(cxt);
	dfe_policy_tag_state_record(results);
	if (changes || failed)
		record_repair_events(job_id, results);
	dfe_xact_end();
}

void
dfe_policy_tags_repair_after_sync(int64 job_id)
{
	MemoryContext cxt;
	MemoryContext old = CurrentMemoryContext;
	ErrorData  *edata;

	if (!dfe_bigquery_configured())
		return;

	/* a child of the caller's (non-transaction) context: it survives the commits */
	cxt = AllocSetContextCreate(old, "dfe_airbyte policy tag repair",
								ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(cxt);
	if (!dfe_catch(repair_after_sync, &job_id, 0, cxt, &edata))
	{
		/* record why, instead of losing the repair of this sync silently */
		dfe_xact_begin("dfe_airbyte policy tag repair");
		dfe_event("warning", "policy_tags_failed", NULL,
				  psprintf("could not check the BigQuery policy tags after sync job " INT64_FORMAT ": %s%s%s",
						   job_id, edata->message,
						   edata->detail ? "; " : "", edata->detail ? edata->detail : ""),
				  psprintf("{\"job_id\": " INT64_FORMAT "}", job_id));
		dfe_xact_end();
	}
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
}
