/*
 * sync_health.c — the worker's watch over Airbyte's sync jobs.
 *
 * Every dfe_airbyte.sync_poll_interval, when Airbyte is configured, the
 * worker reads the connection's newest sync job (and up to
 * MAX_OPEN_REFRESH older jobs it last saw unfinished, so that a job that
 * ended between two polls is not missed) and keeps them in
 * dfe_airbyte.sync_jobs.  dfe_airbyte.sync_health turns that into one row.
 *
 * Transitions become events, once each: a job seen failing, syncs becoming
 * stale (and fresh again), the check itself starting to fail.  A job seen
 * succeeding for the first time triggers the policy tag drift repair
 * (Airbyte may have recreated a final table, dropping its tags), outside
 * any transaction.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "airbyte.h"
#include "bigquery.h"
#include "connection.h"
#include "events.h"
#include "flow_checks.h"
#include "http.h"
#include "settings.h"
#include "shared.h"
#include "worker.h"

/* older unfinished jobs read again per poll, at most */
#define MAX_OPEN_REFRESH 5

static MemoryContext sh_cxt = NULL;

static void
sh_begin(void)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	MemoryContextSwitchTo(sh_cxt);
	PushActiveSnapshot(GetTransactionSnapshot());
	SPI_connect();
	/* what we allocate between here and the commit must outlive SPI_finish */
	MemoryContextSwitchTo(sh_cxt);
}

static void
sh_commit(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(sh_cxt);
}

static void
sh_exec(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls,
		int expected)
{
	int			ret = SPI_execute_with_args(sql, nargs, types, values, nulls, false, 0);

	/* SPI leaves us in its procedure context; what we keep lives in ours */
	MemoryContextSwitchTo(sh_cxt);
	if (ret != expected)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("dfe_airbyte sync health bookkeeping failed: %s", SPI_result_code_string(ret)),
				 errdetail("Statement: %s", sql),
				 errhint("%s", DFE_UPDATE_HINT)));
}

typedef struct PollArgs
{
	List	   *open_ids;		/* int64* of older unfinished jobs */
	List	   *jobs;			/* AirbyteJob* read now */
} PollArgs;

static void
read_jobs(PollArgs *a)
{
	AirbyteJob *last = palloc0(sizeof(AirbyteJob));
	ListCell   *lc;

	if (airbyte_last_job("sync", last))
		a->jobs = lappend(a->jobs, last);
	foreach(lc, a->open_ids)
	{
		int64		id = *(int64 *) lfirst(lc);
		AirbyteJob *job;

		if (a->jobs != NIL && ((AirbyteJob *) linitial(a->jobs))->job_id == id)
			continue;
		job = palloc0(sizeof(AirbyteJob));
		airbyte_get_job(id, job);
		a->jobs = lappend(a->jobs, job);
	}
}

static void
read_jobs_fn(void *arg)
{
	read_jobs((PollArgs *) arg);
}

static void
flow_checks_fn(void *arg)
{
	flow_checks_after_success((AirbyteJob *) arg);
}

static void
repair_fn(void *arg)
{
	policy_tags_repair_after_sync(*(int64 *) arg);
}

/* the check failed: record why (an event only when it starts failing) */
static void
record_check_error(const char *message)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	bool		was_ok;

	sh_begin();
	values[0] = CStringGetTextDatum(message);
	sh_exec("SELECT check_error IS NULL FROM dfe_airbyte.sync_watch", 0, NULL, NULL, NULL, SPI_OK_SELECT);
	was_ok = SPI_processed > 0 &&
		strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), "t") == 0;
	sh_exec("UPDATE dfe_airbyte.sync_watch SET checked_at = now(), check_error = $1, "
			"watching_since = coalesce(watching_since, now())",
			1, types, values, NULL, SPI_OK_UPDATE);
	if (was_ok)
		dfe_event("warning", "sync_check_failed", dfe_setting_connection_id(),
				  psprintf("could not read the Airbyte sync jobs: %s", message), NULL);
	sh_commit();
}

