/*
 * scheduler.h — the loop both background workers run (scheduler.c).
 *
 * A worker is a list of tasks.  A task runs outside any transaction: it
 * starts and commits its own short transactions (spi_xact.h) and returns how
 * many milliseconds until it wants to run again (-1: only when the latch is
 * set).  An ERROR escaping a task is logged and the worker goes on (the task
 * is retried after TASK_ERROR_RETRY_MS); FATAL (SIGTERM) ends the worker with
 * a non-zero exit, so the postmaster starts it again on its own.
 */
#ifndef DFE_AIRBYTE_SCHEDULER_H
#define DFE_AIRBYTE_SCHEDULER_H

#include "postgres.h"

#include "datatype/timestamp.h"

#include "shared.h"
#include "compat.h"

typedef struct DfeTask
{
	const char *name;
	long		(*run) (void);
	bool		on_wake;		/* due at once whenever the latch is set */
	TimestampTz due;			/* 0: due now; DT_NOEND: only on latch */

	/*
	 * Optional: the task's regular period under the current settings.  After
	 * a reload its next run is moved to last_run + that period when this is
	 * earlier; a task without one runs at once after a reload.
	 */
	long		(*interval_ms) (void);
	TimestampTz last_run;
} DfeTask;

typedef struct DfeWorkerDef
{
	DfeWorkerKind kind;
	const char *name;			/* process title and backend_type */
	DfeTask    *tasks;
	int			ntasks;
	long		(*startup) (void);	/* once per sight of the extension, or NULL */
} DfeWorkerDef;

/*
 * Incremented by the worker loop at each configuration reload, so that a
 * task that remembers a due time of its own (deploy.c) can drop it.
 */
extern uint64 dfe_settings_generation;

/* register a worker whose entry point is function (in this library) */
extern void dfe_register_worker(const char *name, const char *function);

/* connect to dfe_airbyte.database, publish the worker, run its tasks forever */
pg_noreturn extern void dfe_worker_run(const DfeWorkerDef *def);

#endif
