/*
 * deploy.c — the network worker's deploy state machine, one deploy at a
 * time per target (README, "Deploys" and "Targets").
 *
 * A deploy is a row of dfe_airbyte.deploys (deploy_record.c); it is queued
 * by dfe_airbyte_deploy() (deploy_sql.c) or, for a remote target, by the
 * watch of its schema_migrations (deploy_migration.c).  For each enabled
 * target, in that target's scope (its connection_id and other settings
 * applied, target_scope.h), the worker runs the target's running deploy,
 * or else starts its newest queued one (older queued ones of the same
 * target coalesce into it), as a resumable state machine whose whole state
 * is in the row (step, step_started_at, job_id, retrying_since): each call
 * advances it by one step or one poll, so a crash or a server restart
 * resumes every target's deploy where it was.  No transaction is held
 * across an HTTP call.
 *
 *   waiting_for_migrations  ActiveRecord's migration advisory lock is held
 *                           by a session of the target's database
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
#include "spi_xact.h"
#include "stream_config.h"
#include "worker.h"
#include "deploy_int.h"
#include "target_scope.h"
#include "version.h"

/* how often a deploy looks at pg_locks while a migration runs */
#define MIGRATION_POLL_MS 1000L

/*
 * What only this process remembers about each target's running deploy, to
 * log a state once rather than at every poll.  Lost on restart, which only
 * means one more log line.
 */
typedef struct DeployMem
{
	char		target[NAMEDATALEN];
	int64		deploy_id;
	char		step[NAMEDATALEN];
	bool		wait_logged;
	char		job_status[NAMEDATALEN];
	/* when the running deploy wants its next step or poll (0: now) */
	TimestampTz due;
} DeployMem;

static List *deploy_mems = NIL;	/* of DeployMem, in TopMemoryContext */
/* the target being served now, and its scope */
static DeployMem *mem = NULL;
static DfeTargetScope *deploy_scope = NULL;
/* dfe_settings_generation when the due times were computed */
static uint64 mem_due_generation = 0;
/* the soonest any target wants the task again */
static long task_next_ms;

/*
 * With no deploy to run the task still looks at dfe_airbyte.deploys this
 * often: the commit of dfe_airbyte_deploy() sets the worker's latch, but a
 * deploy queued while no worker ran, or whose wake-up was consumed by
 * someone else, must not wait for the next deploy to be noticed.  One
 * index lookup a minute per target costs nothing measurable at idle.
 */
#define DEPLOY_IDLE_POLL_MS 60000L

typedef struct StepError
{
	char	   *message;		/* errmsg: errdetail, redacted */
	long		http_status;	/* <= 0: none */
	bool		transient;
} StepError;

/* this process's memory of a target's deploy (its first member names it) */
static DeployMem *
deploy_mem(const char *target)
{
	return dfe_target_state(&deploy_mems, target, sizeof(DeployMem));
}


typedef void (*StepFn) (void *arg);

/*
 * Run fn, turning an ERROR into a StepError (NULL when fn succeeded).  Any
 * transaction fn had open is rolled back.  FATAL (SIGTERM) is not caught:
 * it ends the worker and the deploy is resumed when it comes back.
 */
