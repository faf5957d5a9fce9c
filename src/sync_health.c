/*
 * sync_health.c — the worker's watch over Airbyte's sync jobs, per target.
 *
 * Every dfe_airbyte.sync_poll_interval the task runs once per enabled target
 * (dfe_for_each_target(), target_scope.h), with that target's settings:
 * when Airbyte is configured for it, it reads the target's connection's
 * newest sync job (and up to MAX_OPEN_REFRESH older jobs it last saw
 * unfinished, so that a job that ended between two polls is not missed)
 * and keeps them in dfe_airbyte.sync_jobs under the target's name.
 * dfe_airbyte.sync_health turns that into one row per target.
 *
 * Transitions become events, once each: a job seen failing, syncs becoming
 * stale (and fresh again), the check itself starting to fail.  A job seen
 * succeeding for the first time triggers the data flow checks and the
 * policy tag drift repair (Airbyte may have recreated a final table,
 * dropping its tags), outside any transaction.  One target's failure is a
 * WARNING naming it and never stops the others.
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "airbyte.h"
#include "bigquery.h"
#include "connection.h"
#include "events.h"
#include "flow_checks.h"
#include "http.h"
#include "settings.h"
#include "shared.h"
#include "spi_xact.h"
#include "target_scope.h"
#include "worker.h"

/* older unfinished jobs read again per poll, at most */
#define MAX_OPEN_REFRESH 5

typedef struct PollArgs
{
	List	   *open_ids;		/* int64* of older unfinished jobs */
	List	   *jobs;			/* AirbyteJob* read now */
	List	   *succeeded;		/* AirbyteJob* seen succeeding for the first time */
	MemoryContext cxt;
} PollArgs;

static void
read_jobs(PollArgs *a)
{
	AirbyteJob *last = palloc0(sizeof(AirbyteJob));
	ListCell   *lc;

	if (dfe_airbyte_last_job("sync", last))
		a->jobs = lappend(a->jobs, last);
	foreach(lc, a->open_ids)
	{
		int64		id = *(int64 *) lfirst(lc);
		AirbyteJob *job;

		if (a->jobs != NIL && ((AirbyteJob *) linitial(a->jobs))->job_id == id)
			continue;
		job = palloc0(sizeof(AirbyteJob));
		dfe_airbyte_get_job(id, job);
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
	dfe_flow_checks_after_success((AirbyteJob *) arg);
}

static void
repair_fn(void *arg)
{
	dfe_policy_tags_repair_after_sync(*(int64 *) arg);
}

/*
 * " of target \"name\"" for the log lines of a remote target; nothing for
 * the local one, whose messages stay as they were (events name their
 * target in their own column, and in the log line, see events.c).
 */
static const char *
of_target(void)
{
	if (strcmp(dfe_target_current(), DFE_LOCAL_TARGET) == 0)
		return "";
	return psprintf(" of target \"%s\"", dfe_target_current());
}

/* how to run the policy tag check of this target by hand */
static const char *
apply_call(void)
{
	if (strcmp(dfe_target_current(), DFE_LOCAL_TARGET) == 0)
		return "dfe_airbyte_apply_policy_tags()";
	return psprintf("dfe_airbyte_apply_policy_tags('%s')", dfe_target_current());
}

/* the target's row of sync_watch, written at its first check */
static void
ensure_watch_row(void)
{
	const char *args[1] = {dfe_target_current()};

	dfe_sql("add the target's sync watch",
			"INSERT INTO dfe_airbyte.sync_watch (target) VALUES ($1) ON CONFLICT (target) DO NOTHING",
			1, args, SPI_OK_INSERT);
}

/* older jobs of this target we last saw unfinished */
static void
read_open_ids(PollArgs *a)
{
	const char *args[1] = {dfe_target_current()};

	dfe_xact_begin("dfe_airbyte sync health: reading open jobs");
	dfe_sql("read the unfinished jobs",
			"SELECT job_id::text FROM dfe_airbyte.sync_jobs "
			"WHERE target = $1 AND status NOT IN ('succeeded', 'failed', 'cancelled') "
			"ORDER BY job_id DESC LIMIT " CppAsString2(MAX_OPEN_REFRESH),
			1, args, SPI_OK_SELECT);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		int64	   *id = MemoryContextAlloc(a->cxt, sizeof(int64));

		*id = pg_strtoint64(dfe_col_text(i, 1));
		a->open_ids = lappend(a->open_ids, id);
	}
	dfe_xact_end();
}

