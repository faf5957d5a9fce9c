/*
 * deploy_record.c — the bookkeeping of deploys in dfe_airbyte.deploys: the
 * worker's short transactions, the log of {at, step, message}, the states
 * a deploy ends in, and the recovery after a restart (a running deploy is
 * resumed at the step its row names: the row is the whole state).
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/pg_crc.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include <cjson/cJSON.h>

#include "airbyte.h"
#include "bigquery.h"
#include "events.h"
#include "http.h"
#include "scheduler.h"
#include "settings.h"
#include "shared.h"
#include "spi_xact.h"
#include "stream_config.h"
#include "worker.h"
#include "deploy_int.h"
#include "target_scope.h"

MemoryContext dfe_deploy_cxt = NULL;


void
dfe_deploy_spi_exec(const char *sql, int nargs, Oid *types, Datum *values,
		 const char *nulls, int expected)
{
	dfe_spi_exec("keep the deploy's books", sql, nargs, types, values, nulls, false, expected);
	/* what we keep lives in dfe_deploy_cxt */
	if (dfe_deploy_cxt)
		MemoryContextSwitchTo(dfe_deploy_cxt);
}

int64
dfe_deploy_spi_int64(int row, int col, bool *isnull)
{
	Datum		d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, isnull);

	return *isnull ? 0 : DatumGetInt64(d);
}

char *
dfe_deploy_spi_text(int row, int col, MemoryContext cxt)
{
	char	   *v = SPI_getvalue(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col);

	return v ? MemoryContextStrdup(cxt, v) : NULL;
}

TimestampTz
dfe_deploy_spi_timestamptz(int row, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &isnull);

	return isnull ? 0 : DatumGetTimestampTz(d);
}

/* a transaction with SPI connected; allocations stay in dfe_deploy_cxt */
void
dfe_deploy_xact_begin(void)
{
	MemoryContextSwitchTo(dfe_deploy_cxt);
	dfe_xact_begin("dfe_airbyte deploy");
	/* what we allocate between here and the commit must outlive SPI_finish */
	MemoryContextSwitchTo(dfe_deploy_cxt);
}

/* dfe_xact_end returns to dfe_deploy_cxt, the context dfe_deploy_xact_begin started in */
void
dfe_deploy_xact_commit(void)
{
	dfe_xact_end();
}

/* ---------------------------------------------------------------------- */
/* recording (each inside xact_begin/xact_commit)                         */
/* ---------------------------------------------------------------------- */


void
dfe_deploy_server_log(int64 id, const char *step, const char *message)
{
	const char *target = dfe_target_current();
	bool		local = strcmp(target, DFE_LOCAL_TARGET) == 0;

	ereport(LOG,
			(errmsg("dfe_airbyte deploy " INT64_FORMAT "%s%s%s: %s%s%s", id,
					local ? "" : " (target ", local ? "" : target, local ? "" : ")",
					step ? step : "", step ? ": " : "", message)));
}

/* append {at, step, message} to the deploy's log */
void
dfe_deploy_record_log(int64 id, const char *step, const char *message)
{
	Oid			types[3] = {INT8OID, TEXTOID, TEXTOID};
	Datum		values[3];
	char		nulls[3] = {' ', ' ', ' '};

	values[0] = Int64GetDatum(id);
	values[1] = step ? CStringGetTextDatum(step) : (Datum) 0;
	nulls[1] = step ? ' ' : 'n';
	values[2] = CStringGetTextDatum(message);
	dfe_deploy_spi_exec("UPDATE dfe_airbyte.deploys SET log = log || " DEPLOY_LOG_ENTRY " WHERE id = $1",
			 3, types, values, nulls, SPI_OK_UPDATE);
	dfe_deploy_server_log(id, step, message);
}