static StepError *
run_step(StepFn fn, void *arg)
{
	ErrorData  *edata;
	StepError  *e;
	long		status;

	dfe_airbyte_last_http_status = -1;
	if (dfe_catch(fn, arg, 0, dfe_deploy_cxt, &edata))
		return NULL;
	status = dfe_airbyte_last_http_status;
	/* the deploy goes on for its target: its events and rows name it */
	dfe_target_scope_resume(deploy_scope);
	{
		e = palloc0(sizeof(StepError));
		/* the detail carries the server's message; else the hint says what to do */
		e->message = dfe_http_redact(edata->detail
								 ? psprintf("%s: %s", edata->message, edata->detail)
								 : edata->hint
								 ? psprintf("%s. %s", edata->message, edata->hint)
								 : edata->message);
		e->http_status = status;
		e->transient = status >= 0 && dfe_airbyte_transient_status(status) &&
			(edata->sqlerrcode == ERRCODE_CONNECTION_FAILURE ||
			 edata->sqlerrcode == ERRCODE_EXTERNAL_ROUTINE_EXCEPTION);
		FreeErrorData(edata);
	}
	return e;
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
									   dfe_airbyte_format_duration(dfe_job_poll_interval_s),
									   dfe_airbyte_format_duration(dfe_deploy_retry_timeout_s));

		values[0] = Int64GetDatum(d->id);
		values[1] = CStringGetTextDatum(d->step);
		values[2] = CStringGetTextDatum(message);
		values[3] = Int32GetDatum((int32) e->http_status);
		nulls[3] = e->http_status > 0 ? ' ' : 'n';
		/* log the first passing error only, not every retry */
		if (first)
		{
			dfe_deploy_xact_begin();
			dfe_deploy_spi_exec("UPDATE dfe_airbyte.deploys SET retrying_since = clock_timestamp(), http_status = $4, "
					 "log = log || " DEPLOY_LOG_ENTRY " WHERE id = $1",
					 4, types, values, nulls, SPI_OK_UPDATE);
			dfe_deploy_xact_commit();
			dfe_deploy_server_log(d->id, d->step, message);
		}
		return (long) dfe_job_poll_interval_s * 1000L;
	}

	dfe_deploy_xact_begin();
	dfe_deploy_record_failure(d->id, d->step,
				   e->http_status,
				   e->transient
				   ? psprintf("%s (still failing after %s of retries)", e->message,
							  dfe_airbyte_format_duration(dfe_deploy_retry_timeout_s))
				   : e->message);
	dfe_deploy_xact_commit();
	return 0;
}

/* a call succeeded after passing errors: say so and clear retrying_since */
static void
step_recovered(DeployRow *d)
{
	if (d->retrying_since == 0)
		return;
	dfe_deploy_xact_begin();
	{
		Oid			types[3] = {INT8OID, TEXTOID, TEXTOID};
		Datum		values[3];

		values[0] = Int64GetDatum(d->id);
		values[1] = CStringGetTextDatum(d->step);
		values[2] = CStringGetTextDatum("Airbyte answers again");
		dfe_deploy_spi_exec("UPDATE dfe_airbyte.deploys SET retrying_since = NULL, http_status = NULL, "
				 "log = log || " DEPLOY_LOG_ENTRY " WHERE id = $1",
				 3, types, values, NULL, SPI_OK_UPDATE);
	}
	dfe_deploy_xact_commit();
	dfe_deploy_server_log(d->id, d->step, "Airbyte answers again");
	d->retrying_since = 0;
}

/* ---------------------------------------------------------------------- */
/* the steps                                                              */
/* ---------------------------------------------------------------------- */

/*
 * ActiveRecord's migration lock, read in the target's pg_locks (we never
 * take it, which would make a concurrent db:migrate fail).
 */
