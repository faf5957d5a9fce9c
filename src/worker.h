/*
 * worker.h — the tasks the two background workers schedule
 * (scheduler.h): the guard worker runs dfe_slots_worker_task only
 * (guard_worker.c); the network worker runs the rest (net_worker.c).
 *
 * A task runs outside any transaction: it starts and commits its own short
 * transactions and never holds one across an HTTP call.  It returns how
 * many milliseconds until it wants to run again (-1: only when the latch is
 * set).
 */
#ifndef DFE_AIRBYTE_WORKER_H
#define DFE_AIRBYTE_WORKER_H

#include "postgres.h"

/* deploy.c: queued deploys, wait=>true requests, the deploy state machine */
extern long dfe_deploy_worker_task(void);

/* deploy_record.c: run once at worker start, before any task (crash recovery) */
extern void dfe_deploy_worker_startup(void);

/* deploy_migration.c: a deploy when a remote target's schema_migrations gains a version */
extern long dfe_migration_watch_task(void);

/* slots.c (guard worker): slot sampling, limit actions, history retention */
extern long dfe_slots_worker_task(void);

/* resync.c: asks Airbyte for the full re-sync a slot recreation recorded */
extern long dfe_resync_worker_task(void);

/* resync_follow.c: records the state of the re-sync jobs the guard waits for */
extern long dfe_resync_follow_worker_task(void);

/* sync_health.c: last sync job polling, staleness, policy tag drift repair */
extern long dfe_sync_health_worker_task(void);

/* reconcile.c: one table's reconciliation after successful syncs */
extern long dfe_reconcile_worker_task(void);

#endif
