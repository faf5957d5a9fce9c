/*
 * resync.c — the full re-sync that a slot recreation needs (SPEC §4, §7).
 *
 * The slot guard never calls out: when it recreates the Airbyte slot it
 * records the recreation in dfe_airbyte.slot_recreations with resync_state
 * 'pending' (in the same transaction as the recreation), and this task, on
 * the network side, asks Airbyte for the full re-sync outside any
 * transaction.  An ERROR (Airbyte down, 5xx, not configured yet) keeps it
 * pending for the next run; the first accepted call marks every pending
 * recreation started with its job id.
 */
#include "postgres.h"

#include "access/xact.h"
#include "utils/memutils.h"

#include <cjson/cJSON.h>

#include "airbyte.h"
#include "events.h"
#include "settings.h"
#include "spi_xact.h"
#include "worker.h"

/* the task's context: where an ERROR's data is copied */
static MemoryContext resync_cxt = NULL;

static char *
resync_event_data(const char *slots, const char *error, int64 job_id)
{
	cJSON	   *o = cJSON_CreateObject();
	char	   *out;

	cJSON_AddStringToObject(o, "slot_name", slots);
	if (error)
		cJSON_AddStringToObject(o, "error", error);
	if (job_id)
		cJSON_AddNumberToObject(o, "job_id", (double) job_id);
	out = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return out;
}

/*
 * airbyte_full_resync(), with any ERROR it raises turned into *error
 * (message and detail; the HTTP layer keeps secrets out of them).  Kept
 * apart so that nothing else lives across the longjmp.
 */
static pg_noinline bool
call_full_resync(int64 *job_id, char **error)
{
	volatile bool ok = false;

	PG_TRY();
	{
		*job_id = airbyte_full_resync();
		ok = true;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(resync_cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		MemoryContextSwitchTo(resync_cxt);
		*error = edata->detail ? psprintf("%s: %s", edata->message, edata->detail)
			: pstrdup(edata->message ? edata->message : "unknown error");
	}
	PG_END_TRY();
	return ok;
}

static void
resync_if_pending(void)
{
	int64		npending;
	int64		max_id;
	bool		notify;
	bool		isnull;
	char	   *slots;
	bool		ok;
	int64		job_id = 0;
	char	   *error = NULL;

	dfe_xact_begin("dfe_airbyte full re-sync");
	dfe_sql("read pending re-syncs",
			"SELECT count(*), max(id),\n"
			"       coalesce(bool_or(resync_notified_at IS NULL OR resync_notified_at < now() - interval '1 hour'), false),\n"
			"       string_agg(DISTINCT slot_name, ', ')\n"
			"FROM dfe_airbyte.slot_recreations\n"
			"WHERE resync_state = 'pending' AND recreated_at IS NOT NULL",
			0, NULL, SPI_OK_SELECT);
	npending = DatumGetInt64(dfe_col_datum(0, 1, &isnull));
	max_id = npending > 0 ? DatumGetInt64(dfe_col_datum(0, 2, &isnull)) : 0;
	notify = DatumGetBool(dfe_col_datum(0, 3, &isnull));
	slots = dfe_col_text(0, 4);
	dfe_xact_end();
	if (npending == 0)
		return;

	/* outside any transaction: this is an HTTP call */
	ok = call_full_resync(&job_id, &error);

	dfe_xact_begin("dfe_airbyte full re-sync");
	if (ok)
	{
		const char *args[2] = {dfe_int64_str(max_id), dfe_int64_str(job_id)};

		dfe_sql("record the started re-sync",
				"UPDATE dfe_airbyte.slot_recreations SET resync_state = 'started',\n"
				"    resync_job_id = $2::bigint, resync_started_at = now(),\n"
				"    resync_attempts = resync_attempts + 1, resync_last_attempt_at = now()\n"
				"WHERE resync_state = 'pending' AND recreated_at IS NOT NULL AND id <= $1::bigint",
				2, args, SPI_OK_UPDATE);
		dfe_event("info", "full_resync_started", slots,
				  psprintf("Airbyte accepted the full re-sync (refresh job " INT64_FORMAT ") that the recreation of replication slot %s requires",
						   (int64) job_id, slots),
				  resync_event_data(slots, NULL, job_id));
	}
	else
	{
		const char *args[3] = {dfe_int64_str(max_id), error, notify ? "true" : "false"};

		dfe_sql("record a failed re-sync request",
				"UPDATE dfe_airbyte.slot_recreations SET resync_attempts = resync_attempts + 1,\n"
				"    resync_last_attempt_at = now(), resync_last_error = $2,\n"
				"    resync_notified_at = CASE WHEN $3::boolean THEN now() ELSE resync_notified_at END\n"
				"WHERE resync_state = 'pending' AND recreated_at IS NOT NULL AND id <= $1::bigint",
				3, args, SPI_OK_UPDATE);
		if (notify)
			dfe_event("warning", "full_resync_failed", slots,
					  psprintf("Airbyte did not accept the full re-sync that the recreation of replication slot %s requires: %s; the worker retries every dfe_airbyte.check_interval",
							   slots, error),
					  resync_event_data(slots, error, 0));
	}
	dfe_xact_end();
}

long
resync_worker_task(void)
{
	resync_cxt = CurrentMemoryContext;
	resync_if_pending();
	return dfe_check_interval_s * 1000L;
}
