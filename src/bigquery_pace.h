/*
 * bigquery_pace.h — BigQuery allows about 5 metadata updates per 10 s per
 * table; each process remembers when it PATCHed each table and holds a
 * PATCH back until fewer than dfe_airbyte.bigquery_table_update_limit of
 * its PATCHes of that table fall in the last bigquery_table_update_window
 * (bigquery_pace.c).
 */
#ifndef DFE_AIRBYTE_BIGQUERY_PACE_H
#define DFE_AIRBYTE_BIGQUERY_PACE_H

#include "postgres.h"

/* monotonic milliseconds */
extern int64 dfe_bq_mono_ms(void);

/* when the next PATCH of the table at url may go (monotonic ms) */
extern int64 dfe_bq_pace_due(const char *url, int64 now);

/* a PATCH of the table at url went at (monotonic ms) */
extern void dfe_bq_pace_record(const char *url, int64 at);

#endif
