/*
 * reconcile_run.c — reconciliation's entry points and results: the SQL
 * function dfe_airbyte_reconcile() and the network worker's task (each for
 * one target, in its scope: src/target_scope.h), the candidate/mismatch
 * decision, and the rows of dfe_airbyte.reconciliation and reconcile_runs.
 * The comparison itself is src/reconcile.c.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "compat.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "events.h"
#include "reconcile.h"
#include "settings.h"
#include "spi_xact.h"
#include "target.h"
#include "target_scope.h"
#include "version.h"
#include "worker.h"

/* a list of strings as one text, split again in SQL with string_to_array */
#define LIST_SEP "\x1f"

static char *
join_list(List *l)
{
	StringInfoData b;
	ListCell   *lc;

	initStringInfo(&b);
	foreach(lc, l)
		appendStringInfo(&b, "%s%s", b.len ? LIST_SEP : "", (char *) lfirst(lc));
	return b.data;
}

/*
 * A candidate becomes a mismatch when the previous run found the same keys
 * (or key ranges) differ and a successful sync has finished in between:
 * rows in flight at the first run have arrived by then.
 */
static void
decide_status(RcRun *run)
{
	const char *args[5] = {run->table, join_list(run->keys), join_list(run->ranges),
	dfe_int64_str(run->sync_job_id), run->target};
	char	   *prev;
	bool		same;
	bool		newer_sync;

	if (strcmp(run->status, "mismatch_candidate") != 0)
		return;
	if (dfe_rc_sql(run, "read the previous reconciliation",
			   "SELECT status, (keys && string_to_array($2, E'\\x1f') OR key_ranges && string_to_array($3, E'\\x1f')\n"
			   "                OR (cardinality(keys) = 0 AND cardinality(key_ranges) = 0 AND $2 = '' AND $3 = ''))::text,\n"
			   "       (coalesce(sync_job_id, 0) < $4::bigint)::text\n"
			   "  FROM dfe_airbyte.reconciliation WHERE target = $5 AND table_name = $1", 5, args) == 0)
		return;
	prev = dfe_rc_val(run, 0, 1);
	same = strcmp(dfe_rc_val(run, 0, 2), "true") == 0;
	newer_sync = strcmp(dfe_rc_val(run, 0, 3), "true") == 0;
	if (!same || (strcmp(prev, "mismatch") != 0 && strcmp(prev, "mismatch_candidate") != 0))
		return;
	if (strcmp(prev, "mismatch") == 0 || newer_sync)
		run->status = "mismatch";
	if (strcmp(prev, "mismatch") != 0 && strcmp(run->status, "mismatch") == 0)
	{
		char	   *what = run->keys != NIL ? join_list(run->keys) : join_list(run->ranges);

		for (char *p = what; *p; p++)
			if (*p == LIST_SEP[0])
				*p = ',';
		dfe_event("warning", "reconcile_mismatch", run->table,
				  psprintf("BigQuery's final table %s differs from the source after a further successful sync (%s mode): %s",
						   run->table, run->checksum ? "checksum" : "count", what[0] ? what : run->detail.data),
				  NULL);
	}
}

