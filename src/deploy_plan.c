/*
 * deploy_plan.c — dfe_airbyte_deploy_plan(): what the next
 * refresh would change in the Airbyte connection, read live from it, with
 * the BigQuery consequence of each change.  Read-only: one GET of the
 * connection, no PATCH and no discover.
 *
 * Why no discover: a discover with disable_cache = true replaces the
 * catalog Airbyte caches for the source (the one the next PATCH is
 * validated against) and runs a discover job against this database; with
 * the cache it returns a catalog that may be a day old.  Neither adds
 * anything the plan needs: what the refresh sends is built from this
 * database's own catalog, and what it replaces is in the connection.
 *
 * Rows (stream, field, change, detail), change one of:
 *   add_stream, remove_stream, add_field, remove_field,
 *   selected_by_airbyte   (a stream or field the connection selects that is
 *                          not allowlisted and was not there when the
 *                          connection last matched the allowlist: Airbyte's
 *                          schema propagation or a change by hand),
 *   sync_mode, primary_key,
 *   field_count / over_field_limit (always one, last: stream and field NULL).
 */
#include "postgres.h"

#include "executor/spi.h"
#include "compat.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include <cjson/cJSON.h>

#include "airbyte.h"
#include "connection.h"
#include "settings.h"
#include "shared.h"
#include "spi_xact.h"
#include "target_scope.h"
#include "version.h"

typedef struct PlanCtx
{
	ReturnSetInfo *rsinfo;
	cJSON	   *matched;		/* connection_watch.matched_fields, or NULL */
	List	   *blocklist;		/* "table.column" */
	const char *behavior;
} PlanCtx;

static void
plan_row(PlanCtx *p, const char *stream, const char *field, const char *change,
		 const char *detail)
{
	Datum		values[4];
	bool		nulls[4] = {stream == NULL, field == NULL, false, false};

	values[0] = stream ? CStringGetTextDatum(stream) : (Datum) 0;
	values[1] = field ? CStringGetTextDatum(field) : (Datum) 0;
	values[2] = CStringGetTextDatum(change);
	values[3] = CStringGetTextDatum(detail);
	tuplestore_putvalues(p->rsinfo->setResult, p->rsinfo->setDesc, values, nulls);
}

static bool
blocklisted(PlanCtx *p, const char *stream, const char *field)
{
	char	   *key = psprintf("%s.%s", stream, field);
	ListCell   *lc;

	foreach(lc, p->blocklist)
		if (strcmp(lfirst(lc), key) == 0)
			return true;
	return false;
}

/* was it there when the connection last matched the allowlist? (true when unknown) */
static bool
was_matched(PlanCtx *p, const char *stream, const char *field)
{
	cJSON	   *fields;
	cJSON	   *f;

	if (p->matched == NULL)
		return true;
	fields = cJSON_GetObjectItemCaseSensitive(p->matched, stream);
	if (!cJSON_IsArray(fields))
		return false;
	if (field == NULL)
		return true;
	cJSON_ArrayForEach(f, fields)
		if (cJSON_IsString(f) && strcmp(f->valuestring, field) == 0)
			return true;
	return false;
}

static const char *
propagation_note(PlanCtx *p)
{
	if (p->behavior && strncmp(p->behavior, "propagate_", 10) == 0)
		return psprintf("Airbyte's schema propagation (nonBreakingSchemaUpdatesBehavior = %s) or a change by hand", p->behavior);
	return "a change by hand in Airbyte";
}

/* the lists and what the worker remembers, in the caller's transaction */
static void
read_local(PlanCtx *p, LiveConnection *wanted)
{
	uint64		i;
	MemoryContext outer = CurrentMemoryContext;
	const char *target[1] = {dfe_target_current()};

	dfe_set_result_context(outer);
	if (SPI_connect() != SPI_OK_CONNECT)
		dfe_internal_error("dfe_airbyte: SPI_connect failed");
	/* the lists built here outlive SPI_finish */
	MemoryContextSwitchTo(outer);
	dfe_connection_wanted(wanted, NULL);
	dfe_sql("read the blocklist",
			"SELECT table_name || '.' || column_name FROM dfe_airbyte.blocklist",
			0, NULL, SPI_OK_SELECT);
	for (i = 0; i < SPI_processed; i++)
		p->blocklist = lappend(p->blocklist, dfe_col_text(i, 1));
	dfe_sql("read the connection watch",
			"SELECT matched_fields::text FROM dfe_airbyte.connection_watch WHERE target = $1",
			1, target, SPI_OK_SELECT);
	if (SPI_processed > 0 && !dfe_col_isnull(0, 1))
		p->matched = cJSON_Parse(dfe_col_text(0, 1));
	SPI_finish();
}

