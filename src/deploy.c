/*
 * deploy.c — dfe_airbyte_deploy() and the worker's deploy state machine
 * (SPEC §6).
 *
 * A deploy is a row of dfe_airbyte.deploys.  dfe_airbyte_deploy() only
 * inserts a queued row and asks for the worker to be woken when the calling
 * transaction commits: a Rails migration calling it is never blocked and a
 * rolled-back migration leaves nothing behind.  With wait => true the
 * caller cannot insert the row itself (its transaction commits only after
 * it returns), so it asks the worker through shared memory (shared.h) and
 * then follows the row, printing its log as NOTICEs.
 *
 * The worker runs one deploy at a time as a resumable state machine whose
 * whole state is in the row (step, step_started_at, job_id,
 * retrying_since): each call of deploy_worker_task() advances it by one
 * step or one poll and returns how long to sleep, so a crash or a server
 * restart resumes the deploy where it was.  No transaction is held across
 * an HTTP call.
 *
 *   waiting_for_migrations  the Rails migration advisory lock is held by a
 *                           session (read from pg_locks; we never take it,
 *                           which would make a concurrent db:migrate fail)
 *   refreshing_connection   build the stream config, rediscover, PATCH
 *   starting_sync           reuse the running sync, else start one
 *   waiting_for_sync        poll the job every job_poll_interval
 *   applying_policy_tags    converge BigQuery's hidden tags (if configured)
 *
 * Passing errors (no answer, 429 or 5xx after the HTTP layer's own retries)
 * do not fail a deploy at once: the step is tried again every
 * job_poll_interval until deploy_retry_timeout has passed since the first
 * such error.  Any other error fails the deploy at once, recording the
 * step, the HTTP status and the server's message (secrets redacted).
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
#include "stream_config.h"
#include "worker.h"
#include "version.h"

/* ActiveRecord::Migrator::MIGRATOR_SALT */
#define RAILS_MIGRATOR_SALT INT64CONST(2053462845)
/* how often a deploy looks at pg_locks while a migration runs */
#define MIGRATION_POLL_MS 1000L
/* how often dfe_airbyte_deploy(wait => true) reads the deploy row */
#define WAIT_POLL_MS 250L

/* the memory context of the running task (the worker's task context) */
static MemoryContext deploy_cxt = NULL;

/*
 * What only this process remembers about the running deploy, to log a
 * state once rather than at every poll.  Lost on restart, which only means
 * one more log line.
 */
static int64 mem_deploy_id = 0;
static char mem_step[NAMEDATALEN];
static bool mem_wait_logged = false;
static char mem_job_status[NAMEDATALEN];
/* when the running deploy wants its next step or poll (0: now) */
static TimestampTz mem_due = 0;
/* dfe_settings_generation when mem_due was computed */
static uint64 mem_due_generation = 0;

/*
 * With no deploy to run the task still looks at dfe_airbyte.deploys this
 * often: the commit of dfe_airbyte_deploy() sets the worker's latch, but a
 * deploy queued while no worker ran, or whose wake-up was consumed by
 * someone else, must not wait for the next deploy to be noticed.  One
 * index lookup a minute costs nothing measurable at idle.
 */
#define DEPLOY_IDLE_POLL_MS 60000L

typedef struct DeployRow
{
	int64		id;
	char	   *step;
	int64		job_id;			/* 0: none yet */
	TimestampTz step_started_at;
	TimestampTz retrying_since; /* 0: not retrying */
} DeployRow;

typedef struct StepError
{
	char	   *message;		/* errmsg: errdetail, redacted */
	long		http_status;	/* <= 0: none */
	bool		transient;
} StepError;

/* ---------------------------------------------------------------------- */
/* the Rails migration lock                                               */
/* ---------------------------------------------------------------------- */

/*
 * ActiveRecord: MIGRATOR_SALT * Zlib.crc32(current_database).  zlib's
 * CRC-32 is PostgreSQL's "traditional" CRC-32 (pg_crc.h), not the legacy
 * one, which uses the table the wrong way round.
 */
static int64
rails_migration_lock_key(const char *dbname)
{
	pg_crc32	crc;

	INIT_TRADITIONAL_CRC32(crc);
	COMP_TRADITIONAL_CRC32(crc, dbname, strlen(dbname));
	FIN_TRADITIONAL_CRC32(crc);
	return RAILS_MIGRATOR_SALT * (int64) crc;
}

static int64
my_migration_lock_key(void)
{
	char	   *dbname = get_database_name(MyDatabaseId);

	if (dbname == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_DATABASE),
				 errmsg("could not find the name of the current database"),
				 errhint("The database may have been dropped or renamed; reconnect.")));
	return rails_migration_lock_key(dbname);
}

PG_FUNCTION_INFO_V1(dfe_airbyte_migration_lock_key);

Datum
dfe_airbyte_migration_lock_key(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(my_migration_lock_key());
}

/*
 * The pid of a session holding the migration lock, 0 when none.  Needs a
 * transaction with SPI connected.  pg_locks shows a bigint advisory key as
 * classid = high 32 bits, objid = low 32 bits, objsubid = 1.
 */
