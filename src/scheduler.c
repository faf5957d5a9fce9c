/*
 * scheduler.c — the loop of the guard and the network worker
 * (scheduler.h).
 *
 * Each worker connects to dfe_airbyte.database, pins its search_path to
 * pg_catalog, pg_temp (a function planted in public is never called by
 * the superuser worker: PostgreSQL's "Writing SECURITY DEFINER Functions
 * Safely"), publishes its pid and latch in shared
 * memory and sleeps on its latch between tasks.  SIGHUP reloads the
 * configuration; SIGTERM ends the worker (die(), so a blocking HTTP call is
 * cut short by its progress callback).  The workers only start once
 * recovery has finished: on a standby they do nothing at all, the only
 * harmless thing they could do there.
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
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "scheduler.h"
#include "settings.h"
#include "shared.h"
#include "spi_xact.h"
#include "version.h"

/* seconds before the postmaster starts a worker that exited non-zero again */
#define WORKER_RESTART_SECONDS 5
/* how long to wait before retrying a task that raised an ERROR */
#define TASK_ERROR_RETRY_MS 10000L
/* how often to look again for the extension when it is not installed */
#define NO_EXTENSION_RETRY_MS 10000L
/* look around at least this often, whatever the tasks said */
#define MAX_SLEEP_MS 60000L

static MemoryContext task_context = NULL;

uint64		dfe_settings_generation = 0;

void
dfe_register_worker(const char *name, const char *function)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = WORKER_RESTART_SECONDS;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "dfe_airbyte");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "%s", function);
	snprintf(worker.bgw_name, BGW_MAXLEN, "%s", name);
	snprintf(worker.bgw_type, BGW_MAXLEN, "%s", name);
	RegisterBackgroundWorker(&worker);
}

/*
 * Is the extension installed here, at the library's version?  Until
 * ALTER EXTENSION dfe_airbyte UPDATE has run after a new library was
 * installed, the workers' queries would meet the older SQL objects: they
 * wait instead, each with a WARNING naming both versions (once per
 * installed version).
 */
static bool
extension_installed(DfeWorkerKind kind)
{
	char	   *version;
	bool		ready;

	dfe_xact_begin("dfe_airbyte version check");
	version = dfe_installed_version();
	dfe_worker_note_version(version);
	ready = version != NULL && strcmp(version, DFE_AIRBYTE_VERSION) == 0;
	dfe_xact_end();
	return ready;
}

/*
 * Run fn, catching an ERROR so that a failure of one task (Airbyte down, a
 * bad setting) neither stops the others nor restarts the worker.  FATAL
 * (SIGTERM) is not caught: it ends the worker as it should.
 */
typedef struct GuardedCall
{
	long		(*fn) (void);
	long		next_ms;
} GuardedCall;

static void
call_task(void *arg)
{
	GuardedCall *call = arg;

	call->next_ms = call->fn();
}

static long
run_guarded(long (*fn) (void))
{
	GuardedCall call = {fn, TASK_ERROR_RETRY_MS};

	MemoryContextSwitchTo(task_context);
	if (!dfe_catch(call_task, &call, DFE_CATCH_LOG, TopMemoryContext, NULL))
		call.next_ms = TASK_ERROR_RETRY_MS;
	MemoryContextSwitchTo(TopMemoryContext);
	MemoryContextReset(task_context);
	return call.next_ms;
}

static void
run_task(DfeTask *task)
{
	long		next_ms;

	task->last_run = GetCurrentTimestamp();
	next_ms = run_guarded(task->run);

	task->due = next_ms < 0 ? DT_NOEND
		: TimestampTzPlusMilliseconds(GetCurrentTimestamp(), next_ms);
}

/*
 * Each task's due time was computed from the settings in force when it last
 * ran: a DBA who shortens an hourly interval during an incident must not
 * wait out the old hour.  A task that knows its period is moved to last run
 * + the new period when that is sooner (an unrelated reload costs no extra
 * Airbyte call); the others run at once, and what they return follows the
 * new settings.
 */