static const char *const record_sql =
"WITH r AS (\n"
"  INSERT INTO dfe_airbyte.reconcile_runs (target, table_name, mode, status, sync_job_id, cutoff_at, source_rows,\n"
"         bigquery_rows, matched, mismatches, bytes_billed, bigquery_queries, keys, key_ranges, detail, started_at)\n"
"  VALUES ($15, $1, $2, $3, nullif($4, '0')::bigint, $5::timestamptz, $6::bigint, $7::bigint,\n"
"          CASE $3 WHEN 'match' THEN true WHEN 'mismatch' THEN false WHEN 'mismatch_candidate' THEN false END,\n"
"          $8::bigint, $9::bigint, $10::int, string_to_array($11, E'\\x1f'), string_to_array($12, E'\\x1f'), $13, $14::timestamptz)\n"
"  RETURNING *)\n"
"INSERT INTO dfe_airbyte.reconciliation AS c (target, table_name, run_id, mode, status, sync_job_id, cutoff_at,\n"
"       source_rows, bigquery_rows, matched, mismatches, bytes_billed, bigquery_queries, keys, key_ranges, detail,\n"
"       started_at, finished_at)\n"
"SELECT target, table_name, id, mode, status, sync_job_id, cutoff_at, source_rows, bigquery_rows, matched,\n"
"       mismatches, bytes_billed, bigquery_queries, keys, key_ranges, detail, started_at, finished_at FROM r\n"
"ON CONFLICT (target, table_name) DO UPDATE SET run_id = EXCLUDED.run_id, mode = EXCLUDED.mode,\n"
"   status = EXCLUDED.status, sync_job_id = EXCLUDED.sync_job_id, cutoff_at = EXCLUDED.cutoff_at,\n"
"   source_rows = EXCLUDED.source_rows, bigquery_rows = EXCLUDED.bigquery_rows, matched = EXCLUDED.matched,\n"
"   mismatches = EXCLUDED.mismatches, bytes_billed = EXCLUDED.bytes_billed,\n"
"   bigquery_queries = EXCLUDED.bigquery_queries, keys = EXCLUDED.keys,\n"
"   key_ranges = EXCLUDED.key_ranges, detail = EXCLUDED.detail, started_at = EXCLUDED.started_at,\n"
"   finished_at = EXCLUDED.finished_at\n"
"RETURNING 1";

static void
record_run(RcRun *run, const char *started)
{
	const char *args[15] = {
		run->table, run->checksum ? "checksum" : "count", run->status, dfe_int64_str(run->sync_job_id),
		run->cutoff, dfe_int64_str(run->source_rows), run->bq_rows_known ? dfe_int64_str(run->bq_rows) : NULL,
		dfe_int64_str(run->mismatches), dfe_int64_str(run->bytes_billed), psprintf("%d", run->queries),
		join_list(run->keys), join_list(run->ranges), run->detail.data, started, run->target
	};
	Oid			types[15];
	Datum		values[15];
	char		nulls[15];
	int			ret;

	for (int i = 0; i < 15; i++)
	{
		types[i] = TEXTOID;
		values[i] = args[i] ? CStringGetTextDatum(args[i]) : (Datum) 0;
		nulls[i] = args[i] ? ' ' : 'n';
	}
	ret = SPI_execute_with_args(record_sql, 15, types, values, nulls, false, 0);
	MemoryContextSwitchTo(run->cxt);
	if (ret != SPI_OK_SELECT && ret != SPI_OK_INSERT_RETURNING)
		dfe_spi_failed("record the reconciliation", ret);
	ret = SPI_execute(psprintf("DELETE FROM dfe_airbyte.reconcile_runs WHERE id <= (SELECT max(id) FROM dfe_airbyte.reconcile_runs) - %d"
							   " OR started_at < now() - make_interval(mins => %d)",
							   dfe_history_max_rows, dfe_history_retention_min), false, 0);
	MemoryContextSwitchTo(run->cxt);
	if (ret != SPI_OK_DELETE)
		dfe_spi_failed("prune dfe_airbyte.reconcile_runs", ret);
}

/* the tables to reconcile: one table of the target's allowlist, or all of them */
static List *
tables_to_check(RcRun *run, text *name, const char *target)
{
	List	   *out = NIL;
	const char *args[2] = {name ? text_to_cstring(name) : NULL, target};
	int			n = dfe_rc_sql(run, "read the allowlisted tables",
						   "SELECT DISTINCT table_name FROM dfe_airbyte.allowlist"
						   " WHERE target = $2 AND ($1 IS NULL OR table_name = $1) AND table_name <> 'airbyte_heartbeat'"
						   " ORDER BY 1", 2, args);

	if (n == 0 && name)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table \"%s\" is not allowlisted for target \"%s\"", args[0], target),
				 errhint("Only replicated tables can be reconciled: see the target's rows of dfe_airbyte.allowlist.")));
	for (int i = 0; i < n; i++)
		out = lappend(out, dfe_rc_val(run, i, 1));
	return out;
}

static void
check_mode(const char *mode)
{
	if (strcmp(mode, "count") != 0 && strcmp(mode, "checksum") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown reconciliation mode \"%s\"", mode),
				 errhint("Use mode => 'count' (row count and key set) or mode => 'checksum' (every replicated value).")));
}