/* the check failed: record why (an event only when it starts failing) */
static void
record_check_error(const char *message)
{
	const char *args[2] = {dfe_target_current(), message};
	bool		was_ok;

	dfe_xact_begin("dfe_airbyte sync health: recording a failed check");
	ensure_watch_row();
	dfe_sql("read the last check",
			"SELECT check_error IS NULL FROM dfe_airbyte.sync_watch WHERE target = $1",
			1, args, SPI_OK_SELECT);
	was_ok = SPI_processed > 0 && strcmp(dfe_col_text(0, 1), "t") == 0;
	dfe_sql("record the failed check",
			"UPDATE dfe_airbyte.sync_watch SET checked_at = now(), check_error = $2, "
			"watching_since = coalesce(watching_since, now()) WHERE target = $1",
			2, args, SPI_OK_UPDATE);
	if (was_ok)
		dfe_event("warning", "sync_check_failed", dfe_setting_connection_id(),
				  psprintf("could not read the Airbyte sync jobs: %s", message), NULL);
	dfe_xact_end();
}

/* upsert one job; returns its previous status (NULL when new) */
static char *
upsert_job(AirbyteJob *job)
{
	const char *args[6] = {
		dfe_target_current(), dfe_int64_str(job->job_id), job->status, job->job_type,
		job->start_time, job->last_updated_at
	};

	dfe_sql("read the job's status",
			"SELECT status FROM dfe_airbyte.sync_jobs WHERE target = $1 AND job_id = $2::bigint",
			2, args, SPI_OK_SELECT);
	{
		char	   *old = SPI_processed > 0 ? dfe_col_text(0, 1) : NULL;

		dfe_sql("record the job",
				"INSERT INTO dfe_airbyte.sync_jobs AS j (target, job_id, status, job_type, started_at, last_updated_at) "
				"VALUES ($1, $2::bigint, $3, $4, $5::timestamptz, $6::timestamptz) "
				"ON CONFLICT (target, job_id) DO UPDATE SET status = excluded.status, job_type = excluded.job_type, "
				"started_at = excluded.started_at, last_updated_at = excluded.last_updated_at, last_seen = now()",
				6, args, SPI_OK_INSERT);
		return old;
	}
}

