/*
 * connection.c — keeps the Airbyte connection what the allowlist says.
 *
 * Airbyte's schema propagation (nonBreakingSchemaUpdatesBehavior
 * propagate_columns / propagate_fully; DfE's Terraform sets propagate_fully)
 * adds every new column of a selected table to that stream's selectedFields,
 * and under propagate_fully every new table as a selected stream, on its
 * own at the schema check that starts a sync (airbyte-platform
 * ApplySchemaChangeHelper.getUpdatedSchema).  So after every poll the
 * network side of the worker reads the connection (one GET):
 *
 *   - its status goes to dfe_airbyte.connection_watch (shown by
 *     sync_health.connection_status); a change to inactive/deprecated is a
 *     connection_disabled event, back to active connection_enabled;
 *   - after each newly seen successful sync, the streams and fields it
 *     selects that the allowlist does not list are taken out again at once:
 *     the allowlist's stream configuration is pushed with the refresh code
 *     (discover with the cache disabled, then ONE PATCH), and each one is a
 *     connection_drift_removed event naming the table and column.  With
 *     dfe_airbyte.remove_connection_drift = off they are only reported
 *     (connection_drift_found).
 *
 * The PATCH never touches nonBreakingSchemaUpdatesBehavior: Terraform owns
 * the connection, and a change there would be reverted by the next
 * terraform apply (or show as plan drift on every plan).  config_problems
 * warns about propagate_* instead; see README "Connection drift".
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "utils/memutils.h"

#include <cjson/cJSON.h>

#include "airbyte.h"
#include "connection.h"
#include "events.h"
#include "http.h"
#include "settings.h"
#include "shared.h"
#include "spi_xact.h"
#include "target_scope.h"
#include "stream_config.h"

/* ---------- reading a connection ---------- */

static char *
json_str(cJSON *obj, const char *key)
{
	cJSON	   *item = cJSON_GetObjectItemCaseSensitive(obj, key);

	return cJSON_IsString(item) ? pstrdup(item->valuestring) : NULL;
}

/* [["a"], ["b"]] → "a, b" */
static char *
key_text(cJSON *key)
{
	StringInfoData buf;
	cJSON	   *path;

	if (!cJSON_IsArray(key))
		return NULL;
	initStringInfo(&buf);
	cJSON_ArrayForEach(path, key)
	{
		cJSON	   *first = cJSON_IsArray(path) ? cJSON_GetArrayItem(path, 0) : path;

		if (!cJSON_IsString(first))
			continue;
		if (buf.len > 0)
			appendStringInfoString(&buf, ", ");
		appendStringInfoString(&buf, first->valuestring);
	}
	return buf.data;
}

static LiveStream *
stream_from_json(cJSON *s)
{
	LiveStream *ls = palloc0(sizeof(LiveStream));
	cJSON	   *fields = cJSON_GetObjectItemCaseSensitive(s, "selectedFields");
	cJSON	   *f;

	ls->name = json_str(s, "name");
	ls->sync_mode = json_str(s, "syncMode");
	ls->primary_key = key_text(cJSON_GetObjectItemCaseSensitive(s, "primaryKey"));
	/* the public API leaves selectedFields out (or empty) without field selection */
	ls->all_fields = !cJSON_IsArray(fields) || cJSON_GetArraySize(fields) == 0;
	cJSON_ArrayForEach(f, fields)
	{
		cJSON	   *path = cJSON_GetObjectItemCaseSensitive(f, "fieldPath");
		cJSON	   *first = cJSON_IsArray(path) ? cJSON_GetArrayItem(path, 0) : NULL;

		if (cJSON_IsString(first))
			ls->fields = lappend(ls->fields, pstrdup(first->valuestring));
	}
	return ls;
}

static void
connection_from_json(cJSON *root, LiveConnection *c)
{
	cJSON	   *conf = cJSON_GetObjectItemCaseSensitive(root, "configurations");
	cJSON	   *streams = cJSON_IsObject(conf) ? cJSON_GetObjectItemCaseSensitive(conf, "streams") : NULL;
	cJSON	   *s;

	memset(c, 0, sizeof(*c));
	c->status = json_str(root, "status");
	c->schema_behavior = json_str(root, "nonBreakingSchemaUpdatesBehavior");
	cJSON_ArrayForEach(s, streams)
	{
		LiveStream *ls = stream_from_json(s);

		if (ls->name == NULL)
			continue;
		c->streams = lappend(c->streams, ls);
		c->nfields += list_length(ls->fields);
	}
}