static int
migration_lock_holder(void)
{
	int64		key = my_migration_lock_key();
	Oid			types[3] = {OIDOID, OIDOID, OIDOID};
	Datum		values[3];
	int			ret;
	int			pid = 0;

	values[0] = ObjectIdGetDatum(MyDatabaseId);
	values[1] = ObjectIdGetDatum((Oid) ((uint64) key >> 32));
	values[2] = ObjectIdGetDatum((Oid) ((uint64) key & 0xFFFFFFFF));
	ret = SPI_execute_with_args("SELECT pid FROM pg_catalog.pg_locks "
								"WHERE locktype = 'advisory' AND database = $1 "
								"AND classid = $2 AND objid = $3 AND objsubid = 1 "
								"AND granted ORDER BY pid LIMIT 1",
								3, types, values, NULL, true, 1);
	if (ret != SPI_OK_SELECT)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not read pg_locks: %s", SPI_result_code_string(ret)),
				 errhint("This should not happen; report it with the server log.")));
	if (SPI_processed > 0)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
			pid = DatumGetInt32(d);
	}
	return pid;
}

/* ---------------------------------------------------------------------- */
/* small SPI helpers                                                      */
/* ---------------------------------------------------------------------- */

static void
spi_exec(const char *sql, int nargs, Oid *types, Datum *values,
		 const char *nulls, int expected)
{
	int			ret = SPI_execute_with_args(sql, nargs, types, values, nulls, false, 0);

	/* SPI leaves us in its procedure context; what we keep lives in ours */
	if (deploy_cxt)
		MemoryContextSwitchTo(deploy_cxt);
	if (ret != expected)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("dfe_airbyte deploy bookkeeping failed: %s", SPI_result_code_string(ret)),
				 errdetail("Statement: %s", sql),
				 errhint("%s", DFE_UPDATE_HINT)));
}

static int64
spi_int64(int row, int col, bool *isnull)
{
	Datum		d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, isnull);

	return *isnull ? 0 : DatumGetInt64(d);
}

static char *
spi_text(int row, int col, MemoryContext cxt)
{
	char	   *v = SPI_getvalue(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col);

	return v ? MemoryContextStrdup(cxt, v) : NULL;
}

static TimestampTz
spi_timestamptz(int row, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &isnull);

	return isnull ? 0 : DatumGetTimestampTz(d);
}

/* a transaction with SPI connected; allocations stay in deploy_cxt */
static void
xact_begin(void)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	MemoryContextSwitchTo(deploy_cxt);
	PushActiveSnapshot(GetTransactionSnapshot());
	SPI_connect();
	/* what we allocate between here and the commit must outlive SPI_finish */
	MemoryContextSwitchTo(deploy_cxt);
}

static void
xact_commit(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(deploy_cxt);
}

/* ---------------------------------------------------------------------- */
/* recording (each inside xact_begin/xact_commit)                         */
/* ---------------------------------------------------------------------- */

#define LOG_ENTRY "jsonb_build_array(jsonb_build_object('at', clock_timestamp(), 'step', $2::text, 'message', $3::text))"

static void
server_log(int64 id, const char *step, const char *message)
{
	ereport(LOG,
			(errmsg("dfe_airbyte deploy " INT64_FORMAT ": %s%s%s", id,
					step ? step : "", step ? ": " : "", message)));
}

/* append {at, step, message} to the deploy's log */
static void
record_log(int64 id, const char *step, const char *message)
{
	Oid			types[3] = {INT8OID, TEXTOID, TEXTOID};
	Datum		values[3];
	char		nulls[3] = {' ', ' ', ' '};

	values[0] = Int64GetDatum(id);
	values[1] = step ? CStringGetTextDatum(step) : (Datum) 0;
	nulls[1] = step ? ' ' : 'n';
	values[2] = CStringGetTextDatum(message);
	spi_exec("UPDATE dfe_airbyte.deploys SET log = log || " LOG_ENTRY " WHERE id = $1",
			 3, types, values, nulls, SPI_OK_UPDATE);
	server_log(id, step, message);
}

/* move to step, logging message under the new step; job_id > 0 records it */
static void
record_step(int64 id, const char *step, const char *message, int64 job_id)
{
	Oid			types[4] = {INT8OID, TEXTOID, TEXTOID, INT8OID};
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};

	values[0] = Int64GetDatum(id);
	values[1] = CStringGetTextDatum(step);
	values[2] = CStringGetTextDatum(message);
	values[3] = Int64GetDatum(job_id);
	nulls[3] = job_id > 0 ? ' ' : 'n';
	spi_exec("UPDATE dfe_airbyte.deploys SET step = $2, step_started_at = clock_timestamp(), "
			 "retrying_since = NULL, http_status = NULL, job_id = coalesce($4, job_id), "
			 "log = log || " LOG_ENTRY " WHERE id = $1",
			 4, types, values, nulls, SPI_OK_UPDATE);
	server_log(id, step, message);
}

static void
record_failure(int64 id, const char *step, long http_status, const char *error)
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
	spi_exec("UPDATE dfe_airbyte.deploys SET state = 'failed', finished_at = clock_timestamp(), "
			 "retrying_since = NULL, http_status = $4, error = $5, "
			 "log = log || " LOG_ENTRY " WHERE id = $1",
			 5, types, values, nulls, SPI_OK_UPDATE);
	dfe_event("warning", "deploy_failed", psprintf("deploy " INT64_FORMAT, id),
			  psprintf("deploy " INT64_FORMAT " failed at step %s: %s", id, step, error), NULL);
	server_log(id, step, message);
}

static void
record_success(int64 id, const char *step, const char *message)
{
	Oid			types[3] = {INT8OID, TEXTOID, TEXTOID};
	Datum		values[3];

	values[0] = Int64GetDatum(id);
	values[1] = CStringGetTextDatum(step);
	values[2] = CStringGetTextDatum(message);
	spi_exec("UPDATE dfe_airbyte.deploys SET state = 'succeeded', step = 'done', "
			 "finished_at = clock_timestamp(), retrying_since = NULL, "
			 "log = log || " LOG_ENTRY " WHERE id = $1",
			 3, types, values, NULL, SPI_OK_UPDATE);
	dfe_event("info", "deploy_succeeded", psprintf("deploy " INT64_FORMAT, id),
			  psprintf("deploy " INT64_FORMAT " succeeded", id), NULL);
	server_log(id, step, message);
}

