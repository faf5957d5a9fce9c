/*
 * deploy.c — dfe_airbyte_deploy() and the worker's deploy state machine
 * (SPEC §6).  Placeholder until the deploy issue lands.
 */
#include "postgres.h"

#include "worker.h"

void
deploy_worker_startup(void)
{
}

long
deploy_worker_task(void)
{
	return -1;
}