/* upsert one job; returns its previous status (NULL when new) */
static char *
upsert_job(AirbyteJob *job)
{
	Oid			types[5] = {INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	char	   *old = NULL;

	values[0] = Int64GetDatum(job->job_id);
	sh_exec("SELECT status FROM dfe_airbyte.sync_jobs WHERE job_id = $1",
			1, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed > 0)
		old = MemoryContextStrdup(sh_cxt, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));

	values[1] = CStringGetTextDatum(job->status);
	values[2] = job->job_type ? CStringGetTextDatum(job->job_type) : (Datum) 0;
	nulls[2] = job->job_type ? ' ' : 'n';
	values[3] = job->start_time ? CStringGetTextDatum(job->start_time) : (Datum) 0;
	nulls[3] = job->start_time ? ' ' : 'n';
	values[4] = job->last_updated_at ? CStringGetTextDatum(job->last_updated_at) : (Datum) 0;
	nulls[4] = job->last_updated_at ? ' ' : 'n';
	sh_exec("INSERT INTO dfe_airbyte.sync_jobs AS j (job_id, status, job_type, started_at, last_updated_at) "
			"VALUES ($1, $2, $3, $4::timestamptz, $5::timestamptz) "
			"ON CONFLICT (job_id) DO UPDATE SET status = excluded.status, job_type = excluded.job_type, "
			"started_at = excluded.started_at, last_updated_at = excluded.last_updated_at, last_seen = now()",
			5, types, values, nulls, SPI_OK_INSERT);
	return old;
}

