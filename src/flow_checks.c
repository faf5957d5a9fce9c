/*
 * flow_checks.c — does data really flow?
 *
 * A succeeded Airbyte job proves little: a connector that ignores the
 * heartbeat query, a slot whose confirmed_flush_lsn no longer moves, or a
 * sync that reads nothing although the tables changed all "succeed".  The
 * sync health task (sync_health.c) calls in here:
 *
 *   dfe_flow_note_job_progress()     for every job it reads, inside its
 *                                transaction: keeps rowsSynced/bytesSynced
 *                                and when the job last made progress
 *                                (sync_health.stuck);
 *   dfe_flow_checks_after_success()  once per newly succeeded job, outside any
 *                                transaction: compares the Airbyte slot's
 *                                confirmed_flush_lsn, the allowlisted
 *                                tables' change counters and the heartbeat
 *                                with the previous successful sync, writes
 *                                dfe_airbyte.flow_checks and raises
 *                                slot_not_advancing, sync_no_rows and
 *                                heartbeat_not_running.
 *
 * The slot, counters and heartbeat are the current target's (target_scope.h),
 * read through the seam (target.h); the rows are written here, under the
 * target's name.  No HTTP call.  Each finding is an
 * event when it appears (not at every sync while it lasts); flow_checks
 * keeps the findings of every check.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"

#include "airbyte.h"
#include "events.h"
#include "flow_checks.h"
#include "settings.h"
#include "spi_xact.h"
#include "target.h"
#include "target_scope.h"

void
dfe_flow_note_job_progress(const AirbyteJob *job)
{
	MemoryContext cxt = CurrentMemoryContext;
	Oid			types[5] = {INT8OID, INT8OID, INT8OID, TEXTOID, TEXTOID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	int			ret;

	values[0] = Int64GetDatum(job->job_id);
	values[1] = Int64GetDatum(job->rows_synced);
	nulls[1] = job->rows_synced < 0 ? 'n' : ' ';
	values[2] = Int64GetDatum(job->bytes_synced);
	nulls[2] = job->bytes_synced < 0 ? 'n' : ' ';
	values[3] = CStringGetTextDatum(psprintf(INT64_FORMAT "/" INT64_FORMAT "/%s",
											 job->rows_synced, job->bytes_synced,
											 job->last_updated_at ? job->last_updated_at : ""));
	values[4] = CStringGetTextDatum(dfe_target_current());
	ret = SPI_execute_with_args("UPDATE dfe_airbyte.sync_jobs SET rows_synced = $2, bytes_synced = $3,\n"
								"    progress_at = CASE WHEN progress_seen IS DISTINCT FROM $4 THEN now() ELSE progress_at END,\n"
								"    progress_seen = $4\n"
								"WHERE target = $5 AND job_id = $1",
								5, types, values, nulls, false, 0);
	/* SPI leaves us in its own context; the caller's allocations live in cxt */
	MemoryContextSwitchTo(cxt);
	if (ret != SPI_OK_UPDATE)
		dfe_spi_failed("record the job's progress", ret);
}

/* what the previous successful sync's check found */
typedef struct FlowPoint
{
	bool		found;
	char	   *confirmed;		/* confirmed_flush_lsn as text, or NULL */
	char	   *changes;		/* table_changes as text, or NULL */
	char	   *heartbeat;		/* last_heartbeat, or NULL */
	char	   *findings;		/* findings as text ("{...}") */
	bool		heartbeat_table;	/* now: airbyte_heartbeat.last_heartbeat exists */
} FlowPoint;

/* a value of the target's one-row answer, in the context results live in */
static char *
copy_value(DfeRows *r, int col)
{
	const char *v = r->nrows > 0 ? dfe_rows_value(r, 0, col) : NULL;

	return v ? MemoryContextStrdup(dfe_xact_result_context(), v) : NULL;
}

/*
 * The allowlisted tables of the current target (the lists live in this
 * database), as a text[] literal for the target's query.
 */
static char *
allowlisted_tables(void)
{
	const char *args[1] = {dfe_target_current()};

	dfe_sql("read the allowlisted tables",
			"SELECT coalesce(pg_catalog.array_agg(DISTINCT a.table_name), '{}')::pg_catalog.text\n"
			"  FROM dfe_airbyte.allowlist a\n"
			" WHERE a.table_name OPERATOR(pg_catalog.<>) 'airbyte_heartbeat'\n"
			"   AND a.target OPERATOR(pg_catalog.=) $1",
			1, args, SPI_OK_SELECT);
	return dfe_col_text(0, 1);
}