static long
step_waiting_for_migrations(DeployRow *d)
{
	int			holder;
	int64		key;
	bool		timed_out;

	dfe_deploy_xact_begin();
	holder = dfe_deploy_migration_lock_holder(dfe_target_scope_target(deploy_scope), &key);
	MemoryContextSwitchTo(dfe_deploy_cxt);
	if (holder == 0)
	{
		dfe_deploy_record_step(d->id, "refreshing_connection",
						   mem->wait_logged ? "the Rails migration has finished" : "no Rails migration is running", 0);
		dfe_deploy_xact_commit();
		return 0;
	}

	timed_out = TimestampDifferenceExceeds(d->step_started_at, GetCurrentTimestamp(),
										   dfe_migration_wait_timeout_s * 1000);
	if (timed_out)
		dfe_deploy_record_failure(d->id, d->step, 0,
							  psprintf("a Rails migration was still running after %s (process %d holds the migration advisory lock " INT64_FORMAT "); raise dfe_airbyte.migration_wait_timeout or deploy again when it has finished",
									   dfe_airbyte_format_duration(dfe_migration_wait_timeout_s),
									   holder, key));
	else if (!mem->wait_logged)
		dfe_deploy_record_log(d->id, d->step,
						  psprintf("waiting for the Rails migration in process %d to finish (it holds advisory lock " INT64_FORMAT ")",
								   holder, key));
	dfe_deploy_xact_commit();
	mem->wait_logged = true;
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

	dfe_deploy_xact_begin();
	a->config = dfe_stream_config_build();
	dfe_deploy_xact_commit();
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

	a->version = dfe_airbyte_server_version();
	(void) dfe_airbyte_refresh_connection(a->config);
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

	dfe_deploy_xact_begin();
	dfe_deploy_record_step(d->id, "starting_sync",
				psprintf("Airbyte %s: source schema rediscovered; connection updated with %d stream%s",
						 refresh.version ? refresh.version : "(version unknown)",
						 refresh.streams, refresh.streams == 1 ? "" : "s"), 0);
	dfe_deploy_xact_commit();
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
	if (dfe_airbyte_latest_active_job(&job))
	{
		a->job_id = job.job_id;
		a->status = job.status;
		a->job_type = job.job_type;
		a->reused = true;
		return;
	}
	a->job_id = dfe_airbyte_api_start_sync(&a->conflict);
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
	dfe_deploy_xact_begin();
	dfe_deploy_record_step(d->id, "waiting_for_sync", message, a.job_id);
	dfe_deploy_xact_commit();
	mem->job_status[0] = '\0';
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

	dfe_airbyte_get_job(a->job_id, &a->job);
}

/*
 * Record the end of a job that finished: success moves on to the policy
 * tags, any other final status fails the deploy.  Returns false while the
 * job still runs.
 */
static bool
record_sync_job_end(DeployRow *d, const AirbyteJob *job)
{
	if (strcmp(job->status, "succeeded") == 0)
	{
		dfe_deploy_xact_begin();
		dfe_deploy_record_step(d->id, "applying_policy_tags",
					psprintf("%s job " INT64_FORMAT " succeeded",
							 job->job_type ? job->job_type : "sync", d->job_id), 0);
		dfe_deploy_xact_commit();
		return true;
	}
	if (dfe_airbyte_job_finished(job->status))
	{
		dfe_deploy_xact_begin();
		dfe_deploy_record_failure(d->id, d->step, 0,
					   psprintf("Airbyte sync job " INT64_FORMAT " ended with status %s; see the job's logs in the Airbyte UI (connection %s)",
								d->job_id, job->status, dfe_setting_connection_id()));
		dfe_deploy_xact_commit();
		return true;
	}
	return false;
}

/*
 * Fail the deploy when the job has run past dfe_airbyte.job_timeout (job is
 * NULL when Airbyte did not answer the last poll, e its error).  Returns
 * whether it did.
 */
static bool
record_sync_job_timeout(DeployRow *d, const AirbyteJob *job, const StepError *e)
{
	const char *status;

	if (!TimestampDifferenceExceeds(d->step_started_at, GetCurrentTimestamp(),
									dfe_job_timeout_s * 1000))
		return false;
	status = job ? job->status : "unknown (Airbyte is not answering)";
	dfe_deploy_xact_begin();
	dfe_deploy_record_failure(d->id, d->step, e ? e->http_status : 0,
				   psprintf("Airbyte sync job " INT64_FORMAT " did not finish within %s (dfe_airbyte.job_timeout); its status is %s. The job goes on in Airbyte; deploy again to wait for it and apply the policy tags",
							d->job_id, dfe_airbyte_format_duration(dfe_job_timeout_s), status));
	dfe_deploy_xact_commit();
	return true;
}

