/*
 * shmem.c — the shared memory of dfe_airbyte (shared.h): its hooks, the two
 * workers' slots (pid, latch, start time), the database they serve, the
 * commit-time wake-up of the network worker, and the SQL functions that
 * read it (dfe_airbyte_worker_pid(), dfe_airbyte_workers()).
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "commands/dbcommands.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "shared.h"

DfeShared  *dfe_shared = NULL;
bool		dfe_process_is_guard = false;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static int	wake_at_commit = 0;		/* bit per DfeWorkerKind */

static const char *const worker_names[DFE_NUM_WORKERS] = {
	[DFE_GUARD_WORKER] = "guard",
	[DFE_NET_WORKER] = "network"
};

static void
dfe_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(DfeShared)));
}

static void
dfe_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	dfe_shared = ShmemInitStruct("dfe_airbyte", sizeof(DfeShared), &found);
	if (!found)
	{
		memset(dfe_shared, 0, sizeof(DfeShared));
		SpinLockInit(&dfe_shared->mutex);
		dfe_shared->database_oid = InvalidOid;
	}
	LWLockRelease(AddinShmemInitLock);
}

static void
dfe_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			for (int i = 0; i < DFE_NUM_WORKERS; i++)
				if (wake_at_commit & (1 << i))
					dfe_wake((DfeWorkerKind) i);
			wake_at_commit = 0;
			break;
		case XACT_EVENT_PRE_PREPARE:

			/*
			 * COMMIT PREPARED may run much later, in another session, and
			 * fires no callback that knows a deploy was queued: the worker
			 * would only find the deploy at its next idle look.  Refuse
			 * instead, before the point of no return, as postgres_fdw does
			 * for its own state (pgfdw_xact_callback).
			 */
			if (wake_at_commit & (1 << DFE_NET_WORKER))
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot prepare a transaction that queued a dfe_airbyte deploy"),
						 errdetail("dfe_airbyte_deploy() wakes the background worker when its transaction commits; a prepared transaction commits later, in COMMIT PREPARED."),
						 errhint("Call dfe_airbyte_deploy() in a transaction that ends with COMMIT, e.g. after COMMIT PREPARED.")));
			break;
		case XACT_EVENT_PREPARE:
			/* the guard looks at its work every check_interval anyway */
			wake_at_commit = 0;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			wake_at_commit = 0;
			break;
		default:
			break;
	}
}

void
dfe_shmem_init(void)
{
	RegisterXactCallback(dfe_xact_callback, NULL);

	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = dfe_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = dfe_shmem_startup;
}

static void
worker_detach(int code, Datum arg)
{
	DfeWorkerKind kind = (DfeWorkerKind) DatumGetInt32(arg);

	SpinLockAcquire(&dfe_shared->mutex);
	if (dfe_shared->workers[kind].pid == MyProcPid)
	{
		dfe_shared->workers[kind].pid = 0;
		dfe_shared->workers[kind].latch = NULL;
	}
	SpinLockRelease(&dfe_shared->mutex);
}

void
dfe_worker_attach(DfeWorkerKind kind)
{
	SpinLockAcquire(&dfe_shared->mutex);
	dfe_shared->workers[kind].pid = MyProcPid;
	dfe_shared->workers[kind].latch = MyLatch;
	dfe_shared->workers[kind].started_at = GetCurrentTimestamp();
	dfe_shared->database_oid = MyDatabaseId;
	SpinLockRelease(&dfe_shared->mutex);
	before_shmem_exit(worker_detach, Int32GetDatum((int32) kind));
}

pid_t
dfe_worker_pid_of(DfeWorkerKind kind)
{
	pid_t		pid;

	if (dfe_shared == NULL)
		return 0;
	SpinLockAcquire(&dfe_shared->mutex);
	pid = dfe_shared->workers[kind].pid;
	SpinLockRelease(&dfe_shared->mutex);
	return pid;
}

bool
dfe_worker_running(void)
{
	return dfe_worker_pid_of(DFE_NET_WORKER) != 0;
}