/*
 * The slot, the table counters and the heartbeat, read on the target
 * through the seam (target.h): SPI for "local", libpq for the others.
 */
static void
read_now(FlowPoint *now)
{
	const char *args[3] = {dfe_setting_slot_name(), dfe_setting_source_schema(), allowlisted_tables()};
	DfeTarget  *t = dfe_target_open(dfe_target_current());
	DfeRows    *r;

	memset(now, 0, sizeof(*now));
	r = dfe_target_query(t, "read the slot and the table counters",
						 "SELECT (SELECT s.confirmed_flush_lsn::pg_catalog.text FROM pg_catalog.pg_replication_slots s\n"
						 "         WHERE s.slot_name OPERATOR(pg_catalog.=) $1::pg_catalog.name\n"
						 "           AND s.database OPERATOR(pg_catalog.=) pg_catalog.current_database()),\n"
						 "       (SELECT pg_catalog.sum(t.n_tup_ins OPERATOR(pg_catalog.+) t.n_tup_upd OPERATOR(pg_catalog.+) t.n_tup_del)::pg_catalog.int8::pg_catalog.text\n"
						 "          FROM pg_catalog.pg_stat_user_tables t\n"
						 "         WHERE t.schemaname OPERATOR(pg_catalog.=) $2::pg_catalog.name\n"
						 "           AND t.relname::pg_catalog.text OPERATOR(pg_catalog.=) ANY ($3::pg_catalog.text[])),\n"
						 "       EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a\n"
						 "                 JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) a.attrelid\n"
						 "                 JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace\n"
						 "                WHERE n.nspname OPERATOR(pg_catalog.=) $2::pg_catalog.name\n"
						 "                  AND c.relname OPERATOR(pg_catalog.=) 'airbyte_heartbeat'\n"
						 "                  AND a.attname OPERATOR(pg_catalog.=) 'last_heartbeat' AND NOT a.attisdropped)",
						 3, args);
	now->confirmed = copy_value(r, 0);
	now->changes = copy_value(r, 1);
	now->heartbeat_table = strcmp(dfe_rows_value(r, 0, 2), "t") == 0;
	if (now->heartbeat_table)
	{
		/* the schema is a setting: quoted, and the table name is fixed */
		r = dfe_target_query(t, "read the heartbeat",
							 psprintf("SELECT pg_catalog.max(last_heartbeat)::pg_catalog.text FROM %s.airbyte_heartbeat",
									  quote_identifier(dfe_setting_source_schema())),
							 0, NULL);
		now->heartbeat = copy_value(r, 0);
	}
	dfe_target_close(t);
}

static void
read_previous(int64 job_id, FlowPoint *prev, bool *already)
{
	const char *args[2] = {dfe_int64_str(job_id), dfe_target_current()};

	memset(prev, 0, sizeof(*prev));
	dfe_sql("read the previous flow check",
			"SELECT job_id = $1::bigint, confirmed_flush_lsn::text, table_changes::text, last_heartbeat,\n"
			"       findings::text\n"
			"FROM dfe_airbyte.flow_checks WHERE target = $2 AND job_id <= $1::bigint ORDER BY job_id DESC LIMIT 1",
			2, args, SPI_OK_SELECT);
	*already = false;
	if (SPI_processed == 0)
		return;
	{
		bool		isnull;

		*already = DatumGetBool(dfe_col_datum(0, 1, &isnull));
	}
	prev->found = true;
	prev->confirmed = dfe_col_text(0, 2);
	prev->changes = dfe_col_text(0, 3);
	prev->heartbeat = dfe_col_text(0, 4);
	prev->findings = dfe_col_text(0, 5);
}

/* was this finding already raised by the previous check? (then no new event) */
static bool
had_finding(const FlowPoint *prev, const char *kind)
{
	return prev->findings && strstr(prev->findings, kind) != NULL;
}

static void
finding(StringInfo findings, const FlowPoint *prev, const char *kind, int64 job_id,
		const char *detail)
{
	if (findings->len > 1)
		appendStringInfoChar(findings, ',');
	appendStringInfoString(findings, kind);
	if (!had_finding(prev, kind))
		dfe_event("warning", kind, psprintf("job " INT64_FORMAT, job_id), detail, NULL);
}