static long
step_waiting_for_sync(DeployRow *d)
{
	PollArgs	a;
	StepError  *e;

	if (d->job_id <= 0)
	{
		/* cannot happen through the worker; a hand-edited row, perhaps */
		dfe_deploy_xact_begin();
		dfe_deploy_record_step(d->id, "starting_sync", "no job recorded: reading the last job again", 0);
		dfe_deploy_xact_commit();
		return 0;
	}

	memset(&a, 0, sizeof(a));
	a.job_id = d->job_id;
	e = run_step(poll_job, &a);
	if (e == NULL)
		step_recovered(d);
	else if (!e->transient)
		return step_failed(d, e);

	if (e == NULL && record_sync_job_end(d, &a.job))
		return 0;
	if (record_sync_job_timeout(d, e ? NULL : &a.job, e))
		return 0;
	if (e != NULL)
		return step_failed(d, e);

	if (strcmp(mem->job_status, a.job.status) != 0)
	{
		dfe_deploy_xact_begin();
		dfe_deploy_record_log(d->id, d->step, psprintf("job " INT64_FORMAT ": %s", d->job_id, a.job.status));
		dfe_deploy_xact_commit();
		strlcpy(mem->job_status, a.job.status, sizeof(mem->job_status));
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

	dfe_deploy_xact_begin();
	a->plan = dfe_policy_tag_plan_load();
	dfe_deploy_xact_commit();
}

static void
apply_plan(void *arg)
{
	TagArgs    *a = arg;

	a->results = dfe_policy_tag_plan_apply(a->plan, &a->failed);
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

	if (!dfe_bigquery_configured())
	{
		dfe_deploy_xact_begin();
		dfe_deploy_record_success(d->id, d->step, "skipped: BigQuery not configured");
		dfe_deploy_xact_commit();
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
				appendStringInfo(&msg, "; %s: %s", r->table_name, dfe_http_redact(r->detail));
		}
		dfe_deploy_xact_begin();
		dfe_deploy_record_failure(d->id, d->step, 0, msg.data);
		dfe_deploy_xact_commit();
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
	dfe_deploy_xact_begin();
	dfe_policy_tag_state_record(a.results);
	dfe_deploy_record_success(d->id, d->step, msg.data);
	dfe_deploy_xact_commit();
	return 0;
}


/* wait => true callers: one queued row for all requests so far */
static void
serve_wait_requests(void)
{
	uint64		seq;
	uint64		done;
	Oid			roleid;
	int64		id = -1;
	char	   *role;
	char		target[NAMEDATALEN];
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		values[2];
	bool		isnull;

	SpinLockAcquire(&dfe_shared->mutex);
	seq = dfe_shared->deploy_request_seq;
	done = dfe_shared->deploy_request_done;
	roleid = dfe_shared->deploy_requested_by;
	strlcpy(target, dfe_shared->deploy_request_target, sizeof(target));
	SpinLockRelease(&dfe_shared->mutex);
	if (seq <= done)
		return;

	dfe_deploy_xact_begin();
	role = OidIsValid(roleid) ? GetUserNameFromId(roleid, true) : NULL;
	values[0] = CStringGetTextDatum(role ? role : "unknown");
	values[1] = CStringGetTextDatum(target);
	/* no row (-1) when the target was dropped since the caller checked it */
	dfe_deploy_spi_exec("INSERT INTO dfe_airbyte.deploys (requested_by, target, log) SELECT $1::name, t.name, "
					"jsonb_build_array(jsonb_build_object('at', clock_timestamp(), 'step', NULL, "
					"'message', 'queued by dfe_airbyte_deploy(wait => true)')) "
					"FROM dfe_airbyte.targets t WHERE t.name = $2 RETURNING id",
					2, types, values, NULL, SPI_OK_INSERT_RETURNING);
	if (SPI_processed == 1)
		id = dfe_deploy_spi_int64(0, 1, &isnull);
	dfe_deploy_xact_commit();

	SpinLockAcquire(&dfe_shared->mutex);
	dfe_shared->deploy_request_done = seq;
	dfe_shared->deploy_request_id = id;
	SpinLockRelease(&dfe_shared->mutex);
}

/* advance deploy d by one step or poll; returns the ms until the next */
static long
run_deploy_step(DeployRow *d)
{
	if (strcmp(d->step, "waiting_for_migrations") == 0)
		return step_waiting_for_migrations(d);
	if (strcmp(d->step, "refreshing_connection") == 0)
		return step_refreshing_connection(d);
	if (strcmp(d->step, "starting_sync") == 0)
		return step_starting_sync(d);
	if (strcmp(d->step, "waiting_for_sync") == 0)
		return step_waiting_for_sync(d);
	if (strcmp(d->step, "applying_policy_tags") == 0)
		return step_applying_policy_tags(d);
	/* a step this version does not know (a newer version's row?) */
	dfe_deploy_xact_begin();
	dfe_deploy_record_failure(d->id, d->step, 0,
						  psprintf("unknown deploy step \"%s\"; deploy again", d->step));
	dfe_deploy_xact_commit();
	return 0;
}

/* read row 0 of a deploys query into *d */
static void
fill_row(DeployRow *d)
{
	bool		isnull;

	d->id = dfe_deploy_spi_int64(0, 1, &isnull);
	d->step = dfe_deploy_spi_text(0, 2, dfe_deploy_cxt);
	d->job_id = dfe_deploy_spi_int64(0, 3, &isnull);
	d->step_started_at = dfe_deploy_spi_timestamptz(0, 4);
	d->retrying_since = dfe_deploy_spi_timestamptz(0, 5);
	if (d->step == NULL)
		d->step = pstrdup("waiting_for_migrations");
	if (d->step_started_at == 0)
		d->step_started_at = GetCurrentTimestamp();
}

/*
 * Starts queued deploy id of target (a text Datum): the target's older
 * queued deploys coalesce into it.  In current_deploy()'s transaction.
 */
static void
start_queued(int64 id, Datum target, DeployRow *d)
{
	Oid			types[4] = {INT8OID, TEXTOID, TEXTOID, TEXTOID};
	Datum		values[4];
	char		nulls[4] = {' ', 'n', ' ', ' '};
	char	   *older;
	char	   *message;
	int			ret;

	values[0] = Int64GetDatum(id);
	values[1] = (Datum) 0;
	values[2] = CStringGetTextDatum(psprintf("coalesced into deploy " INT64_FORMAT, id));
	values[3] = target;
	dfe_deploy_spi_exec("WITH c AS (UPDATE dfe_airbyte.deploys SET state = 'coalesced', "
					"finished_at = clock_timestamp(), coalesced_into = $1, "
					"log = log || " DEPLOY_LOG_ENTRY " WHERE target = $4 AND state = 'queued' AND id < $1 RETURNING id) "
					"SELECT string_agg(id::text, ', ' ORDER BY id) FROM c",
					4, types, values, nulls, SPI_OK_SELECT);
	older = dfe_deploy_spi_text(0, 1, dfe_deploy_cxt);
	message = older ? psprintf("started; it also stands for the older queued deploy(s) %s", older)
		: pstrdup("started");
	values[2] = CStringGetTextDatum(message);
	dfe_deploy_spi_exec("UPDATE dfe_airbyte.deploys SET state = 'running', started_at = clock_timestamp(), "
					"step = 'waiting_for_migrations', step_started_at = clock_timestamp(), "
					"log = log || " DEPLOY_LOG_ENTRY " WHERE id = $1",
					3, types, values, nulls, SPI_OK_UPDATE);
	dfe_deploy_server_log(id, NULL, message);
	ret = SPI_execute_with_args("SELECT id, step, job_id, step_started_at, retrying_since "
								"FROM dfe_airbyte.deploys WHERE id = $1",
								1, types, values, NULL, false, 1);
	MemoryContextSwitchTo(dfe_deploy_cxt);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not read back deploy " INT64_FORMAT, id),
				 errhint("Check that the dfe_airbyte extension is installed correctly.")));
	fill_row(d);
}