/* ---------------------------------------------------------------------- */
/* running a step's outside call                                          */
/* ---------------------------------------------------------------------- */

typedef void (*StepFn) (void *arg);

/*
 * Run fn, turning an ERROR into a StepError (NULL when fn succeeded).  Any
 * transaction fn had open is rolled back.  FATAL (SIGTERM) is not caught:
 * it ends the worker and the deploy is resumed when it comes back.
 */
static StepError *
run_step(StepFn fn, void *arg)
{
	StepError  *volatile result = NULL;

	airbyte_last_http_status = -1;
	PG_TRY();
	{
		fn(arg);
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		StepError  *e;
		long		status = airbyte_last_http_status;

		HOLD_INTERRUPTS();
		MemoryContextSwitchTo(deploy_cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		RESUME_INTERRUPTS();
		MemoryContextSwitchTo(deploy_cxt);

		e = palloc0(sizeof(StepError));
		/* the detail carries the server's message; else the hint says what to do */
		e->message = http_redact(edata->detail
								 ? psprintf("%s: %s", edata->message, edata->detail)
								 : edata->hint
								 ? psprintf("%s. %s", edata->message, edata->hint)
								 : edata->message);
		e->http_status = status;
		e->transient = status >= 0 && airbyte_transient_status(status) &&
			(edata->sqlerrcode == ERRCODE_CONNECTION_FAILURE ||
			 edata->sqlerrcode == ERRCODE_EXTERNAL_ROUTINE_EXCEPTION);
		FreeErrorData(edata);
		result = e;
	}
	PG_END_TRY();
	return result;
}

/*
 * A step's call failed: fail the deploy, or for a passing error keep the
 * step and try again later.  Returns the ms until the next try (0 after a
 * failure: look for the next queued deploy).
 */
static long
step_failed(DeployRow *d, StepError *e)
{
	TimestampTz now = GetCurrentTimestamp();

	if (e->transient &&
		(d->retrying_since == 0 ||
		 !TimestampDifferenceExceeds(d->retrying_since, now, dfe_deploy_retry_timeout_s * 1000)))
	{
		Oid			types[4] = {INT8OID, TEXTOID, TEXTOID, INT4OID};
		Datum		values[4];
		char		nulls[4] = {' ', ' ', ' ', ' '};
		bool		first = d->retrying_since == 0;
		char	   *message = psprintf("%s; trying again every %s for up to %s",
									   e->message,
									   airbyte_format_duration(dfe_job_poll_interval_s),
									   airbyte_format_duration(dfe_deploy_retry_timeout_s));

		values[0] = Int64GetDatum(d->id);
		values[1] = CStringGetTextDatum(d->step);
		values[2] = CStringGetTextDatum(message);
		values[3] = Int32GetDatum((int32) e->http_status);
		nulls[3] = e->http_status > 0 ? ' ' : 'n';
		/* log the first passing error only, not every retry */
		if (first)
		{
			xact_begin();
			spi_exec("UPDATE dfe_airbyte.deploys SET retrying_since = clock_timestamp(), http_status = $4, "
					 "log = log || " LOG_ENTRY " WHERE id = $1",
					 4, types, values, nulls, SPI_OK_UPDATE);
			xact_commit();
			server_log(d->id, d->step, message);
		}
		return (long) dfe_job_poll_interval_s * 1000L;
	}

	xact_begin();
	record_failure(d->id, d->step,
				   e->http_status,
				   e->transient
				   ? psprintf("%s (still failing after %s of retries)", e->message,
							  airbyte_format_duration(dfe_deploy_retry_timeout_s))
				   : e->message);
	xact_commit();
	return 0;
}

/* a call succeeded after passing errors: say so and clear retrying_since */
static void
step_recovered(DeployRow *d)
{
	if (d->retrying_since == 0)
		return;
	xact_begin();
	{
		Oid			types[3] = {INT8OID, TEXTOID, TEXTOID};
		Datum		values[3];

		values[0] = Int64GetDatum(d->id);
		values[1] = CStringGetTextDatum(d->step);
		values[2] = CStringGetTextDatum("Airbyte answers again");
		spi_exec("UPDATE dfe_airbyte.deploys SET retrying_since = NULL, http_status = NULL, "
				 "log = log || " LOG_ENTRY " WHERE id = $1",
				 3, types, values, NULL, SPI_OK_UPDATE);
	}
	xact_commit();
	server_log(d->id, d->step, "Airbyte answers again");
	d->retrying_since = 0;
}

/* ---------------------------------------------------------------------- */
/* the steps                                                              */
/* ---------------------------------------------------------------------- */

static long
step_waiting_for_migrations(DeployRow *d)
{
	int			holder;
	bool		timed_out;

	xact_begin();
	holder = migration_lock_holder();
	MemoryContextSwitchTo(deploy_cxt);
	if (holder == 0)
	{
		record_step(d->id, "refreshing_connection",
					mem_wait_logged ? "the Rails migration has finished" : "no Rails migration is running", 0);
		xact_commit();
		return 0;
	}

	timed_out = TimestampDifferenceExceeds(d->step_started_at, GetCurrentTimestamp(),
										   dfe_migration_wait_timeout_s * 1000);
	if (timed_out)
		record_failure(d->id, d->step, 0,
					   psprintf("a Rails migration was still running after %s (process %d holds the migration advisory lock " INT64_FORMAT "); raise dfe_airbyte.migration_wait_timeout or deploy again when it has finished",
								airbyte_format_duration(dfe_migration_wait_timeout_s),
								holder, my_migration_lock_key()));
	else if (!mem_wait_logged)
		record_log(d->id, d->step,
				   psprintf("waiting for the Rails migration in process %d to finish (it holds advisory lock " INT64_FORMAT ")",
							holder, my_migration_lock_key()));
	xact_commit();
	mem_wait_logged = true;
	return timed_out ? 0 : MIGRATION_POLL_MS;
}

typedef struct BuildArgs
{
	char	   *config;
} BuildArgs;

static void
build_config(void *arg)
{
	BuildArgs  *a = arg;

	xact_begin();
	a->config = stream_config_build();
	xact_commit();
}

typedef struct RefreshArgs
{
	const char *config;
	int			streams;
	const char *version;		/* the Airbyte server's, or NULL */
} RefreshArgs;

static void
refresh_connection(void *arg)
{
	RefreshArgs *a = arg;
	cJSON	   *parsed;

	a->version = airbyte_server_version();
	(void) airbyte_refresh_connection(a->config);
	parsed = cJSON_Parse(a->config);
	if (parsed)
	{
		a->streams = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(
								cJSON_GetObjectItemCaseSensitive(parsed, "configurations"), "streams"));
		cJSON_Delete(parsed);
	}
}

