/*
 * net_worker.c — the background worker that talks to Airbyte and Google.
 *
 * Its tasks: deploys (deploy.c; woken by the commit of a
 * dfe_airbyte_deploy() call), the full re-sync a slot recreation handed
 * over through dfe_airbyte.slot_recreations (resync.c; woken by the guard
 * when it records one), following that re-sync's job so the guard knows
 * when it has finished (resync_follow.c), and sync health with policy tag
 * drift repair (sync_health.c).  An HTTP call that hangs delays only these
 * tasks: the slot guard runs in a process of its own (guard_worker.c).
 *
 * While the database is a restore from another server that no DBA has
 * confirmed yet (restore.c), nothing is asked of Airbyte on the guard's
 * behalf: the re-sync tasks wait.
 */
#include "postgres.h"

#include "fmgr.h"

#include "net_worker.h"
#include "restore.h"
#include "scheduler.h"
#include "settings.h"
#include "shared.h"
#include "target.h"
#include "worker.h"

#define NET_WORKER_NAME "dfe_airbyte network worker"

static long
resync_task(void)
{
	if (dfe_restore_unconfirmed())
		return dfe_check_interval_s * 1000L;
	return dfe_resync_worker_task();
}

static long
resync_follow_task(void)
{
	if (dfe_restore_unconfirmed())
		return dfe_check_interval_s * 1000L;
	return dfe_resync_follow_worker_task();
}

/* a restored backup's tables are not Airbyte's until confirmed */
static long
reconcile_task(void)
{
	if (dfe_restore_unconfirmed())
		return dfe_check_interval_s * 1000L;
	return dfe_reconcile_worker_task();
}

static long
startup_recovery(void)
{
	dfe_deploy_worker_startup();
	return 0;
}

/* the tasks' regular periods (scheduler.h: how a reload reschedules them) */
static long
job_poll_ms(void)
{
	return dfe_job_poll_interval_s * 1000L;
}

static long
check_ms(void)
{
	return dfe_check_interval_s * 1000L;
}

static long
follow_ms(void)
{
	return Min(dfe_sync_poll_interval_s, dfe_check_interval_s) * 1000L;
}

static long
sync_poll_ms(void)
{
	return dfe_sync_poll_interval_s * 1000L;
}

static long
migration_poll_ms(void)
{
	return dfe_migration_poll_interval_s * 1000L;
}

static DfeTask net_tasks[] = {
	{"deploy", dfe_deploy_worker_task, true, 0, job_poll_ms, 0},
	{"migration watch", dfe_migration_watch_task, false, 0, migration_poll_ms, 0},
	{"full re-sync", resync_task, true, 0, check_ms, 0},
	{"full re-sync follow-up", resync_follow_task, false, 0, follow_ms, 0},
	{"sync health", dfe_sync_health_worker_task, false, 0, sync_poll_ms, 0},
	{"reconcile", reconcile_task, false, 0, check_ms, 0},
};

static const DfeWorkerDef net_def = {
	DFE_NET_WORKER, NET_WORKER_NAME, net_tasks, lengthof(net_tasks), startup_recovery
};

void
dfe_register_net_worker(void)
{
	dfe_register_worker(NET_WORKER_NAME, "dfe_airbyte_worker_main");
}

void
dfe_airbyte_worker_main(Datum main_arg)
{
	/* one session per target for all the tasks, not one per task (target.h) */
	dfe_target_keep_connections(true);
	dfe_worker_run(&net_def);
}
