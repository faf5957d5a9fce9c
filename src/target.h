/*
 * target.h — the one place that runs a query on a target.
 *
 * A target is a service database: "local" is the database the extension is
 * installed in (queries run through SPI, in the caller's transaction), any
 * other name is a row of dfe_airbyte.targets reached over libpq
 * (target_conn.c).  The same SQL text runs on both: parameters are text
 * whose types the server infers, exactly as PQexecParams does, names are
 * resolved with search_path = pg_catalog, pg_temp, and rows come back as
 * text.  Errors are ereports with the remote SQLSTATE (or 08xxx for
 * connection trouble), a hint, and never a secret.
 *
 *   DfeTarget *t = dfe_target_open("svc");
 *   DfeRows *r = dfe_target_query(t, "read the slot", "SELECT ... WHERE slot_name = $1", 1, args);
 *   for (i = 0; i < r->nrows; i++) ... dfe_rows_value(r, i, 0) ...
 *   dfe_target_close(t);
 *
 * A remote target's connection lives in the memory context current at
 * dfe_target_open() and is closed when that context goes (an error
 * included); dfe_target_close() closes it earlier.
 */
#ifndef DFE_AIRBYTE_TARGET_H
#define DFE_AIRBYTE_TARGET_H

#include "postgres.h"

#include "nodes/pg_list.h"

#include "target_conn.h"

#define DFE_LOCAL_TARGET "local"

typedef struct DfeTarget DfeTarget;

typedef struct DfeRows
{
	int			nrows;
	int			ncols;
	char	  **colnames;
	char	  **values;			/* values[row * ncols + col]; NULL = SQL NULL */
} DfeRows;

/* "local", or a registered, enabled target (ERROR otherwise) */
extern DfeTarget *dfe_target_open(const char *name);

/* a remote target from its connection string, registered or not (dfe_airbyte_add_target) */
extern DfeTarget *dfe_target_open_conninfo(const char *name, const char *conninfo);

/* runs sql (parameters as text, NULL = SQL NULL) within dfe_airbyte.target_timeout; ERROR on failure */
extern DfeRows *dfe_target_query(DfeTarget *t, const char *what, const char *sql,
								 int nparams, const char *const *params);

/*
 * The same for a query that may take long (reconciliation's checksums of a
 * whole table): timeout_ms instead of dfe_airbyte.target_timeout, as the
 * client's deadline and as the remote session's statement_timeout.
 */
extern DfeRows *dfe_target_query_long(DfeTarget *t, const char *what, const char *sql,
									  int nparams, const char *const *params, int timeout_ms);

extern const char *dfe_rows_value(DfeRows *r, int row, int col);

extern const char *dfe_target_name(DfeTarget *t);
extern bool dfe_target_is_local(DfeTarget *t);

/* the remote connection, for the guard's multiplexed loop (NULL for local) */
extern TargetConn *dfe_target_conn(DfeTarget *t);

extern void dfe_target_close(DfeTarget *t);

/*
 * A worker process (not a backend: it may sit in a pool for hours) keeps one
 * connection per remote target across its tasks from here on: a later
 * dfe_target_open() of the same target reuses it, and dfe_target_close()
 * leaves it open (target.c says when it is dropped).
 */
extern void dfe_target_keep_connections(bool on);

/* Drops the kept connections of targets not named (char *) in names, and the idle ones. */
extern void dfe_target_keep_only(List *names);

#endif
