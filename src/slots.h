/*
 * slots.h — the slot guard: samples the logical replication slots
 * of this database every dfe_airbyte.check_interval into
 * dfe_airbyte.slot_samples, keeps the history bounded, and acts on the
 * Airbyte slot (dfe_airbyte.slot_name, the only slot it ever touches) per
 * dfe_airbyte.slot_limit_action.  The worker entry point,
 * dfe_slots_worker_task(), is declared in worker.h.
 */
#ifndef DFE_AIRBYTE_SLOTS_H
#define DFE_AIRBYTE_SLOTS_H

#include "postgres.h"

/* while the Airbyte slot stays over its limit (or lost/missing), remind this often */
#define SLOT_RENOTIFY_MS		(3600L * 1000L)

/* history pruning runs at most every dfe_airbyte.test_prune_interval (60 s) */

/* how long a recreation waits for a terminated walsender to let go of the slot */
#define SLOT_RELEASE_WAIT_MS	10000L

/*
 * How long one attempt to create the slot may wait for other transactions:
 * half of dfe_airbyte.check_interval, within these bounds; the statement
 * as a whole gets twice that plus CREATION_BACKSTOP_MS.
 */
#define CREATION_WAIT_MIN_MS	200
#define CREATION_WAIT_MAX_MS	5000
#define CREATION_BACKSTOP_MS	5000

#endif