static void
note_job(PollArgs *a, AirbyteJob *job)
{
	char	   *old = upsert_job(job);
	bool		changed = old == NULL || strcmp(old, job->status) != 0;

	dfe_flow_note_job_progress(job);
	if (changed && strcmp(job->status, "succeeded") == 0)
	{
		/* SPI's context goes at the commit; the list must outlive it */
		MemoryContext old = MemoryContextSwitchTo(a->cxt);

		a->succeeded = lappend(a->succeeded, job);
		MemoryContextSwitchTo(old);
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

/* the jobs read: recorded, the watch updated, the history pruned */
static void
record_jobs(PollArgs *a)
{
	const char *args[3] = {
		dfe_target_current(), psprintf("%d", dfe_history_retention_min),
		psprintf("%d", dfe_history_max_rows)
	};
	ListCell   *lc;

	dfe_xact_begin("dfe_airbyte sync health: recording jobs");
	ensure_watch_row();
	foreach(lc, a->jobs)
		note_job(a, lfirst(lc));
	dfe_sql("record the check",
			"UPDATE dfe_airbyte.sync_watch SET checked_at = now(), check_error = NULL, "
			"watching_since = coalesce(watching_since, now()) WHERE target = $1",
			1, args, SPI_OK_UPDATE);
	/* prune: retention and row cap, keeping the target's newest success */
	dfe_sql("prune old jobs",
			"DELETE FROM dfe_airbyte.sync_jobs "
			"WHERE target = $1 AND last_seen < now() - make_interval(mins => $2::int) "
			"AND job_id IS DISTINCT FROM (SELECT max(job_id) FROM dfe_airbyte.sync_jobs "
			"                            WHERE target = $1 AND status = 'succeeded')",
			2, args, SPI_OK_DELETE);
	args[1] = args[2];
	dfe_sql("cap the jobs",
			"DELETE FROM dfe_airbyte.sync_jobs "
			"WHERE target = $1 AND job_id <= (SELECT job_id FROM dfe_airbyte.sync_jobs WHERE target = $1 "
			"                 ORDER BY job_id DESC OFFSET $2::int LIMIT 1) "
			"AND job_id IS DISTINCT FROM (SELECT max(job_id) FROM dfe_airbyte.sync_jobs "
			"                            WHERE target = $1 AND status = 'succeeded')",
			2, args, SPI_OK_DELETE);
	dfe_xact_end();
}

static void
stale_event(bool stale, const char *success, const char *since, const char *after)
{
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
}

/* staleness, as the view computes it; an event per transition */
static void
check_staleness(void)
{
	const char *args[2] = {dfe_target_current(), NULL};

	dfe_xact_begin("dfe_airbyte sync health: staleness");
	dfe_sql("read the staleness",
			"SELECT h.stale, w.stale, h.last_success_at, h.watching_since, h.stale_after "
			"FROM dfe_airbyte.sync_health h JOIN dfe_airbyte.sync_watch w ON w.target = h.target "
			"WHERE h.target = $1",
			1, args, SPI_OK_SELECT);
	if (SPI_processed > 0 && !dfe_col_isnull(0, 1))
	{
		bool		stale = strcmp(dfe_col_text(0, 1), "t") == 0;
		bool		was_stale = strcmp(dfe_col_text(0, 2), "t") == 0;

		if (stale != was_stale)
		{
			stale_event(stale, dfe_col_text(0, 3), dfe_col_text(0, 4), dfe_col_text(0, 5));
			args[1] = stale ? "true" : "false";
			dfe_sql("record the staleness",
					"UPDATE dfe_airbyte.sync_watch SET stale = $2::boolean WHERE target = $1",
					2, args, SPI_OK_UPDATE);
		}
	}
	dfe_xact_end();
}

/* data flow checks after each newly seen success */
static void
run_flow_checks(PollArgs *a)
{
	ListCell   *lc;

	foreach(lc, a->succeeded)
	{
		char	   *msg = dfe_http_try(flow_checks_fn, lfirst(lc), a->cxt);

		if (msg)
			ereport(LOG,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("dfe_airbyte could not check the data flow%s after sync job " INT64_FORMAT ": %s",
							of_target(), ((AirbyteJob *) lfirst(lc))->job_id, msg),
					 errhint("It is checked again after the next successful sync.")));
	}
}

/* drift repair after each newly seen success, outside any transaction */
static void
run_repairs(PollArgs *a)
{
	ListCell   *lc;

	foreach(lc, a->succeeded)
	{
		int64		job_id = ((AirbyteJob *) lfirst(lc))->job_id;
		char	   *msg;

		if (dfe_bigquery_configured())
			ereport(LOG,
					(errmsg("dfe_airbyte: sync job " INT64_FORMAT "%s succeeded; checking the policy tags",
							job_id, of_target())));
		else
			ereport(DEBUG1,
					(errmsg_internal("dfe_airbyte: sync job " INT64_FORMAT " succeeded; BigQuery is not configured, so no policy tag check", job_id)));
		msg = dfe_http_try(repair_fn, &job_id, a->cxt);
		if (msg)
		{
			dfe_xact_begin("dfe_airbyte sync health: recording a failed repair");
			dfe_event("warning", "policy_tags_repair_failed", psprintf("job " INT64_FORMAT, job_id),
					  psprintf("the policy tag check after sync job " INT64_FORMAT " failed: %s; it runs again after the next sync, or run SELECT * FROM %s",
							   job_id, msg, apply_call()),
					  NULL);
			dfe_xact_end();
		}
	}
}

/* one target's poll, in its scope (dfe_for_each_target) */
static void
sync_health_for_target(const char *target, void *arg)
{
	PollArgs	a;
	char	   *error;
	int64		newest_success = 0;
	ListCell   *lc;

	if (!dfe_airbyte_configured())
		return;
	memset(&a, 0, sizeof(a));
	a.cxt = CurrentMemoryContext;
	read_open_ids(&a);

	/* Airbyte, outside any transaction */
	pgstat_report_activity(STATE_RUNNING, "dfe_airbyte sync health: reading Airbyte jobs");
	error = dfe_http_try(read_jobs_fn, &a, a.cxt);
	if (error == NULL)
		dfe_connection_watch_read();
	pgstat_report_activity(STATE_IDLE, NULL);

	if (error)
		record_check_error(error);
	else
		record_jobs(&a);
	check_staleness();
	run_flow_checks(&a);

	/* the connection itself: status, and drift after a success (connection.c) */
	if (error == NULL)
	{
		foreach(lc, a.succeeded)
			newest_success = Max(newest_success, ((AirbyteJob *) lfirst(lc))->job_id);
		dfe_connection_watch_poll(a.jobs, newest_success);
	}
	run_repairs(&a);
}

long
dfe_sync_health_worker_task(void)
{
	long		interval_ms = (long) dfe_sync_poll_interval_s * 1000L;
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "dfe_airbyte sync health",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);

	dfe_for_each_target(sync_health_for_target, NULL);
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	return interval_ms;
}