void
dfe_connection_read(LiveConnection *c)
{
	cJSON	   *root;

	root = dfe_airbyte_request("the Airbyte connection read", "GET",
						   psprintf("/api/public/v1/connections/%s",
									dfe_http_escape(dfe_setting_connection_id())),
						   NULL);
	connection_from_json(root, c);
	cJSON_Delete(root);
}

void
dfe_connection_wanted(LiveConnection *c, char **json)
{
	char	   *text = dfe_stream_config_build();
	cJSON	   *root = cJSON_Parse(text);

	if (root == NULL)
		dfe_internal_error("dfe_airbyte: the stream configuration is not valid JSON");
	connection_from_json(root, c);
	cJSON_Delete(root);
	if (json)
		*json = text;
}

LiveStream *
dfe_connection_stream(const LiveConnection *c, const char *name)
{
	ListCell   *lc;

	foreach(lc, c->streams)
	{
		LiveStream *s = lfirst(lc);

		if (strcmp(s->name, name) == 0)
			return s;
	}
	return NULL;
}

bool
dfe_stream_selects(const LiveStream *s, const char *field)
{
	ListCell   *lc;

	if (s->all_fields)
		return true;
	foreach(lc, s->fields)
		if (strcmp((char *) lfirst(lc), field) == 0)
			return true;
	return false;
}

/* Airbyte's own metadata (the CDC cursor fields), never the service's data */
static bool
airbyte_metadata_field(const char *field)
{
	return strncmp(field, "_ab_cdc_", 8) == 0 || strncmp(field, "_airbyte_", 9) == 0;
}

static Unlisted *
unlisted(const char *stream, const char *field)
{
	Unlisted   *u = palloc(sizeof(Unlisted));

	u->stream = pstrdup(stream);
	u->field = field ? pstrdup(field) : NULL;
	return u;
}

List *
dfe_connection_unlisted(const LiveConnection *live, const LiveConnection *wanted)
{
	List	   *out = NIL;
	ListCell   *lc;

	foreach(lc, live->streams)
	{
		LiveStream *s = lfirst(lc);
		LiveStream *w = dfe_connection_stream(wanted, s->name);
		ListCell   *fc;

		if (w == NULL)
		{
			out = lappend(out, unlisted(s->name, NULL));
			continue;
		}
		if (s->all_fields)
		{
			out = lappend(out, unlisted(s->name, "*"));
			continue;
		}
		foreach(fc, s->fields)
		{
			const char *f = lfirst(fc);

			if (!airbyte_metadata_field(f) && !dfe_stream_selects(w, f))
				out = lappend(out, unlisted(s->name, f));
		}
	}
	return out;
}

bool
dfe_connection_disabled(const char *status)
{
	return status != NULL && (strcmp(status, "inactive") == 0 ||
							  strcmp(status, "deprecated") == 0);
}

void
dfe_connection_enable(void)
{
	cJSON	   *answer;

	answer = dfe_airbyte_request("the Airbyte connection re-enable", "PATCH",
							 psprintf("/api/public/v1/connections/%s",
									  dfe_http_escape(dfe_setting_connection_id())),
							 "{\"status\":\"active\"}");
	cJSON_Delete(answer);
}

/* ---------- the watch ---------- */

static MemoryContext watch_cxt;

static void
read_fn(void *arg)
{
	dfe_connection_read((LiveConnection *) arg);
}

static void
refresh_fn(void *arg)
{
	(void) dfe_airbyte_refresh_connection((const char *) arg);
}

/* {"stream": ["field", ...], ...} of a connection (for deploy_plan) */
static char *
fields_json(const LiveConnection *c)
{
	cJSON	   *o = cJSON_CreateObject();
	ListCell   *lc;
	char	   *out;

	foreach(lc, c->streams)
	{
		LiveStream *s = lfirst(lc);
		cJSON	   *a = cJSON_CreateArray();
		ListCell   *fc;

		foreach(fc, s->fields)
			cJSON_AddItemToArray(a, cJSON_CreateString(lfirst(fc)));
		cJSON_AddItemToObject(o, s->name, a);
	}
	out = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return out;
}

static const char *
unlisted_name(const Unlisted *u)
{
	if (u->field == NULL)
		return u->stream;
	return psprintf("%s.%s", u->stream, u->field);
}

static char *
unlisted_data(const Unlisted *u, int64 job_id, const char *behavior, const char *error)
{
	cJSON	   *o = cJSON_CreateObject();
	char	   *out;

	cJSON_AddStringToObject(o, "table", u->stream);
	if (u->field)
		cJSON_AddStringToObject(o, "column", u->field);
	if (job_id > 0)
		cJSON_AddNumberToObject(o, "job_id", (double) job_id);
	if (behavior)
		cJSON_AddStringToObject(o, "non_breaking_schema_updates_behavior", behavior);
	if (error)
		cJSON_AddStringToObject(o, "error", error);
	out = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return out;
}

