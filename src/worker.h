/*
 * worker.h — the dfe_airbyte background worker and the tasks it schedules.
 *
 * A task runs in the worker outside any transaction: it starts and commits
 * its own short transactions and never holds one across an HTTP call.  It
 * returns how many milliseconds until it wants to run again (-1: only when
 * the latch is set).  An ERROR escaping a task is logged and the worker
 * goes on; the task is retried after check_interval.
 */
#ifndef DFE_AIRBYTE_WORKER_H
#define DFE_AIRBYTE_WORKER_H

#include "postgres.h"

extern void dfe_register_worker(void);
extern PGDLLEXPORT void dfe_airbyte_worker_main(Datum main_arg);

/* deploy.c: queued deploys, wait=>true requests, the deploy state machine */
extern long deploy_worker_task(void);

/* deploy.c: run once at worker start, before any task (crash recovery) */
extern void deploy_worker_startup(void);

/* slots.c: slot sampling, limit actions, history retention */
extern long slots_worker_task(void);

/* resync.c: asks Airbyte for the full re-sync a slot recreation recorded */
extern long resync_worker_task(void);

/* sync_health.c: last sync job polling, staleness, policy tag drift repair */
extern long sync_health_worker_task(void);

#endif
