/*
 * target_conn.h — non-blocking libpq connections to remote targets, many at
 * once in one process.
 *
 * A TargetConn is one target's connection and at most one query in flight.
 * dfe_tc_submit() queues a query with a deadline; dfe_tc_run() drives every given
 * connection — host name lookup, connect, send, receive — from one wait on
 * all their sockets, the latch and postmaster death, until each has its
 * answer, has failed or has passed its deadline.  One slow, hanging or
 * unresolvable target therefore costs the others nothing (docs/design.md,
 * "Targets").  Nothing here blocks: host names are looked up with glibc's
 * getaddrinfo_a() and libpq is given the address (hostaddr) with the name
 * (host, for TLS verification); libpq runs with PQsetnonblocking().
 *
 *   TargetConn *tc = dfe_tc_create(cxt, "svc", conninfo);
 *   dfe_tc_submit(tc, "SELECT ...", 1, params, deadline);
 *   dfe_tc_run(&tc, 1);
 *   if (dfe_tc_state(tc) == TC_DONE) ... PQntuples(dfe_tc_result(tc)) ...
 *   else ... dfe_tc_error(tc), dfe_tc_errcode(tc) ...
 *
 * Connections are kept open between queries and reopened after a failure;
 * dfe_tc_close() (or resetting the context given to dfe_tc_create) closes them.
 */
#ifndef DFE_AIRBYTE_TARGET_CONN_H
#define DFE_AIRBYTE_TARGET_CONN_H

#include "postgres.h"

#include "libpq-fe.h"
#include "utils/timestamp.h"

typedef enum TargetConnState
{
	TC_IDLE,					/* no query queued */
	TC_RESOLVING,				/* host name lookup in flight */
	TC_CONNECTING,				/* PQconnectPoll in progress */
	TC_SENDING,					/* query queued or being flushed */
	TC_BUSY,					/* waiting for the answer */
	TC_DONE,					/* answer in dfe_tc_result() */
	TC_FAILED					/* error in dfe_tc_error() */
} TargetConnState;

typedef struct TargetConn TargetConn;

/* Parses and checks conninfo (errors as ereport); nothing is opened yet. */
extern TargetConn *dfe_tc_create(MemoryContext cxt, const char *name, const char *conninfo);

/* Queues a query (parameters as text, NULL = SQL NULL) to be finished by deadline. */
extern void dfe_tc_submit(TargetConn *tc, const char *sql, int nparams,
					  const char *const *params, TimestampTz deadline);

/* Drives the given connections until none is in flight; checks interrupts at least once a second. */
extern void dfe_tc_run(TargetConn **conns, int n);

/*
 * Drives them until at least one more has its answer (or failed), so that a
 * caller can act on each answer as it arrives; returns how many are still
 * in flight (0: all finished).
 */
extern int	dfe_tc_run_some(TargetConn **conns, int n);

extern TargetConnState dfe_tc_state(TargetConn *tc);
extern PGresult *dfe_tc_result(TargetConn *tc);	/* owned by tc until the next submit */
extern const char *dfe_tc_error(TargetConn *tc);	/* without secrets; owned by tc until the next submit */
extern int	dfe_tc_errcode(TargetConn *tc);	/* ERRCODE_* of the failure */
extern bool dfe_tc_timed_out(TargetConn *tc);
extern int	dfe_tc_server_version(TargetConn *tc);	/* 0 when not connected */
extern double dfe_tc_elapsed_ms(TargetConn *tc);	/* submit to answer or failure; -1 while in flight */

/* NULL, or why dfe_airbyte.passfile cannot be used (libpq would ignore it) */
extern const char *dfe_tc_passfile_problem(void);

/* Closes the connection unless it is idle outside a transaction with no query in flight. */
extern void dfe_tc_settle(TargetConn *tc);

/* Closes the connection (and forgets the resolved address). */
extern void dfe_tc_close(TargetConn *tc);

#endif
