/*
 * resync_follow.c — records how the full re-sync jobs that slot
 * recreations asked for are doing (network worker).
 *
 * The slot guard does not recreate the slot again while a re-sync it asked
 * for is pending or running (a re-sync makes the slot retain WAL for the
 * whole re-read, so recreating then would loop): it only reads
 * dfe_airbyte.slot_recreations, and this task keeps resync_job_status there
 * up to date from Airbyte's job (GET outside any transaction), and records
 * the end of the job (resync_finished_at and an event).
 */
#include "postgres.h"

#include "access/xact.h"
#include "utils/memutils.h"

#include "airbyte.h"
#include "events.h"
#include "settings.h"
#include "spi_xact.h"
#include "target_scope.h"
#include "worker.h"

/* at most this many jobs per run (there is normally one) */
#define FOLLOW_MAX_JOBS 10

static MemoryContext follow_cxt = NULL;

typedef struct JobRead
{
	int64		job_id;
	AirbyteJob *job;
} JobRead;

static void
read_job(void *arg)
{
	JobRead    *r = arg;

	dfe_airbyte_get_job(r->job_id, r->job);
}

/* dfe_airbyte_get_job() with an ERROR turned into a LOG line and false */
static bool
fetch_job(int64 job_id, AirbyteJob *job)
{
	JobRead		r = {job_id, job};
	ErrorData  *edata;

	if (dfe_catch(read_job, &r, 0, follow_cxt, &edata))
		return true;
	{
		ereport(LOG,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("dfe_airbyte could not read the state of full re-sync job " INT64_FORMAT ": %s",
						job_id, edata->message ? edata->message : "unknown error"),
				 errhint("The network worker tries again at its next sync health poll; until then the slot guard still treats the re-sync as running.")));
	}
	return false;
}

static void
record_job(int64 rec_id, int64 job_id, const char *status, const char *slot_name)
{
	bool		finished = dfe_airbyte_job_finished(status);
	const char *args[3] = {dfe_int64_str(rec_id), status, finished ? "true" : "false"};

	dfe_xact_begin("dfe_airbyte full re-sync follow-up");
	dfe_sql("record the re-sync job's state",
			"UPDATE dfe_airbyte.slot_recreations SET resync_job_status = $2,\n"
			"    resync_job_checked_at = now(),\n"
			"    resync_finished_at = CASE WHEN $3::boolean THEN now() END\n"
			"WHERE id = $1::bigint",
			3, args, SPI_OK_UPDATE);
	if (finished)
	{
		bool		ok = strcmp(status, "succeeded") == 0;

		dfe_event(ok ? "info" : "warning", ok ? "full_resync_succeeded" : "full_resync_ended",
				  slot_name,
				  ok ? psprintf("the full re-sync (job " INT64_FORMAT ") that the recreation of replication slot %s required succeeded; the slot guard acts normally again",
								job_id, slot_name)
				  : psprintf("the full re-sync (job " INT64_FORMAT ") that the recreation of replication slot %s required ended %s; Airbyte's next sync continues the refresh; check the connection's job history in Airbyte",
							 job_id, slot_name, status),
				  psprintf("{\"slot_name\": \"%s\", \"job_id\": " INT64_FORMAT ", \"status\": \"%s\"}",
						   slot_name, job_id, status));
	}
	dfe_xact_end();
}

/* one target's re-syncs, in its scope (dfe_for_each_target): its recreations, its jobs */
static void
follow_target(const char *target, void *arg)
{
	int64		rec_ids[FOLLOW_MAX_JOBS];
	int64		job_ids[FOLLOW_MAX_JOBS];
	char	   *slots[FOLLOW_MAX_JOBS];
	const char *args[1] = {target};
	int			n;
	int			i;

	dfe_xact_begin("dfe_airbyte full re-sync follow-up");

	/*
	 * Airbyte before 1.2 answers the refresh request with {"value": true}
	 * and no job (airbyte-platform v1.1.0
	 * ConnectionApiController.java): the refresh is the next job Airbyte
	 * creates.  Without a job id, a job that started after the request and
	 * succeeded (as sync health saw it) is taken as the end of the re-sync,
	 * so the guard is not held back for ever.
	 */
	dfe_sql("end the re-syncs a later successful job covered",
			"WITH done AS (\n"
			"    UPDATE dfe_airbyte.slot_recreations r SET resync_job_status = 'succeeded',\n"
			"        resync_job_checked_at = now(), resync_finished_at = now(),\n"
			"        note = coalesce(r.note || '; ', '') || 'Airbyte gave no job id; job ' || j.job_id || ', started after the request, succeeded'\n"
			"    FROM (SELECT job_id, started_at FROM dfe_airbyte.sync_jobs\n"
			"          WHERE target = $1 AND status = 'succeeded') j\n"
			"    WHERE r.target = $1 AND r.resync_state = 'started' AND r.resync_job_id IS NULL\n"
			"      AND r.resync_finished_at IS NULL\n"
			"      AND r.resync_started_at IS NOT NULL AND j.started_at >= r.resync_started_at\n"
			"    RETURNING r.id)\n"
			"SELECT count(*) FROM done",
			1, args, SPI_OK_SELECT);
	dfe_sql("read the re-syncs under way",
			"SELECT id, resync_job_id, slot_name FROM dfe_airbyte.slot_recreations\n"
			"WHERE target = $1 AND resync_state = 'started' AND resync_job_id IS NOT NULL\n"
			"  AND resync_finished_at IS NULL\n"
			"  AND coalesce(resync_job_status, '') NOT IN ('succeeded', 'failed', 'cancelled', 'abandoned')\n"
			"ORDER BY id LIMIT " CppAsString2(FOLLOW_MAX_JOBS),
			1, args, SPI_OK_SELECT);
	n = (int) SPI_processed;
	for (i = 0; i < n; i++)
	{
		bool		isnull;

		rec_ids[i] = DatumGetInt64(dfe_col_datum(i, 1, &isnull));
		job_ids[i] = DatumGetInt64(dfe_col_datum(i, 2, &isnull));
		slots[i] = dfe_col_text(i, 3);
	}
	dfe_xact_end();

	/* outside any transaction: HTTP calls */
	for (i = 0; i < n; i++)
	{
		AirbyteJob	job;

		memset(&job, 0, sizeof(job));
		if (!dfe_airbyte_configured() || !fetch_job(job_ids[i], &job) || job.status == NULL)
			continue;
		record_job(rec_ids[i], job_ids[i], job.status, slots[i]);
	}
}

long
dfe_resync_follow_worker_task(void)
{
	follow_cxt = CurrentMemoryContext;
	dfe_for_each_target(follow_target, NULL);
	return Min(dfe_sync_poll_interval_s, dfe_check_interval_s) * 1000L;
}