/* in the target's scope: its own BigQuery settings, or the global ones */
static void
check_bigquery(const char *target)
{
	if (dfe_setting_bigquery_project() == NULL || dfe_setting_bigquery_dataset() == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("BigQuery is not configured for target \"%s\"", target),
				 errhint("Set dfe_airbyte.bigquery_project and dfe_airbyte.bigquery_dataset (env BIGQUERY_PROJECT_ID, "
						 "BIGQUERY_AIRBYTE_DATASET), or the target's bigquery_project and bigquery_dataset settings "
						 "(dfe_airbyte.targets.settings).")));
}

/* the result of a table whose reconciliation failed */
static RcRun *
error_run(const char *target, const char *name, bool checksum, bool dry_run, MemoryContext cxt, ErrorData *err)
{
	RcRun	   *run = palloc0(sizeof(RcRun));

	run->target = target;
	run->cxt = cxt;
	run->table = pstrdup(name);
	run->checksum = checksum;
	run->dry_run = dry_run;
	run->status = "error";
	initStringInfo(&run->detail);
	dfe_rc_note(run, "%s", err->message);
	if (err->detail)
		dfe_rc_note(run, "%s", err->detail);
	return run;
}

typedef struct TableCall
{
	DfeTarget  *src;
	const char *target;			/* its name, for an error's result */
	const char *name;
	bool		checksum;
	bool		dry_run;
	bool		own_xact;
	MemoryContext cxt;
	RcRun	   *run;
} TableCall;

static void
call_reconcile_table(void *arg)
{
	TableCall  *c = arg;

	c->run = dfe_rc_reconcile_table(c->src, c->name, c->checksum, c->dry_run, c->cxt, c->own_xact);
}

/*
 * dfe_rc_reconcile_table(), an ERROR becoming the table's result; a cancel or a
 * shutdown ends the whole call.  In a SQL function (!own_xact) the table
 * runs in a subtransaction, in the worker any transaction is rolled back.
 */
static RcRun *
reconcile_caught(TableCall *c)
{
	ErrorData  *err;

	if (dfe_catch(call_reconcile_table, c,
				  DFE_CATCH_NOT_CANCEL | (c->own_xact ? 0 : DFE_CATCH_SUBXACT), c->cxt, &err))
		return c->run;
	c->run = error_run(c->target, c->name, c->checksum, c->dry_run, c->cxt, err);
	if (c->own_xact)
		c->run->own_xact = true;
	return c->run;
}

/* one table in a subtransaction: an error becomes that table's result */
static RcRun *
reconcile_one(DfeTarget *src, const char *name, bool checksum, bool dry_run, MemoryContext cxt)
{
	TableCall	c = {src, NULL, name, checksum, dry_run, false, cxt, NULL};

	c.target = dfe_target_name(src);
	return reconcile_caught(&c);
}

static void
emit(ReturnSetInfo *rsinfo, RcRun *run)
{
	Datum		v[8];
	bool		n[8] = {0};

	v[0] = CStringGetTextDatum(run->table);
	v[1] = CStringGetTextDatum(run->checksum ? "checksum" : "count");
	v[2] = Int64GetDatum(run->source_rows);
	n[2] = run->dry_run || strcmp(run->status, "error") == 0;
	v[3] = Int64GetDatum(run->bq_rows);
	n[3] = !run->bq_rows_known;
	v[4] = BoolGetDatum(strcmp(run->status, "match") == 0);
	n[4] = strcmp(run->status, "match") != 0 && strcmp(run->status, "mismatch") != 0 &&
		strcmp(run->status, "mismatch_candidate") != 0;
	v[5] = Int64GetDatum(run->mismatches);
	v[6] = Int64GetDatum(run->dry_run ? run->bytes_estimated : run->bytes_billed);
	if (run->dry_run && strcmp(run->status, "error") != 0)
		dfe_rc_note(run, "dry run: BigQuery would bill at most " INT64_FORMAT " bytes for the first query", run->bytes_estimated);
	v[7] = CStringGetTextDatum(psprintf("%s%s%s", run->status, run->detail.len ? ": " : "", run->detail.data));
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, v, n);
}