/* move to step, logging message under the new step; job_id > 0 records it */
void
dfe_deploy_record_step(int64 id, const char *step, const char *message, int64 job_id)
{
	Oid			types[4] = {INT8OID, TEXTOID, TEXTOID, INT8OID};
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};

	values[0] = Int64GetDatum(id);
	values[1] = CStringGetTextDatum(step);
	values[2] = CStringGetTextDatum(message);
	values[3] = Int64GetDatum(job_id);
	nulls[3] = job_id > 0 ? ' ' : 'n';
	dfe_deploy_spi_exec("UPDATE dfe_airbyte.deploys SET step = $2, step_started_at = clock_timestamp(), "
			 "retrying_since = NULL, http_status = NULL, job_id = coalesce($4, job_id), "
			 "log = log || " DEPLOY_LOG_ENTRY " WHERE id = $1",
			 4, types, values, nulls, SPI_OK_UPDATE);
	dfe_deploy_server_log(id, step, message);
}

void
dfe_deploy_record_failure(int64 id, const char *step, long http_status, const char *error)
{
	Oid			types[5] = {INT8OID, TEXTOID, TEXTOID, INT4OID, TEXTOID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	char	   *message = psprintf("failed: %s", error);

	values[0] = Int64GetDatum(id);
	values[1] = CStringGetTextDatum(step);
	values[2] = CStringGetTextDatum(message);
	values[3] = Int32GetDatum((int32) http_status);
	nulls[3] = http_status > 0 ? ' ' : 'n';
	values[4] = CStringGetTextDatum(error);
	dfe_deploy_spi_exec("UPDATE dfe_airbyte.deploys SET state = 'failed', finished_at = clock_timestamp(), "
			 "retrying_since = NULL, http_status = $4, error = $5, "
			 "log = log || " DEPLOY_LOG_ENTRY " WHERE id = $1",
			 5, types, values, nulls, SPI_OK_UPDATE);
	dfe_event("warning", "deploy_failed", psprintf("deploy " INT64_FORMAT, id),
			  psprintf("deploy " INT64_FORMAT " failed at step %s: %s", id, step, error), NULL);
	dfe_deploy_server_log(id, step, message);
}

void
dfe_deploy_record_success(int64 id, const char *step, const char *message)
{
	Oid			types[3] = {INT8OID, TEXTOID, TEXTOID};
	Datum		values[3];

	values[0] = Int64GetDatum(id);
	values[1] = CStringGetTextDatum(step);
	values[2] = CStringGetTextDatum(message);
	dfe_deploy_spi_exec("UPDATE dfe_airbyte.deploys SET state = 'succeeded', step = 'done', "
			 "finished_at = clock_timestamp(), retrying_since = NULL, "
			 "log = log || " DEPLOY_LOG_ENTRY " WHERE id = $1",
			 3, types, values, NULL, SPI_OK_UPDATE);
	dfe_event("info", "deploy_succeeded", psprintf("deploy " INT64_FORMAT, id),
			  psprintf("deploy " INT64_FORMAT " succeeded", id), NULL);
	dfe_deploy_server_log(id, step, message);
}


/* ---------------------------------------------------------------------- */
/* restart recovery                                                       */
/* ---------------------------------------------------------------------- */

void
dfe_deploy_worker_startup(void)
{
	int			ret;
	uint64		i;

	dfe_deploy_cxt = CurrentMemoryContext;

	dfe_deploy_xact_begin();
	ret = SPI_execute("UPDATE dfe_airbyte.deploys SET log = log || jsonb_build_array(jsonb_build_object("
					  "'at', clock_timestamp(), 'step', step, "
					  "'message', 'the dfe_airbyte worker restarted (server restart or crash); resuming at step ' || step)) "
					  "WHERE state = 'running' RETURNING id, step",
					  false, 0);
	MemoryContextSwitchTo(dfe_deploy_cxt);
	if (ret != SPI_OK_UPDATE_RETURNING)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not read dfe_airbyte.deploys: %s", SPI_result_code_string(ret)),
				 errhint("Check that the dfe_airbyte extension is installed correctly.")));
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		dfe_deploy_server_log(dfe_deploy_spi_int64(i, 1, &isnull), dfe_deploy_spi_text(i, 2, dfe_deploy_cxt),
				   "the worker restarted; resuming at this step");
	}
	dfe_deploy_xact_commit();
}

