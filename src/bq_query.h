/*
 * bq_query.h — BigQuery jobs.query / jobs.getQueryResults for reads the
 * extension makes itself (reconciliation).
 *
 * Every query is GoogleSQL (useLegacySql false), runs in the location the
 * policy tag names (else BigQuery infers it from the datasets), and is
 * either a dry run (free: BigQuery returns totalBytesProcessed without
 * running it) or runs with maximumBytesBilled.  A query over that cap is
 * answered HTTP 500, reason bytesBilledLimitExceeded; it is final (asking
 * again bills nothing and fails again), so it is not retried.
 * Sources: https://cloud.google.com/bigquery/docs/reference/rest/v2/jobs/query,
 * .../jobs/getQueryResults, and the error shapes in
 * https://cloud.google.com/bigquery/docs/error-messages.
 */
#ifndef DFE_AIRBYTE_BQ_QUERY_H
#define DFE_AIRBYTE_BQ_QUERY_H

#include "postgres.h"

typedef struct BqResult
{
	bool		ok;				/* false: status/reason/message say why */
	long		status;			/* HTTP status of the failing answer */
	char	   *reason;			/* BigQuery's error reason, or NULL */
	char	   *message;		/* the server's message (redacted) */
	int64		bytes_processed;	/* totalBytesProcessed */
	int64		bytes_billed;	/* totalBytesBilled (0 for a dry run) */
	int			queries;		/* HTTP calls made (query + polls + pages) */
	int			nfields;
	char	  **fields;			/* column names */
	int			nrows;
	char	 ***rows;			/* rows[i][j]; NULL for SQL NULL */
} BqResult;

/* BigQuery's minimum billed per query and per referenced table (10 MiB) */
#define BQ_MIN_BILLED ((int64) 10 * 1024 * 1024)

/* a dry run: bytes_processed is BigQuery's estimate; no rows */
extern BqResult *dfe_bq_query_dry_run(const char *sql);

/* runs the query with maximumBytesBilled = max_bytes_billed (> 0) */
extern BqResult *dfe_bq_query_run(const char *sql, int64 max_bytes_billed);

/*
 * The cap to send for a query whose dry run estimated `estimate` bytes over
 * `ntables` tables: billing rounds up per table to the MiB with 10 MiB per
 * table and per query, so the estimate itself is too low a cap.
 */
extern int64 dfe_bq_billed_upper_bound(int64 estimate, int ntables);

/* ERROR with BigQuery's answer, unless res->ok */
extern void dfe_bq_check(const BqResult *res, const char *what);

#endif