/* every table of the list, one result row each */
static void
reconcile_tables(ReturnSetInfo *rsinfo, DfeTarget *src, List *tables, bool checksum, bool dry_run,
				 MemoryContext cxt)
{
	ListCell   *lc;

	foreach(lc, tables)
	{
		char	   *started = pstrdup(timestamptz_to_str(GetCurrentTimestamp()));
		RcRun	   *run = reconcile_one(src, lfirst(lc), checksum, dry_run, cxt);

		if (!dry_run)
		{
			if (strcmp(run->status, "error") != 0)
				decide_status(run);
			record_run(run, started);
		}
		emit(rsinfo, run);
	}
}

PG_FUNCTION_INFO_V1(dfe_airbyte_reconcile);

/*
 * In the target's scope: its settings (BigQuery dataset, project, policy
 * tag, source schema) apply, its source tables are read through the seam,
 * its lists and syncs are the rows of this database that name it.
 */
Datum
dfe_airbyte_reconcile(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	text	   *name = PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0);
	char	   *mode = PG_ARGISNULL(1) ? "count" : text_to_cstring(PG_GETARG_TEXT_PP(1));
	bool		dry_run = PG_ARGISNULL(2) ? false : PG_GETARG_BOOL(2);
	char	   *target = PG_ARGISNULL(3) ? DFE_LOCAL_TARGET : text_to_cstring(PG_GETARG_TEXT_PP(3));
	DfeTargetScope *scope;
	MemoryContext cxt;
	MemoryContext old;
	RcRun		scratch;

	DFE_REQUIRE_MATCHING_SQL();
	check_mode(mode);
	scope = dfe_target_scope_enter(target);
	check_bigquery(target);
	InitMaterializedSRF(fcinfo, 0);
	old = CurrentMemoryContext;
	cxt = AllocSetContextCreate(old, "dfe_airbyte reconcile", ALLOCSET_DEFAULT_SIZES);
	if (SPI_connect() != SPI_OK_CONNECT)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("dfe_airbyte_reconcile could not connect to SPI"),
				 errhint("This is a bug in dfe_airbyte.")));
	MemoryContextSwitchTo(cxt);
	memset(&scratch, 0, sizeof(scratch));
	scratch.cxt = cxt;
	scratch.target = target;
	reconcile_tables(rsinfo, dfe_target_scope_target(scope), tables_to_check(&scratch, name, target),
					 strcmp(mode, "checksum") == 0, dry_run, cxt);
	SPI_finish();
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	dfe_target_scope_leave(scope);
	return (Datum) 0;
}

/*
 * The network worker's task: per enabled target (dfe_for_each_target), one
 * table per call, in count mode (or checksum, below), when a successful sync of that target has
 * finished since the table's last run and dfe_airbyte.reconcile_interval
 * has passed (a candidate mismatch is checked again after the next sync
 * whatever the interval: that is what confirms it); never while a full
 * re-sync of that target the extension asked for is pending or running (a
 * dfe_airbyte.slot_recreations row without resync_finished_at: pending, or
 * its job not finished): the final table is being rebuilt.  The targets
 * take turns, so one table is compared at a time overall.
 *
 * With dfe_airbyte.reconcile_checksum_every = N, a table's run is in
 * checksum mode when N - 1 runs of it have followed its last checksum run
 * (reconcile_runs; a pruned history makes the next checksum come early,
 * never late): count mode sees missing and extra rows, only checksum mode
 * sees a changed value, at a higher BigQuery cost (docs/benchmarks.md).
 *
 * sync_jobs and slot_recreations have their target column in every SQL
 * version that has reconcile_runs (the worker waits for the library's
 * version: src/scheduler.c).
 */
#define OF_TARGET(alias) alias ".target OPERATOR(pg_catalog.=) $2"