/*
 * The running deploy, or else the newest queued one, started now (older
 * queued ones coalesce into it).  false when there is nothing to do.
 */
static bool
current_deploy(const char *target, DeployRow *d)
{
	int			ret;
	bool		isnull;
	bool		found = false;
	Oid			ttypes[1] = {TEXTOID};
	Datum		tvalues[1];

	tvalues[0] = CStringGetTextDatum(target);
	dfe_deploy_xact_begin();
	ret = SPI_execute_with_args("SELECT id, step, job_id, step_started_at, retrying_since "
								"FROM dfe_airbyte.deploys WHERE target = $1 AND state = 'running' "
								"ORDER BY id LIMIT 1",
								1, ttypes, tvalues, NULL, true, 1);
	MemoryContextSwitchTo(dfe_deploy_cxt);
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
		ret = SPI_execute_with_args("SELECT id FROM dfe_airbyte.deploys WHERE target = $1 "
									"AND state = 'queued' ORDER BY id DESC LIMIT 1 FOR UPDATE",
									1, ttypes, tvalues, NULL, false, 1);
		MemoryContextSwitchTo(dfe_deploy_cxt);
		if (ret != SPI_OK_SELECT)
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not read dfe_airbyte.deploys: %s", SPI_result_code_string(ret)),
					 errhint("Check that the dfe_airbyte extension is installed correctly.")));
		if (SPI_processed > 0)
		{
			start_queued(dfe_deploy_spi_int64(0, 1, &isnull), tvalues[0], d);
			found = true;
		}
	}
	dfe_deploy_xact_commit();
	return found;
}