static long
step_refreshing_connection(DeployRow *d)
{
	BuildArgs	build = {NULL};
	RefreshArgs refresh = {NULL, 0, NULL};
	StepError  *e;

	if ((e = run_step(build_config, &build)) != NULL)
		return step_failed(d, e);
	refresh.config = build.config;
	if ((e = run_step(refresh_connection, &refresh)) != NULL)
		return step_failed(d, e);

	xact_begin();
	record_step(d->id, "starting_sync",
				psprintf("Airbyte %s: source schema rediscovered; connection updated with %d stream%s",
						 refresh.version ? refresh.version : "(version unknown)",
						 refresh.streams, refresh.streams == 1 ? "" : "s"), 0);
	xact_commit();
	return 0;
}

typedef struct StartArgs
{
	int64		job_id;
	char	   *status;			/* of the reused job */
	char	   *job_type;		/* of the reused job */
	bool		reused;
	bool		conflict;
} StartArgs;

static void
start_sync(void *arg)
{
	StartArgs  *a = arg;
	AirbyteJob	job;

	memset(&job, 0, sizeof(job));
	/*
	 * A job of any type that has not ended (a refresh, reset or clear
	 * blocks a sync too: Airbyte answers 409), newest first; before 1.8.0
	 * the public list hides refresh jobs, so airbyte.c asks the config API.
	 */
	if (airbyte_latest_active_job(&job))
	{
		a->job_id = job.job_id;
		a->status = job.status;
		a->job_type = job.job_type;
		a->reused = true;
		return;
	}
	a->job_id = airbyte_start_sync(&a->conflict);
}

static long
step_starting_sync(DeployRow *d)
{
	StartArgs	a = {0, NULL, NULL, false, false};
	StepError  *e;
	char	   *message;

	if ((e = run_step(start_sync, &a)) != NULL)
		return step_failed(d, e);

	if (a.reused)
		message = psprintf("a %s job is already %s: waiting for job " INT64_FORMAT " instead of starting one",
						   a.job_type ? a.job_type : "sync", a.status, a.job_id);
	else if (a.conflict)
		message = psprintf("Airbyte answered that a job is already running: waiting for job " INT64_FORMAT,
						   a.job_id);
	else
		message = psprintf("started sync job " INT64_FORMAT, a.job_id);
	xact_begin();
	record_step(d->id, "waiting_for_sync", message, a.job_id);
	xact_commit();
	mem_job_status[0] = '\0';
	return 0;
}

typedef struct PollArgs
{
	int64		job_id;
	AirbyteJob	job;
} PollArgs;

static void
poll_job(void *arg)
{
	PollArgs   *a = arg;

	airbyte_get_job(a->job_id, &a->job);
}

static long
step_waiting_for_sync(DeployRow *d)
{
	PollArgs	a;
	StepError  *e;
	const char *status;

	if (d->job_id <= 0)
	{
		/* cannot happen through the worker; a hand-edited row, perhaps */
		xact_begin();
		record_step(d->id, "starting_sync", "no job recorded: reading the last job again", 0);
		xact_commit();
		return 0;
	}

	memset(&a, 0, sizeof(a));
	a.job_id = d->job_id;
	e = run_step(poll_job, &a);
	if (e == NULL)
		step_recovered(d);
	else if (!e->transient)
		return step_failed(d, e);

	if (e == NULL && strcmp(a.job.status, "succeeded") == 0)
	{
		xact_begin();
		record_step(d->id, "applying_policy_tags",
					psprintf("%s job " INT64_FORMAT " succeeded",
							 a.job.job_type ? a.job.job_type : "sync", d->job_id), 0);
		xact_commit();
		return 0;
	}
	if (e == NULL && airbyte_job_finished(a.job.status))
	{
		xact_begin();
		record_failure(d->id, d->step, 0,
					   psprintf("Airbyte sync job " INT64_FORMAT " ended with status %s; see the job's logs in the Airbyte UI (connection %s)",
								d->job_id, a.job.status, dfe_setting_connection_id()));
		xact_commit();
		return 0;
	}

	if (TimestampDifferenceExceeds(d->step_started_at, GetCurrentTimestamp(),
								   dfe_job_timeout_s * 1000))
	{
		status = e ? "unknown (Airbyte is not answering)" : a.job.status;
		xact_begin();
		record_failure(d->id, d->step, e ? e->http_status : 0,
					   psprintf("Airbyte sync job " INT64_FORMAT " did not finish within %s (dfe_airbyte.job_timeout); its status is %s. The job goes on in Airbyte; deploy again to wait for it and apply the policy tags",
								d->job_id, airbyte_format_duration(dfe_job_timeout_s), status));
		xact_commit();
		return 0;
	}

	if (e != NULL)
		return step_failed(d, e);

	if (strcmp(mem_job_status, a.job.status) != 0)
	{
		xact_begin();
		record_log(d->id, d->step, psprintf("job " INT64_FORMAT ": %s", d->job_id, a.job.status));
		xact_commit();
		strlcpy(mem_job_status, a.job.status, sizeof(mem_job_status));
	}
	return (long) dfe_job_poll_interval_s * 1000L;
}

