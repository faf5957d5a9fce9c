/*
 * sync_health.c — the last sync job, staleness and policy tag drift repair.
 * Placeholder until the sync health issue lands.
 */
#include "postgres.h"

#include "worker.h"

long
sync_health_worker_task(void)
{
	return -1;
}
