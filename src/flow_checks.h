/*
 * flow_checks.h — does data really flow? Checks after each successful
 * Airbyte sync, and the progress of running jobs (flow_checks.c).
 */
#ifndef DFE_AIRBYTE_FLOW_CHECKS_H
#define DFE_AIRBYTE_FLOW_CHECKS_H

#include "airbyte.h"

/*
 * Inside the sync health task's transaction, SPI connected, after the job's
 * row of dfe_airbyte.sync_jobs was written: keep its rows/bytes and when it
 * last made progress.
 */
extern void dfe_flow_note_job_progress(const AirbyteJob *job);

/*
 * Outside any transaction, once per newly succeeded job: the data flow
 * checks (dfe_airbyte.flow_checks; events slot_not_advancing, sync_no_rows,
 * heartbeat_not_running).  No network call.
 */
extern void dfe_flow_checks_after_success(const AirbyteJob *job);

#endif