typedef struct TagArgs
{
	PolicyTagPlan *plan;
	List	   *results;
	List	   *failed;
} TagArgs;

static void
load_plan(void *arg)
{
	TagArgs    *a = arg;

	xact_begin();
	a->plan = policy_tag_plan_load();
	xact_commit();
}

static void
apply_plan(void *arg)
{
	TagArgs    *a = arg;

	a->results = policy_tag_plan_apply(a->plan, &a->failed);
}

static long
step_applying_policy_tags(DeployRow *d)
{
	TagArgs		a = {NULL, NIL, NIL};
	StepError  *e;
	ListCell   *lc;
	int			tagged = 0,
				already = 0,
				untagged = 0,
				missing = 0;
	StringInfoData msg;

	if (!bigquery_configured())
	{
		xact_begin();
		record_success(d->id, d->step, "skipped: BigQuery not configured");
		xact_commit();
		return 0;
	}

	if ((e = run_step(load_plan, &a)) != NULL ||
		(e = run_step(apply_plan, &a)) != NULL)
	{
		/* policy tags are not retried here: the drift repair after the next sync is */
		e->transient = false;
		return step_failed(d, e);
	}

	initStringInfo(&msg);
	if (a.failed != NIL)
	{
		appendStringInfoString(&msg, "policy tags could not be applied to ");
		foreach(lc, a.failed)
			appendStringInfo(&msg, "%s%s", foreach_current_index(lc) > 0 ? ", " : "",
							 (char *) lfirst(lc));
		foreach(lc, a.results)
		{
			PolicyTagResult *r = lfirst(lc);

			if (strcmp(r->action, "failed") == 0 && r->detail)
				appendStringInfo(&msg, "; %s: %s", r->table_name, http_redact(r->detail));
		}
		xact_begin();
		record_failure(d->id, d->step, 0, msg.data);
		xact_commit();
		return 0;
	}

	foreach(lc, a.results)
	{
		PolicyTagResult *r = lfirst(lc);

		if (strcmp(r->action, "tagged") == 0)
			tagged++;
		else if (strcmp(r->action, "already_tagged") == 0)
			already++;
		else if (strcmp(r->action, "untagged") == 0)
			untagged++;
		else if (strncmp(r->action, "missing_", 8) == 0)
			missing++;
	}
	appendStringInfo(&msg, "policy tags: %d tagged, %d already tagged, %d untagged, %d missing",
					 tagged, already, untagged, missing);
	xact_begin();
	policy_tag_state_record(a.results);
	record_success(d->id, d->step, msg.data);
	xact_commit();
	return 0;
}

/* ---------------------------------------------------------------------- */
/* the worker side                                                        */
/* ---------------------------------------------------------------------- */

/* wait => true callers: one queued row for all requests so far */
static void
serve_wait_requests(void)
{
	uint64		seq;
	uint64		done;
	Oid			roleid;
	int64		id;
	char	   *role;
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	bool		isnull;

	SpinLockAcquire(&dfe_shared->mutex);
	seq = dfe_shared->deploy_request_seq;
	done = dfe_shared->deploy_request_done;
	roleid = dfe_shared->deploy_requested_by;
	SpinLockRelease(&dfe_shared->mutex);
	if (seq <= done)
		return;

	xact_begin();
	role = OidIsValid(roleid) ? GetUserNameFromId(roleid, true) : NULL;
	values[0] = CStringGetTextDatum(role ? role : "unknown");
	spi_exec("INSERT INTO dfe_airbyte.deploys (requested_by, log) VALUES ($1::name, "
			 "jsonb_build_array(jsonb_build_object('at', clock_timestamp(), 'step', NULL, "
			 "'message', 'queued by dfe_airbyte_deploy(wait => true)'))) RETURNING id",
			 1, types, values, NULL, SPI_OK_INSERT_RETURNING);
	id = spi_int64(0, 1, &isnull);
	xact_commit();

	SpinLockAcquire(&dfe_shared->mutex);
	dfe_shared->deploy_request_done = seq;
	dfe_shared->deploy_request_id = id;
	SpinLockRelease(&dfe_shared->mutex);
}

/* read row 0 of a deploys query into *d */
static void
fill_row(DeployRow *d)
{
	bool		isnull;

	d->id = spi_int64(0, 1, &isnull);
	d->step = spi_text(0, 2, deploy_cxt);
	d->job_id = spi_int64(0, 3, &isnull);
	d->step_started_at = spi_timestamptz(0, 4);
	d->retrying_since = spi_timestamptz(0, 5);
	if (d->step == NULL)
		d->step = pstrdup("waiting_for_migrations");
	if (d->step_started_at == 0)
		d->step_started_at = GetCurrentTimestamp();
}