static void
reschedule_after_reload(const DfeWorkerDef *def)
{
	int			i;

	dfe_settings_generation++;
	for (i = 0; i < def->ntasks; i++)
	{
		DfeTask    *task = &def->tasks[i];
		TimestampTz sooner;

		if (task->interval_ms == NULL || task->last_run == 0)
		{
			task->due = 0;
			continue;
		}
		sooner = TimestampTzPlusMilliseconds(task->last_run, task->interval_ms());
		if (task->due == DT_NOEND || sooner < task->due)
			task->due = sooner;
	}
}

/* run the due tasks; returns how long to sleep */
static long
run_due_tasks(const DfeWorkerDef *def)
{
	long		sleep_ms = -1;
	TimestampTz now;
	int			i;

	for (i = 0; i < def->ntasks; i++)
	{
		CHECK_FOR_INTERRUPTS();
		if (def->tasks[i].due != DT_NOEND && def->tasks[i].due <= GetCurrentTimestamp())
			run_task(&def->tasks[i]);
	}
	now = GetCurrentTimestamp();
	for (i = 0; i < def->ntasks; i++)
	{
		long		ms;

		if (def->tasks[i].due == DT_NOEND)
			continue;
		ms = TimestampDifferenceMilliseconds(now, def->tasks[i].due);
		if (sleep_ms < 0 || ms < sleep_ms)
			sleep_ms = ms;
	}
	return sleep_ms;
}

static void
worker_setup(const DfeWorkerDef *def)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(dfe_database, NULL, 0);

	/* whatever postgresql.conf or ALTER ROLE say, and for good */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);

	/*
	 * The workers' queries are small polls whose estimates can still pass
	 * jit_above_cost: compiling them costs more than running them (0.1-0.3
	 * s of LLVM optimisation per poll) and loading LLVM adds tens of MB to
	 * the worker's memory (docs/benchmarks.md).  JIT stays the server's
	 * choice for every other session.
	 */
	SetConfigOption("jit", "off", PGC_SUSET, PGC_S_OVERRIDE);
	pgstat_report_appname(def->name);

	dfe_worker_attach(def->kind);
	task_context = AllocSetContextCreate(TopMemoryContext, "dfe_airbyte task",
										 ALLOCSET_DEFAULT_SIZES);
	ereport(LOG,
			(errmsg("%s started in database \"%s\"", def->name, dfe_database)));
}

void
dfe_worker_run(const DfeWorkerDef *def)
{
	bool		extension_seen = false;
	bool		warned_no_extension = false;

	worker_setup(def);
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

			reschedule_after_reload(def);
		}

		if (!extension_installed(def->kind))
		{
			if (!warned_no_extension && !dfe_version_mismatch_warned())
				ereport(LOG,
						(errmsg("%s is waiting for the extension to be installed in database \"%s\"",
								def->name, dfe_database),
						 errhint("Run CREATE EXTENSION dfe_airbyte in that database, or set dfe_airbyte.database to the database where it is installed.")));
			warned_no_extension = true;
			extension_seen = false;
			sleep_ms = NO_EXTENSION_RETRY_MS;
		}
		else
		{
			if (!extension_seen)
			{
				/* first sight of the extension: recover, then run everything */
				warned_no_extension = false;
				extension_seen = true;
				if (def->startup)
					(void) run_guarded(def->startup);
				for (i = 0; i < def->ntasks; i++)
					def->tasks[i].due = 0;
			}
			sleep_ms = run_due_tasks(def);
		}

		/*
		 * One round of the loop is over: say so in pg_stat_activity (query =
		 * the worker's name, state_change = now), whatever task ran last, so
		 * that a DBA, and a test, can see the worker going round.
		 */
		pgstat_report_activity(STATE_IDLE, def->name);

		if (sleep_ms < 0 || sleep_ms > MAX_SLEEP_MS)
			sleep_ms = MAX_SLEEP_MS;

		rc = WaitLatch(MyLatch,
					   WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					   sleep_ms, PG_WAIT_EXTENSION);
		if (rc & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			for (i = 0; i < def->ntasks; i++)
				if (def->tasks[i].on_wake)
					def->tasks[i].due = 0;
		}
	}
}