static void
compare(const AirbyteJob *job, const FlowPoint *prev, const FlowPoint *now, StringInfo findings)
{
	int64		delta = -1;

	if (prev->confirmed && now->confirmed && strcmp(prev->confirmed, now->confirmed) == 0)
		finding(findings, prev, "slot_not_advancing", job->job_id,
				psprintf("Airbyte sync job " INT64_FORMAT " succeeded, but replication slot \"%s\" has not confirmed anything since the previous successful sync (confirmed_flush_lsn still %s): Airbyte is not consuming it, so it retains WAL; check the connection's CDC state in the Airbyte UI (a \"Saved offset\" error needs a full re-sync) and that the heartbeat table is written",
						 job->job_id, dfe_setting_slot_name(), now->confirmed));

	if (prev->changes && now->changes)
		delta = pg_strtoint64(now->changes) - pg_strtoint64(prev->changes);
	if (job->rows_synced == 0 && delta > 0)
		finding(findings, prev, "sync_no_rows", job->job_id,
				psprintf("Airbyte sync job " INT64_FORMAT " succeeded with 0 rows, although the allowlisted tables saw " INT64_FORMAT " inserts, updates and deletes since the previous successful sync: CDC may have stalled (a heuristic: the counters are the server's statistics, which count rolled-back changes and reset after a crash)",
						 job->job_id, delta));

	if (now->heartbeat_table && prev->found &&
		(now->heartbeat == NULL ||
		 (prev->heartbeat && strcmp(prev->heartbeat, now->heartbeat) == 0)))
		finding(findings, prev, "heartbeat_not_running", job->job_id,
				now->heartbeat == NULL
				? psprintf("Airbyte sync job " INT64_FORMAT " succeeded, but %s.airbyte_heartbeat has no row, so the source's heartbeat query (UPDATE airbyte_heartbeat SET last_heartbeat = now() WHERE id = 1) changes nothing and a quiet database retains WAL: INSERT INTO %s.airbyte_heartbeat (id, last_heartbeat) VALUES (1, now());",
						   job->job_id, dfe_setting_source_schema(), dfe_setting_source_schema())
				: psprintf("Airbyte sync job " INT64_FORMAT " succeeded, but airbyte_heartbeat.last_heartbeat did not move since the previous successful sync (still %s): the source's heartbeat query does not run (check heartbeat_action_query in the Airbyte source and the connector version), so a quiet database retains WAL",
						   job->job_id, now->heartbeat));
}

void
dfe_flow_checks_after_success(const AirbyteJob *job)
{
	FlowPoint	prev;
	FlowPoint	now;
	bool		already;
	StringInfoData findings;

	dfe_xact_begin("dfe_airbyte sync health: data flow checks");
	read_previous(job->job_id, &prev, &already);
	if (already)
	{
		dfe_xact_end();
		return;
	}
	read_now(&now);
	initStringInfo(&findings);
	appendStringInfoChar(&findings, '{');
	if (prev.found)
		compare(job, &prev, &now, &findings);
	appendStringInfoChar(&findings, '}');
	{
		const char *args[7] = {
			dfe_int64_str(job->job_id), now.confirmed, now.changes,
			job->rows_synced >= 0 ? dfe_int64_str(job->rows_synced) : NULL,
			now.heartbeat, findings.data, dfe_target_current()
		};

		dfe_sql("record the flow check",
				"INSERT INTO dfe_airbyte.flow_checks (target, job_id, confirmed_flush_lsn, table_changes, rows_synced,\n"
				"                                     last_heartbeat, findings)\n"
				"VALUES ($7, $1::bigint, $2::pg_lsn, $3::bigint, $4::bigint, $5, $6::text[])\n"
				"ON CONFLICT (target, job_id) DO NOTHING",
				7, args, SPI_OK_INSERT);
	}
	{
		/* bounded like the other histories; the newest check always stays */
		const char *args[3] = {dfe_int64_str(job->job_id), psprintf("%d", dfe_history_retention_min),
		dfe_target_current()};

		dfe_sql("prune the flow checks",
				"DELETE FROM dfe_airbyte.flow_checks\n"
				"WHERE target = $3 AND checked_at < now() - make_interval(mins => $2::int) AND job_id < $1::bigint",
				3, args, SPI_OK_DELETE);
	}
	dfe_xact_end();
}