/*
 * The running deploy, or else the newest queued one, started now (older
 * queued ones coalesce into it).  false when there is nothing to do.
 */
static bool
current_deploy(DeployRow *d)
{
	int			ret;
	bool		isnull;
	bool		found = false;

	xact_begin();
	ret = SPI_execute("SELECT id, step, job_id, step_started_at, retrying_since "
					  "FROM dfe_airbyte.deploys WHERE state = 'running' ORDER BY id LIMIT 1",
					  true, 1);
	MemoryContextSwitchTo(deploy_cxt);
	if (ret != SPI_OK_SELECT)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not read dfe_airbyte.deploys: %s", SPI_result_code_string(ret)),
				 errhint("Check that the dfe_airbyte extension is installed correctly.")));
	if (SPI_processed > 0)
	{
		fill_row(d);
		found = true;
	}
	else
	{
		ret = SPI_execute("SELECT id FROM dfe_airbyte.deploys WHERE state = 'queued' "
						  "ORDER BY id DESC LIMIT 1 FOR UPDATE", false, 1);
		MemoryContextSwitchTo(deploy_cxt);
		if (ret != SPI_OK_SELECT)
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not read dfe_airbyte.deploys: %s", SPI_result_code_string(ret)),
					 errhint("Check that the dfe_airbyte extension is installed correctly.")));
		if (SPI_processed > 0)
		{
			int64		id = spi_int64(0, 1, &isnull);
			Oid			types[3] = {INT8OID, TEXTOID, TEXTOID};
			Datum		values[3];
			char		nulls[3] = {' ', 'n', ' '};
			char	   *older;
			char	   *message;

			values[0] = Int64GetDatum(id);
			values[1] = (Datum) 0;
			values[2] = CStringGetTextDatum(psprintf("coalesced into deploy " INT64_FORMAT, id));
			spi_exec("WITH c AS (UPDATE dfe_airbyte.deploys SET state = 'coalesced', "
					 "finished_at = clock_timestamp(), coalesced_into = $1, "
					 "log = log || " LOG_ENTRY " WHERE state = 'queued' AND id < $1 RETURNING id) "
					 "SELECT string_agg(id::text, ', ' ORDER BY id) FROM c",
					 3, types, values, nulls, SPI_OK_SELECT);
			older = spi_text(0, 1, deploy_cxt);
			message = older ? psprintf("started; it also stands for the older queued deploy(s) %s", older)
				: pstrdup("started");
			values[2] = CStringGetTextDatum(message);
			spi_exec("UPDATE dfe_airbyte.deploys SET state = 'running', started_at = clock_timestamp(), "
					 "step = 'waiting_for_migrations', step_started_at = clock_timestamp(), "
					 "log = log || " LOG_ENTRY " WHERE id = $1",
					 3, types, values, nulls, SPI_OK_UPDATE);
			server_log(id, NULL, message);
			ret = SPI_execute_with_args("SELECT id, step, job_id, step_started_at, retrying_since "
										"FROM dfe_airbyte.deploys WHERE id = $1",
										1, types, values, NULL, false, 1);
			MemoryContextSwitchTo(deploy_cxt);
			if (ret != SPI_OK_SELECT || SPI_processed != 1)
				ereport(ERROR,
						(errcode(ERRCODE_INTERNAL_ERROR),
						 errmsg("could not read back deploy " INT64_FORMAT, id),
						 errhint("Check that the dfe_airbyte extension is installed correctly.")));
			fill_row(d);
			found = true;
		}
	}
	xact_commit();
	return found;
}

void
deploy_worker_startup(void)
{
	int			ret;
	uint64		i;

	deploy_cxt = CurrentMemoryContext;
	mem_deploy_id = 0;
	mem_due = 0;

	xact_begin();
	ret = SPI_execute("UPDATE dfe_airbyte.deploys SET log = log || jsonb_build_array(jsonb_build_object("
					  "'at', clock_timestamp(), 'step', step, "
					  "'message', 'the dfe_airbyte worker restarted (server restart or crash); resuming at step ' || step)) "
					  "WHERE state = 'running' RETURNING id, step",
					  false, 0);
	MemoryContextSwitchTo(deploy_cxt);
	if (ret != SPI_OK_UPDATE_RETURNING)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not read dfe_airbyte.deploys: %s", SPI_result_code_string(ret)),
				 errhint("Check that the dfe_airbyte extension is installed correctly.")));
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		server_log(spi_int64(i, 1, &isnull), spi_text(i, 2, deploy_cxt),
				   "the worker restarted; resuming at this step");
	}
	xact_commit();
}

