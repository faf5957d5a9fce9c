/*
 * guard_worker.h — the slot guard's own background worker (guard_worker.c).
 */
#ifndef DFE_AIRBYTE_GUARD_WORKER_H
#define DFE_AIRBYTE_GUARD_WORKER_H

#include "postgres.h"

#include "compat.h"

extern void dfe_register_guard_worker(void);
extern PGDLLEXPORT void dfe_airbyte_guard_main(Datum main_arg);

#endif
