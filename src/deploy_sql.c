/*
 * deploy_sql.c — dfe_airbyte_deploy(wait, target).
 *
 * Without wait it only inserts a queued row for the target and asks for the
 * worker to be woken when the calling transaction commits: a Rails
 * migration calling it is never blocked and a rolled-back migration leaves
 * nothing behind.  With wait => true (a release job:
 * psql -c "SELECT dfe_airbyte_deploy(true, 'svc')") the caller cannot insert
 * the row itself (its transaction commits only after it returns), so it
 * asks the worker through shared memory (shared.h) and then follows the
 * row, printing its log as NOTICEs.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "compat.h"
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
#include "deploy_int.h"
#include "target_scope.h"
#include "version.h"

/* how often dfe_airbyte_deploy(wait => true) reads the deploy row */
#define WAIT_POLL_MS 250L

/* what follow_deploy reads of a deploy row on each poll */
typedef struct FollowedDeploy
{
	char	   *state;
	char	   *step;
	char	   *error;
	int64		into;
	int64		status;
} FollowedDeploy;


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
queue_deploy(const char *target)
{
	int64		id;
	bool		isnull;
	int			ret;
	Oid			types[1] = {TEXTOID};
	Datum		values[1];

	values[0] = CStringGetTextDatum(target);
	SPI_connect();
	ret = SPI_execute_with_args("INSERT INTO dfe_airbyte.deploys (requested_by, target) "
								"VALUES (current_user, $1) RETURNING id",
								1, types, values, NULL, false, 1);
	if (ret != SPI_OK_INSERT_RETURNING)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not queue the deploy: %s", SPI_result_code_string(ret)),
				 errhint("Check that the dfe_airbyte extension is installed correctly.")));
	id = dfe_deploy_spi_int64(0, 1, &isnull);
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
request_deploy(const char *target)
{
	uint64		my_seq = 0;
	int64		id = 0;
	bool		said_absent = false;

	/* one pending request at a time: each names its own target */
	for (;;)
	{
		SpinLockAcquire(&dfe_shared->mutex);
		if (dfe_shared->deploy_request_done == dfe_shared->deploy_request_seq)
		{
			my_seq = ++dfe_shared->deploy_request_seq;
			dfe_shared->deploy_requested_by = GetUserId();
			strlcpy(dfe_shared->deploy_request_target, target, NAMEDATALEN);
		}
		SpinLockRelease(&dfe_shared->mutex);
		if (my_seq != 0)
			break;
		wait_sleep(100);
	}
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

/* print deploy id's log lines after the first *printed as NOTICEs */
static void
print_new_log_lines(int64 id, int *printed)
{
	Oid			types[2] = {INT8OID, INT4OID};
	Datum		values[2];
	int			ret;
	uint64		i;

	values[0] = Int64GetDatum(id);
	values[1] = Int32GetDatum(*printed);
	ret = SPI_execute_with_args("SELECT coalesce(e->>'step', ''), e->>'message' "
								"FROM dfe_airbyte.deploys, "
								"jsonb_array_elements(log) WITH ORDINALITY AS l(e, i) "
								"WHERE id = $1 AND i > $2 ORDER BY i",
								2, types, values, NULL, false, 0);
	if (ret != SPI_OK_SELECT)
		return;
	for (i = 0; i < SPI_processed; i++)
	{
		char	   *s = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		char	   *m = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);

		ereport(NOTICE,
				(errmsg("deploy " INT64_FORMAT ": %s%s%s", id, s, s[0] ? ": " : "",
						m ? m : "")));
	}
	*printed += SPI_processed;
}

/*
 * Read deploy id's row into *row (strings in cxt) and print the log lines
 * not shown yet, read after the state so that none is missed.
 */
static void
read_followed_deploy(int64 id, int *printed, MemoryContext cxt, FollowedDeploy *row)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1];
	int			ret;
	bool		isnull;

	SPI_connect();
	values[0] = Int64GetDatum(id);
	/* read committed: every execution sees the worker's latest commit */
	ret = SPI_execute_with_args("SELECT state, step, error, coalesced_into, http_status::bigint "
								"FROM dfe_airbyte.deploys WHERE id = $1",
								1, types, values, NULL, false, 1);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("deploy " INT64_FORMAT " disappeared from dfe_airbyte.deploys", id),
				 errhint("Someone deleted it; look at dfe_airbyte.deploys and deploy again.")));
	row->state = dfe_deploy_spi_text(0, 1, cxt);
	row->step = dfe_deploy_spi_text(0, 2, cxt);
	row->error = dfe_deploy_spi_text(0, 3, cxt);
	row->into = dfe_deploy_spi_int64(0, 4, &isnull);
	row->status = dfe_deploy_spi_int64(0, 5, &isnull);
	print_new_log_lines(id, printed);
	SPI_finish();
}