long
deploy_worker_task(void)
{
	DeployRow	d;
	long		next_ms;

	deploy_cxt = CurrentMemoryContext;
	serve_wait_requests();

	/*
	 * Every commit of dfe_airbyte_deploy() sets our latch.  While a deploy
	 * waits (for a migration, for its sync), a wake-up must not make it poll
	 * Airbyte early: the queued deploys only matter once it ends.
	 */
	/* a reload: the due time came from the old settings (job_poll_interval) */
	if (mem_due_generation != dfe_settings_generation)
	{
		mem_due = 0;
		mem_due_generation = dfe_settings_generation;
	}
	if (mem_deploy_id != 0 && mem_due != 0)
	{
		long		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), mem_due);

		if (left > 0)
			return left;
	}

	memset(&d, 0, sizeof(d));
	if (!current_deploy(&d))
	{
		mem_deploy_id = 0;
		mem_due = 0;
		pgstat_report_activity(STATE_IDLE, NULL);
		return DEPLOY_IDLE_POLL_MS;
	}

	if (d.id != mem_deploy_id || strcmp(d.step, mem_step) != 0)
	{
		mem_deploy_id = d.id;
		strlcpy(mem_step, d.step, sizeof(mem_step));
		mem_wait_logged = false;
		mem_job_status[0] = '\0';
	}
	pgstat_report_activity(STATE_RUNNING,
						   psprintf("dfe_airbyte deploy " INT64_FORMAT ": %s", d.id, d.step));

	if (strcmp(d.step, "waiting_for_migrations") == 0)
		next_ms = step_waiting_for_migrations(&d);
	else if (strcmp(d.step, "refreshing_connection") == 0)
		next_ms = step_refreshing_connection(&d);
	else if (strcmp(d.step, "starting_sync") == 0)
		next_ms = step_starting_sync(&d);
	else if (strcmp(d.step, "waiting_for_sync") == 0)
		next_ms = step_waiting_for_sync(&d);
	else if (strcmp(d.step, "applying_policy_tags") == 0)
		next_ms = step_applying_policy_tags(&d);
	else
	{
		/* a step this version does not know (a newer version's row?) */
		xact_begin();
		record_failure(d.id, d.step, 0,
					   psprintf("unknown deploy step \"%s\"; deploy again", d.step));
		xact_commit();
		next_ms = 0;
	}
	pgstat_report_activity(STATE_IDLE, NULL);
	mem_due = next_ms > 0 ? TimestampTzPlusMilliseconds(GetCurrentTimestamp(), next_ms) : 0;
	return next_ms;
}

/* ---------------------------------------------------------------------- */
/* dfe_airbyte_deploy()                                                   */
/* ---------------------------------------------------------------------- */

static void
no_worker_error(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("the dfe_airbyte background worker is not running"),
			 errdetail("dfe_airbyte_deploy(wait => true) needs the worker to run the deploy."),
			 errhint("Add dfe_airbyte to shared_preload_libraries, set dfe_airbyte.database to this database (\"%s\") and restart the server.",
					 get_database_name(MyDatabaseId))));
}

/*
 * The workers serve one database (dfe_airbyte.database, published in shared
 * memory): a deploy queued in another one would never run there.
 */
static void
other_database_report(int elevel, const char *what)
{
	Oid			served = dfe_served_database();
	char	   *served_name;
	char	   *here;

	if (!OidIsValid(served) || served == MyDatabaseId)
		return;
	served_name = get_database_name(served);
	here = get_database_name(MyDatabaseId);
	ereport(elevel,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("the dfe_airbyte workers serve database \"%s\", not this one (\"%s\")",
					served_name ? served_name : "?", here ? here : "?"),
			 errdetail("%s", what),
			 errhint("Call dfe_airbyte_deploy() in database \"%s\", or set dfe_airbyte.database = '%s' and restart the server.",
					 served_name ? served_name : "?", here ? here : "?")));
}

/* queue a deploy in the caller's transaction; the worker is woken at commit */
static int64
queue_deploy(void)
{
	int64		id;
	bool		isnull;
	int			ret;

	SPI_connect();
	ret = SPI_execute("INSERT INTO dfe_airbyte.deploys (requested_by) VALUES (current_user) RETURNING id",
					  false, 1);
	if (ret != SPI_OK_INSERT_RETURNING)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not queue the deploy: %s", SPI_result_code_string(ret)),
				 errhint("Check that the dfe_airbyte extension is installed correctly.")));
	id = spi_int64(0, 1, &isnull);
	SPI_finish();

	dfe_wake_worker_at_commit();
	other_database_report(WARNING, psprintf("Deploy " INT64_FORMAT " is queued here, where no worker will run it.", id));
	if (!dfe_worker_running())
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("deploy " INT64_FORMAT " is queued but the dfe_airbyte background worker is not running", id),
				 errdetail("The deploy runs when the worker starts."),
				 errhint("Add dfe_airbyte to shared_preload_libraries, set dfe_airbyte.database to this database (\"%s\") and restart the server.",
						 get_database_name(MyDatabaseId))));
	return id;
}

static void
wait_sleep(long ms)
{
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 ms, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
}

/* ask the worker for a deploy row; returns its id */
static int64
request_deploy(void)
{
	uint64		my_seq;
	int64		id = 0;
	bool		said_absent = false;

	SpinLockAcquire(&dfe_shared->mutex);
	my_seq = ++dfe_shared->deploy_request_seq;
	dfe_shared->deploy_requested_by = GetUserId();
	SpinLockRelease(&dfe_shared->mutex);
	dfe_wake_worker();

	for (;;)
	{
		bool		done;

		SpinLockAcquire(&dfe_shared->mutex);
		done = dfe_shared->deploy_request_done >= my_seq;
		if (done)
			id = dfe_shared->deploy_request_id;
		SpinLockRelease(&dfe_shared->mutex);
		if (done)
			return id;
		if (!dfe_worker_running() && !said_absent)
		{
			ereport(NOTICE,
					(errmsg("the dfe_airbyte worker is not running; waiting for it to start again")));
			said_absent = true;
		}
		wait_sleep(100);
	}
}