static const char *const next_table_sql =
"WITH s AS (SELECT max(job_id) AS job FROM dfe_airbyte.sync_jobs j\n"
"            WHERE status = 'succeeded' AND started_at IS NOT NULL AND " OF_TARGET("j") ")\n"
"SELECT a.table_name,\n"
"       ($3::int > 0 AND (SELECT count(*) FROM dfe_airbyte.reconcile_runs u\n"
"                          WHERE u.target = $2 AND u.table_name = a.table_name\n"
"                            AND u.id > coalesce((SELECT max(c.id) FROM dfe_airbyte.reconcile_runs c\n"
"                                                  WHERE c.target = $2 AND c.table_name = a.table_name\n"
"                                                    AND c.mode = 'checksum'), 0)) >= $3::int - 1)::text\n"
"  FROM (SELECT DISTINCT table_name FROM dfe_airbyte.allowlist\n"
"         WHERE target = $2 AND table_name <> 'airbyte_heartbeat') a\n"
"  CROSS JOIN s\n"
"  LEFT JOIN dfe_airbyte.reconciliation r ON r.target = $2 AND r.table_name = a.table_name\n"
" WHERE s.job IS NOT NULL\n"
"   AND NOT EXISTS (SELECT 1 FROM dfe_airbyte.slot_recreations x\n"
"                    WHERE resync_finished_at IS NULL AND " OF_TARGET("x") ")\n"
"   AND (r.table_name IS NULL\n"
"        OR (coalesce(r.sync_job_id, 0) < s.job\n"
"            AND (r.status = 'mismatch_candidate' OR r.finished_at < now() - make_interval(secs => $1::int))))\n"
" ORDER BY r.finished_at NULLS FIRST, a.table_name LIMIT 1";

static void
worker_record(RcRun *run, const char *started)
{
	dfe_xact_begin("dfe_airbyte reconcile");
	dfe_set_result_context(run->cxt);
	MemoryContextSwitchTo(run->cxt);
	run->in_xact = true;
	if (strcmp(run->status, "error") != 0)
		decide_status(run);
	record_run(run, started);
	run->in_xact = false;
	dfe_xact_end();
	MemoryContextSwitchTo(run->cxt);
}

/* the target to read, opened in cxt (its lookup is a short transaction) */
static DfeTarget *
worker_open(const char *target, MemoryContext cxt)
{
	DfeTarget  *src;

	dfe_xact_begin("dfe_airbyte reconcile");
	MemoryContextSwitchTo(cxt);
	src = dfe_target_open(target);
	dfe_xact_end();
	MemoryContextSwitchTo(cxt);
	return src;
}

/* one table of the target, its error recorded as that table's result */
static void
worker_reconcile(const char *target, const char *table, bool checksum, MemoryContext cxt)
{
	char	   *started = pstrdup(timestamptz_to_str(GetCurrentTimestamp()));
	DfeTarget  *src = worker_open(target, cxt);
	TableCall	c = {src, target, table, checksum, false, true, cxt, NULL};
	RcRun	   *run = reconcile_caught(&c);
	worker_record(run, started);
	dfe_target_close(src);
}

/* dfe_for_each_target's function: in the target's scope, its settings apply */
static void
reconcile_target_task(const char *target, void *arg)
{
	bool	   *did = (bool *) arg;
	MemoryContext old = CurrentMemoryContext;
	MemoryContext cxt;
	RcRun		pick;
	const char *args[3];

	if (dfe_reconcile_interval_s == 0 || dfe_reconcile_daily_mb == 0 ||
		dfe_setting_bigquery_project() == NULL || dfe_setting_bigquery_dataset() == NULL)
		return;
	cxt = AllocSetContextCreate(old, "dfe_airbyte reconcile", ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(cxt);
	memset(&pick, 0, sizeof(pick));
	pick.cxt = cxt;
	pick.own_xact = true;
	args[0] = psprintf("%d", dfe_reconcile_interval_s);
	args[1] = target;
	args[2] = psprintf("%d", dfe_reconcile_checksum_every);
	if (dfe_rc_sql(&pick, "pick the next table to reconcile", next_table_sql, 3, args) > 0)
	{
		worker_reconcile(target, dfe_rc_val(&pick, 0, 1), strcmp(dfe_rc_val(&pick, 0, 2), "true") == 0, cxt);
		*did = true;
	}
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
}

long
dfe_reconcile_worker_task(void)
{
	bool		did = false;

	/* global only (no target overrides them): nothing to do for any target */
	if (dfe_reconcile_interval_s == 0 || dfe_reconcile_daily_mb == 0)
		return dfe_check_interval_s * 1000L;
	dfe_for_each_target(reconcile_target_task, &did);
	/* a table was compared: the next at once; none left: wait */
	return did ? 0 : dfe_check_interval_s * 1000L;
}