/* raise the error of a failed deploy, with its HTTP status when it has one */
pg_noreturn static void
followed_deploy_failed(int64 id, const FollowedDeploy *row)
{
	char	   *errstep = pstrdup(row->step ? row->step : "?");
	char	   *reason = pstrdup(row->error ? row->error : "no reason recorded");

	if (row->status > 0)
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("deploy " INT64_FORMAT " failed at step %s (HTTP " INT64_FORMAT ")",
						id, errstep, row->status),
				 errdetail("%s", reason),
				 errhint("See SELECT log FROM dfe_airbyte.deploys WHERE id = " INT64_FORMAT "; fix the cause and deploy again.", id)));
	ereport(ERROR,
			(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
			 errmsg("deploy " INT64_FORMAT " failed at step %s", id, errstep),
			 errdetail("%s", reason),
			 errhint("See SELECT log FROM dfe_airbyte.deploys WHERE id = " INT64_FORMAT "; fix the cause and deploy again.", id)));
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
		FollowedDeploy row;

		MemoryContextReset(loop_cxt);
		MemoryContextSwitchTo(loop_cxt);
		read_followed_deploy(id, &printed, loop_cxt, &row);
		MemoryContextSwitchTo(fcxt);

		if (strcmp(row.state, "succeeded") == 0)
			break;
		if (strcmp(row.state, "failed") == 0)
			followed_deploy_failed(id, &row);
		if (strcmp(row.state, "coalesced") == 0 && row.into > 0)
		{
			ereport(NOTICE,
					(errmsg("deploy " INT64_FORMAT " was coalesced into deploy " INT64_FORMAT ", which runs in its place",
							id, row.into)));
			id = row.into;
			printed = 0;
			continue;
		}
		wait_sleep(WAIT_POLL_MS);
	}
	MemoryContextDelete(loop_cxt);
	return id;
}

PG_FUNCTION_INFO_V1(dfe_airbyte_deploy);

/*
 * dfe_airbyte_deploy(wait boolean DEFAULT false, target text DEFAULT 'local')
 * → bigint.  The scope checks that the target exists and is enabled.
 */
Datum
dfe_airbyte_deploy(PG_FUNCTION_ARGS)
{
	bool		wait = PG_GETARG_BOOL(0);
	char	   *target = PG_NARGS() > 1 ? text_to_cstring(PG_GETARG_TEXT_PP(1)) : pstrdup(DFE_LOCAL_TARGET);
	DfeTargetScope *scope;
	int64		id;

	DFE_REQUIRE_MATCHING_SQL();
	scope = dfe_target_scope_enter(target);
	if (!wait)
	{
		id = queue_deploy(target);
		dfe_target_scope_leave(scope);
		PG_RETURN_INT64(id);
	}

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
	if (strcmp(target, DFE_LOCAL_TARGET) == 0)
	{
		int64		key;

		if (dfe_deploy_migration_lock_holder(dfe_target_scope_target(scope), &key) == MyProcPid)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("this session holds the Rails migration lock, so the deploy would wait for itself"),
					 errdetail("Advisory lock " INT64_FORMAT " is held by this session (process %d).",
							   key, MyProcPid),
					 errhint("In a migration use SELECT dfe_airbyte_deploy() without wait; it runs after the migrations.")));
	}
	/* the worker applies the target's settings itself; waiting needs none of them */
	dfe_target_scope_leave(scope);

	id = request_deploy(target);
	if (id <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("dfe_airbyte target \"%s\" was dropped before its deploy was queued", target),
				 errhint("SELECT name FROM dfe_airbyte.targets lists the targets; add it again with dfe_airbyte_add_target().")));
	ereport(NOTICE,
			(errmsg("deploy " INT64_FORMAT " queued; waiting for it (cancel with Ctrl-C: the deploy goes on in the worker)", id)));
	PG_RETURN_INT64(follow_deploy(id));
}