Oid
dfe_served_database(void)
{
	Oid			oid;

	if (dfe_shared == NULL)
		return InvalidOid;
	SpinLockAcquire(&dfe_shared->mutex);
	oid = dfe_shared->database_oid;
	SpinLockRelease(&dfe_shared->mutex);
	return oid;
}

void
dfe_wake(DfeWorkerKind kind)
{
	Latch	   *latch = NULL;

	if (dfe_shared == NULL)
		return;
	SpinLockAcquire(&dfe_shared->mutex);
	if (dfe_shared->workers[kind].pid != 0)
		latch = dfe_shared->workers[kind].latch;
	SpinLockRelease(&dfe_shared->mutex);
	if (latch)
		SetLatch(latch);
}

void
dfe_wake_worker(void)
{
	dfe_wake(DFE_NET_WORKER);
}

void
dfe_wake_at_commit(DfeWorkerKind kind)
{
	wake_at_commit |= 1 << kind;
}

void
dfe_wake_worker_at_commit(void)
{
	dfe_wake_at_commit(DFE_NET_WORKER);
}

/* longest wait between two looks at interrupts in dfe_sleep_ms */
#define SLEEP_SLICE_MS 200L

void
dfe_sleep_ms(long ms)
{
	TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ms);
	bool		woken = false;

	for (;;)
	{
		long		left;
		int			rc;

		CHECK_FOR_INTERRUPTS();
		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), until);
		if (left <= 0)
			break;
		rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					   Min(left, SLEEP_SLICE_MS), PG_WAIT_EXTENSION);
		if (rc & WL_LATCH_SET)
		{
			/* reset, or WaitLatch would return at once until the end */
			ResetLatch(MyLatch);
			woken = true;
		}
	}

	/*
	 * Hand the wake-up on (latch.h: setting an already set latch is cheap
	 * and harmless): the worker loop resets the latch only after it has
	 * woken, so a deploy committed while a task slept here runs as soon as
	 * that task ends, instead of waiting for the next commit to set it.
	 */
	if (woken)
		SetLatch(MyLatch);
}

PG_FUNCTION_INFO_V1(dfe_airbyte_worker_pid);

/*
 * dfe_airbyte_worker_pid() → the network worker's pid (the one that runs
 * deploys, as in 0.1.0), NULL when it does not run.  The guard's pid is in
 * dfe_airbyte.workers.
 */
Datum
dfe_airbyte_worker_pid(PG_FUNCTION_ARGS)
{
	pid_t		pid = dfe_worker_pid_of(DFE_NET_WORKER);

	if (pid == 0)
		PG_RETURN_NULL();
	PG_RETURN_INT32(pid);
}

PG_FUNCTION_INFO_V1(dfe_airbyte_workers);

/*
 * dfe_airbyte_workers() → one row per worker: (worker, pid, started_at,
 * database), pid and started_at NULL when it does not run.
 */
Datum
dfe_airbyte_workers(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	DfeWorkerSlot copy[DFE_NUM_WORKERS];
	Oid			dboid = InvalidOid;
	char	   *dbname = NULL;
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	memset(copy, 0, sizeof(copy));
	if (dfe_shared != NULL)
	{
		SpinLockAcquire(&dfe_shared->mutex);
		memcpy(copy, dfe_shared->workers, sizeof(copy));
		dboid = dfe_shared->database_oid;
		SpinLockRelease(&dfe_shared->mutex);
	}
	if (OidIsValid(dboid))
		dbname = get_database_name(dboid);

	for (i = 0; i < DFE_NUM_WORKERS; i++)
	{
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};

		values[0] = CStringGetTextDatum(worker_names[i]);
		if (copy[i].pid != 0)
		{
			values[1] = Int32GetDatum(copy[i].pid);
			values[2] = TimestampTzGetDatum(copy[i].started_at);
		}
		else
			nulls[1] = nulls[2] = true;
		if (dbname)
			values[3] = DirectFunctionCall1(namein, CStringGetDatum(dbname));
		else
			nulls[3] = true;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
