/*
 * net_worker.h — the background worker that talks to Airbyte and Google
 * (net_worker.c).
 */
#ifndef DFE_AIRBYTE_NET_WORKER_H
#define DFE_AIRBYTE_NET_WORKER_H

#include "postgres.h"

#include "compat.h"

extern void dfe_register_net_worker(void);
extern PGDLLEXPORT void dfe_airbyte_worker_main(Datum main_arg);

#endif
