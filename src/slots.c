/*
 * slots.c — slot sampling, limit actions and history retention (SPEC §7).
 * Placeholder until the slot guard issue lands.
 */
#include "postgres.h"

#include "worker.h"

long
slots_worker_task(void)
{
	return -1;
}