long
sync_health_worker_task(void)
{
	long		interval_ms = (long) dfe_sync_poll_interval_s * 1000L;
	PollArgs	a = {NIL, NIL};
	List	   *repair = NIL;
	List	   *succeeded = NIL;	/* AirbyteJob*: data flow checks */
	ListCell   *lc;
	uint64		i;
	char	   *error = NULL;
	bool		stale = false;
	bool		stale_known = false;
	bool		was_stale = false;

	sh_cxt = CurrentMemoryContext;
	if (!airbyte_configured())
		return interval_ms;

	/* older jobs we last saw unfinished */
	sh_begin();
	sh_exec("SELECT job_id FROM dfe_airbyte.sync_jobs "
			"WHERE status NOT IN ('succeeded', 'failed', 'cancelled') "
			"ORDER BY job_id DESC LIMIT " CppAsString2(MAX_OPEN_REFRESH),
			0, NULL, NULL, NULL, SPI_OK_SELECT);
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		int64	   *id = MemoryContextAlloc(sh_cxt, sizeof(int64));

		*id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		a.open_ids = lappend(a.open_ids, id);
	}
	sh_commit();

	/* Airbyte, outside any transaction */
	pgstat_report_activity(STATE_RUNNING, "dfe_airbyte sync health: reading Airbyte jobs");
	error = http_try(read_jobs_fn, &a, sh_cxt);
	if (error == NULL)
		connection_watch_read();
	pgstat_report_activity(STATE_IDLE, NULL);

	if (error)
		record_check_error(error);
	else
	{
		sh_begin();
		foreach(lc, a.jobs)
		{
			AirbyteJob *job = lfirst(lc);
			char	   *old = upsert_job(job);
			bool		changed = old == NULL || strcmp(old, job->status) != 0;

			flow_note_job_progress(job);
			if (changed && strcmp(job->status, "succeeded") == 0)
			{
				int64	   *id = MemoryContextAlloc(sh_cxt, sizeof(int64));

				succeeded = lappend(succeeded, job);

				*id = job->job_id;
				repair = lappend(repair, id);
			}
			if (changed && (strcmp(job->status, "failed") == 0 ||
							strcmp(job->status, "cancelled") == 0))
				dfe_event("warning", "sync_failed", psprintf("job " INT64_FORMAT, job->job_id),
						  psprintf("Airbyte sync job " INT64_FORMAT " %s; see its logs in the Airbyte UI (connection %s)",
								   job->job_id,
								   strcmp(job->status, "failed") == 0 ? "failed" : "was cancelled",
								   dfe_setting_connection_id()),
						  NULL);
		}
		sh_exec("UPDATE dfe_airbyte.sync_watch SET checked_at = now(), check_error = NULL, "
				"watching_since = coalesce(watching_since, now())",
				0, NULL, NULL, NULL, SPI_OK_UPDATE);
		/* prune: retention and row cap, keeping the newest success */
		{
			Oid			types[2] = {INT4OID, INT4OID};
			Datum		values[2];

			values[0] = Int32GetDatum(dfe_history_retention_min);
			values[1] = Int32GetDatum(dfe_history_max_rows);
			sh_exec("DELETE FROM dfe_airbyte.sync_jobs "
					"WHERE last_seen < now() - make_interval(mins => $1) "
					"AND job_id IS DISTINCT FROM (SELECT max(job_id) FROM dfe_airbyte.sync_jobs "
					"                            WHERE status = 'succeeded')",
					1, types, values, NULL, SPI_OK_DELETE);
			sh_exec("DELETE FROM dfe_airbyte.sync_jobs "
					"WHERE job_id <= (SELECT job_id FROM dfe_airbyte.sync_jobs "
					"                 ORDER BY job_id DESC OFFSET $1 LIMIT 1) "
					"AND job_id IS DISTINCT FROM (SELECT max(job_id) FROM dfe_airbyte.sync_jobs "
					"                            WHERE status = 'succeeded')",
					1, types + 1, values + 1, NULL, SPI_OK_DELETE);
		}
		sh_commit();
	}

	/* staleness, as the view computes it; an event per transition */
	sh_begin();
	sh_exec("SELECT h.stale, w.stale, h.last_success_at, h.watching_since, h.stale_after "
			"FROM dfe_airbyte.sync_health h, dfe_airbyte.sync_watch w",
			0, NULL, NULL, NULL, SPI_OK_SELECT);
	if (SPI_processed > 0)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		stale_known = !isnull;
		stale = !isnull && DatumGetBool(d);
		was_stale = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
		if (stale_known && stale != was_stale)
		{
			char	   *success = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
			char	   *since = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4);
			char	   *after = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 5);
			Oid			types[1] = {BOOLOID};
			Datum		values[1];

			if (stale)
				dfe_event("warning", "sync_stale", dfe_setting_connection_id(),
						  success
						  ? psprintf("no successful Airbyte sync since %s (dfe_airbyte.sync_stale_after = %s)", success, after)
						  : psprintf("no successful Airbyte sync seen since the worker started watching at %s (dfe_airbyte.sync_stale_after = %s)", since, after),
						  NULL);
			else
				dfe_event("info", "sync_fresh", dfe_setting_connection_id(),
						  psprintf("Airbyte syncs succeed again (last success %s)", success ? success : "unknown"),
						  NULL);
			values[0] = BoolGetDatum(stale);
			sh_exec("UPDATE dfe_airbyte.sync_watch SET stale = $1", 1, types, values, NULL, SPI_OK_UPDATE);
		}
	}
	sh_commit();

	/* data flow checks after each newly seen success (local only) */
	foreach(lc, succeeded)
	{
		char	   *msg = http_try(flow_checks_fn, lfirst(lc), sh_cxt);

		if (msg)
			ereport(LOG,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("dfe_airbyte could not check the data flow after sync job " INT64_FORMAT ": %s",
							((AirbyteJob *) lfirst(lc))->job_id, msg),
					 errhint("It is checked again after the next successful sync.")));
	}

	/* the connection itself: status, and drift after a success (connection.c) */
	if (error == NULL)
	{
		int64		newest_success = 0;

		foreach(lc, repair)
			newest_success = Max(newest_success, *(int64 *) lfirst(lc));
		connection_watch_poll(a.jobs, newest_success);
	}

	/* drift repair after each newly seen success, outside any transaction */
	foreach(lc, repair)
	{
		int64		job_id = *(int64 *) lfirst(lc);
		char	   *msg;

		if (bigquery_configured())
			ereport(LOG,
					(errmsg("dfe_airbyte: sync job " INT64_FORMAT " succeeded; checking the policy tags", job_id)));
		else
			ereport(DEBUG1,
					(errmsg_internal("dfe_airbyte: sync job " INT64_FORMAT " succeeded; BigQuery is not configured, so no policy tag check", job_id)));
		msg = http_try(repair_fn, &job_id, sh_cxt);

		if (msg)
		{
			sh_begin();
			dfe_event("warning", "policy_tags_repair_failed", psprintf("job " INT64_FORMAT, job_id),
					  psprintf("the policy tag check after sync job " INT64_FORMAT " failed: %s; it runs again after the next sync, or run SELECT * FROM dfe_airbyte_apply_policy_tags()",
							   job_id, msg),
					  NULL);
			sh_commit();
		}
	}
	return interval_ms;
}
