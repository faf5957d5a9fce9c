/*
 * worker.c — the dfe_airbyte background worker.
 *
 * One worker per cluster, connected to dfe_airbyte.database.  It sleeps on
 * its latch and runs three tasks when they are due: deploys (woken by the
 * commit of a dfe_airbyte_deploy() call), the slot guard (every
 * check_interval) and sync health (every sync_poll_interval).  SIGHUP
 * reloads the configuration; SIGTERM ends the worker (die(), so a blocking
 * HTTP call is cut short by its progress callback).  An unexpected exit is
 * non-zero, so the postmaster starts the worker again after
 * WORKER_RESTART_SECONDS.
 *
 * The worker only starts once recovery has finished: on a standby it does
 * nothing at all, which is the only harmless thing it could do there.
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "settings.h"
#include "shared.h"
#include "version.h"
#include "worker.h"

#define WORKER_RESTART_SECONDS 5
/* how long to wait before retrying a task that raised an ERROR */
#define TASK_ERROR_RETRY_MS 10000L
/* how often to look again for the extension when it is not installed */
#define NO_EXTENSION_RETRY_MS 10000L

typedef struct WorkerTask
{
	const char *name;
	long		(*run) (void);
	TimestampTz due;			/* 0: due now; DT_NOEND: only on latch */
} WorkerTask;

static WorkerTask tasks[] = {
	{"deploy", deploy_worker_task, 0},
	{"slot guard", slots_worker_task, 0},
	{"full re-sync", resync_worker_task, 0},
	{"sync health", sync_health_worker_task, 0},
};

static MemoryContext task_context = NULL;

void
dfe_register_worker(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = WORKER_RESTART_SECONDS;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "dfe_airbyte");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "dfe_airbyte_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "dfe_airbyte worker");
	snprintf(worker.bgw_type, BGW_MAXLEN, "dfe_airbyte worker");
	RegisterBackgroundWorker(&worker);
}

static void
worker_detach_shmem(int code, Datum arg)
{
	SpinLockAcquire(&dfe_shared->mutex);
	if (dfe_shared->worker_pid == MyProcPid)
	{
		dfe_shared->worker_pid = 0;
		dfe_shared->worker_latch = NULL;
	}
	SpinLockRelease(&dfe_shared->mutex);
}

static bool
extension_installed(void)
{
	char	   *version;

	StartTransactionCommand();
	version = dfe_installed_version();
	/* an installed version other than the library's: a WARNING, once per version */
	dfe_worker_note_version(version);
	CommitTransactionCommand();
	return version != NULL;
}

/*
 * Run fn, catching an ERROR so that a failure of one task (Airbyte down, a
 * bad setting) neither stops the others nor restarts the worker.  FATAL
 * (SIGTERM) is not caught: it ends the worker as it should.
 */
static long
run_guarded(long (*fn) (void))
{
	long		next_ms;

	MemoryContextSwitchTo(task_context);
	PG_TRY();
	{
		next_ms = fn();
	}
	PG_CATCH();
	{
		HOLD_INTERRUPTS();
		MemoryContextSwitchTo(TopMemoryContext);
		EmitErrorReport();
		AbortOutOfAnyTransaction();
		FlushErrorState();
		RESUME_INTERRUPTS();
		next_ms = TASK_ERROR_RETRY_MS;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(TopMemoryContext);
	MemoryContextReset(task_context);
	return next_ms;
}

static void
run_task(WorkerTask *task)
{
	long		next_ms = run_guarded(task->run);

	task->due = next_ms < 0 ? DT_NOEND
		: TimestampTzPlusMilliseconds(GetCurrentTimestamp(), next_ms);
}

static long
startup_recovery(void)
{
	deploy_worker_startup();
	return 0;
}

void
dfe_airbyte_worker_main(Datum main_arg)
{
	bool		extension_seen = false;
	bool		warned_no_extension = false;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(dfe_database, NULL, 0);
	/*
	 * search_path safety (SPEC §9): the worker is a superuser; a function the
	 * database owner plants in public (public.format(text, name), ...) must
	 * never resolve in its queries.  PGC_S_OVERRIDE: no SET can change it.
	 */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
	pgstat_report_appname("dfe_airbyte worker");

	SpinLockAcquire(&dfe_shared->mutex);
	dfe_shared->worker_pid = MyProcPid;
	dfe_shared->worker_latch = MyLatch;
	dfe_shared->worker_started_at = GetCurrentTimestamp();
	SpinLockRelease(&dfe_shared->mutex);
	before_shmem_exit(worker_detach_shmem, (Datum) 0);

	task_context = AllocSetContextCreate(TopMemoryContext, "dfe_airbyte task",
										 ALLOCSET_DEFAULT_SIZES);

	ereport(LOG,
			(errmsg("dfe_airbyte worker started in database \"%s\"", dfe_database)));

	for (;;)
	{
		long		sleep_ms = -1;
		int			rc;
		int			i;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		if (!extension_installed())
		{
			if (!warned_no_extension)
				ereport(LOG,
						(errmsg("dfe_airbyte worker is waiting for the extension to be installed in database \"%s\"",
								dfe_database),
						 errhint("Run CREATE EXTENSION dfe_airbyte in that database, or set dfe_airbyte.database to the database where it is installed.")));
			warned_no_extension = true;
			extension_seen = false;
			sleep_ms = NO_EXTENSION_RETRY_MS;
		}
		else
		{
			TimestampTz now;

			if (!extension_seen)
			{
				/* first sight of the extension: recover, then run everything */
				warned_no_extension = false;
				extension_seen = true;
				(void) run_guarded(startup_recovery);
				for (i = 0; i < lengthof(tasks); i++)
					tasks[i].due = 0;
			}

			for (i = 0; i < lengthof(tasks); i++)
			{
				CHECK_FOR_INTERRUPTS();
				if (tasks[i].due != DT_NOEND && tasks[i].due <= GetCurrentTimestamp())
					run_task(&tasks[i]);
			}

			now = GetCurrentTimestamp();
			for (i = 0; i < lengthof(tasks); i++)
			{
				long		ms;

				if (tasks[i].due == DT_NOEND)
					continue;
				ms = TimestampDifferenceMilliseconds(now, tasks[i].due);
				if (sleep_ms < 0 || ms < sleep_ms)
					sleep_ms = ms;
			}
		}

		/* look around at least once a minute, whatever the tasks said */
		if (sleep_ms < 0 || sleep_ms > 60000L)
			sleep_ms = 60000L;

		rc = WaitLatch(MyLatch,
					   WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					   sleep_ms, PG_WAIT_EXTENSION);
		if (rc & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			/* a commit of dfe_airbyte_deploy() or a wait request: deploys now */
			tasks[0].due = 0;
		}
	}
}
