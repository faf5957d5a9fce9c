/*
 * spi_xact.h — "a short transaction with SPI", the one way every worker
 * task (and the SQL functions that share their code) talks to the database.
 *
 *   dfe_xact_begin("dfe_airbyte slot guard");
 *   dfe_sql("read the state", "SELECT ...", 1, args, SPI_OK_SELECT);
 *   name = dfe_col_text(0, 1);          (copied into the caller's context)
 *   dfe_xact_end();                     (commit, pgstat_report_stat(false))
 *
 * dfe_xact_begin remembers the memory context it was called in; dfe_col_text
 * copies there and dfe_xact_end switches back to it, so results outlive the
 * transaction.  Never call out to the network between begin and end.
 *
 * dfe_spi_exec (and dfe_sql, its text-argument form) is the one SPI
 * wrapper, dfe_catch the one way to catch an ERROR (see below).
 */
#ifndef DFE_AIRBYTE_SPI_XACT_H
#define DFE_AIRBYTE_SPI_XACT_H

#include "postgres.h"

#include "executor/spi.h"

#include "compat.h"

/* start a transaction with a snapshot, connect SPI, report activity */
extern void dfe_xact_begin(const char *activity);

/* disconnect SPI, commit, flush statistics (so autovacuum sees the history tables) */
extern void dfe_xact_end(void);

/* the context results are copied into (the one dfe_xact_begin was called in) */
extern MemoryContext dfe_xact_result_context(void);

/* for SQL functions that use SPI in the caller's transaction: copy results here */
extern void dfe_set_result_context(MemoryContext cxt);

/* ERROR for an SPI call that failed: an errcode and a hint */
pg_noreturn extern void dfe_spi_failed(const char *what, int ret);

/*
 * The one SPI wrapper: run sql with arguments of the given types (nulls as
 * SPI_execute_with_args takes them, NULL: none is null); ERROR naming what
 * and the statement unless it returns expect.  The caller's memory context
 * is kept (SPI itself returns in its procedure context).  dfe_sql is the
 * same with text arguments (NULL pointer = SQL NULL), what most queries need.
 */
extern int	dfe_spi_exec(const char *what, const char *sql, int nargs, Oid *types,
						 Datum *values, const char *nulls, bool read_only, int expect);
extern int	dfe_sql(const char *what, const char *sql, int nargs, const char **args, int expect);

/* column col (1-based) of row of SPI_tuptable: text copied into the result context, or NULL */
extern char *dfe_col_text(int row, int col);
extern bool dfe_col_isnull(int row, int col);
extern Datum dfe_col_datum(int row, int col, bool *isnull);

/*
 * dfe_catch(fn, arg, flags, cxt, &error): run fn(arg) and catch an ERROR it
 * raises, the way PostgreSQL's own background workers do (autovacuum.c's
 * sigsetjmp block, PL/pgSQL's exception blocks for the subtransaction):
 * under HOLD_INTERRUPTS, the error copied into cxt (when error is not NULL),
 * the transaction (or subtransaction) rolled back and the error state
 * flushed.  Returns
 * true when fn returned normally.  FATAL (SIGTERM) never reaches here: it
 * ends the process, as it should.  CurrentMemoryContext is cxt afterwards.
 *
 *   DFE_CATCH_LOG          EmitErrorReport(): the error goes to the server log
 *   DFE_CATCH_SUBXACT      fn runs in a subtransaction of the caller's
 *                          transaction, and only that is rolled back (for
 *                          SQL functions); otherwise any transaction is
 *                          aborted (AbortOutOfAnyTransaction, for workers)
 *   DFE_CATCH_NOT_CANCEL   a cancel (statement_timeout, pg_cancel_backend)
 *                          or a shutdown request is raised again, not caught
 */
#define DFE_CATCH_LOG			0x01
#define DFE_CATCH_SUBXACT		0x02
#define DFE_CATCH_NOT_CANCEL	0x04

extern bool dfe_catch(void (*fn) (void *), void *arg, int flags, MemoryContext cxt,
					  ErrorData **error);

/* "message: detail" of a caught error (palloc'd), or just its message */
extern char *dfe_error_text(const ErrorData *edata);

/* INT64_FORMAT into a palloc'd string */
extern char *dfe_int64_str(int64 v);

#endif