static const char *
unlisted_what(const Unlisted *u)
{
	if (u->field == NULL)
		return psprintf("stream %s (a table the allowlist does not list)", u->stream);
	if (strcmp(u->field, "*") == 0)
		return psprintf("every field of stream %s (it has no field selection)", u->stream);
	return psprintf("column %s.%s, which the allowlist does not list", u->stream, u->field);
}

/* events for what was (or, with removal off or failing, was not) taken out */
static void
drift_events(List *extras, int64 job_id, const char *behavior, const char *error,
			 bool removed)
{
	ListCell   *lc;
	const char *why = behavior && strncmp(behavior, "propagate_", 10) == 0
		? psprintf(" (nonBreakingSchemaUpdatesBehavior = %s adds new columns and tables on its own)", behavior)
		: "";

	foreach(lc, extras)
	{
		Unlisted   *u = lfirst(lc);

		if (removed)
			dfe_event("warning", "connection_drift_removed", unlisted_name(u),
					  psprintf("the Airbyte connection selected %s%s; it was taken out of the connection again after sync job " INT64_FORMAT,
							   unlisted_what(u), why, job_id),
					  unlisted_data(u, job_id, behavior, NULL));
		else if (error)
			dfe_event("warning", "connection_drift_repair_failed", unlisted_name(u),
					  psprintf("the Airbyte connection selects %s%s and could not be corrected: %s; the worker tries again after the next sync, or run SELECT dfe_airbyte_connection_refresh()",
							   unlisted_what(u), why, error),
					  unlisted_data(u, job_id, behavior, error));
		else
			dfe_event("warning", "connection_drift_found", unlisted_name(u),
					  psprintf("the Airbyte connection selects %s%s; dfe_airbyte.remove_connection_drift is off, so it stays until the next deploy",
							   unlisted_what(u), why),
					  unlisted_data(u, job_id, behavior, NULL));
	}
}

/* the newest job still running: its progress counters, for dfe_airbyte_repair() */
static void
record_progress(List *jobs)
{
	AirbyteJob *active = NULL;
	ListCell   *lc;
	const char *target[1] = {dfe_target_current()};

	foreach(lc, jobs)
	{
		AirbyteJob *j = lfirst(lc);

		if (dfe_airbyte_job_active(j->status) && (active == NULL || j->job_id > active->job_id))
			active = j;
	}
	if (active == NULL)
	{
		dfe_sql("forget job progress",
				"UPDATE dfe_airbyte.connection_watch SET progress_job_id = NULL, progress_rows = NULL,\n"
				"    progress_bytes = NULL, progress_since = NULL WHERE target = $1 AND progress_job_id IS NOT NULL",
				1, target, SPI_OK_UPDATE);
		return;
	}
	{
		const char *args[4] = {
			dfe_int64_str(active->job_id),
			active->rows_synced >= 0 ? dfe_int64_str(active->rows_synced) : NULL,
			active->bytes_synced >= 0 ? dfe_int64_str(active->bytes_synced) : NULL,
			target[0]
		};

		dfe_sql("record job progress",
				"UPDATE dfe_airbyte.connection_watch SET\n"
				"    progress_since = CASE WHEN progress_job_id = $1::bigint\n"
				"                           AND progress_rows IS NOT DISTINCT FROM $2::bigint\n"
				"                           AND progress_bytes IS NOT DISTINCT FROM $3::bigint\n"
				"                          THEN progress_since ELSE now() END,\n"
				"    progress_job_id = $1::bigint, progress_rows = $2::bigint, progress_bytes = $3::bigint\n"
				"WHERE target = $4",
				4, args, SPI_OK_UPDATE);
	}
}

/* the current target's row of connection_watch, added at its first read */
static void
watch_row(void)
{
	const char *target[1] = {dfe_target_current()};

	dfe_sql("add the target's connection watch",
			"INSERT INTO dfe_airbyte.connection_watch (target) VALUES ($1) ON CONFLICT (target) DO NOTHING",
			1, target, SPI_OK_INSERT);
}