/* follow deploy id until it ends; returns the id of the deploy that ran */
static int64
follow_deploy(int64 id)
{
	int			printed = 0;
	MemoryContext fcxt = CurrentMemoryContext;
	MemoryContext loop_cxt = AllocSetContextCreate(CurrentMemoryContext, "dfe_airbyte deploy wait",
												   ALLOCSET_SMALL_SIZES);

	for (;;)
	{
		Oid			types[2] = {INT8OID, INT4OID};
		Datum		values[2];
		int			ret;
		int			i;
		bool		isnull;
		char	   *state;
		char	   *step;
		char	   *error;
		int64		into;
		int64		status;

		MemoryContextReset(loop_cxt);
		MemoryContextSwitchTo(loop_cxt);
		SPI_connect();
		values[0] = Int64GetDatum(id);
		values[1] = Int32GetDatum(printed);
		/* read committed: every execution sees the worker's latest commit */
		ret = SPI_execute_with_args("SELECT state, step, error, coalesced_into, http_status::bigint "
									"FROM dfe_airbyte.deploys WHERE id = $1",
									1, types, values, NULL, false, 1);
		if (ret != SPI_OK_SELECT || SPI_processed != 1)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("deploy " INT64_FORMAT " disappeared from dfe_airbyte.deploys", id),
					 errhint("Someone deleted it; look at dfe_airbyte.deploys and deploy again.")));
		state = spi_text(0, 1, loop_cxt);
		step = spi_text(0, 2, loop_cxt);
		error = spi_text(0, 3, loop_cxt);
		into = spi_int64(0, 4, &isnull);
		status = spi_int64(0, 5, &isnull);

		/* the log lines not shown yet (read after the state: none is missed) */
		ret = SPI_execute_with_args("SELECT coalesce(e->>'step', ''), e->>'message' "
									"FROM dfe_airbyte.deploys, "
									"jsonb_array_elements(log) WITH ORDINALITY AS l(e, i) "
									"WHERE id = $1 AND i > $2 ORDER BY i",
									2, types, values, NULL, false, 0);
		if (ret == SPI_OK_SELECT)
		{
			for (i = 0; i < SPI_processed; i++)
			{
				char	   *s = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
				char	   *m = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);

				ereport(NOTICE,
						(errmsg("deploy " INT64_FORMAT ": %s%s%s", id, s, s[0] ? ": " : "",
								m ? m : "")));
			}
			printed += SPI_processed;
		}
		SPI_finish();
		MemoryContextSwitchTo(fcxt);

		if (strcmp(state, "succeeded") == 0)
			break;
		if (strcmp(state, "failed") == 0)
		{
			char	   *errstep = pstrdup(step ? step : "?");
			char	   *reason = pstrdup(error ? error : "no reason recorded");

			if (status > 0)
				ereport(ERROR,
						(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
						 errmsg("deploy " INT64_FORMAT " failed at step %s (HTTP " INT64_FORMAT ")",
								id, errstep, status),
						 errdetail("%s", reason),
						 errhint("See SELECT log FROM dfe_airbyte.deploys WHERE id = " INT64_FORMAT "; fix the cause and deploy again.", id)));
			ereport(ERROR,
					(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
					 errmsg("deploy " INT64_FORMAT " failed at step %s", id, errstep),
					 errdetail("%s", reason),
					 errhint("See SELECT log FROM dfe_airbyte.deploys WHERE id = " INT64_FORMAT "; fix the cause and deploy again.", id)));
		}
		if (strcmp(state, "coalesced") == 0 && into > 0)
		{
			ereport(NOTICE,
					(errmsg("deploy " INT64_FORMAT " was coalesced into deploy " INT64_FORMAT ", which runs in its place",
							id, into)));
			id = into;
			printed = 0;
			continue;
		}
		wait_sleep(WAIT_POLL_MS);
	}
	MemoryContextDelete(loop_cxt);
	return id;
}

PG_FUNCTION_INFO_V1(dfe_airbyte_deploy);

/* dfe_airbyte_deploy(wait boolean DEFAULT false) → bigint */
Datum
dfe_airbyte_deploy(PG_FUNCTION_ARGS)
{
	bool		wait = PG_GETARG_BOOL(0);
	int64		id;

	DFE_REQUIRE_MATCHING_SQL();
	if (!wait)
		PG_RETURN_INT64(queue_deploy());

	if (IsTransactionBlock())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("dfe_airbyte_deploy(wait => true) cannot run inside a transaction block"),
				 errdetail("It waits for the deploy, which first waits for the running migrations and then for a sync; inside a migration's transaction it would wait for itself."),
				 errhint("In a migration use SELECT dfe_airbyte_deploy() (it returns at once and the deploy runs after the commit); call dfe_airbyte_deploy(wait => true) on its own, e.g. psql -c 'SELECT dfe_airbyte_deploy(wait => true)'.")));
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("dfe_airbyte_deploy(wait => true) needs the read committed isolation level"),
				 errdetail("It follows the deploy's progress, which a repeatable read snapshot would not show."),
				 errhint("Run it with SET default_transaction_isolation = 'read committed'.")));
	other_database_report(ERROR, "dfe_airbyte_deploy(wait => true) asks the network worker for the deploy, and that worker runs deploys of its own database only.");
	if (!dfe_worker_running())
		no_worker_error();

	/* a session holding the migration lock would wait for itself */
	SPI_connect();
	if (migration_lock_holder() == MyProcPid)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("this session holds the Rails migration lock, so the deploy would wait for itself"),
				 errdetail("Advisory lock " INT64_FORMAT " is held by this session (process %d).",
						   my_migration_lock_key(), MyProcPid),
				 errhint("In a migration use SELECT dfe_airbyte_deploy() without wait; it runs after the migrations.")));
	SPI_finish();

	id = request_deploy();
	ereport(NOTICE,
			(errmsg("deploy " INT64_FORMAT " queued; waiting for it (cancel with Ctrl-C: the deploy goes on in the worker)", id)));
	PG_RETURN_INT64(follow_deploy(id));
}