/* one step or poll of the target's deploy, in its scope (dfe_for_each_target) */
static void
deploy_target_task(const char *target, void *arg)
{
	DeployRow	d;
	long		next_ms;
	TimestampTz began = GetCurrentTimestamp();
	TimestampTz now;

	deploy_scope = dfe_target_scope_current();
	mem = deploy_mem(target);
	if (mem->deploy_id != 0 && mem->due != 0)
	{
		long		left = TimestampDifferenceMilliseconds(began, mem->due);

		if (left > 0)
		{
			task_next_ms = Min(task_next_ms, left);
			return;
		}
	}

	memset(&d, 0, sizeof(d));
	if (!current_deploy(target, &d))
	{
		mem->deploy_id = 0;
		mem->due = 0;
		return;
	}

	if (d.id != mem->deploy_id || strcmp(d.step, mem->step) != 0)
	{
		mem->deploy_id = d.id;
		strlcpy(mem->step, d.step, sizeof(mem->step));
		mem->wait_logged = false;
		mem->job_status[0] = '\0';
	}
	pgstat_report_activity(STATE_RUNNING,
						   psprintf("dfe_airbyte deploy " INT64_FORMAT " (target %s): %s", d.id, target, d.step));
	next_ms = run_deploy_step(&d);
	pgstat_report_activity(STATE_IDLE, NULL);

	/*
	 * The next poll is due next_ms after this one began, so that polls keep
	 * their interval however long the bookkeeping of several targets takes;
	 * a slow step (HTTP retries) still leaves half the interval before the
	 * next.
	 */
	now = GetCurrentTimestamp();
	mem->due = 0;
	if (next_ms > 0)
	{
		mem->due = Max(TimestampTzPlusMilliseconds(began, next_ms),
					   TimestampTzPlusMilliseconds(now, next_ms / 2));
		next_ms = Max(TimestampDifferenceMilliseconds(now, mem->due), 1);
	}
	task_next_ms = Min(task_next_ms, next_ms);
}

/*
 * Every commit of dfe_airbyte_deploy() sets our latch.  While a deploy
 * waits (for a migration, for its sync), a wake-up must not make it poll
 * Airbyte early: the queued deploys of its target only matter once it ends,
 * and each target keeps its own due time.
 */
long
dfe_deploy_worker_task(void)
{
	ListCell   *lc;

	dfe_deploy_cxt = CurrentMemoryContext;
	serve_wait_requests();

	/* a reload: the due times came from the old settings (job_poll_interval) */
	if (mem_due_generation != dfe_settings_generation)
	{
		foreach(lc, deploy_mems)
			((DeployMem *) lfirst(lc))->due = 0;
		mem_due_generation = dfe_settings_generation;
	}

	task_next_ms = DEPLOY_IDLE_POLL_MS;
	dfe_for_each_target(deploy_target_task, NULL);
	deploy_scope = NULL;
	mem = NULL;
	return task_next_ms;
}