/* status, behaviour and counts into connection_watch; an event when the status changes */
static void
record_connection(const LiveConnection *live, bool matches)
{
	const char *args[7] = {
		live->status, live->schema_behavior,
		psprintf("%d", list_length(live->streams)), psprintf("%d", live->nfields),
		matches ? "true" : "false", matches ? fields_json(live) : NULL,
		dfe_target_current()
	};
	char	   *old;
	bool		seen;

	watch_row();
	dfe_sql("read the connection watch",
			"SELECT status, checked_at IS NOT NULL FROM dfe_airbyte.connection_watch WHERE target = $1",
			1, &args[6], SPI_OK_SELECT);
	old = SPI_processed > 0 ? dfe_col_text(0, 1) : NULL;
	seen = SPI_processed > 0 && !dfe_col_isnull(0, 2) &&
		DatumGetBool(dfe_col_datum(0, 2, &(bool){false}));
	dfe_sql("record the connection",
			"UPDATE dfe_airbyte.connection_watch SET checked_at = now(), check_error = NULL,\n"
			"    status_since = CASE WHEN status IS DISTINCT FROM $1 THEN now() ELSE status_since END,\n"
			"    status = $1, schema_behavior = $2, streams = $3::int, selected_fields = $4::int,\n"
			"    matched_fields = CASE WHEN $5::boolean THEN $6::jsonb ELSE matched_fields END,\n"
			"    matched_at = CASE WHEN $5::boolean THEN now() ELSE matched_at END\n"
			"WHERE target = $7",
			7, args, SPI_OK_UPDATE);

	if (dfe_connection_disabled(live->status) && (!seen || old == NULL || !dfe_connection_disabled(old)))
		dfe_event("critical", "connection_disabled", dfe_setting_connection_id(),
				  psprintf("the Airbyte connection is %s: Airbyte runs no syncs for it (it disables a connection after 20 or 30 failed jobs in a row, or on a breaking schema change); fix the cause, then SELECT * FROM dfe_airbyte_repair(dry_run => false) re-enables it",
						   live->status),
				  NULL);
	else if (seen && old != NULL && dfe_connection_disabled(old) && !dfe_connection_disabled(live->status))
		dfe_event("info", "connection_enabled", dfe_setting_connection_id(),
				  psprintf("the Airbyte connection is %s again", live->status ? live->status : "active"),
				  NULL);
}

static void
record_check_error(const char *error)
{
	const char *args[2] = {error, dfe_target_current()};

	dfe_xact_begin("dfe_airbyte connection watch");
	watch_row();
	dfe_sql("record the connection check error",
			"UPDATE dfe_airbyte.connection_watch SET checked_at = now(), check_error = $1 WHERE target = $2",
			2, args, SPI_OK_UPDATE);
	dfe_xact_end();
}

/* the read of this poll, taken before sync_watch says the poll happened */
static LiveConnection polled;
static char *polled_error;
static bool polled_valid = false;

void
dfe_connection_watch_read(void)
{
	watch_cxt = CurrentMemoryContext;
	/* Airbyte, outside any transaction */
	polled_error = dfe_http_try(read_fn, &polled, watch_cxt);
	polled_valid = true;
}

void
dfe_connection_watch_poll(List *jobs, int64 new_success)
{
	LiveConnection live;
	LiveConnection wanted;
	char	   *wanted_json;
	char	   *error;
	List	   *extras;

	if (!polled_valid)
		return;
	polled_valid = false;
	watch_cxt = CurrentMemoryContext;
	live = polled;
	error = polled_error;
	if (error)
	{
		record_check_error(error);
		return;
	}

	dfe_xact_begin("dfe_airbyte connection watch");
	/* what is built here is used after the commit: not in SPI's memory */
	MemoryContextSwitchTo(watch_cxt);
	dfe_connection_wanted(&wanted, &wanted_json);
	extras = dfe_connection_unlisted(&live, &wanted);
	record_connection(&live, extras == NIL);
	record_progress(jobs);
	dfe_xact_end();

	if (extras == NIL || new_success == 0)
		return;

	/* drift after a successful sync: take it out again with the refresh code */
	error = NULL;
	if (dfe_remove_connection_drift)
	{
		ereport(LOG,
				(errmsg("dfe_airbyte: the Airbyte connection selects %d stream(s) or field(s) the allowlist does not list; refreshing it",
						list_length(extras))));
		error = dfe_http_try(refresh_fn, wanted_json, watch_cxt);
	}

	dfe_xact_begin("dfe_airbyte connection watch");
	drift_events(extras, new_success, live.schema_behavior, error,
				 dfe_remove_connection_drift && error == NULL);
	if (dfe_remove_connection_drift && error == NULL)
	{
		const char *target[1] = {dfe_target_current()};

		dfe_sql("record the drift removal",
				"UPDATE dfe_airbyte.connection_watch SET drift_removed_at = now() WHERE target = $1",
				1, target, SPI_OK_UPDATE);
	}
	dfe_xact_end();
}