static void
plan_unlisted(PlanCtx *p, const LiveConnection *live, const LiveConnection *wanted)
{
	ListCell   *lc;

	foreach(lc, dfe_connection_unlisted(live, wanted))
	{
		Unlisted   *u = lfirst(lc);

		if (u->field == NULL)
			plan_row(p, u->stream, NULL, was_matched(p, u->stream, NULL) ? "remove_stream" : "selected_by_airbyte",
					 was_matched(p, u->stream, NULL)
					 ? "not in the allowlist: Airbyte stops syncing the table; its BigQuery table stays as it is but is no longer updated"
					 : psprintf("not in the allowlist, selected by %s: the refresh takes the stream out; whatever it copied stays in BigQuery (run dfe_airbyte_apply_policy_tags() and check it for personal data)",
								propagation_note(p)));
		else if (strcmp(u->field, "*") == 0)
			plan_row(p, u->stream, NULL, "selected_by_airbyte",
					 psprintf("the stream has no field selection, so Airbyte copies every column; the refresh limits it to the allowlisted columns, dropping the others from BigQuery with their history (%s)",
							  propagation_note(p)));
		else if (was_matched(p, u->stream, u->field))
			plan_row(p, u->stream, u->field, "remove_field",
					 "removed from the allowlist: the column is dropped from the BigQuery table with its history");
		else
			plan_row(p, u->stream, u->field, "selected_by_airbyte",
					 psprintf("not in the allowlist, selected by %s: the refresh takes it out and the column is dropped from BigQuery; the values copied until then were visible%s",
							  propagation_note(p),
							  blocklisted(p, u->stream, u->field) ? " (it is blocklisted: sensitive)" : ""));
	}
}

static const char *
mode_consequence(const char *to)
{
	if (to && strncmp(to, "full_refresh", 12) == 0)
		return "the BigQuery table is overwritten at every sync: deleted rows and old versions are no longer kept";
	return "Airbyte re-reads the table and then appends every change: history is kept from then on";
}

static void
plan_wanted(PlanCtx *p, const LiveConnection *live, const LiveConnection *wanted)
{
	ListCell   *lc;

	foreach(lc, wanted->streams)
	{
		LiveStream *w = lfirst(lc);
		LiveStream *s = dfe_connection_stream(live, w->name);
		ListCell   *fc;

		if (s == NULL)
		{
			plan_row(p, w->name, NULL, "add_stream",
					 psprintf("new stream with %d fields: Airbyte copies the whole table at the next sync", list_length(w->fields)));
			s = NULL;
		}
		else
		{
			if (w->sync_mode && (s->sync_mode == NULL || strcmp(s->sync_mode, w->sync_mode) != 0))
				plan_row(p, w->name, NULL, "sync_mode",
						 psprintf("%s → %s: %s", s->sync_mode ? s->sync_mode : "(none)", w->sync_mode,
								  mode_consequence(w->sync_mode)));
			if ((w->primary_key ? w->primary_key : "")[0] != '\0' &&
				strcmp(s->primary_key ? s->primary_key : "", w->primary_key) != 0)
				plan_row(p, w->name, NULL, "primary_key",
						 psprintf("(%s) → (%s): rows in BigQuery are identified by the new key from the next sync on",
								  s->primary_key ? s->primary_key : "none", w->primary_key));
		}
		foreach(fc, w->fields)
		{
			const char *f = lfirst(fc);

			if (s != NULL && dfe_stream_selects(s, f))
				continue;
			plan_row(p, w->name, f, "add_field",
					 blocklisted(p, w->name, f)
					 ? "new column in BigQuery from the next sync; blocklisted: the deploy gives it the hidden policy tag after that sync (a type change later drops the tag until the next repair)"
					 : "new column in BigQuery from the next sync (earlier rows have it NULL)");
		}
	}
}

static void
plan_field_count(PlanCtx *p, const LiveConnection *live, const LiveConnection *wanted)
{
	int			n = wanted->nfields;

	if (n > dfe_airbyte_max_fields)
		plan_row(p, NULL, NULL, "over_field_limit",
				 psprintf("%d selected fields after the refresh (now %d): over Airbyte's limit of %d (dfe_airbyte.airbyte_max_fields, Airbyte's MAX_FIELDS_PER_CONNECTION), so Airbyte rejects the refresh; take columns out of the allowlist or raise the limit in Airbyte",
						  n, live->nfields, dfe_airbyte_max_fields));
	else
		plan_row(p, NULL, NULL, "field_count",
				 psprintf("%d selected fields after the refresh (now %d), Airbyte's limit is %d", n, live->nfields,
						  dfe_airbyte_max_fields));
}

PG_FUNCTION_INFO_V1(dfe_airbyte_deploy_plan);

Datum
dfe_airbyte_deploy_plan(PG_FUNCTION_ARGS)
{
	PlanCtx		p = {0};
	LiveConnection live;
	LiveConnection wanted;

	DfeTargetScope *scope;

	DFE_REQUIRE_MATCHING_SQL();
	/* the target's connection_id and lists: its scope */
	scope = dfe_target_scope_enter(PG_NARGS() > 0 ? text_to_cstring(PG_GETARG_TEXT_PP(0)) : DFE_LOCAL_TARGET);
	dfe_airbyte_require_configuration();
	InitMaterializedSRF(fcinfo, 0);
	p.rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	read_local(&p, &wanted);
	dfe_connection_read(&live);
	p.behavior = live.schema_behavior;

	plan_wanted(&p, &live, &wanted);
	plan_unlisted(&p, &live, &wanted);
	plan_field_count(&p, &live, &wanted);
	dfe_target_scope_leave(scope);
	return (Datum) 0;
}
