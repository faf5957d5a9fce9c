/*
 * guard_worker.c — the slot guard's background worker.
 *
 * It runs one task, the slot guard (slots.c), every
 * dfe_airbyte.check_interval, and nothing that talks to the network: no
 * Airbyte or Google call, no token fetch, no DNS lookup (http.c refuses
 * every request in this process, and libcurl is never even initialised
 * here).  So whatever Airbyte does — hang, refuse, fail to resolve — the
 * guard samples and acts on time.  The full re-sync a recreation needs is
 * handed over to the network worker through dfe_airbyte.slot_recreations,
 * and the guard sets that worker's latch once the recreation is committed.
 */
#include "postgres.h"

#include "fmgr.h"

#include "guard_worker.h"
#include "scheduler.h"
#include "shared.h"
#include "worker.h"

#define GUARD_WORKER_NAME "dfe_airbyte guard"

static DfeTask guard_tasks[] = {
	{"slot guard", dfe_slots_worker_task, true, 0},
};

static const DfeWorkerDef guard_def = {
	DFE_GUARD_WORKER, GUARD_WORKER_NAME, guard_tasks, lengthof(guard_tasks), NULL
};

void
dfe_register_guard_worker(void)
{
	dfe_register_worker(GUARD_WORKER_NAME, "dfe_airbyte_guard_main");
}

void
dfe_airbyte_guard_main(Datum main_arg)
{
	dfe_process_is_guard = true;
	dfe_worker_run(&guard_def);
}
